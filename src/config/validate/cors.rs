//! `[cors.NAME]`: CORS policies.

use std::collections::BTreeMap;

use super::Problems;
use crate::config::description::CorsFile;
use crate::config::{At, Location, NamedCors};
use crate::cors::{CorsPolicy, CorsSpec, PreflightMode};

pub(super) fn policies(p: &mut Problems, all: &BTreeMap<String, At<CorsFile>>) -> Vec<NamedCors> {
    all.iter()
        .filter_map(|(name, c)| policy(p, name, c))
        .collect()
}

fn policy(p: &mut Problems, name: &str, c: &At<CorsFile>) -> Option<NamedCors> {
    let key = format!("cors.{name}");
    let CorsFile {
        allowed_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials,
        max_age,
        preflight,
    } = c.get_ref();
    let mode = match preflight.as_ref().map(|v| v.get_ref().as_str()) {
        None | Some("answer") => PreflightMode::Answer,
        Some("augment") => PreflightMode::Augment,
        Some(other) => {
            p.at(
                preflight.as_ref().map(At::at).unwrap_or(Location::Default),
                format!("{key}.preflight"),
                format!("must be \"answer\" or \"augment\", got \"{other}\""),
            );
            PreflightMode::Answer
        }
    };
    let max_age = max_age
        .as_ref()
        .map(|v| p.within(v, &format!("{key}.max_age"), 0..=86_400, 0) as u32);
    let spec = CorsSpec {
        allowed_origins: allowed_origins.get_ref().clone(),
        allow_methods: allow_methods.clone(),
        allow_headers: allow_headers.clone(),
        expose_headers: expose_headers.clone(),
        allow_credentials: *allow_credentials,
        max_age,
        preflight: mode,
    };
    match CorsPolicy::new(spec) {
        Ok(policy) => Some(NamedCors {
            name: name.to_string(),
            policy,
        }),
        Err(problems) => {
            for m in problems {
                p.at(allowed_origins.at(), key.clone(), m);
            }
            None
        }
    }
}
