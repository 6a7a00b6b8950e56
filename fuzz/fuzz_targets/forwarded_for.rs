//! Fuzz the X-Forwarded-For walk and the forwarding headers built from it: each line is one
//! X-Forwarded-For value; the peer is trusted, and so is every address in 10.0.0.0/8, so the
//! walk goes as deep as the input lets it.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stitch::forwarded::{self, ForwardedHeader, Hop, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(forwarded::X_FORWARDED_FOR, v);
        }
    }
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let client = forwarded::resolve("10.0.0.1".parse().unwrap(), &headers, &trusted);
    let hop = Hop {
        client: &client,
        scheme: "https",
        host: Some(HeaderValue::from_static("shop.example")),
    };
    let edits = forwarded::edits(&ForwardedHeader::ALL, &hop, &headers);
    let mut out = headers.clone();
    forwarded::apply(edits, &mut out);
    // What goes upstream starts with the client stitch found.
    let sent = out.get(forwarded::X_FORWARDED_FOR).unwrap();
    assert!(sent.to_str().unwrap().starts_with(&client.ip.to_string()));
});
