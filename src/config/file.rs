//! The TOML source: reads the file into a [`Description`], applies the environment, validates,
//! and turns byte offsets into line numbers for every error.

use std::path::Path;

use super::kubernetes::{self, Cluster, Verdict};
use super::{env, validate, Config, ConfigError, ConfigErrors, Description, Loaded, Location};

/// Read and load a configuration file; `get` looks up environment variables.
pub fn load(path: &Path, get: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigErrors> {
    load_with(path, get, None).map(|(loaded, _)| loaded)
}

/// Read a configuration file and, when it has `[kubernetes]` and `cluster` is given, merge
/// the cluster's objects into it; the verdicts say which objects are served.
pub fn load_with(
    path: &Path,
    get: &dyn Fn(&str) -> Option<String>,
    cluster: Option<&Cluster>,
) -> Result<(Loaded, Vec<Verdict>), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_path_buf(),
        errors: vec![ConfigError {
            at: Location::Default,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }],
    })?;
    let fail = |errors| ConfigErrors {
        file: path.to_path_buf(),
        errors,
    };
    let desc = describe(&text, get).map_err(fail)?;
    let merged = match cluster {
        Some(cluster) => kubernetes::merge(desc, cluster),
        None => validate(&desc).map(|c| (c, Vec::new(), String::new())),
    };
    match merged {
        Ok((config, verdicts, cluster)) => Ok((
            Loaded {
                config,
                text,
                cluster,
            },
            verdicts,
        )),
        Err(errors) => Err(fail(locate(&text, errors))),
    }
}

/// Parse, override and validate configuration text. Errors are sorted by line.
pub fn parse(text: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
    let desc = describe(text, get)?;
    validate(&desc).map_err(|errors| locate(text, errors))
}

/// Parse configuration text into a description and apply the environment's overrides.
fn describe(
    text: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Description, Vec<ConfigError>> {
    let mut desc: Description = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => return Err(vec![syntax_error(text, &e)]),
    };
    env::apply(&mut desc, get);
    Ok(desc)
}

/// Turn byte offsets (and defaults, by their key) into lines and sort by line.
fn locate(text: &str, mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    for e in &mut errors {
        match e.at {
            Location::Offset(o) => e.at = Location::Line(line_of(text, o)),
            Location::Default => e.at = Location::Line(line_of_key(text, &e.key)),
            _ => {}
        }
    }
    errors.sort_by_key(|e| e.line());
    errors
}

/// Turn a serde/TOML error into a [`ConfigError`] with the line and the key path.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    let message = e.message().trim().replace('\n', " ");
    ConfigError {
        at: Location::Line(line_of(text, offset)),
        key: key_path_at(text, offset),
        // The TOML parser gives no message for a value cut off by the end of the text.
        message: if message.is_empty() {
            "TOML syntax error: the value is missing or cut short".into()
        } else {
            message
        },
    }
}

/// The line to name for an error whose value has no location of its own (`listen = []`, or
/// no `[[route]]` at all): the key's line in its table, else the first header of the table
/// (or of the key itself, for `[[route]]`), else the end of the text, where it is missing.
pub(crate) fn line_of_key(text: &str, key: &str) -> usize {
    let path: Vec<&str> = key
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    let (leaf, table) = path.split_last().map_or(("", &[][..]), |(l, t)| (*l, t));
    let (table, whole) = (table.join("."), path.join("."));
    let mut current = String::new();
    let mut header = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            current = table_name(t);
            if header.is_none() && (current == whole || current == table) {
                header = Some(i + 1);
            }
        } else if current == table
            && t.split_once('=').map(|(k, _)| k.trim().trim_matches('"')) == Some(leaf)
        {
            return i + 1;
        }
    }
    header.unwrap_or_else(|| text.lines().count().max(1))
}

/// The name in a `[table]` or `[[array]]` header line.
fn table_name(header: &str) -> String {
    header
        .trim_start_matches('[')
        .split(']')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Best-effort dotted key path at a byte offset: the nearest `[table]` header above it plus the
/// key on that line.
pub(crate) fn key_path_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let idx = line_no.saturating_sub(1).min(lines.len().saturating_sub(1));
    let mut table = String::new();
    for l in lines.iter().take(idx + 1).rev() {
        let t = l.trim();
        if t.starts_with('[') {
            table = table_name(t);
            break;
        }
    }
    let key = lines
        .get(idx)
        .map(|l| l.trim())
        .filter(|l| !l.starts_with('[') && l.contains('='))
        .and_then(|l| l.split('=').next())
        .map(|k| k.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}
