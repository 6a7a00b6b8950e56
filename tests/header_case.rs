//! Header-name case per upstream (`upstream.NAME.preserve_header_case`), on the wire: a raw
//! upstream records the request head byte for byte and answers with mixed-case names, and the
//! test reads the answer's head byte for byte too.
//!
//! - A pool with `preserve_header_case = true` gets the client's names as written, stitch's own
//!   headers lowercase, and its answer's names reach the client as it wrote them.
//! - A pool without it, in the same process, gets the names Pingora knows title-cased (`Host`,
//!   `User-Agent` is not one of them) and every other name lowercase, both ways.
//! - The choice is live: a reload that drops the last preserving pool turns case keeping off in
//!   the HTTP/1 reader, and a reload that brings one back turns it on again.

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{base_config, metric, Stitch};
use peers::wait_for;

/// An HTTP/1.1 upstream that keeps every request head it reads, as bytes, and answers each
/// with a mixed-case header of its own.
struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = heads.clone();
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let kept = kept.clone();
                thread::spawn(move || serve(stream, kept));
            }
        });
        RawUpstream { addr, heads }
    }

    fn last_head(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Requests without a body, one after another on the connection.
fn serve(mut stream: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            heads
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let answer = "HTTP/1.1 200 OK\r\nX-Backend-Said: Yes\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn config(legacy: SocketAddr, modern: SocketAddr, legacy_keeps_case: bool) -> String {
    format!(
        "{}[upstream.legacy]\nservers = [\"{legacy}\"]\npreserve_header_case = {legacy_keeps_case}\n\n\
         [upstream.modern]\nservers = [\"{modern}\"]\n\n\
         [[route]]\npath = \"/legacy\"\nupstream = \"legacy\"\n\n\
         [[route]]\npath = \"/modern\"\nupstream = \"modern\"\n",
        base_config()
    )
}

/// One request on a new connection, written by hand so the names go out exactly so; returns
/// the answer's head as bytes.
fn ask(proxy: SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: example.test\r\nUser-Agent: case-test\r\n\
         X-Legacy-Token: abc\r\nx-datadog-trace-id: 123\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    answer.split("\r\n\r\n").next().unwrap().to_string()
}

/// The header lines of a head, names as written.
fn names(head: &str) -> Vec<&str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect()
}

fn assert_kept(legacy: &RawUpstream, proxy: SocketAddr, when: &str) {
    let answer = ask(proxy, "/legacy/a");
    let sent = legacy.last_head();
    let got = names(&sent);
    for name in ["Host", "User-Agent", "X-Legacy-Token", "x-datadog-trace-id"] {
        assert!(
            got.contains(&name),
            "{when}: {name} not as written in {sent:?}"
        );
    }
    // stitch's own headers are lowercase whatever the pool asks.
    assert!(got.contains(&"x-forwarded-for"), "{when}: {sent:?}");
    assert!(
        names(&answer).contains(&"X-Backend-Said"),
        "{when}: the answer's case was not kept: {answer:?}"
    );
}

fn assert_lowered(upstream: &RawUpstream, proxy: SocketAddr, path: &str, when: &str) {
    let answer = ask(proxy, path);
    let sent = upstream.last_head();
    let got = names(&sent);
    // The names Pingora knows are title-cased, the others lowercase.
    for name in ["Host", "user-agent", "x-legacy-token", "x-datadog-trace-id"] {
        assert!(got.contains(&name), "{when}: no {name} in {sent:?}");
    }
    assert!(!got.contains(&"X-Legacy-Token"), "{when}: {sent:?}");
    assert!(
        names(&answer).contains(&"x-backend-said"),
        "{when}: the answer's names were not lowercased: {answer:?}"
    );
}

#[test]
fn each_pool_gets_the_case_it_asks_for_and_a_reload_changes_it() {
    let legacy = RawUpstream::start();
    let modern = RawUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, config(legacy.addr, modern.addr, true)).unwrap();
    let s = Stitch::launch(&path, &["--no-watch"], &[]);

    assert_kept(&legacy, s.proxy, "at start");
    assert_lowered(&modern, s.proxy, "/modern/a", "at start, the other pool");

    let mut reloads = 0.0;
    let mut reload = |keep: bool| {
        std::fs::write(&path, config(legacy.addr, modern.addr, keep)).unwrap();
        s.signal("HUP");
        reloads += 1.0;
        let want = reloads;
        wait_for(
            "the reload",
            Duration::from_secs(10),
            || {
                let m = metric(
                    &s.metrics(),
                    "stitch_config_reloads_total",
                    &[("result", "success")],
                );
                (m >= Some(want)).then_some(())
            },
            || s.stderr(),
        );
    };
    // No pool keeps the case now: the reader stops keeping it.
    reload(false);
    assert_lowered(&legacy, s.proxy, "/legacy/a", "after the reload to false");
    // And back.
    reload(true);
    assert_kept(&legacy, s.proxy, "after the reload back to true");
    assert_lowered(
        &modern,
        s.proxy,
        "/modern/a",
        "after the reloads, the other pool",
    );
}
