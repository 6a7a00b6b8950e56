//! Differential test: stitch against the real dd-trace-py 4.16 HTTP propagator (styles
//! datadog,tracecontext,b3multi,b3) on a generated corpus of header sets, once per extraction
//! setting dd-trace has a variable for:
//! - the default merge, and `extract_first` (`DD_TRACE_PROPAGATION_EXTRACT_FIRST`): stitch's
//!   `extract` against the context dd-trace-py extracts, random trace-id flag included;
//! - `extract_behavior` = `restart` (alone and with `extract_first`) and `ignore`
//!   (`DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT`, with `baggage` among the styles): stitch's
//!   `edge::plan` against what dd-trace-py hands the new root span: whether the trace is
//!   continued, its span links and its baggage.
//!
//! The venv with the real peers is made by `.ci/setup test` at `target/peers-venv`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use stitch::config::Profile;
use stitch::edge;
use stitch::propagation::{
    extract_with, ExtractBehavior, ExtractOptions, Format, SpanLink, TracestateInvalid,
    DEFAULT_INJECT,
};
use stitch::sampling::SamplingPolicy;

const STYLES: &[Format] = &[
    Format::Datadog,
    Format::TraceContext,
    Format::B3Multi,
    Format::B3,
];

/// Case kinds where stitch deliberately differs from dd-trace-py, and why.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "w3c_rum_s0_sampled",
        "spec §5: dd-trace-py takes s:0 over flag 01 when o:rum is present; every other tracer (and stitch) uses the flag",
    ),
    (
        "w3c_rum_no_s",
        "spec §5: dd-trace-py leaves the priority unset for flag 01 + dd=o:rum without s; stitch uses the flag",
    ),
    (
        "b3_deny_only",
        "spec §3: `b3: 0` must be honoured; dd-trace-py 4.16 reads 0 then starts a new trace with 1 (stitch reports no context and new_trace_priority=0)",
    ),
    (
        "b3multi_uppercase",
        "spec §3: B3 ids are lowercase hex; dd-trace-py parses any case with int(x, 16)",
    ),
    (
        "b3multi_true",
        "spec §3: stitch accepts the old `true` in X-B3-Sampled as 1; dd-trace-py ignores it",
    ),
    (
        "dd_no_parent_w3c_same_trace",
        "dd-trace-py 4.16 bug: Datadog headers without a parent id plus a traceparent of the same trace and no `p:` make it format None as `_dd.parent_id`; the exception drops the whole context. stitch continues the trace with the traceparent parent (spec §6)",
    ),
    (
        "b3_bad_sampling",
        "spec §3: stitch rejects a b3 sampling state other than 0/1/d; dd-trace-py keeps the ids and drops the state",
    ),
];

/// Small deterministic PRNG (xorshift64*), fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn id64(&mut self) -> u64 {
        self.next().max(1)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

struct Case {
    kind: &'static str,
    headers: Vec<(String, String)>,
}

struct Ids {
    high: u64,
    low: u64,
    parent: u64,
}

fn ids(r: &mut Rng) -> Ids {
    Ids {
        high: if r.chance(50) { r.id64() } else { 0 },
        low: r.id64(),
        parent: r.id64(),
    }
}

fn dd_headers(r: &mut Rng, i: &Ids, h: &mut Vec<(String, String)>) {
    h.push(("x-datadog-trace-id".into(), i.low.to_string()));
    if !r.chance(10) {
        h.push(("x-datadog-parent-id".into(), i.parent.to_string()));
    }
    if !r.chance(20) {
        let p = r.pick(&["-1", "0", "1", "2"]);
        h.push(("x-datadog-sampling-priority".into(), p.into()));
    }
    if r.chance(50) {
        let o = r.pick(&["rum", "synthetics", "synthetics-browser", "lambda"]);
        h.push(("x-datadog-origin".into(), o.into()));
    }
    let mut tags = Vec::new();
    if i.high != 0 {
        tags.push(format!("_dd.p.tid={:016x}", i.high));
    }
    if r.chance(50) {
        tags.push(format!("_dd.p.dm=-{}", r.pick(&["0", "1", "3", "4", "11"])));
    }
    if r.chance(20) {
        tags.push(format!("_dd.p.usr.id=u{}", r.below(1000)));
    }
    if r.chance(10) {
        tags.push("other=x".into());
    }
    if !tags.is_empty() {
        h.push(("x-datadog-tags".into(), tags.join(",")));
    }
}

fn w3c_headers(r: &mut Rng, i: &Ids, h: &mut Vec<(String, String)>, sampled: bool) {
    // Half the traceparents carry the Level 2 random trace-id flag (0x02).
    let flags = match (sampled, r.chance(50)) {
        (true, true) => "03",
        (true, false) => "01",
        (false, true) => "02",
        (false, false) => "00",
    };
    h.push((
        "traceparent".into(),
        format!("00-{:016x}{:016x}-{:016x}-{flags}", i.high, i.low, i.parent),
    ));
    if r.chance(80) {
        let mut dd = Vec::new();
        // Keep s consistent with the flag except where a case asks otherwise.
        if r.chance(80) {
            dd.push(format!(
                "s:{}",
                if sampled {
                    r.pick(&["1", "2"])
                } else {
                    r.pick(&["0", "-1"])
                }
            ));
        }
        if r.chance(50) {
            dd.push(format!("o:{}", r.pick(&["synthetics", "lambda"])));
        }
        if r.chance(50) {
            dd.push(format!("p:{:016x}", r.id64()));
        }
        if r.chance(50) {
            dd.push(format!("t.dm:-{}", r.pick(&["0", "4"])));
        }
        if r.chance(20) {
            dd.push("t.usr.id:dXNlcjE~".into());
        }
        let mut members = Vec::new();
        if !dd.is_empty() {
            members.push(format!("dd={}", dd.join(";")));
        }
        if r.chance(50) {
            members.push("congo=t61rcWkgMzE".into());
        }
        if r.chance(30) {
            members.push("rojo=00f067aa0ba902b7".into());
        }
        if !members.is_empty() {
            h.push(("tracestate".into(), members.join(",")));
        }
    }
}

fn trace_hex(i: &Ids) -> String {
    if i.high == 0 {
        format!("{:016x}", i.low)
    } else {
        format!("{:016x}{:016x}", i.high, i.low)
    }
}

fn b3multi_headers(r: &mut Rng, i: &Ids, h: &mut Vec<(String, String)>) {
    h.push(("x-b3-traceid".into(), trace_hex(i)));
    h.push(("x-b3-spanid".into(), format!("{:016x}", i.parent)));
    match r.below(4) {
        0 => h.push(("x-b3-sampled".into(), "1".into())),
        1 => h.push(("x-b3-sampled".into(), "0".into())),
        2 => h.push(("x-b3-flags".into(), "1".into())),
        _ => {}
    }
}

fn b3_headers(r: &mut Rng, i: &Ids, h: &mut Vec<(String, String)>) {
    let s = r.pick(&["", "-1", "-0", "-d"]);
    let parent = if r.chance(30) {
        format!("-{:016x}", r.id64())
    } else {
        String::new()
    };
    let parent = if s.is_empty() { String::new() } else { parent };
    h.push((
        "b3".into(),
        format!("{}-{:016x}{s}{parent}", trace_hex(i), i.parent),
    ));
}

fn corpus() -> Vec<Case> {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut cases = Vec::new();
    let mut add = |kind: &'static str, headers: Vec<(String, String)>| {
        cases.push(Case { kind, headers });
    };
    for _ in 0..40 {
        let i = ids(&mut r);
        let mut h = Vec::new();
        dd_headers(&mut r, &i, &mut h);
        add("dd_valid", h);

        let mut h = Vec::new();
        let sampled = r.chance(50);
        w3c_headers(&mut r, &i, &mut h, sampled);
        add("w3c_valid", h);

        let mut h = Vec::new();
        b3multi_headers(&mut r, &i, &mut h);
        add("b3multi_valid", h);

        let mut h = Vec::new();
        b3_headers(&mut r, &i, &mut h);
        add("b3_valid", h);

        // RUM's default shape: both formats, same 64-bit id and parent.
        let rum = Ids {
            high: 0,
            low: r.id64(),
            parent: r.id64() >> 1,
        };
        let keep = r.chance(70);
        let p = if keep { "1" } else { "0" };
        add(
            "rum_default",
            vec![
                ("x-datadog-origin".into(), "rum".into()),
                ("x-datadog-parent-id".into(), rum.parent.to_string()),
                ("x-datadog-sampling-priority".into(), p.into()),
                ("x-datadog-trace-id".into(), rum.low.to_string()),
                (
                    "traceparent".into(),
                    format!(
                        "00-{:032x}-{:016x}-0{}",
                        rum.low,
                        rum.parent,
                        if keep { 1 } else { 0 }
                    ),
                ),
                ("tracestate".into(), format!("dd=s:{p};o:rum")),
            ],
        );

        // Same trace in datadog and tracecontext, parents may differ, p: may be there.
        let mut h = Vec::new();
        dd_headers(&mut r, &i, &mut h);
        let other = Ids {
            high: i.high,
            low: i.low,
            parent: if r.chance(50) { i.parent } else { r.id64() },
        };
        let sampled = r.chance(50);
        w3c_headers(&mut r, &other, &mut h, sampled);
        let dd_parent = h.iter().any(|(k, _)| k == "x-datadog-parent-id");
        let has_p = h.iter().any(|(k, v)| k == "tracestate" && v.contains("p:"));
        if dd_parent || has_p {
            add("dd_w3c_same_trace", h);
        } else {
            add("dd_no_parent_w3c_same_trace", h);
        }

        // Different traces: link.
        let mut h = Vec::new();
        dd_headers(&mut r, &i, &mut h);
        let j = ids(&mut r);
        let sampled = r.chance(50);
        w3c_headers(&mut r, &j, &mut h, sampled);
        if r.chance(50) {
            let k = ids(&mut r);
            b3multi_headers(&mut r, &k, &mut h);
        }
        add("dd_w3c_different", h);

        // 64-bit datadog vs 128-bit W3C with the same low half (§10 case 10).
        let wide = Ids {
            high: r.id64(),
            low: i.low,
            parent: i.parent,
        };
        let narrow = Ids {
            high: 0,
            low: i.low,
            parent: i.parent,
        };
        let mut h = Vec::new();
        dd_headers(&mut r, &narrow, &mut h);
        h.retain(|(k, _)| k != "x-datadog-tags");
        w3c_headers(&mut r, &wide, &mut h, true);
        add("dd64_w3c128", h);

        // b3 styles after datadog/tracecontext.
        let mut h = Vec::new();
        w3c_headers(&mut r, &i, &mut h, true);
        let j = if r.chance(50) {
            Ids {
                high: i.high,
                low: i.low,
                parent: r.id64(),
            }
        } else {
            ids(&mut r)
        };
        b3multi_headers(&mut r, &j, &mut h);
        b3_headers(&mut r, &j, &mut h);
        add("w3c_b3_mixed", h);

        // Malformed Datadog, possibly with a valid traceparent behind it.
        let mut h = Vec::new();
        let bad = r.pick(&["0", "abc", "18446744073709551616", "", "-1", "12a"]);
        h.push(("x-datadog-trace-id".into(), bad.into()));
        h.push(("x-datadog-parent-id".into(), i.parent.to_string()));
        if r.chance(60) {
            w3c_headers(&mut r, &i, &mut h, true);
        }
        add("dd_bad_trace_id", h);

        let mut h = Vec::new();
        dd_headers(&mut r, &i, &mut h);
        h.retain(|(k, _)| k != "x-datadog-tags");
        let tags = match r.below(6) {
            0 => format!("_dd.p.tid={:016X}", r.id64()),
            1 => "_dd.p.tid=0000000000000000".into(),
            2 => "_dd.p.dm=1,_dd.p.usr.id=x".into(),
            3 => format!("_dd.p.tid={:016x},_dd.p.x={}", r.id64(), "a".repeat(520)),
            4 => "_dd.p.dm=-4,_dd.p.x=".into(),
            _ => "_dd.p.dm=-4, _dd.p.x=y".into(),
        };
        h.push(("x-datadog-tags".into(), tags));
        add("dd_bad_tags", h);

        let mut h = Vec::new();
        dd_headers(&mut r, &i, &mut h);
        h.retain(|(k, _)| k != "x-datadog-sampling-priority" && k != "x-datadog-parent-id");
        let (k, v) = if r.chance(50) {
            ("x-datadog-parent-id", r.pick(&["abc", "1.5", "0x10"]))
        } else {
            (
                "x-datadog-sampling-priority",
                r.pick(&["abc", "1.0", "high"]),
            )
        };
        h.push((k.into(), v.into()));
        add("dd_bad_other", h);

        // Malformed traceparent with a tracestate that must be ignored.
        let tp = match r.below(7) {
            0 => format!(
                "00-{:016X}{:016X}-{:016x}-01",
                i.high,
                i.low.max(0xa),
                i.parent
            ),
            1 => format!("ff-{:016x}{:016x}-{:016x}-01", i.high, i.low, i.parent),
            2 => format!("00-{:032x}-{:016x}-01", 0, i.parent),
            3 => format!("00-{:016x}{:016x}-{:016x}-01", i.high, i.low, 0),
            4 => format!("00-{:016x}{:016x}-{:016x}-01-00", i.high, i.low, i.parent),
            5 => format!("00-{:016x}{:016x}-{:016x}-0", i.high, i.low, i.parent),
            _ => format!("00-{:016x}{:016x}-{:016x}-zz", i.high, i.low, i.parent),
        };
        let mut h = vec![
            ("traceparent".into(), tp),
            ("tracestate".into(), "dd=s:2;o:rum,congo=x".into()),
        ];
        if r.chance(40) {
            let other = ids(&mut r);
            dd_headers(&mut r, &other, &mut h);
        }
        add("w3c_bad", h);

        // Higher traceparent versions.
        let tail = r.pick(&["", "-what-the-future-will-be-like"]);
        add(
            "w3c_future_version",
            vec![(
                "traceparent".into(),
                format!(
                    "cc-{:016x}{:016x}-{:016x}-{}{tail}",
                    i.high,
                    i.low,
                    i.parent,
                    r.pick(&["09", "00", "01", "0b", "fe"])
                ),
            )],
        );

        // §5 flag/s disagreements (without o:rum).
        let sampled = r.chance(50);
        let s = r.pick(&["-1", "0", "1", "2"]);
        add(
            "w3c_flag_s",
            vec![
                (
                    "traceparent".into(),
                    format!(
                        "00-{:016x}{:016x}-{:016x}-0{}",
                        i.high,
                        i.low,
                        i.parent,
                        u8::from(sampled)
                    ),
                ),
                ("tracestate".into(), format!("dd=s:{s};t.dm:-4")),
            ],
        );

        // Deliberate differences (listed in DELIBERATE).
        add(
            "w3c_rum_s0_sampled",
            vec![
                (
                    "traceparent".into(),
                    format!("00-{:032x}-{:016x}-01", i.low, i.parent),
                ),
                ("tracestate".into(), "dd=s:0;o:rum".into()),
            ],
        );
        add(
            "w3c_rum_no_s",
            vec![
                (
                    "traceparent".into(),
                    format!("00-{:032x}-{:016x}-01", i.low, i.parent),
                ),
                ("tracestate".into(), "dd=o:rum".into()),
            ],
        );
        add("b3_deny_only", vec![("b3".into(), "0".into())]);
        add(
            "b3multi_uppercase",
            vec![
                ("x-b3-traceid".into(), format!("{:016X}", i.low.max(0xa))),
                ("x-b3-spanid".into(), format!("{:016x}", i.parent)),
            ],
        );
        add(
            "b3multi_true",
            vec![
                ("x-b3-traceid".into(), format!("{:016x}", i.low)),
                ("x-b3-spanid".into(), format!("{:016x}", i.parent)),
                ("x-b3-sampled".into(), "true".into()),
            ],
        );
        add(
            "b3_bad_sampling",
            vec![("b3".into(), format!("{:016x}-{:016x}-x", i.low, i.parent))],
        );
    }
    // Baggage on every third case: read only where a setting lists it (the behaviour runs).
    for (n, c) in cases.iter_mut().enumerate() {
        if n % 3 == 0 {
            c.headers
                .push(("baggage".into(), format!("session.id=s{n},user.id=u{n}")));
        }
    }
    cases
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("generated name"),
            HeaderValue::from_str(v).expect("generated value"),
        );
    }
    h
}

fn link_json(l: &SpanLink) -> Value {
    let attr = |k: &str| {
        l.attributes
            .iter()
            .find(|(a, _)| *a == k)
            .map(|(_, v)| v.clone())
    };
    json!({
        "trace_id": l.trace_id.to_string(),
        "span_id": l.span_id.to_string(),
        "flags": u8::from(l.sampled == Some(true)),
        "tracestate": l.tracestate,
        "reason": attr("reason"),
        "context_headers": attr("context_headers"),
    })
}

/// Baggage as dd-trace-py decodes it (the corpus has no percent-escapes).
fn baggage_json(b: Option<&HeaderValue>) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(b) = b.and_then(|b| b.to_str().ok()) {
        for member in b.split(',') {
            if let Some((k, v)) = member.split_once('=') {
                m.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
            }
        }
    }
    Value::Object(m)
}

/// stitch's extraction, in the Python script's shape.
fn stitch_view(pairs: &[(String, String)], opts: &ExtractOptions) -> Value {
    let ext = extract_with(&header_map(pairs), STYLES, opts);
    match ext.context {
        None => json!({"trace_id": null}),
        Some(c) => {
            let tags: serde_json::Map<String, Value> = c
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({
                "trace_id": c.trace_id.to_string(),
                "parent_id": c.parent_id.to_string(),
                "priority": c.sampling_priority,
                "origin": c.origin,
                "tags": tags,
                "last_parent": c.last_parent_id.map(|p| format!("{p:016x}")),
                "random": c.random_trace_id,
                "baggage": baggage_json(c.baggage.as_ref()),
                "links": c.links.iter().map(link_json).collect::<Vec<_>>(),
            })
        }
    }
}

/// stitch's plan under `behavior`: continued or not (the trace id when continued), the new
/// trace's links and baggage.
fn stitch_plan(pairs: &[(String, String)], behavior: ExtractBehavior, first: bool) -> Value {
    let mut extract = STYLES.to_vec();
    extract.push(Format::Baggage);
    let profile = Profile {
        name: "diff".into(),
        extract,
        inject: DEFAULT_INJECT.to_vec(),
        sampling: SamplingPolicy::default(),
        tracestate_invalid: TracestateInvalid::DropMember,
        extract_first: first,
        extract_behavior: behavior,
        baggage_tags: Profile::default_baggage_tags(),
    };
    let plan = edge::plan(&profile, &header_map(pairs), None, false);
    json!({
        "trace_id": plan.continued.then(|| plan.context.trace_id.to_string()),
        "links": plan.context.links.iter().map(link_json).collect::<Vec<_>>(),
        "baggage": baggage_json(plan.context.baggage.as_ref()),
    })
}

/// dd-trace-py's answer, normalised: no parent = "0", `_dd.parent_id` of zeros = none.
fn normalise_python(mut v: Value) -> Value {
    if v["trace_id"].is_null() {
        return json!({"trace_id": null});
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        if o.get("parent_id").is_some_and(Value::is_null) {
            o.insert("parent_id".into(), json!("0"));
        }
        if o.get("last_parent").and_then(Value::as_str) == Some("0000000000000000") {
            o.insert("last_parent".into(), Value::Null);
        }
    }
    v
}

/// dd-trace-py's answer to a behaviour setting: the new root span's parent (none under restart
/// and ignore), links and baggage.
fn python_plan(v: &Value) -> Value {
    json!({"trace_id": v["trace_id"], "links": v["links"], "baggage": v["baggage"]})
}

/// One setting of the differential run.
struct Setting {
    name: &'static str,
    /// Arguments of tests/peers/ddtrace_extract.py.
    args: &'static [&'static str],
    extract_first: bool,
    /// `None`: compare the extracted context; `Some`: compare the plan under this behaviour.
    behavior: Option<ExtractBehavior>,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "continue (default merge)",
        args: &[],
        extract_first: false,
        behavior: None,
    },
    Setting {
        name: "extract_first",
        args: &["--extract-first"],
        extract_first: true,
        behavior: None,
    },
    Setting {
        name: "extract_behavior = restart",
        args: &["--baggage", "--behavior", "restart"],
        extract_first: false,
        behavior: Some(ExtractBehavior::Restart),
    },
    Setting {
        name: "extract_behavior = restart, extract_first",
        args: &["--baggage", "--behavior", "restart", "--extract-first"],
        extract_first: true,
        behavior: Some(ExtractBehavior::Restart),
    },
    Setting {
        name: "extract_behavior = ignore",
        args: &["--baggage", "--behavior", "ignore"],
        extract_first: false,
        behavior: Some(ExtractBehavior::Ignore),
    },
];

/// Run the dd-trace-py peer on every case under one setting.
fn run_python(args: &[&str], cases: &[Case]) -> Vec<Value> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `.ci/setup test` to create the peers venv (dd-trace-py from tests/peers/requirements.txt)",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ddtrace_extract.py");
    // Python sees each header once; repeated lines would be joined with ", ".
    let input: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut m = serde_json::Map::new();
            for (k, v) in &c.headers {
                match m.get_mut(k) {
                    Some(Value::String(s)) => {
                        s.push_str(", ");
                        s.push_str(v);
                    }
                    _ => {
                        m.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }
            json!({"id": i, "headers": m})
        })
        .collect();
    let mut child = Command::new(&python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the dd-trace-py peer");
    let body = serde_json::to_vec(&input).unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().expect("dd-trace-py peer output");
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("peer JSON line"))
        .collect();
    assert_eq!(lines.len(), cases.len(), "one answer per case");
    lines
}

/// With extract_first, dd-trace-py (like dd-trace-go) reads only the first configured style,
/// `datadog`, even when the request has none; stitch goes on to the first format present.
const FIRST_ABSENT: &str = "extract_first with no x-datadog-trace-id: dd-trace-py 4.16 reads only the first configured style and starts a new trace (no context, no link); stitch reads the first format the request carries";

#[test]
fn extract_agrees_with_dd_trace_py() {
    let cases = corpus();
    assert!(cases.len() >= 500, "corpus has {} cases", cases.len());
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for setting in SETTINGS {
        let lines = run_python(setting.args, &cases);
        let opts = ExtractOptions {
            extract_first: setting.extract_first,
            ..ExtractOptions::default()
        };
        let (mut compared, mut skipped, mut first_absent) = (0, 0, 0);
        for (i, (case, py)) in cases.iter().zip(lines).enumerate() {
            assert_eq!(py["id"], json!(i));
            if DELIBERATE.iter().any(|(k, _)| *k == case.kind) {
                skipped += 1;
                continue;
            }
            let no_dd = !case.headers.iter().any(|(k, _)| k == "x-datadog-trace-id");
            if setting.extract_first && no_dd {
                // The difference is what we think it is: dd-trace-py gave no context at all.
                first_absent += 1;
                if !py["trace_id"].is_null() || py["links"] != json!([]) {
                    failures.push(format!(
                        "[{}] case {i} ({}): expected dd-trace-py to ignore every style after datadog: {py}",
                        setting.name, case.kind
                    ));
                }
                continue;
            }
            compared += 1;
            let (want, got) = match setting.behavior {
                None => (normalise_python(py), stitch_view(&case.headers, &opts)),
                Some(b) => (
                    python_plan(&py),
                    stitch_plan(&case.headers, b, setting.extract_first),
                ),
            };
            if want != got {
                failures.push(format!(
                    "[{}] case {i} ({}): {:?}\n  dd-trace-py: {want}\n  stitch:      {got}",
                    setting.name, case.kind, case.headers
                ));
            }
        }
        assert!(
            compared >= 300,
            "{}: only {compared} cases compared",
            setting.name
        );
        report.push(format!(
            "{}: compared {compared} cases, skipped {skipped} deliberate differences{}",
            setting.name,
            if setting.extract_first {
                format!(
                    ", {first_absent} without Datadog headers checked as a deliberate difference"
                )
            } else {
                String::new()
            }
        ));
    }
    for line in &report {
        println!("{line}");
    }
    for (k, why) in DELIBERATE {
        println!("  skipped kind {k}: {why}");
    }
    println!("  {FIRST_ABSENT}");
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
