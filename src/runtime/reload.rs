//! Live reload: on SIGHUP, or when the config's directory changes, the file is read again,
//! validated and compiled, and only then swapped in. A bad file leaves the running runtime
//! untouched and every problem logged with its line.
//!
//! [`Sources::rebuild`] is the one way a new runtime is made after the first: the reloader
//! calls it for the file, the Kubernetes controller for the cluster's objects (merged with the
//! file), one rebuild at a time.
//!
//! The watch is on the *directory*, not the file: editors and Kubernetes replace the file by a
//! rename (a ConfigMap volume swaps a `..data` symlink), which a watch on the file itself would
//! miss. Events are debounced, and a change is applied only when the content hash (the file's
//! text and every file it references) differs from what is served.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{compile, config_hash, EndpointFeed, Live, Runtime, Task};
use crate::config::kubernetes::{Cluster, Verdict};
use crate::config::{self, Config};
use crate::inspect::Inspector;
use crate::metrics::Metrics;

/// How long the directory must stay quiet before a change is read (an editor's save or a
/// ConfigMap swap is several events).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Reloads the live runtime from its file.
pub struct Reloader {
    pub sources: Arc<Sources>,
    /// Watch the config's directory (off: SIGHUP only).
    pub watch: bool,
    /// Set once the SIGHUP handler and the watch are in place (`/readyz` waits for it: before
    /// it a SIGHUP would end the process and a change of the file would go unseen).
    pub installed: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a reload was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChange,
    /// The Kubernetes objects changed.
    Cluster,
}

/// The second source of the configuration: the cluster's objects as the controller keeps them.
pub trait ClusterSource: Send + Sync {
    /// The objects to merge with the file (none before the first sync).
    fn objects(&self) -> Option<Cluster>;
    /// Where pools of Services find their endpoints.
    fn feed(&self) -> Arc<dyn EndpointFeed>;
    /// What became of each object after a rebuild (served or refused).
    fn verdicts(&self, verdicts: Vec<Verdict>);
}

/// Where the configuration comes from, and the runtime it is compiled into.
pub struct Sources {
    pub path: PathBuf,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// With `[kubernetes]`: the cluster's objects.
    pub cluster: Option<Arc<dyn ClusterSource>>,
    /// The request inspector, whose capacity and Datadog site follow the configuration.
    pub inspector: Arc<Inspector>,
    /// One rebuild at a time (a file change and a cluster change may come together).
    rebuilding: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new runtime serves; the keys listed changed but wait for a restart.
    Applied {
        generation: u64,
        restart_needed: Vec<&'static str>,
    },
    /// Same content as served: nothing to do.
    Unchanged,
    /// Refused; the running runtime keeps serving.
    Failed(String),
}

impl Reloader {
    /// Start the tasks the first runtime needs, then reload on every trigger until `shutdown`.
    pub async fn run(self, initial: Vec<Task>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        for t in initial {
            tokio::spawn(t);
        }
        let self_ = Arc::new(self);
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        // The names in the watched directories that matter: the config file, the files it
        // references, and `..data` (a ConfigMap volume swaps that symlink). Anything else in
        // those directories (logs, other files) is not a change of configuration.
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let relevant = names.clone();
        let mut watcher = if self_.watch {
            match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let change = match res {
                    // Only changes count: stitch's own reads of the file must not trigger reloads.
                    Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
                    Ok(e) => {
                        let names = relevant.lock().unwrap_or_else(|p| p.into_inner());
                        e.paths
                            .iter()
                            .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
                            || e.need_rescan()
                    }
                    Err(_) => true,
                };
                if change {
                    let _ = tx.send(());
                }
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!(
                        "cannot watch the configuration's directory ({e}); reload with SIGHUP"
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut watched = HashSet::new();
        if let Some(w) = watcher.as_mut() {
            watch_dirs(
                w,
                &mut watched,
                &names,
                &self_.sources.path,
                &self_.sources.live.snapshot().config,
            );
        }
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot install the SIGHUP handler: {e}");
                None
            }
        };
        self_
            .installed
            .store(true, std::sync::atomic::Ordering::Release);
        loop {
            let trigger = tokio::select! {
                _ = async { hup.as_mut().unwrap().recv().await }, if hup.is_some() => Trigger::Signal,
                Some(()) = rx.recv() => {
                    // Debounce: wait until the directory has been quiet for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    Trigger::FileChange
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
            };
            let sources = self_.sources.clone();
            let outcome = match tokio::task::spawn_blocking(move || sources.rebuild(trigger)).await
            {
                Ok(o) => o,
                Err(e) => (
                    Outcome::Failed(format!("reload task failed: {e}")),
                    Vec::new(),
                ),
            };
            let (outcome, tasks) = outcome;
            for t in tasks {
                tokio::spawn(t);
            }
            if let (Outcome::Applied { .. }, Some(w)) = (&outcome, watcher.as_mut()) {
                let s = &self_.sources;
                watch_dirs(w, &mut watched, &names, &s.path, &s.live.snapshot().config);
            }
        }
    }
}

impl Sources {
    pub fn new(
        path: PathBuf,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<dyn ClusterSource>>,
        inspector: Arc<Inspector>,
    ) -> Sources {
        Sources {
            path,
            live,
            metrics,
            cluster,
            inspector,
            rebuilding: Mutex::new(()),
        }
    }

    /// Read the file (and take the cluster's objects), validate, compile and swap. Blocking
    /// (file reads, name resolution). Nothing changes unless all of it succeeds.
    pub fn rebuild(&self, trigger: Trigger) -> (Outcome, Vec<Task>) {
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        let m = &self.metrics.config;
        let current = self.live.snapshot();
        let fail = |why: String| {
            m.reloads.with_label_values(&["failure"]).inc();
            m.last_successful.set(0);
            log::error!(
                "configuration reload refused, still serving generation {}:\n{why}",
                current.generation
            );
            (Outcome::Failed(why), Vec::new())
        };
        let objects = self
            .cluster
            .as_ref()
            .map(|c| c.objects().unwrap_or_default());
        let env = |k: &str| std::env::var(k).ok();
        let (loaded, verdicts) = match config::file::load_with(&self.path, &env, objects.as_ref()) {
            Ok(l) => l,
            Err(errors) => return fail(errors.to_string()),
        };
        if let Some(c) = &self.cluster {
            c.verdicts(verdicts);
        }
        let hash = config_hash(&loaded);
        if hash == current.hash {
            if trigger == Trigger::Signal {
                log::info!("SIGHUP: configuration unchanged (hash {hash})");
                m.reloads.with_label_values(&["success"]).inc();
                m.last_successful.set(1);
                m.last_success_time.set(unix_now());
            }
            return (Outcome::Unchanged, Vec::new());
        }
        let restart_needed = restart_keys(&current.config, &loaded.config);
        let generation = current.generation + 1;
        let (rt, tasks) = match compile(
            loaded.config,
            hash.clone(),
            generation,
            &self.metrics,
            Some(&current),
            self.cluster.as_ref().map(|c| c.feed()).as_ref(),
        ) {
            Ok(x) => x,
            Err(why) => return fail(format!("{}: {why}", self.path.display())),
        };
        let removed: Vec<Arc<str>> = current
            .routes
            .iter()
            .filter(|old| !rt.routes.iter().any(|r| r.name == old.name))
            .map(|r| r.name.clone())
            .collect();
        let inspect = rt.config.inspect.clone();
        let old = self.live.swap(rt);
        self.inspector.configure(inspect.requests, inspect.dd_site);
        // A pool of Services made during the compile read the endpoints as they were then; one
        // that changed since was refreshed in the runtime that was serving, not in this one.
        for pool in &self.live.snapshot().pools {
            if !pool.cfg.backends.is_empty() {
                pool.refresh();
            }
        }
        super::tls::record_expiry(&self.metrics, Some(&old), &self.live.snapshot());
        for name in &removed {
            self.metrics.remove_route(name);
        }
        let _ = m.info.remove_label_values(&[&old.hash]);
        m.info.with_label_values(&[&hash]).set(1.0);
        m.reloads.with_label_values(&["success"]).inc();
        m.last_successful.set(1);
        m.last_success_time.set(unix_now());
        let why = match trigger {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
            Trigger::Cluster => "Kubernetes objects",
        };
        log::info!("configuration reloaded ({why}): generation {generation}, hash {hash}");
        if !restart_needed.is_empty() {
            log::warn!(
                "configuration reload: these changed keys take effect only after a restart: {}",
                restart_needed.join(", ")
            );
        }
        (
            Outcome::Applied {
                generation,
                restart_needed,
            },
            tasks,
        )
    }
}

/// Record the first runtime in the metrics.
pub fn record_initial(metrics: &Metrics, rt: &Runtime) {
    let m = &metrics.config;
    m.info.with_label_values(&[&rt.hash]).set(1.0);
    m.last_successful.set(1);
    m.last_success_time.set(unix_now());
    super::tls::record_expiry(metrics, None, rt);
}

/// The keys whose change needs a restart: what Pingora fixes when the server starts.
pub fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    // The listeners Pingora binds: addresses, TLS on or off, and what each serves. Their
    // certificates are not here: those reload live.
    let shape = |s: &crate::config::ServerSettings| -> Vec<_> {
        s.listeners
            .iter()
            .map(|l| (l.address.clone(), l.tls.is_some(), l.serve.clone()))
            .collect()
    };
    check(shape(a) != shape(b), "server.listen / server.listener");
    check(a.threads != b.threads, "server.threads");
    check(a.work_stealing != b.work_stealing, "server.work_stealing");
    check(
        a.upstream_keepalive_pool != b.upstream_keepalive_pool,
        "server.upstream_keepalive_pool",
    );
    check(
        a.read_buffer_bytes != b.read_buffer_bytes,
        "server.read_buffer_bytes",
    );
    check(a.pid_file != b.pid_file, "server.pid_file");
    check(a.upgrade_sock != b.upgrade_sock, "server.upgrade_sock");
    check(old.admin_listen != new.admin_listen, "admin.listen");
    // The controller starts with the process: its watches and Lease keep the settings they
    // started with (the classes and what status says are read again on every rebuild).
    match (&old.kubernetes, &new.kubernetes) {
        (Some(a), Some(b)) => {
            check(a.namespaces != b.namespaces, "kubernetes.namespaces");
            check(
                a.lease_namespace != b.lease_namespace
                    || a.lease_name != b.lease_name
                    || a.lease_duration != b.lease_duration,
                "kubernetes.lease_*",
            );
        }
        (a, b) => check(a.is_some() != b.is_some(), "kubernetes"),
    }
    keys
}

/// Watch the directory of the config and of every file it references (non-recursively), and
/// record the names that matter in them.
fn watch_dirs(
    w: &mut impl Watcher,
    watched: &mut HashSet<PathBuf>,
    names: &Mutex<HashSet<OsString>>,
    path: &Path,
    config: &Config,
) {
    let mut files = vec![path.to_path_buf()];
    files.extend(config.referenced_files());
    {
        let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
        names.insert(OsString::from("..data"));
        names.extend(
            files
                .iter()
                .filter_map(|f| f.file_name().map(OsString::from)),
        );
    }
    for f in files {
        let dir = match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if watched.contains(&dir) {
            continue;
        }
        match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir);
            }
            Err(e) => log::warn!("cannot watch {}: {e}", dir.display()),
        }
    }
}

/// Seconds since the Unix epoch, for the timestamp gauges.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::restart_keys;
    use crate::config::{parse, Config};

    const ROUTE: &str = "[[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\n";

    fn with(server: &str) -> Config {
        parse(&format!("[server]\n{server}\n{ROUTE}")).unwrap()
    }

    #[test]
    #[rustfmt::skip]
    fn listener_changes_wait_for_a_restart() {
        let base = "listen = [\"127.0.0.1:8080\"]\n[[server.listener]]\naddress = \"127.0.0.1:8081\"";
        let table: &[(&str, bool, &str)] = &[
            (base, false, "the same listeners"),
            ("listen = [\"127.0.0.1:8080\"]\n[[server.listener]]\naddress = \"127.0.0.1:8082\"", true, "an address"),
            ("listen = [\"127.0.0.1:8080\"]\n[[server.listener]]\naddress = \"127.0.0.1:8081\"\nh2c = true", true, "h2c"),
            ("listen = [\"127.0.0.1:8080\"]\n[[server.listener]]\naddress = \"127.0.0.1:8081\"\nredirect_to_https = true", true, "a redirect"),
            ("listen = [\"127.0.0.1:8080\"]\ntrusted_proxies = [\"10.0.0.1\"]\n[[server.listener]]\naddress = \"127.0.0.1:8081\"\nproxy_protocol = true", true, "the PROXY protocol"),
            ("listen = [\"127.0.0.1:8080\"]\nproxy_protocol_timeout_ms = 100\n[[server.listener]]\naddress = \"127.0.0.1:8081\"", false, "the header timeout (read per connection)"),
            ("listen = [\"127.0.0.1:8080\"]", true, "a listener removed"),
        ];
        let old = with(base);
        for (new, restart, why) in table {
            let keys = restart_keys(&old, &with(new));
            assert_eq!(keys.contains(&"server.listen / server.listener"), *restart, "{why}: {keys:?}");
        }
    }

    #[test]
    fn the_controllers_start_up_settings_wait_for_a_restart() {
        let base = "[kubernetes]\nnamespaces = [\"a\"]\n";
        #[rustfmt::skip]
        let rows: &[(&str, &[&str])] = &[
            (base, &[]),
            ("[kubernetes]\nnamespaces = [\"a\"]\ningress_class = \"other\"\n", &[]),
            ("[kubernetes]\nnamespaces = [\"b\"]\n", &["kubernetes.namespaces"]),
            ("[kubernetes]\nnamespaces = [\"a\"]\npublish_address = [\"1.2.3.4\"]\n", &[]),
            ("[kubernetes]\nnamespaces = [\"a\"]\nlease_duration_seconds = 30\n", &["kubernetes.lease_*"]),
            ("[[route]]\nupstream = \"builtin:echo\"\n", &["kubernetes"]),
        ];
        let old = parse(base).unwrap();
        for (text, want) in rows {
            assert_eq!(&restart_keys(&old, &parse(text).unwrap()), want, "{text}");
        }
    }
}
