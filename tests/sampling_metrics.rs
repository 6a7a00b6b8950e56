//! Sampling through the proxy, as the upstream and the metrics see it: the decision source,
//! the overrides that are counted, and the one decision written into every format.

mod common;

use common::*;

const ORIGIN: &str = "http://localhost:3000";

fn stitch_for(up: &Upstream) -> Stitch {
    let cfg = format!(
        "{}[upstream.app]\nservers = [\"{}\"]\n\n[cors.web]\nallowed_origins = [\"{ORIGIN}\"]\n\n\
         [propagation.rum]\ninject = [\"datadog\", \"tracecontext\", \"b3\", \"b3multi\"]\ninjection = \"all\"\nmax_incoming_priority = 1\n\n\
         [propagation.strict]\ntrust = [\"10.0.0.0/8\"]\n\n\
         [[route]]\nname = \"rum\"\npath = \"/rum\"\nupstream = \"app\"\ncors = \"web\"\npropagation = \"rum\"\n\n\
         [[route]]\nname = \"strict\"\npath = \"/strict\"\nupstream = \"app\"\npropagation = \"strict\"\n",
        base_config(),
        up.addr
    );
    Stitch::start(&cfg)
}

#[test]
fn decisions_and_overrides_are_counted_and_written_everywhere() {
    let up = Upstream::start();
    let s = stitch_for(&up);

    // A browser request without context under injection = "all": dropped in every format.
    get(&s.url("/rum/a"), &[("origin", ORIGIN)]).unwrap();
    let got = up.last();
    assert_eq!(got.header("x-datadog-sampling-priority"), Some("0"));
    // A trace stitch starts: not sampled, random trace id (W3C Level 2 flag 0x02).
    assert!(got.header("traceparent").unwrap().ends_with("-02"));
    assert!(got.header("tracestate").unwrap().contains("s:0"));
    assert!(got.header("b3").unwrap().ends_with("-0"));
    assert_eq!(got.header("x-b3-sampled"), Some("0"));

    // A claimed user keep (2) is capped to an ordinary keep (1) in every format.
    get(
        &s.url("/rum/b"),
        &[
            ("x-datadog-trace-id", "77"),
            ("x-datadog-parent-id", "5"),
            ("x-datadog-sampling-priority", "2"),
        ],
    )
    .unwrap();
    let got = up.last();
    assert_eq!(got.header("x-datadog-trace-id"), Some("77"));
    assert_eq!(got.header("x-datadog-sampling-priority"), Some("1"));
    assert!(got.header("tracestate").unwrap().contains("s:1"));
    assert!(
        got.header("b3").unwrap().ends_with("-1"),
        "not d: the keep is ordinary now"
    );
    assert_eq!(got.header("x-b3-flags"), None);

    // A context from a client outside the trusted networks restarts the trace.
    get(
        &s.url("/strict/c"),
        &[
            ("x-datadog-trace-id", "88"),
            ("x-datadog-parent-id", "5"),
            ("x-datadog-sampling-priority", "2"),
        ],
    )
    .unwrap();
    let got = up.last();
    assert_ne!(got.header("x-datadog-trace-id"), Some("88"), "restarted");
    assert_eq!(
        got.header("x-datadog-sampling-priority"),
        Some("1"),
        "the edge sampler kept it"
    );

    let m = s.metrics();
    for series in [
        "stitch_sampling_decisions_total{decision=\"drop\",route=\"rum\",source=\"missing\"} 1",
        "stitch_sampling_decisions_total{decision=\"keep\",route=\"rum\",source=\"incoming\"} 1",
        "stitch_sampling_overridden_total{reason=\"priority_capped\",route=\"rum\"} 1",
        "stitch_sampling_decisions_total{decision=\"keep\",route=\"strict\",source=\"edge\"} 1",
        "stitch_sampling_overridden_total{reason=\"untrusted_client\",route=\"strict\"} 1",
    ] {
        assert!(m.contains(series), "missing {series}:\n{m}");
    }
}

#[test]
fn formats_that_disagree_are_counted_as_conflicts() {
    let up = Upstream::start();
    let s = stitch_for(&up);
    // Datadog and traceparent name different traces: Datadog wins, W3C becomes a span link.
    get(
        &s.url("/strict/x"),
        &[
            ("x-datadog-trace-id", "1234567890123456789"),
            ("x-datadog-parent-id", "5"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .unwrap();
    let m = s.metrics();
    assert!(
        m.contains("stitch_propagation_conflicts_total{kind=\"trace_id\"} 1"),
        "{m}"
    );
}
