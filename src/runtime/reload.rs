//! Live reload: on SIGHUP, or when the config's directory changes, the file is read again,
//! validated and compiled, and only then swapped in. A bad file leaves the running runtime
//! untouched and every problem logged with its line.
//!
//! The watch is on the *directory*, not the file: editors and Kubernetes replace the file by a
//! rename (a ConfigMap volume swaps a `..data` symlink), which a watch on the file itself would
//! miss. Events are debounced, and a change is applied only when the content hash (the file's
//! text and every file it references) differs from what is served.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{compile, config_hash, Live, Runtime, Task};
use crate::config::{self, Config};
use crate::inspect::Inspector;
use crate::metrics::Metrics;

/// How long the directory must stay quiet before a change is read (an editor's save or a
/// ConfigMap swap is several events).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Reloads the live runtime from its file.
pub struct Reloader {
    pub path: PathBuf,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// The request inspector, whose capacity and Datadog site follow the configuration.
    pub inspector: Arc<Inspector>,
    /// Watch the config's directory (off: SIGHUP only).
    pub watch: bool,
}

/// Why a reload was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChange,
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
        let mut watcher = if self_.watch {
            match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                // Only changes count: stitch's own reads of the file must not trigger reloads.
                let change = res.map_or(true, |e| !matches!(e.kind, notify::EventKind::Access(_)));
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
            watch_dirs(w, &mut watched, &self_.path, &self_.live.snapshot().config);
        }
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot install the SIGHUP handler: {e}");
                None
            }
        };
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
            let me = self_.clone();
            let outcome = match tokio::task::spawn_blocking(move || me.reload(trigger)).await {
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
                watch_dirs(w, &mut watched, &self_.path, &self_.live.snapshot().config);
            }
        }
    }

    /// Read, validate, compile and swap. Blocking (file reads, name resolution).
    pub fn reload(&self, trigger: Trigger) -> (Outcome, Vec<Task>) {
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
        let loaded = match config::load(&self.path) {
            Ok(l) => l,
            Err(errors) => return fail(errors.to_string()),
        };
        let hash = config_hash(&loaded.text, &loaded.config);
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
    check(a.listen != b.listen, "server.listen");
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
    keys
}

/// Watch the directory of the config and of every file it references (non-recursively).
fn watch_dirs(w: &mut impl Watcher, watched: &mut HashSet<PathBuf>, path: &Path, config: &Config) {
    let mut files = vec![path.to_path_buf()];
    files.extend(config.referenced_files());
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

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
