//! The one place where several formats found on the same request are reconciled
//! (spec §6, dd-trace's default "continue" behaviour).
//!
//! Rules, in order:
//! 1. Every configured extract format is parsed (in the configured order); each gets an
//!    [`Outcome`]. Baggage is extracted on its own and takes no part in the merge.
//! 2. The **first format that yields a valid trace id** is the primary context: it gives the
//!    trace id, parent id, sampling priority, origin and `_dd.p.*` tags.
//! 3. A later context with the **same** trace id (all 128 bits compared):
//!    - if it is `tracecontext`, its tracestate is copied onto the primary (other vendors'
//!      members and unknown `dd` sub-keys are kept for injection);
//!    - if it is `tracecontext` and its parent id differs, **the traceparent parent id
//!      wins**, and `_dd.parent_id` (the last Datadog parent) is taken from tracestate `p:`
//!      or, failing that, from the Datadog parent id (conflict `parent_id`);
//!    - the primary's priority, origin and tags are kept (a different keep/drop decision is
//!      counted as conflict `sampling`; a different parent from a non-W3C format is counted
//!      as `parent_id` and ignored).
//! 4. A later context with a **different** trace id and a non-zero parent becomes a span
//!    link with `reason=terminated_context` and `context_headers=<format>`, `sampled` from
//!    its priority and, for `tracecontext`, its raw tracestate; its tracestate is not
//!    forwarded (conflict `trace_id`). When the low 64 bits agree but the high bits do not
//!    (a 64-bit Datadog id against a 128-bit W3C id), the conflict `tid` is counted too:
//!    the two are different traces and the upper bits of the later one are lost.
//!    A `tracecontext` with the same trace id also gives its `random-trace-id` flag: W3C
//!    Level 2 says every outgoing traceparent with that trace id keeps it.
//! 5. No valid context: `context` is `None`. A `b3` header carrying only a decision
//!    (`b3: 0`) sets `new_trace_priority` so the new trace honours it.
//!
//! With `extract_first` (dd-trace's `DD_TRACE_PROPAGATION_EXTRACT_FIRST`), formats are read
//! in order only until one is **present**: that one decides alone (valid: it is the context;
//! invalid: no context, a new trace), and later trace-context formats are not read, so rules
//! 3 and 4 never apply. `baggage` is read wherever it is listed. dd-trace-py 4.16 and
//! dd-trace-go read only the *first configured* format, even when it is absent; stitch goes on
//! to the first format the request carries, so a traceparent-only client still continues its
//! trace on a profile that lists `datadog` first (the README lists this difference).

use http::HeaderMap;

use super::context::{SpanLink, TraceContext};
use super::{b3, baggage, datadog, w3c, ExtractOptions, Extraction, Format, Outcome};

/// Conflict kinds (metric label values).
pub const CONFLICT_KINDS: [&str; 4] = ["trace_id", "parent_id", "sampling", "tid"];

fn outcome<T>(r: &Result<Option<T>, &'static str>, ids: impl Fn(&T) -> Option<Outcome>) -> Outcome {
    match r {
        Ok(None) => Outcome::Absent,
        Err(reason) => Outcome::Invalid(reason),
        Ok(Some(v)) => ids(v).unwrap_or(Outcome::Absent),
    }
}

fn ids(o: &Outcome) -> Option<(u128, u64, Option<i32>)> {
    match *o {
        Outcome::Valid {
            trace_id,
            parent_id,
            priority,
        } if trace_id != 0 => Some((trace_id, parent_id, priority)),
        _ => None,
    }
}

fn keeps(p: Option<i32>) -> Option<bool> {
    p.map(|p| p > 0)
}

pub(crate) fn extract(
    headers: &HeaderMap,
    formats: &[Format],
    opts: &ExtractOptions,
) -> Extraction {
    let mut outcomes: Vec<(Format, Outcome)> = Vec::with_capacity(formats.len());
    let mut dd: Option<datadog::View<'_>> = None;
    let mut tc: Option<w3c::View<'_>> = None;
    let mut single: Option<b3::Parsed> = None;
    let mut baggage_value = None;
    // extract_first: a trace-context format was present; read no other.
    let mut stopped = false;
    for &f in formats {
        if stopped && f != Format::Baggage {
            continue;
        }
        let o = match f {
            Format::Datadog => {
                let r = datadog::parse(headers);
                let o = outcome(&r, |v| {
                    Some(Outcome::Valid {
                        trace_id: v.trace_id,
                        parent_id: v.parent_id,
                        priority: v.priority,
                    })
                });
                dd = r.ok().flatten();
                o
            }
            Format::TraceContext => {
                let r = w3c::parse(headers, opts.tracestate_invalid);
                let o = outcome(&r, |v| {
                    Some(Outcome::Valid {
                        trace_id: v.trace_id,
                        parent_id: v.parent_id,
                        priority: v.priority,
                    })
                });
                tc = r.ok().flatten();
                o
            }
            Format::B3 | Format::B3Multi => {
                let r = if f == Format::B3 {
                    b3::parse_single(headers)
                } else {
                    b3::parse_multi(headers)
                };
                if f == Format::B3 {
                    single = r.ok().flatten();
                }
                outcome(&r, |p| {
                    p.ids.map(|(t, s)| Outcome::Valid {
                        trace_id: t,
                        parent_id: s,
                        priority: p.priority,
                    })
                })
            }
            Format::Baggage => {
                let r = baggage::extract(headers);
                let o = outcome(&r, |_| {
                    Some(Outcome::Valid {
                        trace_id: 0,
                        parent_id: 0,
                        priority: None,
                    })
                });
                baggage_value = r.ok().flatten();
                o
            }
        };
        // `b3: 0` (a decision without ids) is present though it gives no context.
        let present = o != Outcome::Absent || (f == Format::B3 && single.is_some());
        if opts.extract_first && f != Format::Baggage && present {
            stopped = true;
        }
        outcomes.push((f, o));
    }

    let mut ext = Extraction {
        context: None,
        winner: None,
        outcomes: Vec::new(),
        conflicts: Vec::new(),
        notes: Vec::new(),
        baggage: baggage_value,
        new_trace_priority: None,
        tracestate_discarded: tc.as_ref().and_then(|v| v.tracestate_discarded),
    };

    // The primary: first valid trace-context format.
    let primary = outcomes
        .iter()
        .find(|(f, o)| *f != Format::Baggage && ids(o).is_some())
        .map(|(f, _)| *f);
    let Some(primary) = primary else {
        ext.new_trace_priority =
            single.and_then(|s| if s.ids.is_none() { s.priority } else { None });
        ext.outcomes = outcomes;
        return ext;
    };
    let mut ctx = match primary {
        Format::Datadog => dd.map(datadog::View::into_context),
        Format::TraceContext => tc.clone().map(w3c::View::into_context),
        _ => outcomes
            .iter()
            .find(|(f, _)| *f == primary)
            .and_then(|(_, o)| ids(o))
            .map(|(t, p, prio)| {
                let mut c = TraceContext::new_root(t);
                c.parent_id = p;
                c.sampling_priority = prio;
                c
            }),
    }
    .unwrap_or_else(|| TraceContext::new_root(1));
    let primary_priority = ctx.sampling_priority;

    for (i, (f, o)) in outcomes.iter().enumerate() {
        let f = *f;
        if f == primary || f == Format::Baggage || outcomes[..i].iter().any(|(g, _)| *g == f) {
            continue;
        }
        let Some((tid, pid, prio)) = ids(o) else {
            continue;
        };
        if tid != ctx.trace_id {
            push_conflict(&mut ext.conflicts, "trace_id");
            if tid as u64 == ctx.trace_id as u64 {
                push_conflict(&mut ext.conflicts, "tid");
            }
            if pid != 0 {
                let tracestate = match (f, &tc) {
                    (Format::TraceContext, Some(v)) => v.raw_tracestate().map(str::to_owned),
                    _ => None,
                };
                ctx.links.push(SpanLink {
                    trace_id: tid,
                    span_id: pid,
                    sampled: Some(prio.is_some_and(|p| p > 0)),
                    tracestate,
                    attributes: vec![
                        ("reason", "terminated_context".to_owned()),
                        ("context_headers", f.name().to_owned()),
                    ],
                });
            }
            continue;
        }
        if let (Some(a), Some(b)) = (keeps(primary_priority), keeps(prio)) {
            if a != b {
                push_conflict(&mut ext.conflicts, "sampling");
            }
        }
        if f == Format::TraceContext {
            if let Some(v) = &tc {
                v.copy_tracestate(&mut ctx);
                ctx.random_trace_id = v.random;
                if pid != ctx.parent_id {
                    push_conflict(&mut ext.conflicts, "parent_id");
                    ctx.last_parent_id = v
                        .last_parent
                        .or_else(|| dd.as_ref().map(|d| d.parent_id).filter(|p| *p != 0));
                    ctx.parent_id = pid;
                }
            }
        } else if pid != ctx.parent_id {
            push_conflict(&mut ext.conflicts, "parent_id");
        }
    }
    ctx.baggage = ext.baggage.clone();
    ext.context = Some(ctx);
    ext.winner = Some(primary);
    ext.outcomes = outcomes;
    ext
}

fn push_conflict(c: &mut Vec<&'static str>, kind: &'static str) {
    if !c.contains(&kind) {
        c.push(kind);
    }
}

pub(crate) fn explain(ext: &Extraction) -> Vec<String> {
    let mut lines = Vec::new();
    for (f, o) in &ext.outcomes {
        let line = match o {
            Outcome::Absent => format!("{}: absent", f.name()),
            Outcome::Invalid(r) => format!("{}: invalid ({r}), treated as absent", f.name()),
            Outcome::Valid { .. } if *f == Format::Baggage => {
                format!("{}: valid, forwarded byte for byte", f.name())
            }
            Outcome::Valid {
                trace_id,
                parent_id,
                priority,
            } => format!(
                "{}: valid trace_id={trace_id:032x} parent_id={parent_id:016x} priority={}",
                f.name(),
                priority.map_or("none".to_owned(), |p| p.to_string())
            ),
        };
        lines.push(line);
    }
    match (&ext.context, ext.winner) {
        (Some(ctx), Some(w)) => {
            lines.push(format!(
                "winner: {} (first format in the extract order with a valid trace id)",
                w.name()
            ));
            if let Some(lp) = ctx.last_parent_id {
                lines.push(format!(
                    "tracecontext has the same trace id and a different parent: its parent {:016x} wins, _dd.parent_id={lp:016x}",
                    ctx.parent_id
                ));
            }
            if !ctx.tracestate_others.is_empty() {
                lines.push(format!(
                    "tracestate members of other vendors kept: {}",
                    ctx.tracestate_others.join(",")
                ));
            }
            for l in &ctx.links {
                let from = l
                    .attributes
                    .iter()
                    .find(|(k, _)| *k == "context_headers")
                    .map_or("", |(_, v)| v.as_str());
                lines.push(format!(
                    "{from}: different trace id {:032x}, linked (reason=terminated_context), not continued",
                    l.trace_id
                ));
            }
            if let Some(e) = &ctx.propagation_error {
                lines.push(format!("_dd.propagation_error={e}"));
            }
        }
        _ => {
            lines.push("no valid trace context: a new trace starts at the edge".to_owned());
            if let Some(p) = ext.new_trace_priority {
                lines.push(format!(
                    "b3 carried only a sampling decision: the new trace uses priority {p}"
                ));
            }
        }
    }
    if let Some(r) = ext.tracestate_discarded {
        lines.push(format!(
            "tracestate ignored whole ({r}; tracestate_invalid = \"discard_header\"), its dd member too"
        ));
    }
    if ext.context.as_ref().is_some_and(|c| c.random_trace_id) {
        lines.push("traceparent flag 0x02 (random trace id) kept for this trace id".to_owned());
    }
    if !ext.conflicts.is_empty() {
        lines.push(format!("conflicts: {}", ext.conflicts.join(",")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{
        extract, extract_with, headers, inject, strip, TracestateInvalid, DEFAULT_EXTRACT,
    };
    use proptest::prelude::*;

    const TP_C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const C: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    const EDGE: u64 = 0x1111222233334444;

    /// Extract with the defaults, strip, inject `formats`: the upstream headers.
    fn hop(hs: &[(&str, &str)], formats: &[Format]) -> (Extraction, HeaderMap) {
        let mut h = headers(hs);
        let ext = extract(&h, DEFAULT_EXTRACT);
        strip(&mut h);
        let ctx = ext
            .context
            .clone()
            .unwrap_or_else(|| TraceContext::new_root(0xabc));
        inject(&ctx, EDGE, formats, &mut h);
        (ext, h)
    }

    fn get<'a>(h: &'a HeaderMap, n: &str) -> &'a str {
        h.get(n).map(|v| v.to_str().unwrap()).unwrap_or("<absent>")
    }

    const ALL: &[Format] = &[
        Format::Datadog,
        Format::TraceContext,
        Format::B3,
        Format::B3Multi,
        Format::Baggage,
    ];

    #[test]
    fn case_01_rum_datadog_to_every_format() {
        let (ext, h) = hop(
            &[
                ("x-datadog-origin", "rum"),
                ("x-datadog-parent-id", "3245567862311265982"),
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-trace-id", "6255592339373587297"),
            ],
            ALL,
        );
        assert_eq!(ext.winner, Some(Format::Datadog));
        assert_eq!(
            get(&h, "traceparent"),
            "00-000000000000000056d05416d0047b61-1111222233334444-01"
        );
        assert_eq!(get(&h, "tracestate"), "dd=s:1;o:rum;p:1111222233334444");
        assert_eq!(get(&h, "x-b3-traceid"), "56d05416d0047b61");
        assert_eq!(get(&h, "x-datadog-parent-id"), "1229801703532086340");
        assert_eq!(
            get(&h, "x-datadog-tags"),
            "<absent>",
            "a 64-bit id never gets upper bits"
        );
    }

    #[test]
    fn case_02_rum_all_mode_drop_kept() {
        let (ext, h) = hop(
            &[
                ("x-datadog-origin", "rum"),
                ("x-datadog-parent-id", "3245567862311265982"),
                ("x-datadog-sampling-priority", "0"),
                ("x-datadog-trace-id", "6255592339373587297"),
                (
                    "traceparent",
                    "00-000000000000000056d05416d0047b61-2d0a92c6677ca6be-00",
                ),
                ("tracestate", "dd=s:0;o:rum"),
            ],
            ALL,
        );
        assert!(
            ext.conflicts.is_empty(),
            "RUM's two formats agree: {:?}",
            ext.conflicts
        );
        assert_eq!(get(&h, "x-datadog-sampling-priority"), "0");
        assert!(get(&h, "traceparent").ends_with("-00"));
        assert_eq!(get(&h, "tracestate"), "dd=s:0;o:rum;p:1111222233334444");
        assert_eq!(get(&h, "x-b3-sampled"), "0");
    }

    #[test]
    fn case_03_w3c_128_to_datadog() {
        let (ext, h) = hop(
            &[
                ("traceparent", TP_C),
                ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ],
            ALL,
        );
        assert_eq!(ext.winner, Some(Format::TraceContext));
        assert_eq!(get(&h, "x-datadog-trace-id"), "11803532876627986230");
        assert_eq!(get(&h, "x-datadog-tags"), "_dd.p.tid=4bf92f3577b34da6");
        assert_eq!(get(&h, "tracestate"), "dd=s:1;p:1111222233334444;t.tid:4bf92f3577b34da6,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
        assert_eq!(
            get(&h, "b3"),
            "4bf92f3577b34da6a3ce929d0e0e4736-1111222233334444-1"
        );
    }

    #[test]
    fn case_04_priority_2_and_dm() {
        let (_, h) = hop(
            &[
                ("x-datadog-trace-id", "7277407061855694839"),
                ("x-datadog-parent-id", "5208512171318403364"),
                ("x-datadog-sampling-priority", "2"),
                ("x-datadog-tags", "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4"),
            ],
            ALL,
        );
        assert_eq!(
            get(&h, "traceparent"),
            "00-640cfd8d0000000064fe8b2a57d3eff7-1111222233334444-01"
        );
        assert!(get(&h, "tracestate")
            .starts_with("dd=s:2;p:1111222233334444;t.tid:640cfd8d00000000;t.dm:-4"));
        assert_eq!(
            get(&h, "b3"),
            "640cfd8d0000000064fe8b2a57d3eff7-1111222233334444-d"
        );
        assert_eq!(get(&h, "x-b3-flags"), "1");
        assert_eq!(
            get(&h, "x-datadog-tags"),
            "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4"
        );
    }

    #[test]
    fn cases_05_07_flag_and_s() {
        for (flags, s, prio, b3m) in [
            ("01", "-1", 1, "1"),
            ("00", "2", 0, "0"),
            ("00", "-1", -1, "0"),
        ] {
            let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
            let ts = format!("dd=s:{s}");
            let (ext, h) = hop(&[("traceparent", &tp), ("tracestate", &ts)], ALL);
            assert_eq!(
                ext.context.unwrap().sampling_priority,
                Some(prio),
                "{flags} + s:{s}"
            );
            assert_eq!(get(&h, "x-datadog-sampling-priority"), prio.to_string());
            assert_eq!(get(&h, "x-b3-sampled"), b3m);
            assert!(get(&h, "tracestate").starts_with(&format!("dd=s:{prio};")));
        }
    }

    #[test]
    fn case_08_same_trace_parents_differ() {
        let (ext, h) = hop(
            &[
                ("x-datadog-trace-id", "11803532876627986230"),
                ("x-datadog-parent-id", "5"),
                ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6"),
                ("x-datadog-sampling-priority", "1"),
                ("traceparent", TP_C),
                ("tracestate", "dd=s:1;p:0123456789abcdef,congo=t61rcWkgMzE"),
            ],
            ALL,
        );
        let ctx = ext.context.unwrap();
        assert_eq!(ext.winner, Some(Format::Datadog));
        assert_eq!(ctx.parent_id, 0x00f067aa0ba902b7, "traceparent parent wins");
        assert_eq!(ctx.last_parent_id, Some(0x0123456789abcdef));
        assert_eq!(ext.conflicts, vec!["parent_id"]);
        assert!(
            get(&h, "tracestate").ends_with(",congo=t61rcWkgMzE"),
            "congo kept"
        );
        // Without p:, the Datadog parent id becomes _dd.parent_id.
        let (ext, _) = hop(
            &[
                ("x-datadog-trace-id", "11803532876627986230"),
                ("x-datadog-parent-id", "5"),
                ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6"),
                ("traceparent", TP_C),
            ],
            ALL,
        );
        assert_eq!(ext.context.unwrap().last_parent_id, Some(5));
    }

    #[test]
    fn case_09_trace_ids_differ_link() {
        let (ext, h) = hop(
            &[
                ("x-datadog-trace-id", "7277407061855694839"),
                ("x-datadog-parent-id", "5"),
                ("traceparent", TP_C),
                ("tracestate", "dd=s:1,congo=t61rcWkgMzE"),
            ],
            ALL,
        );
        let ctx = ext.context.unwrap();
        assert_eq!(ctx.trace_id, 7277407061855694839);
        assert_eq!(ext.conflicts, vec!["trace_id"]);
        assert_eq!(ctx.links.len(), 1);
        let l = &ctx.links[0];
        assert_eq!(
            (l.trace_id, l.span_id, l.sampled),
            (C, 0x00f067aa0ba902b7, Some(true))
        );
        assert_eq!(l.tracestate.as_deref(), Some("dd=s:1,congo=t61rcWkgMzE"));
        assert_eq!(
            l.attributes,
            vec![
                ("reason", "terminated_context".to_owned()),
                ("context_headers", "tracecontext".to_owned())
            ]
        );
        assert!(!get(&h, "tracestate").contains("congo"), "congo dropped");
    }

    #[test]
    fn case_10_64_vs_128_same_low_half() {
        let (ext, _) = hop(
            &[
                ("x-datadog-trace-id", "11803532876627986230"),
                ("x-datadog-parent-id", "5"),
                ("traceparent", TP_C),
            ],
            ALL,
        );
        let ctx = ext.context.unwrap();
        assert_eq!(ctx.trace_id, 11803532876627986230, "upper bits lost");
        assert_eq!(ext.conflicts, vec!["trace_id", "tid"]);
        assert_eq!(ctx.links.len(), 1);
    }

    #[test]
    fn case_11_ff_traceparent_tracestate_ignored() {
        let (ext, h) = hop(
            &[
                ("x-datadog-trace-id", "123"),
                ("x-datadog-parent-id", "5"),
                (
                    "traceparent",
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "dd=s:2;o:rum,congo=x"),
            ],
            ALL,
        );
        assert_eq!(
            ext.outcomes[1],
            (Format::TraceContext, Outcome::Invalid("bad_version"))
        );
        let ctx = ext.context.unwrap();
        assert_eq!((ctx.sampling_priority, ctx.origin), (None, None));
        assert_eq!(get(&h, "tracestate"), "dd=p:1111222233334444");
    }

    #[test]
    fn cases_12_to_14_traceparent_validity() {
        let (ext, h) = hop(&[("traceparent", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-will-be-like")], ALL);
        assert_eq!(ext.context.unwrap().trace_id, C);
        assert_eq!(
            get(&h, "traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111222233334444-01"
        );
        let (ext, _) = hop(
            &[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            )],
            ALL,
        );
        assert!(ext.context.is_none(), "uppercase: new trace");
        let (ext, h) = hop(
            &[
                (
                    "traceparent",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ),
                ("tracestate", "dd=s:2;o:rum"),
            ],
            ALL,
        );
        assert!(ext.context.is_none());
        assert_eq!(
            get(&h, "x-datadog-origin"),
            "<absent>",
            "no origin on the new trace"
        );
    }

    #[test]
    fn case_15_zero_datadog_falls_through() {
        let (ext, _) = hop(
            &[
                ("x-datadog-trace-id", "0"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                ),
            ],
            ALL,
        );
        assert_eq!(ext.winner, Some(Format::TraceContext));
        assert_eq!(ext.context.unwrap().sampling_priority, Some(0));
        assert_eq!(
            ext.outcomes[0],
            (Format::Datadog, Outcome::Invalid("zero_trace_id"))
        );
    }

    #[test]
    fn case_16_oversized_tags() {
        let tags = format!("_dd.p.tid=640cfd8d00000000,_dd.p.x={}", "a".repeat(520));
        let (ext, h) = hop(
            &[
                ("x-datadog-trace-id", "7277407061855694839"),
                ("x-datadog-tags", &tags),
            ],
            ALL,
        );
        let ctx = ext.context.unwrap();
        assert_eq!(ctx.trace_id, 7277407061855694839);
        assert_eq!(ctx.propagation_error.as_deref(), Some("extract_max_size"));
        assert_eq!(get(&h, "x-datadog-tags"), "<absent>");
    }

    #[test]
    fn cases_17_18_b3() {
        let (ext, h) = hop(
            &[(
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
            )],
            ALL,
        );
        let ctx = ext.context.unwrap();
        assert_eq!(
            (ctx.sampling_priority, ctx.parent_id),
            (Some(2), 0xe457b5a2e4d86bd1)
        );
        assert_eq!(get(&h, "x-datadog-tags"), "_dd.p.tid=80f198ee56343ba8");
        let (ext, h) = hop(
            &[
                ("X-B3-TraceId", "463ac35c9f6413ad"),
                ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                ("X-B3-Flags", "1"),
            ],
            ALL,
        );
        assert_eq!(ext.context.unwrap().sampling_priority, Some(2));
        assert_eq!(
            get(&h, "traceparent"),
            "00-0000000000000000463ac35c9f6413ad-1111222233334444-01"
        );
    }

    #[test]
    fn case_19_and_20_tags_and_baggage() {
        let bag = "session.id=d7a5c1e2-3f4b-4c5d-8e9f-0a1b2c3d4e5f,user.id=a%40b";
        let (ext, h) = hop(
            &[
                ("traceparent", TP_C),
                ("tracestate", "dd=s:2;t.usr.id:dXNlcjE~"),
                ("baggage", bag),
            ],
            ALL,
        );
        assert_eq!(
            ext.context.as_ref().unwrap().tag("_dd.p.usr.id"),
            Some("dXNlcjE=")
        );
        assert!(get(&h, "x-datadog-tags").contains("_dd.p.usr.id=dXNlcjE="));
        assert_eq!(get(&h, "baggage"), bag, "byte for byte");
        assert_eq!(
            ext.outcomes[4].1,
            Outcome::Valid {
                trace_id: 0,
                parent_id: 0,
                priority: None
            }
        );
    }

    #[test]
    fn extra_cases() {
        let (ext, _) = hop(&[("x-datadog-trace-id", "abc"), ("traceparent", TP_C)], ALL);
        assert_eq!(ext.winner, Some(Format::TraceContext), "abc falls through");
        let (ext, _) = hop(
            &[
                ("x-datadog-trace-id", "123"),
                ("x-datadog-origin", "synthetics"),
            ],
            ALL,
        );
        let ctx = ext.context.unwrap();
        assert_eq!(
            (ctx.trace_id, ctx.parent_id, ctx.origin.as_deref()),
            (123, 0, Some("synthetics"))
        );
        let (ext, _) = hop(&[("b3", "0")], ALL);
        assert!(ext.context.is_none());
        assert_eq!(
            ext.new_trace_priority,
            Some(0),
            "b3: 0 honoured on the new trace"
        );
        let (ext, h) = hop(
            &[
                ("x-datadog-trace-id", "123"),
                ("x-datadog-tags", "_dd.p.dm=1,_dd.p.x=y"),
            ],
            ALL,
        );
        assert_eq!(
            ext.context.unwrap().propagation_error.as_deref(),
            Some("decoding_error")
        );
        assert_eq!(
            get(&h, "x-datadog-tags"),
            "_dd.p.x=y",
            "deliberate: remaining tags still sent"
        );
    }

    #[test]
    fn datadog_only_to_tracecontext_only_route() {
        let (_, h) = hop(
            &[
                ("x-datadog-trace-id", "123"),
                ("x-datadog-parent-id", "5"),
                ("x-datadog-sampling-priority", "1"),
            ],
            &[Format::TraceContext],
        );
        assert_eq!(
            get(&h, "traceparent"),
            "00-0000000000000000000000000000007b-1111222233334444-01"
        );
        assert!(h.keys().all(|k| !k.as_str().starts_with("x-datadog-")));
    }

    #[test]
    fn b3_link_and_sampling_conflict() {
        let ext = extract(
            &headers(&[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                ),
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "1"),
                ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1"),
            ]),
            DEFAULT_EXTRACT,
        );
        assert_eq!(ext.conflicts, vec!["sampling", "parent_id", "trace_id"]);
        let ctx = ext.context.as_ref().unwrap();
        assert_eq!(
            ctx.parent_id, 0x00f067aa0ba902b7,
            "only traceparent overrides the parent"
        );
        assert_eq!(ctx.links[0].attributes[1].1, "b3");
        let lines = explain(&ext);
        assert!(
            lines.iter().any(|l| l.starts_with("winner: tracecontext")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.contains("linked")), "{lines:?}");
    }

    const DD_C: [(&str, &str); 3] = [
        ("x-datadog-trace-id", "11803532876627986230"),
        ("x-datadog-parent-id", "5"),
        ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6"),
    ];

    /// `extract_first` against the default merge on the same headers. Columns: headers, extract
    /// first?, winner, parent id, links, other tracestate members kept, formats read, reason.
    #[test]
    #[rustfmt::skip]
    fn extract_first_table() {
        let dd_c_w3c: Vec<(&str, &str)> = DD_C.iter().copied().chain([("traceparent", TP_C), ("tracestate", "dd=s:1;p:0123456789abcdef,congo=x")]).collect();
        let dd_other_w3c = vec![("x-datadog-trace-id", "123"), ("x-datadog-parent-id", "5"), ("traceparent", TP_C), ("tracestate", "congo=x")];
        let bad_dd_w3c = vec![("x-datadog-trace-id", "abc"), ("traceparent", TP_C)];
        let w3c_only = vec![("traceparent", TP_C), ("tracestate", "congo=x")];
        let w3c_b3 = vec![("traceparent", TP_C), ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1")];
        type Row<'a> = (&'a [(&'a str, &'a str)], bool, Option<Format>, u64, usize, &'a str, usize, &'a str);
        let rows: Vec<Row<'_>> = vec![
            (&dd_c_w3c,     false, Some(Format::Datadog)     , 0x00f067aa0ba902b7, 0, "congo=x", 5, "merge: same trace, the traceparent parent wins, congo kept"),
            (&dd_c_w3c,     true,  Some(Format::Datadog),      5,                  0, "",        2, "first: datadog alone, its parent, no tracestate merge"),
            (&dd_other_w3c, false, Some(Format::Datadog),      5,                  1, "",        5, "merge: a different trace becomes a link"),
            (&dd_other_w3c, true,  Some(Format::Datadog),      5,                  0, "",        2, "first: no span link"),
            (&bad_dd_w3c,   false, Some(Format::TraceContext), 0x00f067aa0ba902b7, 0, "",        5, "merge: a bad datadog header falls through"),
            (&bad_dd_w3c,   true,  None,                       0,                  0, "",        2, "first: the first format present is invalid, so a new trace"),
            (&w3c_only,     true,  Some(Format::TraceContext), 0x00f067aa0ba902b7, 0, "congo=x", 3, "first: an absent format is skipped (dd-trace stops at the first configured one)"),
            (&w3c_b3,       false, Some(Format::TraceContext), 0x00f067aa0ba902b7, 1, "",        5, "merge: b3 with another trace id is linked"),
            (&w3c_b3,       true,  Some(Format::TraceContext), 0x00f067aa0ba902b7, 0, "",        3, "first: b3 is not read"),
        ];
        for (hs, first, winner, parent, links, others, read, why) in rows {
            let opts = ExtractOptions { extract_first: first, ..ExtractOptions::default() };
            let ext = extract_with(&headers(hs), DEFAULT_EXTRACT, &opts);
            assert_eq!(ext.winner, winner, "{why}");
            assert_eq!(ext.outcomes.len(), read, "{why}: {:?}", ext.outcomes);
            match &ext.context {
                Some(c) => {
                    assert_eq!(c.parent_id, parent, "{why}");
                    assert_eq!(c.links.len(), links, "{why}");
                    assert_eq!(c.tracestate_others.join(","), others, "{why}");
                }
                None => assert_eq!((parent, links), (0, 0), "{why}"),
            }
            if first {
                assert!(ext.conflicts.is_empty(), "{why}: no merge, no conflicts");
            }
        }
    }

    #[test]
    fn extract_first_still_reads_baggage_and_b3_deny() {
        let first = ExtractOptions {
            extract_first: true,
            ..ExtractOptions::default()
        };
        let ext = extract_with(
            &headers(&[("traceparent", TP_C), ("baggage", "a=1")]),
            DEFAULT_EXTRACT,
            &first,
        );
        assert_eq!(ext.winner, Some(Format::TraceContext));
        assert_eq!(
            ext.baggage.as_ref().map(|b| b.as_bytes()),
            Some(&b"a=1"[..])
        );
        assert_eq!(ext.outcomes.last().map(|o| o.0), Some(Format::Baggage));
        let ext = extract_with(
            &headers(&[("b3", "0"), ("traceparent", TP_C)]),
            &[Format::B3, Format::TraceContext],
            &first,
        );
        assert!(
            ext.context.is_none(),
            "b3: 0 is present, so it decides alone"
        );
        assert_eq!(ext.new_trace_priority, Some(0));
        assert_eq!(ext.outcomes.len(), 1, "tracecontext not read");
    }

    /// The random flag follows the trace id (Level 2): kept when a `traceparent` with the same
    /// trace id is merged, whichever format won; never taken from a linked trace.
    #[test]
    #[rustfmt::skip]
    fn random_flag_follows_the_trace_id() {
        const TP_C_03: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        let dd_c: Vec<(&str, &str)> = DD_C.to_vec();
        let dd_c_w3c: Vec<(&str, &str)> = DD_C.iter().copied().chain([("traceparent", TP_C_03)]).collect();
        let dd_low_w3c = vec![("x-datadog-trace-id", "11803532876627986230"), ("x-datadog-parent-id", "5"), ("traceparent", TP_C_03)];
        let dd_other_w3c = vec![("x-datadog-trace-id", "123"), ("x-datadog-parent-id", "5"), ("traceparent", TP_C_03)];
        let b3_w3c = vec![("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("traceparent", TP_C_03)];
        let w3c_02 = vec![("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02")];
        type Row<'a> = (&'a [(&'a str, &'a str)], &'a [Format], bool, &'a str);
        let rows: Vec<Row<'_>> = vec![
            (&w3c_02,       DEFAULT_EXTRACT,                         true,  "traceparent alone: its flag"),
            (&dd_c_w3c,     DEFAULT_EXTRACT,                         true,  "datadog wins, traceparent of the same trace id: flag kept"),
            (&b3_w3c,       &[Format::B3Multi, Format::TraceContext], true,  "b3multi wins, same trace id: flag kept"),
            (&dd_low_w3c,   DEFAULT_EXTRACT,                         false, "64-bit datadog vs 128-bit W3C: different traces, flag not taken"),
            (&dd_other_w3c, DEFAULT_EXTRACT,                         false, "different trace id: linked, flag not taken"),
            (&dd_c,         DEFAULT_EXTRACT,                         false, "no traceparent: unknown, so unset"),
            (&dd_c_w3c,     &[Format::Datadog],                      false, "traceparent not configured: not read"),
        ];
        for (hs, formats, want, why) in rows {
            let ctx = extract(&headers(hs), formats).context.expect(why);
            assert_eq!(ctx.random_trace_id, want, "{why}");
        }
        let first = ExtractOptions { extract_first: true, ..ExtractOptions::default() };
        let ctx = extract_with(&headers(&dd_c_w3c), DEFAULT_EXTRACT, &first).context.unwrap();
        assert!(!ctx.random_trace_id, "extract_first: the traceparent behind datadog is not read");
    }

    #[test]
    fn tracestate_discard_is_reported() {
        let h = headers(&[("traceparent", TP_C), ("tracestate", "dd=s:2;o:rum,Bad=1")]);
        let strict = ExtractOptions {
            tracestate_invalid: TracestateInvalid::DiscardHeader,
            ..ExtractOptions::default()
        };
        let ext = extract_with(&h, DEFAULT_EXTRACT, &strict);
        assert_eq!(ext.tracestate_discarded, Some("tracestate_invalid_member"));
        assert_eq!(ext.context.as_ref().unwrap().origin, None);
        assert!(explain(&ext)
            .iter()
            .any(|l| l.contains("tracestate ignored whole")));
        let ext = extract(&h, DEFAULT_EXTRACT);
        assert_eq!(ext.tracestate_discarded, None);
        assert_eq!(ext.context.unwrap().origin.as_deref(), Some("rum"));
    }

    #[test]
    fn no_formats_or_nothing_present() {
        let ext = extract(&headers(&[("host", "x")]), DEFAULT_EXTRACT);
        assert!(ext.context.is_none());
        assert!(ext.outcomes.iter().all(|(_, o)| *o == Outcome::Absent));
        assert_eq!(ext.outcomes.len(), 5);
        let ext = extract(&headers(&[("traceparent", TP_C)]), &[Format::Datadog]);
        assert!(ext.context.is_none(), "only configured formats are read");
    }

    fn arb_ctx() -> impl Strategy<Value = TraceContext> {
        (
            any::<u64>().prop_filter("non-zero", |v| *v != 0),
            prop_oneof![
                Just(0u64),
                any::<u64>().prop_filter("non-zero", |v| *v != 0)
            ],
            proptest::option::of(-1i32..=2),
            proptest::option::of("[a-z][a-z-]{0,15}"),
            proptest::collection::vec(
                ("[a-z][a-z.]{0,8}", "-[0-9]{1,2}|[A-Za-z0-9+/]{1,12}"),
                0..4,
            ),
            proptest::collection::vec("[a-z][a-z0-9]{0,6}=[A-Za-z0-9]{1,10}", 0..4),
            any::<bool>(),
        )
            .prop_map(|(low, high, prio, origin, tags, others, random)| {
                let mut c = TraceContext::new_root((u128::from(high) << 64) | u128::from(low));
                c.sampling_priority = prio;
                c.origin = origin;
                c.random_trace_id = random;
                for (k, v) in tags {
                    // `_dd.p.dm` must be `-N` on the wire (a malformed one is dropped with a
                    // decoding error by design), so only well-formed values take part here.
                    if k == "dm" && !datadog::dm_ok(&v) {
                        continue;
                    }
                    c.set_tag(&format!("_dd.p.{k}"), &v);
                }
                c.remove_tag("_dd.p.tid");
                let mut seen = Vec::new();
                for o in others {
                    let k = o.split('=').next().unwrap().to_owned();
                    if k != "dd" && !seen.contains(&k) {
                        seen.push(k);
                        c.tracestate_others.push(o);
                    }
                }
                c
            })
    }

    fn round_trip(ctx: &TraceContext, span: u64, f: Format) -> TraceContext {
        let mut h = HeaderMap::new();
        inject(ctx, span, &[f], &mut h);
        let ext = extract(&h, &[f]);
        ext.context.expect("injected context extracts")
    }

    proptest! {
        /// datadog carries everything except other vendors' tracestate members.
        #[test]
        fn datadog_round_trip(ctx in arb_ctx(), span in 1u64..) {
            let got = round_trip(&ctx, span, Format::Datadog);
            let mut want = ctx.clone();
            want.parent_id = span;
            want.tracestate_others.clear(); // not carried by datadog
            want.random_trace_id = false; // a W3C flag: not carried by datadog
            prop_assert_eq!(got, want);
        }

        /// tracecontext carries everything (the random flag included), but the priority only as far as §5 lets the
        /// flag and `s` agree (kept as is for -1..=2) and "no decision" comes back as 0.
        #[test]
        fn tracecontext_round_trip(ctx in arb_ctx(), span in 1u64..) {
            let got = round_trip(&ctx, span, Format::TraceContext);
            let mut want = ctx.clone();
            want.parent_id = span;
            want.sampling_priority = Some(ctx.sampling_priority.unwrap_or(0)); // flag 00 = 0
            want.last_parent_id = Some(span); // p: is the edge span
            prop_assert_eq!(got, want);
        }

        /// b3 and b3multi carry only ids and the keep/drop (and debug) decision: no origin,
        /// tags or tracestate; -1 comes back as 0.
        #[test]
        fn b3_round_trips(ctx in arb_ctx(), span in 1u64..) {
            for f in [Format::B3, Format::B3Multi] {
                let got = round_trip(&ctx, span, f);
                let mut want = TraceContext::new_root(ctx.trace_id);
                want.parent_id = span;
                want.sampling_priority = ctx.sampling_priority.map(|p| p.clamp(0, 2));
                prop_assert_eq!(got, want);
            }
        }

        /// extract_first gives exactly what the first format present gives alone (and the
        /// baggage), never a merge: no links, no conflicts.
        #[test]
        fn extract_first_is_the_first_present_format_alone(pairs in proptest::collection::vec((
            prop_oneof![
                Just("x-datadog-trace-id"), Just("x-datadog-parent-id"), Just("x-datadog-sampling-priority"),
                Just("traceparent"), Just("tracestate"), Just("b3"), Just("x-b3-traceid"), Just("x-b3-spanid"),
                Just("baggage")],
            prop_oneof![
                Just("123".to_owned()), Just("5".to_owned()), Just("abc".to_owned()),
                Just(TP_C.to_owned()), Just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02".to_owned()),
                Just("dd=s:2;o:rum,congo=x".to_owned()), Just("463ac35c9f6413ad-a2fb4a1d1a96d312-1".to_owned()),
                Just("0".to_owned()), Just("a=1".to_owned()), "[ -~]{0,20}"]), 0..8)) {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                if let Ok(v) = http::HeaderValue::from_str(&v) {
                    h.append(k, v);
                }
            }
            let first = ExtractOptions { extract_first: true, ..ExtractOptions::default() };
            let ext = extract_with(&h, DEFAULT_EXTRACT, &first);
            prop_assert!(ext.conflicts.is_empty());
            let read: Vec<Format> = ext.outcomes.iter().map(|o| o.0).filter(|f| *f != Format::Baggage).collect();
            let Some(&last) = read.last() else { unreachable!("datadog is always read") };
            let alone = extract(&h, &[last]);
            let mut want = alone.context.clone();
            if let Some(c) = want.as_mut() {
                c.baggage = ext.baggage.clone();
            }
            prop_assert_eq!(&ext.context, &want);
            prop_assert_eq!(ext.new_trace_priority, alone.new_trace_priority);
            prop_assert!(ext.context.as_ref().is_none_or(|c| c.links.is_empty()));
            // Every format before the one that decided was absent.
            for (f, o) in &ext.outcomes[..read.len() - 1] {
                prop_assert!(*o == Outcome::Absent, "{:?} read before the decision but {:?}", f, o);
            }
        }

        #[test]
        fn extract_never_panics(pairs in proptest::collection::vec((
            prop_oneof![
                Just("x-datadog-trace-id"), Just("x-datadog-parent-id"), Just("x-datadog-sampling-priority"),
                Just("x-datadog-origin"), Just("x-datadog-tags"), Just("traceparent"), Just("tracestate"),
                Just("b3"), Just("x-b3-traceid"), Just("x-b3-spanid"), Just("x-b3-sampled"), Just("x-b3-flags"),
                Just("baggage")],
            proptest::collection::vec(any::<u8>(), 0..80)), 0..10), span in any::<u64>()) {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                if let Ok(v) = http::HeaderValue::from_bytes(&v) {
                    h.append(k, v);
                }
            }
            let ext = extract(&h, DEFAULT_EXTRACT);
            let _ = explain(&ext);
            let ctx = ext.context.clone().unwrap_or_else(|| TraceContext::new_root(1));
            strip(&mut h);
            inject(&ctx, span, ALL, &mut h);
            // What we write, we read back with the same trace id.
            let again = extract(&h, DEFAULT_EXTRACT);
            if span != 0 {
                prop_assert_eq!(again.context.map(|c| c.trace_id), Some(ctx.trace_id));
            }
        }
    }
}
