//! `[propagation.NAME]`: propagation profiles (formats and sampling).

use std::collections::BTreeMap;

use super::Problems;
use crate::config::description::{PropagationFile, TrustFile};
use crate::config::{At, Profile};
use crate::propagation::{Format, DEFAULT_EXTRACT, DEFAULT_INJECT};
use crate::sampling::{InjectionMode, MissingDecision, SamplingPolicy, Trust};

/// Every profile; the default profile comes first (built in unless `[propagation.default]`
/// redefines it).
pub(super) fn profiles(
    p: &mut Problems,
    all: &BTreeMap<String, At<PropagationFile>>,
) -> Vec<Profile> {
    let mut profiles = vec![Profile {
        name: Profile::DEFAULT.to_string(),
        extract: DEFAULT_EXTRACT.to_vec(),
        inject: DEFAULT_INJECT.to_vec(),
        sampling: SamplingPolicy::default(),
        baggage_tags: Profile::default_baggage_tags(),
    }];
    for (name, f) in all {
        let profile = profile(p, name, f);
        if name == Profile::DEFAULT {
            profiles[0] = profile;
        } else {
            profiles.push(profile);
        }
    }
    profiles
}

fn profile(p: &mut Problems, name: &str, f: &At<PropagationFile>) -> Profile {
    let key = format!("propagation.{name}");
    let PropagationFile {
        extract,
        inject,
        injection,
        sample_rate,
        missing_decision,
        trust,
        max_incoming_priority,
        baggage_tags,
    } = f.get_ref();
    let baggage_tags = tag_keys(p, baggage_tags, &format!("{key}.baggage_tags"));
    let extract = formats(p, extract, &format!("{key}.extract"), DEFAULT_EXTRACT);
    let inject = formats(p, inject, &format!("{key}.inject"), DEFAULT_INJECT);
    let mut sampling = SamplingPolicy::default();
    if let Some(v) = injection {
        match v.get_ref().as_str() {
            "sampled" => sampling.injection = InjectionMode::Sampled,
            "all" => sampling.injection = InjectionMode::All,
            other => p.at(
                v.at(),
                format!("{key}.injection"),
                format!("must be \"sampled\" or \"all\", got \"{other}\""),
            ),
        }
    }
    if let Some(v) = missing_decision {
        match v.get_ref().as_str() {
            "drop" => sampling.missing_decision = MissingDecision::Drop,
            "sample" => sampling.missing_decision = MissingDecision::Sample,
            other => p.at(
                v.at(),
                format!("{key}.missing_decision"),
                format!("must be \"drop\" or \"sample\", got \"{other}\""),
            ),
        }
    }
    if let Some(v) = sample_rate {
        sampling.sample_rate = *v.get_ref();
    }
    if let Some(v) = max_incoming_priority {
        sampling.max_incoming_priority =
            (*v.get_ref()).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    }
    if let Some(v) = trust {
        sampling.trust = self::trust(p, v, &key);
    }
    if let Err(problems) = sampling.validate() {
        for m in problems {
            p.at(f.at(), key.clone(), m);
        }
    }
    Profile {
        name: name.to_string(),
        extract,
        inject,
        sampling,
        baggage_tags,
    }
}

/// A list of format names, or `default` when the key is absent.
fn formats(
    p: &mut Problems,
    list: &Option<At<Vec<At<String>>>>,
    key: &str,
    default: &[Format],
) -> Vec<Format> {
    let Some(list) = list else {
        return default.to_vec();
    };
    let mut out = Vec::new();
    for (i, w) in list.get_ref().iter().enumerate() {
        match Format::parse(w.get_ref()) {
            Some(fmt) if out.contains(&fmt) => p.at(
                w.at(),
                format!("{key}[{i}]"),
                format!("\"{}\" is listed twice", w.get_ref()),
            ),
            Some(fmt) => out.push(fmt),
            None => p.at(
                w.at(),
                format!("{key}[{i}]"),
                format!(
                    "unknown format \"{}\" (use datadog, tracecontext, b3, b3multi, baggage)",
                    w.get_ref()
                ),
            ),
        }
    }
    out
}

/// `baggage_tags`: distinct baggage keys (RFC 7230 tokens), at most
/// [`baggage::MAX_TAG_KEYS`](crate::propagation::baggage::MAX_TAG_KEYS).
fn tag_keys(p: &mut Problems, list: &Option<At<Vec<At<String>>>>, key: &str) -> Vec<String> {
    let Some(list) = list else {
        return Profile::default_baggage_tags();
    };
    let max = crate::propagation::baggage::MAX_TAG_KEYS;
    if list.get_ref().len() > max {
        p.at(
            list.at(),
            key,
            format!("at most {max} keys, got {}", list.get_ref().len()),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, k) in list.get_ref().iter().enumerate().take(max) {
        let name = k.get_ref();
        if !crate::propagation::baggage::is_key(name) {
            p.at(
                k.at(),
                format!("{key}[{i}]"),
                format!("\"{name}\" is not a baggage key (a token such as session.id)"),
            );
        } else if out.contains(name) {
            p.at(
                k.at(),
                format!("{key}[{i}]"),
                format!("\"{name}\" is listed twice"),
            );
        } else {
            out.push(name.clone());
        }
    }
    out
}

/// `trust = "any" | "none" | [CIDR, ...]`.
fn trust(p: &mut Problems, v: &At<TrustFile>, key: &str) -> Trust {
    match v.get_ref() {
        TrustFile::Word(w) if w == "any" => Trust::Any,
        TrustFile::Word(w) if w == "none" => Trust::None,
        TrustFile::Word(w) => {
            p.at(
                v.at(),
                format!("{key}.trust"),
                format!("must be \"any\", \"none\" or a list of CIDRs, got \"{w}\""),
            );
            Trust::Any
        }
        TrustFile::Cidrs(list) => {
            let mut nets = Vec::new();
            for (i, c) in list.iter().enumerate() {
                match c
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                {
                    Ok(n) => nets.push(n),
                    Err(_) => p.at(
                        v.at(),
                        format!("{key}.trust[{i}]"),
                        format!("`{c}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address"),
                    ),
                }
            }
            Trust::Cidrs(nets)
        }
    }
}
