//! Validation: a [`Description`] becomes a [`Config`], one function per section, every problem
//! collected (not just the first), each with its location, key path and reason.

mod cors;
mod export;
mod kubernetes;
mod listener;
mod propagation;
mod route;
mod server;
mod upstream;

use std::time::Duration;

use super::{At, Config, ConfigError, Description, Location};

/// The problems found so far.
#[derive(Default)]
pub(crate) struct Problems {
    list: Vec<ConfigError>,
}

impl Problems {
    pub(crate) fn at(&mut self, at: Location, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            at,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A positive number of milliseconds.
    pub(crate) fn ms(&mut self, v: &At<i64>, key: String) -> Duration {
        let n = *v.get_ref();
        if n <= 0 {
            self.at(
                v.at(),
                key,
                format!("must be a positive number of milliseconds, got {n}"),
            );
            return Duration::from_millis(1);
        }
        Duration::from_millis(n as u64)
    }

    /// An integer within `range`, or the problem and `fallback`.
    pub(crate) fn within(
        &mut self,
        v: &At<i64>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        fallback: i64,
    ) -> i64 {
        let n = *v.get_ref();
        if range.contains(&n) {
            return n;
        }
        self.at(
            v.at(),
            key,
            format!(
                "must be between {} and {}, got {n}",
                range.start(),
                range.end()
            ),
        );
        fallback
    }
}

/// A CIDR (`10.0.0.0/8`) or a single address (`192.0.2.7`, taken as /32 or /128). A CIDR with
/// host bits set (`10.0.0.1/8`) is refused: it reads like one address but would match a network.
pub(crate) fn cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    match s.parse::<ipnet::IpNet>() {
        Ok(n) if n.addr() != n.network() => Err(format!(
            "`{s}` has host bits set: write `{}` for the network or `{}` for the address",
            n.trunc(),
            n.addr()
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`{s}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address"
        )),
    }
}

/// Validate a description. Errors keep the locations the source gave them.
pub fn validate(d: &Description) -> Result<Config, Vec<ConfigError>> {
    let Description {
        server,
        admin,
        service,
        export,
        access_log,
        upstream,
        cors,
        propagation,
        route,
        kubernetes,
    } = d;
    let mut p = Problems::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let server = server::server(&mut p, server, now);
    let (admin_listen, inspect) = server::admin(&mut p, admin);
    let service = server::service(service);
    let access_log = server::access_log(&mut p, access_log);
    let upstreams = upstream::upstreams(&mut p, upstream);
    let declared_cors: Vec<&String> = cors.keys().collect();
    let cors = cors::policies(&mut p, cors);
    let profiles = propagation::profiles(&mut p, propagation);
    let export = export::export(&mut p, export);
    let kubernetes = kubernetes
        .as_ref()
        .map(|k| kubernetes::kubernetes(&mut p, k));
    let routes = route::routes(
        &mut p,
        route,
        &upstreams,
        &cors,
        &declared_cors,
        &profiles,
        kubernetes.is_some(),
    );
    if !p.list.is_empty() {
        return Err(p.list);
    }
    Ok(Config {
        server,
        admin_listen,
        inspect,
        service,
        access_log,
        upstreams,
        routes,
        cors,
        profiles,
        export,
        kubernetes,
    })
}
