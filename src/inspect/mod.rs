//! The request inspector: the last requests stitch handled, for the admin port's `/requests`
//! and `/requests.json`, so a person debugging a broken RUM-to-backend link sees what arrived
//! and what stitch sent on, for real traffic.
//!
//! A [`Record`] holds only what the inspector may show: the request line (path without the
//! query), the route, the status, the CORS decision, the trace headers and the CORS request
//! headers as received, the trace headers as sent upstream, and the trace plan (winning format,
//! conflicts, sampling decision, ids). Header names come from a fixed allow-list
//! ([`is_recorded`]), so cookies, `Authorization` and every other header never enter a record,
//! and bodies are never read. Baggage values are masked (baggage carries application data such
//! as user ids); every value is cut at [`MAX_VALUE`] bytes.
//!
//! The [`Inspector`] is a ring buffer owned by the process, not by a runtime, so a reload keeps
//! what it holds; its capacity (`admin.inspect_requests`, 0 turns it off) is set live on reload.

pub mod page;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::edge::TracePlan;
use crate::propagation::{self, Format, Outcome};
use crate::sampling::Source;

/// Longest value kept per header (bytes); longer ones are cut and end with `…`.
pub const MAX_VALUE: usize = 256;

/// CORS request headers a record keeps besides the trace headers.
const CORS_REQUEST_HEADERS: [&str; 3] = [
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
];

/// Whether a request header may be recorded: a trace header stitch reads or writes, or a CORS
/// request header. Nothing else ever is.
pub fn is_recorded(name: &str) -> bool {
    // Most headers are neither (host, user-agent, accept*, cookie, content-*): one byte tells.
    match name.as_bytes().first() {
        Some(b'x' | b't' | b'b') => propagation::is_propagation_name(name),
        Some(b'o' | b'a') => CORS_REQUEST_HEADERS.contains(&name),
        _ => false,
    }
}

/// Whether a request header is a trace header (what "sent upstream" shows).
fn is_trace_header(name: &str) -> bool {
    matches!(name.as_bytes().first(), Some(b'x' | b't' | b'b'))
        && propagation::is_propagation_name(name)
}

/// What the CORS policy did with a request, as `stitch_cors_preflight_total` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorsResult {
    /// No policy on the route, or no `Origin`.
    None,
    Allowed,
    /// A preflight allowed with some requested headers left out.
    AllowedPartial,
    RefusedOrigin,
}

impl CorsResult {
    pub const ALL: [CorsResult; 4] = [
        CorsResult::None,
        CorsResult::Allowed,
        CorsResult::AllowedPartial,
        CorsResult::RefusedOrigin,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CorsResult::None => "none",
            CorsResult::Allowed => "allowed",
            CorsResult::AllowedPartial => "allowed_partial",
            CorsResult::RefusedOrigin => "refused_origin",
        }
    }

    fn parse(s: &str) -> Option<CorsResult> {
        CorsResult::ALL.into_iter().find(|c| c.label() == s)
    }
}

/// The trace plan of a request, as the inspector shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: u64,
    pub continued: bool,
    pub winner: Option<Format>,
    /// Each extract format's outcome, in the profile's order.
    pub outcomes: Vec<(Format, Outcome)>,
    pub conflicts: Vec<&'static str>,
    pub priority: i32,
    pub source: Source,
    pub reason: &'static str,
    pub overridden: Option<&'static str>,
    /// `_dd.p.dm` as sent upstream.
    pub decision_maker: Option<Box<str>>,
}

impl TraceSummary {
    /// The summary of `plan`; its outcomes and conflicts are moved out (nothing after the
    /// inspector reads them).
    pub fn take(plan: &mut TracePlan) -> TraceSummary {
        let d = &plan.decision;
        TraceSummary {
            trace_id: plan.context.trace_id,
            span_id: plan.span_id,
            parent_id: plan.parent_id,
            continued: plan.continued,
            winner: plan.extraction.winner,
            outcomes: std::mem::take(&mut plan.extraction.outcomes),
            conflicts: std::mem::take(&mut plan.extraction.conflicts),
            priority: d.priority,
            source: d.source,
            reason: d.reason,
            overridden: d.overridden,
            decision_maker: plan.context.tag("_dd.p.dm").map(Box::from),
        }
    }

    pub fn keep(&self) -> bool {
        self.priority > 0
    }
}

/// One request as the inspector keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the request started.
    pub start: SystemTime,
    pub duration: Duration,
    pub route: Option<Arc<str>>,
    pub method: http::Method,
    /// The path, without the query string.
    pub path: Box<str>,
    /// The status sent to the client (0: none was).
    pub status: u16,
    /// The client's address, found through the trusted proxies (`server.trusted_proxies`).
    pub client: Option<IpAddr>,
    /// The request's `X-Request-Id` (kept or made by stitch; absent on routes without one).
    pub request_id: Option<Box<str>>,
    /// A preflight stitch answered itself.
    pub preflight: bool,
    pub cors: CorsResult,
    /// Header names a preflight asked for and stitch left out.
    pub refused_headers: Vec<String>,
    /// Trace and CORS request headers as received.
    pub received: HeaderText,
    /// Trace headers as sent upstream (or shown by the echo); `None` when the request was not
    /// forwarded.
    pub sent: Option<HeaderText>,
    /// `None` on pass-through routes and requests without a route.
    pub trace: Option<TraceSummary>,
}

impl Record {
    /// Milliseconds since the Unix epoch at the start.
    pub fn unix_ms(&self) -> u64 {
        self.start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Recorded headers as the request path copied them: `name: value` lines of raw bytes, made
/// text only when shown (a header value need not be UTF-8; validating it on the request path
/// cost more than the copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderText(Vec<u8>);

impl HeaderText {
    /// The lines as text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// (name, value) pairs, in the order received.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.text()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl From<&str> for HeaderText {
    fn from(s: &str) -> HeaderText {
        HeaderText(s.as_bytes().to_vec())
    }
}

/// The recorded headers of `headers`: only names [`is_recorded`] accepts (all of them when
/// `trace_only` is false; only trace headers when true).
pub fn recorded_headers(headers: &HeaderMap, trace_only: bool) -> HeaderText {
    let mut out = HeaderText::with_room();
    for (name, value) in headers {
        let n = name.as_str();
        let keep = if trace_only {
            is_trace_header(n)
        } else {
            is_recorded(n)
        };
        if keep {
            out.push(n, value.as_bytes());
        }
    }
    out
}

impl HeaderText {
    /// Empty, with room for the usual RUM request's trace headers.
    pub fn with_room() -> HeaderText {
        HeaderText(Vec::with_capacity(384))
    }

    /// Append one header: baggage with its values masked, any value cut at [`MAX_VALUE`].
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let out = &mut self.0;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        if name == "baggage" {
            mask_baggage(out, value);
        } else {
            push_cut(out, value);
        }
        out.push(b'\n');
    }
}

/// Append `v`, cut at [`MAX_VALUE`] bytes, not inside a UTF-8 sequence.
fn push_cut(out: &mut Vec<u8>, v: &[u8]) {
    if v.len() <= MAX_VALUE {
        out.extend_from_slice(v);
        return;
    }
    let mut end = MAX_VALUE;
    // Back off over continuation bytes (0b10xx_xxxx) to the start of a character.
    while end > 0 && v[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    out.extend_from_slice(&v[..end]);
    out.extend_from_slice("…".as_bytes());
}

/// Append baggage with every member's value replaced by `…`: the keys show what the client
/// sent, the values (user ids, session ids, anything the application put there) are not kept.
/// At most [`MAX_VALUE`] bytes of keys.
fn mask_baggage(out: &mut Vec<u8>, v: &[u8]) {
    let start = out.len();
    for (i, member) in v.split(|b| *b == b',').enumerate() {
        if out.len() - start > MAX_VALUE {
            out.extend_from_slice(",…".as_bytes());
            return;
        }
        if i > 0 {
            out.push(b',');
        }
        let key = member
            .split(|b| *b == b'=' || *b == b';')
            .next()
            .unwrap_or(&[]);
        out.extend_from_slice(key.trim_ascii());
        out.extend_from_slice("=…".as_bytes());
    }
}

/// A request the page or the JSON selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub route: Option<String>,
    pub status: Option<StatusFilter>,
    pub cors: Option<CorsResult>,
    pub sampling: Option<SamplingFilter>,
}

/// `status=404` (exact) or `status=4xx` (class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u16),
    Class(u16),
}

impl StatusFilter {
    fn parse(s: &str) -> Option<StatusFilter> {
        let b = s.as_bytes();
        if b.len() == 3 && b[0].is_ascii_digit() && b[1..].eq_ignore_ascii_case(b"xx") {
            return Some(StatusFilter::Class(u16::from(b[0] - b'0')));
        }
        s.parse()
            .ok()
            .filter(|n| *n < 1000)
            .map(StatusFilter::Exact)
    }

    fn matches(self, status: u16) -> bool {
        match self {
            StatusFilter::Exact(n) => status == n,
            StatusFilter::Class(c) => status / 100 == c,
        }
    }

    pub fn label(self) -> String {
        match self {
            StatusFilter::Exact(n) => n.to_string(),
            StatusFilter::Class(c) => format!("{c}xx"),
        }
    }
}

/// The sampling decision's source, or `none` for requests without a trace plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingFilter {
    Source(Source),
    None,
}

impl SamplingFilter {
    pub const ALL: [SamplingFilter; 4] = [
        SamplingFilter::Source(Source::Incoming),
        SamplingFilter::Source(Source::Edge),
        SamplingFilter::Source(Source::Missing),
        SamplingFilter::None,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SamplingFilter::Source(s) => s.label(),
            SamplingFilter::None => "none",
        }
    }
}

impl Filter {
    /// Parse a query string (`route=api&status=5xx&cors=refused_origin&sampling=edge`). Empty
    /// values mean "any"; an unknown key or value is an error naming what is accepted.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            if v.is_empty() {
                continue;
            }
            match k {
                "route" => f.route = Some(v),
                "status" => {
                    f.status = Some(StatusFilter::parse(&v).ok_or_else(|| {
                        format!("status={v}: use a status code (404) or a class (4xx)")
                    })?)
                }
                "cors" => {
                    f.cors = Some(CorsResult::parse(&v).ok_or_else(|| {
                        format!("cors={v}: use none, allowed, allowed_partial or refused_origin")
                    })?)
                }
                "sampling" => {
                    f.sampling = Some(
                        SamplingFilter::ALL
                            .into_iter()
                            .find(|s| s.label() == v)
                            .ok_or_else(|| {
                                format!("sampling={v}: use incoming, edge, missing or none")
                            })?,
                    )
                }
                other => {
                    return Err(format!(
                        "unknown filter `{other}`: use route, status, cors and sampling"
                    ))
                }
            }
        }
        Ok(f)
    }

    pub fn matches(&self, r: &Record) -> bool {
        if let Some(route) = &self.route {
            if r.route.as_deref() != Some(route.as_str()) {
                return false;
            }
        }
        if let Some(s) = self.status {
            if !s.matches(r.status) {
                return false;
            }
        }
        if let Some(c) = self.cors {
            if r.cors != c {
                return false;
            }
        }
        if let Some(s) = self.sampling {
            let source = r.trace.as_ref().map(|t| t.source);
            let ok = match s {
                SamplingFilter::Source(want) => source == Some(want),
                SamplingFilter::None => source.is_none(),
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// The filter as a query string (for links), in a fixed key order.
    pub fn query(&self) -> String {
        let mut q = String::new();
        let mut add = |k: &str, v: &str| {
            if !q.is_empty() {
                q.push('&');
            }
            let _ = write!(q, "{k}={}", percent_encode(v));
        };
        if let Some(r) = &self.route {
            add("route", r);
        }
        if let Some(s) = self.status {
            add("status", &s.label());
        }
        if let Some(c) = self.cors {
            add("cors", c.label());
        }
        if let Some(s) = self.sampling {
            add("sampling", s.label());
        }
        q
    }
}

/// Decode `%XX` escapes and `+` (form encoding); invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Encode everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The web host of a Datadog site (`DD_SITE`): `datadoghq.com` -> `app.datadoghq.com`,
/// `us3.datadoghq.com` -> itself (sites with a region prefix serve the app on their own name).
pub fn datadog_app_host(site: &str) -> String {
    let site = site.trim().trim_end_matches('/');
    let site = site
        .strip_prefix("https://")
        .or_else(|| site.strip_prefix("http://"))
        .unwrap_or(site);
    if site.starts_with("app.") || site.split('.').count() > 2 {
        site.to_string()
    } else {
        format!("app.{site}")
    }
}

/// The Datadog trace view of a trace (by its low 64 bits, the id Datadog indexes and log
/// correlation uses).
pub fn datadog_trace_url(site: &str, trace_id: u128) -> String {
    format!(
        "https://{}/apm/trace/{}",
        datadog_app_host(site),
        trace_id as u64
    )
}

/// The last requests, newest first, shared by the proxy (writer) and the admin listener
/// (reader). Lives as long as the process: reloads change its capacity, never its content
/// beyond trimming to a smaller capacity.
#[derive(Debug, Default)]
pub struct Inspector {
    capacity: AtomicUsize,
    ring: Mutex<VecDeque<Arc<Record>>>,
    /// `DD_SITE` / `admin.dd_site`, for links to the trace in Datadog.
    dd_site: Mutex<Option<Arc<str>>>,
}

impl Inspector {
    pub fn new(capacity: usize, dd_site: Option<String>) -> Inspector {
        let i = Inspector::default();
        i.configure(capacity, dd_site);
        i
    }

    /// Whether requests are recorded (capacity above 0). One relaxed load: this is all the
    /// request path pays when the inspector is off.
    pub fn is_on(&self) -> bool {
        self.capacity.load(Ordering::Relaxed) > 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Apply `admin.inspect_requests` and `admin.dd_site` (at start and on every reload). A
    /// smaller capacity drops the oldest records; 0 drops them all.
    pub fn configure(&self, capacity: usize, dd_site: Option<String>) {
        self.capacity.store(capacity, Ordering::Relaxed);
        let dropped: Vec<Arc<Record>> = match self.ring.lock() {
            Ok(mut ring) => {
                let keep = ring.len().min(capacity);
                ring.drain(keep..).collect()
            }
            Err(_) => Vec::new(),
        };
        drop(dropped);
        if let Ok(mut site) = self.dd_site.lock() {
            *site = dd_site.map(Arc::from);
        }
    }

    pub fn dd_site(&self) -> Option<Arc<str>> {
        self.dd_site.lock().ok().and_then(|s| s.clone())
    }

    /// Keep `record` as the newest, dropping the oldest beyond the capacity.
    pub fn push(&self, record: Record) {
        let cap = self.capacity();
        if cap == 0 {
            return;
        }
        let record = Arc::new(record);
        let old = match self.ring.lock() {
            Ok(mut ring) => {
                ring.push_front(record);
                if ring.len() > cap {
                    ring.pop_back()
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        // Freed outside the lock.
        drop(old);
    }

    /// The records `filter` selects, newest first.
    pub fn select(&self, filter: &Filter) -> Vec<Arc<Record>> {
        let all: Vec<Arc<Record>> = match self.ring.lock() {
            Ok(ring) => ring.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        all.into_iter().filter(|r| filter.matches(r)).collect()
    }

    /// Every record held, newest first.
    pub fn all(&self) -> Vec<Arc<Record>> {
        self.select(&Filter::default())
    }
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let now = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// A record with every field set; `n` varies the path and ids.
    pub fn record(n: u64, route: &str, status: u16, cors: CorsResult) -> Record {
        Record {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + n),
            duration: Duration::from_micros(1500),
            route: Some(Arc::from(route)),
            method: http::Method::GET,
            path: format!("/p/{n}").into(),
            status,
            client: Some("127.0.0.1".parse().unwrap()),
            request_id: None,
            preflight: false,
            cors,
            refused_headers: Vec::new(),
            received: "x-datadog-trace-id: 7\n".into(),
            sent: Some(format!("x-datadog-parent-id: {n}\n").as_str().into()),
            trace: Some(TraceSummary {
                trace_id: u128::from(n) << 64 | 7,
                span_id: n,
                parent_id: 0,
                continued: true,
                winner: Some(Format::Datadog),
                outcomes: vec![(
                    Format::Datadog,
                    Outcome::Valid {
                        trace_id: 7,
                        parent_id: 0,
                        priority: Some(1),
                    },
                )],
                conflicts: vec![],
                priority: 1,
                source: Source::Incoming,
                reason: "r",
                overridden: None,
                decision_maker: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::record;
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_trace_and_cors_headers_are_recorded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("cookie", "session=SECRET"),
            ("authorization", "Bearer SECRET"),
            ("x-api-key", "SECRET"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-datadog-trace-id", "7"),
            ("x-b3-sampled", "1"),
            ("origin", "https://app.example"),
            ("access-control-request-headers", "x-datadog-trace-id"),
            ("baggage", "session.id=SECRET,user.id=SECRET;p=1"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let all = recorded_headers(&h, false).text().into_owned();
        assert!(!all.contains("SECRET"), "{all}");
        let pairs = recorded_headers(&h, false).pairs();
        let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "traceparent",
                "x-datadog-trace-id",
                "x-b3-sampled",
                "origin",
                "access-control-request-headers",
                "baggage"
            ]
        );
        assert!(all.contains("baggage: session.id=…,user.id=…\n"), "{all}");
        let trace = recorded_headers(&h, true).text().into_owned();
        assert!(!trace.contains("origin"), "{trace}");
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let mut h = HeaderMap::new();
        let long = "é".repeat(200); // 400 bytes
        h.insert("tracestate", HeaderValue::from_str(&long).unwrap());
        let got = recorded_headers(&h, true).pairs();
        let v = &got[0].1;
        assert!(
            v.ends_with('…') && v.len() <= MAX_VALUE + '…'.len_utf8(),
            "{v}"
        );
        assert!(!v.contains('\u{fffd}'), "cut between two characters: {v}");
    }

    #[rustfmt::skip]
    #[test]
    fn filters_parse_or_say_what_is_accepted() {
        let rows: [(&str, Result<Filter, &str>); 8] = [
            ("", Ok(Filter::default())),
            ("route=api&status=", Ok(Filter { route: Some("api".into()), ..Filter::default() })),
            ("route=a%20b+c", Ok(Filter { route: Some("a b c".into()), ..Filter::default() })),
            ("status=5xx", Ok(Filter { status: Some(StatusFilter::Class(5)), ..Filter::default() })),
            ("status=404&cors=refused_origin&sampling=none", Ok(Filter { status: Some(StatusFilter::Exact(404)), cors: Some(CorsResult::RefusedOrigin), sampling: Some(SamplingFilter::None), ..Filter::default() })),
            ("status=abc", Err("status=abc")),
            ("cors=maybe", Err("cors=maybe")),
            ("colour=red", Err("unknown filter `colour`")),
        ];
        for (q, want) in rows {
            match (Filter::parse(q), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{q}"),
                (Err(got), Err(prefix)) => assert!(got.starts_with(prefix), "{q}: {got}"),
                (got, want) => panic!("{q}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn filters_select_and_round_trip_as_queries() {
        let i = Inspector::new(10, None);
        i.push(record(1, "api", 200, CorsResult::Allowed));
        i.push(record(2, "api", 502, CorsResult::None));
        i.push(record(3, "web", 404, CorsResult::RefusedOrigin));
        let paths = |f: &Filter| -> Vec<String> {
            i.select(f).iter().map(|r| r.path.to_string()).collect()
        };
        assert_eq!(paths(&Filter::default()), ["/p/3", "/p/2", "/p/1"]);
        let f = Filter::parse("route=api&status=5xx").unwrap();
        assert_eq!(paths(&f), ["/p/2"]);
        assert_eq!(Filter::parse(&f.query()).unwrap(), f);
        assert_eq!(
            paths(&Filter::parse("cors=refused_origin").unwrap()),
            ["/p/3"]
        );
        assert_eq!(
            paths(&Filter::parse("sampling=incoming&status=200").unwrap()),
            ["/p/1"]
        );
        assert!(paths(&Filter::parse("sampling=none").unwrap()).is_empty());
    }

    #[test]
    fn the_ring_keeps_the_newest_and_follows_its_capacity() {
        let i = Inspector::new(3, None);
        for n in 1..=5 {
            i.push(record(n, "api", 200, CorsResult::None));
        }
        let paths =
            |i: &Inspector| -> Vec<String> { i.all().iter().map(|r| r.path.to_string()).collect() };
        assert_eq!(paths(&i), ["/p/5", "/p/4", "/p/3"]);
        i.configure(2, None);
        assert_eq!(paths(&i), ["/p/5", "/p/4"]);
        i.configure(4, None);
        i.push(record(6, "api", 200, CorsResult::None));
        assert_eq!(paths(&i), ["/p/6", "/p/5", "/p/4"]);
        i.configure(0, None);
        assert!(!i.is_on());
        i.push(record(7, "api", 200, CorsResult::None));
        assert!(i.all().is_empty());
    }

    #[test]
    fn datadog_links_by_site() {
        for (site, host) in [
            ("datadoghq.com", "app.datadoghq.com"),
            ("datadoghq.eu", "app.datadoghq.eu"),
            ("us3.datadoghq.com", "us3.datadoghq.com"),
            ("ap1.datadoghq.com", "ap1.datadoghq.com"),
            ("ddog-gov.com", "app.ddog-gov.com"),
            ("https://app.datadoghq.com/", "app.datadoghq.com"),
        ] {
            assert_eq!(datadog_app_host(site), host, "{site}");
        }
        assert_eq!(
            datadog_trace_url("datadoghq.eu", (5u128 << 64) | 42),
            "https://app.datadoghq.eu/apm/trace/42"
        );
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(percent_decode(&percent_encode("r&=?é")), "r&=?é");
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
