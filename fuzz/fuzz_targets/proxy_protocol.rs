//! Fuzz the PROXY protocol parser: any bytes get an answer, never a panic, and a header never
//! claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(stitch::proxy_protocol::Parsed::Header(h)) = stitch::proxy_protocol::parse(data) {
        assert!(h.len <= data.len());
    }
});
