//! The PROXY protocol header (versions 1 and 2), as AWS NLB, GCP's proxy load balancers and
//! HAProxy (`send-proxy`, `send-proxy-v2`) send it before the first byte of the connection.
//! Pure: [`parse`] reads the bytes received so far and says whether they hold a whole header,
//! need more, or are not a valid header. The accept-time glue is `crate::proxy::accept`.
//!
//! Rules, from HAProxy's specification (`doc/proxy-protocol.txt`, 2020/03/05):
//! - v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, single spaces, at most 107 bytes with the
//!   CRLF; `PROXY UNKNOWN ...\r\n` says the addresses are unknown (everything to the CRLF is
//!   ignored). Addresses must be of the family named, ports decimal without leading zeros.
//! - v2: a 12-byte signature, a version/command byte (version 2; `LOCAL` or `PROXY`), a
//!   family/transport byte, a big-endian length, then the addresses and TLVs. `LOCAL` (a
//!   balancer's own health check) and the `UNSPEC` and `UNIX` families carry no IP address: the
//!   connection's own addresses stay. TLVs are skipped. stitch refuses a v2 header longer than
//!   [`MAX_V2_LEN`] bytes (the specification allows 64 KiB; the balancers above send a few
//!   hundred at most), and a datagram transport on its TCP listeners.
//!
//! A header that is neither version, or is broken, is an error: the connection is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included.
pub const V1_MAX_LEN: usize = 107;
/// The longest v2 header stitch reads (16 fixed bytes plus addresses and TLVs).
pub const MAX_V2_LEN: usize = 4096;

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A whole header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The client's and the address it connected to, when the sender knows them: `None` for
    /// `LOCAL`, `UNKNOWN`, `UNSPEC` and `UNIX`, where the connection's own addresses stay.
    pub addresses: Option<Addresses>,
    /// Bytes the header took: the connection's own data starts after them.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// Why bytes are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no PROXY protocol header (neither the v1 prefix nor the v2 signature)")]
    Missing,
    #[error("PROXY protocol v1: {0}")]
    V1(&'static str),
    #[error("PROXY protocol v2: {0}")]
    V2(&'static str),
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A header, possibly followed by the connection's data.
    Header(Header),
    /// A valid beginning: read more.
    Incomplete,
}

/// Parse the start of a connection.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if buf[0] == V1_PREFIX[0] {
        return v1(buf);
    }
    if buf[0] == V2_SIGNATURE[0] {
        return v2(buf);
    }
    Err(Error::Missing)
}

/// Whether `buf` is a prefix of `whole` or starts with it: `Some(true)` when complete.
fn prefix(buf: &[u8], whole: &[u8]) -> Option<bool> {
    let n = buf.len().min(whole.len());
    (buf[..n] == whole[..n]).then_some(buf.len() >= whole.len())
}

fn v1(buf: &[u8]) -> Result<Parsed, Error> {
    match prefix(buf, V1_PREFIX) {
        None => return Err(Error::Missing),
        Some(false) => return Ok(Parsed::Incomplete),
        Some(true) => {}
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|b| *b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(Error::V1("no CRLF within 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(Error::V1("a line feed without a carriage return"));
    }
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..lf - 1])
        .map_err(|_| Error::V1("not ASCII"))?;
    let len = lf + 1;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Parsed::Header(Header {
            version: Version::V1,
            addresses: None,
            len,
        }));
    }
    let mut fields = line.split(' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Error::V1("not five fields separated by single spaces"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| Error::V1("bad IPv4 source"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| Error::V1("bad IPv4 destination"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| Error::V1("bad IPv6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| Error::V1("bad IPv6 destination"))?
                .into(),
        ),
        _ => return Err(Error::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Header(Header {
        version: Version::V1,
        addresses: Some(Addresses {
            source: SocketAddr::new(src, port(sport)?),
            destination: SocketAddr::new(dst, port(dport)?),
        }),
        len,
    }))
}

/// A v1 port: 0 to 65535, decimal, no sign, no leading zero.
fn port(s: &str) -> Result<u16, Error> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(Error::V1("bad port"));
    }
    s.parse().map_err(|_| Error::V1("port above 65535"))
}

const V2_LOCAL: u8 = 0x20;
const V2_PROXY: u8 = 0x21;
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const TRANSPORT_UNSPEC: u8 = 0x0;
const TRANSPORT_STREAM: u8 = 0x1;

fn v2(buf: &[u8]) -> Result<Parsed, Error> {
    match prefix(buf, &V2_SIGNATURE) {
        None => return Err(Error::Missing),
        Some(false) => return Ok(Parsed::Incomplete),
        Some(true) => {}
    }
    let Some(fixed) = buf.get(..16) else {
        // Check what has arrived of the command and family bytes before waiting for more.
        if let Some(&vc) = buf.get(12) {
            command(vc)?;
        }
        return Ok(Parsed::Incomplete);
    };
    let local = command(fixed[12])?;
    let (family, transport) = (fixed[13] >> 4, fixed[13] & 0x0f);
    let len = 16 + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_V2_LEN {
        return Err(Error::V2("longer than stitch reads (4096 bytes)"));
    }
    // LOCAL: the family and its block are ignored (the specification, 2.2).
    let need = match family {
        _ if local => 0,
        AF_UNSPEC => 0,
        AF_INET => 12,
        AF_INET6 => 36,
        AF_UNIX => 216,
        _ => return Err(Error::V2("unknown address family")),
    };
    if !local && transport > 2 {
        return Err(Error::V2("unknown transport"));
    }
    if len - 16 < need {
        return Err(Error::V2("too short for its address family"));
    }
    let Some(body) = buf.get(16..len) else {
        return Ok(Parsed::Incomplete);
    };
    let addresses = match (local, family, transport) {
        (true, _, _) | (false, AF_UNSPEC | AF_UNIX, _) => None,
        (false, _, TRANSPORT_STREAM) => Some(inet(family, body)),
        (false, _, TRANSPORT_UNSPEC) => {
            return Err(Error::V2("an IP family with an unspecified transport"))
        }
        (false, _, _) => return Err(Error::V2("datagram transport on a TCP listener")),
    };
    Ok(Parsed::Header(Header {
        version: Version::V2,
        addresses,
        len,
    }))
}

/// Whether the version/command byte says `LOCAL` (true) or `PROXY` (false).
fn command(vc: u8) -> Result<bool, Error> {
    match vc {
        V2_LOCAL => Ok(true),
        V2_PROXY => Ok(false),
        _ if vc >> 4 != 2 => Err(Error::V2("version is not 2")),
        _ => Err(Error::V2("command is neither LOCAL nor PROXY")),
    }
}

/// The addresses of an `AF_INET` (12 bytes) or `AF_INET6` (36 bytes) block.
fn inet(family: u8, b: &[u8]) -> Addresses {
    let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    if family == AF_INET {
        let ip = |i: usize| IpAddr::from([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Addresses {
            source: SocketAddr::new(ip(0), be16(8)),
            destination: SocketAddr::new(ip(4), be16(10)),
        }
    } else {
        let ip = |i: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[i..i + 16]);
            IpAddr::from(a)
        };
        Addresses {
            source: SocketAddr::new(ip(0), be16(32)),
            destination: SocketAddr::new(ip(16), be16(34)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn header(r: Result<Parsed, Error>) -> Header {
        match r {
            Ok(Parsed::Header(h)) => h,
            other => panic!("not a header: {other:?}"),
        }
    }

    /// A v2 header: command, family/transport, address block, TLVs.
    fn v2_bytes(cmd: u8, fam: u8, block: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(cmd);
        out.push(fam);
        out.extend_from_slice(&((block.len() + tlvs.len()) as u16).to_be_bytes());
        out.extend_from_slice(block);
        out.extend_from_slice(tlvs);
        out
    }

    const INET: [u8; 12] = [203, 0, 113, 7, 192, 0, 2, 1, 0x15, 0xb3, 0x01, 0xbb];

    fn inet6() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&5555u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    /// (source, destination) when the header carries addresses.
    type Want = Option<(&'static str, &'static str)>;

    #[rustfmt::skip]
    const V1_OK: &[(&str, Want, &str)] = &[
        ("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n", Some(("203.0.113.7:5555", "192.0.2.1:443")), "TCP4"),
        ("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n", Some(("[2001:db8::7]:5555", "[2001:db8::1]:443")), "TCP6"),
        ("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", Some(("0.0.0.0:0", "255.255.255.255:65535")), "port bounds"),
        ("PROXY UNKNOWN\r\n", None, "UNKNOWN alone"),
        ("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None, "UNKNOWN: the rest is ignored"),
    ];

    #[test]
    fn v1_valid_table() {
        for (text, want, why) in V1_OK {
            let mut bytes = text.as_bytes().to_vec();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let h = header(parse(&bytes));
            assert_eq!(h.version, Version::V1, "{why}");
            assert_eq!(
                h.len,
                text.len(),
                "{why}: the request after it is not consumed"
            );
            let got = h.addresses.map(|a| (a.source, a.destination));
            assert_eq!(got, want.map(|(s, d)| (sa(s), sa(d))), "{why}");
        }
    }

    #[rustfmt::skip]
    const V1_BAD: &[(&str, &str)] = &[
        ("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\n", "LF without CR"),
        ("PROXY TCP4 203.0.113.7  192.0.2.1 5555 443\r\n", "two spaces"),
        ("PROXY TCP4 203.0.113.7 192.0.2.1 5555\r\n", "a field missing"),
        ("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443 x\r\n", "a field too many"),
        ("PROXY TCP4 2001:db8::7 192.0.2.1 5555 443\r\n", "IPv6 under TCP4"),
        ("PROXY TCP6 203.0.113.7 2001:db8::1 5555 443\r\n", "IPv4 under TCP6"),
        ("PROXY TCP4 203.0.113.7 192.0.2.1 05555 443\r\n", "leading zero"),
        ("PROXY TCP4 203.0.113.7 192.0.2.1 +5555 443\r\n", "signed port"),
        ("PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n", "port above 65535"),
        ("PROXY TCP4 203.0.113.256 192.0.2.1 5555 443\r\n", "octet above 255"),
        ("PROXY UDP4 203.0.113.7 192.0.2.1 5555 443\r\n", "not TCP"),
        ("PROXY tcp4 203.0.113.7 192.0.2.1 5555 443\r\n", "lower case"),
        ("PROXY \r\n", "empty"),
        ("GET / HTTP/1.1\r\n", "no header at all"),
        ("PROXI TCP4\r\n", "a misspelt prefix"),
    ];

    #[test]
    fn v1_invalid_table() {
        for (text, why) in V1_BAD {
            assert!(
                parse(text.as_bytes()).is_err(),
                "{why}: {:?}",
                parse(text.as_bytes())
            );
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN));
        assert_eq!(
            parse(long.as_bytes()),
            Err(Error::V1("no CRLF within 107 bytes"))
        );
    }

    #[test]
    fn v2_valid() {
        let tlv = [0x04, 0x00, 0x03, b'a', b'b', b'c']; // PP2_TYPE_NOOP, 3 bytes
        #[rustfmt::skip]
        let cases: Vec<(Vec<u8>, Want, &str)> = vec![
            (v2_bytes(0x21, 0x11, &INET, &[]), Some(("203.0.113.7:5555", "192.0.2.1:443")), "PROXY TCP over IPv4"),
            (v2_bytes(0x21, 0x21, &inet6(), &[]), Some(("[2001:db8::7]:5555", "[2001:db8::1]:443")), "PROXY TCP over IPv6"),
            (v2_bytes(0x21, 0x11, &INET, &tlv), Some(("203.0.113.7:5555", "192.0.2.1:443")), "TLVs skipped"),
            (v2_bytes(0x20, 0x00, &[], &[]), None, "LOCAL (a health check)"),
            (v2_bytes(0x20, 0x11, &INET, &[]), None, "LOCAL ignores addresses"),
            (v2_bytes(0x20, 0xff, &[], &[]), None, "LOCAL ignores the family byte"),
            (v2_bytes(0x21, 0x00, &[], &[]), None, "PROXY UNSPEC"),
            (v2_bytes(0x21, 0x31, &[0; 216], &[]), None, "PROXY over a UNIX socket"),
        ];
        for (mut bytes, want, why) in cases {
            let len = bytes.len();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let h = header(parse(&bytes));
            assert_eq!(h.version, Version::V2, "{why}");
            assert_eq!(h.len, len, "{why}");
            let got = h.addresses.map(|a| (a.source, a.destination));
            assert_eq!(got, want.map(|(s, d)| (sa(s), sa(d))), "{why}");
        }
    }

    #[test]
    fn v2_invalid() {
        let mut huge = v2_bytes(0x21, 0x11, &INET, &[]);
        huge[14..16].copy_from_slice(&((MAX_V2_LEN - 15) as u16).to_be_bytes());
        #[rustfmt::skip]
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (v2_bytes(0x11, 0x11, &INET, &[]), "version 1 in a v2 header"),
            (v2_bytes(0x22, 0x11, &INET, &[]), "unknown command"),
            (v2_bytes(0x21, 0x41, &INET, &[]), "unknown family"),
            (v2_bytes(0x21, 0x13, &INET, &[]), "unknown transport"),
            (v2_bytes(0x21, 0x12, &INET, &[]), "datagram"),
            (v2_bytes(0x21, 0x10, &INET, &[]), "IP family, unspecified transport"),
            (v2_bytes(0x21, 0x11, &INET[..8], &[]), "address block too short"),
            (v2_bytes(0x21, 0x21, &INET, &[]), "IPv6 family with an IPv4 block"),
            (huge, "longer than stitch reads"),
        ];
        for (bytes, why) in cases {
            assert!(parse(&bytes).is_err(), "{why}: {:?}", parse(&bytes));
        }
        let mut sig = V2_SIGNATURE;
        sig[11] = b'X';
        assert_eq!(parse(&sig), Err(Error::Missing), "a damaged signature");
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n".to_vec();
        let v2 = v2_bytes(0x21, 0x21, &inet6(), &[0x04, 0x00, 0x01, 0x00]);
        for whole in [v1, v2] {
            for n in 0..whole.len() {
                assert_eq!(
                    parse(&whole[..n]),
                    Ok(Parsed::Incomplete),
                    "{n} bytes of {whole:?}"
                );
            }
            assert_eq!(header(parse(&whole)).len, whole.len());
        }
    }

    #[test]
    fn a_bad_start_is_refused_before_the_whole_header_arrives() {
        assert_eq!(parse(b"G"), Err(Error::Missing));
        assert_eq!(parse(b"PROXI"), Err(Error::Missing));
        assert_eq!(
            parse(b"\r\n\r\n\0\r\nQUIT\n\x11"),
            Err(Error::V2("version is not 2"))
        );
    }

    proptest! {
        /// Any bytes: an answer, never a panic, and a header never claims more than it was given.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parsed::Header(h)) = parse(&bytes) {
                prop_assert!(h.len <= bytes.len());
            }
        }

        /// Random v2 bodies after a valid fixed part: same guarantee.
        #[test]
        fn v2_bodies_never_panic(fam in any::<u8>(), cmd in 0x20u8..0x22, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bytes = v2_bytes(cmd, fam, &body, &[]);
            if let Ok(Parsed::Header(h)) = parse(&bytes) {
                prop_assert_eq!(h.len, bytes.len());
            }
        }
    }
}
