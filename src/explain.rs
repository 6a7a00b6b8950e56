//! `stitch explain`: what stitch would do with one request on one route, as text. It runs the
//! same [`crate::edge::plan`] as the proxy, so it is the troubleshooting checklist in one command.

use std::fmt::Write;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, Target};
use crate::edge;
use crate::forwarded;
use crate::metrics::Metrics;
use crate::propagation::{self, tracing_headers, ExtractBehavior};
use crate::request_id;
use crate::runtime::RouteRuntime;

/// Parse `-H 'name: value'` arguments.
pub fn parse_headers(args: &[String]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for a in args {
        let (n, v) = a
            .split_once(':')
            .ok_or_else(|| format!("header `{a}` is not `name: value`"))?;
        let name = HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", n.trim()))?;
        let value = HeaderValue::from_str(v.trim())
            .map_err(|_| format!("the value of `{}` is not a valid header value", n.trim()))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The explanation of a request with `headers` from `peer` on the route named `route`. The
/// client is found from `peer` through `[server] trusted_proxies`, as the proxy does.
pub fn explain(
    config: &Config,
    route: &str,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<String, String> {
    let r = config
        .routes
        .iter()
        .find(|r| r.name == route)
        .ok_or_else(|| {
            let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            format!("no route named \"{route}\" (routes: {})", names.join(", "))
        })?;
    // The route exactly as the proxy compiles it (CORS policy with the tracing headers baked
    // in); its metric handles go to a registry nobody reads.
    let rt = RouteRuntime::new(config, r, &Metrics::new());
    let profile = &rt.profile;
    let names =
        |fs: &[propagation::Format]| fs.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ");
    let mut o = String::new();
    let target = match r.target {
        Target::Echo => "builtin:echo".to_string(),
        Target::Pool(i) => config.upstreams[i].name.clone(),
    };
    let _ = writeln!(o, "route: {} -> {}", r.name, target);
    let _ = writeln!(
        o,
        "profile: {} (extract: [{}], inject: [{}])",
        profile.name,
        names(&profile.extract),
        names(&profile.inject)
    );

    let cors = r.cors.map(|i| (&config.cors[i].name, rt.cors.as_ref()));
    let origin = headers.get(http::header::ORIGIN);
    let origin_allowed = match (cors, origin) {
        (Some((name, policy)), Some(org)) => {
            let ok = policy.is_some_and(|p| p.allows_origin(org.as_bytes()));
            let _ = writeln!(
                o,
                "cors: policy {}; Origin {} is {}",
                name,
                String::from_utf8_lossy(org.as_bytes()),
                if ok { "allowed" } else { "NOT allowed" }
            );
            ok
        }
        (Some((name, _)), None) => {
            let _ = writeln!(o, "cors: policy {name}; the request has no Origin");
            false
        }
        (None, _) => {
            let _ = writeln!(o, "cors: none on this route");
            false
        }
    };
    if cors.is_some() {
        let _ = writeln!(
            o,
            "  tracing headers always allowed: {}",
            tracing_headers(&profile.extract).join(", ")
        );
    }

    let client = peer.map(|p| forwarded::resolve(p, headers, &config.server.trusted_proxies));
    match &client {
        None => {
            let _ = writeln!(o, "client: unknown (give --client ADDRESS)");
        }
        Some(c) if c.ip == c.peer => {
            let trusted = if c.peer_trusted {
                "a trusted proxy"
            } else {
                "not a trusted proxy"
            };
            let _ = writeln!(o, "client: {} (the peer, {trusted})", c.ip);
        }
        Some(c) => {
            let _ = writeln!(
                o,
                "client: {} (X-Forwarded-For from the trusted proxy {}, {} hop(s) kept)",
                c.ip, c.peer, c.hops
            );
        }
    }
    let mut sent = headers.clone();
    if let Some(c) = &client {
        let host = headers.get(http::header::HOST).cloned();
        let hop = forwarded::Hop {
            client: c,
            scheme: "http",
            host,
        };
        forwarded::apply(
            forwarded::edits(&r.forwarded_headers, &hop, headers),
            &mut sent,
        );
    }
    if r.request_id {
        let (id, outcome) = request_id::decide(headers);
        let _ = writeln!(
            o,
            "request id: {} ({})",
            String::from_utf8_lossy(id.as_bytes()),
            request_id::Outcome::LABELS[outcome.index()]
        );
        sent.insert(request_id::X_REQUEST_ID.clone(), id);
    }
    let client = client.map(|c| c.ip);

    if profile.is_passthrough() {
        let _ = writeln!(
            o,
            "\nthis profile extracts and injects nothing: trace headers pass through unchanged"
        );
        write_sent(&mut o, &sent);
        return Ok(o);
    }
    let plan = edge::plan(profile, headers, client, origin_allowed);
    let _ = writeln!(
        o,
        "\nextract_behavior: {} (applied: {}), extract_first: {}, tracestate_invalid: {}",
        profile.extract_behavior.name(),
        plan.behavior.name(),
        profile.extract_first,
        profile.tracestate_invalid.name()
    );
    if plan.behavior == ExtractBehavior::Ignore {
        let _ = writeln!(
            o,
            "  incoming trace headers and baggage are not read: a new trace starts at the edge"
        );
    } else {
        let _ = writeln!(o, "extracted (in the profile's extract order):");
        // The same extraction again, with its context intact, for the merge notes.
        let ext = propagation::extract_with(headers, &profile.extract, &profile.extract_options());
        for line in propagation::explain(&ext) {
            let _ = writeln!(o, "  {line}");
        }
        if ext.winner.is_none() {
            let _ = writeln!(o, "  no valid context: a new trace starts at the edge");
        }
    }
    let d = &plan.decision;
    let _ = writeln!(
        o,
        "\nsampling: {} (priority {}), source {}: {}",
        d.decision_label(),
        d.priority,
        d.source.label(),
        d.reason
    );
    if let Some(reason) = d.overridden {
        let _ = writeln!(o, "  overridden: {reason}");
    }
    if let Some(dm) = plan.context.tag("_dd.p.dm") {
        let _ = writeln!(o, "  decision maker (_dd.p.dm): {dm}");
    }
    let _ = writeln!(
        o,
        "trace: {} (trace id {:032x}), edge span {:016x}, parent {:016x}",
        if plan.continued { "continued" } else { "new" },
        plan.context.trace_id,
        plan.span_id,
        plan.parent_id
    );
    // The very edit the proxy makes.
    edge::rewrite(&plan, &profile.inject, &mut sent);
    write_sent(&mut o, &sent);
    Ok(o)
}

fn write_sent(o: &mut String, sent: &HeaderMap) {
    let _ = writeln!(o, "\nheaders sent upstream:");
    for (k, v) in sent {
        let _ = writeln!(o, "  {k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
}
