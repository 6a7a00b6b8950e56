//! Browser harness: one headless Chromium per test binary (driven by `tests/browser/drive.mjs`
//! through playwright-core), a page server that serves the test pages and the real
//! `@datadog/browser-rum` bundle from its own origin, and a local RUM intake that records what
//! the SDK sends. Every wait is bounded and polls a condition.
//!
//! Include it from a test file with `#[path = "common/browser.rs"] mod browser;` next to
//! `mod common;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn rum_bundle_dir() -> PathBuf {
    browser_dir().join("node_modules/@datadog/browser-rum/bundle")
}

// ---------------------------------------------------------------------------------------------
// The driver: one node process, one Chromium, many concurrent jobs.
// ---------------------------------------------------------------------------------------------

/// The shared headless Chromium. Jobs from tests running in parallel go to the same browser,
/// each in a fresh browser context.
pub struct Browser {
    stdin: Mutex<ChildStdin>,
    waiters: Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>>,
    next_id: AtomicU64,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Chromium's version as the driver reported it.
    pub version: String,
    _child: Mutex<Child>,
}

static BROWSER: OnceLock<Browser> = OnceLock::new();

/// The browser of this test binary, launched on first use. The driver exits when this process
/// does (its stdin closes), closing Chromium.
pub fn browser() -> &'static Browser {
    BROWSER.get_or_init(|| Browser::launch(&[]))
}

/// The browser of this test binary, launched with extra Chromium flags if this is the first
/// use (a later call gets the browser already launched, whatever its flags).
pub fn browser_with_args(args: &[String]) -> &'static Browser {
    BROWSER.get_or_init(|| Browser::launch(args))
}

/// Start launching the browser on another thread, so that it overlaps the test's own setup
/// (stitch, upstreams). A launch failure surfaces at the next [`browser`] call.
pub fn warm_up() {
    thread::spawn(|| {
        let _ = std::panic::catch_unwind(|| {
            browser();
        });
    });
}

impl Browser {
    fn launch(extra_args: &[String]) -> Browser {
        let dir = browser_dir();
        assert!(
            dir.join("node_modules/playwright-core").exists() && rum_bundle_dir().exists(),
            "{} has no node_modules: run `.ci/setup test` (npm ci there, and Debian's chromium)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("drive.mjs"))
            .current_dir(&dir)
            .env("STITCH_CHROMIUM_ARGS", json!(extra_args).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node (is Node.js installed?)");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let waiters: Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>> = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let w = waiters.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("ready").is_some() {
                    let _ = ready_tx.send(v);
                } else if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = w.lock().unwrap().remove(&id) {
                        let _ = tx.send(v);
                    }
                }
            }
            // The driver is gone: wake every waiting test (their senders drop here).
            w.lock().unwrap().clear();
        });
        let ready = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the browser driver did not start Chromium; its stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                )
            }
        };
        Browser {
            stdin: Mutex::new(child.stdin.take().unwrap()),
            waiters,
            next_id: AtomicU64::new(1),
            stderr,
            version: ready["version"].as_str().unwrap_or("").to_string(),
            _child: Mutex::new(child),
        }
    }

    /// Open `url` in a fresh context and await `window.stitchTest[call](arg)` there.
    pub fn run(&self, url: &str, call: &str, arg: Value, timeout: Duration) -> PageRun {
        self.job(
            json!({"url": url, "call": call, "arg": arg}),
            &format!("{call} on {url}"),
            timeout,
        )
    }

    /// Open `url` in a fresh context and drive it by `steps` (a page with no script of its
    /// own; the steps are described in `tests/browser/drive.mjs`). The value is one answer per
    /// step.
    pub fn steps(&self, url: &str, steps: Value, timeout: Duration) -> PageRun {
        self.job(
            json!({"url": url, "steps": steps}),
            &format!("steps on {url}"),
            timeout,
        )
    }

    fn job(&self, mut job: Value, what: &str, timeout: Duration) -> PageRun {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        job["id"] = json!(id);
        job["timeout_ms"] = json!(timeout.as_millis() as u64);
        {
            let mut stdin = self.stdin.lock().unwrap();
            writeln!(stdin, "{job}").expect("write a job to the browser driver");
            stdin.flush().unwrap();
        }
        // The driver enforces `timeout` itself; the margin covers page load and context setup.
        match rx.recv_timeout(timeout + Duration::from_secs(15)) {
            Ok(v) => PageRun(v),
            Err(e) => panic!(
                "the browser driver did not answer job {id} ({what}): {e}; stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            ),
        }
    }
}

/// What one driver job returned: `ok`, `value` or `error`, and what the page logged.
#[derive(Debug, Clone)]
pub struct PageRun(pub Value);

impl PageRun {
    /// The value the page function resolved with; panics with the page's diagnostics if the job
    /// itself failed (page did not load, function threw, timeout).
    pub fn value(&self) -> &Value {
        assert!(
            self.0["ok"].as_bool() == Some(true),
            "the page job failed: {}\n{}",
            self.0["error"].as_str().unwrap_or("?"),
            self.diagnostics()
        );
        &self.0["value"]
    }

    /// Console messages, page errors and failed requests, for assertion messages.
    pub fn diagnostics(&self) -> String {
        let list = |k: &str| {
            self.0[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n    ")
                })
                .unwrap_or_default()
        };
        format!(
            "  console:\n    {}\n  page errors:\n    {}\n  failed requests:\n    {}",
            list("console"),
            list("page_errors"),
            list("failed_requests")
        )
    }

    /// The console lines of the page.
    pub fn console(&self) -> Vec<String> {
        self.0["console"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// The page server and the local RUM intake.
// ---------------------------------------------------------------------------------------------

/// One request the intake received.
#[derive(Debug, Clone)]
pub struct IntakeRequest {
    /// Path and query, e.g. `/intake?ddforward=%2Fapi%2Fv2%2Frum%3F...`.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Serves, from its own origin `http://127.0.0.1:PORT`:
/// - `/pages/*` from `tests/browser/pages/`,
/// - `/rum/*` from the installed `@datadog/browser-rum` bundle,
/// - `POST /intake...`: the RUM intake (the SDK's `proxy`); newline-delimited JSON events are
///   recorded,
/// - `GET /recorded`: the events recorded so far, as a JSON array (the page polls it).
pub struct PageServer {
    pub addr: SocketAddr,
    pub intake: Arc<Mutex<Vec<IntakeRequest>>>,
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl PageServer {
    pub fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let intake: Arc<Mutex<Vec<IntakeRequest>>> = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (i, e) = (intake.clone(), events.clone());
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (i, e) = (i.clone(), e.clone());
                thread::spawn(move || serve_page_conn(stream, i, e));
            }
        });
        PageServer {
            addr,
            intake,
            events,
        }
    }

    /// `http://127.0.0.1:PORT`, exactly as the browser sends it in `Origin`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin(), path)
    }

    /// The URL to give the SDK as `proxy`.
    pub fn intake_url(&self) -> String {
        self.url("/intake")
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait until a recorded event satisfies `pred`, polling until `within` has passed.
    pub fn wait_event(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.events().into_iter().find(|v| pred(v)) {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "application/javascript; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A file under `root` named by a URL path remainder, refusing anything that climbs out.
fn static_file(root: &Path, rest: &str) -> Option<(PathBuf, Vec<u8>)> {
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    if rest.is_empty() || rest.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return None;
    }
    let path = root.join(rest);
    std::fs::read(&path).ok().map(|b| (path, b))
}

fn serve_page_conn(
    mut stream: TcpStream,
    intake: Arc<Mutex<Vec<IntakeRequest>>>,
    events: Arc<Mutex<Vec<Value>>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(crate::common::RawRequest {
        method,
        target,
        headers,
        body,
    }) = crate::common::read_request(&mut stream, &mut Vec::new())
    else {
        return;
    };

    let (status, ctype, payload): (u16, &str, Vec<u8>) = if method == "OPTIONS" {
        (204, "text/plain", Vec::new())
    } else if method == "POST" && target.starts_with("/intake") {
        // Newline-delimited JSON, one RUM event a line (the SDK does not compress unless
        // `compressIntakeRequests` is set).
        let text = String::from_utf8_lossy(&body).into_owned();
        let parsed: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        events.lock().unwrap().extend(parsed);
        intake.lock().unwrap().push(IntakeRequest {
            target: target.clone(),
            headers: headers.clone(),
            body,
        });
        (202, "application/json", b"{}".to_vec())
    } else if method == "GET" && target.split('?').next() == Some("/recorded") {
        let all = Value::Array(events.lock().unwrap().clone());
        (200, "application/json", all.to_string().into_bytes())
    } else if method == "GET" {
        let found = if let Some(rest) = target.strip_prefix("/pages/") {
            static_file(&browser_dir().join("pages"), rest)
        } else if let Some(rest) = target.strip_prefix("/rum/") {
            static_file(&rum_bundle_dir(), rest)
        } else {
            None
        };
        match found {
            Some((path, bytes)) => (200, content_type(&path), bytes),
            None => (404, "text/plain", b"not found".to_vec()),
        }
    } else {
        (405, "text/plain", b"method not allowed".to_vec())
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&payload);
}

// ---------------------------------------------------------------------------------------------
// The real RUM SDK tracing one fetch.
// ---------------------------------------------------------------------------------------------

/// What the real `@datadog/browser-rum` SDK did for one traced fetch.
#[derive(Debug, Clone)]
pub struct RumTrace {
    /// The fetch as the page saw it: `{ok, status, body, headers}` or `{ok: false, error}`.
    pub fetch: Value,
    /// The RUM session id (also in `baggage` as `session.id` when baggage is on).
    pub session_id: String,
    /// The resource event as the SDK built it in the page.
    pub page_event: Value,
    /// The same resource event as the local intake received it.
    pub intake_event: Value,
    /// The whole page run, for diagnostics.
    pub run: PageRun,
}

impl RumTrace {
    /// `_dd.trace_id` of the intake's resource event (decimal, 64-bit).
    pub fn trace_id(&self) -> String {
        dd_id(&self.intake_event, "trace_id")
    }
    /// `_dd.span_id` of the intake's resource event (decimal): the browser-side span, the parent
    /// the SDK sent.
    pub fn span_id(&self) -> String {
        dd_id(&self.intake_event, "span_id")
    }
}

fn dd_id(event: &Value, key: &str) -> String {
    event["_dd"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the resource event has no _dd.{key}: {event}"))
        .to_string()
}

/// Load `/pages/rum.html` from `page`, start the real SDK with `traceSampleRate: 100`,
/// `sessionSampleRate: 100`, `allowedTracingUrls: [{match: traced_origin, propagatorTypes}]`,
/// `propagateTraceBaggage: baggage` and `proxy` set to `page`'s intake; once a tracked session
/// exists, fetch `target` and wait until the intake holds its resource event. Panics if the
/// page job fails; a failed fetch is returned, not a panic.
pub fn rum_fetch(
    page: &PageServer,
    traced_origin: &str,
    target: &str,
    propagators: &[&str],
    baggage: bool,
    within: Duration,
) -> RumTrace {
    rum_fetch_all(page, traced_origin, &[target], propagators, baggage, within)
        .pop()
        .unwrap()
}

/// [`rum_fetch`] for several targets fetched one after the other in one page and one RUM
/// session (e.g. a dd-trace backend and an OpenTelemetry backend behind stitch). One
/// [`RumTrace`] per target, in order.
pub fn rum_fetch_all(
    page: &PageServer,
    traced_origin: &str,
    targets: &[&str],
    propagators: &[&str],
    baggage: bool,
    within: Duration,
) -> Vec<RumTrace> {
    let run = browser().run(
        &page.url("/pages/rum.html"),
        "rumFetch",
        json!({
            "targets": targets,
            "traced_origin": traced_origin,
            "propagator_types": propagators,
            "intake": page.intake_url(),
            "recorded": page.url("/recorded"),
            "baggage": baggage,
            "timeout_ms": within.as_millis() as u64,
        }),
        within + Duration::from_secs(5),
    );
    let value = run.value().clone();
    let session_id = value["session_id"].as_str().unwrap_or("").to_string();
    let traces = value["traces"].as_array().cloned().unwrap_or_default();
    assert_eq!(traces.len(), targets.len(), "{value}");
    targets
        .iter()
        .zip(traces)
        .map(|(target, t)| {
            // The intake's own record (not the page's view of it) is the evidence.
            let intake_event = page
                .wait_event(Duration::from_secs(5), |e| {
                    e["type"] == "resource" && e["resource"]["url"] == *target
                })
                .unwrap_or_else(|| {
                    panic!(
                        "no resource event for {target} at the intake: {:?}\n{}",
                        page.events(),
                        run.diagnostics()
                    )
                });
            RumTrace {
                fetch: t["fetch"].clone(),
                session_id: session_id.clone(),
                page_event: t["event"].clone(),
                intake_event,
                run: run.clone(),
            }
        })
        .collect()
}
