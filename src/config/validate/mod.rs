//! Validation: a [`Description`] becomes a [`Config`], one function per section, every problem
//! collected (not just the first), each with its location, key path and reason.

mod cors;
mod export;
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
    } = d;
    let mut p = Problems::default();
    let server = server::server(&mut p, server);
    let (admin_listen, inspect) = server::admin(&mut p, admin);
    let service = server::service(service);
    let access_log = server::access_log(&mut p, access_log);
    let upstreams = upstream::upstreams(&mut p, upstream);
    let declared_cors: Vec<&String> = cors.keys().collect();
    let cors = cors::policies(&mut p, cors);
    let profiles = propagation::profiles(&mut p, propagation);
    let export = export::export(&mut p, export);
    let routes = route::routes(&mut p, route, &upstreams, &cors, &declared_cors, &profiles);
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
    })
}
