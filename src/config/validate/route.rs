//! `[[route]]`: which requests go where, with which CORS policy and propagation profile.

use std::collections::HashSet;

use super::Problems;
use crate::config::description::RouteFile;
use crate::config::{At, NamedCors, Profile, Route, Target, Upstream, ECHO_UPSTREAM};
use crate::forwarded::ForwardedHeader;
use crate::routing::HostMatch;

/// The forwarding headers a route writes when it names none (`Forwarded` is opt-in).
pub(crate) const DEFAULT_FORWARDED: [ForwardedHeader; 3] = [
    ForwardedHeader::XForwardedFor,
    ForwardedHeader::XForwardedProto,
    ForwardedHeader::XForwardedHost,
];

/// `forwarded_headers = [...]`: known names, each once.
fn forwarded(p: &mut Problems, list: &[At<String>], key: &str) -> Vec<ForwardedHeader> {
    let mut out = Vec::new();
    for (i, w) in list.iter().enumerate() {
        match ForwardedHeader::parse(w.get_ref()) {
            Some(h) if out.contains(&h) => p.at(
                w.at(),
                format!("{key}.forwarded_headers[{i}]"),
                format!("\"{}\" is listed twice", w.get_ref()),
            ),
            Some(h) => out.push(h),
            None => p.at(
                w.at(),
                format!("{key}.forwarded_headers[{i}]"),
                format!(
                    "unknown header \"{}\" (use x-forwarded-for, x-forwarded-proto, x-forwarded-host, forwarded)",
                    w.get_ref()
                ),
            ),
        }
    }
    out
}

pub(super) fn routes(
    p: &mut Problems,
    all: &[At<RouteFile>],
    upstreams: &[Upstream],
    cors: &[NamedCors],
    declared_cors: &[&String],
    profiles: &[Profile],
    from_cluster: bool,
) -> Vec<Route> {
    // With [kubernetes] the routes may all come from the cluster (and none before its sync).
    if all.is_empty() && !from_cluster {
        p.at(
            crate::config::Location::Default,
            "route",
            "no [[route]] is configured: stitch would answer every request with 404",
        );
    }
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in all.iter().enumerate() {
        let key = format!("route[{i}]");
        let RouteFile {
            name,
            host,
            path,
            upstream,
            cors: cors_name,
            propagation,
            exact,
            forwarded_headers,
            request_id,
            max_body_bytes,
        } = r.get_ref();
        let max_body_bytes = max_body_bytes
            .as_ref()
            .map(|m| p.within(m, &format!("{key}.max_body_bytes"), 0..=i64::MAX, 0) as u64);
        if !path.get_ref().starts_with('/') {
            p.at(
                path.at(),
                format!("{key}.path"),
                format!("must start with '/', got \"{}\"", path.get_ref()),
            );
        }
        let host_match = host
            .as_ref()
            .and_then(|h| match HostMatch::parse(h.get_ref()) {
                Ok(m) => Some(m),
                Err(m) => {
                    p.at(h.at(), format!("{key}.host"), m);
                    None
                }
            });
        let route_name = match name {
            Some(n) => n.get_ref().clone(),
            None => format!(
                "{}{}",
                host.as_ref().map(|h| h.get_ref().as_str()).unwrap_or(""),
                path.get_ref()
            ),
        };
        if !names.insert(route_name.clone()) {
            let at = name.as_ref().map(At::at).unwrap_or(r.at());
            p.at(
                at,
                format!("{key}.name"),
                format!("duplicate route name \"{route_name}\""),
            );
        }
        let match_key = (
            host.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
            path.get_ref().clone(),
            *exact,
        );
        if !matches.insert(match_key) {
            p.at(
                path.at(),
                format!("{key}.path"),
                format!(
                    "duplicate route: another route already matches host {} and path \"{}\"",
                    host.as_ref()
                        .map(|h| format!("\"{}\"", h.get_ref()))
                        .unwrap_or_else(|| "(any)".into()),
                    path.get_ref()
                ),
            );
        }
        let up = upstream.get_ref();
        let target = if up == ECHO_UPSTREAM {
            Some(Target::Echo)
        } else if let Some(idx) = upstreams.iter().position(|u| &u.name == up) {
            Some(Target::Pool(idx))
        } else {
            p.at(
                upstream.at(),
                format!("{key}.upstream"),
                format!(
                    "no upstream named \"{up}\" (define [upstream.{up}] or use \"{ECHO_UPSTREAM}\")"
                ),
            );
            None
        };
        let cors_idx = cors_name.as_ref().and_then(|c| {
            if !declared_cors.contains(&c.get_ref()) {
                p.at(
                    c.at(),
                    format!("{key}.cors"),
                    format!(
                        "no CORS policy named \"{0}\" (define [cors.{0}])",
                        c.get_ref()
                    ),
                );
            }
            cors.iter().position(|n| &n.name == c.get_ref())
        });
        let mut profile_idx = 0;
        if let Some(prop) = propagation {
            match profiles.iter().position(|n| &n.name == prop.get_ref()) {
                Some(i) => profile_idx = i,
                None => p.at(
                    prop.at(),
                    format!("{key}.propagation"),
                    format!(
                        "no propagation profile named \"{0}\" (define [propagation.{0}])",
                        prop.get_ref()
                    ),
                ),
            }
        }
        let forwarded_headers = match forwarded_headers {
            None => DEFAULT_FORWARDED.to_vec(),
            Some(list) => forwarded(p, list.get_ref(), &key),
        };
        if let Some(target) = target {
            routes.push(Route {
                name: route_name,
                host: host_match,
                path: path.get_ref().clone(),
                exact: *exact,
                target,
                cors: cors_idx,
                propagation: profile_idx,
                forwarded_headers,
                request_id: *request_id,
                max_body_bytes,
            });
        }
    }
    routes
}
