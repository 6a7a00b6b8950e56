//! Real peers for end-to-end tests: `ddapm-test-agent` (Datadog v0.4 and OTLP/HTTP intake), a
//! Flask backend under `ddtrace-run` and a Flask backend with the OpenTelemetry SDK, all run from
//! the venv that `.ci/setup test` creates (apps in `tests/peers/`).
//!
//! Every peer listens on a free loopback port, readiness is awaited by polling with a deadline,
//! and every process is killed on drop. A peer kept in a `static` (see [`shared`]), whose `Drop`
//! never runs, exits by itself when the test process ends: its stdin is a pipe nobody writes to,
//! and `tests/peers/lifeline.py` exits when that pipe closes.
//!
//! Include it next to the harness: `mod common;` then `#[path = "common/peers.rs"] mod peers;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{get, manifest_dir, peers_python, Response};

/// How long a peer may take to start (ddtrace-run on a busy two-core machine is slow).
pub const START_WITHIN: Duration = Duration::from_secs(90);
/// How long a span may take to reach the test agent after the request that made it.
pub const ARRIVE_WITHIN: Duration = Duration::from_secs(15);
/// Service name of the dd-trace backend.
pub const DD_SERVICE: &str = "dd-backend";
/// `service.name` of the OpenTelemetry backend.
pub const OTEL_SERVICE: &str = "otel-backend";

/// Poll `probe` every 25 ms until it returns `Some`, or panic after `within` with `what` and
/// whatever `context` says at that moment.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                context()
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// `n` distinct free loopback ports (all bound at once, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

fn peers_dir() -> PathBuf {
    manifest_dir().join("tests/peers")
}

/// One peer process: its output is collected line by line (stdout and stderr together).
pub struct PeerProcess {
    pub name: String,
    child: Child,
    /// Held open for the life of the peer; closing it tells the peer to exit.
    _lifeline: Option<ChildStdin>,
    output: Arc<Mutex<Vec<String>>>,
}

impl PeerProcess {
    /// Spawn `cmd` with a lifeline on stdin. Lines are also sent to the returned receiver.
    pub fn spawn(name: &str, mut cmd: Command) -> (PeerProcess, mpsc::Receiver<String>) {
        // A developer's DD_* / OTEL_* settings must not change how the peers behave.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("DD_") || k.starts_with("OTEL_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} ({cmd:?})"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        collect(stdout, output.clone(), tx.clone());
        collect(stderr, output.clone(), tx);
        let lifeline = child.stdin.take();
        (
            PeerProcess {
                name: name.to_string(),
                child,
                _lifeline: lifeline,
                output,
            },
            rx,
        )
    }

    /// Everything the peer printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// The exit status if the peer has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Every line the peer printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Wait for a line starting with `prefix` and return the rest of it.
    pub fn wait_line(&mut self, rx: &mpsc::Receiver<String>, prefix: &str) -> String {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited ({status:?}) before printing {prefix:?}; output:\n{}",
                        self.name,
                        self.output()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {prefix:?} within {START_WITHIN:?}; output:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            sink.lock().unwrap().push(line);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// ddapm-test-agent

/// Environment variables ddapm-test-agent 1.69 reads as option defaults (besides `DD_*`).
const AGENT_ENV: &[&str] = &[
    "HOST",
    "PORT",
    "OTLP_HTTP_PORT",
    "OTLP_GRPC_PORT",
    "ENABLED_CHECKS",
    "SNAPSHOT_DIR",
    "SNAPSHOT_CI",
    "SNAPSHOT_IGNORED_ATTRS",
    "SNAPSHOT_REMOVED_ATTRS",
    "LOG_LEVEL",
    "WEB_UI_PORT",
    "MAX_REQUESTS",
];

/// A running `ddapm-test-agent`: Datadog trace intake on `trace_port`, OTLP/HTTP on
/// `otlp_http_port` (and OTLP/gRPC on `otlp_grpc_port`, unused here).
pub struct TestAgent {
    pub process: PeerProcess,
    pub trace_port: u16,
    pub otlp_http_port: u16,
    pub otlp_grpc_port: u16,
}

impl TestAgent {
    /// Start the agent on free ports and wait until both intakes answer.
    pub fn start() -> TestAgent {
        let mut last = String::new();
        for _ in 0..3 {
            let mut agent = TestAgent::spawn();
            if agent.wait_ready() {
                return agent;
            }
            // The agent exited: most likely a port was taken between choosing and binding.
            last = agent.process.output();
        }
        panic!("ddapm-test-agent did not start in three attempts; last output:\n{last}");
    }

    fn spawn() -> TestAgent {
        let ports = free_ports(3);
        let dir = std::env::temp_dir();
        let mut cmd = Command::new(peers_python());
        cmd.arg(peers_dir().join("test_agent.py"))
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(ports[0].to_string())
            .arg("--otlp-http-port")
            .arg(ports[1].to_string())
            .arg("--otlp-grpc-port")
            .arg(ports[2].to_string())
            .arg("--agent-url")
            .arg("")
            .arg("--log-level")
            .arg("WARNING")
            .arg("--snapshot-dir")
            .arg(&dir)
            .current_dir(&dir);
        // The agent reads these as defaults for its options; a shell's HOST must not move it.
        for var in AGENT_ENV {
            cmd.env_remove(var);
        }
        let (process, _rx) = PeerProcess::spawn("ddapm-test-agent", cmd);
        TestAgent {
            process,
            trace_port: ports[0],
            otlp_http_port: ports[1],
            otlp_grpc_port: ports[2],
        }
    }

    /// Poll both intakes until they answer; false if the agent exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let info = get(&format!("{}/info", self.url()), &[]);
            let otlp = get(&format!("{}/test/session/traces", self.otlp_url()), &[]);
            if matches!((&info, &otlp), (Ok(a), Ok(b)) if a.status == 200 && b.status == 200) {
                return true;
            }
            if self.process.exited().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "ddapm-test-agent not ready within {START_WITHIN:?}; output:\n{}",
                self.process.output()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Base URL of the Datadog trace intake (`DD_TRACE_AGENT_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.trace_port)
    }

    /// Base URL of the OTLP/HTTP receiver.
    pub fn otlp_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_http_port)
    }

    /// The OTLP/HTTP traces endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn otlp_traces_endpoint(&self) -> String {
        format!("{}/v1/traces", self.otlp_url())
    }

    fn get_json(&self, url: &str) -> Value {
        let r = get(url, &[]).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(
            r.status,
            200,
            "GET {url} answered {}: {}\nagent output:\n{}",
            r.status,
            r.body,
            self.process.output()
        );
        r.json()
    }

    /// Every span the Datadog intake received for the trace whose low 64 bits are
    /// `trace_id_low` (the agent keys traces by the v0.4 `trace_id`), from any sender.
    pub fn dd_trace(&self, trace_id_low: u64) -> Vec<DdSpan> {
        let v = self.get_json(&format!(
            "{}/test/traces?trace_ids={trace_id_low}",
            self.url()
        ));
        v.as_array()
            .and_then(|traces| traces.first())
            .and_then(Value::as_array)
            .map(|spans| spans.iter().map(DdSpan::from_json).collect())
            .unwrap_or_default()
    }

    /// Every span the OTLP receiver received, from any sender, in arrival order.
    pub fn otlp_spans(&self) -> Vec<OtlpSpan> {
        let v = self.get_json(&format!("{}/test/session/traces", self.otlp_url()));
        let mut out = Vec::new();
        for request in v.as_array().into_iter().flatten() {
            for rs in json_list(request, "resource_spans") {
                let resource: BTreeMap<String, Value> = rs
                    .get("resource")
                    .map(|r| attributes(json_list(r, "attributes")))
                    .unwrap_or_default();
                for ss in json_list(rs, "scope_spans") {
                    let scope = ss
                        .pointer("/scope/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    for span in json_list(ss, "spans") {
                        out.push(OtlpSpan::from_json(span, &resource, &scope));
                    }
                }
            }
        }
        out
    }

    /// The OTLP spans of one trace (full 128-bit id).
    pub fn otlp_trace(&self, trace_id: u128) -> Vec<OtlpSpan> {
        self.otlp_spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Poll the Datadog intake until `pick` finds what it wants in the trace's spans.
    pub fn wait_dd<T>(
        &self,
        what: &str,
        trace_id_low: u64,
        pick: impl Fn(&[DdSpan]) -> Option<T>,
    ) -> T {
        wait_for(
            what,
            ARRIVE_WITHIN,
            || pick(&self.dd_trace(trace_id_low)),
            || {
                format!(
                    "Datadog spans of trace {trace_id_low}:\n{:#?}",
                    self.dd_trace(trace_id_low)
                )
            },
        )
    }

    /// Poll the OTLP receiver until `pick` finds what it wants in the trace's spans.
    pub fn wait_otlp<T>(
        &self,
        what: &str,
        trace_id: u128,
        pick: impl Fn(&[OtlpSpan]) -> Option<T>,
    ) -> T {
        wait_for(
            what,
            ARRIVE_WITHIN,
            || pick(&self.otlp_trace(trace_id)),
            || {
                let received: Vec<String> = self
                    .otlp_spans()
                    .iter()
                    .map(|s| {
                        let service = s.service.as_deref().unwrap_or("?");
                        format!("{:032x} {service} {}", s.trace_id, s.name)
                    })
                    .collect();
                format!(
                    "OTLP spans of trace {trace_id:032x}:\n{:#?}\nevery OTLP span received: {:#?}",
                    self.otlp_trace(trace_id),
                    received
                )
            },
        )
    }

    /// Forget everything received. Only for an agent no other running test is using.
    pub fn clear(&self) {
        for base in [self.url(), self.otlp_url()] {
            let url = format!("{base}/test/session/clear");
            let r = get(&url, &[]).unwrap_or_else(|e| panic!("GET {url}: {e}"));
            assert_eq!(r.status, 200, "GET {url}: {}", r.body);
        }
    }
}

/// A span as the Datadog intake decoded it (v0.4 fields).
#[derive(Debug, Clone)]
pub struct DdSpan {
    pub trace_id: u64,
    pub span_id: u64,
    pub parent_id: u64,
    pub name: String,
    pub service: String,
    pub resource: String,
    pub span_type: Option<String>,
    pub error: i64,
    pub start: i64,
    pub duration: i64,
    pub meta: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
}

impl DdSpan {
    fn from_json(v: &Value) -> DdSpan {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let i = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        DdSpan {
            trace_id: u("trace_id"),
            span_id: u("span_id"),
            parent_id: u("parent_id"),
            name: s("name"),
            service: s("service"),
            resource: s("resource"),
            span_type: v.get("type").and_then(Value::as_str).map(str::to_string),
            error: i("error"),
            start: i("start"),
            duration: i("duration"),
            meta: v
                .get("meta")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            metrics: v
                .get("metrics")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// `_sampling_priority_v1`, when the span carries it (the chunk's root span does).
    pub fn priority(&self) -> Option<f64> {
        self.metrics.get("_sampling_priority_v1").copied()
    }

    /// The full 128-bit trace id: `_dd.p.tid` (if any) as the high half.
    pub fn trace_id_128(&self) -> u128 {
        let high = self
            .meta
            .get("_dd.p.tid")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        ((high as u128) << 64) | self.trace_id as u128
    }
}

/// A span as the OTLP receiver decoded it, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct OtlpSpan {
    /// Resource attribute `service.name`.
    pub service: Option<String>,
    pub resource: BTreeMap<String, Value>,
    pub scope: String,
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 when the span has no parent.
    pub parent_span_id: u64,
    pub name: String,
    /// e.g. `SPAN_KIND_SERVER`.
    pub kind: String,
    pub trace_state: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, Value>,
    pub status: Value,
    pub links: Vec<Value>,
}

impl OtlpSpan {
    fn from_json(v: &Value, resource: &BTreeMap<String, Value>, scope: &str) -> OtlpSpan {
        let bytes = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(|b| base64_decode(b).unwrap_or_else(|| panic!("bad base64 in {k}: {b}")))
                .unwrap_or_default()
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| {
            v.get(k)
                .and_then(|x| {
                    x.as_str()
                        .and_then(|t| t.parse().ok())
                        .or_else(|| x.as_u64())
                })
                .unwrap_or(0)
        };
        OtlpSpan {
            service: resource
                .get("service.name")
                .and_then(Value::as_str)
                .map(str::to_string),
            resource: resource.clone(),
            scope: scope.to_string(),
            trace_id: be_u128(&bytes("trace_id")),
            span_id: be_u128(&bytes("span_id")) as u64,
            parent_span_id: be_u128(&bytes("parent_span_id")) as u64,
            name: s("name"),
            kind: s("kind"),
            trace_state: s("trace_state"),
            start_ns: n("start_time_unix_nano"),
            end_ns: n("end_time_unix_nano"),
            attributes: attributes(json_list(v, "attributes")),
            status: v.get("status").cloned().unwrap_or(Value::Null),
            links: json_list(v, "links").cloned().collect(),
        }
    }

    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
}

fn json_list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// OTLP `KeyValue`s (protobuf JSON with proto field names) as plain JSON values.
fn attributes<'a>(list: impl Iterator<Item = &'a Value>) -> BTreeMap<String, Value> {
    list.filter_map(|kv| {
        let key = kv.get("key")?.as_str()?.to_string();
        Some((key, any_value(kv.get("value")?)))
    })
    .collect()
}

fn any_value(v: &Value) -> Value {
    if let Some(s) = v.get("string_value") {
        return s.clone();
    }
    if let Some(b) = v.get("bool_value") {
        return b.clone();
    }
    if let Some(i) = v.get("int_value") {
        // int64 travels as a JSON string.
        return i
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .map(Value::from)
            .unwrap_or_else(|| i.clone());
    }
    if let Some(d) = v.get("double_value") {
        return d.clone();
    }
    if let Some(a) = v.pointer("/array_value/values").and_then(Value::as_array) {
        return Value::Array(a.iter().map(any_value).collect());
    }
    v.clone()
}

fn be_u128(bytes: &[u8]) -> u128 {
    bytes.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128)
}

/// Standard base64 with padding (what protobuf's JSON form uses for `bytes`).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Flask backends

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// `tests/peers/dd_app.py` under `ddtrace-run`.
    DdTrace,
    /// `tests/peers/otel_app.py` with the OpenTelemetry SDK.
    Otel,
}

/// A running Flask backend.
pub struct FlaskApp {
    pub process: PeerProcess,
    pub kind: AppKind,
    pub addr: SocketAddr,
}

/// A Flask backend that has been spawned but may not listen yet.
pub struct PendingApp {
    process: PeerProcess,
    kind: AppKind,
    rx: mpsc::Receiver<String>,
}

impl PendingApp {
    /// Wait for the app to report its address.
    pub fn ready(mut self) -> FlaskApp {
        let prefix = match self.kind {
            AppKind::DdTrace => "dd_app listening on ",
            AppKind::Otel => "otel_app listening on ",
        };
        let addr = self.process.wait_line(&self.rx, prefix);
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad address {addr:?}: {e}", self.process.name));
        FlaskApp {
            process: self.process,
            kind: self.kind,
            addr,
        }
    }
}

impl FlaskApp {
    /// Spawn the dd-trace backend (`ddtrace-run python dd_app.py`), reporting to `agent`.
    pub fn spawn_ddtrace(agent: &TestAgent) -> PendingApp {
        let python = peers_python();
        let ddtrace_run = python.with_file_name("ddtrace-run");
        assert!(
            ddtrace_run.exists(),
            "{} is missing: run `.ci/setup test`",
            ddtrace_run.display()
        );
        let mut cmd = Command::new(ddtrace_run);
        cmd.arg(&python)
            .arg(peers_dir().join("dd_app.py"))
            .current_dir(peers_dir())
            .env("DD_TRACE_AGENT_URL", agent.url())
            .env("DD_SERVICE", DD_SERVICE)
            .env("DD_ENV", "e2e")
            // The intake stitch's exporter also speaks; the agent decodes either.
            .env("DD_TRACE_API_VERSION", "v0.4")
            // Flush often so spans reach the agent promptly.
            .env("DD_TRACE_WRITER_INTERVAL_SECONDS", "0.1")
            // Send dropped (priority <= 0) traces too, so their priority can be read back.
            .env("DD_TRACE_STATS_COMPUTATION_ENABLED", "false")
            .env("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
            .env("DD_REMOTE_CONFIGURATION_ENABLED", "false")
            .env("DD_TRACE_STARTUP_LOGS", "false")
            .env("DD_PROFILING_ENABLED", "false");
        let (process, rx) = PeerProcess::spawn("dd_app (ddtrace-run)", cmd);
        PendingApp {
            process,
            kind: AppKind::DdTrace,
            rx,
        }
    }

    /// Spawn the OpenTelemetry backend, exporting OTLP/HTTP to `agent`.
    pub fn spawn_otel(agent: &TestAgent) -> PendingApp {
        let mut cmd = Command::new(peers_python());
        cmd.arg(peers_dir().join("otel_app.py"))
            .arg(agent.otlp_traces_endpoint())
            .current_dir(peers_dir())
            // The SDK's defaults, stated so the environment cannot change them.
            .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
            .env("OTEL_PROPAGATORS", "tracecontext,baggage");
        let (process, rx) = PeerProcess::spawn("otel_app", cmd);
        PendingApp {
            process,
            kind: AppKind::Otel,
            rx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path` straight from the app (not through stitch).
    pub fn call(&self, path: &str, headers: &[(&str, &str)]) -> Seen {
        let url = self.url(path);
        let r = get(&url, headers).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Seen::from_response(&r)
    }
}

/// What a backend app reported about one request (its JSON answer).
#[derive(Debug, Clone)]
pub struct Seen {
    /// "dd" or "otel".
    pub app: String,
    /// Request headers as the backend received them (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// The backend's server span: trace id (128 bits), span id, parent span id.
    pub trace_id: Option<u128>,
    pub span_id: Option<u64>,
    pub parent_id: Option<u64>,
    /// dd-trace: the trace's sampling priority.
    pub sampling_priority: Option<i64>,
    /// dd-trace: the trace's origin.
    pub origin: Option<String>,
    /// dd-trace: the context's trace-level tags.
    pub meta: BTreeMap<String, String>,
    /// OpenTelemetry: the span's sampled flag and whether the SDK records it.
    pub sampled: Option<bool>,
    pub recording: Option<bool>,
    pub trace_state: Option<String>,
    /// The headers the backend's tracer would inject on an outgoing call.
    pub injected: BTreeMap<String, String>,
    pub raw: Value,
}

impl Seen {
    pub fn from_response(r: &Response) -> Seen {
        assert_eq!(r.status, 200, "backend answered {}: {}", r.status, r.body);
        let v = r.json();
        let hex = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(|h| u128::from_str_radix(h, 16).unwrap_or_else(|e| panic!("{k}={h}: {e}")))
        };
        let map = |k: &str| -> BTreeMap<String, String> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Seen {
            app: v
                .get("app")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            headers: map("headers"),
            trace_id: hex("trace_id"),
            span_id: hex("span_id").map(|x| x as u64),
            parent_id: hex("parent_id").map(|x| x as u64),
            sampling_priority: v.get("sampling_priority").and_then(Value::as_i64),
            origin: v.get("origin").and_then(Value::as_str).map(str::to_string),
            meta: map("meta"),
            sampled: v.get("sampled").and_then(Value::as_bool),
            recording: v.get("recording").and_then(Value::as_bool),
            trace_state: v
                .get("trace_state")
                .and_then(Value::as_str)
                .map(str::to_string),
            injected: map("injected"),
            raw: v,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The low 64 bits of the trace id (the Datadog `trace_id`).
    pub fn trace_id_low(&self) -> u64 {
        self.trace_id.expect("the backend reported no trace id") as u64
    }
}

// ---------------------------------------------------------------------------------------------
// All three together

/// The test agent and both backends reporting to it.
pub struct Peers {
    pub agent: TestAgent,
    pub dd: FlaskApp,
    pub otel: FlaskApp,
}

impl Peers {
    /// Start the agent and both apps at once (the apps only need the agent's ports to start)
    /// and wait until all three are ready.
    pub fn start() -> Peers {
        let started = Instant::now();
        let mut agent = TestAgent::spawn();
        let dd = FlaskApp::spawn_ddtrace(&agent);
        let otel = FlaskApp::spawn_otel(&agent);
        if !agent.wait_ready() {
            // A port was taken under us: start again on other ports.
            drop((dd, otel));
            let agent = TestAgent::start();
            let dd = FlaskApp::spawn_ddtrace(&agent);
            let otel = FlaskApp::spawn_otel(&agent);
            return Peers::finish(agent, dd, otel, started);
        }
        Peers::finish(agent, dd, otel, started)
    }

    fn finish(agent: TestAgent, dd: PendingApp, otel: PendingApp, started: Instant) -> Peers {
        let otel = otel.ready();
        let dd = dd.ready();
        eprintln!(
            "peers ready in {:?}: test agent :{} (OTLP :{}), dd_app {}, otel_app {}",
            started.elapsed(),
            agent.trace_port,
            agent.otlp_http_port,
            dd.addr,
            otel.addr
        );
        Peers { agent, dd, otel }
    }

    /// Everything the three peers printed, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- test agent ---\n{}\n--- dd_app ---\n{}\n--- otel_app ---\n{}",
            self.agent.process.output(),
            self.dd.process.output(),
            self.otel.process.output()
        )
    }
}

/// One set of peers shared by every test of a test binary. They exit when the binary does.
pub fn shared() -> &'static Peers {
    static PEERS: OnceLock<Peers> = OnceLock::new();
    PEERS.get_or_init(Peers::start)
}

// ---------------------------------------------------------------------------------------------
// RUM-shaped requests

/// The ids a Datadog RUM browser SDK would put on one request: a random 64-bit trace id and a
/// random 63-bit span id (see the propagation doc, §8).
#[derive(Debug, Clone, Copy)]
pub struct Rum {
    pub trace_id: u64,
    pub parent_id: u64,
}

impl Rum {
    pub fn random() -> Rum {
        Rum {
            trace_id: rand::random::<u64>().max(1),
            parent_id: (rand::random::<u64>() >> 1).max(1),
        }
    }

    /// The 128-bit form (high half zero), as W3C and OTLP carry it.
    pub fn trace_id_128(&self) -> u128 {
        self.trace_id as u128
    }

    /// `datadog` propagator headers with priority 1 (`keep`) or 0.
    pub fn datadog(&self, keep: bool) -> Vec<(String, String)> {
        self.datadog_priority(if keep { 1 } else { 0 })
    }

    /// `datadog` headers claiming any priority (a client that lies claims 2).
    pub fn datadog_priority(&self, priority: i64) -> Vec<(String, String)> {
        vec![
            ("x-datadog-origin".into(), "rum".into()),
            ("x-datadog-parent-id".into(), self.parent_id.to_string()),
            ("x-datadog-sampling-priority".into(), priority.to_string()),
            ("x-datadog-trace-id".into(), self.trace_id.to_string()),
        ]
    }

    /// `tracecontext` propagator headers: flag `01`/`00` and `dd=s:1;o:rum` / `dd=s:0;o:rum`.
    pub fn tracecontext(&self, keep: bool) -> Vec<(String, String)> {
        vec![
            (
                "traceparent".into(),
                format!(
                    "00-{:032x}-{:016x}-{}",
                    self.trace_id,
                    self.parent_id,
                    if keep { "01" } else { "00" }
                ),
            ),
            (
                "tracestate".into(),
                format!("dd=s:{};o:rum", if keep { 1 } else { 0 }),
            ),
        ]
    }

    /// What the SDK sends with its default propagators (`tracecontext` and `datadog`).
    pub fn default_propagators(&self, keep: bool) -> Vec<(String, String)> {
        let mut h = self.tracecontext(keep);
        h.extend(self.datadog(keep));
        h
    }
}

/// Borrow owned header pairs as the harness's `&[(&str, &str)]`.
pub fn header_refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
