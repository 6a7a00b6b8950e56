//! `[export]`: where edge spans go.

use std::time::Duration;

use super::Problems;
use crate::config::description::{DatadogExportFile, ExportFile, OtlpExportFile};
use crate::config::env::{DEFAULT_AGENT_URL, DEFAULT_OTLP_ENDPOINT};
use crate::config::{At, ExportSettings, PemFile};
use crate::span::http::Endpoint;

pub(super) fn export(p: &mut Problems, e: &ExportFile) -> ExportSettings {
    let ExportFile {
        datadog,
        otlp,
        queue_capacity,
        batch_size,
        flush_interval_ms,
        max_retries,
        retry_backoff_ms,
        request_timeout_ms,
        keep_query,
    } = e;
    let datadog_agent_url = datadog.as_ref().and_then(|d| {
        let DatadogExportFile { enabled, agent_url } = d.get_ref();
        enabled.then(|| match agent_url {
            Some(v) => url(p, v, "export.datadog.agent_url"),
            None => Some(DEFAULT_AGENT_URL.to_string()),
        })?
    });
    let mut otlp_ca = None;
    let otlp_endpoint = otlp.as_ref().and_then(|o| {
        let OtlpExportFile {
            enabled,
            endpoint,
            ca_file,
        } = o.get_ref();
        if !enabled {
            return None;
        }
        let endpoint = match endpoint {
            Some(v) => url(p, v, "export.otlp.endpoint"),
            None => Some(DEFAULT_OTLP_ENDPOINT.to_string()),
        };
        otlp_ca = ca_file.as_ref().and_then(|path| {
            let key = "export.otlp.ca_file";
            if endpoint
                .as_deref()
                .is_some_and(|e| !e.starts_with("https://"))
            {
                p.at(path.at(), key, "needs an https:// endpoint");
                return None;
            }
            match super::upstream::read_ca_file(path.get_ref()) {
                Ok(pem) => Some(PemFile {
                    path: path.get_ref().clone(),
                    pem,
                }),
                Err(why) => {
                    p.at(path.at(), key, why);
                    None
                }
            }
        });
        endpoint
    });
    let mut count = |v: &Option<At<i64>>, key: &str, default: i64, range| match v {
        None => default,
        Some(v) => p.within(v, key, range, default),
    };
    ExportSettings {
        datadog_agent_url,
        otlp_endpoint,
        otlp_ca,
        queue_capacity: count(queue_capacity, "export.queue_capacity", 4096, 1..=1_000_000)
            as usize,
        batch_size: count(batch_size, "export.batch_size", 256, 1..=100_000) as usize,
        flush_interval: Duration::from_millis(count(
            flush_interval_ms,
            "export.flush_interval_ms",
            1000,
            1..=600_000,
        ) as u64),
        max_retries: count(max_retries, "export.max_retries", 3, 0..=20) as u32,
        retry_backoff: Duration::from_millis(count(
            retry_backoff_ms,
            "export.retry_backoff_ms",
            200,
            1..=60_000,
        ) as u64),
        request_timeout: Duration::from_millis(count(
            request_timeout_ms,
            "export.request_timeout_ms",
            2000,
            1..=60_000,
        ) as u64),
        keep_query: *keep_query,
    }
}

/// An address the exporter can reach: `http[s]://host[:port][/path]` or `unix:///socket`.
fn url(p: &mut Problems, v: &At<String>, key: &str) -> Option<String> {
    let u = v.get_ref();
    match Endpoint::parse(u) {
        Ok(_) => Some(u.trim_end_matches('/').to_string()),
        Err(why) => {
            p.at(v.at(), key, format!("`{u}` is not a usable address: {why}"));
            None
        }
    }
}
