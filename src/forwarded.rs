//! The real client address and the forwarding headers sent upstream, as pure functions over the
//! peer's address, the trusted proxies (`[server] trusted_proxies`) and the request's headers.
//!
//! # Which address is the client's
//!
//! The hops a request went through, from the client to stitch, are the entries of
//! `X-Forwarded-For` (left to right) followed by the peer (the connection's address, or the
//! address a PROXY protocol header gave, see `crate::proxy_protocol`). [`resolve`] walks them
//! from the right, as nginx's `real_ip_recursive on` and Envoy's trusted hops do: while the hop
//! is a trusted proxy, the address it reports (the entry to its left) is believed. The client
//! is the first untrusted hop; if every entry is trusted, or an entry is not an address, it is
//! the leftmost address reached. An untrusted peer is the client, whatever it wrote.
//!
//! # What goes upstream
//!
//! [`edits`] works out the route's [`ForwardedHeader`]s and [`apply`] writes them:
//! - `X-Forwarded-For`: the client, the trusted hops after it, then the peer. Entries left of the
//!   client are claims made by an untrusted party and are dropped, so a backend that reads the
//!   leftmost entry reads the client stitch found. From an untrusted peer: the peer alone.
//! - `X-Forwarded-Proto` and `X-Forwarded-Host`: a trusted peer's values are kept (a balancer
//!   that terminated TLS knows the scheme); otherwise stitch's own: `https` on a TLS listener,
//!   else `http`, and the request's `Host`.
//! - `Forwarded` (RFC 7239): stitch appends its element (`for`, `host`, `proto`) to a trusted
//!   peer's header and replaces an untrusted peer's. stitch never reads it to find the client.

use std::fmt::Write;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::edge::HeaderEdit;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Who the client of a request is, and how stitch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address.
    pub ip: IpAddr,
    /// The connection's peer (or the address its PROXY protocol header gave).
    pub peer: IpAddr,
    /// The peer is a trusted proxy.
    pub peer_trusted: bool,
    /// `X-Forwarded-For` entries kept, counted from the right: the client's and the trusted
    /// hops after it (0 when the client is the peer).
    pub hops: usize,
}

/// The client of a request from `peer` carrying `headers`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    let peer = peer.to_canonical();
    let mut client = Client {
        ip: peer,
        peer,
        peer_trusted: false,
        hops: 0,
    };
    if trusted.is_empty() || !trusted.contains(peer) {
        return client;
    }
    client.peer_trusted = true;
    for entry in entries_from_right(headers) {
        let Some(ip) = parse_hop(entry) else { break };
        client.ip = ip;
        client.hops += 1;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// The `X-Forwarded-For` entries, rightmost first, across every header line.
fn entries_from_right(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','))
}

/// One `X-Forwarded-For` entry as an address: `192.0.2.1`, `2001:db8::1`, or with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`), which some balancers add. Anything else (`unknown`,
/// an obfuscated identifier, an empty entry) is not an address.
pub fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        if !tail.is_empty() && !port(tail.strip_prefix(':')?) {
            return None;
        }
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (ip, p) = s.rsplit_once(':')?;
    if !port(p) {
        return None;
    }
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A forwarding header stitch can write upstream (`[[route]] forwarded_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    /// RFC 7239 `Forwarded`.
    Forwarded,
}

impl ForwardedHeader {
    pub const ALL: [ForwardedHeader; 4] = [
        ForwardedHeader::XForwardedFor,
        ForwardedHeader::XForwardedProto,
        ForwardedHeader::XForwardedHost,
        ForwardedHeader::Forwarded,
    ];

    /// The header's name, as configured and as written.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::XForwardedProto => "x-forwarded-proto",
            ForwardedHeader::XForwardedHost => "x-forwarded-host",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }

    /// The name as a `'static` header name, for the patched insert.
    pub fn header(self) -> &'static HeaderName {
        static NAMES: [HeaderName; 4] = [
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("x-forwarded-proto"),
            HeaderName::from_static("x-forwarded-host"),
            http::header::FORWARDED,
        ];
        &NAMES[match self {
            ForwardedHeader::XForwardedFor => 0,
            ForwardedHeader::XForwardedProto => 1,
            ForwardedHeader::XForwardedHost => 2,
            ForwardedHeader::Forwarded => 3,
        }]
    }

    pub fn parse(s: &str) -> Option<ForwardedHeader> {
        ForwardedHeader::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(s))
    }
}

/// What [`edits`] needs to know about the request besides its headers.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    pub client: &'a Client,
    /// `"https"` on a TLS listener, else `"http"`.
    pub scheme: &'static str,
    /// The `Host` the client asked for (or the HTTP/2 authority): the request's own value,
    /// shared rather than copied into `X-Forwarded-Host`.
    pub host: Option<HeaderValue>,
}

/// One change [`edits`] makes: set a header (replacing its values) or remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Set(&'static HeaderName, HeaderValue),
    Remove(HeaderName),
}

/// The changes that write the route's forwarding `headers` into a request whose headers are
/// `req` (as the client sent them). Worked out before anything is written, so the caller can
/// apply them to the very map they were read from.
pub fn edits(headers: &[ForwardedHeader], hop: &Hop<'_>, req: &HeaderMap) -> [Option<Edit>; 4] {
    let c = hop.client;
    let mut out: [Option<Edit>; 4] = Default::default();
    for (slot, h) in out.iter_mut().zip(headers) {
        *slot = match h {
            ForwardedHeader::XForwardedFor => set(h.header(), x_forwarded_for(c, req)),
            ForwardedHeader::XForwardedProto => {
                let kept = c.peer_trusted
                    && req.get(X_FORWARDED_PROTO).is_some_and(|v| {
                        v.as_bytes().eq_ignore_ascii_case(b"https")
                            || v.as_bytes().eq_ignore_ascii_case(b"http")
                    });
                (!kept).then(|| Edit::Set(h.header(), HeaderValue::from_static(hop.scheme)))
            }
            ForwardedHeader::XForwardedHost => {
                if c.peer_trusted && req.contains_key(X_FORWARDED_HOST) {
                    None
                } else {
                    Some(match hop.host.clone() {
                        Some(v) => Edit::Set(h.header(), v),
                        None => Edit::Remove(X_FORWARDED_HOST),
                    })
                }
            }
            ForwardedHeader::Forwarded => set(h.header(), forwarded(hop, req)),
        };
    }
    out
}

/// Apply what [`edits`] worked out.
pub fn apply(edits: [Option<Edit>; 4], out: &mut impl HeaderEdit) {
    for e in edits.into_iter().flatten() {
        match e {
            Edit::Set(name, value) => out.insert(name, value),
            Edit::Remove(name) => out.remove(&name),
        }
    }
}

/// The value takes over the string's buffer (checked, not copied).
fn set(name: &'static HeaderName, value: String) -> Option<Edit> {
    HeaderValue::try_from(value)
        .ok()
        .map(|v| Edit::Set(name, v))
}

/// The client, the trusted hops after it, then the peer.
pub fn x_forwarded_for(c: &Client, req: &HeaderMap) -> String {
    let mut out = String::with_capacity(16 * (c.hops + 1));
    if c.hops > 0 {
        let mut kept: Vec<IpAddr> = entries_from_right(req)
            .take(c.hops)
            .filter_map(parse_hop)
            .collect();
        kept.reverse();
        for ip in kept {
            push_ip(&mut out, ip);
            out.push_str(", ");
        }
    }
    push_ip(&mut out, c.peer);
    out
}

/// `ip` as text, as `Display` writes it.
pub fn ip_string(ip: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, ip);
    s
}

/// Append `ip` as `Display` writes it: IPv4 by hand, as the standard formatter costs about ten
/// times as much and an address is written on every request; IPv6 through `Display`.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// A trusted peer's `Forwarded` with stitch's element appended, or stitch's element alone.
pub fn forwarded(hop: &Hop<'_>, req: &HeaderMap) -> String {
    let mut out = String::new();
    if hop.client.peer_trusted {
        for v in req.get_all(http::header::FORWARDED) {
            if let Ok(s) = v.to_str() {
                out.push_str(s);
                out.push_str(", ");
            }
        }
    }
    match hop.client.peer {
        // RFC 7239 §6: an IPv6 address is quoted and in brackets.
        IpAddr::V6(ip) => {
            let _ = write!(out, "for=\"[{ip}]\"");
        }
        IpAddr::V4(ip) => {
            let _ = write!(out, "for={ip}");
        }
    }
    if let Some(host) = hop.host.as_ref().and_then(|v| v.to_str().ok()) {
        if is_token(host) {
            let _ = write!(out, ";host={host}");
        } else if host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            let _ = write!(out, ";host=\"{host}\"");
        }
    }
    let _ = write!(out, ";proto={}", hop.scheme);
    out
}

/// RFC 7230 `token`: a value that needs no quotes.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        m
    }

    const LB: &[&str] = &["10.0.0.0/8", "2001:db8:ffff::/48"];

    /// (peer, trusted, `X-Forwarded-For` lines, client, hops kept, reason)
    type ResolveRow = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        usize,
        &'static str,
    );

    #[rustfmt::skip]
    const RESOLVE: &[ResolveRow] = &[
        ("203.0.113.7", &[], &["198.51.100.1"], "203.0.113.7", 0, "no trusted proxies: the peer, whatever it claims"),
        ("203.0.113.7", LB, &["198.51.100.1"], "203.0.113.7", 0, "an untrusted peer's forged header changes nothing"),
        ("10.0.0.1", LB, &[], "10.0.0.1", 0, "a trusted peer without the header is the client"),
        ("10.0.0.1", LB, &["198.51.100.1"], "198.51.100.1", 1, "one trusted hop"),
        ("10.0.0.1", LB, &["6.6.6.6, 198.51.100.1, 10.0.0.2"], "198.51.100.1", 2, "two hops: the spoofed leftmost entry is not reached"),
        ("10.0.0.1", LB, &["6.6.6.6, 198.51.100.1", "10.0.0.2"], "198.51.100.1", 2, "entries across header lines, in order"),
        ("10.0.0.1", LB, &["10.0.0.3, 10.0.0.2"], "10.0.0.3", 2, "every hop trusted: the leftmost"),
        ("10.0.0.1", LB, &["unknown, 10.0.0.2"], "10.0.0.2", 1, "a non-address stops the walk at the last address"),
        ("10.0.0.1", LB, &["198.51.100.1, bogus"], "10.0.0.1", 0, "garbage from the trusted side: the peer"),
        ("10.0.0.1", LB, &["198.51.100.1:5123"], "198.51.100.1", 1, "IPv4 with a port"),
        ("10.0.0.1", LB, &["[2001:db8::7]:443"], "2001:db8::7", 1, "IPv6 in brackets with a port"),
        ("10.0.0.1", LB, &[" 2001:db8::7 "], "2001:db8::7", 1, "bare IPv6, spaces trimmed"),
        ("2001:db8:ffff::1", LB, &["192.0.2.9"], "192.0.2.9", 1, "an IPv6 balancer"),
        ("::ffff:10.0.0.1", LB, &["192.0.2.9"], "192.0.2.9", 1, "an IPv4-mapped peer (dual-stack listener) matches IPv4 CIDRs"),
        ("10.0.0.1", LB, &["::ffff:192.0.2.9"], "192.0.2.9", 1, "an IPv4-mapped entry is reported as IPv4"),
        ("10.0.0.1", LB, &[""], "10.0.0.1", 0, "an empty header"),
        ("10.0.0.1", &["10.0.0.1/32"], &["192.0.2.9, 10.0.0.2"], "10.0.0.2", 1, "10.0.0.2 is not trusted: it is the client"),
    ];

    #[test]
    fn resolve_table() {
        for (peer, trusted, lines, client, hops, why) in RESOLVE {
            let got = resolve(peer.parse().unwrap(), &xff(lines), &nets(trusted));
            assert_eq!(got.ip, client.parse::<IpAddr>().unwrap(), "{why}");
            assert_eq!(got.hops, *hops, "{why}");
        }
    }

    #[rustfmt::skip]
    const HOPS: &[(&str, Option<&str>)] = &[
        ("192.0.2.1", Some("192.0.2.1")),
        ("192.0.2.1:80", Some("192.0.2.1")),
        ("2001:db8::1", Some("2001:db8::1")),
        ("[2001:db8::1]", Some("2001:db8::1")),
        ("[2001:db8::1]:8080", Some("2001:db8::1")),
        ("[2001:db8::1]x", None),
        ("192.0.2.1:", None),
        ("192.0.2.1:123456", None),
        ("2001:db8::1:80", Some("2001:db8::1:80")),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("1.2.3", None),
        ("\u{e9}", None),
    ];

    #[test]
    fn hop_table() {
        for (entry, want) in HOPS {
            let got = parse_hop(entry.as_bytes());
            assert_eq!(got, want.map(|w| w.parse().unwrap()), "{entry:?}");
        }
    }

    fn applied(
        headers: &[ForwardedHeader],
        peer: &str,
        req: &HeaderMap,
        scheme: &'static str,
    ) -> HeaderMap {
        let client = resolve(peer.parse().unwrap(), req, &nets(LB));
        let host = req.get(http::header::HOST).cloned();
        let mut out = req.clone();
        apply(
            edits(
                headers,
                &Hop {
                    client: &client,
                    scheme,
                    host,
                },
                req,
            ),
            &mut out,
        );
        out
    }

    fn request(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    fn get<'a>(m: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        m.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    const X: [ForwardedHeader; 3] = [
        ForwardedHeader::XForwardedFor,
        ForwardedHeader::XForwardedProto,
        ForwardedHeader::XForwardedHost,
    ];

    #[test]
    fn an_untrusted_peers_forwarding_headers_are_replaced() {
        let req = request(&[
            ("host", "shop.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let out = applied(&ForwardedHeader::ALL, "203.0.113.7", &req, "http");
        assert_eq!(get(&out, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(get(&out, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["shop.example"]);
        assert_eq!(
            get(&out, "forwarded"),
            ["for=203.0.113.7;host=shop.example;proto=http"]
        );
    }

    #[test]
    fn a_trusted_peers_chain_is_kept_from_the_client_on() {
        let req = request(&[
            ("host", "shop.example:8443"),
            ("x-forwarded-for", "6.6.6.6, 198.51.100.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=198.51.100.1;proto=https"),
        ]);
        let out = applied(&ForwardedHeader::ALL, "10.0.0.1", &req, "http");
        assert_eq!(
            get(&out, "x-forwarded-for"),
            ["198.51.100.1, 10.0.0.2, 10.0.0.1"]
        );
        assert_eq!(
            get(&out, "x-forwarded-proto"),
            ["https"],
            "the balancer's scheme is kept"
        );
        assert_eq!(get(&out, "x-forwarded-host"), ["shop.example"]);
        assert_eq!(
            get(&out, "forwarded"),
            ["for=198.51.100.1;proto=https, for=10.0.0.1;host=\"shop.example:8443\";proto=http"]
        );
    }

    #[test]
    fn a_trusted_peers_bad_proto_is_replaced_and_a_missing_host_removed() {
        let req = request(&[("x-forwarded-proto", "gopher"), ("x-forwarded-host", "x")]);
        let out = applied(&X, "203.0.113.7", &req, "https");
        assert_eq!(get(&out, "x-forwarded-proto"), ["https"]);
        assert!(
            get(&out, "x-forwarded-host").is_empty(),
            "no Host: no X-Forwarded-Host"
        );
        let out = applied(&X, "10.0.0.1", &req, "https");
        assert_eq!(
            get(&out, "x-forwarded-proto"),
            ["https"],
            "not http or https: replaced"
        );
    }

    #[test]
    fn only_the_listed_headers_are_touched() {
        let req = request(&[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")]);
        let out = applied(
            &[ForwardedHeader::XForwardedProto],
            "203.0.113.7",
            &req,
            "http",
        );
        assert_eq!(get(&out, "x-forwarded-for"), ["6.6.6.6"]);
        assert_eq!(get(&out, "forwarded"), ["for=6.6.6.6"]);
        assert_eq!(get(&out, "x-forwarded-proto"), ["http"]);
        let out = applied(&[], "203.0.113.7", &req, "http");
        assert_eq!(out, req);
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let req = request(&[("host", "a.example")]);
        let client = resolve("2001:db8::5".parse().unwrap(), &req, &nets(LB));
        let hop = Hop {
            client: &client,
            scheme: "https",
            host: Some(HeaderValue::from_static("a.example")),
        };
        assert_eq!(
            forwarded(&hop, &req),
            "for=\"[2001:db8::5]\";host=a.example;proto=https"
        );
    }

    proptest::proptest! {
        #[test]
        fn ip_text_is_displays(v4 in proptest::prelude::any::<u32>(), v6 in proptest::prelude::any::<u128>()) {
            for ip in [IpAddr::from(v4.to_be_bytes()), IpAddr::from(v6.to_be_bytes())] {
                proptest::prop_assert_eq!(ip_string(ip), ip.to_string());
            }
        }
    }

    #[test]
    fn ip_text_at_the_digit_boundaries() {
        for o in [0u8, 9, 10, 99, 100, 255] {
            let ip = IpAddr::from([o, o, o, o]);
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }

    #[test]
    fn header_names_parse_case_insensitively() {
        assert_eq!(
            ForwardedHeader::parse("X-Forwarded-For"),
            Some(ForwardedHeader::XForwardedFor)
        );
        assert_eq!(
            ForwardedHeader::parse("Forwarded"),
            Some(ForwardedHeader::Forwarded)
        );
        assert_eq!(ForwardedHeader::parse("x-real-ip"), None);
    }
}
