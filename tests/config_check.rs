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
        files.push(e.unwrap().path());
    }
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
