//! Environment overrides, applied to a [`Description`] here and nowhere else, so that
//! `stitch check` validates them like any other value and reports them by variable name.
//!
//! - `DD_SERVICE`, `DD_ENV`, `DD_VERSION`: the service settings.
//! - `DD_SITE`: the Datadog site the inspector links traces to (`admin.dd_site`).
//! - `DD_TRACE_AGENT_URL`, else `DD_AGENT_HOST` / `DD_TRACE_AGENT_PORT` (the missing one taken
//!   from the configured URL): the Datadog Agent address.
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` +
//!   `/v1/traces`: the OTLP endpoint.
//!
//! Blank values are ignored. They move an exporter the config turned on; they never turn one on.

use super::description::Description;
use super::{At, Location};

pub use crate::span::export::DEFAULT_AGENT_URL;
/// The OTLP/HTTP traces endpoint when the config names none.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";
/// The path OTLP/HTTP serves traces on, appended to `OTEL_EXPORTER_OTLP_ENDPOINT`.
const OTLP_TRACES_PATH: &str = "/v1/traces";

/// Apply the overrides found by `get` to `desc`.
pub fn apply(desc: &mut Description, get: &dyn Fn(&str) -> Option<String>) {
    let var = |k: &str| {
        get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(v) = var("DD_SERVICE") {
        desc.service.name = v;
    }
    if let Some(v) = var("DD_ENV") {
        desc.service.env = Some(v);
    }
    if let Some(v) = var("DD_VERSION") {
        desc.service.version = Some(v);
    }
    if let Some(v) = var("DD_SITE") {
        desc.admin.dd_site = Some(At::new(v, Location::Env("DD_SITE")));
    }

    if let Some(dd) = desc.export.datadog.as_mut() {
        let dd = dd.get_mut();
        if let Some(url) = var("DD_TRACE_AGENT_URL") {
            dd.agent_url = Some(At::new(url, Location::Env("DD_TRACE_AGENT_URL")));
        } else {
            let host = var("DD_AGENT_HOST");
            let port = var("DD_TRACE_AGENT_PORT");
            if host.is_some() || port.is_some() {
                let configured = dd
                    .agent_url
                    .as_ref()
                    .map(|u| u.get_ref().as_str())
                    .unwrap_or(DEFAULT_AGENT_URL);
                let (cfg_host, cfg_port) = host_port(configured)
                    .unwrap_or_else(|| ("127.0.0.1".to_string(), "8126".to_string()));
                let which = if host.is_some() {
                    "DD_AGENT_HOST"
                } else {
                    "DD_TRACE_AGENT_PORT"
                };
                let host = host.unwrap_or(cfg_host);
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host
                };
                let url = format!("http://{host}:{}", port.unwrap_or(cfg_port));
                dd.agent_url = Some(At::new(url, Location::Env(which)));
            }
        }
    }
    if let Some(o) = desc.export.otlp.as_mut() {
        let o = o.get_mut();
        if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            o.endpoint = Some(At::new(
                url,
                Location::Env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            ));
        } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let url = format!("{}{OTLP_TRACES_PATH}", base.trim_end_matches('/'));
            o.endpoint = Some(At::new(url, Location::Env("OTEL_EXPORTER_OTLP_ENDPOINT")));
        }
    }
}

/// Host and port of an `http://host:port[/path]` URL (brackets kept on an IPv6 host).
fn host_port(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?;
    let host = authority.host().to_string();
    let port = authority.port_u16().unwrap_or(80).to_string();
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(text: &str) -> Description {
        toml::from_str(text).unwrap()
    }

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const BOTH: &str = "[export.datadog]\nagent_url = \"http://agent.local:9126\"\n\
                        [export.otlp]\nendpoint = \"http://collector:4318/v1/traces\"\n";

    #[test]
    #[rustfmt::skip]
    fn exporter_address_overrides() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, &str, &str, &str)] = &[
            (&[], "http://agent.local:9126", "http://collector:4318/v1/traces", "nothing set"),
            (&[("DD_TRACE_AGENT_URL", "unix:///var/run/datadog/apm.socket"), ("DD_AGENT_HOST", "x")], "unix:///var/run/datadog/apm.socket", "http://collector:4318/v1/traces", "URL wins over host"),
            (&[("DD_AGENT_HOST", "dd")], "http://dd:9126", "http://collector:4318/v1/traces", "port from config"),
            (&[("DD_TRACE_AGENT_PORT", "1234")], "http://agent.local:1234", "http://collector:4318/v1/traces", "host from config"),
            (&[("DD_AGENT_HOST", "::1"), ("DD_TRACE_AGENT_PORT", "1")], "http://[::1]:1", "http://collector:4318/v1/traces", "v6 bracketed"),
            (&[("DD_TRACE_AGENT_URL", "  ")], "http://agent.local:9126", "http://collector:4318/v1/traces", "blank ignored"),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o:4318/")], "http://agent.local:9126", "http://o:4318/v1/traces", "base + /v1/traces"),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom")], "http://agent.local:9126", "http://t:1/custom", "traces endpoint as is, wins"),
        ];
        for (vars, want_dd, want_ot, why) in cases {
            let mut d = desc(BOTH);
            apply(&mut d, &lookup(vars));
            let dd = d.export.datadog.as_ref().unwrap().get_ref().agent_url.clone().unwrap();
            let ot = d.export.otlp.as_ref().unwrap().get_ref().endpoint.clone().unwrap();
            assert_eq!((dd.get_ref().as_str(), ot.get_ref().as_str()), (*want_dd, *want_ot), "{why}");
        }
    }

    #[test]
    fn overrides_are_located_by_variable() {
        let mut d = desc(BOTH);
        apply(&mut d, &lookup(&[("DD_AGENT_HOST", "dd")]));
        let dd = d.export.datadog.unwrap().into_inner().agent_url.unwrap();
        assert_eq!(dd.at(), Location::Env("DD_AGENT_HOST"));
    }

    #[test]
    fn env_does_not_enable_exporters() {
        let mut d = desc("");
        apply(
            &mut d,
            &lookup(&[
                ("DD_TRACE_AGENT_URL", "http://a:1"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b:2"),
            ]),
        );
        assert!(d.export.datadog.is_none() && d.export.otlp.is_none());
    }

    #[test]
    fn dd_site_sets_the_inspector_site_by_variable() {
        let mut d = desc("[admin]\ndd_site = \"datadoghq.com\"\n");
        apply(&mut d, &lookup(&[("DD_SITE", " datadoghq.eu ")]));
        let site = d.admin.dd_site.unwrap();
        assert_eq!(site.get_ref(), "datadoghq.eu");
        assert_eq!(site.at(), Location::Env("DD_SITE"));
    }

    #[test]
    fn service_overrides_only_non_empty_values() {
        let mut d = desc("[service]\nname = \"edge\"\nenv = \"staging\"\n");
        apply(
            &mut d,
            &lookup(&[
                ("DD_SERVICE", "front"),
                ("DD_ENV", "  "),
                ("DD_VERSION", "1.2.3"),
            ]),
        );
        assert_eq!(d.service.name, "front");
        assert_eq!(
            d.service.env.as_deref(),
            Some("staging"),
            "blank DD_ENV ignored"
        );
        assert_eq!(d.service.version.as_deref(), Some("1.2.3"));
    }
}
