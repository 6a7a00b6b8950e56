//! Fuzz the config loader on mutated valid configs: the shipped ones, edited line by line as
//! the fuzz bytes say. Most results are valid TOML with something wrong in a value, a key or
//! a reference, which reaches the validation of every section rather than stopping at TOML
//! syntax. Same contract as `config_parse`: no panic, every refusal names a line.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "config_common.rs"]
mod config_common;

const BASES: [&str; 3] = [
    include_str!("../../conf/stitch.toml"),
    include_str!("../../conf/examples/legacy-backend.toml"),
    include_str!("../../conf/examples/mixed-fleet.toml"),
];

/// The first byte picks a base config; then each edit is `[op, line, line, len]` and `len`
/// bytes of payload.
fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut ops)) = data.split_first() else {
        return;
    };
    let mut lines: Vec<String> = BASES[usize::from(pick) % BASES.len()]
        .lines()
        .map(str::to_string)
        .collect();
    while let [op, lo, hi, len, rest @ ..] = ops {
        let n = usize::from(*len).min(rest.len());
        let payload = String::from_utf8_lossy(&rest[..n]).into_owned();
        ops = &rest[n..];
        if lines.is_empty() {
            lines.push(String::new());
        }
        let at = usize::from(u16::from_le_bytes([*lo, *hi])) % lines.len();
        match op % 6 {
            0 => {
                lines.remove(at);
            }
            1 => {
                let copy = lines[at].clone();
                lines.insert(at, copy);
            }
            2 => {
                // Replace the value after `=`, keeping the key: a wrong value for a real key.
                if let Some(eq) = lines[at].find('=') {
                    lines[at].truncate(eq + 1);
                    lines[at].push(' ');
                    lines[at].push_str(&payload);
                }
            }
            3 => lines.insert(at, payload),
            4 => lines[at] = payload,
            _ => {
                let other = usize::from(*len) % lines.len();
                lines.swap(at, other);
            }
        }
    }
    config_common::check(&lines.join("\n"));
});
