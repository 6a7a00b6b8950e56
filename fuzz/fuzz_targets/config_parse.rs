//! Fuzz the config loader on arbitrary bytes (read as `stitch check` reads a file, lossily
//! where they are not UTF-8): it never panics, and every refusal names a line.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "config_common.rs"]
mod config_common;

fuzz_target!(|data: &[u8]| {
    config_common::check(&String::from_utf8_lossy(data));
});
