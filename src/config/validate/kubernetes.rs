//! `[kubernetes]`: the ingress controller mode.

use std::net::IpAddr;
use std::time::Duration;

use super::Problems;
use crate::config::description::KubernetesFile;
use crate::config::{At, KubernetesSettings, Publish};
use crate::routing::HostMatch;

pub(super) fn kubernetes(p: &mut Problems, k: &At<KubernetesFile>) -> KubernetesSettings {
    let KubernetesFile {
        ingress_class,
        controller_name,
        namespaces,
        publish_service,
        publish_address,
        lease_namespace,
        lease_name,
        lease_duration_seconds,
    } = k.get_ref();
    for (key, v) in [
        ("kubernetes.ingress_class", ingress_class),
        ("kubernetes.lease_name", lease_name),
    ] {
        if !is_dns_label_or_subdomain(v.get_ref()) {
            p.at(
                v.at(),
                key,
                format!(
                    "`{}` is not a Kubernetes object name (lower case letters, digits, '-' and '.')",
                    v.get_ref()
                ),
            );
        }
    }
    // A GatewayClass controllerName is a domain-prefixed path: `example.com/name`.
    let valid_controller = controller_name
        .get_ref()
        .split_once('/')
        .is_some_and(|(domain, path)| is_dns_label_or_subdomain(domain) && !path.is_empty());
    if !valid_controller {
        p.at(
            controller_name.at(),
            "kubernetes.controller_name",
            format!(
                "`{}` is not a domain-prefixed path such as `example.com/gateway-controller`",
                controller_name.get_ref()
            ),
        );
    }
    let mut names = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        if is_dns_label(ns.get_ref()) {
            names.push(ns.get_ref().clone());
        } else {
            p.at(
                ns.at(),
                format!("kubernetes.namespaces[{i}]"),
                format!("`{}` is not a namespace name", ns.get_ref()),
            );
        }
    }
    if let Some(ns) = lease_namespace {
        if !is_dns_label(ns.get_ref()) {
            p.at(
                ns.at(),
                "kubernetes.lease_namespace",
                format!("`{}` is not a namespace name", ns.get_ref()),
            );
        }
    }
    let publish = match (publish_service, publish_address) {
        (Some(s), Some(_)) => {
            p.at(
                s.at(),
                "kubernetes.publish_service",
                "give publish_service or publish_address, not both",
            );
            Publish::Nothing
        }
        (Some(s), None) => match s.get_ref().split_once('/') {
            Some((ns, name)) if is_dns_label(ns) && is_dns_label_or_subdomain(name) => {
                Publish::Service {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                }
            }
            _ => {
                p.at(
                    s.at(),
                    "kubernetes.publish_service",
                    format!("`{}` is not `namespace/name` of a Service", s.get_ref()),
                );
                Publish::Nothing
            }
        },
        (None, Some(a)) => {
            for (i, addr) in a.get_ref().iter().enumerate() {
                if addr.parse::<IpAddr>().is_err() && HostMatch::parse(addr).is_err() {
                    p.at(
                        a.at(),
                        format!("kubernetes.publish_address[{i}]"),
                        format!("`{addr}` is neither an IP address nor a host name"),
                    );
                }
            }
            Publish::Addresses(a.get_ref().clone())
        }
        (None, None) => Publish::Nothing,
    };
    let seconds = p.within(
        lease_duration_seconds,
        "kubernetes.lease_duration_seconds",
        1..=3600,
        15,
    );
    KubernetesSettings {
        ingress_class: ingress_class.get_ref().clone(),
        controller_name: controller_name.get_ref().clone(),
        namespaces: names,
        publish,
        lease_namespace: lease_namespace.as_ref().map(|n| n.get_ref().clone()),
        lease_name: lease_name.get_ref().clone(),
        lease_duration: Duration::from_secs(seconds as u64),
    }
}

/// An RFC 1123 label: what a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: what most object names must be.
fn is_dns_label_or_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Publish};

    #[test]
    fn the_section_is_checked_key_by_key() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>)] = &[
            ("", None),
            ("namespaces = [\"edge\", \"shop\"]", None),
            ("namespaces = [\"Edge\"]", Some("kubernetes.namespaces[0]")),
            ("ingress_class = \"a b\"", Some("kubernetes.ingress_class")),
            ("controller_name = \"stitch\"", Some("kubernetes.controller_name")),
            ("publish_service = \"edge/stitch\"", None),
            ("publish_service = \"stitch\"", Some("kubernetes.publish_service")),
            ("publish_address = [\"203.0.113.7\", \"lb.example.com\"]", None),
            ("publish_address = [\"http://x\"]", Some("kubernetes.publish_address[0]")),
            ("publish_service = \"a/b\"\npublish_address = [\"1.2.3.4\"]", Some("kubernetes.publish_service")),
            ("lease_namespace = \"-x\"", Some("kubernetes.lease_namespace")),
            ("lease_duration_seconds = 0", Some("kubernetes.lease_duration_seconds")),
            ("watch_secrets = true", Some("kubernetes.watch_secrets")),
        ];
        for (keys, error) in rows {
            let text = format!("[kubernetes]\n{keys}\n");
            let got = parse(&text).err().map(|e| e[0].key.clone());
            assert_eq!(got.as_deref(), *error, "{keys}");
        }
        let config = parse("[kubernetes]\npublish_service = \"edge/stitch\"\n").unwrap();
        let k = config.kubernetes.unwrap();
        assert_eq!(k.ingress_class, "stitch");
        assert_eq!(
            k.publish,
            Publish::Service {
                namespace: "edge".into(),
                name: "stitch".into()
            }
        );
        assert!(
            config.routes.is_empty(),
            "the routes may all come from the cluster"
        );
    }
}
