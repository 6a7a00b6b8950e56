//! B3 propagation (spec §3 and §5): the single `b3` header and the `x-b3-*` multi headers,
//! extract and inject.
//!
//! Rules implemented here:
//! - Trace id: 16 or 32 lowercase hex, non-zero; a 16-hex id is a 64-bit id (no invented
//!   upper bits), a 32-hex id carries the high half. Span id: 16 lowercase hex, non-zero;
//!   it becomes the parent of the edge span (the B3 parent field is ignored).
//! - Sampling: `0` → 0, `1` → 1, `d` (single) or `X-B3-Flags: 1` (multi) → 2; `true`/`false`
//!   are accepted in `X-B3-Sampled` (old senders); any other value is invalid.
//! - `b3: 0` / `b3: 1` / `b3: d` alone carry only a decision; they are reported as absent
//!   and the decision is offered for the new trace (`b3: 0` means drop, as the B3 spec says).
//! - A header on more than one line: the first line wins (B3 spec). A missing
//!   `X-B3-SpanId` reads as no parent (as dd-trace-py).
//! - Inject: ≤0 → `0`, 1 → `1`, ≥2 → `d` (single) or `X-B3-Flags: 1` without
//!   `X-B3-Sampled` (multi); no decision → no sampling field. 16 hex for a 64-bit id,
//!   32 hex otherwise.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::TraceContext;
use super::{first_field, parse_hex16, parse_hex_lower, Field, Writer};

pub const B3: &str = "b3";
pub const TRACE_ID: &str = "x-b3-traceid";
pub const SPAN_ID: &str = "x-b3-spanid";
pub const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const SAMPLED: &str = "x-b3-sampled";
pub const FLAGS: &str = "x-b3-flags";

pub(crate) static N_B3: HeaderName = HeaderName::from_static(B3);
pub(crate) static N_TRACE_ID: HeaderName = HeaderName::from_static(TRACE_ID);
pub(crate) static N_SPAN_ID: HeaderName = HeaderName::from_static(SPAN_ID);
pub(crate) static N_PARENT_SPAN_ID: HeaderName = HeaderName::from_static(PARENT_SPAN_ID);
pub(crate) static N_SAMPLED: HeaderName = HeaderName::from_static(SAMPLED);
pub(crate) static N_FLAGS: HeaderName = HeaderName::from_static(FLAGS);

/// Header of the single format, for CORS.
pub const SINGLE_HEADERS: [&str; 1] = [B3];
/// Headers of the multi format, for CORS.
pub const MULTI_HEADERS: [&str; 5] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS];

/// What a B3 header set carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// (trace id, span id); `None` for a sampling-only `b3` header.
    pub ids: Option<(u128, u64)>,
    pub priority: Option<i32>,
}

impl Parsed {
    /// The owned context (`None` for a sampling-only header).
    pub fn into_context(self) -> Option<TraceContext> {
        let (trace_id, parent_id) = self.ids?;
        let mut ctx = TraceContext::new_root(trace_id);
        ctx.parent_id = parent_id;
        ctx.sampling_priority = self.priority;
        Some(ctx)
    }
}

fn trace_id(s: &str) -> Option<u128> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    parse_hex_lower(s).filter(|v| *v != 0)
}

fn span_id(s: &str) -> Option<u64> {
    parse_hex16(s).filter(|v| *v != 0)
}

fn single_sampling(s: &str) -> Option<i32> {
    match s {
        "0" => Some(0),
        "1" => Some(1),
        "d" => Some(2),
        _ => None,
    }
}

/// Parse the single `b3` header. `Ok(None)`: absent.
pub fn parse_single(headers: &HeaderMap) -> Result<Option<Parsed>, &'static str> {
    let v = match first_field(headers, &N_B3) {
        Field::Absent => return Ok(None),
        Field::NonAscii => return Err("non_ascii"),
        Field::Duplicate | Field::Value("") => return Err("empty"),
        Field::Value(v) => v,
    };
    if let Some(p) = single_sampling(v) {
        return Ok(Some(Parsed {
            ids: None,
            priority: Some(p),
        }));
    }
    let mut parts = v.split('-');
    let t = trace_id(parts.next().unwrap_or("")).ok_or("bad_trace_id")?;
    let s = span_id(parts.next().ok_or("missing_span_id")?).ok_or("bad_span_id")?;
    let priority = match parts.next() {
        None => None,
        Some(x) => Some(single_sampling(x).ok_or("bad_sampling_state")?),
    };
    if let Some(parent) = parts.next() {
        span_id(parent).ok_or("bad_parent_span_id")?;
    }
    if parts.next().is_some() {
        return Err("bad_format");
    }
    Ok(Some(Parsed {
        ids: Some((t, s)),
        priority,
    }))
}

fn multi_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, &'static str> {
    match first_field(headers, name) {
        Field::Absent => Ok(None),
        Field::NonAscii => Err("non_ascii"),
        Field::Duplicate => Err("duplicate_header"),
        Field::Value(v) => Ok(Some(v)),
    }
}

/// Parse the `x-b3-*` headers. `Ok(None)`: no `X-B3-TraceId`.
pub fn parse_multi(headers: &HeaderMap) -> Result<Option<Parsed>, &'static str> {
    let Some(t) = multi_value(headers, &N_TRACE_ID)? else {
        return Ok(None);
    };
    let t = trace_id(t).ok_or("bad_trace_id")?;
    let s = match multi_value(headers, &N_SPAN_ID)? {
        None => 0,
        Some(s) => span_id(s).ok_or("bad_span_id")?,
    };
    let mut priority = match multi_value(headers, &N_SAMPLED)? {
        None => None,
        Some("1" | "true") => Some(1),
        Some("0" | "false") => Some(0),
        Some(_) => return Err("bad_sampled"),
    };
    match multi_value(headers, &N_FLAGS)? {
        None | Some("0") => {}
        Some("1") => priority = Some(2),
        Some(_) => return Err("bad_flags"),
    }
    Ok(Some(Parsed {
        ids: Some((t, s)),
        priority,
    }))
}

/// Extract the single-header context. `Ok(None)`: absent (or sampling only).
pub fn extract_single(headers: &HeaderMap) -> Result<Option<TraceContext>, &'static str> {
    Ok(parse_single(headers)?.and_then(Parsed::into_context))
}

/// Extract the multi-header context. `Ok(None)`: absent.
pub fn extract_multi(headers: &HeaderMap) -> Result<Option<TraceContext>, &'static str> {
    Ok(parse_multi(headers)?.and_then(Parsed::into_context))
}

/// Write the single `b3` header.
pub fn inject_single(ctx: &TraceContext, span_id: u64, out: &mut HeaderMap) {
    let mut w = Writer::new();
    write_single(ctx, span_id, &mut w);
    w.flush(out);
}

/// Write the `x-b3-*` headers.
pub fn inject_multi(ctx: &TraceContext, span_id: u64, out: &mut HeaderMap) {
    let mut w = Writer::new();
    write_multi(ctx, span_id, &mut w);
    w.flush(out);
}

fn write_trace_id(ctx: &TraceContext, w: &mut Writer) {
    if ctx.trace_id_high() == 0 {
        w.hex(ctx.trace_id, 16);
    } else {
        w.hex(ctx.trace_id, 32);
    }
}

pub(crate) fn write_single(ctx: &TraceContext, span_id: u64, w: &mut Writer) {
    w.begin();
    write_trace_id(ctx, w);
    w.byte(b'-');
    w.hex(u128::from(span_id), 16);
    match ctx.sampling_priority {
        None => {}
        Some(p) if p <= 0 => w.bytes(b"-0"),
        Some(1) => w.bytes(b"-1"),
        Some(_) => w.bytes(b"-d"),
    }
    w.end(&N_B3);
}

pub(crate) fn write_multi(ctx: &TraceContext, span_id: u64, w: &mut Writer) {
    w.begin();
    write_trace_id(ctx, w);
    w.end(&N_TRACE_ID);
    w.begin();
    w.hex(u128::from(span_id), 16);
    w.end(&N_SPAN_ID);
    match ctx.sampling_priority {
        None => {}
        Some(p) if p <= 0 => w.value(&N_SAMPLED, HeaderValue::from_static("0")),
        Some(1) => w.value(&N_SAMPLED, HeaderValue::from_static("1")),
        Some(_) => w.value(&N_FLAGS, HeaderValue::from_static("1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{headers, Expected};

    enum Exp {
        Absent,
        Invalid(&'static str),
        SamplingOnly(i32),
        Ok(u128, u64, Option<i32>),
    }

    #[test]
    fn extract_table() {
        type Row = (&'static str, bool, Vec<(&'static str, &'static str)>, Exp);
        let rows: Vec<Row> = vec![
            ("§3 single: absent", true, vec![], Exp::Absent),
            (
                "§3 single: 128-bit, sampled, parent ignored",
                true,
                vec![(
                    "b3",
                    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
                )],
                Exp::Ok(
                    0x80f198ee56343ba864fe8b2a57d3eff7,
                    0xe457b5a2e4d86bd1,
                    Some(1),
                ),
            ),
            (
                "§10.17 single: d gives 2, parent = SpanId",
                true,
                vec![(
                    "b3",
                    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
                )],
                Exp::Ok(
                    0x80f198ee56343ba864fe8b2a57d3eff7,
                    0xe457b5a2e4d86bd1,
                    Some(2),
                ),
            ),
            (
                "§8 RUM b3 shape: 64-bit, no upper bits",
                true,
                vec![("b3", "56d05416d0047b61-2d0a92c6677ca6be-1")],
                Exp::Ok(0x56d05416d0047b61, 0x2d0a92c6677ca6be, Some(1)),
            ),
            (
                "§8 RUM b3 drop",
                true,
                vec![("b3", "56d05416d0047b61-2d0a92c6677ca6be-0")],
                Exp::Ok(0x56d05416d0047b61, 0x2d0a92c6677ca6be, Some(0)),
            ),
            (
                "§3 single: no sampling state = defer",
                true,
                vec![("b3", "56d05416d0047b61-2d0a92c6677ca6be")],
                Exp::Ok(0x56d05416d0047b61, 0x2d0a92c6677ca6be, None),
            ),
            (
                "§10 extra: b3: 0 deny without ids",
                true,
                vec![("b3", "0")],
                Exp::SamplingOnly(0),
            ),
            (
                "§3 single: uppercase invalid",
                true,
                vec![("b3", "56D05416D0047B61-2d0a92c6677ca6be-1")],
                Exp::Invalid("bad_trace_id"),
            ),
            (
                "§3 single: trace id of 20 hex invalid",
                true,
                vec![("b3", "56d05416d0047b610000-2d0a92c6677ca6be")],
                Exp::Invalid("bad_trace_id"),
            ),
            (
                "§3 single: zero trace id invalid",
                true,
                vec![("b3", "0000000000000000-2d0a92c6677ca6be")],
                Exp::Invalid("bad_trace_id"),
            ),
            (
                "§3 single: trace id only",
                true,
                vec![("b3", "56d05416d0047b61")],
                Exp::Invalid("missing_span_id"),
            ),
            (
                "§3 single: bad sampling state",
                true,
                vec![("b3", "56d05416d0047b61-2d0a92c6677ca6be-x")],
                Exp::Invalid("bad_sampling_state"),
            ),
            (
                "§3 single: too many fields",
                true,
                vec![(
                    "b3",
                    "56d05416d0047b61-2d0a92c6677ca6be-1-2d0a92c6677ca6be-1",
                )],
                Exp::Invalid("bad_format"),
            ),
            (
                "§3 single: empty value malformed",
                true,
                vec![("b3", "")],
                Exp::Invalid("empty"),
            ),
            (
                "§3 single: first line wins",
                true,
                vec![
                    ("b3", "56d05416d0047b61-2d0a92c6677ca6be-1"),
                    ("b3", "junk"),
                ],
                Exp::Ok(0x56d05416d0047b61, 0x2d0a92c6677ca6be, Some(1)),
            ),
            (
                "§3 multi: absent",
                false,
                vec![("x-b3-spanid", "a2fb4a1d1a96d312")],
                Exp::Absent,
            ),
            (
                "§3 multi: 128-bit sampled",
                false,
                vec![
                    ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
                    ("x-b3-spanid", "a2fb4a1d1a96d312"),
                    ("x-b3-parentspanid", "0020000000000001"),
                    ("x-b3-sampled", "1"),
                ],
                Exp::Ok(
                    0x463ac35c9f6413ad48485a3953bb6124,
                    0xa2fb4a1d1a96d312,
                    Some(1),
                ),
            ),
            (
                "§10.18 multi: Flags 1 gives 2, 16-hex id, mixed-case names",
                false,
                vec![
                    ("X-B3-TraceId", "463ac35c9f6413ad"),
                    ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                    ("X-B3-Flags", "1"),
                ],
                Exp::Ok(0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312, Some(2)),
            ),
            (
                "§3 multi: Sampled 0 deny",
                false,
                vec![
                    ("x-b3-traceid", "463ac35c9f6413ad"),
                    ("x-b3-spanid", "a2fb4a1d1a96d312"),
                    ("x-b3-sampled", "0"),
                ],
                Exp::Ok(0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312, Some(0)),
            ),
            (
                "§3 multi: old senders' true accepted",
                false,
                vec![
                    ("x-b3-traceid", "463ac35c9f6413ad"),
                    ("x-b3-spanid", "a2fb4a1d1a96d312"),
                    ("x-b3-sampled", "true"),
                ],
                Exp::Ok(0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312, Some(1)),
            ),
            (
                "§3 multi: empty Sampled malformed",
                false,
                vec![
                    ("x-b3-traceid", "463ac35c9f6413ad"),
                    ("x-b3-spanid", "a2fb4a1d1a96d312"),
                    ("x-b3-sampled", ""),
                ],
                Exp::Invalid("bad_sampled"),
            ),
            (
                "§3 multi: missing span id = no parent (dd-trace-py)",
                false,
                vec![("x-b3-traceid", "463ac35c9f6413ad")],
                Exp::Ok(0x463ac35c9f6413ad, 0, None),
            ),
            (
                "§3 multi: bad span id",
                false,
                vec![("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-spanid", "xyz")],
                Exp::Invalid("bad_span_id"),
            ),
            (
                "§3 multi: first value wins",
                false,
                vec![
                    ("x-b3-traceid", "463ac35c9f6413ad"),
                    ("x-b3-traceid", "junk"),
                    ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ],
                Exp::Ok(0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312, None),
            ),
            (
                "§3 multi: non-ASCII invalid",
                false,
                vec![("x-b3-traceid", "463ac35c9f6413a\u{e9}")],
                Exp::Invalid("non_ascii"),
            ),
        ];
        assert!(rows.len() >= 25);
        for (rule, single, hs, exp) in rows {
            let h = headers(&hs);
            let got = if single {
                parse_single(&h)
            } else {
                parse_multi(&h)
            };
            match (exp, got) {
                (Exp::Absent, Ok(None)) => {}
                (Exp::Invalid(r), Err(g)) => assert_eq!(r, g, "{rule}"),
                (
                    Exp::SamplingOnly(p),
                    Ok(Some(Parsed {
                        ids: None,
                        priority,
                    })),
                ) => assert_eq!(priority, Some(p), "{rule}"),
                (
                    Exp::Ok(t, s, p),
                    Ok(Some(Parsed {
                        ids: Some(ids),
                        priority,
                    })),
                ) => {
                    assert_eq!(ids, (t, s), "{rule}");
                    assert_eq!(priority, p, "{rule}");
                }
                (_, got) => panic!("{rule}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn inject_table() {
        let span = 0x00f067aa0ba902b7;
        let rows: Vec<(&str, u128, Option<i32>, &str, Expected)> = vec![
            (
                "§5 prio 2: d / Flags 1 without Sampled",
                0x640cfd8d00000000_64fe8b2a57d3eff7,
                Some(2),
                "640cfd8d0000000064fe8b2a57d3eff7-00f067aa0ba902b7-d",
                vec![
                    ("x-b3-traceid", Some("640cfd8d0000000064fe8b2a57d3eff7")),
                    ("x-b3-flags", Some("1")),
                    ("x-b3-sampled", None),
                ],
            ),
            (
                "§3 64-bit id stays 16 hex; prio 1",
                0x56d05416d0047b61,
                Some(1),
                "56d05416d0047b61-00f067aa0ba902b7-1",
                vec![
                    ("x-b3-traceid", Some("56d05416d0047b61")),
                    ("x-b3-sampled", Some("1")),
                    ("x-b3-spanid", Some("00f067aa0ba902b7")),
                ],
            ),
            (
                "§5 prio -1: 0",
                5,
                Some(-1),
                "0000000000000005-00f067aa0ba902b7-0",
                vec![("x-b3-sampled", Some("0")), ("x-b3-flags", None)],
            ),
            (
                "§5 no decision: field omitted",
                5,
                None,
                "0000000000000005-00f067aa0ba902b7",
                vec![("x-b3-sampled", None), ("x-b3-flags", None)],
            ),
        ];
        for (rule, t, p, single, multi) in rows {
            let mut ctx = TraceContext::new_root(t);
            ctx.sampling_priority = p;
            let mut h = HeaderMap::new();
            inject_single(&ctx, span, &mut h);
            inject_multi(&ctx, span, &mut h);
            assert_eq!(h[B3], single, "{rule}");
            for (name, v) in multi {
                assert_eq!(
                    h.get(name).map(|v| v.to_str().unwrap()),
                    v,
                    "{rule}: {name}"
                );
            }
        }
    }
}
