//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! the holder renews `renewTime` every third of the lease duration; another replica takes the
//! Lease over once it has seen the same record unchanged for a whole duration (its own clock
//! only, so clock skew between nodes does not matter). Writes carry the `resourceVersion` they
//! read, so two replicas racing for the Lease cannot both win. Only the leader writes status;
//! every replica serves traffic either way. A leader stopping on SIGTERM gives the Lease up
//! (no holder, a 1 s duration), so another replica takes it over at its next round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use super::ClusterState;
use crate::metrics::Metrics;

/// This replica's name in the Lease: the pod's name (`POD_NAME`, from the downward API), else
/// the host name, with the process id.
pub fn identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME") {
        if !name.is_empty() {
            return name;
        }
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "stitch".into());
    format!("{host}-{}", std::process::id())
}

/// Asks the election to give the Lease up, and waits for it to be done.
pub struct ReleaseHandle {
    requests: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

/// The election's end of a [`ReleaseHandle`].
pub type ReleaseRequests = tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>;

impl ReleaseHandle {
    pub fn new() -> (ReleaseHandle, ReleaseRequests) {
        let (requests, rx) = tokio::sync::mpsc::channel(1);
        (ReleaseHandle { requests }, rx)
    }

    /// Give the Lease up if this replica holds it; waits at most `within`.
    pub async fn release(&self, within: Duration) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.requests.try_send(done).is_ok() {
            let _ = tokio::time::timeout(within, wait).await;
        }
    }
}

/// One replica's part in the election.
pub struct Election {
    pub client: Client,
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub metrics: Arc<Metrics>,
}

/// The Lease record as last read, and when this replica first saw it.
struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<i32>),
    since: Instant,
}

impl Election {
    /// Try to acquire or renew every third of the duration, forever. `leading` is true while
    /// this replica holds the Lease.
    pub async fn run(
        self,
        leading: Arc<AtomicBool>,
        state: Arc<ClusterState>,
        mut release: Option<ReleaseRequests>,
    ) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut observed: Option<Observed> = None;
        let mut renewed: Option<Instant> = None;
        let mut tick = tokio::time::interval(self.duration / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(done) = async { release.as_mut()?.recv().await }, if release.is_some() => {
                    if leading.swap(false, Ordering::AcqRel) {
                        self.metrics.kubernetes.leader.set(0);
                        if let Err(e) = self.give_up(&api).await {
                            log::warn!("kubernetes: giving lease {}/{} up: {e}", self.namespace, self.name);
                        } else {
                            log::info!("kubernetes: {} gave lease {}/{} up", self.identity, self.namespace, self.name);
                        }
                    }
                    let _ = done.send(());
                    // Stopping: never take the Lease again.
                    return;
                }
            }
            let now_leading = match self.step(&api, &mut observed).await {
                Ok(l) => {
                    if l {
                        renewed = Some(Instant::now());
                    }
                    l
                }
                Err(e) => {
                    log::warn!("kubernetes: lease {}/{}: {e}", self.namespace, self.name);
                    // Without a renewal the Lease runs out; stop writing before others may.
                    leading.load(Ordering::Acquire)
                        && renewed.is_some_and(|r| r.elapsed() < self.duration)
                }
            };
            let was = leading.swap(now_leading, Ordering::AcqRel);
            self.metrics.kubernetes.leader.set(i64::from(now_leading));
            if now_leading != was {
                log::info!(
                    "kubernetes: {} {} the leader (lease {}/{})",
                    self.identity,
                    if now_leading {
                        "is now"
                    } else {
                        "is no longer"
                    },
                    self.namespace,
                    self.name
                );
                if now_leading {
                    // A new leader writes every status it disagrees with.
                    state.changed.notify_one();
                }
            }
        }
    }

    /// One round: read the Lease, then create, renew or take it over when this replica may.
    async fn step(&self, api: &Api<Lease>, observed: &mut Option<Observed>) -> kube::Result<bool> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    *observed = None;
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_transitions,
        );
        let changed = observed.as_ref().is_none_or(|o| o.record != record);
        if changed {
            *observed = Some(Observed {
                record,
                since: Instant::now(),
            });
        }
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.duration);
        let expired = observed
            .as_ref()
            .is_some_and(|o| o.since.elapsed() >= duration);
        if !mine && held && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.clone().unwrap_or_else(|| now.clone())
        } else {
            now.clone()
        };
        let mut next = lease;
        next.spec = Some(self.spec(acquired, now, transitions));
        match api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => {
                *observed = None;
                Ok(true)
            }
            // Another replica wrote first: it holds the Lease now.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Leave the Lease without a holder, expiring at once, if this replica still holds it.
    async fn give_up(&self, api: &Api<Lease>) -> kube::Result<()> {
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Taken over meanwhile: nothing of ours to give up.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}
