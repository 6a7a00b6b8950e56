//! The inspector's two views: `/requests.json` and `/requests`, a small server-rendered page
//! with no script and no external asset (the admin port is often reached through a
//! port-forward with no internet), readable in a terminal browser. Filtering is a plain GET
//! form. Every recorded value is escaped: headers are whatever a client sent.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{
    datadog_trace_url, rfc3339_millis, CorsResult, Filter, Inspector, Record, SamplingFilter,
};
use crate::propagation::Outcome;

/// One record as JSON.
pub fn record_json(r: &Record, dd_site: Option<&str>) -> Value {
    let pairs = |h: &super::HeaderText| -> Value {
        h.pairs().into_iter().map(|(k, v)| json!([k, v])).collect()
    };
    let trace = r.trace.as_ref().map(|t| {
        let formats: Vec<Value> = t
            .outcomes
            .iter()
            .map(|(f, o)| match o {
                Outcome::Absent => json!({"format": f.name(), "outcome": "absent"}),
                Outcome::Invalid(why) => {
                    json!({"format": f.name(), "outcome": "invalid", "reason": why})
                }
                Outcome::Valid { .. } => json!({"format": f.name(), "outcome": "valid"}),
            })
            .collect();
        json!({
            "trace_id": (t.trace_id as u64).to_string(),
            "trace_id_hex": format!("{:032x}", t.trace_id),
            "span_id": t.span_id.to_string(),
            "span_id_hex": format!("{:016x}", t.span_id),
            "parent_id": t.parent_id.to_string(),
            "continued": t.continued,
            "winner": t.winner.map(|f| f.name()),
            "formats": formats,
            "conflicts": t.conflicts,
            "sampling": {
                "decision": if t.keep() { "keep" } else { "drop" },
                "priority": t.priority,
                "source": t.source.label(),
                "reason": t.reason,
                "overridden": t.overridden,
                "decision_maker": t.decision_maker.as_deref(),
            },
            "datadog_url": dd_site.map(|s| datadog_trace_url(s, t.trace_id)),
        })
    });
    json!({
        "time": rfc3339_millis(r.start),
        "unix_ms": r.unix_ms(),
        "duration_ms": r.duration.as_secs_f64() * 1000.0,
        "route": r.route.as_deref(),
        "method": r.method.as_str(),
        "path": &*r.path,
        "status": r.status,
        "client_address": r.client.map(|a| a.to_string()),
        "request_id": r.request_id.as_deref(),
        "preflight": r.preflight,
        "cors": {
            "result": r.cors.label(),
            "refused_headers": r.refused_headers,
        },
        "headers_received": pairs(&r.received),
        "headers_sent": r.sent.as_ref().map(pairs),
        "trace": trace,
    })
}

/// `/requests.json`: the selected records, newest first, with the capacity and the filter.
pub fn json_body(inspector: &Inspector, filter: &Filter) -> Vec<u8> {
    let site = inspector.dd_site();
    let records = inspector.select(filter);
    let v = json!({
        "capacity": inspector.capacity(),
        "filter": filter.query(),
        "count": records.len(),
        "requests": records
            .iter()
            .map(|r| record_json(r, site.as_deref()))
            .collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:1em;color:#222}\
h1{font-size:1.3em;margin:0 0 .3em}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:2px 6px;vertical-align:top}\
thead th{border-bottom:2px solid #888}\
tr.req td{border-top:1px solid #ccc}\
tr.detail td{padding-bottom:6px;color:#444}\
code,pre{font:12px ui-monospace,monospace}\
pre{margin:0;white-space:pre-wrap;word-break:break-all}\
.s2{color:#176f2c}.s3{color:#555}.s4{color:#a15c00}.s5{color:#b00020;font-weight:bold}\
.drop{color:#777}.keep{color:#176f2c}.refused{color:#b00020}\
.cols{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1.4fr) minmax(0,1.3fr) minmax(0,.5fr);gap:1em}\
td.time{white-space:nowrap}\
form{margin:.5em 0 1em}label{margin-right:1em}";

/// `/requests`: the page.
pub fn html_body(inspector: &Inspector, filter: &Filter) -> Vec<u8> {
    let all = inspector.all();
    let records: Vec<&Arc<Record>> = all.iter().filter(|r| filter.matches(r)).collect();
    let site = inspector.dd_site();
    let mut o = String::with_capacity(4096 + records.len() * 1024);
    o.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    o.push_str("<title>stitch: last requests</title>");
    let _ = writeln!(o, "<style>{STYLE}</style></head><body>");
    o.push_str("<h1>stitch: last requests</h1>\n");
    let cap = inspector.capacity();
    if cap == 0 {
        o.push_str(
            "<p id=\"summary\">The inspector is off: set <code>admin.inspect_requests</code> \
             above 0 (it applies on reload).</p>\n",
        );
    } else {
        let _ = writeln!(
            o,
            "<p id=\"summary\">{} shown of {} held (the last {} requests are kept), newest \
             first. <a href=\"/requests.json{}\">JSON</a></p>",
            records.len(),
            all.len(),
            cap,
            query_suffix(filter)
        );
    }
    filter_form(&mut o, &all, filter);
    o.push_str(
        "<table id=\"requests\"><thead><tr><th>time (UTC)</th><th>route</th><th>method</th>\
         <th>path</th><th>status</th><th>CORS</th><th>format</th><th>sampling</th>\
         <th>trace id</th><th>edge span</th></tr></thead>\n<tbody>\n",
    );
    for r in &records {
        row(&mut o, r, site.as_deref());
    }
    o.push_str("</tbody></table>\n");
    if records.is_empty() {
        o.push_str("<p id=\"empty\">No request matches.</p>\n");
    }
    o.push_str("</body></html>\n");
    o.into_bytes()
}

fn query_suffix(filter: &Filter) -> String {
    let q = filter.query();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

fn select(o: &mut String, name: &str, options: &[String], current: Option<&str>) {
    let _ = write!(
        o,
        "<label>{name} <select name=\"{name}\"><option value=\"\">any</option>"
    );
    for opt in options {
        let sel = if Some(opt.as_str()) == current {
            " selected"
        } else {
            ""
        };
        let e = escape(opt);
        let _ = write!(o, "<option value=\"{e}\"{sel}>{e}</option>");
    }
    o.push_str("</select></label>");
}

fn filter_form(o: &mut String, all: &[Arc<Record>], filter: &Filter) {
    let mut routes: BTreeSet<String> = all
        .iter()
        .filter_map(|r| r.route.as_deref().map(str::to_string))
        .collect();
    routes.extend(filter.route.clone());
    let mut statuses: BTreeSet<u16> = all.iter().map(|r| r.status).collect();
    let mut status_opts: Vec<String> = ["2xx", "3xx", "4xx", "5xx"].map(String::from).to_vec();
    if let Some(super::StatusFilter::Exact(n)) = filter.status {
        statuses.insert(n);
    }
    status_opts.extend(statuses.iter().map(u16::to_string));
    o.push_str("<form id=\"filter\" method=\"get\" action=\"/requests\">");
    let routes: Vec<String> = routes.into_iter().collect();
    select(o, "route", &routes, filter.route.as_deref());
    let status = filter.status.map(|s| s.label());
    select(o, "status", &status_opts, status.as_deref());
    let cors: Vec<String> = CorsResult::ALL.map(|c| c.label().to_string()).to_vec();
    select(o, "cors", &cors, filter.cors.map(|c| c.label()));
    let sampling: Vec<String> = SamplingFilter::ALL.map(|s| s.label().to_string()).to_vec();
    select(o, "sampling", &sampling, filter.sampling.map(|s| s.label()));
    o.push_str("<button type=\"submit\">filter</button> <a href=\"/requests\">clear</a></form>\n");
}

fn row(o: &mut String, r: &Record, dd_site: Option<&str>) {
    let status_class = format!("s{}", r.status / 100);
    let cors = match r.cors {
        CorsResult::None => "–".to_string(),
        CorsResult::Allowed => "allowed".to_string(),
        CorsResult::AllowedPartial => format!(
            "<span class=\"refused\">refused headers: {}</span>",
            escape(&r.refused_headers.join(", "))
        ),
        CorsResult::RefusedOrigin => "<span class=\"refused\">refused origin</span>".to_string(),
    };
    let (format, sampling, trace_id, span) = match &r.trace {
        Some(t) => {
            let decision = if t.keep() { "keep" } else { "drop" };
            let trace = match dd_site {
                Some(site) => format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&datadog_trace_url(site, t.trace_id)),
                    t.trace_id as u64
                ),
                None => (t.trace_id as u64).to_string(),
            };
            (
                t.winner
                    .map(|f| f.name())
                    .unwrap_or("new trace")
                    .to_string(),
                format!(
                    "<span class=\"{decision}\">{decision}</span> ({}) {}",
                    t.priority,
                    t.source.label()
                ),
                format!("{trace}<br><code>{:032x}</code>", t.trace_id),
                format!("{}<br><code>{:016x}</code>", t.span_id, t.span_id),
            )
        }
        None => ("–".into(), "–".into(), "–".into(), "–".into()),
    };
    let method = if r.preflight {
        format!("{} (preflight)", r.method)
    } else {
        r.method.to_string()
    };
    let _ = writeln!(
        o,
        "<tr class=\"req\"><td class=\"time\">{}</td><td class=\"route\">{}</td><td class=\"method\">{}</td>\
         <td class=\"path\">{}</td><td class=\"status {status_class}\">{}</td>\
         <td class=\"cors\">{cors}</td><td class=\"format\">{format}</td>\
         <td class=\"sampling\">{sampling}</td><td class=\"trace\">{trace_id}</td>\
         <td class=\"span\">{span}</td></tr>",
        rfc3339_millis(r.start),
        escape(r.route.as_deref().unwrap_or("(no route)")),
        escape(&method),
        escape(&r.path),
        r.status,
    );
    o.push_str("<tr class=\"detail\"><td colspan=\"10\"><div class=\"cols\">");
    let _ = write!(
        o,
        "<div>received<pre class=\"received\">{}</pre></div>",
        escape(r.received.text().trim_end())
    );
    match &r.sent {
        Some(s) => {
            let _ = write!(
                o,
                "<div>sent upstream<pre class=\"sent\">{}</pre></div>",
                escape(s.text().trim_end())
            );
        }
        None => o.push_str("<div>sent upstream<pre class=\"sent\">(not forwarded)</pre></div>"),
    }
    if let Some(t) = &r.trace {
        let mut notes = Vec::new();
        for (f, outcome) in &t.outcomes {
            match outcome {
                Outcome::Invalid(why) => notes.push(format!("{} invalid: {why}", f.name())),
                Outcome::Valid { .. } => notes.push(format!("{} valid", f.name())),
                Outcome::Absent => {}
            }
        }
        if !t.conflicts.is_empty() {
            notes.push(format!("conflicts: {}", t.conflicts.join(", ")));
        }
        notes.push(format!(
            "{}; sampling: {}",
            if t.continued {
                format!("continued (parent {})", t.parent_id)
            } else {
                "new trace".to_string()
            },
            t.reason
        ));
        if let Some(why) = t.overridden {
            notes.push(format!("overridden: {why}"));
        }
        let _ = write!(
            o,
            "<div>trace<pre class=\"notes\">{}</pre></div>",
            escape(&notes.join("\n"))
        );
    }
    let mut who = Vec::new();
    if let Some(c) = r.client {
        who.push(format!("client {c}"));
    }
    if let Some(id) = &r.request_id {
        who.push(format!("request id {id}"));
    }
    who.push(format!("{:.3} ms", r.duration.as_secs_f64() * 1000.0));
    let _ = write!(
        o,
        "<div>request<pre class=\"who\">{}</pre></div>",
        escape(&who.join("\n"))
    );
    o.push_str("</div></td></tr>\n");
}

#[cfg(test)]
mod tests {
    use super::super::fixture::record;
    use super::*;

    #[test]
    fn everything_recorded_is_escaped() {
        let i = Inspector::new(5, Some("datadoghq.eu".into()));
        let mut r = record(1, "<b>route</b>", 200, CorsResult::AllowedPartial);
        r.received = "tracestate: <script>alert(1)</script>\n".into();
        r.refused_headers = vec!["x-<evil>".into()];
        r.path = "/\"><img src=x>".into();
        i.push(r);
        let html = String::from_utf8(html_body(&i, &Filter::default())).unwrap();
        for raw in ["<script>", "<b>route", "<img", "x-<evil>"] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("https://app.datadoghq.eu/apm/trace/7"));
        assert!(!html.contains("<script"), "the page has no script at all");
        for tag in ["<link", "<img", "<iframe", "url(", "@import"] {
            assert!(!html.contains(tag), "{tag}: the page loads nothing");
        }
    }

    #[test]
    fn json_has_both_id_forms_and_the_link() {
        let i = Inspector::new(5, Some("datadoghq.com".into()));
        i.push(record(3, "api", 200, CorsResult::None));
        let v: Value = serde_json::from_slice(&json_body(&i, &Filter::default())).unwrap();
        let t = &v["requests"][0]["trace"];
        assert_eq!(t["trace_id"], "7");
        assert_eq!(t["trace_id_hex"], "00000000000000030000000000000007");
        assert_eq!(t["span_id"], "3");
        assert_eq!(t["span_id_hex"], "0000000000000003");
        assert_eq!(t["datadog_url"], "https://app.datadoghq.com/apm/trace/7");
        assert_eq!(
            v["requests"][0]["headers_sent"][0][0],
            "x-datadog-parent-id"
        );
        assert_eq!(v["capacity"], 5);
    }

    #[test]
    fn an_off_inspector_says_so() {
        let i = Inspector::new(0, None);
        let html = String::from_utf8(html_body(&i, &Filter::default())).unwrap();
        assert!(html.contains("The inspector is off"));
    }
}
