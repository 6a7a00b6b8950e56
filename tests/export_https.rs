//! Span export to a remote OTLP collector over HTTPS: the real `ddapm-test-agent`'s OTLP/HTTP
//! receiver behind `tests/peers/tls_front.py` (Python's `ssl`, terminating TLS with a leaf
//! certificate for `localhost` signed by a test CA the `openssl` CLI makes per test). stitch
//! trusts the test CA through `export.otlp.ca_file`; the spans arrive, over one kept-alive TLS
//! connection. Without the CA (the system's roots) the handshake is refused and the spans are
//! dropped and counted, never awaited by a request.
//!
//! Needs `.ci/setup test` (the peers venv and the openssl CLI).

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use peers::{wait_for, PeerProcess, TestAgent, ARRIVE_WITHIN};

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}): run `.ci/setup test`"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a leaf certificate for `localhost` it signed: `(ca.pem, leaf.pem, leaf.key)`.
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=stitch test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&ca, dir);
    let mut csr = vec!["req", "-new", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
        dir,
    );
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// `tls_front.py` in front of `target_port`, with the leaf certificate.
struct TlsFront {
    process: PeerProcess,
    addr: SocketAddr,
}

impl TlsFront {
    fn start(cert: &Path, key: &Path, target_port: u16) -> TlsFront {
        let mut cmd = Command::new(peers_python());
        cmd.arg(manifest_dir().join("tests/peers/tls_front.py"))
            .arg(cert)
            .arg(key)
            .arg(target_port.to_string())
            .current_dir(manifest_dir().join("tests/peers"));
        let (mut process, rx) = PeerProcess::spawn("tls_front.py", cmd);
        let addr = process.wait_line(&rx, "tls_front listening on ");
        TlsFront {
            process,
            addr: addr.parse().unwrap(),
        }
    }

    fn lines(&self, prefix: &str) -> Vec<String> {
        self.process
            .lines()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }
}

fn stitch_exporting(endpoint: &str, ca_line: &str, up: &Upstream) -> Stitch {
    let cfg = format!(
        "{}[export]\nflush_interval_ms = 50\nmax_retries = 1\nretry_backoff_ms = 10\n\n\
         [export.otlp]\nendpoint = \"{endpoint}\"\n{ca_line}\n\
         [upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        up.addr
    );
    Stitch::start(&cfg)
}

/// A sampled request with a fresh 64-bit trace id; returns the id.
fn traced_request(s: &Stitch, n: u64) -> u64 {
    let id = 0x5eed_0000_0000_0000 | (std::process::id() as u64) << 16 | n;
    let r = get(
        &s.url("/x"),
        &[
            ("x-datadog-trace-id", &id.to_string()),
            ("x-datadog-parent-id", "99"),
            ("x-datadog-sampling-priority", "1"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    id
}

#[test]
fn spans_reach_an_https_collector_that_a_ca_file_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = test_pki(dir.path());
    let agent = TestAgent::start();
    let front = TlsFront::start(&leaf, &key, agent.otlp_http_port);
    let up = Upstream::start();
    let endpoint = format!("https://localhost:{}/v1/traces", front.addr.port());

    // Trusted through ca_file: every span arrives, all over one TLS connection.
    let s = stitch_exporting(&endpoint, &format!("ca_file = \"{}\"\n", ca.display()), &up);
    let ids: Vec<u64> = (0..3).map(|n| traced_request(&s, n)).collect();
    for id in &ids {
        let span = agent.wait_otlp("the edge span over HTTPS", u128::from(*id), |spans| {
            spans.iter().find(|sp| sp.scope == "stitch").cloned()
        });
        assert_eq!(span.parent_span_id, 99);
    }
    let exported = wait_for(
        "spans counted as exported",
        ARRIVE_WITHIN,
        || {
            let m = s.metrics();
            metric(&m, "stitch_spans_exported_total", &[("exporter", "otlp")])
                .filter(|n| *n >= 3.0)
                .map(|_| m)
        },
        || s.metrics(),
    );
    assert_eq!(
        metric(
            &exported,
            "stitch_export_connections_total",
            &[("exporter", "otlp")]
        ),
        Some(1.0),
        "batches share one kept-alive TLS connection"
    );
    let conns = front.lines("tls_front connection");
    assert_eq!(
        conns,
        ["tls_front connection sni=localhost"],
        "{}",
        front.process.output()
    );
    drop(s);

    // The same collector with the system's roots only: the handshake is refused, the spans are
    // dropped and counted, and requests never wait for it.
    let s = stitch_exporting(&endpoint, "", &up);
    let started = std::time::Instant::now();
    for n in 10..13 {
        traced_request(&s, n);
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_for(
        "spans dropped after the refused handshakes",
        ARRIVE_WITHIN,
        || {
            metric(
                &s.metrics(),
                "stitch_spans_dropped_total",
                &[("exporter", "otlp"), ("reason", "retries_exhausted")],
            )
            .filter(|n| *n >= 3.0)
        },
        || format!("{}\n{}", s.metrics(), front.process.output()),
    );
    assert_eq!(
        metric(
            &s.metrics(),
            "stitch_spans_exported_total",
            &[("exporter", "otlp")]
        ),
        Some(0.0)
    );
    assert!(
        !front.lines("tls_front handshake failed").is_empty(),
        "{}",
        front.process.output()
    );
}

#[test]
fn stitch_check_refuses_a_ca_file_without_https_and_tls_to_an_ip() {
    let (ok, out) = stitch_check(
        "[export.otlp]\nendpoint = \"http://localhost:4318/v1/traces\"\nca_file = \"/nonexistent.pem\"\n",
    );
    assert!(!ok);
    assert!(
        out.contains("FILE:3: export.otlp.ca_file: needs an https:// endpoint"),
        "{out}"
    );
    let (ok, out) =
        stitch_check("[export.otlp]\nendpoint = \"https://127.0.0.1:4318/v1/traces\"\n");
    assert!(!ok);
    assert!(out.contains("FILE:2: export.otlp.endpoint:"), "{out}");
    assert!(out.contains("needs a host name"), "{out}");
    let (ok, out) = stitch_check(
        "[export.otlp]\nendpoint = \"https://localhost:4318/v1/traces\"\nca_file = \"/nonexistent.pem\"\n",
    );
    assert!(!ok);
    assert!(
        out.contains("FILE:3: export.otlp.ca_file: cannot read"),
        "{out}"
    );
}
