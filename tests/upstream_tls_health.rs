//! Two upstream features against real peers: TLS to the upstream (`tls`, `sni`, `verify_cert`)
//! and the active health check (`health_check = { interval_ms }`).
//!
//! The HTTPS upstream is `tests/peers/tls_upstream.py` (Python's `ssl` and `http.server`, run
//! with the venv's python from `.ci/setup test`) serving a self-signed certificate that the
//! `openssl` CLI makes for each test in a temporary directory. It reports the SNI it received.
//! The health-check pools pair a real recording upstream with a port nothing listens on, or
//! with a second real upstream that the test stops after start-up.

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    base_config, dead_addr, get, manifest_dir, peers_python, stitch_check, Stitch, Upstream,
};
use peers::{wait_for, PeerProcess};

/// The name in the test certificate (CN and the only subjectAltName).
const CERT_NAME: &str = "stitch-upstream.test";

// ---------------------------------------------------------------------------------------------
// The HTTPS upstream

/// Make a self-signed P-256 certificate for [`CERT_NAME`] in `dir`: `(cert.pem, key.pem)`.
fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "2", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .arg("-subj")
        .arg(format!("/CN={CERT_NAME}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{CERT_NAME}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}): run `.ci/setup test`"));
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A running `tls_upstream.py` ([`PeerProcess`]: killed on drop, and exiting by itself when the
/// test process ends).
struct TlsUpstream {
    process: PeerProcess,
    addr: SocketAddr,
    /// The server's self-signed certificate (its own CA), for `ca_file`.
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsUpstream {
    fn start() -> TlsUpstream {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_cert(dir.path());
        let peers = manifest_dir().join("tests/peers");
        let mut cmd = Command::new(peers_python());
        cmd.arg(peers.join("tls_upstream.py"))
            .arg(&cert)
            .arg(&key)
            .current_dir(&peers);
        let (mut process, rx) = PeerProcess::spawn("tls_upstream.py", cmd);
        let addr = process.wait_line(&rx, "tls_upstream listening on ");
        let addr = addr
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("tls_upstream.py: bad address {addr:?}: {e}"));
        TlsUpstream {
            process,
            addr,
            cert,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        self.process.output()
    }

    /// The `tls_upstream request METHOD PATH sni=SNI` lines: the requests that reached it.
    fn requests(&self) -> Vec<String> {
        self.process
            .lines()
            .iter()
            .filter_map(|l| l.strip_prefix("tls_upstream request ").map(str::to_string))
            .collect()
    }

    fn handshake_failures(&self) -> Vec<String> {
        self.process
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("tls_upstream handshake failed"))
            .collect()
    }
}

/// stitch with one route `secure` (path `/`) to `server` over TLS; `extra` holds the
/// `sni`/`verify_cert` lines.
fn tls_stitch(server: SocketAddr, extra: &str) -> Stitch {
    let cfg = format!(
        "{}[upstream.secure]\nservers = [\"{server}\"]\ntls = true\n{extra}\n\n\
         [[route]]\nname = \"secure\"\npath = \"/\"\nupstream = \"secure\"\n",
        base_config()
    );
    Stitch::start(&cfg)
}

// ---------------------------------------------------------------------------------------------
// TLS

#[test]
fn tls_without_verification_reaches_the_https_upstream_with_the_configured_sni() {
    let up = TlsUpstream::start();
    let s = tls_stitch(
        up.addr,
        &format!("sni = \"{CERT_NAME}\"\nverify_cert = false"),
    );
    let r = get(&s.url("/over-tls?x=1"), &[("x-probe", "tls-1")]).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, up.output());
    let j = r.json();
    assert_eq!(j["app"], "tls_upstream", "the HTTPS upstream answered: {j}");
    assert_eq!(j["path"], "/over-tls?x=1");
    assert_eq!(j["headers"]["x-probe"], "tls-1");
    assert_eq!(j["sni"], CERT_NAME, "stitch sent the configured sni: {j}");
    assert!(
        j["tls"].as_str().unwrap_or_default().starts_with("TLSv1."),
        "{j}"
    );
    assert_eq!(
        up.requests(),
        vec![format!("GET /over-tls?x=1 sni={CERT_NAME}")],
        "{}",
        up.output()
    );
    let m = s.metrics();
    assert!(
        m.contains("stitch_requests_total{route=\"secure\",status_class=\"2xx\"} 1"),
        "{m}"
    );
}

/// The default `sni` is the first server's host; when that is an IP address no SNI is sent
/// (RFC 6066 allows only host names; rust-openssl leaves IP literals out of the ClientHello).
#[test]
fn tls_to_an_ip_server_without_sni_sends_none() {
    let up = TlsUpstream::start();
    let s = tls_stitch(up.addr, "verify_cert = false");
    let r = get(&s.url("/default-sni"), &[]).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, up.output());
    let j = r.json();
    assert_eq!(j["path"], "/default-sni");
    assert!(j["sni"].is_null(), "no SNI for an IP address: {j}");
}

/// Pingora sends no SNI for an empty `sni` and then skips certificate verification, so an
/// empty `sni` with `verify_cert = true` would accept any certificate: `stitch check` and
/// start-up refuse it. Without verification it is allowed (no SNI is sent).
#[test]
fn tls_empty_sni_with_verification_is_refused() {
    let cfg = |verify: bool| {
        format!(
            "{}[upstream.secure]\nservers = [\"127.0.0.1:8443\"]\ntls = true\nsni = \"\"\n\
             verify_cert = {verify}\n\n[[route]]\npath = \"/\"\nupstream = \"secure\"\n",
            base_config()
        )
    };
    let (ok, out) = stitch_check(&cfg(true));
    assert!(!ok, "an empty sni with verify_cert = true passed: {out}");
    assert!(
        out.contains("upstream.secure.sni: is empty, which turns certificate verification off"),
        "{out}"
    );
    let (ok, out) = stitch_check(&cfg(false));
    assert!(ok, "an empty sni without verification is refused: {out}");
}

#[test]
fn tls_with_verification_trusts_the_configured_ca_file() {
    let up = TlsUpstream::start();
    // The same self-signed server that verification refuses (below) is accepted once its
    // certificate is the upstream's ca_file: verification is on, only the trust changed.
    let s = tls_stitch(
        up.addr,
        &format!(
            "sni = \"{CERT_NAME}\"\nverify_cert = true\nca_file = \"{}\"",
            up.cert.display()
        ),
    );
    let r = get(&s.url("/trusted?y=2"), &[]).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, up.output());
    let requests = up.requests();
    assert_eq!(requests.len(), 1, "{}", up.output());
    assert!(
        requests[0].contains("/trusted?y=2") && requests[0].contains(&format!("sni={CERT_NAME}")),
        "{requests:?}"
    );
    assert!(up.handshake_failures().is_empty(), "{}", up.output());
}

#[test]
fn a_changed_ca_file_is_used_by_the_next_new_connection() {
    // The ca_file's content changes while the config text does not: the reload sees it (the
    // content hash covers referenced files), and the pool's kept TLS connection, made under the
    // old CA, is not reused under the new one.
    let up = TlsUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(&up.cert, &ca).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (wrong_ca, _) = self_signed_cert(other.path());
    let cfg = format!(
        "{}[upstream.secure]\nservers = [\"{}\"]\ntls = true\nsni = \"{CERT_NAME}\"\n\
         verify_cert = true\nca_file = \"{}\"\n\n\
         [[route]]\nname = \"secure\"\npath = \"/\"\nupstream = \"secure\"\n",
        base_config(),
        up.addr,
        ca.display()
    );
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, cfg).unwrap();
    let s = Stitch::launch(&path, &["--no-watch"], &[]);
    let status = |p: &str| get(&s.url(p), &[]).unwrap().status;
    assert_eq!(status("/first"), 200, "{}", up.output());
    let reloaded = |n: f64| {
        wait_for(
            "the reload",
            Duration::from_secs(10),
            || {
                let m = s.metrics();
                (common::metric(&m, "stitch_config_reloads_total", &[("result", "success")])? >= n)
                    .then_some(())
            },
            || s.stderr(),
        )
    };

    std::fs::copy(&wrong_ca, &ca).unwrap();
    s.signal("HUP");
    reloaded(1.0);
    assert_eq!(
        status("/after-wrong-ca"),
        502,
        "the new CA does not trust the server"
    );

    std::fs::copy(&up.cert, &ca).unwrap();
    s.signal("HUP");
    reloaded(2.0);
    assert_eq!(status("/after-right-ca"), 200, "{}", up.output());
}

#[test]
fn a_bad_ca_file_is_refused_by_check_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let cfg = |tls: bool, ca: &Path| {
        format!(
            "{}[upstream.secure]\nservers = [\"127.0.0.1:8443\"]\ntls = {tls}\n\
             ca_file = \"{}\"\n\n[[route]]\npath = \"/\"\nupstream = \"secure\"\n",
            base_config(),
            ca.display()
        )
    };
    let line_of = |text: &str| 1 + text.lines().position(|l| l.starts_with("ca_file")).unwrap();
    for (tls, ca, reason) in [
        (true, &missing, "cannot read"),
        (true, &not_pem, "holds no PEM certificate"),
        (false, &not_pem, "needs tls = true"),
    ] {
        let text = cfg(tls, ca);
        let (ok, out) = stitch_check(&text);
        assert!(!ok, "accepted ca_file {ca:?} with tls = {tls}: {out}");
        let want = format!(":{}: upstream.secure.ca_file: ", line_of(&text));
        assert!(
            out.contains(&want) && out.contains(reason),
            "want {want:?} and {reason:?} in: {out}"
        );
    }
}

#[test]
fn tls_with_verification_refuses_a_self_signed_certificate() {
    let up = TlsUpstream::start();
    // The sni matches the certificate's name, so the only thing wrong is that nothing trusts
    // its issuer; the same upstream and sni with `verify_cert = false` answer 200 (above).
    let s = tls_stitch(
        up.addr,
        &format!("sni = \"{CERT_NAME}\"\nverify_cert = true"),
    );
    let r = get(&s.url("/must-not-arrive"), &[]).unwrap();
    assert_eq!(r.status, 502, "{}\n{}", r.body, up.output());
    let j = r.json();
    assert_eq!(j["error"], "upstream_unavailable", "{j}");
    assert_eq!(j["route"], "secure", "{j}");
    let message = j["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&up.addr.to_string()) && message.ends_with("failed: tls"),
        "{j}"
    );
    let m = s.metrics();
    assert!(
        m.contains("stitch_upstream_errors_total{kind=\"tls\",route=\"secure\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stitch_requests_total{route=\"secure\",status_class=\"5xx\"} 1"),
        "{m}"
    );
    // stitch reached the server and rejected its certificate during the handshake.
    wait_for(
        "tls_upstream to report the aborted handshake",
        Duration::from_secs(10),
        || (!up.handshake_failures().is_empty()).then_some(()),
        || up.output(),
    );
    assert!(up.requests().is_empty(), "{}", up.output());
}

// ---------------------------------------------------------------------------------------------
// Health check

/// stitch with one route `pool` (path `/`) to the servers `live` and `dead`, in that order.
fn pool_stitch(live: SocketAddr, dead: SocketAddr, health_check: &str) -> Stitch {
    let cfg = format!(
        "{}[upstream.pool]\nservers = [\"{live}\", \"{dead}\"]\n{health_check}\n\n\
         [[route]]\nname = \"pool\"\npath = \"/\"\nupstream = \"pool\"\n",
        base_config()
    );
    Stitch::start(&cfg)
}

/// Send `GET /warm-up` through `s` until the last `n` answers are all 200 (15 s at most); the
/// statuses seen.
fn wait_until_consecutive_200s(s: &Stitch, n: usize) -> Vec<u16> {
    let statuses = RefCell::new(Vec::new());
    wait_for(
        &format!("{n} consecutive 200s through the health-checked pool"),
        Duration::from_secs(15),
        || {
            let status = get(&s.url("/warm-up"), &[]).unwrap().status;
            let mut seen = statuses.borrow_mut();
            seen.push(status);
            (seen.len() >= n && seen[seen.len() - n..].iter().all(|&c| c == 200)).then_some(())
        },
        || {
            let seen = statuses.borrow();
            let ok = seen.iter().filter(|&&c| c == 200).count();
            let stderr = s.stderr_lines.lock().unwrap();
            let tail = &stderr[stderr.len().saturating_sub(5)..];
            format!(
                "{} requests, {ok} answered 200, the last ones {:?}\nstitch stderr (end):\n{}",
                seen.len(),
                &seen[seen.len().saturating_sub(12)..],
                tail.join("\n")
            )
        },
    );
    statuses.into_inner()
}

/// Send `GET /after/0` .. `/after/{n-1}` through `s`, each answered 200 and received by `live`,
/// in order.
fn assert_all_reach(s: &Stitch, live: &Upstream, n: usize) {
    let before = live.requests().len();
    for i in 0..n {
        let r = get(&s.url(&format!("/after/{i}")), &[]).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let paths: Vec<String> = live.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("/after/{i}")).collect();
    assert_eq!(paths, expected, "all {n} reached the live server");
}

#[test]
fn health_check_takes_a_dead_server_out_of_rotation() {
    let live = Upstream::start();
    let dead = dead_addr();
    let s = pool_stitch(live.addr, dead, "health_check = { interval_ms = 100 }");
    // Until the first check has run both servers count as healthy and round robin alternates,
    // so four 200s in a row only happen once the dead server is skipped.
    let warm_up = wait_until_consecutive_200s(&s, 4);
    eprintln!("warm-up statuses: {warm_up:?}");
    assert_all_reach(&s, &live, 20);
}

/// The check keeps running: a server that stops answering after start-up is taken out of
/// rotation within a few intervals. (Round robin without the check would keep sending every
/// other request to it, so four 200s in a row would never come.)
#[test]
fn health_check_takes_a_server_that_dies_out_of_rotation() {
    let live = Upstream::start();
    let mut dying = Upstream::start();
    let s = pool_stitch(
        live.addr,
        dying.addr,
        "health_check = { interval_ms = 100 }",
    );
    for i in 0..4 {
        let r = get(&s.url(&format!("/before/{i}")), &[]).unwrap();
        assert_eq!(r.status, 200, "both servers are up: {}", r.body);
    }
    let paths = |u: &Upstream| u.requests().into_iter().map(|r| r.path).collect::<Vec<_>>();
    assert!(
        !dying.requests().is_empty() && !live.requests().is_empty(),
        "round robin used both servers: live {:?}, dying {:?}",
        paths(&live),
        paths(&dying)
    );
    dying.stop();
    let after_stop = wait_until_consecutive_200s(&s, 4);
    eprintln!("statuses after the server died: {after_stop:?}");
    assert_all_reach(&s, &live, 20);
}

#[test]
fn without_health_check_round_robin_sends_requests_to_the_dead_server() {
    let live = Upstream::start();
    let dead = dead_addr();
    let s = pool_stitch(live.addr, dead, "");
    let mut refused = 0;
    let mut ok = 0;
    for i in 0..10 {
        let r = get(&s.url(&format!("/rr/{i}")), &[]).unwrap();
        match r.status {
            200 => ok += 1,
            502 => {
                let j = r.json();
                assert_eq!(j["error"], "upstream_unavailable", "{j}");
                assert!(
                    j["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(&dead.to_string()),
                    "the 502 names the dead server: {j}"
                );
                refused += 1;
            }
            other => panic!("request {i}: unexpected {other}: {}", r.body),
        }
    }
    assert!(refused >= 1, "no request went to the dead server");
    assert_eq!(
        live.requests().len(),
        ok,
        "every 200 came from the live server"
    );
    let m = s.metrics();
    assert!(
        m.contains(&format!(
            "stitch_upstream_errors_total{{kind=\"connect_refused\",route=\"pool\"}} {refused}"
        )),
        "{m}"
    );
}
