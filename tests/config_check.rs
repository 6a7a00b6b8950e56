//! `stitch check` on broken configurations: each problem reported as FILE:LINE: key: reason,
//! every problem (not just the first), and a non-zero exit.

mod common;

use std::process::Command;

use common::stitch_check;

fn assert_reports(text: &str, expected: &[&str]) {
    let (ok, out) = stitch_check(text);
    assert!(!ok, "a broken config passed: {out}");
    for e in expected {
        assert!(out.contains(e), "expected `{e}` in:\n{out}");
    }
}

const ROUTE: &str = "[[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\n";

#[test]
fn unknown_key() {
    assert_reports(
        &format!("[server]\nlisten = [\"127.0.0.1:0\"]\nthreds = 2\n\n{ROUTE}"),
        &["FILE:3: server.threds: unknown field `threds`"],
    );
}

#[test]
fn bad_address() {
    assert_reports(
        &format!(
            "[server]\nlisten = [\"localhost-8080\"]\n\n[admin]\nlisten = \"nope\"\n\n{ROUTE}"
        ),
        &[
            "FILE:2: server.listen[0]: `localhost-8080` is not an IP:port address",
            "FILE:5: admin.listen: `nope` is not an IP:port address",
        ],
    );
}

#[test]
fn bad_inspector_settings() {
    assert_reports(
        &format!("[admin]\ninspect_requests = -1\ndd_site = \"https://datadoghq.com\"\n\n{ROUTE}"),
        &[
            "FILE:2: admin.inspect_requests: must be between 0 and 100000, got -1",
            "FILE:3: admin.dd_site: `https://datadoghq.com` is not a Datadog site name",
        ],
    );
}

#[test]
fn bad_baggage_tags() {
    assert_reports(
        &format!(
            "[propagation.rum]\nbaggage_tags = [\"session id\", \"user.id\", \"user.id\"]\n\n{ROUTE}"
        ),
        &[
            "FILE:2: propagation.rum.baggage_tags[0]: \"session id\" is not a baggage key",
            "FILE:2: propagation.rum.baggage_tags[2]: \"user.id\" is listed twice",
        ],
    );
}

#[test]
fn route_to_a_missing_pool() {
    assert_reports(
        "[[route]]\npath = \"/\"\nupstream = \"backend\"\n",
        &["FILE:3: route[0].upstream: no upstream named \"backend\""],
    );
}

#[test]
fn duplicate_route() {
    assert_reports(
        "[[route]]\nname = \"a\"\npath = \"/api\"\nupstream = \"builtin:echo\"\n\n[[route]]\nname = \"b\"\npath = \"/api\"\nupstream = \"builtin:echo\"\n",
        &["FILE:8: route[1].path: duplicate route"],
    );
}

#[test]
fn bad_toml_syntax() {
    assert_reports(
        "[server]\nlisten = [\"127.0.0.1:0\"\n",
        &["FILE:3: server.listen: invalid array expected `]`"],
    );
}

#[test]
fn empty_upstream_list() {
    assert_reports(
        &format!("[upstream.a]\nservers = []\n\n{ROUTE}"),
        &["FILE:2: upstream.a.servers: the server list is empty"],
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let (ok, out) = stitch_check(
        "[server]\nthreads = 0\n\n[upstream.a]\nservers = [\"nohost\"]\nconnect_timeout_ms = -1\n\n[[route]]\npath = \"api\"\nupstream = \"zzz\"\n",
    );
    assert!(!ok);
    for e in [
        "FILE:2: server.threads: must be between 1 and 1024, got 0",
        "FILE:5: upstream.a.servers[0]: `nohost` is not host:port",
        "FILE:6: upstream.a.connect_timeout_ms: must be a positive number",
        "FILE:9: route[0].path: must start with '/'",
        "FILE:10: route[0].upstream: no upstream named \"zzz\"",
    ] {
        assert!(out.contains(e), "expected `{e}` in:\n{out}");
    }
}

#[test]
fn shipped_configs_pass() {
    let dir = common::manifest_dir().join("conf");
    let mut files = vec![dir.join("stitch.toml")];
    for e in std::fs::read_dir(dir.join("examples")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    // The examples' relative certificate paths are taken from the repository root.
    assert!(
        files.iter().any(|f| f.ends_with("edge-tls.toml")),
        "{files:?}"
    );
    for f in files {
        let out = Command::new(common::stitch_bin())
            .args(["check", "--config"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn upstream_protocol_must_fit_its_transport() {
    assert_reports(
        &format!(
            "[upstream.a]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"h2\"\n\n\
             [upstream.b]\nservers = [\"127.0.0.1:1\"]\ntls = true\nprotocol = \"h2c\"\n\n\
             [upstream.c]\nservers = [\"127.0.0.1:1\"]\nprotocol = \"h3\"\nmax_h2_streams = 0\n\n{ROUTE}"
        ),
        &[
            "FILE:3: upstream.a.protocol: \"h2\" is HTTP/2 over TLS (tls = true); cleartext HTTP/2 is \"h2c\"",
            "FILE:8: upstream.b.protocol: \"h2c\" is cleartext HTTP/2; over TLS it is \"h2\"",
            "FILE:12: upstream.c.protocol: must be \"http1\", \"h2\" or \"h2c\", got \"h3\"",
            "FILE:13: upstream.c.max_h2_streams: must be between 1 and 10000, got 0",
        ],
    );
}

#[test]
fn a_bad_environment_override_is_reported_by_variable_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    std::fs::write(
        &path,
        format!("[export.datadog]\nagent_url = \"http://127.0.0.1:8126\"\n\n{ROUTE}"),
    )
    .unwrap();
    let check = |var: &str, value: &str| {
        let out = Command::new(common::stitch_bin())
            .args(["check", "--config"])
            .arg(&path)
            .env(var, value)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).replace(&*path.to_string_lossy(), "FILE"),
        )
    };
    let (ok, out) = check("DD_TRACE_AGENT_URL", "ftp://agent:8126");
    assert!(!ok, "a bad DD_TRACE_AGENT_URL passed");
    assert!(
        out.contains("FILE: env DD_TRACE_AGENT_URL: export.datadog.agent_url: `ftp://agent:8126`"),
        "{out}"
    );
    let (ok, out) = check("DD_TRACE_AGENT_PORT", "notaport");
    assert!(
        !ok && out.contains("env DD_TRACE_AGENT_PORT: export.datadog.agent_url"),
        "{out}"
    );
    let (ok, out) = check("DD_AGENT_HOST", "agent.internal");
    assert!(ok, "a good override passes: {out}");
}

#[test]
fn propagation_extraction_keys() {
    assert_reports(
        &format!(
            "[propagation.p]\nextract_behavior = \"drop\"\ntracestate_invalid = \"strict\"\n\n[propagation.q]\ntrust = \"none\"\nextract_behavior = \"continue\"\n\n{ROUTE}"
        ),
        &[
            "FILE:2: propagation.p.extract_behavior: must be \"continue\", \"restart\" or \"ignore\", got \"drop\"",
            "FILE:3: propagation.p.tracestate_invalid: must be \"drop_member\" or \"discard_header\", got \"strict\"",
            "FILE:6: propagation.q.trust: \"none\" means extract_behavior = \"restart\", which contradicts extract_behavior = \"continue\"",
        ],
    );
}

/// A PROXY protocol listener needs someone to believe: with no `trusted_proxies` every header
/// would be read and ignored, so `stitch check` refuses it with the option's line.
#[test]
fn proxy_protocol_needs_trusted_proxies_and_a_sane_timeout() {
    let listener = "[[server.listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\n";
    assert_reports(
        &format!("[server]\nproxy_protocol_timeout_ms = 0\n\n{listener}{ROUTE}"),
        &[
            "FILE:2: server.proxy_protocol_timeout_ms: must be between 1 and 60000, got 0",
            "FILE:6: server.listener[0].proxy_protocol: needs [server] trusted_proxies",
        ],
    );
    let (ok, out) = stitch_check(&format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\n{listener}{ROUTE}"
    ));
    assert!(ok, "{out}");
    // Off (the default) needs nothing.
    let (ok, out) = stitch_check(&format!(
        "[[server.listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = false\n\n{ROUTE}"
    ));
    assert!(ok, "{out}");
}

/// Found by fuzzing the loader (`fuzz/`): refusals that named no line, or gave no reason.
#[test]
fn every_refusal_names_a_line_and_a_reason() {
    assert_reports("", &["FILE:1: route: no [[route]] is configured"]);
    assert_reports(
        &format!("[server]\nthreads = 2\nlisten = []\n\n{ROUTE}"),
        &["FILE:3: server.listen: at least one listen address is required"],
    );
    assert_reports(
        "[server]\nthreads = 2\n\n[[route]]\npath = \"/\"\nupstream = ",
        &["FILE:6: route.upstream: TOML syntax error: the value is missing or cut short"],
    );
}
