//! Fuzz the CORS origin parsers: `allowed_origins` entries as the config gives them (one per
//! line before the first NUL) and the `Origin` header (the bytes after it). Never a panic; an
//! exact entry admits itself as written, and a wildcard entry admits a subdomain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stitch::cors::{CorsPolicy, CorsSpec, OriginRule};

fuzz_target!(|data: &[u8]| {
    let (written, origin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let entries: Vec<String> = String::from_utf8_lossy(written)
        .lines()
        .take(16)
        .map(str::to_string)
        .collect();
    let spec = CorsSpec {
        allowed_origins: entries.clone(),
        ..CorsSpec::default()
    };
    let Ok(policy) = CorsPolicy::new(spec) else {
        return;
    };
    let _ = policy.allows_origin(origin);
    for (w, rule) in entries.iter().zip(policy.origin_rules()) {
        let w = w.trim();
        match rule {
            OriginRule::Exact { .. } => {
                assert!(policy.allows_origin(w.as_bytes()), "{w:?} does not admit itself")
            }
            OriginRule::Wildcard { .. } => {
                let sub = w.replacen("://*.", "://a.", 1);
                assert!(policy.allows_origin(sub.as_bytes()), "{w:?} does not admit {sub:?}");
                let apex = w.replacen("://*.", "://", 1);
                let only = CorsPolicy::new(CorsSpec {
                    allowed_origins: vec![w.to_string()],
                    ..CorsSpec::default()
                })
                .expect("a single entry that compiled in a list compiles alone");
                assert!(!only.allows_origin(apex.as_bytes()), "{w:?} admits its apex {apex:?}");
            }
            _ => {}
        }
    }
});
