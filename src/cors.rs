//! CORS at the edge: compiled origin rules, the preflight decision, and the CORS headers on
//! actual responses (without duplicates, whatever the upstream already set).
//!
//! Pure code over `http` types; the proxy glue gathers the request headers, calls these
//! functions and writes the answer.
//!
//! # Origins in the config (`allowed_origins`)
//!
//! | written | admits |
//! | --- | --- |
//! | `https://app.example.com` | exactly that scheme, host and port |
//! | `https://*.example.com` | any subdomain, at any depth (`a.example.com`, `a.b.example.com`), never the apex `https://example.com` (list it too if wanted); scheme and port compared |
//! | `~^https://[a-z]+\.example\.com$` | a regular expression after a leading `~`, always anchored (wrapped in `^(?:…)$`); matched against the origin exactly as the browser sent it, and only when that is a well-formed origin (never `null`) |
//! | `null` | the literal `null` origin (sandboxed iframes, `file:` pages); refused unless listed |
//! | `*` | every well-formed origin, but not `null`; rejected together with `allow_credentials` |
//!
//! Comparison rules for exact and wildcard entries: scheme and host are compared
//! ASCII-case-insensitively (browsers always send them lower-case; a config may be written in
//! any case); the port is compared after applying the scheme's default (`http` 80, `https` 443),
//! so `https://example.com:443` and `https://example.com` are the same origin, while
//! `https://example.com:8443` is another. Anything else in an origin (a path, a trailing `/`,
//! user info, a query) makes it malformed: rejected in the config, never admitted on the wire.
//!
//! The echoed `Access-Control-Allow-Origin` is always the request's `Origin` byte for byte
//! (never `*`), with `Vary: Origin`.
//!
//! # Preflight modes
//!
//! - `answer` (default): an allowed preflight is answered at the edge with 204 and never reaches
//!   the upstream; a preflight from an origin not allowed gets 403 without CORS headers.
//! - `augment`: the upstream owns its CORS; every preflight is forwarded, and on the way back
//!   [`augment_preflight_response`] adds the tracing headers to its
//!   `Access-Control-Allow-Headers` when the origin is one the policy allows.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};

/// How preflights are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreflightMode {
    /// Answered at the edge with 204.
    #[default]
    Answer,
    /// Forwarded to the upstream; the tracing headers are added to its answer.
    Augment,
}

/// A CORS policy as written in the config, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSpec {
    pub allowed_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    /// The application's own request headers (the tracing headers are added by stitch).
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Option<u32>,
    pub preflight: PreflightMode,
}

/// One compiled `allowed_origins` entry.
#[derive(Debug, Clone)]
pub enum OriginRule {
    /// Scheme and host stored lower-case; `port` is the effective port (default applied),
    /// `None` for a scheme without a default and no explicit port.
    Exact {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
    /// `suffix` starts with `.` (for `https://*.example.com` it is `.example.com`).
    Wildcard {
        scheme: String,
        suffix: String,
        port: Option<u16>,
    },
    /// Anchored regular expression.
    Regex(regex::Regex),
    /// The literal `null` origin.
    Null,
    /// `*`: any well-formed origin (not `null`).
    Any,
}

impl OriginRule {
    fn matches(&self, raw: &[u8], parsed: Option<&Origin<'_>>) -> bool {
        match self {
            OriginRule::Null => raw == b"null",
            OriginRule::Any => parsed.is_some(),
            OriginRule::Regex(re) => match (parsed, std::str::from_utf8(raw)) {
                (Some(_), Ok(s)) => re.is_match(s),
                _ => false,
            },
            OriginRule::Exact { scheme, host, port } => parsed.is_some_and(|o| {
                o.scheme.eq_ignore_ascii_case(scheme.as_bytes())
                    && o.host.eq_ignore_ascii_case(host.as_bytes())
                    && o.effective_port() == *port
            }),
            OriginRule::Wildcard {
                scheme,
                suffix,
                port,
            } => parsed.is_some_and(|o| {
                let (h, s) = (o.host, suffix.as_bytes());
                o.scheme.eq_ignore_ascii_case(scheme.as_bytes())
                    && o.effective_port() == *port
                    && h.len() > s.len()
                    && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
                    && h[h.len() - s.len() - 1] != b'.'
            }),
        }
    }
}

/// A validated CORS policy with its header values precomputed.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Vec<OriginRule>,
    /// Lower-case names the preflight admits: the app's headers, then the tracing headers
    /// given to [`CorsPolicy::with_tracing_headers`].
    allowed_headers: Vec<String>,
    /// Where the tracing headers start in `allowed_headers`.
    tracing_start: usize,
    allow_methods: Option<HeaderValue>,
    allow_headers_value: Option<HeaderValue>,
    expose_headers: Vec<String>,
    expose_headers_value: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
    mode: PreflightMode,
}

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

impl CorsPolicy {
    /// Validates and compiles a policy. Returns every problem found, each naming the key and
    /// the bad value.
    pub fn new(spec: CorsSpec) -> Result<CorsPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let mut origins = Vec::new();
        for written in &spec.allowed_origins {
            match compile_origin(written) {
                Ok(rule) => {
                    if matches!(rule, OriginRule::Any) && spec.allow_credentials {
                        problems.push(
                            "allowed_origins: \"*\" cannot be combined with allow_credentials = true (browsers refuse it); list the origins".to_string(),
                        );
                    }
                    origins.push(rule);
                }
                Err(why) => problems.push(format!("allowed_origins: {written:?}: {why}")),
            }
        }
        let mut methods = Vec::new();
        for m in &spec.allow_methods {
            match http::Method::from_bytes(m.trim().as_bytes()) {
                Ok(_) if !m.trim().is_empty() => {
                    let m = m.trim().to_string();
                    if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
                _ => problems.push(format!("allow_methods: {m:?} is not an HTTP method token")),
            }
        }
        let allowed_headers = header_list("allow_headers", &spec.allow_headers, &mut problems);
        let expose_headers = header_list("expose_headers", &spec.expose_headers, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut policy = CorsPolicy {
            origins,
            tracing_start: allowed_headers.len(),
            allowed_headers,
            allow_methods: join_value(&methods),
            allow_headers_value: None,
            expose_headers_value: join_value(&expose_headers),
            expose_headers,
            allow_credentials: spec.allow_credentials,
            max_age: spec.max_age.map(HeaderValue::from),
            mode: spec.preflight,
        };
        policy.allow_headers_value = join_value(&policy.allowed_headers);
        Ok(policy)
    }

    /// The same policy with `tracing_headers` (lower-case names, as derived from a route's
    /// propagation profile) always admitted and part of the precomputed
    /// `Access-Control-Allow-Headers` value. Built once per route when the runtime is compiled;
    /// [`answer_preflight`] and [`augment_preflight_response`] then use the baked-in names.
    pub fn with_tracing_headers(&self, tracing_headers: &[&str]) -> CorsPolicy {
        let mut policy = self.clone();
        policy.allowed_headers.truncate(policy.tracing_start);
        for h in tracing_headers {
            let h = h.trim().to_ascii_lowercase();
            if !h.is_empty() && !policy.allowed_headers.contains(&h) {
                policy.allowed_headers.push(h);
            }
        }
        policy.allow_headers_value = join_value(&policy.allowed_headers);
        policy
    }

    /// Whether `origin` (the raw `Origin` header value) is admitted.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        let parsed = Origin::parse(origin);
        self.origins
            .iter()
            .any(|rule| rule.matches(origin, parsed.as_ref()))
    }

    pub fn mode(&self) -> PreflightMode {
        self.mode
    }

    pub fn allow_credentials(&self) -> bool {
        self.allow_credentials
    }

    pub fn origin_rules(&self) -> &[OriginRule] {
        &self.origins
    }

    fn admits_header(&self, name: &str) -> bool {
        // `allowed_headers` are lower-case; `name` is as the browser wrote it.
        self.allowed_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Lower-cases, validates and dedups a header-name list.
fn header_list(key: &str, names: &[String], problems: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let t = n.trim();
        if t == "*" {
            problems.push(format!(
                "{key}: \"*\" is not supported; list the header names"
            ));
            continue;
        }
        match HeaderName::from_bytes(t.as_bytes()) {
            Ok(name) => {
                let lower = name.as_str().to_string();
                if !out.contains(&lower) {
                    out.push(lower);
                }
            }
            Err(_) => problems.push(format!("{key}: {n:?} is not a valid header name")),
        }
    }
    out
}

fn join_value(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    // Items are validated tokens, so the joined value is always a valid header value.
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// A well-formed serialized origin `scheme://host[:port]`, borrowed from the raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin<'a> {
    scheme: &'a [u8],
    host: &'a [u8],
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    fn parse(raw: &'a [u8]) -> Option<Origin<'a>> {
        let sep = raw.windows(3).position(|w| w == b"://")?;
        let (scheme, rest) = (raw.get(..sep)?, raw.get(sep + 3..)?);
        let (first, tail) = scheme.split_first()?;
        if !first.is_ascii_alphabetic()
            || !tail
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return None;
        }
        let (host, port) = if rest.first() == Some(&b'[') {
            let close = rest.iter().position(|&c| c == b']')?;
            let host = rest.get(..=close)?;
            let inner = host.get(1..close)?;
            if inner.is_empty()
                || !inner
                    .iter()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
            {
                return None;
            }
            (host, rest.get(close + 1..)?)
        } else {
            let end = rest.iter().position(|&c| c == b':').unwrap_or(rest.len());
            let host = rest.get(..end)?;
            if host.is_empty()
                || !host
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
            {
                return None;
            }
            (host, rest.get(end..)?)
        };
        let port = match port.split_first() {
            None => None,
            Some((b':', digits)) => Some(parse_port(digits)?),
            Some(_) => return None,
        };
        Some(Origin { scheme, host, port })
    }

    fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| default_port(self.scheme))
    }
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}

fn default_port(scheme: &[u8]) -> Option<u16> {
    if scheme.eq_ignore_ascii_case(b"https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case(b"http") {
        Some(80)
    } else {
        None
    }
}

/// Compiles one `allowed_origins` entry.
fn compile_origin(written: &str) -> Result<OriginRule, String> {
    let w = written.trim();
    if w.is_empty() {
        return Err("empty origin".into());
    }
    if w == "*" {
        return Ok(OriginRule::Any);
    }
    if w.eq_ignore_ascii_case("null") {
        return Ok(OriginRule::Null);
    }
    if let Some(pattern) = w.strip_prefix('~') {
        if pattern.trim().is_empty() {
            return Err("empty regular expression after '~'".into());
        }
        return regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(OriginRule::Regex)
            .map_err(|e| format!("bad regular expression: {e}"));
    }
    let (wild, candidate) = match w.find("://*.") {
        Some(i) => (true, format!("{}://x{}", &w[..i], &w[i + 4..])),
        None => (false, w.to_string()),
    };
    if candidate.contains('*') {
        return Err(
            "'*' is allowed only as the whole entry or as the first label (https://*.example.com)"
                .into(),
        );
    }
    let o = Origin::parse(candidate.as_bytes()).ok_or_else(|| {
        "not an origin: write scheme://host[:port] with no path, no trailing '/', no user info (or use '~regex', 'null', '*')".to_string()
    })?;
    let host = String::from_utf8_lossy(o.host).to_ascii_lowercase();
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err("empty label in the host".into());
    }
    if o.port == Some(0) {
        return Err("port 0".into());
    }
    let scheme = String::from_utf8_lossy(o.scheme).to_ascii_lowercase();
    let port = o.effective_port();
    if wild {
        if host.starts_with('[') {
            return Err("a wildcard needs a domain name, not an IP literal".into());
        }
        // candidate host is "x.<suffix>"; the suffix keeps its leading '.'
        let suffix = host.get(1..).unwrap_or_default().to_string();
        Ok(OriginRule::Wildcard {
            scheme,
            suffix,
            port,
        })
    } else {
        Ok(OriginRule::Exact { scheme, host, port })
    }
}

/// A preflight is an `OPTIONS` request with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// What to do with a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightDecision {
    /// Answer 204 with `headers` (lower-case `'static` names, so a caller can hand them to a
    /// header map that keeps names' case without copying them). `refused_headers` are requested
    /// headers left out of the answer (lower-case, deduplicated), for
    /// `stitch_cors_refused_header_total{header}`.
    Allow {
        headers: Vec<(&'static str, HeaderValue)>,
        refused_headers: Vec<String>,
    },
    /// Answer 403 without CORS headers.
    RefuseOrigin,
    /// Augment mode: send upstream, then call [`augment_preflight_response`].
    Forward,
}

impl PreflightDecision {
    /// The `result` label of `stitch_cors_preflight_total`.
    /// Every value [`PreflightDecision::result_label`] can return.
    pub const RESULT_LABELS: [&'static str; 4] =
        ["allowed", "allowed_partial", "refused_origin", "forwarded"];

    pub fn result_label(&self) -> &'static str {
        match self {
            PreflightDecision::Allow {
                refused_headers, ..
            } if refused_headers.is_empty() => "allowed",
            PreflightDecision::Allow { .. } => "allowed_partial",
            PreflightDecision::RefuseOrigin => "refused_origin",
            PreflightDecision::Forward => "forwarded",
        }
    }
}

/// The request's single `Origin` value; two or more `Origin` headers count as none.
fn single_origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut all = headers.get_all(ORIGIN).iter();
    let first = all.next()?;
    match all.next() {
        Some(_) => None,
        None => Some(first),
    }
}

/// Longest refused header name reported (longer ones are cut), to bound metric label size.
const MAX_REFUSED_NAME: usize = 64;

/// Decides a preflight; the tracing headers admitted are those baked in by
/// [`CorsPolicy::with_tracing_headers`].
///
/// In augment mode every preflight is forwarded (the upstream owns its CORS, including which
/// origins it admits). In answer mode, `Access-Control-Allow-Headers` lists every admitted
/// header (app + tracing), not only the requested ones, so the browser's preflight cache
/// covers later requests with other tracing headers.
pub fn answer_preflight(policy: &CorsPolicy, req_headers: &HeaderMap) -> PreflightDecision {
    if policy.mode == PreflightMode::Augment {
        return PreflightDecision::Forward;
    }
    let origin = match single_origin(req_headers) {
        Some(o) if policy.allows_origin(o.as_bytes()) => o.clone(),
        _ => return PreflightDecision::RefuseOrigin,
    };
    let mut refused_headers: Vec<String> = Vec::new();
    for value in req_headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
        for name in value.as_bytes().split(|&c| c == b',') {
            let name = name.trim_ascii();
            if name.is_empty() {
                continue;
            }
            // Admitted names (nearly all) cost no allocation; a refused one becomes a label.
            let lower = match std::str::from_utf8(name) {
                Ok(s) if policy.admits_header(s) => continue,
                Ok(s) => s.to_ascii_lowercase(),
                Err(_) => "<invalid>".to_string(),
            };
            let mut label = if HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                lower
            } else {
                "<invalid>".to_string()
            };
            if label.len() > MAX_REFUSED_NAME {
                label.truncate(MAX_REFUSED_NAME);
            }
            if !refused_headers.contains(&label) {
                refused_headers.push(label);
            }
        }
    }
    let mut headers = Vec::with_capacity(7);
    headers.push(("access-control-allow-origin", origin));
    if let Some(m) = &policy.allow_methods {
        headers.push(("access-control-allow-methods", m.clone()));
    }
    if let Some(h) = &policy.allow_headers_value {
        let h = h.clone();
        headers.push(("access-control-allow-headers", h));
    }
    if let Some(age) = &policy.max_age {
        headers.push(("access-control-max-age", age.clone()));
    }
    if policy.allow_credentials {
        headers.push((
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        ));
    }
    headers.push(("vary", HeaderValue::from_static(PREFLIGHT_VARY)));
    PreflightDecision::Allow {
        headers,
        refused_headers,
    }
}

/// Augment mode, on the upstream's preflight answer: when `origin` is allowed, adds the
/// tracing headers baked into the policy that the upstream's
/// `Access-Control-Allow-Headers` lacks, keeping the upstream's entries as written and folding
/// several header lines into one. A doubled `Access-Control-Allow-Origin` is collapsed to the
/// echoed origin. Nothing else is touched: the upstream decides whether the origin may call.
pub fn augment_preflight_response(policy: &CorsPolicy, origin: &[u8], resp: &mut HeaderMap) {
    if !policy.allows_origin(origin) {
        return;
    }
    collapse_acao(origin, resp);
    let wanted = policy
        .allowed_headers
        .get(policy.tracing_start..)
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .filter(|h| !h.is_empty());
    merge_list(resp, ACCESS_CONTROL_ALLOW_HEADERS, wanted);
}

/// Collapses several `Access-Control-Allow-Origin` lines into one carrying the echoed origin.
fn collapse_acao(origin: &[u8], resp: &mut HeaderMap) {
    if resp
        .get_all(ACCESS_CONTROL_ALLOW_ORIGIN)
        .iter()
        .nth(1)
        .is_some()
    {
        if let Ok(v) = HeaderValue::from_bytes(origin) {
            resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
    }
}

/// Whether a comma-separated header (all its lines) already lists `token`.
fn lists_token(resp: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    resp.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Makes the comma-separated header `name` one line listing the upstream's entries (as written,
/// duplicates removed) followed by those of `wanted` it lacked. Untouched when it already is a
/// single line lacking nothing.
fn merge_list<'a>(resp: &mut HeaderMap, name: HeaderName, wanted: impl Iterator<Item = &'a str>) {
    let lines = resp.get_all(&name).iter().count();
    let missing: Vec<&str> = wanted.filter(|w| !lists_token(resp, &name, w)).collect();
    if missing.is_empty() && lines <= 1 {
        return;
    }
    let mut tokens: Vec<String> = Vec::new();
    for v in resp.get_all(&name) {
        for t in v.as_bytes().split(|&c| c == b',') {
            let t = String::from_utf8_lossy(t.trim_ascii()).into_owned();
            if !t.is_empty() && !tokens.iter().any(|x| x.eq_ignore_ascii_case(&t)) {
                tokens.push(t);
            }
        }
    }
    for m in missing {
        if !tokens.iter().any(|x| x.eq_ignore_ascii_case(m)) {
            tokens.push(m.to_string());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&tokens.join(", ")) {
        resp.insert(name, v);
    }
}

/// Decorates an actual (non-preflight) response to `origin` (the raw `Origin` request header).
/// Does nothing when the origin is not allowed. Otherwise the response ends up with exactly one
/// of each:
/// - `Access-Control-Allow-Origin`: the echoed origin (replacing whatever the upstream set,
///   including `*` or a doubled value);
/// - `Vary` listing `Origin` (merged into the upstream's `Vary`; `Vary: *` is left alone);
/// - `Access-Control-Allow-Credentials: true` when the policy allows credentials (an upstream
///   value is otherwise kept, folded to one line);
/// - `Access-Control-Expose-Headers`: the upstream's list plus the policy's, one line.
///
/// Allocates only the echoed origin value, plus a merged value when the upstream's own
/// `Vary` or expose list must be combined with stitch's.
pub fn decorate_response(policy: &CorsPolicy, origin: &[u8], resp: &mut HeaderMap) {
    if !policy.allows_origin(origin) {
        return;
    }
    match HeaderValue::from_bytes(origin) {
        Ok(v) => {
            resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        Err(_) => return,
    }
    if !resp.contains_key(VARY) {
        resp.insert(VARY, HeaderValue::from_static("Origin"));
    } else if !lists_token(resp, &VARY, "origin") && !lists_token(resp, &VARY, "*") {
        merge_list(resp, VARY, std::iter::once("Origin"));
    }
    if policy.allow_credentials {
        resp.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    } else if resp
        .get_all(ACCESS_CONTROL_ALLOW_CREDENTIALS)
        .iter()
        .nth(1)
        .is_some()
    {
        if let Some(first) = resp.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).cloned() {
            resp.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, first);
        }
    }
    if !resp.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS) {
        if let Some(v) = &policy.expose_headers_value {
            resp.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    } else {
        merge_list(
            resp,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            policy.expose_headers.iter().map(String::as_str),
        );
    }
}

/// The headers [`decorate_response`] gives a response that carries no CORS header and no
/// `Vary` of its own, for an `origin` the policy allows (the caller has checked): the echoed
/// origin, `Vary: Origin`, and the policy's credentials and expose values, all ready-made. The
/// proxy writes these straight into Pingora's response header, without a scratch map.
pub fn clean_response_headers(
    policy: &CorsPolicy,
    origin: &HeaderValue,
) -> [Option<(&'static HeaderName, HeaderValue)>; 4] {
    static ALLOW_ORIGIN: HeaderName = ACCESS_CONTROL_ALLOW_ORIGIN;
    static VARY_NAME: HeaderName = VARY;
    static ALLOW_CREDENTIALS: HeaderName = ACCESS_CONTROL_ALLOW_CREDENTIALS;
    static EXPOSE_HEADERS: HeaderName = ACCESS_CONTROL_EXPOSE_HEADERS;
    [
        Some((&ALLOW_ORIGIN, origin.clone())),
        Some((&VARY_NAME, HeaderValue::from_static("Origin"))),
        policy
            .allow_credentials
            .then(|| (&ALLOW_CREDENTIALS, HeaderValue::from_static("true"))),
        policy
            .expose_headers_value
            .clone()
            .map(|v| (&EXPOSE_HEADERS, v)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_MAX_AGE};

    fn spec(origins: &[&str]) -> CorsSpec {
        CorsSpec {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into(), "PUT".into()],
            allow_headers: vec!["Content-Type".into(), "X-App-Token".into()],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: Some(600),
            preflight: PreflightMode::Answer,
        }
    }

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::new(spec(origins)).expect("valid policy")
    }

    const APP: &str = "https://app.example.com";

    const TRACING: &[&str] = &[
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "x-datadog-origin",
        "x-datadog-sampling-priority",
        "x-datadog-tags",
        "traceparent",
        "tracestate",
    ];

    #[test]
    fn origin_matching() {
        let exact = policy(&["https://example.com"]);
        let wild = policy(&["https://*.example.com"]);
        let port = policy(&["http://localhost:3000"]);
        let upper = policy(&["HTTPS://App.Example.COM"]);
        let explicit_default = policy(&["https://example.com:443"]);
        let regex = policy(&[r"~https://[a-z0-9-]+\.example\.com"]);
        let null = policy(&["null"]);
        let any = policy(&["*"]);
        let v6 = policy(&["http://[::1]:8080"]);
        let custom = policy(&["chrome-extension://abcdef"]);
        let rows: &[(&CorsPolicy, &str, bool, &str)] = &[
            (&exact, "https://example.com", true, "exact"),
            (
                &exact,
                "https://evil-example.com",
                false,
                "prefix-glued host",
            ),
            (
                &exact,
                "https://example.com.evil.net",
                false,
                "suffix-glued host",
            ),
            (&exact, "http://example.com", false, "other scheme"),
            (&exact, "https://example.com:8443", false, "other port"),
            (
                &exact,
                "https://example.com:443",
                true,
                "explicit default port",
            ),
            (&exact, "https://example.com/", false, "trailing slash"),
            (&exact, "https://example.com/path", false, "path"),
            (&exact, "https://user@example.com", false, "user info"),
            (&exact, "https://example.com:", false, "empty port"),
            (
                &exact,
                "https://example.com:99999",
                false,
                "port out of range",
            ),
            (&exact, "https://example.com:+443", false, "signed port"),
            (&exact, "https://a.example.com", false, "subdomain of exact"),
            (
                &exact,
                "HTTPS://EXAMPLE.COM",
                true,
                "case of scheme and host",
            ),
            (&exact, "https://example.com ", false, "trailing space"),
            (&exact, "null", false, "null not listed"),
            (&exact, "", false, "empty"),
            (&exact, "example.com", false, "no scheme"),
            (&exact, "https://example.com\0", false, "NUL"),
            (&wild, "https://a.example.com", true, "subdomain"),
            (&wild, "https://a.b.example.com", true, "deeper subdomain"),
            (&wild, "https://A.Example.Com", true, "case"),
            (&wild, "https://example.com", false, "apex"),
            (&wild, "https://.example.com", false, "empty label"),
            (&wild, "https://a..example.com", false, "empty label inside"),
            (
                &wild,
                "https://a.example.com.evil.net",
                false,
                "suffix-glued",
            ),
            (&wild, "https://evilexample.com", false, "no dot"),
            (&wild, "http://a.example.com", false, "scheme"),
            (&wild, "https://a.example.com:8443", false, "port"),
            (&wild, "null", false, "null"),
            (&port, "http://localhost:3000", true, "port match"),
            (&port, "http://localhost", false, "default port vs 3000"),
            (&port, "http://localhost:30000", false, "longer port"),
            (&port, "https://localhost:3000", false, "scheme"),
            (
                &upper,
                "https://app.example.com",
                true,
                "config case folded",
            ),
            (
                &explicit_default,
                "https://example.com",
                true,
                "config default port",
            ),
            (&regex, "https://app.example.com", true, "regex"),
            (
                &regex,
                "https://app.example.com.evil.net",
                false,
                "regex anchored end",
            ),
            (
                &regex,
                "xhttps://app.example.com",
                false,
                "regex anchored start",
            ),
            (
                &regex,
                "https://a.b.example.com",
                false,
                "regex class excludes dot",
            ),
            (
                &regex,
                "https://app.example.com/x",
                false,
                "malformed origin never matches",
            ),
            (&regex, "null", false, "regex never admits null"),
            (&null, "null", true, "null listed"),
            (&null, "NULL", false, "null is exact"),
            (&null, "https://example.com", false, "null policy"),
            (&any, "https://anything.test:1234", true, "any"),
            (&any, "null", false, "any excludes null"),
            (&any, "not an origin", false, "any needs an origin"),
            (&v6, "http://[::1]:8080", true, "ipv6"),
            (&v6, "http://[::1]", false, "ipv6 port"),
            (&v6, "http://[::1:8080", false, "ipv6 unclosed"),
            (&custom, "chrome-extension://abcdef", true, "custom scheme"),
            (
                &custom,
                "chrome-extension://abcdef:1",
                false,
                "custom scheme port",
            ),
        ];
        for &(p, origin, want, why) in rows {
            assert_eq!(p.allows_origin(origin.as_bytes()), want, "{why}: {origin}");
        }
        // Bytes that are not UTF-8 never match and never panic.
        assert!(!exact.allows_origin(b"https://exa\xffmple.com"));
        assert!(!regex.allows_origin(b"https://\xff.example.com"));
    }

    #[test]
    fn config_validation() {
        let rows: &[(&[&str], bool, usize, &str)] = &[
            (&["*"], true, 1, "* with credentials"),
            (&["https://example.com/"], false, 1, "trailing slash"),
            (&["example.com"], false, 1, "no scheme"),
            (&["https://example.com:0"], false, 1, "port 0"),
            (&["https://*example.com"], false, 1, "glued wildcard"),
            (&["https://a.*.example.com"], false, 1, "inner wildcard"),
            (&["https://*"], false, 1, "bare wildcard host"),
            (&["https://*.[::1]"], false, 1, "wildcard ip"),
            (&["~(unclosed"], false, 1, "bad regex"),
            (&["~"], false, 1, "empty regex"),
            (&[""], false, 1, "empty"),
            (&["https://a..b"], false, 1, "empty label"),
            (
                &["https://ok.example", "ftp//bad", "~[", "*"],
                true,
                3,
                "every problem reported",
            ),
        ];
        for &(origins, creds, n, why) in rows {
            let mut s = spec(origins);
            s.allow_credentials = creds;
            let errs = CorsPolicy::new(s).expect_err(why);
            assert_eq!(errs.len(), n, "{why}: {errs:?}");
        }
        let mut s = spec(&["https://ok.example"]);
        s.allow_methods = vec!["GE T".into()];
        s.allow_headers = vec!["bad header".into(), "*".into()];
        s.expose_headers = vec!["x-ok".into(), "".into()];
        assert_eq!(CorsPolicy::new(s).unwrap_err().len(), 4);
        let mut s = spec(&["*", "null"]);
        s.allow_credentials = false;
        assert!(CorsPolicy::new(s).is_ok());
    }

    fn preflight(origin: Option<&str>, acrh: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        if let Some(r) = acrh {
            h.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(r).unwrap(),
            );
        }
        h
    }

    fn find<'a>(headers: &'a [(&str, HeaderValue)], name: &HeaderName) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| *n == name.as_str())
            .map(|(_, v)| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn preflight_detection() {
        let get = http::Method::GET;
        let options = http::Method::OPTIONS;
        assert!(is_preflight(
            &options,
            &preflight(Some("https://a.test"), None)
        ));
        assert!(!is_preflight(
            &get,
            &preflight(Some("https://a.test"), None)
        ));
        assert!(!is_preflight(&options, &preflight(None, None)));
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://a.test"));
        assert!(
            !is_preflight(&options, &h),
            "no Access-Control-Request-Method"
        );
    }

    #[test]
    fn preflight_decisions() {
        let base = policy(&["https://app.example.com"]);
        let routed = base.with_tracing_headers(TRACING);
        let mut creds_spec = spec(&["https://app.example.com"]);
        creds_spec.allow_credentials = true;
        creds_spec.max_age = None;
        let creds = CorsPolicy::new(creds_spec).unwrap();
        let mut aug_spec = spec(&["https://app.example.com"]);
        aug_spec.preflight = PreflightMode::Augment;
        let augment = CorsPolicy::new(aug_spec).unwrap();

        let ok = "https://app.example.com";
        let rum = "x-datadog-trace-id, X-Datadog-Parent-Id,x-datadog-origin,x-datadog-sampling-priority,traceparent,tracestate,content-type";
        // (policy, tracing arg, origin, requested headers, label, refused)
        type Row<'a> = (
            &'a CorsPolicy,
            &'a [&'a str],
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            &'a [&'a str],
        );
        let rows: &[Row] = &[
            (&base, TRACING, Some(ok), Some(rum), "allowed", &[]),
            (&routed, &[], Some(ok), Some(rum), "allowed", &[]),
            (&routed, &[], Some(ok), None, "allowed", &[]),
            (
                &base,
                &[],
                Some(ok),
                Some("traceparent"),
                "allowed_partial",
                &["traceparent"],
            ),
            (
                &routed,
                &[],
                Some(ok),
                Some("traceparent, X-Evil, x-evil,b3"),
                "allowed_partial",
                &["x-evil", "b3"],
            ),
            (&routed, &["b3"], Some(ok), Some("b3"), "allowed", &[]),
            (
                &routed,
                &[],
                Some("https://evil.example.com"),
                Some(rum),
                "refused_origin",
                &[],
            ),
            (&routed, &[], Some("null"), Some(rum), "refused_origin", &[]),
            (&routed, &[], None, Some(rum), "refused_origin", &[]),
            (&augment, TRACING, Some(ok), Some(rum), "forwarded", &[]),
            (
                &augment,
                TRACING,
                Some("https://evil.test"),
                Some(rum),
                "forwarded",
                &[],
            ),
            (&creds, TRACING, Some(ok), Some(rum), "allowed", &[]),
        ];
        for (i, &(p, tracing, origin, acrh, label, refused)) in rows.iter().enumerate() {
            // An empty list keeps what the policy has baked in; a list bakes in those names.
            // `tracing`: names admitted on top of what the policy has baked in.
            let baked;
            let policy = match tracing {
                [] => p,
                names => {
                    let on_top: Vec<&str> = if std::ptr::eq(p, &routed) {
                        TRACING.iter().chain(names).copied().collect()
                    } else {
                        names.to_vec()
                    };
                    baked = p.with_tracing_headers(&on_top);
                    &baked
                }
            };
            let d = answer_preflight(policy, &preflight(origin, acrh));
            assert_eq!(d.result_label(), label, "row {i}");
            match d {
                PreflightDecision::Allow {
                    headers,
                    refused_headers,
                } => {
                    assert_eq!(refused_headers, refused, "row {i}");
                    assert_eq!(
                        find(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
                        [ok],
                        "row {i}"
                    );
                    assert_eq!(
                        find(&headers, &ACCESS_CONTROL_ALLOW_METHODS),
                        ["GET, POST, PUT"]
                    );
                    assert_eq!(find(&headers, &VARY), [PREFLIGHT_VARY]);
                    let acah = find(&headers, &ACCESS_CONTROL_ALLOW_HEADERS);
                    assert_eq!(acah.len(), 1);
                    let listed: Vec<&str> = acah[0].split(", ").collect();
                    assert!(
                        listed.starts_with(&["content-type", "x-app-token"]),
                        "row {i}"
                    );
                    for t in tracing.iter().chain(if std::ptr::eq(p, &routed) {
                        TRACING
                    } else {
                        &[]
                    }) {
                        assert_eq!(listed.iter().filter(|l| *l == t).count(), 1, "row {i}: {t}");
                    }
                    let is_creds = std::ptr::eq(p, &creds);
                    assert_eq!(
                        find(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
                        if is_creds { vec!["true"] } else { vec![] }
                    );
                    assert_eq!(
                        find(&headers, &ACCESS_CONTROL_MAX_AGE),
                        if is_creds { vec![] } else { vec!["600"] }
                    );
                }
                _ => assert!(refused.is_empty()),
            }
        }
        // Two Origin headers are refused.
        let mut h = preflight(Some(ok), None);
        h.append(ORIGIN, HeaderValue::from_static("https://app.example.com"));
        assert_eq!(
            answer_preflight(&routed, &h),
            PreflightDecision::RefuseOrigin
        );
        // Refused header names are bounded for the metric label.
        let long = "x".repeat(300);
        let d = answer_preflight(&routed, &preflight(Some(ok), Some(&long)));
        match d {
            PreflightDecision::Allow {
                refused_headers, ..
            } => {
                assert_eq!(refused_headers, [&long[..MAX_REFUSED_NAME]]);
            }
            other => panic!("{other:?}"),
        }
    }

    fn resp(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append((*n).clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn all(h: &HeaderMap, n: &HeaderName) -> Vec<String> {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn augment_adds_tracing_headers() {
        let mut s = spec(&["https://app.example.com"]);
        s.preflight = PreflightMode::Augment;
        let p = CorsPolicy::new(s)
            .unwrap()
            .with_tracing_headers(&["traceparent", "tracestate"]);
        let ok = b"https://app.example.com";

        let mut r = resp(&[
            (&ACCESS_CONTROL_ALLOW_ORIGIN, "https://app.example.com"),
            (&ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type, TraceParent"),
            (&ACCESS_CONTROL_ALLOW_HEADERS, "x-upstream"),
        ]);
        augment_preflight_response(
            &p.with_tracing_headers(&["traceparent", "tracestate", "b3"]),
            ok,
            &mut r,
        );
        assert_eq!(
            all(&r, &ACCESS_CONTROL_ALLOW_HEADERS),
            ["Content-Type, TraceParent, x-upstream, tracestate, b3"]
        );
        assert_eq!(
            all(&r, &ACCESS_CONTROL_ALLOW_ORIGIN),
            ["https://app.example.com"]
        );

        // Nothing missing and one line: untouched.
        let mut r = resp(&[(&ACCESS_CONTROL_ALLOW_HEADERS, "traceparent,tracestate")]);
        augment_preflight_response(&p, ok, &mut r);
        assert_eq!(
            all(&r, &ACCESS_CONTROL_ALLOW_HEADERS),
            ["traceparent,tracestate"]
        );

        // Upstream without ACAH gets the tracing headers.
        let mut r = HeaderMap::new();
        augment_preflight_response(&p, ok, &mut r);
        assert_eq!(
            all(&r, &ACCESS_CONTROL_ALLOW_HEADERS),
            ["traceparent, tracestate"]
        );

        // Origin not allowed: untouched.
        let mut r = resp(&[(&ACCESS_CONTROL_ALLOW_HEADERS, "content-type")]);
        augment_preflight_response(&p, b"https://evil.test", &mut r);
        assert_eq!(all(&r, &ACCESS_CONTROL_ALLOW_HEADERS), ["content-type"]);

        // Doubled ACAO from upstream collapsed.
        let mut r = resp(&[
            (&ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (&ACCESS_CONTROL_ALLOW_ORIGIN, "https://app.example.com"),
        ]);
        augment_preflight_response(&p, ok, &mut r);
        assert_eq!(
            all(&r, &ACCESS_CONTROL_ALLOW_ORIGIN),
            ["https://app.example.com"]
        );
    }

    /// The proxy's shortcut for a response without CORS headers of its own must add exactly
    /// what `decorate_response` adds, for every combination of credentials and expose list.
    #[test]
    fn clean_response_headers_match_decorate_response() {
        for credentials in [false, true] {
            for expose in [
                vec![],
                vec!["X-Request-Id".to_string(), "traceparent".into()],
            ] {
                let mut s = spec(&["https://app.example.com"]);
                s.allow_credentials = credentials;
                s.expose_headers = expose.clone();
                let p = CorsPolicy::new(s).unwrap();
                let origin = HeaderValue::from_static("https://app.example.com");
                let mut want = HeaderMap::new();
                want.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
                let mut got = want.clone();
                decorate_response(&p, origin.as_bytes(), &mut want);
                for (name, value) in clean_response_headers(&p, &origin).into_iter().flatten() {
                    got.append(name.clone(), value);
                }
                assert_eq!(got, want, "credentials {credentials}, expose {expose:?}");
            }
        }
    }

    #[test]
    fn decorate_table() {
        let plain = policy(&["https://app.example.com"]);
        let mut s = spec(&["https://app.example.com"]);
        s.allow_credentials = true;
        s.expose_headers = vec!["X-Request-Id".into(), "traceparent".into()];
        let full = CorsPolicy::new(s).unwrap();
        let a = &ACCESS_CONTROL_ALLOW_ORIGIN;
        let c = &ACCESS_CONTROL_ALLOW_CREDENTIALS;
        let e = &ACCESS_CONTROL_EXPOSE_HEADERS;
        let v = &VARY;
        // (policy, origin, upstream headers, expected ACAO, Vary, ACAC, ACEH)
        type Row<'a> = (
            &'a CorsPolicy,
            &'a str,
            Vec<(&'a HeaderName, &'a str)>,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let rows: Vec<Row> = vec![
            (&plain, APP, vec![], &[APP], &["Origin"], &[], &[]),
            (&plain, "https://evil.test", vec![], &[], &[], &[], &[]),
            (
                &plain,
                "https://evil.test",
                vec![(a, "*")],
                &["*"],
                &[],
                &[],
                &[],
            ),
            (
                &plain,
                APP,
                vec![(a, APP), (a, APP)],
                &[APP],
                &["Origin"],
                &[],
                &[],
            ),
            (&plain, APP, vec![(a, "*")], &[APP], &["Origin"], &[], &[]),
            (
                &plain,
                APP,
                vec![(v, "Accept-Encoding")],
                &[APP],
                &["Accept-Encoding, Origin"],
                &[],
                &[],
            ),
            (
                &plain,
                APP,
                vec![(v, "accept-encoding, origin")],
                &[APP],
                &["accept-encoding, origin"],
                &[],
                &[],
            ),
            (
                &plain,
                APP,
                vec![(v, "Accept-Encoding"), (v, "Origin")],
                &[APP],
                &["Accept-Encoding", "Origin"],
                &[],
                &[],
            ),
            (
                &plain,
                APP,
                vec![(v, "Accept"), (v, "Cookie")],
                &[APP],
                &["Accept, Cookie, Origin"],
                &[],
                &[],
            ),
            (&plain, APP, vec![(v, "*")], &[APP], &["*"], &[], &[]),
            (
                &plain,
                APP,
                vec![(c, "true"), (c, "true")],
                &[APP],
                &["Origin"],
                &["true"],
                &[],
            ),
            (
                &plain,
                APP,
                vec![(e, "x-a"), (e, "x-b")],
                &[APP],
                &["Origin"],
                &[],
                &["x-a, x-b"],
            ),
            (
                &full,
                APP,
                vec![],
                &[APP],
                &["Origin"],
                &["true"],
                &["x-request-id, traceparent"],
            ),
            (
                &full,
                APP,
                vec![(a, "*"), (c, "true"), (e, "X-Request-Id, x-up")],
                &[APP],
                &["Origin"],
                &["true"],
                &["X-Request-Id, x-up, traceparent"],
            ),
            (
                &full,
                APP,
                vec![(a, APP), (a, APP), (c, "true"), (c, "true"), (v, "Origin")],
                &[APP],
                &["Origin"],
                &["true"],
                &["x-request-id, traceparent"],
            ),
        ];
        for (i, (p, origin, upstream, acao, vary, acac, aceh)) in rows.into_iter().enumerate() {
            let mut r = resp(&upstream);
            decorate_response(p, origin.as_bytes(), &mut r);
            assert_eq!(all(&r, a), acao, "row {i} ACAO");
            assert_eq!(all(&r, v), vary, "row {i} Vary");
            assert_eq!(all(&r, c), acac, "row {i} ACAC");
            assert_eq!(all(&r, e), aceh, "row {i} ACEH");
        }
    }

    proptest::proptest! {
        #[test]
        fn origin_matching_never_panics(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let p = policy(&["https://example.com", "https://*.example.com", r"~https://.*\.test", "null"]);
            let _ = p.allows_origin(&raw);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                h.insert(ORIGIN, v.clone());
                h.insert(ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("GET"));
                h.insert(ACCESS_CONTROL_REQUEST_HEADERS, v);
                let p = p.with_tracing_headers(TRACING);
                let _ = answer_preflight(&p, &h);
                let mut r = h.clone();
                decorate_response(&p, &raw, &mut r);
                augment_preflight_response(&p, &raw, &mut r);
            }
        }

        #[test]
        fn exact_origin_admits_itself_only(host in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}", glue in "[a-z0-9.-]{1,8}") {
            let me = format!("https://{host}");
            let p = policy(&[&me]);
            proptest::prop_assert!(p.allows_origin(me.as_bytes()));
            proptest::prop_assert!(p.allows_origin(me.to_ascii_uppercase().as_bytes()));
            for other in [
                format!("https://{host}{glue}"),
                format!("https://{glue}{host}"),
                format!("https://{host}.{glue}"),
                format!("http://{host}"),
                format!("https://{host}:8443"),
            ] {
                if !other.eq_ignore_ascii_case(&me) {
                    proptest::prop_assert!(!p.allows_origin(other.as_bytes()), "{} admitted {}", me, other);
                }
            }
        }
    }
}
