//! The edge sampler against the real dd-trace-py sampler: the same keep/drop for every trace
//! id and rate, and the same priority and `_dd.p.dm` as dd-trace records.
//!
//! Needs the peers venv (`.ci/setup test` creates `target/peers-venv` with ddtrace 4.16.0);
//! `STITCH_PEERS_PYTHON` may point at another python with ddtrace installed.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use stitch::propagation::ExtractBehavior;
use stitch::sampling::{
    decide, sampled_by_rate, InjectionMode, MissingDecision, SamplingInput, SamplingPolicy, Source,
    Trust, KNUTH_FACTOR,
};

const RATES: &[f64] = &[0.0, 0.05, 0.1, 0.5, 0.8, 0.85, 0.99, 1.0];

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("STITCH_PEERS_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `.ci/setup test` to create the venv of real peers (ddtrace from tests/peers/requirements.txt), or set STITCH_PEERS_PYTHON",
        p.display()
    );
    p
}

/// splitmix64: a fixed, seeded sequence of 64-bit ids.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Multiplicative inverse of an odd number modulo 2^64 (Newton's iteration).
fn inverse(a: u64) -> u64 {
    let mut x: u64 = 1;
    for _ in 0..7 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    assert_eq!(a.wrapping_mul(x), 1);
    x
}

/// Trace ids as (full 128-bit id for dd-trace, low 64 bits for stitch).
fn trace_ids() -> Vec<(u128, u64)> {
    let mut ids: Vec<u128> = vec![
        0,
        1,
        2,
        3,
        u64::MAX as u128,
        u64::MAX as u128 - 1,
        1 << 63,
        (1 << 63) - 1,
        1_234_567_890_123_456_789,                 // spec id A
        7_277_407_061_855_694_839,                 // low half of spec id B
        11_803_532_876_627_986_230,                // low half of spec id C
        6_255_592_339_373_587_297,                 // RUM example, spec §8
        0x640c_fd8d_0000_0000_64fe_8b2a_57d3_eff7, // spec id B, 128-bit
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, // spec id C, 128-bit
        u128::MAX,
    ];
    // Ids whose hash lies exactly on, just under and just over each rate's threshold: the
    // place where comparing in float64 instead of exactly would differ.
    let inv = inverse(KNUTH_FACTOR);
    for &rate in RATES {
        let floor = (rate * u64::MAX as f64).min(u64::MAX as f64) as u64;
        for hash in [
            floor.wrapping_sub(1),
            floor,
            floor.wrapping_add(1),
            floor.wrapping_add(2),
        ] {
            ids.push(hash.wrapping_mul(inv) as u128);
        }
    }
    let mut state = 0x5717_C4ED_0000_0005;
    for i in 0..1100 {
        let low = splitmix(&mut state);
        let high = if i % 10 == 0 { splitmix(&mut state) } else { 0 };
        ids.push(((high as u128) << 64) | low as u128);
    }
    ids.into_iter().map(|id| (id, id as u64)).collect()
}

fn ask_ddtrace(ids: &[(u128, u64)]) -> serde_json::Value {
    let list: Vec<String> = ids.iter().map(|(full, _)| format!("\"{full}\"")).collect();
    let rates: Vec<String> = RATES.iter().map(|r| format!("{r:?}")).collect();
    let request = format!(
        "{{\"trace_ids\":[{}],\"rates\":[{}]}}",
        list.join(","),
        rates.join(",")
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ddtrace_sampler.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the ddtrace peer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write to the ddtrace peer");
    let out = child.wait_with_output().expect("ddtrace peer output");
    assert!(
        out.status.success(),
        "ddtrace peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ddtrace peer JSON")
}

fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

fn strs(v: &serde_json::Value) -> Vec<Option<String>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

#[test]
fn edge_sampler_agrees_with_ddtrace() {
    let ids = trace_ids();
    assert!(ids.len() >= 1000);
    let answer = ask_ddtrace(&ids);
    assert_eq!(answer["version"], "4.16.0", "peer runs another ddtrace");
    let rule = answer["rule"].as_array().expect("rule results");
    assert_eq!(rule.len(), RATES.len());

    let mut compared = 0usize;
    let mut mismatches = Vec::new();
    for (r, &rate) in RATES.iter().enumerate() {
        let res = &rule[r];
        assert_eq!(res["rate"].as_f64(), Some(rate));
        let keep: Vec<bool> = res["keep"]
            .as_str()
            .expect("keep string")
            .bytes()
            .map(|b| b == b'1')
            .collect();
        assert_eq!(keep.len(), ids.len());
        let (prio, dm) = (ints(&res["priority"]), strs(&res["dm"]));
        let (def_prio, def_dm) = (
            ints(&answer["default"]["priority"]),
            strs(&answer["default"]["dm"]),
        );
        let kept = keep.iter().filter(|k| **k).count();
        if rate > 0.0 && rate < 1.0 {
            assert!(kept > 0 && kept < ids.len(), "rate {rate}: kept {kept}");
        }

        let policy = SamplingPolicy {
            injection: InjectionMode::Sampled,
            sample_rate: rate,
            missing_decision: MissingDecision::Drop,
            trust: Trust::Any,
            max_incoming_priority: 2,
        };
        for (i, &(full, low)) in ids.iter().enumerate() {
            compared += 1;
            let ours = sampled_by_rate(low, rate);
            if ours != keep[i] {
                mismatches.push(format!(
                    "id {full} rate {rate}: stitch {ours}, ddtrace {}",
                    keep[i]
                ));
            }
            // A new trace decided at the edge: dd-trace's rule sampler for rates below 1,
            // its default sampler for 1.0 (see the sampling module doc).
            let d = decide(
                &policy,
                &SamplingInput {
                    incoming_priority: None,
                    has_context: false,
                    origin_allowed: false,
                    client: None,
                    trace_id_low: low,
                    behavior: ExtractBehavior::Continue,
                },
            );
            assert_eq!(d.source, Source::Edge);
            let (want_p, want_dm) = if rate < 1.0 {
                (prio[i], dm[i].clone())
            } else {
                (def_prio[i], def_dm[i].clone())
            };
            if (i64::from(d.priority), d.decision_maker.map(str::to_string))
                != (want_p, want_dm.clone())
            {
                mismatches.push(format!(
                    "id {full} rate {rate}: stitch priority {} dm {:?}, ddtrace {want_p} {want_dm:?}",
                    d.priority, d.decision_maker
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} decisions differ from ddtrace, first: {:#?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    assert!(compared >= 8000, "compared only {compared}");
}
