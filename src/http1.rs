//! HTTP/1 request heads stitch refuses on top of what Pingora's parser refuses: the framing and
//! `Host` rules of RFC 9112 that Pingora leaves to the application, and stitch's size limits.
//! Pure: [`check`] reads the parsed head; the proxy answers a refusal with its status and a
//! short JSON body, counts and logs it like any request, and closes the connection.

use http::header::{HeaderMap, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Version;

/// Size limits on a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole head as received (request line and header lines): 431 beyond.
    pub max_header_bytes: usize,
    /// Header lines: 431 beyond.
    pub max_headers: usize,
    /// The request target: 414 beyond.
    pub max_uri_bytes: usize,
}

impl Limits {
    /// Envoy's header limits (60 KiB, 100 headers) and nginx's request-line buffer (8 KiB).
    pub const DEFAULT: Limits = Limits {
        max_header_bytes: 60 * 1024,
        max_headers: 100,
        max_uri_bytes: 8 * 1024,
    };
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP/1.1 without `Host` (RFC 9112 §3.2: a server must answer 400).
    MissingHost,
    /// Several `Content-Length` lines. Pingora accepts equal ones but forwards them all, and an
    /// upstream may read either (RFC 9110 §8.6 does not let a sender forward them).
    DuplicateContentLength,
    /// `chunked` applied more than once (RFC 9112 §6.1), which upstreams decode differently.
    ChunkedTwice,
    /// The head exceeds [`Limits::max_header_bytes`].
    HeaderTooLarge,
    /// More header lines than [`Limits::max_headers`].
    TooManyHeaders,
    /// The target exceeds [`Limits::max_uri_bytes`].
    UriTooLong,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::MissingHost | Refusal::DuplicateContentLength | Refusal::ChunkedTwice => 400,
            Refusal::HeaderTooLarge | Refusal::TooManyHeaders => 431,
            Refusal::UriTooLong => 414,
        }
    }

    /// The `error` of the JSON body.
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::MissingHost | Refusal::DuplicateContentLength | Refusal::ChunkedTwice => {
                "bad_request"
            }
            Refusal::HeaderTooLarge | Refusal::TooManyHeaders => "header_too_large",
            Refusal::UriTooLong => "uri_too_long",
        }
    }

    /// The `message` of the JSON body.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingHost => "an HTTP/1.1 request needs a Host header",
            Refusal::DuplicateContentLength => "more than one Content-Length header",
            Refusal::ChunkedTwice => "the chunked transfer coding is applied more than once",
            Refusal::HeaderTooLarge => "the request header is too large",
            Refusal::TooManyHeaders => "the request has too many header fields",
            Refusal::UriTooLong => "the request target is too long",
        }
    }
}

/// Check a parsed HTTP/1 request head: `head_bytes` is its size as received, `target_bytes`
/// the size of its request target. Costs a few header lookups on an ordinary request.
pub fn check(
    version: Version,
    target_bytes: usize,
    head_bytes: usize,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<(), Refusal> {
    if target_bytes > limits.max_uri_bytes {
        return Err(Refusal::UriTooLong);
    }
    if head_bytes > limits.max_header_bytes {
        return Err(Refusal::HeaderTooLarge);
    }
    if headers.len() > limits.max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    if version == Version::HTTP_11 && !headers.contains_key(HOST) {
        return Err(Refusal::MissingHost);
    }
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
        return Err(Refusal::DuplicateContentLength);
    }
    let mut te = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if te.peek().is_some() {
        let chunked = te
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            .count();
        if chunked > 1 {
            return Err(Refusal::ChunkedTwice);
        }
    }
    Ok(())
}

/// Whether a request's declared `Content-Length` exceeds `max` (a 413 before any byte of the
/// body is read). A chunked body is counted as it streams instead.
pub fn declared_body_exceeds(headers: &HeaderMap, max: u64) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const SMALL: Limits = Limits {
        max_header_bytes: 100,
        max_headers: 3,
        max_uri_bytes: 10,
    };
    /// (version, target bytes, head bytes, headers, expected, why)
    type Row = (
        Version,
        usize,
        usize,
        &'static [(&'static str, &'static str)],
        Result<(), Refusal>,
        &'static str,
    );

    const H11: Version = Version::HTTP_11;
    const H10: Version = Version::HTTP_10;

    #[rustfmt::skip]
    #[test]
    fn table() {
        let rows: &[Row] = &[
            (H11, 5, 50, &[("host", "a")], Ok(()), "an ordinary request"),
            (H10, 5, 50, &[], Ok(()), "HTTP/1.0 needs no Host"),
            (H11, 5, 50, &[], Err(Refusal::MissingHost), "HTTP/1.1 without Host"),
            (H11, 5, 50, &[("host", "a"), ("content-length", "3"), ("content-length", "3")], Err(Refusal::DuplicateContentLength), "two equal Content-Lengths"),
            (H11, 5, 50, &[("host", "a"), ("content-length", "3")], Ok(()), "one Content-Length"),
            (H11, 5, 50, &[("host", "a"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")], Err(Refusal::ChunkedTwice), "chunked on two lines"),
            (H11, 5, 50, &[("host", "a"), ("transfer-encoding", "chunked, Chunked")], Err(Refusal::ChunkedTwice), "chunked twice in one list"),
            (H11, 5, 50, &[("host", "a"), ("transfer-encoding", "gzip, chunked")], Ok(()), "another coding before chunked"),
            (H11, 5, 50, &[("host", "a"), ("transfer-encoding", "xchunked, chunked")], Ok(()), "a longer token is not chunked"),
            (H11, 11, 50, &[("host", "a")], Err(Refusal::UriTooLong), "target over the limit"),
            (H11, 10, 50, &[("host", "a")], Ok(()), "target at the limit"),
            (H11, 5, 101, &[("host", "a")], Err(Refusal::HeaderTooLarge), "head over the limit"),
            (H11, 5, 100, &[("host", "a")], Ok(()), "head at the limit"),
            (H11, 5, 50, &[("host", "a"), ("b", "1"), ("c", "1"), ("d", "1")], Err(Refusal::TooManyHeaders), "one header too many"),
            (H11, 5, 50, &[("host", "a"), ("b", "1"), ("c", "1")], Ok(()), "headers at the limit"),
        ];
        for (version, target, head, headers, want, why) in rows {
            assert_eq!(check(*version, *target, *head, &map(headers), &SMALL), *want, "{why}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(Refusal::MissingHost.status(), 400);
        assert_eq!(Refusal::TooManyHeaders.status(), 431);
        assert_eq!(Refusal::HeaderTooLarge.status(), 431);
        assert_eq!(Refusal::UriTooLong.status(), 414);
    }

    #[test]
    fn declared_body() {
        assert!(declared_body_exceeds(&map(&[("content-length", "11")]), 10));
        assert!(!declared_body_exceeds(
            &map(&[("content-length", "10")]),
            10
        ));
        assert!(!declared_body_exceeds(
            &map(&[("transfer-encoding", "chunked")]),
            10
        ));
    }
}
