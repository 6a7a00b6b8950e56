//! Edge TLS with real clients: certificates chosen by SNI (exact, wildcard, default), TLS 1.2
//! and 1.3 only, ALPN `h2` (curl `--http2`, `nghttp`), h2c with prior knowledge beside
//! HTTP/1.1, the expiry metric, certificate rotation by the live reload while a connection
//! stays open, `stitch check` on bad certificates, the redirect to HTTPS and HSTS.
//!
//! Certificates come from a test CA made per test with the openssl CLI (`common/pki.rs`);
//! curl and nghttp (Debian's `curl` and `nghttp2-client`) are installed by `.ci/setup test`.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{metric, stitch_check, Stitch, Upstream};
use pki::{serial_of_pem, Leaf, Pki};

/// One `[[server.listener]]` with TLS over `certs` (`{ cert_file, key_file, ...extra }`).
fn tls_listener(certs: &[(&Leaf, &str)], extra: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(l, more)| {
            format!(
                "{{ cert_file = {:?}, key_file = {:?}{more} }}",
                l.cert.display().to_string(),
                l.key.display().to_string()
            )
        })
        .collect();
    format!(
        "[[server.listener]]\naddress = \"127.0.0.1:0\"\n{extra}tls = {{ certificates = [{}] }}\n\n",
        list.join(", ")
    )
}

/// A config with `listeners`, the admin listener, and `/` to the echo upstream.
fn config(listeners: &str, routes: &str) -> String {
    format!(
        "[server]\nthreads = 1\nshutdown_timeout_seconds = 1\n\n{listeners}[admin]\nlisten = \"127.0.0.1:0\"\n\n{routes}"
    )
}

const ECHO: &str = "[[route]]\nname = \"echo\"\npath = \"/\"\nupstream = \"builtin:echo\"\n";

fn addr_of(url: &str) -> SocketAddr {
    url.split_once("://").unwrap().1.parse().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): run `.ci/setup test`"))
}

/// curl against `https://NAME:PORT/PATH` with NAME resolved to stitch, trusting the test CA:
/// (exit success, `-w` output then body, stderr).
fn curl_name(pki: &Pki, addr: SocketAddr, name: &str, path: &str, args: &[&str]) -> Output {
    run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&pki.ca)
        .arg("--resolve")
        .arg(format!("{name}:{}:127.0.0.1", addr.port()))
        .args(args)
        .arg(format!("https://{name}:{}{path}", addr.port())))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The serial of the certificate stitch serves for `sni` (None: no SNI), read with
/// `openssl s_client`.
fn served_serial(addr: SocketAddr, sni: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate served for {sni:?}: {}", text(&out)));
    let end = stdout[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    serial_of_pem(stdout[start..end].as_bytes())
}

/// Poll `probe` every 20 ms until it is true, at most `within`.
fn wait_until(what: &str, within: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Certificates

#[test]
fn sni_picks_exact_and_wildcard_certificates_and_the_default_for_the_rest() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], 2);
    let wild = pki.leaf("wild", "wild.test", &["*.wild.test"], 2);
    let b = pki.leaf("b", "b.test", &["b.test", "www.b.test"], 30);
    // The default is declared last: `default = true`, not the order, makes it the default.
    let listener = tls_listener(&[(&a, ""), (&wild, ""), (&b, ", default = true")], "");
    let s = Stitch::start(&config(&listener, ECHO));
    let addr = addr_of(&s.listeners[0]);
    assert!(s.listeners[0].starts_with("https://"), "{:?}", s.listeners);

    // Each name verifies against the test CA through curl: the served certificate covers it.
    for name in ["a.test", "x.wild.test", "b.test", "www.b.test"] {
        let out = curl_name(
            &pki,
            addr,
            name,
            "/",
            &["-o", "/dev/null", "-w", "%{http_code}"],
        );
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{name}");
    }
    #[rustfmt::skip]
    let table: &[(Option<&str>, &Leaf, &str)] = &[
        (Some("a.test"), &a, "exact name"),
        (Some("A.TEST"), &a, "names are case-insensitive"),
        (Some("x.wild.test"), &wild, "wildcard"),
        (Some("y.x.wild.test"), &b, "a wildcard covers one label: default"),
        (Some("wild.test"), &b, "a wildcard does not cover its apex: default"),
        (Some("unknown.test"), &b, "unknown name: default"),
        (None, &b, "no SNI: default"),
    ];
    for (sni, leaf, why) in table {
        assert_eq!(served_serial(addr, *sni), leaf.serial, "{sni:?}: {why}");
    }
    // An unknown name gets the default certificate, which a verifying client refuses.
    let out = curl_name(&pki, addr, "unknown.test", "/", &["-o", "/dev/null"]);
    assert!(!out.status.success(), "{}", text(&out));

    // The expiry metric: one series per certificate, at its notAfter.
    let m = s.metrics();
    let listener = "127.0.0.1:0";
    for (name, days) in [("a.test", 2.0), ("*.wild.test", 2.0), ("b.test", 30.0)] {
        let v = metric(
            &m,
            "stitch_tls_certificate_expiry_timestamp_seconds",
            &[("listener", listener), ("name", name)],
        )
        .unwrap_or_else(|| panic!("no expiry series for {name}:\n{m}"));
        let want = now() + days * 86_400.0;
        assert!((v - want).abs() < 120.0, "{name}: {v} vs about {want}");
    }
}

#[test]
fn tls_1_2_and_1_3_only() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], 2);
    let s = Stitch::start(&config(&tls_listener(&[(&a, "")], ""), ECHO));
    let addr = s.listeners[0].split_once("://").unwrap().1.to_string();
    let handshake = |version: &str| {
        // SECLEVEL=0 lets this client offer the old versions at all; the refusal is stitch's.
        run(Command::new("openssl").args([
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "a.test",
            version,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ]))
    };
    for v in ["-tls1_2", "-tls1_3"] {
        let out = handshake(v);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("BEGIN CERTIFICATE"), "{v}: {}", text(&out));
    }
    for v in ["-tls1", "-tls1_1"] {
        let out = handshake(v);
        let all = text(&out);
        assert!(
            !all.contains("BEGIN CERTIFICATE"),
            "{v} was accepted: {all}"
        );
        assert!(all.contains("alert protocol version"), "{v}: {all}");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2

#[test]
fn alpn_offers_h2_and_the_edge_works_the_same_over_it() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], 2);
    let listeners = tls_listener(&[(&a, "")], "") + &tls_listener(&[(&a, "")], "h2 = false\n");
    let routes =
        "[[route]]\nname = \"api\"\npath = \"/\"\nupstream = \"builtin:echo\"\ncors = \"app\"\n\n\
                  [cors.app]\nallowed_origins = [\"https://app.test\"]\n";
    let s = Stitch::start(&config(&listeners, routes));
    let (h2, h1_only) = (addr_of(&s.listeners[0]), addr_of(&s.listeners[1]));

    // curl: h2 where offered, HTTP/1.1 where not.
    let w = ["-o", "/dev/null", "-w", "%{http_version}", "--http2"];
    let out = curl_name(&pki, h2, "a.test", "/", &w);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "{}", text(&out));
    let out = curl_name(&pki, h1_only, "a.test", "/", &w);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1.1",
        "{}",
        text(&out)
    );

    // nghttp (h2 only, from nghttp2-client): the trace headers rewritten for the upstream.
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let out = run(Command::new("nghttp").args([
        "-H",
        &format!("traceparent: {incoming}"),
        &format!("https://127.0.0.1:{}/api/x", h2.port()),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let body = String::from_utf8_lossy(&out.stdout);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sent = echo["headers"]["traceparent"].as_str().unwrap();
    assert!(
        sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent != incoming,
        "stitch continues the trace as the new parent: {echo}"
    );
    assert_eq!(
        echo["headers"]["x-datadog-trace-id"], "9532127138774266268",
        "the low 64 bits of the W3C trace id, in decimal: {echo}"
    );

    // A preflight answered at the edge over h2.
    let out = run(Command::new("nghttp").args([
        "-v",
        "-H",
        ":method: OPTIONS",
        "-H",
        "origin: https://app.test",
        "-H",
        "access-control-request-method: POST",
        "-H",
        "access-control-request-headers: traceparent, x-datadog-trace-id",
        &format!("https://127.0.0.1:{}/api", h2.port()),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(stdout.contains("the negotiated protocol: h2"), "{stdout}");
    assert!(stdout.contains(":status: 204"), "{}", text(&out));
    assert!(
        stdout.contains("access-control-allow-origin: https://app.test"),
        "{stdout}"
    );
    let allowed = stdout
        .lines()
        .find(|l| l.contains("access-control-allow-headers:"))
        .unwrap_or_else(|| panic!("no allow-headers: {stdout}"));
    assert!(
        allowed.contains("traceparent") && allowed.contains("x-datadog-trace-id"),
        "{allowed}"
    );
}

#[test]
fn h2c_prior_knowledge_shares_the_port_with_http1() {
    let listeners = "[[server.listener]]\naddress = \"127.0.0.1:0\"\nh2c = true\n\n\
                     [[server.listener]]\naddress = \"127.0.0.1:0\"\n\n";
    let s = Stitch::start(&config(listeners, ECHO));
    let (h2c, plain) = (addr_of(&s.listeners[0]), addr_of(&s.listeners[1]));
    let curl = |addr: SocketAddr, flag: &str| {
        run(Command::new("curl").args([
            "-sS",
            "--max-time",
            "10",
            flag,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &format!("http://{addr}/"),
        ]))
    };
    let out = curl(h2c, "--http2-prior-knowledge");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        text(&out)
    );
    let out = curl(h2c, "--http1.1");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1.1 200",
        "{}",
        text(&out)
    );
    // nghttp speaks h2c with prior knowledge too.
    let out = run(Command::new("nghttp").args(["-s", &format!("http://{h2c}/")]));
    assert!(out.status.success(), "{}", text(&out));
    // A listener without h2c does not speak HTTP/2.
    let out = curl(plain, "--http2-prior-knowledge");
    assert!(
        !String::from_utf8_lossy(&out.stdout).starts_with("2 "),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Rotation

/// A TLS client that keeps one connection open (the `openssl` crate, the library stitch
/// itself links), trusting the test CA.
struct Held {
    stream: openssl::ssl::SslStream<TcpStream>,
}

impl Held {
    fn connect(ca: &Path, addr: SocketAddr, name: &str) -> Held {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
        b.set_ca_file(ca).unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let stream = b.build().connect(name, tcp).expect("TLS handshake");
        Held { stream }
    }

    fn serial(&self) -> String {
        let c = self.stream.ssl().peer_certificate().unwrap();
        serial_of_pem(&c.to_pem().unwrap())
    }

    /// One keep-alive HTTP/1.1 GET; the status.
    fn get(&mut self, path: &str) -> u16 {
        let req = format!("GET {path} HTTP/1.1\r\nhost: a.test\r\n\r\n");
        self.stream.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).expect("read the response");
            assert!(n > 0, "stitch closed the held connection");
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

#[test]
fn rotated_certificate_files_serve_new_handshakes_while_open_connections_keep_theirs() {
    let pki = Pki::new();
    let first = pki.leaf("first", "a.test", &["a.test"], 2);
    let second = pki.leaf("second", "a.test", &["a.test"], 9);
    // The served files are copies, replaced by rename as a deployment (or a Kubernetes secret
    // volume) replaces them.
    let (cert, key) = (pki.path("served.pem"), pki.path("served.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let served = Leaf {
        cert: cert.clone(),
        key: key.clone(),
        serial: first.serial.clone(),
    };
    let s = Stitch::start(&config(&tls_listener(&[(&served, "")], ""), ECHO));
    let addr = addr_of(&s.listeners[0]);

    let mut held = Held::connect(&pki.ca, addr, "a.test");
    assert_eq!(held.serial(), first.serial);
    assert_eq!(held.get("/before"), 200);

    let expiry = |m: &str| {
        metric(
            m,
            "stitch_tls_certificate_expiry_timestamp_seconds",
            &[("listener", "127.0.0.1:0"), ("name", "a.test")],
        )
    };
    let before = expiry(&s.metrics()).unwrap();
    for (from, to) in [(&second.key, &key), (&second.cert, &cert)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    // The directory watch reloads; the expiry metric moves to the new certificate's.
    wait_until(
        "the reload of the new certificate",
        Duration::from_secs(20),
        || expiry(&s.metrics()).is_some_and(|v| v > before + 6.0 * 86_400.0),
    );

    // A new connection gets the new certificate, from curl and from openssl alike.
    let out = curl_name(
        &pki,
        addr,
        "a.test",
        "/after",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        text(&out)
    );
    assert_eq!(served_serial(addr, Some("a.test")), second.serial);
    assert_eq!(
        Held::connect(&pki.ca, addr, "a.test").serial(),
        second.serial
    );
    // The connection opened before keeps working, on the certificate it was made with.
    assert_eq!(held.get("/still-open"), 200);
    assert_eq!(held.serial(), first.serial);

    // A broken replacement (a key that is not the certificate's) is refused: the running
    // certificate keeps serving.
    std::fs::copy(&first.key, &key).unwrap();
    wait_until("the refused reload", Duration::from_secs(20), || {
        metric(&s.metrics(), "stitch_config_last_reload_successful", &[]) == Some(0.0)
    });
    assert_eq!(served_serial(addr, Some("a.test")), second.serial);
}

// ---------------------------------------------------------------------------------------------
// Redirect and HSTS

#[test]
fn plain_listener_redirects_to_https_and_tls_responses_carry_hsts() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], 2);
    let up = Upstream::start();
    let listeners = "[[server.listener]]\naddress = \"127.0.0.1:0\"\nredirect_to_https = true\nhttps_port = 8443\n\n"
        .to_string()
        + &tls_listener(
            &[(&a, "")],
            "hsts = { max_age_seconds = 600, include_subdomains = true }\n",
        );
    let routes = format!(
        "{ECHO}\n[[route]]\nname = \"up\"\npath = \"/up\"\nupstream = \"up\"\n\n\
         [upstream.up]\nservers = [\"{}\"]\n",
        up.addr
    );
    let s = Stitch::start(&config(&listeners, &routes));
    let (plain, tls) = (addr_of(&s.listeners[0]), addr_of(&s.listeners[1]));

    let out = run(Command::new("curl").args([
        "-sS",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "host: a.test",
        &format!("http://{plain}/some/path?q=1"),
    ]));
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 308"), "{}", text(&out));
    assert!(
        head.contains("location: https://a.test:8443/some/path?q=1"),
        "{head}"
    );
    assert!(
        up.requests().is_empty(),
        "a redirected request never goes upstream"
    );

    // HSTS on stitch's own answers (the echo) and on the upstream's, over h2 and HTTP/1.1.
    for (path, flag) in [
        ("/", "--http2"),
        ("/up/x", "--http2"),
        ("/up/y", "--http1.1"),
    ] {
        let out = curl_name(
            &pki,
            tls,
            "a.test",
            path,
            &["-D", "-", "-o", "/dev/null", flag],
        );
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains("strict-transport-security: max-age=600; includesubdomains"),
            "{path} {flag}: {}",
            text(&out)
        );
    }
    assert_eq!(up.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// stitch check

#[test]
fn check_reports_every_bad_certificate_with_its_line() {
    let pki = Pki::new();
    let good = pki.leaf("good", "good.test", &["good.test", "*.good.test"], 2);
    let other = pki.leaf("other", "other.test", &["other.test"], 2);
    let expired = pki.leaf("expired", "old.test", &["old.test"], -1);
    let no_san = pki.leaf("nosan", "nosan.test", &[], 2);
    let p = |path: &Path| path.display().to_string();
    let text = format!(
        "[[server.listener]]\n\
         address = \"127.0.0.1:0\"\n\
         h2c = true\n\
         [server.listener.tls]\n\
         certificates = [\n\
           {{ cert_file = {:?}, key_file = {:?} }},\n\
           {{ cert_file = {:?}, key_file = {:?} }},\n\
           {{ cert_file = {:?}, key_file = {:?} }},\n\
           {{ cert_file = {:?}, key_file = {:?} }},\n\
           {{ cert_file = {:?}, key_file = {:?}, hosts = [\"good.test\", \"nope.test\", \"a.b.good.test\"] }},\n\
           {{ cert_file = \"/nonexistent/x.pem\", key_file = {:?} }},\n\
         ]\n\n\
         [[server.listener]]\n\
         address = \"127.0.0.1:0\"\n\
         hsts = {{ max_age_seconds = 60, preload = true }}\n\n{ECHO}",
        p(&good.cert), p(&other.key),
        p(&expired.cert), p(&expired.key),
        p(&no_san.cert), p(&no_san.key),
        p(&other.cert), p(&other.cert),
        p(&good.cert), p(&good.key),
        p(&good.key),
    );
    let (ok, out) = stitch_check(&text);
    assert!(!ok, "{out}");
    let expected = [
        "FILE:3: server.listener[0].h2c: is for plain listeners".to_string(),
        format!("FILE:6: server.listener[0].tls.certificates[0].key_file: {:?} is not the private key of {:?}", p(&other.key), p(&good.cert)),
        format!("FILE:7: server.listener[0].tls.certificates[1].cert_file: {:?} expired on", p(&expired.cert)),
        format!("FILE:8: server.listener[0].tls.certificates[2].cert_file: {:?} names no DNS host in its subjectAltName: give `hosts`", p(&no_san.cert)),
        format!("FILE:9: server.listener[0].tls.certificates[3].key_file: {:?} is not an unencrypted PEM private key", p(&other.cert)),
        format!("FILE:10: server.listener[0].tls.certificates[4].hosts[1]: `nope.test` is not among the names of {:?} (good.test, *.good.test)", p(&good.cert)),
        "FILE:10: server.listener[0].tls.certificates[4].hosts[2]: `a.b.good.test` is not among the names".to_string(),
        "FILE:11: server.listener[0].tls.certificates[5].cert_file: cannot read \"/nonexistent/x.pem\"".to_string(),
        "FILE:16: server.listener[1].hsts: needs tls".to_string(),
        "FILE:16: server.listener[1].hsts.preload: the preload list needs include_subdomains = true".to_string(),
    ];
    for e in &expected {
        assert!(out.contains(e.as_str()), "expected `{e}` in:\n{out}");
    }
    assert_eq!(out.lines().count(), expected.len(), "{out}");

    // The same certificates, right, pass.
    let fine = format!(
        "{}{ECHO}",
        tls_listener(&[(&good, ""), (&other, ", hosts = [\"other.test\"]")], "")
    );
    let (ok, out) = stitch_check(&fine);
    assert!(ok, "{out}");
}

// ---------------------------------------------------------------------------------------------
// The shipped example

#[test]
fn the_edge_tls_example_serves_the_echo_over_h2_with_its_committed_certificate() {
    let path = common::manifest_dir().join("conf/examples/edge-tls.toml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    // The same file on free ports (its certificate paths are relative to the repository root,
    // where tests run).
    let mut config = shipped.clone();
    for fixed in ["127.0.0.1:8443", "127.0.0.1:8080", "127.0.0.1:9901"] {
        assert!(config.contains(fixed), "the example listens on {fixed}");
        config = config.replace(fixed, "127.0.0.1:0");
    }
    let s = Stitch::start(&config);
    let tls = addr_of(&s.listeners[0]);
    let out = run(Command::new("curl").args([
        "-sS",
        "-k",
        "--http2",
        "-w",
        "\n%{http_version}",
        "--resolve",
        &format!("localhost:{}:127.0.0.1", tls.port()),
        &format!("https://localhost:{}/", tls.port()),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, version) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{}", text(&out));
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["path"], "/", "{echo}");
    // The plain listener redirects to HTTPS (to the TLS listener's port, which a free port
    // cannot name: 443 then).
    let plain = addr_of(&s.listeners[1]);
    let r = common::get(&format!("http://{plain}/x"), &[("host", "localhost")]).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://localhost/x"));
    // /readyz (polled by the harness until ready, and by Kubernetes every few seconds) checks
    // the TLS listener with a real handshake, which Pingora does not log as a failure.
    for _ in 0..3 {
        let r = common::get(&format!("http://{}/readyz", s.admin), &[]).unwrap();
        assert_eq!(r.status, 200);
    }
    let out =
        run(Command::new("curl").args(["-sk", &format!("https://127.0.0.1:{}/", tls.port())]));
    assert!(out.status.success());
    let logged = s.stderr_lines.lock().unwrap().join("\n");
    assert!(!logged.contains("handshake error"), "{logged}");
}
