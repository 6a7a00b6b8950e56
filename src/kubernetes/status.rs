//! Status, written by the leader only: an Ingress stitch serves gets `status.loadBalancer` from
//! `publish_service` / `publish_address` (a refused one gets it emptied, and a Warning Event
//! with the reason); an HTTPRoute gets one `status.parents[]` entry per Gateway of stitch's,
//! with `Accepted` and `ResolvedRefs` conditions. Other controllers' entries are kept. A status
//! is patched only when it differs from what the object shows.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_api::httproutes::{HttpRoute, HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::ClusterState;
use crate::config::kubernetes::{Cluster, Refusal, Verdict};
use crate::config::{KubernetesSettings, ObjectRef, Publish};
use crate::metrics::Metrics;

/// The field manager stitch's status writes are recorded under.
const FIELD_MANAGER: &str = "stitch";
/// `reportingController` of stitch's Events.
const REPORTING_CONTROLLER: &str = "stitch.dev/ingress-controller";
/// Statuses are compared again this often even without a change (a failed write is retried).
const RESYNC: Duration = Duration::from_secs(10);

/// Writes status while this replica leads.
pub struct Writer {
    pub client: Client,
    /// The runtime served: its `[kubernetes]` (publish, controller name) is the one in force.
    pub live: Arc<crate::runtime::Live>,
    pub state: Arc<ClusterState>,
    pub identity: String,
    pub metrics: Arc<Metrics>,
}

/// One status write to make.
enum Write {
    Ingress {
        object: ObjectRef,
        ingress: Vec<IngressLoadBalancerIngress>,
    },
    HttpRoute {
        object: ObjectRef,
        parents: Vec<HttpRouteStatusParents>,
    },
    Event {
        object: ObjectRef,
        uid: Option<String>,
        refusal: Refusal,
    },
}

impl Writer {
    pub async fn run(self, leading: Arc<AtomicBool>) {
        let mut evented: HashSet<(ObjectRef, Option<i64>, &'static str)> = HashSet::new();
        loop {
            tokio::select! {
                _ = self.state.changed.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            if !leading.load(Ordering::Acquire) {
                continue;
            }
            let verdicts = self.state.verdicts();
            let Some(settings) = self.live.snapshot().config.kubernetes.clone() else {
                continue;
            };
            let writes = {
                let cluster = self.state.read();
                plan(&cluster, &verdicts, &settings, &mut evented)
            };
            for w in writes {
                if let Err(e) = self.write(w).await {
                    log::warn!("kubernetes: status write failed: {e}");
                }
            }
        }
    }

    async fn write(&self, w: Write) -> kube::Result<()> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let m = &self.metrics.kubernetes.status_writes;
        match w {
            Write::Ingress { object, ingress } => {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), &object.namespace);
                let body = json!({"status": {"loadBalancer": {"ingress": ingress}}});
                api.patch_status(&object.name, &pp, &Patch::Merge(&body))
                    .await?;
                m.with_label_values(&["ingress"]).inc();
            }
            Write::HttpRoute { object, parents } => {
                let api: Api<HttpRoute> = Api::namespaced(self.client.clone(), &object.namespace);
                let body = json!({"status": {"parents": parents}});
                api.patch_status(&object.name, &pp, &Patch::Merge(&body))
                    .await?;
                m.with_label_values(&["httproute"]).inc();
            }
            Write::Event {
                object,
                uid,
                refusal,
            } => {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &object.namespace);
                let now = k8s_openapi::jiff::Timestamp::now();
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(format!("{}.{:x}", object.name, now.as_nanosecond())),
                        namespace: Some(object.namespace.clone()),
                        ..Default::default()
                    },
                    event_time: Some(MicroTime(now)),
                    type_: Some("Warning".into()),
                    reason: Some(refusal.reason.into()),
                    note: Some(truncate(&refusal.message, 1024)),
                    action: Some("Refuse".into()),
                    reporting_controller: Some(REPORTING_CONTROLLER.into()),
                    reporting_instance: Some(truncate(&self.identity, 128)),
                    regarding: Some(ObjectReference {
                        api_version: Some("networking.k8s.io/v1".into()),
                        kind: Some("Ingress".into()),
                        namespace: Some(object.namespace.clone()),
                        name: Some(object.name.clone()),
                        uid,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &event).await?;
                m.with_label_values(&["event"]).inc();
            }
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The writes that make every object's status what the verdicts say. `evented` remembers the
/// refusals already reported by an Event (one per object generation and reason).
fn plan(
    cluster: &Cluster,
    verdicts: &[Verdict],
    settings: &KubernetesSettings,
    evented: &mut HashSet<(ObjectRef, Option<i64>, &'static str)>,
) -> Vec<Write> {
    let published = published(cluster, &settings.publish);
    let mut writes = Vec::new();
    for v in verdicts {
        let key = (v.object.namespace.clone(), v.object.name.clone());
        match v.object.kind {
            "ingress" => {
                let Some(ing) = cluster.ingresses.get(&key) else {
                    continue;
                };
                // Its TLS refused: said by an Event; its routes serve, so it is published.
                if let (Ok(()), Err(r)) = (&v.accepted, &v.resolved) {
                    if evented.insert((v.object.clone(), v.generation, r.reason)) {
                        writes.push(Write::Event {
                            object: v.object.clone(),
                            uid: ing.metadata.uid.clone(),
                            refusal: r.clone(),
                        });
                    }
                }
                let desired = match (&v.accepted, &published) {
                    (Ok(()), Some(p)) => p.clone(),
                    (Ok(()), None) => continue,
                    (Err(r), _) => {
                        if evented.insert((v.object.clone(), v.generation, r.reason)) {
                            writes.push(Write::Event {
                                object: v.object.clone(),
                                uid: ing.metadata.uid.clone(),
                                refusal: r.clone(),
                            });
                        }
                        Vec::new()
                    }
                };
                let observed = ing
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.clone())
                    .unwrap_or_default();
                if observed != desired {
                    writes.push(Write::Ingress {
                        object: v.object.clone(),
                        ingress: desired,
                    });
                }
            }
            "httproute" => {
                let Some(route) = cluster.http_routes.get(&key) else {
                    continue;
                };
                let observed = route
                    .status
                    .as_ref()
                    .map(|s| s.parents.clone())
                    .unwrap_or_default();
                let parents = route_parents(v, &observed, &settings.controller_name);
                if parents != observed {
                    writes.push(Write::HttpRoute {
                        object: v.object.clone(),
                        parents,
                    });
                }
            }
            _ => {}
        }
    }
    writes
}

/// The addresses Ingresses are published at, if any are configured (and known).
fn published(cluster: &Cluster, publish: &Publish) -> Option<Vec<IngressLoadBalancerIngress>> {
    match publish {
        Publish::Nothing => None,
        Publish::Addresses(a) => Some(
            a.iter()
                .map(|addr| {
                    let is_ip = addr.parse::<std::net::IpAddr>().is_ok();
                    IngressLoadBalancerIngress {
                        ip: is_ip.then(|| addr.clone()),
                        hostname: (!is_ip).then(|| addr.clone()),
                        ..Default::default()
                    }
                })
                .collect(),
        ),
        Publish::Service { namespace, name } => {
            let svc = cluster.services.get(&(namespace.clone(), name.clone()))?;
            let lb = svc
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?;
            Some(
                lb.iter()
                    .map(|i| IngressLoadBalancerIngress {
                        ip: i.ip.clone(),
                        hostname: i.hostname.clone(),
                        ..Default::default()
                    })
                    .collect(),
            )
        }
    }
}

/// An HTTPRoute's `status.parents`: the other controllers' entries as they are, then one per
/// parent of stitch's with `Accepted` and `ResolvedRefs` (a condition keeps its
/// `lastTransitionTime` while its status stays the same).
fn route_parents(
    v: &Verdict,
    observed: &[HttpRouteStatusParents],
    controller: &str,
) -> Vec<HttpRouteStatusParents> {
    let mut parents: Vec<HttpRouteStatusParents> = observed
        .iter()
        .filter(|p| p.controller_name != controller)
        .cloned()
        .collect();
    for p in &v.parents {
        let parent_ref = HttpRouteStatusParentsParentRef {
            group: Some(
                p.group
                    .clone()
                    .unwrap_or_else(|| "gateway.networking.k8s.io".into()),
            ),
            kind: Some(p.kind.clone().unwrap_or_else(|| "Gateway".into())),
            name: p.name.clone(),
            namespace: Some(
                p.namespace
                    .clone()
                    .unwrap_or_else(|| v.object.namespace.clone()),
            ),
            port: p.port,
            section_name: p.section_name.clone(),
        };
        let before = observed
            .iter()
            .find(|o| o.controller_name == controller && o.parent_ref == parent_ref);
        let conditions = vec![
            condition("Accepted", &v.accepted, v.generation, before),
            condition("ResolvedRefs", &v.resolved, v.generation, before),
        ];
        parents.push(HttpRouteStatusParents {
            conditions,
            controller_name: controller.to_string(),
            parent_ref,
        });
    }
    parents
}

fn condition(
    kind: &str,
    outcome: &Result<(), Refusal>,
    generation: Option<i64>,
    before: Option<&HttpRouteStatusParents>,
) -> Condition {
    let (status, reason, message) = match outcome {
        Ok(()) => ("True", kind.to_string(), String::new()),
        Err(r) => ("False", r.reason.to_string(), r.message.clone()),
    };
    let last = before
        .and_then(|b| b.conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| {
            Time(
                k8s_openapi::jiff::Timestamp::now()
                    .round(k8s_openapi::jiff::Unit::Second)
                    .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
            )
        });
    Condition {
        type_: kind.to_string(),
        status: status.into(),
        reason,
        message: truncate(&message, 32_768),
        observed_generation: generation,
        last_transition_time: last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kubernetes::Key;
    use serde_json::json;

    fn object(kind: &'static str, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn verdict(kind: &'static str, name: &str, accepted: Result<(), Refusal>) -> Verdict {
        Verdict {
            object: object(kind, name),
            generation: Some(2),
            accepted,
            resolved: Ok(()),
            parents: Vec::new(),
        }
    }

    fn settings(publish: Publish) -> KubernetesSettings {
        KubernetesSettings {
            ingress_class: "stitch".into(),
            controller_name: "stitch.dev/gateway-controller".into(),
            namespaces: Vec::new(),
            publish,
            lease_namespace: None,
            lease_name: "l".into(),
            lease_duration: Duration::from_secs(15),
        }
    }

    fn key(name: &str) -> Key {
        ("default".into(), name.into())
    }

    fn with_ingress(status: serde_json::Value) -> Cluster {
        let mut c = Cluster::default();
        let ing: Ingress = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"namespace": "default", "name": "web", "uid": "u-1"},
            "spec": {}, "status": status,
        }))
        .unwrap();
        c.ingresses.insert(key("web"), Arc::new(ing));
        c
    }

    #[test]
    fn ingress_status_is_written_only_when_it_differs_and_refusals_get_one_event() {
        let publish = settings(Publish::Addresses(vec![
            "203.0.113.7".into(),
            "lb.example.com".into(),
        ]));
        let ok = [verdict("ingress", "web", Ok(()))];
        let mut evented = HashSet::new();
        let writes = plan(&with_ingress(json!({})), &ok, &publish, &mut evented);
        let [Write::Ingress { ingress, .. }] = &writes[..] else {
            panic!("one status write")
        };
        let json = serde_json::to_value(ingress).unwrap();
        assert_eq!(
            json,
            json!([{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}])
        );
        let shown = json!({"loadBalancer": {"ingress": json}});
        assert!(plan(&with_ingress(shown.clone()), &ok, &publish, &mut evented).is_empty());
        // Nothing to publish: the status is left alone.
        assert!(plan(
            &with_ingress(json!({})),
            &ok,
            &settings(Publish::Nothing),
            &mut evented
        )
        .is_empty());

        let refused = [verdict(
            "ingress",
            "web",
            Err(Refusal {
                reason: "UnknownCorsPolicy",
                message: "m".into(),
            }),
        )];
        let writes = plan(
            &with_ingress(shown.clone()),
            &refused,
            &publish,
            &mut evented,
        );
        assert!(
            matches!(&writes[..], [Write::Event { refusal, uid: Some(u), .. }, Write::Ingress { ingress, .. }]
            if refusal.reason == "UnknownCorsPolicy" && u == "u-1" && ingress.is_empty())
        );
        let again = plan(&with_ingress(json!({})), &refused, &publish, &mut evented);
        assert!(
            again.is_empty(),
            "one Event per generation and reason, and the status is empty"
        );
    }

    #[test]
    fn route_status_keeps_other_controllers_and_transition_times() {
        let mut v = verdict("httproute", "r", Ok(()));
        v.parents = vec![serde_json::from_value(json!({"name": "same-namespace"})).unwrap()];
        let ours = "stitch.dev/gateway-controller";
        let foreign: HttpRouteStatusParents = serde_json::from_value(json!({
            "controllerName": "example.com/other", "parentRef": {"name": "theirs"},
            "conditions": [],
        }))
        .unwrap();
        let first = route_parents(&v, std::slice::from_ref(&foreign), ours);
        assert_eq!(first[0], foreign, "the other controller's entry is kept");
        let mine = &first[1];
        assert_eq!(mine.parent_ref.namespace.as_deref(), Some("default"));
        assert_eq!(mine.parent_ref.kind.as_deref(), Some("Gateway"));
        let reasons: Vec<(&str, &str, &str, Option<i64>)> = mine
            .conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.observed_generation,
                )
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ("Accepted", "True", "Accepted", Some(2)),
                ("ResolvedRefs", "True", "ResolvedRefs", Some(2))
            ]
        );

        // The same verdict again: exactly what is shown, so nothing to write.
        let mut shown = first.clone();
        let old = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap());
        for c in &mut shown[1].conditions {
            c.last_transition_time = old.clone();
        }
        assert_eq!(route_parents(&v, &shown, ours), shown);
        // A condition that flips gets a new transition time; the other keeps its own.
        v.resolved = Err(Refusal {
            reason: "BackendNotFound",
            message: "gone".into(),
        });
        let next = route_parents(&v, &shown, ours);
        let c = &next[1].conditions;
        assert_eq!(c[0].last_transition_time, old);
        assert_ne!(c[1].last_transition_time, old);
        assert_eq!(
            (c[1].status.as_str(), c[1].reason.as_str()),
            ("False", "BackendNotFound")
        );
    }
}
