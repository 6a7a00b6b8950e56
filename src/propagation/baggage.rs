//! W3C baggage (spec §4): validated on the way in, forwarded byte for byte on the way out.
//!
//! Rules implemented here:
//! - Members `key=value[;property...]` joined by `,`, spaces and tabs allowed around members,
//!   keys and values. The key is an RFC 7230 token; the value uses the baggage octets
//!   (printable ASCII minus space, `"`, `,`, `;`, `\`; `=` allowed).
//! - Like dd-trace-py, a member without `=` or with an empty key or value drops the whole
//!   baggage (`malformed`); so do non-ASCII bytes (`non_ascii`).
//! - Limits (dd-trace and W3C 2022): more than 64 members or 8192 bytes drops the whole
//!   baggage (`max_size`): stitch forwards bytes unchanged and never edits a member.
//! - Several `baggage` lines are joined with `,` (the only case that allocates).
//! - Baggage takes no part in the trace-context merge.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::TraceContext;
use super::{trim_ows, Writer};

pub const HEADER: &str = "baggage";

pub(crate) static N_HEADER: HeaderName = HeaderName::from_static(HEADER);

/// Header of the format, for CORS.
pub const HEADERS: [&str; 1] = [HEADER];

pub const MAX_MEMBERS: usize = 64;
pub const MAX_BYTES: usize = 8192;

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn value_octet(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\')
}

/// Most keys a profile's `baggage_tags` may list.
pub const MAX_TAG_KEYS: usize = 16;
/// Longest value copied onto the edge span (bytes, after percent-decoding); longer ones are cut
/// on a character boundary.
pub const MAX_TAG_VALUE: usize = 256;

/// Whether `k` can be a baggage key (an RFC 7230 token).
pub fn is_key(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(tchar)
}

/// The members of `raw` whose key is in `keys`, in `keys` order, each value percent-decoded
/// (spec §3.2.1.1: values are percent-encoded UTF-8; an invalid escape or invalid UTF-8 keeps
/// the bytes as they are, lossily) and cut at [`MAX_TAG_VALUE`] bytes. The first member with
/// a key wins. Properties (`;...`) are not part of the value. At most `keys.len()` tags.
pub fn tags(raw: &[u8], keys: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if keys.is_empty() {
        return out;
    }
    let Ok(raw) = std::str::from_utf8(raw) else {
        return out;
    };
    for key in keys {
        let found = raw.split(',').find_map(|member| {
            let kv = member.split(';').next().unwrap_or("");
            let (k, v) = kv.split_once('=')?;
            (trim_ows(k) == key).then(|| trim_ows(v))
        });
        if let Some(v) = found {
            out.push((key.clone(), cut(percent_decode(v))));
        }
    }
    out
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cut(mut v: String) -> String {
    if v.len() > MAX_TAG_VALUE {
        let mut end = MAX_TAG_VALUE;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v.truncate(end);
    }
    v
}

/// Check one baggage value (possibly several lines joined). Returns the member count.
fn validate(s: &str) -> Result<usize, &'static str> {
    if s.len() > MAX_BYTES {
        return Err("max_size");
    }
    if !s.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)) {
        return Err("non_ascii");
    }
    let mut n = 0;
    for member in s.split(',') {
        let member = trim_ows(member);
        let kv = member.split(';').next().unwrap_or("");
        let (k, v) = kv.split_once('=').ok_or("malformed")?;
        let (k, v) = (trim_ows(k), trim_ows(v));
        if k.is_empty() || v.is_empty() || !k.bytes().all(tchar) || !v.bytes().all(value_octet) {
            return Err("malformed");
        }
        n += 1;
        if n > MAX_MEMBERS {
            return Err("max_size");
        }
    }
    Ok(n)
}

/// The raw baggage to forward. `Ok(None)`: absent.
pub fn extract(headers: &HeaderMap) -> Result<Option<HeaderValue>, &'static str> {
    let mut all = headers.get_all(&N_HEADER).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    let Some(second) = all.next() else {
        let s = first.to_str().map_err(|_| "non_ascii")?;
        validate(s)?;
        return Ok(Some(first.clone()));
    };
    let mut joined: Vec<u8> = Vec::with_capacity(first.len() + second.len() + 1);
    for (i, v) in std::iter::once(first)
        .chain(std::iter::once(second))
        .chain(all)
        .enumerate()
    {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
        if joined.len() > MAX_BYTES {
            return Err("max_size");
        }
    }
    let s = std::str::from_utf8(&joined).map_err(|_| "non_ascii")?;
    validate(s)?;
    HeaderValue::from_bytes(&joined)
        .map(Some)
        .map_err(|_| "non_ascii")
}

/// Write `ctx.baggage` unchanged.
pub fn inject(ctx: &TraceContext, out: &mut HeaderMap) {
    if let Some(b) = &ctx.baggage {
        out.insert(N_HEADER.clone(), b.clone());
    }
}

pub(crate) fn write(ctx: &TraceContext, w: &mut Writer) {
    if let Some(b) = &ctx.baggage {
        w.value(&N_HEADER, b.clone());
    }
}

#[cfg(test)]
mod tests {
    #[rustfmt::skip]
    #[test]
    fn tags_take_listed_keys_decoded_and_bounded() {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        type Row<'a> = (&'a str, &'a [&'a str], Vec<(String, String)>, &'a str);
        let rows: [Row; 7] = [
            ("session.id=abc,user.id=42", &["session.id"], vec![pair("session.id", "abc")], "only listed keys"),
            ("user.id=42, session.id = abc ;p=1", &["session.id", "user.id"], vec![pair("session.id", "abc"), pair("user.id", "42")], "keys order, OWS and properties"),
            ("user.id=J%C3%BCrgen%20K%2C", &["user.id"], vec![pair("user.id", "Jürgen K,")], "percent-decoded UTF-8"),
            ("user.id=100%25,x=%zz%4", &["user.id", "x"], vec![pair("user.id", "100%"), pair("x", "%zz%4")], "bad escapes kept"),
            ("a=1,a=2", &["a"], vec![pair("a", "1")], "first member wins"),
            ("session.id=abc", &[], vec![], "no keys, no tags"),
            ("account.id=7", &["session.id"], vec![], "absent key"),
        ];
        for (raw, ks, want, why) in rows {
            assert_eq!(tags(raw.as_bytes(), &keys(ks)), want, "{why}");
        }
        let long = format!("k={}", "%C3%A9".repeat(200));
        let got = tags(long.as_bytes(), &keys(&["k"]));
        assert_eq!(got[0].1.len(), MAX_TAG_VALUE, "cut on a character boundary");
        assert!(got[0].1.chars().all(|c| c == 'é'));
    }

    use super::*;
    use crate::propagation::{headers, Pairs};

    #[test]
    fn extract_table() {
        let too_many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        let too_many = too_many.join(",");
        let too_big = format!("k={}", "v".repeat(8200));
        type Row<'a> = (&'a str, Pairs<'a>, Result<Option<&'a str>, &'a str>);
        let rows: Vec<Row> = vec![
            ("§4 absent", vec![], Ok(None)),
            (
                "§8 RUM shape forwarded byte for byte",
                vec![(
                    "baggage",
                    "session.id=d7a5c1e2-3f4b-4c5d-8e9f-0a1b2c3d4e5f,user.id=42,account.id=acme",
                )],
                Ok(Some(
                    "session.id=d7a5c1e2-3f4b-4c5d-8e9f-0a1b2c3d4e5f,user.id=42,account.id=acme",
                )),
            ),
            (
                "§4 percent escapes kept as sent",
                vec![("baggage", "user=a%40b")],
                Ok(Some("user=a%40b")),
            ),
            (
                "§4 properties and OWS allowed, = in value",
                vec![("baggage", " k = v=1 ;prop=1 , k2=v2")],
                Ok(Some(" k = v=1 ;prop=1 , k2=v2")),
            ),
            (
                "§4 lines joined with ,",
                vec![("baggage", "a=1"), ("baggage", "b=2")],
                Ok(Some("a=1,b=2")),
            ),
            (
                "§4 member without = drops all",
                vec![("baggage", "a=1,b")],
                Err("malformed"),
            ),
            (
                "§4 empty value drops all",
                vec![("baggage", "a=1,b=")],
                Err("malformed"),
            ),
            (
                "§4 empty key drops all",
                vec![("baggage", "=1")],
                Err("malformed"),
            ),
            (
                "§4 space inside value not allowed",
                vec![("baggage", "a=b c")],
                Err("malformed"),
            ),
            (
                "§4 over 64 members",
                vec![("baggage", too_many.as_str())],
                Err("max_size"),
            ),
            (
                "§4 over 8192 bytes",
                vec![("baggage", too_big.as_str())],
                Err("max_size"),
            ),
            (
                "non-ASCII invalid",
                vec![("baggage", "a=\u{e9}")],
                Err("non_ascii"),
            ),
        ];
        for (rule, hs, exp) in rows {
            let got = extract(&headers(&hs));
            let got = got.map(|o| o.map(|v| v.to_str().unwrap().to_owned()));
            let got: Result<Option<&str>, &str> = match &got {
                Ok(o) => Ok(o.as_deref()),
                Err(e) => Err(e),
            };
            assert_eq!(got, exp, "{rule}");
        }
    }
}
