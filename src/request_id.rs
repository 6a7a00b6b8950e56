//! Request ids (`X-Request-Id`): the client's id is kept when it is one value of 1 to
//! [`MAX_LEN`] visible ASCII characters; otherwise stitch makes a random UUID (version 4, as
//! Envoy does). The id goes upstream, back to the client, into the access log and onto the edge
//! span, so the id a user reads off a response finds the trace.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A `static` (not a `const`): the patched insert takes a name with a `'static` address.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept: Heroku's router bound (20 to 200 characters); a UUID is 36, a W3C
/// `traceparent` 55.
pub const MAX_LEN: usize = 200;

/// What happened to the client's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client's id is used.
    Kept,
    /// The client sent none: stitch made one.
    Generated,
    /// The client's id was too long, had invisible characters, or came more than once: stitch
    /// made one instead.
    Replaced,
}

impl Outcome {
    /// Labels of `stitch_request_ids_total{outcome}`, indexed by [`Outcome::index`].
    pub const LABELS: [&'static str; 3] = ["kept", "generated", "replaced"];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// An id can be kept: 1 to [`MAX_LEN`] bytes, each visible ASCII (`!` to `~`).
pub fn is_valid(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= MAX_LEN && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The request's id and how it came about.
pub fn decide(headers: &HeaderMap) -> (HeaderValue, Outcome) {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if is_valid(v.as_bytes()) => (v.clone(), Outcome::Kept),
        (None, _) => (generate(), Outcome::Generated),
        _ => (generate(), Outcome::Replaced),
    }
}

/// A random UUID, version 4 (RFC 9562 §5.4), lowercase.
pub fn generate() -> HeaderValue {
    uuid_v4(rand::random())
}

fn uuid_v4(random: u128) -> HeaderValue {
    let v = (random & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in v.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the dash already there
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    // Hex digits and dashes are always a valid header value. The id is cloned into the
    // upstream request and the answer: owned by one shared allocation from the start, so a
    // clone only counts a reference (a copied buffer would allocate again when first cloned).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(X_REQUEST_ID.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        m
    }

    #[rustfmt::skip]
    const DECIDE: &[(&[&[u8]], Outcome, &str)] = &[
        (&[], Outcome::Generated, "none sent"),
        (&[b"abc-123"], Outcome::Kept, "a short id"),
        (&[b"7f1c2b3a-9d0e-4f5a-8b6c-1d2e3f4a5b6c"], Outcome::Kept, "a UUID"),
        (&[b"x"], Outcome::Kept, "one character"),
        (&[b"a b"], Outcome::Replaced, "a space is not visible"),
        (&[b"a\tb"], Outcome::Replaced, "a tab"),
        (&[b"caf\xc3\xa9"], Outcome::Replaced, "non-ASCII"),
        (&[b""], Outcome::Replaced, "empty"),
        (&[b"a", b"b"], Outcome::Replaced, "sent twice"),
    ];

    #[test]
    fn decide_table() {
        for (values, want, why) in DECIDE {
            let (id, got) = decide(&headers(values));
            assert_eq!(got, *want, "{why}");
            if got == Outcome::Kept {
                assert_eq!(id.as_bytes(), values[0], "{why}");
            } else {
                assert_eq!(id.len(), 36, "{why}");
            }
        }
    }

    #[test]
    fn the_length_bound_is_exact() {
        let at = vec![b'a'; MAX_LEN];
        let over = vec![b'a'; MAX_LEN + 1];
        assert_eq!(decide(&headers(&[&at])).1, Outcome::Kept);
        assert_eq!(decide(&headers(&[&over])).1, Outcome::Replaced);
    }

    #[test]
    fn uuids_have_the_version_and_variant_bits() {
        assert_eq!(
            uuid_v4(0).to_str().unwrap(),
            "00000000-0000-4000-8000-000000000000"
        );
        assert_eq!(
            uuid_v4(u128::MAX).to_str().unwrap(),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(is_valid(a.as_bytes()));
    }
}
