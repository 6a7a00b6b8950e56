//! Trace-context propagation: reading and writing the Datadog, W3C (traceparent/tracestate),
//! B3 (single and multi) and baggage headers. Pure code, no I/O.
//!
//! `extract` runs the configured formats in order and reconciles them in `merge.rs` (or, with
//! `extract_first`, reads only the first format present);
//! `strip` removes every propagation header stitch knows; `inject` writes the chosen formats
//! for one context with the edge span as parent. The wire rules are in
//! `docs/propagation.md`; each format file cites the section it implements.
//!
//! Hot-path notes: extraction parses every format into borrowed views and only builds an
//! owned [`TraceContext`] for the winner; injection writes every value into one buffer that
//! becomes a single shared allocation, sliced into the header values.

pub mod b3;
pub mod baggage;
pub mod context;
pub mod datadog;
pub mod merge;
pub mod w3c;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

pub use context::{new_span_id, new_trace_id, SpanLink, TraceContext};
pub use w3c::TracestateInvalid;

/// A wire format, named as the RUM SDK's `propagatorTypes` (plus `baggage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Datadog,
    TraceContext,
    B3,
    B3Multi,
    Baggage,
}

impl Format {
    /// Every format, in the default extract order.
    pub const ALL: [Format; 5] = [
        Format::Datadog,
        Format::TraceContext,
        Format::B3Multi,
        Format::B3,
        Format::Baggage,
    ];

    /// The config / RUM name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Datadog => "datadog",
            Format::TraceContext => "tracecontext",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::Baggage => "baggage",
        }
    }

    /// Parse a format name (exact lowercase word).
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Lowercase names of the request headers this format reads and writes.
    pub fn request_headers(self) -> &'static [&'static str] {
        match self {
            Format::Datadog => &datadog::HEADERS,
            Format::TraceContext => &w3c::HEADERS,
            Format::B3 => &b3::SINGLE_HEADERS,
            Format::B3Multi => &b3::MULTI_HEADERS,
            Format::Baggage => &baggage::HEADERS,
        }
    }
}

/// Default extract formats, in order.
pub const DEFAULT_EXTRACT: &[Format] = &[
    Format::Datadog,
    Format::TraceContext,
    Format::B3Multi,
    Format::B3,
    Format::Baggage,
];

/// Default inject formats.
pub const DEFAULT_INJECT: &[Format] = &[Format::Datadog, Format::TraceContext, Format::Baggage];

/// How extraction reads a request (the profile's `extract_first` and `tracestate_invalid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// dd-trace's `DD_TRACE_PROPAGATION_EXTRACT_FIRST`: the first trace-context format present
    /// on the request decides alone (valid: its context; invalid: a new trace); later formats
    /// are not read, so there is no tracestate merge, parent override or span link. Baggage is
    /// still read.
    pub extract_first: bool,
    /// What an invalid `tracestate` member does (see [`TracestateInvalid`]).
    pub tracestate_invalid: TracestateInvalid,
}

/// `extract_behavior` profile key (dd-trace's `DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT`): what
/// stitch does with the incoming trace context. `crate::edge::plan` applies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExtractBehavior {
    /// Continue the incoming trace.
    #[default]
    Continue,
    /// Start a new trace with a span link to the incoming context
    /// (`reason=propagation_behavior_extract`); baggage is kept. `trust = "none"` is the older
    /// spelling.
    Restart,
    /// Read nothing: no context, no link, and no baggage (dd-trace drops it too).
    Ignore,
}

impl ExtractBehavior {
    /// Every value, as written in a config file.
    pub const ALL: [ExtractBehavior; 3] = [
        ExtractBehavior::Continue,
        ExtractBehavior::Restart,
        ExtractBehavior::Ignore,
    ];

    /// The config name (dd-trace's word).
    pub fn name(self) -> &'static str {
        match self {
            ExtractBehavior::Continue => "continue",
            ExtractBehavior::Restart => "restart",
            ExtractBehavior::Ignore => "ignore",
        }
    }

    /// Parse a config name (exact lowercase word).
    pub fn parse(s: &str) -> Option<ExtractBehavior> {
        ExtractBehavior::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// Outcome for one format on one request (metrics and `stitch explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// None of the format's headers were present.
    Absent,
    /// Present but unusable; the reason is a short snake_case word from a bounded set.
    Invalid(&'static str),
    /// A valid context. For `baggage`, a valid header is reported with zero ids.
    Valid {
        trace_id: u128,
        parent_id: u64,
        priority: Option<i32>,
    },
}

/// Everything `extract` found on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extraction {
    /// Merged result of the trace-context formats (`None`: no valid context).
    pub context: Option<TraceContext>,
    /// Which format gave the trace id.
    pub winner: Option<Format>,
    /// One per extract format read, in the configured order (with `extract_first`, the formats
    /// after the first one present are not read and not listed, except `baggage`).
    pub outcomes: Vec<(Format, Outcome)>,
    /// Conflict kinds: `trace_id`, `parent_id`, `sampling`, `tid`.
    pub conflicts: Vec<&'static str>,
    /// Left empty by `extract` (hot path); [`explain`] builds the human-readable lines.
    pub notes: Vec<String>,
    /// The raw baggage to forward byte for byte (`None` if absent or dropped as invalid).
    pub baggage: Option<HeaderValue>,
    /// When there is no context: a sampling priority the headers still asked for
    /// (`b3: 0` without ids means "drop"; the spec says honour it on the new trace).
    pub new_trace_priority: Option<i32>,
    /// Why the `tracestate` was ignored whole (`tracestate_invalid = "discard_header"`).
    pub tracestate_discarded: Option<&'static str>,
}

impl Extraction {
    /// Nothing read (`extract_behavior = "ignore"`).
    pub fn none() -> Extraction {
        Extraction {
            context: None,
            winner: None,
            outcomes: Vec::new(),
            conflicts: Vec::new(),
            notes: Vec::new(),
            baggage: None,
            new_trace_priority: None,
            tracestate_discarded: None,
        }
    }
}

/// Extract `formats` (in order) from `headers` and merge them (see `merge.rs`), with the
/// default options.
pub fn extract(headers: &HeaderMap, formats: &[Format]) -> Extraction {
    merge::extract(headers, formats, &ExtractOptions::default())
}

/// [`extract`] with a profile's options.
pub fn extract_with(headers: &HeaderMap, formats: &[Format], opts: &ExtractOptions) -> Extraction {
    merge::extract(headers, formats, opts)
}

/// The incoming `tracestate` as read under `opts` (lines joined; `None` when absent, ignored,
/// or the traceparent is not valid), for the span link of a restarted trace.
pub fn raw_tracestate(headers: &HeaderMap, opts: &ExtractOptions) -> Option<String> {
    let view = w3c::parse(headers, opts.tracestate_invalid)
        .ok()
        .flatten()?;
    view.raw_tracestate().map(str::to_owned)
}

/// Human-readable lines saying what each format gave, which one won and why, and what was
/// merged or linked. Not used on the hot path.
pub fn explain(ext: &Extraction) -> Vec<String> {
    merge::explain(ext)
}

/// Header names removed by [`strip`] (lowercase).
pub const STRIPPED_HEADERS: [&str; 13] = [
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-origin",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

static STRIPPED_NAMES: [&HeaderName; 13] = [
    &datadog::N_TRACE_ID,
    &datadog::N_PARENT_ID,
    &datadog::N_ORIGIN,
    &datadog::N_SAMPLING_PRIORITY,
    &datadog::N_TAGS,
    &w3c::N_TRACEPARENT,
    &w3c::N_TRACESTATE,
    &b3::N_B3,
    &b3::N_TRACE_ID,
    &b3::N_SPAN_ID,
    &b3::N_PARENT_SPAN_ID,
    &b3::N_SAMPLED,
    &b3::N_FLAGS,
];

/// Remove every propagation header stitch knows: `x-datadog-*`, `traceparent`,
/// `tracestate`, `b3`, `x-b3-*` and `baggage`.
pub fn strip(headers: &mut HeaderMap) {
    // One pass over the names; most requests carry a few propagation headers at most.
    let mut found: [Option<HeaderName>; 8] = Default::default();
    let mut n = 0;
    let mut more = false;
    for k in headers.keys() {
        if is_propagation_name(k.as_str()) {
            match found.get_mut(n) {
                Some(slot) => {
                    *slot = Some(k.clone());
                    n += 1;
                }
                None => more = true,
            }
        }
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
    if more {
        for name in STRIPPED_NAMES {
            headers.remove(name);
        }
        headers.remove(&baggage::N_HEADER);
        let rest: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_propagation_name(k.as_str()))
            .cloned()
            .collect();
        for name in rest {
            headers.remove(name);
        }
    }
}

/// The lowercase tracing header names a route's browsers may send: those of the formats it
/// extracts (every known format on a pass-through route, `extract = []`).
pub fn tracing_headers(extract: &[Format]) -> Vec<&'static str> {
    let formats: &[Format] = if extract.is_empty() {
        &Format::ALL
    } else {
        extract
    };
    let mut out: Vec<&'static str> = Vec::new();
    for f in formats {
        for h in f.request_headers() {
            if !out.contains(h) {
                out.push(h);
            }
        }
    }
    out
}

/// Is this lowercase header name one [`strip`] removes? (For header maps that cannot be edited
/// through [`strip`], such as Pingora's, which keeps a case map beside the `HeaderMap`.)
pub fn is_propagation_name(name: &str) -> bool {
    matches!(name, "traceparent" | "tracestate" | "b3" | "baggage")
        || is_prefixed_propagation_name(name)
}

fn is_prefixed_propagation_name(name: &str) -> bool {
    name.starts_with("x-datadog-") || name.starts_with("x-b3-")
}

/// Write `formats` for `ctx`, with `span_id` (the edge span) as the parent in every format.
/// Baggage comes from `ctx.baggage`. Does not strip first (the caller strips).
pub fn inject(ctx: &TraceContext, span_id: u64, formats: &[Format], out: &mut HeaderMap) {
    inject_each(ctx, span_id, formats, |name, value| {
        out.insert(name.clone(), value);
    });
}

/// [`inject`] without a header map: hands each header to `emit` as it is finished, for a
/// caller that writes into a map of its own (the proxy, into Pingora's request header). A name
/// may come twice (a repeated format); the later value is the one to keep.
pub fn inject_each(
    ctx: &TraceContext,
    span_id: u64,
    formats: &[Format],
    emit: impl FnMut(&'static HeaderName, HeaderValue),
) {
    let mut w = Writer::new();
    for (i, f) in formats.iter().enumerate() {
        if formats[..i].contains(f) {
            continue;
        }
        match f {
            Format::Datadog => datadog::write(ctx, span_id, &mut w),
            Format::TraceContext => w3c::write(ctx, span_id, &mut w),
            Format::B3 => b3::write_single(ctx, span_id, &mut w),
            Format::B3Multi => b3::write_multi(ctx, span_id, &mut w),
            Format::Baggage => baggage::write(ctx, &mut w),
        }
    }
    w.flush_each(emit);
}

// ---------------------------------------------------------------------------------------
// Shared helpers for the format files.

/// What a single-valued header looks like on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Absent,
    /// The header appears on more than one line.
    Duplicate,
    /// Bytes outside printable ASCII (or tab).
    NonAscii,
    /// The value with spaces and tabs trimmed on both ends.
    Value(&'a str),
}

/// Read a header that must appear once.
pub(crate) fn field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Field<'a> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Field::Absent;
    };
    if all.next().is_some() {
        return Field::Duplicate;
    }
    value_str(first)
}

/// Read the first line of a header that may repeat (B3: the first one wins).
pub(crate) fn first_field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Field<'a> {
    match headers.get(name) {
        None => Field::Absent,
        Some(v) => value_str(v),
    }
}

pub(crate) fn value_str(v: &HeaderValue) -> Field<'_> {
    match v.to_str() {
        Ok(s) if s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) => {
            Field::Value(trim_ows(s))
        }
        _ => Field::NonAscii,
    }
}

pub(crate) fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Unsigned decimal, digits only, no overflow.
pub(crate) fn parse_dec_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Signed decimal (`-` allowed), digits only, no overflow.
pub(crate) fn parse_dec_i32(s: &str) -> Option<i32> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Exactly `s.len()` lowercase hex digits (1..=32) as a number.
pub(crate) fn parse_hex_lower(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let mut v: u128 = 0;
    for b in s.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// Exactly 16 lowercase hex digits.
pub(crate) fn parse_hex16(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    parse_hex_lower(s).map(|v| v as u64)
}

/// Room for every value of the usual request (three formats with a few tags take about 250
/// bytes); a longer set continues on the heap (`Writer::spill`). Zeroed for each request, so
/// not larger than needed.
const OUT_CAP: usize = 1024;
const MAX_ENTRIES: usize = 16;

/// The bytes behind every injected value: one allocation shared by all header values.
struct OutBuf {
    data: [u8; OUT_CAP],
    len: usize,
}

impl AsRef<[u8]> for OutBuf {
    fn as_ref(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or(&[])
    }
}

/// Collects injected header values into one buffer; `flush` turns them into header values
/// that share a single allocation.
pub(crate) struct Writer {
    buf: OutBuf,
    ranges: [(Option<&'static HeaderName>, u16, u16); MAX_ENTRIES],
    n_ranges: usize,
    values: [Option<(&'static HeaderName, HeaderValue)>; 8],
    n_values: usize,
    start: usize,
    /// The current value once it no longer fits in `buf` (an unusually long origin or tag
    /// set): it continues on the heap so no later format is lost.
    spill: Option<Vec<u8>>,
    /// Values finished on the heap.
    spilled: Vec<(&'static HeaderName, HeaderValue)>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer {
            buf: OutBuf {
                data: [0; OUT_CAP],
                len: 0,
            },
            ranges: [(None, 0, 0); MAX_ENTRIES],
            n_ranges: 0,
            values: Default::default(),
            n_values: 0,
            start: 0,
            spill: None,
            spilled: Vec::new(),
        }
    }

    /// Start a new value.
    pub(crate) fn begin(&mut self) {
        self.start = self.buf.len;
        self.spill = None;
    }

    /// Length written since `begin`.
    pub(crate) fn current_len(&self) -> usize {
        match &self.spill {
            Some(v) => v.len(),
            None => self.buf.len - self.start,
        }
    }

    /// Current absolute position (for `rollback`).
    pub(crate) fn pos(&self) -> usize {
        self.start + self.current_len()
    }

    /// Forget everything written after `pos` (within the current value).
    pub(crate) fn rollback(&mut self, pos: usize) {
        if pos < self.start {
            return;
        }
        match &mut self.spill {
            Some(v) => v.truncate(pos - self.start),
            None if pos <= self.buf.len => self.buf.len = pos,
            None => {}
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        if let Some(v) = &mut self.spill {
            v.extend_from_slice(b);
            return;
        }
        let end = self.buf.len + b.len();
        match self.buf.data.get_mut(self.buf.len..end) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.buf.len = end;
            }
            None => {
                // Move the value so far to the heap and go on there.
                let mut v = Vec::with_capacity(self.current_len() + b.len() + 64);
                v.extend_from_slice(&self.buf.data[self.start..self.buf.len]);
                v.extend_from_slice(b);
                self.buf.len = self.start;
                self.spill = Some(v);
            }
        }
    }

    pub(crate) fn byte(&mut self, b: u8) {
        self.bytes(&[b]);
    }

    pub(crate) fn dec_u64(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&tmp[i..]);
    }

    pub(crate) fn dec_i32(&mut self, v: i32) {
        if v < 0 {
            self.byte(b'-');
        }
        self.dec_u64(u64::from(v.unsigned_abs()));
    }

    /// `digits` lowercase hex digits of `v` (zero padded).
    pub(crate) fn hex(&mut self, v: u128, digits: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut tmp = [0u8; 32];
        let digits = digits.min(32);
        for (i, slot) in tmp.iter_mut().take(digits).enumerate() {
            let shift = 4 * (digits - 1 - i);
            *slot = HEX[((v >> shift) & 0xf) as usize];
        }
        self.bytes(&tmp[..digits]);
    }

    /// Finish the value started by `begin` as header `name`.
    pub(crate) fn end(&mut self, name: &'static HeaderName) {
        let heap = match self.spill.take() {
            Some(v) => Some(v),
            None if self.n_ranges < MAX_ENTRIES => {
                self.ranges[self.n_ranges] = (Some(name), self.start as u16, self.buf.len as u16);
                self.n_ranges += 1;
                None
            }
            None => {
                let v = self.buf.data[self.start..self.buf.len].to_vec();
                self.buf.len = self.start;
                Some(v)
            }
        };
        if let Some(v) = heap {
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(v)) {
                self.spilled.push((name, value));
            }
        }
    }

    /// Add a ready-made value (a static one or a cheap clone).
    pub(crate) fn value(&mut self, name: &'static HeaderName, v: HeaderValue) {
        if let Some(slot) = self.values.get_mut(self.n_values) {
            *slot = Some((name, v));
            self.n_values += 1;
        }
    }

    /// Finish: every value into `out` (a later value of the same name replaces the earlier).
    pub(crate) fn flush(self, out: &mut HeaderMap) {
        self.flush_each(|name, value| {
            out.insert(name.clone(), value);
        });
    }

    /// Finish: hand every value to `emit`, in the order written (heap-spilled values last).
    pub(crate) fn flush_each(self, mut emit: impl FnMut(&'static HeaderName, HeaderValue)) {
        let Writer {
            buf,
            ranges,
            n_ranges,
            values,
            spilled,
            ..
        } = self;
        if n_ranges > 0 {
            // Only the written part is copied to the heap, not the whole stack buffer.
            let shared = Bytes::copy_from_slice(buf.as_ref());
            for &(name, a, b) in ranges.iter().take(n_ranges) {
                let (a, b) = (usize::from(a), usize::from(b));
                let Some(name) = name else { continue };
                if a > b || b > shared.len() {
                    continue;
                }
                if let Ok(v) = HeaderValue::from_maybe_shared(shared.slice(a..b)) {
                    emit(name, v);
                }
            }
        }
        for (name, v) in values.into_iter().flatten() {
            emit(name, v);
        }
        for (name, v) in spilled {
            emit(name, v);
        }
    }
}

/// Test helper: header (name, value) pairs.
#[cfg(test)]
pub(crate) type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Test helper: expected header values (`None` = absent).
#[cfg(test)]
pub(crate) type Expected<'a> = Vec<(&'a str, Option<&'a str>)>;

/// Test helper: a header map from (name, value) pairs (repeated names append).
#[cfg(test)]
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the extract_inject_all fuzz target: a 3 KB origin filled the stack buffer
    /// and the formats written after it (tracestate, b3multi) were silently lost.
    #[test]
    fn an_oversized_value_never_costs_another_format() {
        let mut ctx = TraceContext::new_root(2);
        ctx.origin = Some("o".repeat(5000));
        ctx.sampling_priority = Some(1);
        let mut out = HeaderMap::new();
        let all = [
            Format::Datadog,
            Format::TraceContext,
            Format::B3,
            Format::B3Multi,
        ];
        inject(&ctx, 0x00f0_67aa_0ba9_02b7, &all, &mut out);
        assert_eq!(out.get("x-datadog-origin").map(|v| v.len()), Some(5000));
        for name in [
            "traceparent",
            "tracestate",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
        ] {
            assert!(out.contains_key(name), "{name} lost: {out:?}");
        }
        for f in all {
            let again = extract(&out, &[f]);
            assert_eq!(again.context.map(|c| c.trace_id), Some(2), "{f:?}");
        }
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("Datadog"), None);
        assert_eq!(Format::parse("b3 single header"), None);
        assert_eq!(
            Format::Datadog.request_headers(),
            &[
                "x-datadog-trace-id",
                "x-datadog-parent-id",
                "x-datadog-origin",
                "x-datadog-sampling-priority",
                "x-datadog-tags"
            ]
        );
        assert_eq!(
            Format::TraceContext.request_headers(),
            &["traceparent", "tracestate"]
        );
        assert_eq!(Format::B3.request_headers(), &["b3"]);
        assert_eq!(Format::B3Multi.request_headers().len(), 5);
        assert_eq!(Format::Baggage.request_headers(), &["baggage"]);
    }

    #[test]
    fn strip_removes_every_propagation_header() {
        let mut h = headers(&[
            ("x-datadog-trace-id", "1"),
            ("x-datadog-sampled", "1"),
            ("traceparent", "x"),
            ("tracestate", "a=b"),
            ("tracestate", "c=d"),
            ("b3", "0"),
            ("x-b3-traceid", "1"),
            ("x-b3-custom", "1"),
            ("baggage", "a=b"),
            ("host", "example.com"),
        ]);
        strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("host"));
        // More propagation headers than the fast path's slots.
        let mut pairs: Vec<(&str, &str)> = STRIPPED_HEADERS.iter().map(|n| (*n, "1")).collect();
        pairs.extend([
            ("baggage", "a=1"),
            ("x-datadog-extra", "1"),
            ("x-b3-extra", "1"),
            ("accept", "*/*"),
        ]);
        let mut h = headers(&pairs);
        strip(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn writer_numbers() {
        let mut w = Writer::new();
        w.begin();
        w.dec_u64(u64::MAX);
        w.byte(b' ');
        w.dec_i32(i32::MIN);
        w.byte(b' ');
        w.dec_u64(0);
        w.byte(b' ');
        w.hex(0xabc, 16);
        static X_TEST: HeaderName = HeaderName::from_static("x-test");
        w.end(&X_TEST);
        let mut h = HeaderMap::new();
        w.flush(&mut h);
        assert_eq!(
            h["x-test"],
            "18446744073709551615 -2147483648 0 0000000000000abc"
        );
    }

    #[test]
    fn number_parsers() {
        assert_eq!(parse_dec_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_dec_u64("18446744073709551616"), None);
        assert_eq!(parse_dec_u64("+1"), None);
        assert_eq!(parse_dec_u64(""), None);
        assert_eq!(parse_dec_i32("-1"), Some(-1));
        assert_eq!(parse_dec_i32("-"), None);
        assert_eq!(
            parse_hex_lower("00f067aa0ba902b7"),
            Some(0x00f067aa0ba902b7)
        );
        assert_eq!(parse_hex_lower("00F067AA0BA902B7"), None);
        assert_eq!(parse_hex16("abc"), None);
    }
}
