//! The edge span's life around the proxy: pending spans are flushed on SIGTERM, and the access
//! log line carries the ids a log pivot needs.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn pending_spans_are_flushed_on_graceful_shutdown() {
    let app = Upstream::start();
    // A recording stand-in for the agent: it answers 200 to the trace intake.
    let agent = Upstream::with(Behaviour {
        status: 200,
        body: Some("{\"rate_by_service\":{}}".into()),
        ..Default::default()
    });
    let cfg = format!(
        "{}[export]\nflush_interval_ms = 600000\nbatch_size = 1000\n\n[export.datadog]\nagent_url = \"http://{}\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        agent.addr,
        app.addr
    );
    let mut s = Stitch::start(&cfg);
    for i in 1..=5 {
        let id = format!("{i}");
        assert_eq!(
            get(
                &s.url("/x"),
                &[("x-datadog-trace-id", &id), ("x-datadog-parent-id", "9")]
            )
            .unwrap()
            .status,
            200
        );
    }
    assert!(
        agent.requests().is_empty(),
        "with a 10-minute flush interval nothing is sent before shutdown"
    );
    s.terminate();
    assert!(
        s.wait_exit(Duration::from_secs(15)).is_some(),
        "stitch did not exit"
    );
    let sent: Vec<Recorded> = agent.requests();
    assert!(!sent.is_empty(), "no flush on shutdown");
    let traces: usize = sent
        .iter()
        .inspect(|r| assert_eq!(r.path, "/v0.4/traces"))
        .map(|r| {
            r.header("x-datadog-trace-count")
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(traces, 5, "every pending span was flushed once");
}

#[test]
fn the_access_log_line_carries_the_trace_ids() {
    let app = Upstream::start();
    let cfg = format!(
        "{}[service]\nname = \"edge\"\nenv = \"test\"\nversion = \"1.2.3\"\n\n[access_log]\nenabled = true\nformat = \"json\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        app.addr
    );
    let s = Stitch::start_with_env(&cfg, &[("DD_VERSION", "9.9.9")]);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    get(&s.url("/orders?id=1"), &[("traceparent", tp)]).unwrap();
    let seen = app.last();
    let span_id = seen.header("x-datadog-parent-id").unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let lines = s.stdout_lines.lock().unwrap().clone();
        if let Some(l) = lines.iter().find(|l| l.contains("\"route\":\"app\"")) {
            break l.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["dd.trace_id"], "11803532876627986230",
        "low 64 bits in decimal"
    );
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        v["dd.span_id"],
        span_id.as_str(),
        "the span injected upstream"
    );
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/orders");
    assert_eq!(v["dd.service"], "edge");
    assert_eq!(v["dd.env"], "test");
    assert_eq!(v["dd.version"], "9.9.9", "DD_VERSION overrides the config");
}
