//! The Datadog headers (`x-datadog-*`, spec §1): extract and inject.
//!
//! Rules implemented here:
//! - `x-datadog-trace-id` is the low 64 bits in decimal; 0, non-numeric or ≥ 2^64 makes the
//!   whole Datadog context invalid (treated as absent, the next format is tried).
//! - A missing `x-datadog-parent-id` reads as 0 (no parent); a non-numeric one, or a
//!   non-numeric `x-datadog-sampling-priority`, makes the context invalid (as dd-trace-py).
//! - Duplicated headers: any `x-datadog-*` header that appears on more than one line makes
//!   the Datadog context invalid (`duplicate_header`). Frameworks join repeated lines with
//!   `,`, which no Datadog value can parse, so this is what the tracers see too.
//! - `x-datadog-tags` over 512 bytes is ignored whole (`extract_max_size`); a grammar error
//!   drops every tag (`decoding_error`); only `_dd.p.*` keys are kept (not
//!   `_dd.p.upstream_services`); `_dd.p.tid` must be 16 lowercase non-zero hex, else it is
//!   dropped with `malformed_tid <value>` and the id stays 64-bit; `_dd.p.dm` must be `-N`
//!   with N ≤ 255, else it is dropped with `decoding_error` and the other tags are kept.
//! - Inject: low half in decimal, `_dd.p.tid` only when the high half is non-zero, the tags
//!   header is left out when it would exceed 512 bytes (and the edge span then carries
//!   `_dd.propagation_error=inject_max_size`, see [`tags_too_long`]). Unlike dd-trace-py, a
//!   propagation error on the incoming context does not suppress the tags we still have.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::TraceContext;
use super::{field, parse_dec_i32, parse_dec_u64, parse_hex16, Field, Writer};

pub const TRACE_ID: &str = "x-datadog-trace-id";
pub const PARENT_ID: &str = "x-datadog-parent-id";
pub const ORIGIN: &str = "x-datadog-origin";
pub const SAMPLING_PRIORITY: &str = "x-datadog-sampling-priority";
pub const TAGS: &str = "x-datadog-tags";

pub(crate) static N_TRACE_ID: HeaderName = HeaderName::from_static(TRACE_ID);
pub(crate) static N_PARENT_ID: HeaderName = HeaderName::from_static(PARENT_ID);
pub(crate) static N_ORIGIN: HeaderName = HeaderName::from_static(ORIGIN);
pub(crate) static N_SAMPLING_PRIORITY: HeaderName = HeaderName::from_static(SAMPLING_PRIORITY);
pub(crate) static N_TAGS: HeaderName = HeaderName::from_static(TAGS);

/// Headers of the format, for CORS.
pub const HEADERS: [&str; 5] = [TRACE_ID, PARENT_ID, ORIGIN, SAMPLING_PRIORITY, TAGS];

/// `x-datadog-tags` limit in both directions.
pub const MAX_TAGS_LEN: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagsError<'a> {
    ExtractMaxSize,
    Decoding,
    MalformedTid(&'a str),
}

/// The Datadog headers of one request, parsed without allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    pub trace_id: u128,
    pub parent_id: u64,
    pub priority: Option<i32>,
    origin: Option<&'a str>,
    /// The raw tags when their grammar is valid.
    tags: Option<&'a str>,
    /// `_dd.p.dm` present but malformed (dropped on conversion).
    bad_dm: bool,
    error: Option<TagsError<'a>>,
}

fn value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, &'static str> {
    match field(headers, name) {
        Field::Absent => Ok(None),
        Field::Duplicate => Err("duplicate_header"),
        Field::NonAscii => Err("non_ascii"),
        Field::Value(v) => Ok(Some(v)),
    }
}

/// Parse the Datadog headers. `Ok(None)`: no `x-datadog-trace-id`.
pub(crate) fn parse(headers: &HeaderMap) -> Result<Option<View<'_>>, &'static str> {
    let Some(tid) = value(headers, &N_TRACE_ID)? else {
        return Ok(None);
    };
    let low = parse_dec_u64(tid).ok_or("bad_trace_id")?;
    if low == 0 {
        return Err("zero_trace_id");
    }
    let parent_id = match value(headers, &N_PARENT_ID)? {
        None => 0,
        Some(p) => parse_dec_u64(p).ok_or("bad_parent_id")?,
    };
    let priority = match value(headers, &N_SAMPLING_PRIORITY)? {
        None => None,
        Some(p) => Some(parse_dec_i32(p).ok_or("bad_sampling_priority")?),
    };
    let origin = value(headers, &N_ORIGIN)?.filter(|o| !o.is_empty());
    let raw_tags = value(headers, &N_TAGS)?.filter(|t| !t.is_empty());
    let mut view = View {
        trace_id: u128::from(low),
        parent_id,
        priority,
        origin,
        tags: None,
        bad_dm: false,
        error: None,
    };
    if let Some(raw) = raw_tags {
        if raw.len() > MAX_TAGS_LEN {
            view.error = Some(TagsError::ExtractMaxSize);
        } else if !tags_grammar_ok(raw) {
            view.error = Some(TagsError::Decoding);
        } else {
            view.tags = Some(raw);
            for (k, v) in split_tags(raw) {
                if k == "_dd.p.tid" {
                    match parse_hex16(v) {
                        Some(high) if high != 0 => {
                            view.trace_id |= u128::from(high) << 64;
                        }
                        _ => view.error = Some(TagsError::MalformedTid(v)),
                    }
                } else if k == "_dd.p.dm" && !dm_ok(v) {
                    view.bad_dm = true;
                    if view.error.is_none() {
                        view.error = Some(TagsError::Decoding);
                    }
                }
            }
        }
    }
    Ok(Some(view))
}

/// `-N` with 0 ≤ N ≤ 255 (dd-trace-py's accepted range).
pub(crate) fn dm_ok(v: &str) -> bool {
    match v.strip_prefix('-') {
        Some(d) if !d.is_empty() && d.len() <= 3 && d.bytes().all(|b| b.is_ascii_digit()) => {
            d.parse::<u16>().map(|n| n <= 255).unwrap_or(false)
        }
        _ => false,
    }
}

fn key_char_ok(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b',' && b != b'='
}

fn value_char_ok(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b','
}

/// Every tag is `key=value`, key and value non-empty and in their character sets.
fn tags_grammar_ok(raw: &str) -> bool {
    raw.split(',').all(|tag| match tag.split_once('=') {
        Some((k, v)) => {
            !k.is_empty()
                && !v.is_empty()
                && k.bytes().all(key_char_ok)
                && v.bytes().all(value_char_ok)
        }
        None => false,
    })
}

fn split_tags(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split(',').filter_map(|t| t.split_once('='))
}

impl View<'_> {
    /// The owned context (allocates origin and tags).
    pub(crate) fn into_context(self) -> TraceContext {
        let mut ctx = TraceContext::new_root(self.trace_id);
        ctx.parent_id = self.parent_id;
        ctx.sampling_priority = self.priority;
        ctx.origin = self.origin.map(str::to_owned);
        if let Some(raw) = self.tags {
            for (k, v) in split_tags(raw) {
                if !k.starts_with("_dd.p.")
                    || k == "_dd.p.tid"
                    || k == "_dd.p.upstream_services"
                    || (k == "_dd.p.dm" && self.bad_dm)
                {
                    continue;
                }
                ctx.tags.push((k.to_owned(), v.to_owned()));
            }
        }
        ctx.propagation_error = self.error.map(|e| match e {
            TagsError::ExtractMaxSize => "extract_max_size".to_owned(),
            TagsError::Decoding => "decoding_error".to_owned(),
            TagsError::MalformedTid(v) => format!("malformed_tid {v}"),
        });
        ctx
    }
}

/// Extract the Datadog context. `Ok(None)`: absent; `Err(reason)`: invalid.
pub fn extract(headers: &HeaderMap) -> Result<Option<TraceContext>, &'static str> {
    Ok(parse(headers)?.map(View::into_context))
}

/// Write the Datadog headers for `ctx` with `span_id` as the parent.
pub fn inject(ctx: &TraceContext, span_id: u64, out: &mut HeaderMap) {
    let mut w = Writer::new();
    write(ctx, span_id, &mut w);
    w.flush(out);
}

fn static_priority(p: i32) -> Option<HeaderValue> {
    Some(HeaderValue::from_static(match p {
        -1 => "-1",
        0 => "0",
        1 => "1",
        2 => "2",
        _ => return None,
    }))
}

fn static_origin(o: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_static(match o {
        "rum" => "rum",
        "synthetics" => "synthetics",
        "synthetics-browser" => "synthetics-browser",
        "lambda" => "lambda",
        _ => return None,
    }))
}

fn tag_ok(k: &str, v: &str) -> bool {
    k.starts_with("_dd.p.")
        && k != "_dd.p.tid"
        && !v.is_empty()
        && k.bytes().all(key_char_ok)
        && v.bytes().all(value_char_ok)
}

/// Whether the tags value [`write_tags`] would make is over the limit, so that no
/// `x-datadog-tags` goes out and the span gets `_dd.propagation_error=inject_max_size` (spec §1,
/// size limit and propagation errors).
pub fn tags_too_long(ctx: &TraceContext) -> bool {
    let mut len = if ctx.trace_id_high() != 0 {
        "_dd.p.tid=".len() + 16
    } else {
        0
    };
    for (k, v) in ctx.tags.iter().filter(|(k, v)| tag_ok(k, v)) {
        len += usize::from(len > 0) + k.len() + 1 + v.len();
        if len > MAX_TAGS_LEN {
            return true;
        }
    }
    false
}

/// Write the tags value; returns false (and writes nothing) when it would exceed the limit.
fn write_tags(ctx: &TraceContext, w: &mut Writer) -> bool {
    let start = w.pos();
    let high = ctx.trace_id_high();
    let mut first = true;
    if high != 0 {
        w.bytes(b"_dd.p.tid=");
        w.hex(u128::from(high), 16);
        first = false;
    }
    for (k, v) in &ctx.tags {
        if !tag_ok(k, v) {
            continue;
        }
        if !first {
            w.byte(b',');
        }
        first = false;
        w.bytes(k.as_bytes());
        w.byte(b'=');
        w.bytes(v.as_bytes());
        if w.pos() - start > MAX_TAGS_LEN {
            w.rollback(start);
            return false;
        }
    }
    true
}

pub(crate) fn write(ctx: &TraceContext, span_id: u64, w: &mut Writer) {
    w.begin();
    w.dec_u64(ctx.trace_id_low());
    w.end(&N_TRACE_ID);
    w.begin();
    w.dec_u64(span_id);
    w.end(&N_PARENT_ID);
    if let Some(p) = ctx.sampling_priority {
        match static_priority(p) {
            Some(v) => w.value(&N_SAMPLING_PRIORITY, v),
            None => {
                w.begin();
                w.dec_i32(p);
                w.end(&N_SAMPLING_PRIORITY);
            }
        }
    }
    if let Some(o) = ctx.origin.as_deref().filter(|o| !o.is_empty()) {
        match static_origin(o) {
            Some(v) => w.value(&N_ORIGIN, v),
            None if o.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                w.begin();
                w.bytes(o.as_bytes());
                w.end(&N_ORIGIN);
            }
            None => {}
        }
    }
    w.begin();
    if write_tags(ctx, w) && w.current_len() > 0 {
        w.end(&N_TAGS);
    } else {
        w.rollback(w.pos() - w.current_len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::{headers, Expected, Pairs};

    /// Expected result of one extraction row.
    enum Exp {
        Absent,
        Invalid(&'static str),
        /// trace id, parent id, priority, origin, tags joined `k=v,...`, propagation error.
        Ok(
            u128,
            u64,
            Option<i32>,
            Option<&'static str>,
            &'static str,
            Option<&'static str>,
        ),
    }

    const B_HIGH: u128 = 0x640cfd8d00000000 << 64;

    #[test]
    fn extract_table() {
        let long_tags = format!("_dd.p.tid=640cfd8d00000000,_dd.p.x={}", "a".repeat(500));
        let rows: Vec<(&str, Pairs, Exp)> = vec![
            (
                "§1 no trace id header: absent",
                vec![("x-datadog-parent-id", "5")],
                Exp::Absent,
            ),
            (
                "§8 RUM datadog shape",
                vec![
                    ("x-datadog-origin", "rum"),
                    ("x-datadog-parent-id", "3245567862311265982"),
                    ("x-datadog-sampling-priority", "1"),
                    ("x-datadog-trace-id", "6255592339373587297"),
                ],
                Exp::Ok(
                    6255592339373587297,
                    3245567862311265982,
                    Some(1),
                    Some("rum"),
                    "",
                    None,
                ),
            ),
            (
                "§8 RUM all mode: priority 0 kept",
                vec![
                    ("x-datadog-origin", "rum"),
                    ("x-datadog-parent-id", "1"),
                    ("x-datadog-sampling-priority", "0"),
                    ("x-datadog-trace-id", "2"),
                ],
                Exp::Ok(2, 1, Some(0), Some("rum"), "", None),
            ),
            (
                "§1 128-bit from _dd.p.tid",
                vec![
                    ("x-datadog-trace-id", "7277407061855694839"),
                    ("x-datadog-parent-id", "5208512171318403364"),
                    ("x-datadog-sampling-priority", "2"),
                    ("x-datadog-tags", "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4"),
                ],
                Exp::Ok(
                    B_HIGH | 7277407061855694839,
                    5208512171318403364,
                    Some(2),
                    None,
                    "_dd.p.dm=-4",
                    None,
                ),
            ),
            (
                "§1 trace id 0 invalid",
                vec![("x-datadog-trace-id", "0"), ("x-datadog-parent-id", "5")],
                Exp::Invalid("zero_trace_id"),
            ),
            (
                "§1 non-numeric trace id invalid",
                vec![("x-datadog-trace-id", "abc")],
                Exp::Invalid("bad_trace_id"),
            ),
            (
                "§1 trace id 2^64 invalid, never wrapped",
                vec![("x-datadog-trace-id", "18446744073709551616")],
                Exp::Invalid("bad_trace_id"),
            ),
            (
                "§1 trace id 2^64-1 valid",
                vec![("x-datadog-trace-id", "18446744073709551615")],
                Exp::Ok(u64::MAX.into(), 0, None, None, "", None),
            ),
            (
                "§1 negative trace id invalid (Go wraps, we do not)",
                vec![("x-datadog-trace-id", "-1")],
                Exp::Invalid("bad_trace_id"),
            ),
            (
                "§1 missing parent reads as 0 (synthetics root)",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-origin", "synthetics"),
                ],
                Exp::Ok(123, 0, None, Some("synthetics"), "", None),
            ),
            (
                "§1 non-numeric parent invalid (dd-trace-py)",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-parent-id", "abc"),
                ],
                Exp::Invalid("bad_parent_id"),
            ),
            (
                "§1 non-numeric priority invalid (dd-trace-py)",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-sampling-priority", "abc"),
                ],
                Exp::Invalid("bad_sampling_priority"),
            ),
            (
                "§1 priority -1 user reject",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-sampling-priority", "-1"),
                ],
                Exp::Ok(123, 0, Some(-1), None, "", None),
            ),
            (
                "duplicated trace id header invalid",
                vec![("x-datadog-trace-id", "123"), ("x-datadog-trace-id", "123")],
                Exp::Invalid("duplicate_header"),
            ),
            (
                "duplicated origin header invalid",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-origin", "rum"),
                    ("x-datadog-origin", "rum"),
                ],
                Exp::Invalid("duplicate_header"),
            ),
            (
                "spaces around values are trimmed",
                vec![
                    ("x-datadog-trace-id", " 123 "),
                    ("x-datadog-sampling-priority", " 1"),
                ],
                Exp::Ok(123, 0, Some(1), None, "", None),
            ),
            (
                "non-ASCII bytes invalid",
                vec![("x-datadog-trace-id", "12\u{e9}")],
                Exp::Invalid("non_ascii"),
            ),
            (
                "§1 tags over 512 ignored whole, id stays 64-bit",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", long_tags.as_str()),
                ],
                Exp::Ok(123, 0, None, None, "", Some("extract_max_size")),
            ),
            (
                "§1 uppercase tid malformed",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.tid=640CFD8D00000000,_dd.p.dm=-4"),
                ],
                Exp::Ok(
                    123,
                    0,
                    None,
                    None,
                    "_dd.p.dm=-4",
                    Some("malformed_tid 640CFD8D00000000"),
                ),
            ),
            (
                "§1 all-zero tid malformed",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.tid=0000000000000000"),
                ],
                Exp::Ok(
                    123,
                    0,
                    None,
                    None,
                    "",
                    Some("malformed_tid 0000000000000000"),
                ),
            ),
            (
                "§1 short tid malformed",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.tid=640cfd8d"),
                ],
                Exp::Ok(123, 0, None, None, "", Some("malformed_tid 640cfd8d")),
            ),
            (
                "§1 dm=1 removed, decoding_error, other tags kept",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.dm=1,_dd.p.x=y"),
                ],
                Exp::Ok(123, 0, None, None, "_dd.p.x=y", Some("decoding_error")),
            ),
            (
                "§1 dm=-256 out of Python's range",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.dm=-256"),
                ],
                Exp::Ok(123, 0, None, None, "", Some("decoding_error")),
            ),
            (
                "§1 empty tag value is a decode error, all tags dropped",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.x="),
                ],
                Exp::Ok(123, 0, None, None, "", Some("decoding_error")),
            ),
            (
                "§1 space in a key is a decode error",
                vec![
                    ("x-datadog-trace-id", "123"),
                    ("x-datadog-tags", "_dd.p.dm=-4, _dd.p.x=ab"),
                ],
                Exp::Ok(123, 0, None, None, "", Some("decoding_error")),
            ),
            (
                "§1 only _dd.p.* kept, upstream_services dropped, = allowed in value",
                vec![
                    ("x-datadog-trace-id", "123"),
                    (
                        "x-datadog-tags",
                        "_dd.p.dm=-4,foo=bar,_dd.p.upstream_services=x,_dd.p.x=a=b",
                    ),
                ],
                Exp::Ok(123, 0, None, None, "_dd.p.dm=-4,_dd.p.x=a=b", None),
            ),
        ];
        assert!(rows.len() >= 25);
        for (rule, hs, exp) in rows {
            let got = extract(&headers(&hs));
            match (exp, got) {
                (Exp::Absent, Ok(None)) => {}
                (Exp::Invalid(r), Err(g)) => assert_eq!(r, g, "{rule}"),
                (Exp::Ok(t, p, prio, origin, tags, err), Ok(Some(c))) => {
                    assert_eq!(c.trace_id, t, "{rule}");
                    assert_eq!(c.parent_id, p, "{rule}");
                    assert_eq!(c.sampling_priority, prio, "{rule}");
                    assert_eq!(c.origin.as_deref(), origin, "{rule}");
                    let joined: Vec<String> =
                        c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    assert_eq!(joined.join(","), tags, "{rule}");
                    assert_eq!(c.propagation_error.as_deref(), err, "{rule}");
                }
                (_, got) => panic!("{rule}: unexpected {got:?}"),
            }
        }
    }

    fn injected(ctx: &TraceContext, span: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        inject(ctx, span, &mut h);
        h
    }

    /// §1: `tags_too_long` (what the edge span reports as `inject_max_size`) says exactly when
    /// the injector leaves the tags header out, on both sides of the limit, with and without
    /// the `_dd.p.tid` that counts toward it.
    #[test]
    fn tags_too_long_agrees_with_the_injector() {
        for high in [0u128, B_HIGH] {
            for filler in 440..540 {
                let mut c = TraceContext::new_root(high | 99);
                c.set_tag("_dd.p.dm", "-4");
                c.set_tag("_dd.p.big", &"v".repeat(filler - "_dd.p.big=".len()));
                let sent = injected(&c, 1).contains_key("x-datadog-tags");
                assert_eq!(
                    tags_too_long(&c),
                    !sent,
                    "high {high:x}, filler {filler}: sent {sent}"
                );
            }
        }
    }

    #[test]
    fn inject_table() {
        let mut b = TraceContext::new_root(B_HIGH | 7277407061855694839);
        b.sampling_priority = Some(2);
        b.set_tag("_dd.p.dm", "-4");
        let mut rum = TraceContext::new_root(6255592339373587297);
        rum.sampling_priority = Some(1);
        rum.origin = Some("rum".into());
        let mut odd = TraceContext::new_root(5);
        odd.sampling_priority = Some(-7);
        odd.origin = Some("my-origin".into());
        let mut big = TraceContext::new_root(5);
        big.set_tag("_dd.p.x", &"v".repeat(600));
        let rows: Vec<(&str, &TraceContext, Expected)> = vec![
            (
                "§1 128-bit: low half decimal + _dd.p.tid first",
                &b,
                vec![
                    ("x-datadog-trace-id", Some("7277407061855694839")),
                    ("x-datadog-parent-id", Some("67667974448284343")),
                    ("x-datadog-sampling-priority", Some("2")),
                    (
                        "x-datadog-tags",
                        Some("_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4"),
                    ),
                    ("x-datadog-origin", None),
                ],
            ),
            (
                "§1 64-bit: no tid, no tags header",
                &rum,
                vec![
                    ("x-datadog-trace-id", Some("6255592339373587297")),
                    ("x-datadog-origin", Some("rum")),
                    ("x-datadog-sampling-priority", Some("1")),
                    ("x-datadog-tags", None),
                ],
            ),
            (
                "other priorities and origins are written verbatim",
                &odd,
                vec![
                    ("x-datadog-sampling-priority", Some("-7")),
                    ("x-datadog-origin", Some("my-origin")),
                ],
            ),
            (
                "§1 outbound tags over 512: no tags header",
                &big,
                vec![("x-datadog-tags", None), ("x-datadog-trace-id", Some("5"))],
            ),
        ];
        for (rule, ctx, exp) in rows {
            let h = injected(ctx, 67667974448284343);
            for (name, v) in exp {
                assert_eq!(
                    h.get(name).map(|v| v.to_str().unwrap()),
                    v,
                    "{rule}: {name}"
                );
            }
        }
    }
}
