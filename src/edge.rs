//! The per-request trace plan: extraction, trust, the one sampling decision and the headers to
//! send upstream, composed from the pure modules. The proxy and `stitch explain` both call
//! [`plan`] and [`rewrite`], so what `explain` prints is exactly what the proxy does.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Profile;
use crate::propagation::{
    self, new_span_id, new_trace_id, Extraction, Format, SpanLink, TraceContext,
};
use crate::sampling::{self, SamplingDecision, SamplingInput, Source};

/// What stitch does with the trace context of one request.
pub struct TracePlan {
    /// What each format gave, which won, conflicts, baggage. Its `context` has been moved
    /// into [`TracePlan::context`] (continued) or into a span link (restart).
    pub extraction: Extraction,
    /// The context that goes upstream: the continued or restarted trace, with the decision
    /// written in (`sampling_priority`, `_dd.p.dm`).
    pub context: TraceContext,
    /// The edge span's id: the parent every injected format names.
    pub span_id: u64,
    /// The edge span's parent: the incoming parent id (0 for a new or restarted trace).
    pub parent_id: u64,
    /// Whether the incoming context was continued (false: new trace or restart).
    pub continued: bool,
    pub decision: SamplingDecision,
}

/// Attribute naming why a restarted trace links to the incoming context (dd-trace's name).
const RESTART_REASON: &str = "propagation_behavior_extract";

/// Build the plan for one request. `origin_allowed`: the request carries an `Origin` the
/// route's CORS policy allows.
pub fn plan(
    profile: &Profile,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    origin_allowed: bool,
) -> TracePlan {
    let mut extraction = propagation::extract(headers, &profile.extract);
    let policy = &profile.sampling;
    let trusted = sampling::trusts(policy, client);
    // Moved out, not cloned: the request path keeps no second copy.
    let incoming_ctx = extraction.context.take();
    let incoming = incoming_ctx.as_ref();
    let continued = incoming.is_some() && trusted;
    let incoming_priority = incoming.and_then(|c| c.sampling_priority);
    let has_context = incoming.is_some();

    let mut context = match (incoming_ctx, continued) {
        (Some(ctx), true) => ctx,
        (Some(ctx), false) => {
            // Restart: a new trace that links to what the client sent; baggage is kept.
            let mut fresh = TraceContext::new_root(new_trace_id());
            fresh.baggage = extraction.baggage.clone();
            let mut attributes = vec![("reason", RESTART_REASON.to_string())];
            if let Some(w) = extraction.winner {
                attributes.push(("context_headers", w.name().to_string()));
            }
            fresh.links.push(SpanLink {
                trace_id: ctx.trace_id,
                span_id: ctx.parent_id,
                sampled: ctx.sampling_priority.map(|p| p > 0),
                tracestate: None,
                attributes,
            });
            fresh
        }
        (None, _) => {
            let mut fresh = TraceContext::new_root(new_trace_id());
            fresh.baggage = extraction.baggage.clone();
            fresh
        }
    };

    let decision = match (continued, extraction.new_trace_priority) {
        // `b3: 0` without ids: the spec says honour the deny on the new trace.
        (false, Some(p)) if !has_context && trusted => SamplingDecision {
            priority: p,
            source: Source::Incoming,
            decision_maker: None,
            overridden: None,
            rule_rate: None,
            reason: "a deny without ids (b3: 0) honoured on the new trace",
        },
        _ => sampling::decide(
            policy,
            &SamplingInput {
                incoming_priority,
                has_context,
                origin_allowed,
                client,
                trace_id_low: context.trace_id as u64,
            },
        ),
    };
    context.sampling_priority = Some(decision.priority);
    if let Some(dm) = decision.decision_maker {
        context.set_tag("_dd.p.dm", dm);
    }
    let parent_id = if continued { context.parent_id } else { 0 };
    TracePlan {
        extraction,
        context,
        span_id: new_span_id(),
        parent_id,
        continued,
        decision,
    }
}

/// Headers the trace rewrite can edit: a plain `HeaderMap` (`stitch explain`) or Pingora's
/// request header with its case map (the proxy), so both run [`rewrite`].
pub trait HeaderEdit {
    /// The names present now.
    fn names(&self) -> impl Iterator<Item = &HeaderName>;
    fn remove(&mut self, name: &HeaderName);
    /// Set `name` to `value`, replacing any values it had.
    fn insert(&mut self, name: &'static str, value: HeaderValue);
}

impl HeaderEdit for HeaderMap {
    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.keys()
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
    fn insert(&mut self, name: &'static str, value: HeaderValue) {
        HeaderMap::insert(self, HeaderName::from_static(name), value);
    }
}

/// Rewrite the trace headers of a request as it goes upstream: write `inject`'s formats from
/// the plan and remove every other propagation header stitch knows.
///
/// A header stitch writes replaces the incoming one in place (one insert rather than a remove
/// and an append, and the maps do not grow); the others present are removed first. The names
/// are `'static`, so Pingora does not copy them into its case map. Up to 16 headers each way
/// are held on the stack. (Inserting while the injector hands the values over, then removing,
/// measured 1.7% more instructions per full-route request.)
pub fn rewrite(plan: &TracePlan, inject: &[Format], headers: &mut impl HeaderEdit) {
    let mut written: [Option<(&'static str, HeaderValue)>; 16] = Default::default();
    let mut overflow: Vec<(&'static str, HeaderValue)> = Vec::new();
    let mut n = 0;
    propagation::inject_each(&plan.context, plan.span_id, inject, |name, value| {
        let name: &'static str = name.as_str();
        match written.get_mut(n) {
            Some(slot) => *slot = Some((name, value)),
            None => overflow.push((name, value)),
        }
        n += 1;
    });
    let writes = || written.iter().flatten().chain(overflow.iter());
    let mut stale: [Option<HeaderName>; 16] = Default::default();
    let mut stale_overflow = Vec::new();
    let mut m = 0;
    for k in headers.names() {
        let k_str = k.as_str();
        if propagation::is_propagation_name(k_str) && !writes().any(|(w, _)| *w == k_str) {
            match stale.get_mut(m) {
                Some(slot) => *slot = Some(k.clone()),
                None => stale_overflow.push(k.clone()),
            }
            m += 1;
        }
    }
    for name in stale.into_iter().flatten().chain(stale_overflow) {
        headers.remove(&name);
    }
    for (name, value) in written.into_iter().flatten().chain(overflow) {
        headers.insert(name, value);
    }
}
