//! A dead or hanging agent costs the request nothing: requests through the real proxy succeed
//! at once, and the spans that cannot be delivered are dropped and counted.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

fn stitch_exporting_to(agent: std::net::SocketAddr, up: &Upstream) -> Stitch {
    let cfg = format!(
        "{}[export]\nflush_interval_ms = 50\nmax_retries = 1\nretry_backoff_ms = 10\nrequest_timeout_ms = 200\nqueue_capacity = 64\n\n\
         [export.datadog]\nagent_url = \"http://{agent}\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        up.addr
    );
    Stitch::start(&cfg)
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn dropped(s: &Stitch) -> f64 {
    let m = s.metrics();
    ["queue_full", "retries_exhausted"]
        .iter()
        .map(|r| {
            counter(
                &m,
                &format!("stitch_spans_dropped_total{{exporter=\"datadog\",reason=\"{r}\"}}"),
            )
        })
        .sum()
}

#[test]
fn a_dead_agent_drops_and_counts_spans_and_requests_succeed() {
    let up = Upstream::start();
    let s = stitch_exporting_to(dead_addr(), &up);
    for _ in 0..100 {
        let r = get(&s.url("/x"), &[("x-datadog-trace-id", "7")]).unwrap();
        assert_eq!(r.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped(&s) < 100.0 {
        assert!(
            Instant::now() < deadline,
            "drops never counted:\n{}",
            s.metrics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        counter(
            &s.metrics(),
            "stitch_spans_exported_total{exporter=\"datadog\"}"
        ),
        0.0
    );
}

#[test]
fn an_agent_that_never_answers_slows_no_request() {
    let up = Upstream::start();
    // Accepts connections (the kernel backlog) and never reads or answers.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let s = stitch_exporting_to(hang.local_addr().unwrap(), &up);
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(get(&s.url("/x"), &[]).unwrap().status, 200);
        slowest = slowest.max(t.elapsed());
    }
    // The exporter's request timeout is 200 ms; no request may have waited on it.
    assert!(
        slowest < Duration::from_millis(150),
        "a request waited {slowest:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped(&s) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "drops never counted:\n{}",
            s.metrics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hang);
}
