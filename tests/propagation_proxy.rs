//! Trace-context translation through the running proxy, and `stitch explain`.

mod common;

use common::*;

fn stitch_for(up: &Upstream) -> Stitch {
    let cfg = format!(
        "{}[upstream.app]\nservers = [\"{}\"]\n\n\
         [propagation.otel]\ninject = [\"tracecontext\"]\n\n\
         [propagation.zipkin]\ninject = [\"b3multi\"]\n\n\
         [propagation.off]\nextract = []\ninject = []\n\n\
         [[route]]\nname = \"otel\"\npath = \"/otel\"\nupstream = \"app\"\npropagation = \"otel\"\n\n\
         [[route]]\nname = \"zipkin\"\npath = \"/zipkin\"\nupstream = \"app\"\npropagation = \"zipkin\"\n\n\
         [[route]]\nname = \"plain\"\npath = \"/plain\"\nupstream = \"app\"\npropagation = \"off\"\n\n\
         [[route]]\nname = \"default\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        up.addr
    );
    Stitch::start(&cfg)
}

/// RUM's datadog headers (propagation doc §8) for trace 6255592339373587297.
const RUM: [(&str, &str); 4] = [
    ("x-datadog-trace-id", "6255592339373587297"),
    ("x-datadog-parent-id", "3245567862311265982"),
    ("x-datadog-sampling-priority", "1"),
    ("x-datadog-origin", "rum"),
];

#[test]
fn datadog_request_reaches_a_tracecontext_only_route_as_traceparent() {
    let up = Upstream::start();
    let s = stitch_for(&up);
    let r = get(&s.url("/otel/x"), &RUM).unwrap();
    assert_eq!(r.status, 200);
    let got = up.last();
    assert!(
        !got.has_prefix("x-datadog-"),
        "no datadog headers on a tracecontext route: {:?}",
        got.headers
    );
    let tp = got.header("traceparent").expect("traceparent injected");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    // 64-bit RUM id: the upper half stays zero, never invented.
    assert_eq!(parts[1], "000000000000000056d05416d0047b61");
    assert_ne!(
        parts[2], "2d0a92c6677ca6be",
        "stitch's own span is the parent, not the browser's"
    );
    assert_ne!(parts[2], "0000000000000000");
    assert_eq!(parts[3], "01");
    let ts = got.header("tracestate").expect("tracestate");
    assert!(ts.starts_with("dd="), "{ts}");
    assert!(ts.contains("s:1") && ts.contains("o:rum"), "{ts}");
    assert!(
        ts.contains(&format!("p:{}", parts[2])),
        "dd p: is the edge span: {ts}"
    );
    let m = s.metrics();
    assert!(
        m.contains("stitch_propagation_extracted_total{format=\"datadog\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stitch_propagation_injected_total{format=\"tracecontext\"} 1"),
        "{m}"
    );
}

#[test]
fn a_128_bit_w3c_trace_keeps_its_upper_half_in_datadog_and_b3() {
    let up = Upstream::start();
    let s = stitch_for(&up);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    get(
        &s.url("/x"),
        &[
            ("traceparent", tp),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ],
    )
    .unwrap();
    let got = up.last();
    assert_eq!(
        got.header("x-datadog-trace-id"),
        Some("11803532876627986230")
    );
    let tags = got.header("x-datadog-tags").unwrap_or("");
    assert!(tags.contains("_dd.p.tid=4bf92f3577b34da6"), "{tags}");
    let ts = got.header("tracestate").unwrap();
    assert!(ts.starts_with("dd="), "dd member first: {ts}");
    assert!(
        ts.ends_with("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        "other vendors kept in order: {ts}"
    );
    get(&s.url("/zipkin/x"), &[("traceparent", tp)]).unwrap();
    let got = up.last();
    assert_eq!(
        got.header("x-b3-traceid"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(got.header("x-b3-sampled"), Some("1"));
    assert!(got.header("traceparent").is_none() && !got.has_prefix("x-datadog-"));
}

#[test]
fn malformed_trace_headers_never_fail_a_request() {
    let up = Upstream::start();
    let s = stitch_for(&up);
    let bad: &[&[(&str, &str)]] = &[
        &[("x-datadog-trace-id", "abc")],
        &[("x-datadog-trace-id", "18446744073709551616")],
        &[(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        )],
        &[(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        &[("b3", "not-a-b3-header")],
        &[
            ("x-datadog-trace-id", "1"),
            ("x-datadog-tags", &"_dd.p.x=y,".repeat(100)),
        ],
    ];
    for headers in bad {
        let r = get(&s.url("/x"), headers).unwrap();
        assert_eq!(r.status, 200, "{headers:?}");
        let got = up.last();
        let tp = got
            .header("traceparent")
            .expect("a fresh context is injected");
        assert_eq!(tp.len(), 55, "{tp}");
    }
    let m = s.metrics();
    assert!(
        m.contains("stitch_propagation_invalid_total{format=\"datadog\""),
        "{m}"
    );
    assert!(
        m.contains("stitch_propagation_invalid_total{format=\"tracecontext\""),
        "{m}"
    );
}

#[test]
fn a_pass_through_profile_leaves_trace_headers_untouched() {
    let up = Upstream::start();
    let s = stitch_for(&up);
    get(&s.url("/plain/x"), &RUM).unwrap();
    let got = up.last();
    for (k, v) in RUM {
        assert_eq!(got.header(k), Some(v));
    }
    assert!(got.header("traceparent").is_none());
}

#[test]
fn baggage_is_forwarded_byte_for_byte() {
    let up = Upstream::start();
    let s = stitch_for(&up);
    let bag = "session.id=d7a5c1e2-3f4b-4c5d-8e9f-0a1b2c3d4e5f,user.id=a%40b,account.id=acme";
    get(&s.url("/x"), &[RUM[0], RUM[1], ("baggage", bag)]).unwrap();
    assert_eq!(up.last().header("baggage"), Some(bag));
}

#[test]
fn explain_shows_the_winner_the_decision_and_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.toml");
    std::fs::write(
        &path,
        "[propagation.otel]\ninject = [\"tracecontext\", \"b3\"]\n\n[[route]]\nname = \"api\"\npath = \"/\"\nupstream = \"builtin:echo\"\npropagation = \"otel\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(stitch_bin())
        .args(["explain", "--config"])
        .arg(&path)
        .args(["--route", "api"])
        .args(["-H", "x-datadog-trace-id: 6255592339373587297"])
        .args(["-H", "x-datadog-parent-id: 3245567862311265982"])
        .args(["-H", "x-datadog-sampling-priority: 0"])
        .args(["-H", "traceparent: 00-zz-1-01"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("winner: datadog"), "{text}");
    assert!(text.contains("tracecontext: invalid"), "{text}");
    assert!(
        text.contains("sampling: drop (priority 0), source incoming"),
        "{text}"
    );
    assert!(
        text.contains("traceparent: 00-000000000000000056d05416d0047b61-"),
        "{text}"
    );
    assert!(
        text.contains("-00\n"),
        "the drop decision is written into traceparent: {text}"
    );
    assert!(text.contains("b3: 56d05416d0047b61-"), "{text}");
}

/// `extract_behavior`, `extract_first` and `tracestate_invalid` from a config file, through the
/// running proxy: what reaches the upstream for the same request on each route.
#[test]
fn extraction_settings_from_the_config_file() {
    let up = Upstream::start();
    let cfg = format!(
        "{}[upstream.app]\nservers = [\"{}\"]\n\n\
         [propagation.restart]\ntrust = \"none\"\n\n\
         [propagation.ignore]\nextract_behavior = \"ignore\"\n\n\
         [propagation.first]\nextract_first = true\n\n\
         [propagation.strict]\ntracestate_invalid = \"discard_header\"\n\n\
         [[route]]\nname = \"restart\"\npath = \"/restart\"\nupstream = \"app\"\npropagation = \"restart\"\n\n\
         [[route]]\nname = \"ignore\"\npath = \"/ignore\"\nupstream = \"app\"\npropagation = \"ignore\"\n\n\
         [[route]]\nname = \"first\"\npath = \"/first\"\nupstream = \"app\"\npropagation = \"first\"\n\n\
         [[route]]\nname = \"strict\"\npath = \"/strict\"\nupstream = \"app\"\npropagation = \"strict\"\n\n\
         [[route]]\nname = \"default\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        up.addr
    );
    let s = Stitch::start(&cfg);
    // RUM's datadog headers, a traceparent of another trace with the random flag and a
    // tracestate with one invalid member, and baggage.
    let mut req: Vec<(&str, &str)> = RUM.to_vec();
    req.extend([
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        ),
        ("tracestate", "dd=s:2;o:synthetics,congo=x,Bad=1"),
        ("baggage", "session.id=abc"),
    ]);
    let rum_trace = "000000000000000056d05416d0047b61";
    let mut seen = std::collections::BTreeMap::new();
    for route in ["default", "restart", "ignore", "first", "strict"] {
        let r = get(&s.url(&format!("/{route}/x")), &req).unwrap();
        assert_eq!(r.status, 200, "{route}");
        seen.insert(route, up.last());
    }
    let tp = |route: &str| seen[route].header("traceparent").unwrap().to_string();
    // default: the datadog trace continues; the W3C trace is another one, so not its flag.
    assert!(
        tp("default").starts_with(&format!("00-{rum_trace}-")),
        "{}",
        tp("default")
    );
    assert!(tp("default").ends_with("-01"), "{}", tp("default"));
    assert_eq!(seen["default"].header("baggage"), Some("session.id=abc"));
    // trust = "none" (extract_behavior = "restart"): a new random trace, baggage kept.
    assert!(!tp("restart").contains(rum_trace), "{}", tp("restart"));
    assert!(tp("restart").ends_with("-03"), "{}", tp("restart"));
    assert_eq!(seen["restart"].header("baggage"), Some("session.id=abc"));
    // ignore: a new random trace, no baggage.
    assert!(!tp("ignore").contains(rum_trace), "{}", tp("ignore"));
    assert!(tp("ignore").ends_with("-03"), "{}", tp("ignore"));
    assert_eq!(seen["ignore"].header("baggage"), None);
    // extract_first: datadog alone, the same outcome as the merge here (different trace ids)
    // but without the link, and the baggage still read.
    assert!(tp("first").starts_with(&format!("00-{rum_trace}-")));
    assert_eq!(seen["first"].header("baggage"), Some("session.id=abc"));
    let m = s.metrics();
    assert!(
        m.contains("stitch_sampling_overridden_total{reason=\"restart\",route=\"restart\"} 1"),
        "{m}"
    );
    // Five requests: ignore read nothing, extract_first stopped at datadog, the other three
    // merged (and found two trace ids).
    for line in [
        "stitch_propagation_conflicts_total{kind=\"trace_id\"} 3",
        "stitch_propagation_extracted_total{format=\"datadog\"} 4",
        "stitch_propagation_extracted_total{format=\"tracecontext\"} 3",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in {m}");
    }

    // tracestate_invalid decides whether a traceparent-only request keeps the dd member.
    let w3c = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "dd=s:2;o:synthetics,congo=x,Bad=1"),
    ];
    get(&s.url("/x"), &w3c).unwrap();
    let lenient = up.last();
    assert_eq!(lenient.header("x-datadog-origin"), Some("synthetics"));
    assert_eq!(lenient.header("x-datadog-sampling-priority"), Some("2"));
    assert!(lenient.header("tracestate").unwrap().ends_with(",congo=x"));
    get(&s.url("/strict/x"), &w3c).unwrap();
    let strict = up.last();
    assert_eq!(
        strict.header("x-datadog-origin"),
        None,
        "the dd member went with the header"
    );
    assert_eq!(
        strict.header("x-datadog-sampling-priority"),
        Some("1"),
        "from the flag"
    );
    assert!(!strict.header("tracestate").unwrap().contains("congo"));
    let m = s.metrics();
    let discarded = "stitch_propagation_invalid_total{format=\"tracecontext\",reason=\"tracestate_invalid_member\"}";
    // Counted once per request on the strict route: the mixed request above and this one.
    assert!(
        m.lines().any(|l| l == format!("{discarded} 2")),
        "{discarded} 2 in {m}"
    );
}
