//! `deploy/grafana/stitch.json` cannot rot silently: the dashboard is checked offline (its JSON
//! holds together as a Grafana dashboard), and every metric and every label its PromQL queries
//! name exists in a real `/metrics` scrape of stitch after traffic that exercises each of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;

use common::*;

fn dashboard() -> Value {
    let path = manifest_dir().join("deploy/grafana/stitch.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (panel title, PromQL expression) of the dashboard.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn the_dashboard_holds_together() {
    let d = dashboard();
    assert_eq!(d["uid"], "stitch-edge");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "route"].into());

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        let kind = p["type"].as_str().unwrap();
        assert!(
            ["row", "timeseries", "stat", "bargauge", "table"].contains(&kind),
            "{title}: {kind}"
        );
        // The 24-column grid: inside it, and no two panels on one cell.
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_string()) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
        if kind == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: says what it shows"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
    }

    let var = Regex::new(r"\$\{?([A-Za-z_]+)").unwrap();
    for (title, expr) in queries(&d) {
        // Balanced brackets of every kind, in order.
        let mut stack = Vec::new();
        for c in expr.chars() {
            match c {
                '(' | '{' | '[' => stack.push(c),
                ')' | '}' | ']' => {
                    let open = stack.pop();
                    let want = match c {
                        ')' => '(',
                        '}' => '{',
                        _ => '[',
                    };
                    assert_eq!(open, Some(want), "{title}: unbalanced {expr}");
                }
                _ => {}
            }
        }
        assert!(stack.is_empty(), "{title}: unclosed in {expr}");
        for v in var.captures_iter(&expr) {
            let name = &v[1];
            assert!(
                name.starts_with("__") || vars.contains(name),
                "{title}: ${name} is not a dashboard variable: {expr}"
            );
        }
    }
}

/// Sample names and their label names in a Prometheus text scrape.
fn scraped(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)=""#).unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let entry = out.entry(name.to_string()).or_default();
        entry.extend(label.captures_iter(labels).map(|c| c[1].to_string()));
    }
    out
}

/// What every panel needs to have data: requests on each route kind, a preflight that asks
/// for a header the policy leaves out, bad and conflicting trace headers, a capped priority,
/// an upstream that is down, a reload, one exporter that accepts and one that is down.
fn stitch_after_traffic() -> (Stitch, Upstream, Upstream) {
    let up = Upstream::start();
    let agent = Upstream::start(); // answers 200 to the span export like an agent
    let cfg = format!(
        "{}[export]\nflush_interval_ms = 20\nmax_retries = 0\nrequest_timeout_ms = 500\n\n\
         [export.datadog]\nagent_url = \"http://{agent}\"\n\n\
         [export.otlp]\nendpoint = \"http://{dead}/v1/traces\"\n\n\
         [upstream.app]\nservers = [\"{up}\"]\n\n[upstream.down]\nservers = [\"{dead}\"]\n\n\
         [cors.web]\nallowed_origins = [\"https://app.example\"]\n\n\
         [propagation.capped]\nmax_incoming_priority = 1\n\n\
         [[route]]\nname = \"api\"\npath = \"/api\"\nupstream = \"app\"\ncors = \"web\"\npropagation = \"capped\"\n\n\
         [[route]]\nname = \"broken\"\npath = \"/broken\"\nupstream = \"down\"\n",
        base_config(),
        agent = agent.addr,
        dead = dead_addr(),
        up = up.addr,
    );
    let s = Stitch::start(&cfg);
    let api = s.url("/api");
    let ok = |r: std::io::Result<Response>, want: u16| assert_eq!(r.unwrap().status, want);
    ok(
        get(
            &api,
            &[
                ("x-datadog-trace-id", "11"),
                ("x-datadog-parent-id", "12"),
                ("x-datadog-sampling-priority", "2"),
            ],
        ),
        200,
    );
    ok(get(&api, &[("x-datadog-trace-id", "not-a-number")]), 200);
    ok(
        get(
            &api,
            &[
                ("x-datadog-trace-id", "1"),
                ("x-datadog-parent-id", "2"),
                (
                    "traceparent",
                    "00-0000000000000000000000000000000a-00f067aa0ba902b7-01",
                ),
            ],
        ),
        200,
    );
    ok(
        request(
            "OPTIONS",
            &api,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-not-allowed"),
            ],
            b"",
        ),
        204,
    );
    ok(get(&s.url("/broken"), &[]), 502);
    ok(get(&s.url("/nowhere"), &[]), 404);
    s.signal("HUP");
    (s, up, agent)
}

#[test]
fn every_metric_and_label_the_dashboard_queries_exists_in_a_real_scrape() {
    let d = dashboard();
    let metric = Regex::new(r"\bstitch_[a-z0-9_]+").unwrap();
    let by = Regex::new(r"\bby \(([^)]*)\)").unwrap();
    let matcher = Regex::new(r"([a-z_]+)\s*(?:=~|!=|!~|=)").unwrap();
    let braces = Regex::new(r"\{([^}]*)\}").unwrap();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (title, expr) in queries(&d) {
        for m in metric.find_iter(&expr) {
            wanted
                .entry(m.as_str().to_string())
                .or_default()
                .push(title.clone());
        }
    }
    assert!(wanted.len() >= 19, "{wanted:?}");

    let (s, _up, _agent) = stitch_after_traffic();
    // Spans, batches and the reload reach the metrics a moment after the requests.
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let found = scraped(&s.metrics());
        let missing: Vec<&String> = wanted.keys().filter(|m| !found.contains_key(*m)).collect();
        if missing.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "metrics the dashboard queries but stitch never exposed: {:?}\n{}",
            missing
                .iter()
                .map(|m| format!("{m} (in {:?})", wanted[*m]))
                .collect::<Vec<_>>(),
            s.metrics()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Every label a query groups by or matches on belongs to a metric of that query.
    for (title, expr) in queries(&d) {
        let names: Vec<&str> = metric.find_iter(&expr).map(|m| m.as_str()).collect();
        let labels: BTreeSet<String> = names
            .iter()
            .flat_map(|n| found[*n].iter().cloned())
            .collect();
        let grouped = by
            .captures_iter(&expr)
            .flat_map(|c| {
                c[1].split(',')
                    .map(|l| l.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        let inside_braces: Vec<String> = braces
            .captures_iter(&expr)
            .flat_map(|c| {
                matcher
                    .captures_iter(&c[1])
                    .map(|m| m[1].to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        for l in grouped.iter().chain(&inside_braces) {
            assert!(
                labels.contains(l),
                "{title}: label `{l}` is on none of {names:?}: {expr}"
            );
        }
    }
}
