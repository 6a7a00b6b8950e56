//! `[propagation.NAME]`: propagation profiles (formats, how they are read, and sampling).

use std::collections::BTreeMap;

use super::Problems;
use crate::config::description::{PropagationFile, TrustFile};
use crate::config::{At, Profile};
use crate::propagation::{
    ExtractBehavior, Format, TracestateInvalid, DEFAULT_EXTRACT, DEFAULT_INJECT,
};
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
        tracestate_invalid: TracestateInvalid::default(),
        extract_first: false,
        extract_behavior: ExtractBehavior::default(),
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
        tracestate_invalid,
        extract_first,
        extract_behavior,
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
    let behavior = self::extract_behavior(p, extract_behavior, trust, &key);
    if let Some(v) = trust {
        sampling.trust = self::trust(p, v, &key);
    }
    let tracestate_invalid = match tracestate_invalid {
        None => TracestateInvalid::default(),
        Some(v) => TracestateInvalid::parse(v.get_ref()).unwrap_or_else(|| {
            p.at(
                v.at(),
                format!("{key}.tracestate_invalid"),
                format!(
                    "must be \"drop_member\" or \"discard_header\", got \"{}\"",
                    v.get_ref()
                ),
            );
            TracestateInvalid::default()
        }),
    };
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
        tracestate_invalid,
        extract_first: extract_first.as_ref().is_some_and(|v| *v.get_ref()),
        extract_behavior: behavior,
    }
}

/// `extract_behavior = "continue" | "restart" | "ignore"`; `trust = "none"` is the older
/// spelling of `"restart"` and may only be combined with it.
fn extract_behavior(
    p: &mut Problems,
    v: &Option<At<String>>,
    trust: &Option<At<TrustFile>>,
    key: &str,
) -> ExtractBehavior {
    let configured = v.as_ref().map(|v| {
        ExtractBehavior::parse(v.get_ref()).unwrap_or_else(|| {
            p.at(
                v.at(),
                format!("{key}.extract_behavior"),
                format!(
                    "must be \"continue\", \"restart\" or \"ignore\", got \"{}\"",
                    v.get_ref()
                ),
            );
            ExtractBehavior::default()
        })
    });
    let trust_none = trust
        .as_ref()
        .filter(|t| matches!(t.get_ref(), TrustFile::Word(w) if w == "none"));
    match (configured, trust_none) {
        (Some(b), Some(t)) if b != ExtractBehavior::Restart => {
            p.at(
                t.at(),
                format!("{key}.trust"),
                format!(
                    "\"none\" means extract_behavior = \"restart\", which contradicts extract_behavior = \"{}\"",
                    b.name()
                ),
            );
            b
        }
        (Some(b), _) => b,
        (None, Some(_)) => ExtractBehavior::Restart,
        (None, None) => ExtractBehavior::default(),
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

/// `trust = "any" | [CIDR, ...]`; `"none"` continues every client here and is read as
/// `extract_behavior = "restart"` by [`extract_behavior`].
fn trust(p: &mut Problems, v: &At<TrustFile>, key: &str) -> Trust {
    match v.get_ref() {
        TrustFile::Word(w) if w == "any" || w == "none" => Trust::Any,
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
                match super::cidr(c) {
                    Ok(n) => nets.push(n),
                    Err(m) => p.at(v.at(), format!("{key}.trust[{i}]"), m),
                }
            }
            Trust::Cidrs(nets)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Profile};
    use crate::propagation::{ExtractBehavior, TracestateInvalid};
    use crate::sampling::Trust;

    fn profile(keys: &str) -> Result<Profile, String> {
        let text = format!(
            "[propagation.p]\n{keys}\n\n[[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\npropagation = \"p\"\n"
        );
        match parse(&text) {
            Ok(c) => Ok(c
                .profiles
                .into_iter()
                .find(|p| p.name == "p")
                .expect("profile p")),
            Err(e) => Err(e
                .iter()
                .map(|e| format!("{}: {}: {}", e.line(), e.key, e.message))
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    /// The three keys, their defaults, and `trust = "none"` as the older spelling of
    /// `extract_behavior = "restart"`. Columns: keys, (tracestate_invalid, extract_first,
    /// extract_behavior, trust is CIDRs) or the expected problem, reason.
    #[test]
    #[rustfmt::skip]
    fn extraction_keys() {
        use ExtractBehavior::{Continue, Ignore, Restart};
        use TracestateInvalid::{DiscardHeader, DropMember};
        type Want = Result<(TracestateInvalid, bool, ExtractBehavior, bool), &'static str>;
        let rows: &[(&str, Want, &str)] = &[
            ("",                                                    Ok((DropMember, false, Continue, false)), "defaults"),
            ("tracestate_invalid = \"discard_header\"",             Ok((DiscardHeader, false, Continue, false)), "discard_header"),
            ("tracestate_invalid = \"drop_member\"",                Ok((DropMember, false, Continue, false)), "drop_member"),
            ("extract_first = true",                                Ok((DropMember, true, Continue, false)), "extract_first"),
            ("extract_first = false",                               Ok((DropMember, false, Continue, false)), "extract_first off"),
            ("extract_behavior = \"restart\"",                      Ok((DropMember, false, Restart, false)), "restart"),
            ("extract_behavior = \"ignore\"",                       Ok((DropMember, false, Ignore, false)), "ignore"),
            ("extract_behavior = \"continue\"",                     Ok((DropMember, false, Continue, false)), "continue"),
            ("trust = \"none\"",                                    Ok((DropMember, false, Restart, false)), "trust = none is restart"),
            ("trust = \"none\"\nextract_behavior = \"restart\"",     Ok((DropMember, false, Restart, false)), "both spellings agree"),
            ("trust = [\"10.0.0.0/8\"]\nextract_behavior = \"ignore\"", Ok((DropMember, false, Ignore, true)), "trust keeps its CIDR meaning beside a behaviour"),
            ("trust = \"none\"\nextract_behavior = \"ignore\"",      Err("2: propagation.p.trust: \"none\" means extract_behavior = \"restart\", which contradicts extract_behavior = \"ignore\""), "contradiction"),
            ("trust = \"none\"\nextract_behavior = \"continue\"",    Err("2: propagation.p.trust: \"none\" means extract_behavior = \"restart\""), "contradiction with continue"),
            ("tracestate_invalid = \"strict\"",                     Err("2: propagation.p.tracestate_invalid: must be \"drop_member\" or \"discard_header\", got \"strict\""), "bad policy"),
            ("extract_behavior = \"drop\"",                         Err("2: propagation.p.extract_behavior: must be \"continue\", \"restart\" or \"ignore\", got \"drop\""), "bad behaviour"),
            ("extract_first = \"yes\"",                             Err("propagation.p.extract_first"), "extract_first is a boolean"),
            ("trust = \"nobody\"",                                  Err("2: propagation.p.trust: must be \"any\", \"none\" or a list of CIDRs"), "trust words unchanged"),
        ];
        for &(keys, ref want, why) in rows {
            let got = profile(keys);
            match (want, &got) {
                (Ok((ts, first, b, cidrs)), Ok(p)) => {
                    assert_eq!((p.tracestate_invalid, p.extract_first, p.extract_behavior), (*ts, *first, *b), "{why}");
                    assert_eq!(matches!(p.sampling.trust, Trust::Cidrs(_)), *cidrs, "{why}");
                }
                (Err(e), Err(g)) => assert!(g.contains(e), "{why}: expected `{e}` in `{g}`"),
                _ => panic!("{why}: {got:?}"),
            }
        }
    }
}
