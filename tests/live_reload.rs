//! Live configuration: real processes, real signals, real files.
//!
//! - Under continuous load, 50 reloads alternating two configurations that differ in routes, a
//!   CORS origin, a propagation profile and the upstream pool: no request fails, and every
//!   answer is consistent with exactly one of the two configurations.
//! - A Kubernetes ConfigMap update reproduced on disk (`stitch.toml -> ..data/stitch.toml`,
//!   `..data -> ..<timestamp>`, a new timestamped directory and `..data_tmp` renamed over
//!   `..data`), an editor's rename, an in-place write and SIGHUP: each applies; an invalid file
//!   keeps the old configuration serving and sets the failure metric; a later valid file
//!   recovers.
//! - A binary upgrade (`stitch --upgrade`, then SIGQUIT to the old process) under load: no
//!   request fails.

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{base_config, get, metric, KeepAlive, Response, Stitch, Upstream};
use peers::{free_ports, wait_for};

/// Which of the two test configurations served an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    A,
    B,
}

const ORIGIN_A: &str = "https://a.example";
const ORIGIN_B: &str = "https://b.example";

/// Configuration A or B: the shared route `/api` goes to a one-server pool (A: `server_a`,
/// B: `server_b`), allows `ORIGIN_A` or `ORIGIN_B`, and injects Datadog (A) or tracecontext (B)
/// headers; each has one echo route of its own (`/only-a`, `/only-b`).
fn config(head: &str, which: Which, server_a: SocketAddr, server_b: SocketAddr) -> String {
    let (server, origin, inject, own, name) = match which {
        Which::A => (server_a, ORIGIN_A, "datadog", "/only-a", "own-a"),
        Which::B => (server_b, ORIGIN_B, "tracecontext", "/only-b", "own-b"),
    };
    format!(
        "{head}[upstream.backend]\nservers = [\"{server}\"]\n\n\
         [cors.web]\nallowed_origins = [\"{origin}\"]\n\n\
         [propagation.p]\nextract = [\"datadog\", \"tracecontext\"]\ninject = [\"{inject}\"]\n\n\
         [[route]]\nname = \"api\"\npath = \"/api\"\nupstream = \"backend\"\ncors = \"web\"\npropagation = \"p\"\n\n\
         [[route]]\nname = \"{name}\"\npath = \"{own}\"\nupstream = \"builtin:echo\"\n"
    )
}

/// A RUM-shaped request from `ORIGIN_A`.
const RUM: [(&str, &str); 4] = [
    ("origin", ORIGIN_A),
    ("x-datadog-trace-id", "6255592339373587297"),
    ("x-datadog-parent-id", "3245567862311265982"),
    ("x-datadog-sampling-priority", "1"),
];

/// An upstream that names itself in an `x-server` response header. It answers after a few
/// milliseconds, so reloads land while requests are in flight upstream.
fn named_upstream(name: &str) -> Upstream {
    Upstream::with(common::Behaviour {
        status: 200,
        headers: vec![("x-server".into(), name.into())],
        delay: Some(Duration::from_millis(5)),
        ..Default::default()
    })
}

/// Which configuration this `/api` answer is consistent with, or why it is consistent with
/// neither: A sends to server "a", allows `ORIGIN_A` and injects only Datadog headers; B sends
/// to "b", allows only `ORIGIN_B` and injects only `traceparent`.
fn judge(r: &Response) -> Result<Which, String> {
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.body));
    }
    let seen = r.json();
    let sent = |h: &str| seen["headers"].get(h).is_some();
    let acao = r.header("access-control-allow-origin");
    let a = r.header("x-server") == Some("a")
        && acao == Some(ORIGIN_A)
        && sent("x-datadog-trace-id")
        && !sent("traceparent");
    let b = r.header("x-server") == Some("b")
        && acao.is_none()
        && sent("traceparent")
        && !sent("x-datadog-trace-id");
    match (a, b) {
        (true, false) => Ok(Which::A),
        (false, true) => Ok(Which::B),
        _ => Err(format!(
            "consistent with neither configuration: x-server {:?}, allow-origin {acao:?}, upstream saw {}",
            r.header("x-server"),
            seen["headers"]
        )),
    }
}

fn reloads(s: &Stitch, result: &str) -> f64 {
    metric(
        &s.metrics(),
        "stitch_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(-1.0)
}

/// Write `text` to `path` in place (same inode), as `echo > file` does.
fn write_in_place(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Load: `threads` clients on kept-alive connections sending RUM requests to `/api` until
/// `stop`; every answer is judged. Returns (answers per configuration, failures).
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<thread::JoinHandle<()>>,
    seen_a: Arc<AtomicUsize>,
    seen_b: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize, judged: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen_a = Arc::new(AtomicUsize::new(0));
        let seen_b = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..threads)
            .map(|_| {
                let (stop, a, b, failures) = (
                    stop.clone(),
                    seen_a.clone(),
                    seen_b.clone(),
                    failures.clone(),
                );
                thread::spawn(move || {
                    let mut client = KeepAlive::new(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let answer = client.get("/api", &RUM).map_err(|e| e.to_string());
                        let verdict = match answer {
                            Ok(r) if judged => judge(&r),
                            Ok(r) if r.status == 200 => Ok(Which::A),
                            Ok(r) => Err(format!("status {}", r.status)),
                            Err(e) => Err(format!("request failed: {e}")),
                        };
                        match verdict {
                            Ok(Which::A) => a.fetch_add(1, Ordering::Relaxed),
                            Ok(Which::B) => b.fetch_add(1, Ordering::Relaxed),
                            Err(why) => {
                                failures.lock().unwrap().push(why);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            workers,
            seen_a,
            seen_b,
            failures,
        }
    }

    fn answered(&self) -> usize {
        self.seen_a.load(Ordering::Relaxed) + self.seen_b.load(Ordering::Relaxed)
    }

    /// Wait until `more` answers have come since the call; `stitch` is shown if none come.
    fn wait_answers(&self, more: usize, what: &str, stitch: &Stitch) {
        let from = self.answered();
        wait_for(
            what,
            Duration::from_secs(10),
            || (self.answered() >= from + more).then_some(()),
            || stitch.stderr(),
        );
    }

    /// Stop the clients and check that no request failed: the answers per configuration.
    fn finish_without_failures(self) -> (usize, usize) {
        let (a, b, failures) = self.finish();
        assert!(
            failures.is_empty(),
            "{} requests failed or were answered by neither configuration, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        (a, b)
    }

    fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.seen_a.load(Ordering::Relaxed),
            self.seen_b.load(Ordering::Relaxed),
            failures,
        )
    }
}

#[test]
fn fifty_reloads_under_load_fail_nothing_and_never_mix_configurations() {
    let (up_a, up_b) = (named_upstream("a"), named_upstream("b"));
    let head = base_config().replace("threads = 1", "threads = 2");
    let text = |w| config(&head, w, up_a.addr, up_b.addr);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, text(Which::A)).unwrap();
    let s = Stitch::launch(&path, &["--no-watch"], &[]);

    let load = Load::start(s.proxy, 8, true);
    load.wait_answers(50, "the first answers", &s);
    let mut which = Which::A;
    for i in 1..=50 {
        which = if which == Which::A {
            Which::B
        } else {
            Which::A
        };
        // Traffic under the configuration now served before the next reload.
        load.wait_answers(10, &format!("answers before reload {i}"), &s);
        write_in_place(&path, &text(which));
        s.signal("HUP");
        wait_for(
            &format!("reload {i}"),
            Duration::from_secs(10),
            || (reloads(&s, "success") >= i as f64).then_some(()),
            || s.stderr(),
        );
        // Own route of the configuration now served, and not the other's.
        let (own, other) = match which {
            Which::A => ("/only-a", "/only-b"),
            Which::B => ("/only-b", "/only-a"),
        };
        assert_eq!(
            get(&s.url(own), &[]).unwrap().status,
            200,
            "reload {i}: {own}"
        );
        assert_eq!(
            get(&s.url(other), &[]).unwrap().status,
            404,
            "reload {i}: {other}"
        );
    }
    // The last configuration is A (50 is even): server b has had its last request.
    let before_b = up_b.requests().len();
    load.wait_answers(200, "answers after the last reload", &s);
    let (a, b) = load.finish_without_failures();
    assert!(
        a > 100 && b > 100,
        "both configurations served: A {a}, B {b}"
    );
    assert_eq!(
        up_b.requests().len(),
        before_b,
        "server b of the removed pool still got traffic"
    );
    let m = s.metrics();
    assert_eq!(
        metric(&m, "stitch_config_reloads_total", &[("result", "success")]),
        Some(50.0)
    );
    assert_eq!(
        metric(&m, "stitch_config_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "stitch_config_last_reload_successful", &[]),
        Some(1.0)
    );
    eprintln!("answers: A {a}, B {b}, with 50 reloads");
}

/// A ConfigMap volume as the kubelet writes it: the data in a timestamped directory, `..data`
/// a symlink to it, and each key a symlink through `..data`.
struct ConfigMapDir {
    dir: tempfile::TempDir,
    version: usize,
}

impl ConfigMapDir {
    fn new(text: &str) -> ConfigMapDir {
        let dir = tempfile::tempdir().unwrap();
        let mut cm = ConfigMapDir { dir, version: 0 };
        let data = cm.write_version(text);
        std::os::unix::fs::symlink(&data, cm.dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/stitch.toml", cm.path()).unwrap();
        cm
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("stitch.toml")
    }

    fn write_version(&mut self, text: &str) -> String {
        self.version += 1;
        let name = format!(
            "..2026_12_01_17_00_0{}.{}",
            self.version,
            100 + self.version
        );
        let d = self.dir.path().join(&name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("stitch.toml"), text).unwrap();
        name
    }

    /// The kubelet's update: a new timestamped directory, `..data_tmp` pointing at it, renamed
    /// over `..data`, and the old directory removed.
    fn update(&mut self, text: &str) {
        let old = std::fs::read_link(self.dir.path().join("..data")).unwrap();
        let name = self.write_version(text);
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.path().join(old)).unwrap();
    }
}

/// Wait until `path` on stitch answers `status`.
fn wait_status(s: &Stitch, path: &str, status: u16, what: &str) {
    wait_for(
        what,
        Duration::from_secs(10),
        || (get(&s.url(path), &[]).ok()?.status == status).then_some(()),
        || s.stderr(),
    );
}

#[test]
fn configmap_swap_editor_rename_in_place_write_and_sighup_each_apply() {
    let (up_a, up_b) = (Upstream::start(), Upstream::start());
    let head = base_config();
    let text = |w| config(&head, w, up_a.addr, up_b.addr);
    let mut cm = ConfigMapDir::new(&text(Which::A));
    let s = Stitch::launch(&cm.path(), &[], &[]);
    assert_eq!(get(&s.url("/only-a"), &[]).unwrap().status, 200);
    let hash = |s: &Stitch| {
        let m = s.metrics();
        m.lines()
            .find_map(|l| {
                l.strip_prefix("stitch_config_info{hash=\"")
                    .map(|r| r[..16].to_string())
            })
            .unwrap()
    };
    let first_hash = hash(&s);

    // 1. The ConfigMap update.
    cm.update(&text(Which::B));
    wait_status(&s, "/only-b", 200, "the ConfigMap swap to apply");
    assert_eq!(get(&s.url("/only-a"), &[]).unwrap().status, 404);
    let m = s.metrics();
    assert!(
        m.contains("route=\"own-b\"") && !m.contains("route=\"own-a\""),
        "the removed route's label sets are gone:\n{m}"
    );
    assert_ne!(
        hash(&s),
        first_hash,
        "stitch_config_info shows the new hash"
    );
    assert_eq!(
        metric(&s.metrics(), "stitch_config_info", &[("hash", &first_hash)]),
        None,
        "the old hash's series is gone"
    );

    // 2. An invalid ConfigMap: the old configuration keeps serving, the failure is counted.
    let broken = text(Which::A).replace("upstream = \"backend\"", "upstream = \"missing\"");
    cm.update(&broken);
    wait_for(
        "the failed reload to be counted",
        Duration::from_secs(10),
        || (reloads(&s, "failure") >= 1.0).then_some(()),
        || s.stderr(),
    );
    assert_eq!(
        metric(&s.metrics(), "stitch_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(
        get(&s.url("/only-b"), &[]).unwrap().status,
        200,
        "B still serves"
    );
    assert!(
        s.stderr().contains("stitch.toml:") && s.stderr().contains("no upstream named \"missing\""),
        "the problem is logged with file and line:\n{}",
        s.stderr()
    );

    // 3. A later valid ConfigMap recovers.
    cm.update(&text(Which::A));
    wait_status(&s, "/only-a", 200, "recovery after the invalid file");
    assert_eq!(
        metric(&s.metrics(), "stitch_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let ok = reloads(&s, "success");
    assert!(ok >= 2.0, "two successful reloads counted, got {ok}");
}

#[test]
fn editor_rename_in_place_write_and_sighup_each_apply() {
    let (up_a, up_b) = (Upstream::start(), Upstream::start());
    let head = base_config();
    let text = |w| config(&head, w, up_a.addr, up_b.addr);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, text(Which::A)).unwrap();
    let s = Stitch::launch(&path, &[], &[]);

    // An editor's save: write a temporary file beside it, rename it over the original.
    let tmp = dir.path().join(".stitch.toml.swp");
    std::fs::write(&tmp, text(Which::B)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_status(&s, "/only-b", 200, "the editor's rename to apply");

    // An in-place write.
    write_in_place(&path, &text(Which::A));
    wait_status(&s, "/only-a", 200, "the in-place write to apply");

    // SIGHUP on unchanged content: counted as a success, nothing swapped.
    let before = reloads(&s, "success");
    s.signal("HUP");
    wait_for(
        "SIGHUP to be handled",
        Duration::from_secs(10),
        || (reloads(&s, "success") > before).then_some(()),
        || s.stderr(),
    );
    assert!(
        s.stderr().contains("configuration unchanged"),
        "{}",
        s.stderr()
    );
    assert_eq!(get(&s.url("/only-a"), &[]).unwrap().status, 200);
}

#[test]
fn a_change_that_needs_a_restart_applies_the_rest_and_names_the_keys() {
    let up = Upstream::start();
    let head = base_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, config(&head, Which::A, up.addr, up.addr)).unwrap();
    let s = Stitch::launch(&path, &["--no-watch"], &[]);
    let changed = config(
        &head.replace("threads = 1", "threads = 3"),
        Which::B,
        up.addr,
        up.addr,
    );
    write_in_place(&path, &changed);
    s.signal("HUP");
    wait_status(&s, "/only-b", 200, "the reload to apply");
    // The warning is logged just after the swap: it may reach stderr after the answer.
    wait_for(
        "the warning naming server.threads",
        Duration::from_secs(5),
        || {
            s.stderr()
                .contains("take effect only after a restart: server.threads")
                .then_some(())
        },
        || s.stderr(),
    );
}

/// One request on a new keep-alive connection, then idle; the thread ends when the connection
/// closes, with what was read and when it closed.
fn idle_connection(proxy: SocketAddr) -> thread::JoinHandle<(String, Instant)> {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.write_all(b"GET /only-a HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    thread::spawn(move || {
        let mut read = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = c.read(&mut buf) {
            read.extend_from_slice(&buf[..n]);
        }
        (String::from_utf8_lossy(&read).into_owned(), Instant::now())
    })
}

#[test]
fn binary_upgrade_under_load_fails_no_request() {
    let up = named_upstream("a");
    let port = free_ports(1)[0];
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let head = base_config().replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!(
            "listen = [\"127.0.0.1:{port}\"]\nupgrade_sock = \"{}\"",
            sock.display()
        ),
    );
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, config(&head, Which::A, up.addr, up.addr)).unwrap();
    let mut old = Stitch::launch(&path, &["--no-watch"], &[]);

    let load = Load::start(old.proxy, 8, false);
    load.wait_answers(50, "the first answers", &old);
    // A kept-alive connection that made one request and then idles: the old process closes it
    // when it stops serving (Pingora's close timeout after the hand-over), not only when it
    // exits, so the client reconnects to the new process.
    let idle = idle_connection(old.proxy);
    // The new binary waits for the sockets; the old one hands them over on SIGQUIT.
    let new = thread::spawn({
        let path = path.clone();
        move || Stitch::launch(&path, &["--no-watch", "--upgrade"], &[])
    });
    // The new process is waiting once its upgrade socket exists.
    wait_for(
        "the new process to wait for the sockets",
        Duration::from_secs(20),
        || sock.exists().then_some(()),
        || old.stderr(),
    );
    old.signal("QUIT");
    let new = new.join().expect("the new process started");
    let exited = old.wait_exit(Duration::from_secs(30));
    let exited_at = Instant::now();
    assert!(
        exited.is_some(),
        "the old process did not exit; stderr:\n{}",
        old.stderr()
    );
    let (answer, closed_at) = idle.join().expect("the idle connection's reader");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed_at + Duration::from_secs(2) < exited_at,
        "the idle connection was closed {:?} before the old process exited",
        exited_at.saturating_duration_since(closed_at)
    );
    load.wait_answers(200, "answers from the new process", &new);
    let (a, _) = load.finish_without_failures();
    assert_eq!(get(&new.url("/only-a"), &[]).unwrap().status, 200);
    eprintln!("answers during the upgrade: {a}");
}

#[test]
fn the_access_log_and_the_span_export_change_with_a_reload() {
    // Both are live: turning the access log on prints the next request's line, and a new
    // exporter address is used by the next spans (an agent that is not there: dropped, counted).
    let up = Upstream::start();
    let head = base_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    let text = |extra: &str| format!("{}{extra}", config(&head, Which::A, up.addr, up.addr));
    std::fs::write(&path, text("")).unwrap();
    let s = Stitch::launch(&path, &["--no-watch"], &[]);
    assert_eq!(get(&s.url("/only-a?before"), &[]).unwrap().status, 200);
    let agent = common::dead_addr();
    write_in_place(
        &path,
        &text(&format!(
            "\n[access_log]\nenabled = true\nformat = \"text\"\n\n[export]\nflush_interval_ms = 50\n\n[export.datadog]\nagent_url = \"http://{agent}\"\n"
        )),
    );
    s.signal("HUP");
    wait_for(
        "the reload",
        Duration::from_secs(10),
        || (reloads(&s, "success") >= 1.0).then_some(()),
        || s.stderr(),
    );
    assert_eq!(get(&s.url("/only-a"), &[]).unwrap().status, 200);
    wait_for(
        "the access log line of the request after the reload",
        Duration::from_secs(10),
        || {
            let out = s.stdout_lines.lock().unwrap();
            out.iter().any(|l| l.contains("GET /only-a ")).then_some(())
        },
        || s.stderr(),
    );
    assert!(
        !s.stdout_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("before")),
        "no line for the request before the reload"
    );
    wait_for(
        "the span for the dead agent to be dropped and counted",
        Duration::from_secs(10),
        || {
            let m = s.metrics();
            m.lines()
                .any(|l| {
                    l.starts_with("stitch_spans_dropped_total{exporter=\"datadog\"")
                        && !l.ends_with(" 0")
                })
                .then_some(())
        },
        || s.metrics(),
    );
}
