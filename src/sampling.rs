//! Sampling decisions at the edge: injection modes `sampled` / `all`, the deterministic edge
//! sampler that agrees with dd-trace, and the trust rules for clients that claim a priority.
//!
//! Everything here is pure: [`decide`] takes the profile's [`SamplingPolicy`] and a few facts
//! about the request ([`SamplingInput`]) and returns one [`SamplingDecision`], which the proxy
//! then writes into every injected format.
//!
//! # The decision table (issue 5)
//!
//! | request arrives with | `injection = "sampled"` | `injection = "all"` |
//! | --- | --- | --- |
//! | a decision | honoured (capped by `max_incoming_priority`) | same |
//! | a context, no decision | edge sampler | edge sampler |
//! | no context, allowed `Origin` | edge sampler | `missing_decision`: `drop` → priority 0, `sample` → edge sampler |
//! | no context, no allowed `Origin` | edge sampler | edge sampler |
//!
//! # Extract behaviour and trust
//!
//! [`applied_behavior`] decides what happens to the incoming context of one request: the
//! profile's `extract_behavior` (`continue`, `restart`, `ignore`), except that `continue`
//! becomes `restart` for a client outside `trust` ([`trusts`] is false: the address is outside
//! the CIDR list, or unknown). `trust = "none"`, the older spelling of
//! `extract_behavior = "restart"`, is turned into it by the config.
//!
//! - A restarted context (configured, or an untrusted client) is not believed: the proxy starts
//!   a new trace linked to it and [`decide`] lets the **edge sampler** decide, reporting the
//!   override as `restart` or `untrusted_client`. It deliberately does not apply
//!   `missing_decision`: the client did send a context, it simply is not believed, so the
//!   neutral edge sampler is the fair judge.
//! - An ignored context is never read, so nothing says whether the client sent one: the edge
//!   sampler decides every request, again without `missing_decision` (which would read "no
//!   headers" as "RUM chose not to trace"), and nothing is reported as overridden.
//!
//! A trusted incoming keep above `max_incoming_priority` (for example a claimed 2 with a cap of
//! 1) is lowered to the cap and reported as `priority_capped`. Drops (0, -1) are never changed.
//!
//! # Which priority and decision maker the edge sampler records
//!
//! This mirrors dd-trace-py 4.16.0 (`ddtrace/_trace/sampler.py`, `internal/sampling.py`,
//! `internal/constants.py`), which has no `DD_TRACE_SAMPLE_RATE` any more; a configured rate is
//! a sampling rule:
//! - `sample_rate == 1.0` (the default, "no rate configured"): like dd-trace's default
//!   mechanism, keep with priority 1 (`AUTO_KEEP`) and `_dd.p.dm=-0`.
//! - `sample_rate < 1.0`: like a local trace sampling rule (`DD_TRACE_SAMPLING_RULES=[{"sample_rate": r}]`):
//!   priority 2 (`USER_KEEP`) or -1 (`USER_REJECT`) and `_dd.p.dm=-3` on both keep and drop
//!   (dd-trace-py sets the tag on both). The rate is reported in
//!   [`SamplingDecision::rule_rate`] for the edge span's `_dd.rule_psr`. dd-trace's rule rate
//!   limiter (100 traces/s by default) is not applied here.
//! - `missing_decision = "drop"`: priority 0 (`AUTO_REJECT`) with `_dd.p.dm=-0`, the default
//!   mechanism's reject.
//! - An honoured incoming decision records no decision maker: the incoming `_dd.p.dm`, if any,
//!   travels on unchanged.

use std::net::IpAddr;

use crate::propagation::ExtractBehavior;

/// `injection` profile key: what the browser-side RUM SDK does with unsampled requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectionMode {
    /// RUM sends no headers for unsampled requests (SDK default).
    Sampled,
    /// RUM sends headers (with a drop decision) on every request.
    All,
}

/// `missing_decision` profile key: what an `injection = "all"` route does with a browser
/// request (allowed `Origin`) that carries no context at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDecision {
    /// Priority 0, so no backend samples it in.
    Drop,
    /// Let the edge sampler decide.
    Sample,
}

/// `trust` profile key: whose incoming context is continued (`trust = "none"` is read as
/// `extract_behavior = "restart"` by the config, so it is not a value here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Every client.
    Any,
    /// Only clients whose address is in one of these networks; others are restarted.
    Cidrs(Vec<ipnet::IpNet>),
}

/// The sampling settings of one propagation profile.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingPolicy {
    pub injection: InjectionMode,
    /// 0.0 to 1.0; 1.0 is the default.
    pub sample_rate: f64,
    pub missing_decision: MissingDecision,
    pub trust: Trust,
    /// 1 or 2; 2 is the default (no cap).
    pub max_incoming_priority: i32,
}

impl Default for SamplingPolicy {
    fn default() -> Self {
        SamplingPolicy {
            injection: InjectionMode::Sampled,
            sample_rate: 1.0,
            missing_decision: MissingDecision::Drop,
            trust: Trust::Any,
            max_incoming_priority: 2,
        }
    }
}

impl SamplingPolicy {
    /// Checks the values a config file can get wrong; returns every problem found, each naming
    /// its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(self.sample_rate.is_finite() && (0.0..=1.0).contains(&self.sample_rate)) {
            problems.push(format!(
                "sample_rate = {}: must be a number from 0.0 to 1.0",
                self.sample_rate
            ));
        }
        if !(1..=2).contains(&self.max_incoming_priority) {
            problems.push(format!(
                "max_incoming_priority = {}: must be 1 (a claimed user-keep becomes an ordinary keep) or 2 (no cap)",
                self.max_incoming_priority
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// The facts about one request that the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingInput {
    /// Priority of the winning extracted context; `None` for a context without a decision.
    /// Ignored when `has_context` is false.
    pub incoming_priority: Option<i32>,
    /// A valid incoming context was extracted.
    pub has_context: bool,
    /// The request carries an `Origin` that the route's CORS policy allows.
    pub origin_allowed: bool,
    /// The client's address, if known.
    pub client: Option<IpAddr>,
    /// Low 64 bits of the trace id the request will carry (the new id when the trace restarts).
    pub trace_id_low: u64,
    /// The profile's `extract_behavior` (before [`applied_behavior`] looks at the client).
    pub behavior: ExtractBehavior,
}

/// Where the decision came from (the `source` label of `stitch_sampling_decisions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Incoming,
    Edge,
    Missing,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Incoming => "incoming",
            Source::Edge => "edge",
            Source::Missing => "missing",
        }
    }
}

/// One sampling decision, written into every injected format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDecision {
    /// Datadog sampling priority (-1, 0, 1, 2; an honoured incoming value may be anything).
    pub priority: i32,
    pub source: Source,
    /// `_dd.p.dm` value when stitch decided; `None` when the incoming decision was honoured.
    pub decision_maker: Option<&'static str>,
    /// Label for `stitch_sampling_overridden_total{reason}` when something was overridden:
    /// `priority_capped`, `untrusted_client` or `restart`.
    pub overridden: Option<&'static str>,
    /// The rule rate when the edge sampler decided as a rule (`sample_rate < 1`), for the edge
    /// span's `_dd.rule_psr`.
    pub rule_rate: Option<f64>,
    /// Human text for `stitch explain`.
    pub reason: &'static str,
}

impl SamplingDecision {
    /// Keep ⇔ priority > 0.
    pub fn keep(&self) -> bool {
        self.priority > 0
    }

    /// `keep` or `drop`, the `decision` label of `stitch_sampling_decisions_total`.
    pub fn decision_label(&self) -> &'static str {
        if self.keep() {
            "keep"
        } else {
            "drop"
        }
    }
}

/// Knuth's multiplicative hash factor used by every Datadog tracer.
pub const KNUTH_FACTOR: u64 = 1_111_111_111_111_111_111;

/// Datadog's deterministic sampler (propagation doc §7):
/// keep ⇔ `(low64 × 1111111111111111111) mod 2^64 ≤ rate × (2^64 − 1)`.
///
/// Bit-for-bit like dd-trace-py: the threshold is the float64 product `rate × (2^64 − 1)`
/// (where `2^64 − 1` itself rounds to `2^64`), and the integer hash is compared with that float
/// exactly (Python compares int and float without rounding the int). Rate ≥ 1 always keeps,
/// rate ≤ 0 (or NaN) always drops, without hashing.
pub fn sampled_by_rate(trace_id_low: u64, rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let threshold = rate * (u64::MAX as f64);
    if threshold >= 18_446_744_073_709_551_616.0 {
        return true;
    }
    // threshold is in [0, 2^64): its integer part fits a u64 exactly, and for an integer hash
    // `hash <= threshold` is the same as `hash <= floor(threshold)`.
    let floor = threshold as u64;
    trace_id_low.wrapping_mul(KNUTH_FACTOR) <= floor
}

/// Whether the policy believes a context sent by `client`. An unknown address is trusted
/// only under `trust = "any"`.
pub fn trusts(policy: &SamplingPolicy, client: Option<IpAddr>) -> bool {
    match &policy.trust {
        Trust::Any => true,
        Trust::Cidrs(nets) => match client {
            Some(ip) => {
                let ip = ip.to_canonical();
                nets.iter().any(|net| net.contains(&ip))
            }
            None => false,
        },
    }
}

/// What stitch does with a context sent by `client` under the profile's `extract_behavior`:
/// `continue` becomes `restart` for a client the policy does not trust; `restart` and `ignore`
/// apply to every client.
pub fn applied_behavior(
    configured: ExtractBehavior,
    policy: &SamplingPolicy,
    client: Option<IpAddr>,
) -> ExtractBehavior {
    match configured {
        ExtractBehavior::Continue if !trusts(policy, client) => ExtractBehavior::Restart,
        other => other,
    }
}

const DM_DEFAULT: &str = "-0";
const DM_LOCAL_RULE: &str = "-3";

/// The edge sampler's decision for `trace_id_low` (see the module doc for the priorities).
fn edge(policy: &SamplingPolicy, trace_id_low: u64) -> (i32, &'static str, Option<f64>) {
    let rate = policy.sample_rate;
    if rate >= 1.0 {
        (1, DM_DEFAULT, None)
    } else if sampled_by_rate(trace_id_low, rate) {
        (2, DM_LOCAL_RULE, Some(rate))
    } else {
        (-1, DM_LOCAL_RULE, Some(rate))
    }
}

fn edge_decision(
    policy: &SamplingPolicy,
    input: &SamplingInput,
    overridden: Option<&'static str>,
    reason: &'static str,
) -> SamplingDecision {
    let (priority, dm, rule_rate) = edge(policy, input.trace_id_low);
    SamplingDecision {
        priority,
        source: Source::Edge,
        decision_maker: Some(dm),
        overridden,
        rule_rate,
        reason,
    }
}

/// The one sampling decision for a request (see the module doc for the table).
pub fn decide(policy: &SamplingPolicy, input: &SamplingInput) -> SamplingDecision {
    if input.behavior == ExtractBehavior::Ignore {
        return edge_decision(
            policy,
            input,
            None,
            "extract_behavior = \"ignore\": incoming context not read; the edge sampler decided",
        );
    }
    if input.has_context {
        if applied_behavior(input.behavior, policy, input.client) == ExtractBehavior::Restart {
            let (label, reason) = match input.behavior {
                ExtractBehavior::Restart => (
                    "restart",
                    "incoming context not continued (extract_behavior = \"restart\"); trace restarted and the edge sampler decided",
                ),
                _ => (
                    "untrusted_client",
                    "incoming context not continued (client address not in the trusted networks); trace restarted and the edge sampler decided",
                ),
            };
            return edge_decision(policy, input, Some(label), reason);
        }
        return match input.incoming_priority {
            Some(p) if p > 0 && p > policy.max_incoming_priority => SamplingDecision {
                priority: policy.max_incoming_priority.max(1),
                source: Source::Incoming,
                decision_maker: None,
                overridden: Some("priority_capped"),
                rule_rate: None,
                reason: "incoming keep honoured, lowered to max_incoming_priority",
            },
            Some(p) => SamplingDecision {
                priority: p,
                source: Source::Incoming,
                decision_maker: None,
                overridden: None,
                rule_rate: None,
                reason: "incoming decision honoured, never re-sampled",
            },
            None => edge_decision(
                policy,
                input,
                None,
                "incoming context without a decision; the edge sampler decided",
            ),
        };
    }
    if input.origin_allowed && policy.injection == InjectionMode::All {
        return match policy.missing_decision {
            MissingDecision::Drop => SamplingDecision {
                priority: 0,
                source: Source::Missing,
                decision_maker: Some(DM_DEFAULT),
                overridden: None,
                rule_rate: None,
                reason: "browser request without context under injection = \"all\" (RUM chose not to trace); missing_decision = \"drop\"",
            },
            MissingDecision::Sample => edge_decision(
                policy,
                input,
                None,
                "browser request without context under injection = \"all\"; missing_decision = \"sample\": the edge sampler decided",
            ),
        };
    }
    let reason = if input.origin_allowed {
        "new trace for a browser request without context (injection = \"sampled\"); the edge sampler decided"
    } else {
        "new trace (no context, no allowed Origin); the edge sampler decided"
    };
    edge_decision(policy, input, None, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(injection: InjectionMode, rate: f64, missing: MissingDecision) -> SamplingPolicy {
        SamplingPolicy {
            injection,
            sample_rate: rate,
            missing_decision: missing,
            ..SamplingPolicy::default()
        }
    }

    fn input(prio: Option<i32>, ctx: bool, origin: bool, id: u64) -> SamplingInput {
        SamplingInput {
            incoming_priority: prio,
            has_context: ctx,
            origin_allowed: origin,
            client: Some("203.0.113.7".parse().unwrap()),
            trace_id_low: id,
            behavior: ExtractBehavior::Continue,
        }
    }

    // Spec §7 worked examples: id 1 hashes to 0.060233 of the range, id A to 0.410348,
    // the low half of B to 0.824003.
    const ID_1: u64 = 1;
    const ID_A: u64 = 1_234_567_890_123_456_789;
    const ID_B: u64 = 7_277_407_061_855_694_839;

    #[test]
    fn worked_examples_from_the_spec() {
        let rows: &[(u64, f64, bool)] = &[
            (ID_1, 0.1, true),
            (ID_1, 0.05, false),
            (ID_A, 0.4104, true),
            (ID_A, 0.41, false),
            (ID_B, 0.8, false),
            (ID_B, 0.85, true),
            (0, 0.000_001, true), // hash 0 is kept at any positive rate
            (ID_B, 1.0, true),
            (ID_1, 0.0, false),
            (ID_1, -0.5, false),
            (ID_1, 7.0, true),
            (ID_1, f64::NAN, false),
        ];
        for &(id, rate, want) in rows {
            assert_eq!(sampled_by_rate(id, rate), want, "id {id} rate {rate}");
        }
    }

    #[test]
    fn hashing_is_exact_at_the_threshold() {
        // Find ids whose hash sits exactly at and just past the threshold.
        let inv = inverse(KNUTH_FACTOR);
        for rate in [0.05, 0.1, 0.5, 0.85, 0.99] {
            let floor = (rate * u64::MAX as f64) as u64;
            assert!(sampled_by_rate(floor.wrapping_mul(inv), rate));
            assert!(!sampled_by_rate((floor + 1).wrapping_mul(inv), rate));
        }
    }

    fn inverse(a: u64) -> u64 {
        let mut x: u64 = 1;
        for _ in 0..7 {
            x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        }
        assert_eq!(a.wrapping_mul(x), 1);
        x
    }

    /// Every row and column of the table, at a rate where the edge sampler keeps the
    /// id (ID_B at 0.85), drops it (ID_B at 0.8) and at the default rate 1.0.
    #[test]
    fn decision_table() {
        use InjectionMode::{All, Sampled};
        use MissingDecision::{Drop, Sample};
        // (mode, rate, missing, incoming prio, has ctx, origin allowed, id) ->
        // (priority, source, dm, why)
        type Row = (
            InjectionMode,
            f64,
            MissingDecision,
            Option<i32>,
            bool,
            bool,
            u64,
            i32,
            Source,
            Option<&'static str>,
            &'static str,
        );
        let rows: &[Row] = &[
            // row 1: a decision is honoured in both modes, whatever the rate
            (
                Sampled,
                0.0,
                Drop,
                Some(1),
                true,
                true,
                ID_B,
                1,
                Source::Incoming,
                None,
                "keep honoured",
            ),
            (
                All,
                0.0,
                Drop,
                Some(1),
                true,
                true,
                ID_B,
                1,
                Source::Incoming,
                None,
                "keep honoured, all",
            ),
            (
                Sampled,
                1.0,
                Drop,
                Some(0),
                true,
                false,
                ID_B,
                0,
                Source::Incoming,
                None,
                "drop honoured",
            ),
            (
                All,
                1.0,
                Sample,
                Some(0),
                true,
                true,
                ID_B,
                0,
                Source::Incoming,
                None,
                "RUM all-mode drop",
            ),
            (
                All,
                1.0,
                Drop,
                Some(-1),
                true,
                false,
                ID_B,
                -1,
                Source::Incoming,
                None,
                "user reject kept",
            ),
            (
                Sampled,
                0.5,
                Drop,
                Some(2),
                true,
                false,
                ID_B,
                2,
                Source::Incoming,
                None,
                "user keep under default cap",
            ),
            // row 2: context without a decision -> edge sampler, both modes
            (
                Sampled,
                1.0,
                Drop,
                None,
                true,
                true,
                ID_B,
                1,
                Source::Edge,
                Some("-0"),
                "default rate keeps",
            ),
            (
                All,
                1.0,
                Drop,
                None,
                true,
                true,
                ID_B,
                1,
                Source::Edge,
                Some("-0"),
                "default rate keeps, all",
            ),
            (
                Sampled,
                0.85,
                Drop,
                None,
                true,
                false,
                ID_B,
                2,
                Source::Edge,
                Some("-3"),
                "rule keeps",
            ),
            (
                All,
                0.8,
                Drop,
                None,
                true,
                true,
                ID_B,
                -1,
                Source::Edge,
                Some("-3"),
                "rule drops",
            ),
            // row 3: no context, allowed Origin
            (
                Sampled,
                0.85,
                Drop,
                None,
                false,
                true,
                ID_B,
                2,
                Source::Edge,
                Some("-3"),
                "sampled mode: edge keeps",
            ),
            (
                Sampled,
                0.8,
                Drop,
                None,
                false,
                true,
                ID_B,
                -1,
                Source::Edge,
                Some("-3"),
                "sampled mode: edge drops",
            ),
            (
                Sampled,
                1.0,
                Drop,
                None,
                false,
                true,
                ID_B,
                1,
                Source::Edge,
                Some("-0"),
                "sampled mode: default",
            ),
            (
                All,
                1.0,
                Drop,
                None,
                false,
                true,
                ID_B,
                0,
                Source::Missing,
                Some("-0"),
                "all + drop",
            ),
            (
                All,
                0.85,
                Drop,
                None,
                false,
                true,
                ID_B,
                0,
                Source::Missing,
                Some("-0"),
                "all + drop ignores rate",
            ),
            (
                All,
                0.85,
                Sample,
                None,
                false,
                true,
                ID_B,
                2,
                Source::Edge,
                Some("-3"),
                "all + sample keeps",
            ),
            (
                All,
                0.8,
                Sample,
                None,
                false,
                true,
                ID_B,
                -1,
                Source::Edge,
                Some("-3"),
                "all + sample drops",
            ),
            (
                All,
                1.0,
                Sample,
                None,
                false,
                true,
                ID_B,
                1,
                Source::Edge,
                Some("-0"),
                "all + sample default",
            ),
            // row 4: no context, no allowed Origin
            (
                Sampled,
                1.0,
                Drop,
                None,
                false,
                false,
                ID_B,
                1,
                Source::Edge,
                Some("-0"),
                "s2s default",
            ),
            (
                All,
                1.0,
                Drop,
                None,
                false,
                false,
                ID_B,
                1,
                Source::Edge,
                Some("-0"),
                "s2s all ignores missing",
            ),
            (
                All,
                0.8,
                Drop,
                None,
                false,
                false,
                ID_B,
                -1,
                Source::Edge,
                Some("-3"),
                "s2s all rule drops",
            ),
            (
                Sampled,
                0.1,
                Drop,
                None,
                false,
                false,
                ID_1,
                2,
                Source::Edge,
                Some("-3"),
                "s2s id 1 at 0.1",
            ),
            (
                Sampled,
                0.05,
                Drop,
                None,
                false,
                false,
                ID_1,
                -1,
                Source::Edge,
                Some("-3"),
                "s2s id 1 at 0.05",
            ),
            // a priority without has_context is ignored
            (
                All,
                1.0,
                Drop,
                Some(2),
                false,
                true,
                ID_B,
                0,
                Source::Missing,
                Some("-0"),
                "no context: prio ignored",
            ),
        ];
        for &(mode, rate, missing, prio, ctx, origin, id, want, source, dm, why) in rows {
            let p = policy(mode, rate, missing);
            let d = decide(&p, &input(prio, ctx, origin, id));
            assert_eq!(d.priority, want, "{why}");
            assert_eq!(d.source, source, "{why}");
            assert_eq!(d.decision_maker, dm, "{why}");
            assert_eq!(d.overridden, None, "{why}");
            assert_eq!(d.keep(), want > 0, "{why}");
            assert_eq!(d.decision_label(), if want > 0 { "keep" } else { "drop" });
            assert_eq!(d.rule_rate.is_some(), dm == Some("-3"), "{why}");
            assert!(!d.reason.is_empty());
        }
    }

    #[test]
    fn cap_on_incoming_priority() {
        let mut p = SamplingPolicy {
            max_incoming_priority: 1,
            ..SamplingPolicy::default()
        };
        let rows: &[(i32, i32, Option<&str>)] = &[
            (2, 1, Some("priority_capped")),
            (7, 1, Some("priority_capped")),
            (1, 1, None),
            (0, 0, None),
            (-1, -1, None),
        ];
        for &(incoming, want, over) in rows {
            assert!(over.is_none_or(|o| crate::metrics::OVERRIDE_REASONS.contains(&o)));
            let d = decide(&p, &input(Some(incoming), true, false, ID_A));
            assert_eq!(
                (d.priority, d.overridden),
                (want, over),
                "incoming {incoming}"
            );
            assert_eq!(d.source, Source::Incoming);
            assert_eq!(d.decision_maker, None);
        }
        p.max_incoming_priority = 2;
        let d = decide(&p, &input(Some(2), true, false, ID_A));
        assert_eq!((d.priority, d.overridden), (2, None));
        let d = decide(&p, &input(Some(3), true, false, ID_A));
        assert_eq!((d.priority, d.overridden), (2, Some("priority_capped")));
    }

    #[test]
    fn trust_rules() {
        let nets: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let cidr = SamplingPolicy {
            trust: Trust::Cidrs(nets),
            ..SamplingPolicy::default()
        };
        let any = SamplingPolicy::default();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let rows: &[(&SamplingPolicy, Option<IpAddr>, bool)] = &[
            (&any, ip("198.51.100.1"), true),
            (&any, None, true),
            (&cidr, ip("10.1.2.3"), true),
            (&cidr, ip("11.1.2.3"), false),
            (&cidr, ip("::ffff:10.9.9.9"), true),
            (&cidr, ip("2001:db8::1"), true),
            (&cidr, ip("2001:db9::1"), false),
            (&cidr, None, false),
        ];
        for &(p, client, want) in rows {
            assert_eq!(trusts(p, client), want, "{:?} {client:?}", p.trust);
        }
    }

    /// `extract_behavior` against `trust`: only `continue` looks at the client.
    #[test]
    #[rustfmt::skip]
    fn applied_behavior_table() {
        use ExtractBehavior::{Continue, Ignore, Restart};
        let cidr = SamplingPolicy { trust: Trust::Cidrs(vec!["10.0.0.0/8".parse().unwrap()]), ..SamplingPolicy::default() };
        let any = SamplingPolicy::default();
        let inside = Some("10.1.2.3".parse::<IpAddr>().unwrap());
        let outside = Some("192.0.2.1".parse::<IpAddr>().unwrap());
        let rows: &[(ExtractBehavior, &SamplingPolicy, Option<IpAddr>, ExtractBehavior, &str)] = &[
            (Continue, &any,  outside, Continue, "trust = any continues every client"),
            (Continue, &any,  None,    Continue, "trust = any continues an unknown address"),
            (Continue, &cidr, inside,  Continue, "a trusted client is continued"),
            (Continue, &cidr, outside, Restart,  "an untrusted client is restarted, not ignored"),
            (Continue, &cidr, None,    Restart,  "an unknown address is not trusted by a CIDR list"),
            (Restart,  &any,  outside, Restart,  "restart applies to every client"),
            (Restart,  &cidr, inside,  Restart,  "restart applies to trusted clients too"),
            (Ignore,   &any,  outside, Ignore,   "ignore applies to every client"),
            (Ignore,   &cidr, outside, Ignore,   "ignore wins over an untrusted client (nothing is read)"),
            (Ignore,   &cidr, inside,  Ignore,   "ignore applies to trusted clients too"),
        ];
        for &(configured, policy, client, want, why) in rows {
            assert_eq!(applied_behavior(configured, policy, client), want, "{why}");
        }
    }

    /// What each behaviour does to the decision: (behavior, trust CIDR, client inside, incoming
    /// priority, has context, origin allowed) -> (priority, source, overridden).
    /// `injection = "all"`, `missing_decision = "drop"`, rate 0.8: the edge sampler drops ID_B
    /// with -1, the missing decision gives 0, so every row tells the three apart.
    #[test]
    #[rustfmt::skip]
    fn behavior_decision_table() {
        use ExtractBehavior::{Continue, Ignore, Restart};
        type Row = (ExtractBehavior, bool, Option<i32>, bool, bool, i32, Source, Option<&'static str>, &'static str);
        let rows: &[Row] = &[
            (Continue, true,  Some(2), true,  true,  2,  Source::Incoming, None,                     "continue honours a trusted decision"),
            (Continue, false, Some(2), true,  true,  -1, Source::Edge,     Some("untrusted_client"), "continue + untrusted client: restarted, edge decides"),
            (Restart,  true,  Some(2), true,  true,  -1, Source::Edge,     Some("restart"),          "restart: the incoming keep is not honoured"),
            (Restart,  true,  Some(0), true,  false, -1, Source::Edge,     Some("restart"),          "restart: an incoming drop is not honoured either"),
            (Restart,  true,  None,    false, true,  0,  Source::Missing,  None,                     "restart without context: the no-context rows apply"),
            (Ignore,   true,  None,    false, true,  -1, Source::Edge,     None,                     "ignore: edge sampler, never missing_decision"),
            (Ignore,   false, None,    false, false, -1, Source::Edge,     None,                     "ignore: edge sampler for any client"),
            (Ignore,   true,  Some(2), true,  true,  -1, Source::Edge,     None,                     "ignore: a priority handed in anyway is not read"),
            (Continue, true,  None,    false, true,  0,  Source::Missing,  None,                     "continue without context: missing_decision"),
        ];
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        for &(behavior, trusted, prio, ctx, origin, want, source, over, why) in rows {
            let policy = SamplingPolicy { injection: InjectionMode::All, sample_rate: 0.8, trust: Trust::Cidrs(nets.clone()), ..SamplingPolicy::default() };
            let client = Some(if trusted { "10.0.0.1" } else { "192.0.2.1" }.parse().unwrap());
            let d = decide(&policy, &SamplingInput { incoming_priority: prio, has_context: ctx, origin_allowed: origin, client, trace_id_low: ID_B, behavior });
            assert_eq!((d.priority, d.source, d.overridden), (want, source, over), "{why}");
            assert!(!d.reason.is_empty(), "{why}");
            // A label the metrics know, so a removed route leaves no series behind.
            assert!(over.is_none_or(|o| crate::metrics::OVERRIDE_REASONS.contains(&o)), "{why}");
        }
    }

    #[test]
    fn untrusted_context_is_restarted_and_edge_sampled() {
        let mut restart = SamplingPolicy {
            injection: InjectionMode::All,
            sample_rate: 0.8,
            ..SamplingPolicy::default()
        };
        let restarted = |prio, origin| SamplingInput {
            behavior: ExtractBehavior::Restart,
            ..input(prio, true, origin, ID_B)
        };
        // claimed priority 2 from a browser origin: ignored, edge drops ID_B at 0.8,
        // missing_decision is not applied
        let d = decide(&restart, &restarted(Some(2), true));
        assert_eq!(d.priority, -1);
        assert_eq!(d.source, Source::Edge);
        assert_eq!(d.overridden, Some("restart"));
        assert_eq!(d.decision_maker, Some("-3"));
        restart.sample_rate = 0.85;
        let d = decide(&restart, &restarted(Some(-1), false));
        assert_eq!((d.priority, d.overridden), (2, Some("restart")));

        let cidr = SamplingPolicy {
            trust: Trust::Cidrs(vec!["192.0.2.0/24".parse().unwrap()]),
            ..SamplingPolicy::default()
        };
        let d = decide(&cidr, &input(Some(2), true, false, ID_B));
        assert_eq!((d.priority, d.overridden), (1, Some("untrusted_client")));
        assert_eq!(d.source, Source::Edge);
        let mut trusted = input(Some(2), true, false, ID_B);
        trusted.client = Some("192.0.2.9".parse().unwrap());
        let d = decide(&cidr, &trusted);
        assert_eq!(
            (d.priority, d.overridden, d.source),
            (2, None, Source::Incoming)
        );
        // no context: nothing to distrust, nothing overridden
        let d = decide(&cidr, &input(None, false, false, ID_B));
        assert_eq!(d.overridden, None);
    }

    #[test]
    fn validation() {
        assert!(SamplingPolicy::default().validate().is_ok());
        let bad = SamplingPolicy {
            sample_rate: 1.5,
            max_incoming_priority: 0,
            ..SamplingPolicy::default()
        };
        let errs = bad.validate().unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("sample_rate"));
        assert!(errs[1].contains("max_incoming_priority"));
        for rate in [f64::NAN, -0.1, f64::INFINITY] {
            let p = SamplingPolicy {
                sample_rate: rate,
                ..SamplingPolicy::default()
            };
            assert!(p.validate().is_err(), "{rate}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(Source::Incoming.label(), "incoming");
        assert_eq!(Source::Edge.label(), "edge");
        assert_eq!(Source::Missing.label(), "missing");
    }

    proptest::proptest! {
        #[test]
        fn keeping_is_monotone_in_the_rate(id in proptest::prelude::any::<u64>(), a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            if sampled_by_rate(id, lo) {
                proptest::prop_assert!(sampled_by_rate(id, hi));
            }
        }
    }
}
