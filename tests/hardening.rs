//! Hostile HTTP/1 at the edge: request smuggling and message framing (issue 14, item 1).
//!
//! Each row of [`rows`] is written byte for byte to stitch, in front of [`Recorder`]: a
//! raw-socket upstream that parses what it receives strictly and records every request. For
//! each row stitch must refuse with a 4xx and close, or normalise, and the upstream must never
//! see a request the client did not mean, nor a message whose framing a lax parser could read
//! differently. Where nginx is installed (`.ci/setup bench`) the same bytes go through nginx in
//! front of a recorder of its own, for the README's table; the stitch assertions always run.
//! `STITCH_SMUGGLING_TABLE=FILE` writes the table as Markdown.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{base_config, Stitch};

// ----------------------------------------------------------------------------------------------
// The recording upstream

/// What the recording upstream saw.
#[derive(Debug, Clone)]
enum Seen {
    /// A complete request, as `METHOD target body=N`, with what a strict parser found wrong in
    /// its head (nothing, when the proxy in front normalised it).
    Request { line: String, problems: Vec<String> },
    /// Bytes whose framing the strict parser could not determine; the connection was closed.
    Unframed { reason: String },
    /// The connection ended in the middle of a request.
    Partial { bytes: usize },
}

/// A strict HTTP/1.1 origin on an ephemeral port: it answers every complete request with
/// `METHOD target body=N`, keeps connections alive, and records everything in [`Seen`].
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections holding bytes of a request not complete yet.
    busy: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let busy = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, working, halt) = (seen.clone(), busy.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let (log, working) = (log.clone(), working.clone());
                thread::spawn(move || serve(stream, log, working));
            }
        });
        Recorder {
            addr,
            seen,
            busy,
            stop,
        }
    }

    /// What was seen since the last call, once no connection is in the middle of a request
    /// (a request the proxy gave up on ends when it closes that connection): so a row never
    /// inherits the end of the previous one.
    fn take(&self) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Marks a connection busy while it holds part of a request.
struct Busy<'a> {
    count: &'a AtomicUsize,
    on: bool,
}

impl Busy<'_> {
    fn set(&mut self, on: bool) {
        if on != self.on {
            self.on = on;
            if on {
                self.count.fetch_add(1, Ordering::SeqCst);
            } else {
                self.count.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, busy: Arc<AtomicUsize>) {
    let record = |s: Seen| seen.lock().unwrap().push(s);
    let mut busy = Busy {
        count: &busy,
        on: false,
    };
    let mut buf = Vec::new();
    let mut continued = false;
    loop {
        busy.set(!buf.is_empty());
        let step = match parse_head(&buf) {
            Parse::Bad(reason) => return record(Seen::Unframed { reason }),
            Parse::More => None,
            Parse::Done(head, hlen) => {
                if head.expect_continue && !continued {
                    continued = true;
                    if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                        return;
                    }
                }
                match parse_body(&buf[hlen..], head.framing) {
                    Parse::Bad(reason) => return record(Seen::Unframed { reason }),
                    Parse::More => None,
                    Parse::Done(len, blen) => Some((head, len, hlen + blen)),
                }
            }
        };
        let Some((head, body_len, used)) = step else {
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk) {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => {
                    if !buf.is_empty() {
                        record(Seen::Partial { bytes: buf.len() });
                    }
                    return;
                }
            }
            continue;
        };
        buf.drain(..used);
        continued = false;
        let line = format!("{} {} body={body_len}", head.method, head.target);
        record(Seen::Request {
            line: line.clone(),
            problems: head.problems,
        });
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{line}",
            line.len()
        );
        if stream.write_all(resp.as_bytes()).is_err() || head.close {
            return;
        }
    }
}

enum Parse<T> {
    More,
    Done(T, usize),
    Bad(String),
}

#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
}

struct Head {
    method: String,
    target: String,
    framing: Framing,
    expect_continue: bool,
    close: bool,
    problems: Vec<String>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request head read as RFC 9112 writes it, with no leniency: every deviation is a problem.
fn parse_head(buf: &[u8]) -> Parse<Head> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if find(buf, b"\n\n").is_some() {
            return Parse::Bad("head ends with bare LFs".into());
        }
        return Parse::More;
    };
    let raw = &buf[..end];
    let mut problems = Vec::new();
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            problems.push("bare LF".to_string());
        }
        if b == b'\r' && raw.get(i + 1) != Some(&b'\n') {
            problems.push("bare CR".to_string());
        }
    }
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Parse::Bad(format!("request line {request_line:?}"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Parse::Bad(format!("version {version:?}"));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        problems.push(format!("target {target:?} is not origin-form"));
    }
    let (mut lengths, mut codings, mut hosts) = (Vec::new(), Vec::new(), 0);
    let (mut expect_continue, mut close) = (false, version == "HTTP/1.0");
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            problems.push("obs-fold".into());
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            problems.push("header line without a colon".into());
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            problems.push(format!("header name {:?}", String::from_utf8_lossy(name)));
            continue;
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            problems.push("control byte in a header value".into());
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => lengths.push(value),
            "transfer-encoding" => codings.extend(value.split(',').map(|c| c.trim().to_string())),
            "host" => hosts += 1,
            "expect" => expect_continue |= value == "100-continue",
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    close = match token {
                        "close" => true,
                        "keep-alive" => false,
                        _ => close,
                    };
                }
            }
            _ => {}
        }
    }
    if hosts != 1 {
        problems.push(format!("{hosts} Host headers"));
    }
    if lengths.len() > 1 {
        problems.push(format!("{} Content-Length headers", lengths.len()));
    }
    let framing = if !codings.is_empty() {
        if !lengths.is_empty() {
            problems.push("Content-Length and Transfer-Encoding".into());
        }
        if codings.iter().filter(|c| *c == "chunked").count() > 1 {
            problems.push("chunked twice".into());
        }
        if codings.last().map(String::as_str) != Some("chunked") {
            return Parse::Bad(format!("final transfer coding {codings:?}"));
        }
        Framing::Chunked
    } else if let Some(v) = lengths.first() {
        match v.parse() {
            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Framing::Length(n),
            _ => return Parse::Bad(format!("Content-Length {v:?}")),
        }
    } else {
        Framing::Length(0)
    };
    Parse::Done(
        Head {
            method: method.to_string(),
            target: target.to_string(),
            framing,
            expect_continue,
            close,
            problems,
        },
        end + 4,
    )
}

/// A body as its framing says: the decoded length and the bytes it took.
fn parse_body(buf: &[u8], framing: Framing) -> Parse<usize> {
    if let Framing::Length(n) = framing {
        return if buf.len() >= n {
            Parse::Done(n, n)
        } else {
            Parse::More
        };
    }
    let (mut pos, mut total) = (0, 0);
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Parse::More;
        };
        let line = &buf[pos..pos + eol];
        let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
        if size_part.is_empty()
            || size_part.len() > 15
            || !size_part.iter().all(u8::is_ascii_hexdigit)
        {
            return Parse::Bad(format!("chunk size {:?}", String::from_utf8_lossy(line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_part).unwrap(), 16).unwrap();
        pos += eol + 2;
        if size == 0 {
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Parse::More;
                };
                pos += eol + 2;
                if eol == 0 {
                    return Parse::Done(total, pos);
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Parse::More;
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Parse::Bad("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
        total += size;
    }
}

// ----------------------------------------------------------------------------------------------
// The client

/// One response read off the client connection.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the client connection stood once the answers were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The proxy closed it.
    Closed,
    /// A further request on it was answered.
    Open,
    /// Neither an answer nor a close within [`WAIT`].
    Silent,
}

/// What a client saw for one row.
#[derive(Debug)]
struct Answer {
    interim: Vec<u16>,
    replies: Vec<Reply>,
    end: End,
}

/// How long the client waits for a byte before calling the proxy silent.
const WAIT: Duration = Duration::from_secs(3);

/// The request sent after the answers, to tell an open connection from a closed one.
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: h.test\r\n\r\n";
const PROBE_LINE: &str = "GET /probe body=0";

fn parse_reply(buf: &[u8], eof: bool) -> Parse<Reply> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if eof {
            Parse::Bad("no header end".into())
        } else {
            Parse::More
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = match lines.next().and_then(|l| l.split(' ').nth(1)) {
        Some(s) => s.parse().unwrap_or(0),
        None => 0,
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let rest = &buf[end + 4..];
    let (body, used) = if status < 200 || status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match parse_body(rest, Framing::Chunked) {
            Parse::Done(_, used) => (dechunk(&rest[..used]), used),
            Parse::More if !eof => return Parse::More,
            _ => return Parse::Bad("truncated chunked body".into()),
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < n {
            return if eof {
                Parse::Bad("truncated body".into())
            } else {
                Parse::More
            };
        }
        (rest[..n].to_vec(), n)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return Parse::More;
    };
    Parse::Done(
        Reply {
            status,
            headers,
            body,
        },
        end + 4 + used,
    )
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(data, b"\r\n") {
        let line = String::from_utf8_lossy(&data[..i]).into_owned();
        let size =
            usize::from_str_radix(line.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[i + 2..i + 2 + size]);
        data = &data[i + 2 + size + 2..];
    }
    out
}

/// A client connection that reads responses, 1xx included, with a per-read deadline.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

enum Read1 {
    Reply(Reply),
    Eof,
    Silent,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        // A proxy may close before it has read everything: what it answered is read next.
        let _ = self.stream.write_all(bytes);
    }

    fn next(&mut self) -> Read1 {
        loop {
            match parse_reply(&self.buf, self.eof) {
                Parse::Done(r, used) => {
                    self.buf.drain(..used);
                    return Read1::Reply(r);
                }
                Parse::Bad(_) => {
                    self.buf.clear();
                    return Read1::Eof;
                }
                Parse::More if self.eof => return Read1::Eof,
                Parse::More => {}
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Read1::Silent
                }
                Err(_) => self.eof = true,
            }
        }
    }
}

/// One step of what the client sends.
enum Step {
    Send(Vec<u8>),
    /// Wait for an interim `100 Continue` (at most [`WAIT`]) before the next step.
    AwaitContinue,
    /// Wait for the answer to what was sent (at most [`WAIT`]), so the connection is idle
    /// between two requests before the next step.
    AwaitReply,
}

/// Send a row's bytes, read up to one answer per meant request, then tell open from closed.
fn exchange(addr: SocketAddr, row: &Row) -> Answer {
    let mut c = Client::connect(addr);
    let mut a = Answer {
        interim: Vec::new(),
        replies: Vec::new(),
        end: End::Silent,
    };
    for step in &row.send {
        match step {
            Step::Send(bytes) => c.send(bytes),
            Step::AwaitContinue | Step::AwaitReply => match c.next() {
                Read1::Reply(r) if r.status < 200 => a.interim.push(r.status),
                Read1::Reply(r) => a.replies.push(r),
                Read1::Eof => {
                    a.end = End::Closed;
                    return a;
                }
                Read1::Silent => {}
            },
        }
    }
    while a.replies.len() < row.meant.len().max(1) {
        match c.next() {
            Read1::Reply(r) if r.status < 200 => a.interim.push(r.status),
            Read1::Reply(r) => a.replies.push(r),
            Read1::Eof => {
                a.end = End::Closed;
                return a;
            }
            Read1::Silent => return a,
        }
    }
    c.send(PROBE);
    a.end = match c.next() {
        Read1::Reply(_) => End::Open,
        Read1::Eof => End::Closed,
        Read1::Silent => End::Silent,
    };
    let _ = c.stream.shutdown(Shutdown::Both);
    a
}

// ----------------------------------------------------------------------------------------------
// The table

/// What a row requires of the proxy.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// A 4xx, then the connection closes; the upstream sees nothing.
    Refuse,
    /// A 4xx for a body that turns out malformed, then the connection closes. The head may
    /// already have gone upstream (bodies are streamed, never buffered whole): the upstream
    /// connection then ends in the middle of that request and is never reused.
    RefuseLate,
    /// Every meant request answered in order. `close`: the connection must then close
    /// (`Some(true)`) or stay open (`Some(false)`).
    Serve { close: Option<bool> },
    /// [`Want::Refuse`], or [`Want::Serve`] with the connection closed when `close`.
    Either { close: bool },
    /// Every meant request answered in order, or the first ones answered, the last of them
    /// with `Connection: close`, and the connection closed: never a request silently dropped.
    Pipeline,
}

struct Row {
    case: &'static str,
    /// What the bytes are, for the README.
    what: &'static str,
    send: Vec<Step>,
    /// The requests the client meant, as the upstream answers them: `METHOD target body=N`.
    meant: Vec<String>,
    want: Want,
}

fn row(case: &'static str, what: &'static str, bytes: &[u8], meant: &[&str], want: Want) -> Row {
    Row {
        case,
        what,
        send: vec![Step::Send(bytes.to_vec())],
        meant: meant.iter().map(|m| m.to_string()).collect(),
        want,
    }
}

const REFUSE: Want = Want::Refuse;
const REFUSE_LATE: Want = Want::RefuseLate;
const SERVE: Want = Want::Serve { close: None };
const EITHER: Want = Want::Either { close: false };
const EITHER_CLOSE: Want = Want::Either { close: true };
const PIPELINE: Want = Want::Pipeline;

/// The request a smuggling attempt hides; no row means it.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n";

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let smuggled_chunk = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let te_cl = format!("POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{smuggled_chunk}");
    let te_cl_meant = format!("POST /a body={}", SMUGGLED.len());
    let cl_te = format!("POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}");
    let cl_cl = format!("POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc{SMUGGLED}");
    let cl_list = format!("POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3, 40\r\n\r\nabc{SMUGGLED}");
    let te_te = format!("POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{smuggled_chunk}");
    let mut rows = vec![
        row("cl_te", "`Content-Length: 6` and `Transfer-Encoding: chunked`, a request after the empty chunked body", cl_te.as_bytes(), &["POST /a body=0"], EITHER_CLOSE),
        row("te_cl", "`Transfer-Encoding: chunked` and `Content-Length: 4`, a request inside the chunk", te_cl.as_bytes(), &[&te_cl_meant], EITHER_CLOSE),
        row("cl_cl_differ", "two `Content-Length`s, 3 and 40", cl_cl.as_bytes(), &[], REFUSE),
        row("cl_list_differ", "`Content-Length: 3, 40`", cl_list.as_bytes(), &[], REFUSE),
        row("cl_cl_same", "two `Content-Length: 3`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", &["POST /a body=3"], EITHER),
        row("cl_plus", "`Content-Length: +3`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: +3\r\n\r\nabc", &[], REFUSE),
        row("te_chunked_gzip", "`Transfer-Encoding: chunked, gzip` (chunked not last)", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", &[], REFUSE),
        row("te_gzip_chunked", "`Transfer-Encoding: gzip, chunked`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", &["POST /a body=3"], EITHER),
        row("te_chunked_twice", "two `Transfer-Encoding: chunked` lines", te_te.as_bytes(), &[], REFUSE),
        row("te_unknown", "`Transfer-Encoding: xchunked` and `Content-Length: 3`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc", &[], REFUSE),
        row("te_http10", "HTTP/1.0 with `Transfer-Encoding: chunked`", b"POST /a HTTP/1.0\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", &[], REFUSE),
        row("chunk_size_overflow", "chunk size `10000000000000003`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n", &[], REFUSE_LATE),
        row("chunk_ext", "chunk extension `3;x=y`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n", &["POST /a body=3"], EITHER),
        row("chunk_bare_lf", "chunk lines ended by bare LF", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", &["POST /a body=3"], EITHER),
        row("obs_fold", "a folded header value (obs-fold)", b"GET /a HTTP/1.1\r\nHost: h.test\r\nX-A: one\r\n two\r\n\r\n", &["GET /a body=0"], EITHER),
        row("obs_fold_te", "`Transfer-Encoding:` folded onto the next line, with `Content-Length: 3`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\nTransfer-Encoding:\r\n chunked\r\n\r\nabc", &[], REFUSE),
        row("bare_lf", "request head with bare LF line ends", b"GET /a HTTP/1.1\nHost: h.test\n\n", &["GET /a body=0"], EITHER),
        row("ws_before_colon", "`Content-Length : 3` (space before the colon)", b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length : 3\r\n\r\nabc", &[], REFUSE),
        row("ws_before_colon_te", "`Transfer-Encoding : chunked` and `Content-Length: 3`", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", &[], REFUSE),
        row("name_space", "header name `X Y`", b"GET /a HTTP/1.1\r\nHost: h.test\r\nX Y: 1\r\n\r\n", &[], REFUSE),
        row("name_ctl", "header name with a `\\x01`", b"GET /a HTTP/1.1\r\nHost: h.test\r\nX\x01Y: 1\r\n\r\n", &[], REFUSE),
        row("name_empty", "header line `: 1`", b"GET /a HTTP/1.1\r\nHost: h.test\r\n: 1\r\n\r\n", &[], REFUSE),
        row("value_nul", "NUL in a header value", b"GET /a HTTP/1.1\r\nHost: h.test\r\nX-A: a\x00b\r\n\r\n", &[], REFUSE),
        row("value_cr", "bare CR in a header value", b"GET /a HTTP/1.1\r\nHost: h.test\r\nX-A: a\rb\r\n\r\n", &[], REFUSE),
        row("host_twice", "two `Host` headers", b"GET /a HTTP/1.1\r\nHost: h.test\r\nHost: other.test\r\n\r\n", &[], REFUSE),
        row("host_missing", "HTTP/1.1 without `Host`", b"GET /a HTTP/1.1\r\n\r\n", &[], REFUSE),
        row("absolute_form", "`GET http://h.test/b`, same `Host`", b"GET http://h.test/b HTTP/1.1\r\nHost: h.test\r\n\r\n", &["GET /b body=0"], SERVE),
        row("absolute_form_other_host", "`GET http://other.test/b` with `Host: h.test`", b"GET http://other.test/b HTTP/1.1\r\nHost: h.test\r\n\r\n", &[], REFUSE),
        row("target_space", "`GET /a /smuggled HTTP/1.1` (a space in the target)", b"GET /a /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n", &[], REFUSE),
        row("target_ctl", "a `\\x01` in the target", b"GET /a\x01b HTTP/1.1\r\nHost: h.test\r\n\r\n", &[], REFUSE),
        row("target_quote", "`GET /a?q=\"<b>\"` (quote and angle brackets)", b"GET /a?q=\"<b>\" HTTP/1.1\r\nHost: h.test\r\n\r\n", &["GET /a?q=\"<b>\" body=0"], EITHER),
        row("leading_crlf", "an empty line before the request line", b"\r\nGET /a HTTP/1.1\r\nHost: h.test\r\n\r\n", &["GET /a body=0"], EITHER),
        row("http10", "HTTP/1.0, no keep-alive", b"GET /a HTTP/1.0\r\nHost: h.test\r\n\r\n", &["GET /a body=0"], Want::Serve { close: Some(true) }),
        row("http10_keepalive", "HTTP/1.0 with `Connection: keep-alive`", b"GET /a HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n", &["GET /a body=0"], Want::Serve { close: Some(false) }),
        row("pipelined_gets", "two GETs in one write", b"GET /a HTTP/1.1\r\nHost: h.test\r\n\r\nGET /b HTTP/1.1\r\nHost: h.test\r\n\r\n", &["GET /a body=0", "GET /b body=0"], PIPELINE),
        row("pipelined_three", "three GETs in one write", b"GET /a HTTP/1.1\r\nHost: h.test\r\n\r\nGET /b HTTP/1.1\r\nHost: h.test\r\n\r\nGET /c HTTP/1.1\r\nHost: h.test\r\n\r\n", &["GET /a body=0", "GET /b body=0", "GET /c body=0"], PIPELINE),
        row("body_then_request", "a POST body followed at once by the next request", b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h.test\r\n\r\n", &["POST /a body=3", "GET /b body=0"], PIPELINE),
        row("chunked_then_request", "a chunked body followed at once by the next request", b"POST /a HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: h.test\r\n\r\n", &["POST /a body=3", "GET /b body=0"], PIPELINE),
    ];
    rows.push(Row {
        case: "pipelined_after_idle",
        what: "a GET and its answer, then two GETs in one write",
        send: vec![
            Step::Send(b"GET /a HTTP/1.1\r\nHost: h.test\r\n\r\n".to_vec()),
            Step::AwaitReply,
            Step::Send(b"GET /b HTTP/1.1\r\nHost: h.test\r\n\r\nGET /c HTTP/1.1\r\nHost: h.test\r\n\r\n".to_vec()),
        ],
        meant: vec!["GET /a body=0".into(), "GET /b body=0".into(), "GET /c body=0".into()],
        want: PIPELINE,
    });
    rows.push(Row {
        case: "expect_continue",
        what: "`Expect: 100-continue`, the body sent after the interim answer (or 3 s)",
        send: vec![
            Step::Send(b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".to_vec()),
            Step::AwaitContinue,
            Step::Send(b"abc".to_vec()),
        ],
        meant: vec!["POST /a body=3".into()],
        want: SERVE,
    });
    rows
}

/// Whether `answer` and what the upstream saw meet the row; each violation as a sentence.
fn check(row: &Row, a: &Answer, seen: &[Seen]) -> Vec<String> {
    let mut v = Vec::new();
    let mut lines = Vec::new();
    for s in seen {
        match s {
            Seen::Request { line, problems } => {
                if !problems.is_empty() {
                    v.push(format!(
                        "the upstream got `{line}` with {}",
                        problems.join(", ")
                    ));
                }
                if line != PROBE_LINE {
                    lines.push(line.clone());
                }
            }
            Seen::Unframed { reason } => v.push(format!("the upstream could not frame: {reason}")),
            Seen::Partial { bytes } => {
                let late = matches!(row.want, Want::RefuseLate | Want::Either { .. });
                if !late {
                    v.push(format!(
                        "the upstream connection ended {bytes} bytes into a request"
                    ))
                }
            }
        }
    }
    for l in &lines {
        if !row.meant.contains(l) {
            v.push(format!(
                "the upstream got `{l}`, which the client did not mean"
            ));
        }
    }
    if a.end == End::Silent {
        v.push(format!("no answer and no close within {WAIT:?}"));
    }
    let refused = a
        .replies
        .first()
        .is_some_and(|r| (400..500).contains(&r.status));
    let refuse = |v: &mut Vec<String>| {
        if !refused {
            v.push("not refused with a 4xx".into());
        }
        if a.end != End::Closed {
            v.push("the connection stayed open after the refusal".into());
        }
        if !lines.is_empty() {
            v.push("the upstream got a request".into());
        }
    };
    let served = |v: &mut Vec<String>, n: usize| {
        for (i, meant) in row.meant.iter().take(n).enumerate() {
            match a.replies.get(i) {
                Some(r) if (200..300).contains(&r.status) && r.text() == *meant => {}
                Some(r) => v.push(format!(
                    "answer {} is {} `{}`, not `{meant}`",
                    i + 1,
                    r.status,
                    r.text()
                )),
                None => v.push(format!("no answer to `{meant}`")),
            }
        }
        let meant = &row.meant[..n.min(row.meant.len())];
        if lines[..] != *meant {
            v.push(format!("the upstream got {lines:?}, not {meant:?}"));
        }
    };
    match row.want {
        Want::Refuse | Want::RefuseLate => refuse(&mut v),
        Want::Either { .. } if refused => refuse(&mut v),
        Want::Serve { close } => {
            served(&mut v, row.meant.len());
            match close {
                Some(true) if a.end != End::Closed => v.push("the connection stayed open".into()),
                Some(false) if a.end != End::Open => v.push("the connection was closed".into()),
                _ => {}
            }
        }
        Want::Either { close } => {
            served(&mut v, row.meant.len());
            if close && a.end != End::Closed {
                v.push("the connection stayed open after an ambiguous message".into());
            }
        }
        Want::Pipeline => {
            let n = a.replies.len().min(row.meant.len());
            served(&mut v, n.max(1));
            if n < row.meant.len() {
                let last_closes = a
                    .replies
                    .last()
                    .and_then(|r| r.header("connection"))
                    .is_some_and(|c| c.eq_ignore_ascii_case("close"));
                if !last_closes || a.end != End::Closed {
                    v.push(format!(
                        "{} of {} pipelined requests dropped without `Connection: close`",
                        row.meant.len() - n,
                        row.meant.len()
                    ));
                }
            }
        }
    }
    v
}

/// A short account of an answer for the table: statuses, interim answers, the end.
fn describe(a: &Answer) -> String {
    let mut parts: Vec<String> = a.interim.iter().map(|s| s.to_string()).collect();
    for r in &a.replies {
        let mut s = r.status.to_string();
        if r.status >= 400 && r.body.is_empty() {
            s.push_str(" (empty)");
        }
        if r.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            s.push_str(" close");
        }
        parts.push(s);
    }
    if parts.is_empty() {
        parts.push("nothing".into());
    }
    let end = match a.end {
        End::Closed => "closed",
        End::Open => "open",
        End::Silent => "silent",
    };
    format!("{}; {end}", parts.join(", "))
}

fn describe_seen(seen: &[Seen]) -> String {
    let parts: Vec<String> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Request { line, .. } if line == PROBE_LINE => None,
            Seen::Request { line, problems } if problems.is_empty() => Some(format!("`{line}`")),
            Seen::Request { line, problems } => Some(format!("`{line}` ({})", problems.join(", "))),
            Seen::Unframed { reason } => Some(format!("unframed: {reason}")),
            Seen::Partial { bytes } => Some(format!("{bytes} bytes, then close")),
        })
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// Run every row against the proxy at `addr` in front of `up`: per row, the answer, what the
/// upstream saw, and the violations.
fn run_rows(
    addr: SocketAddr,
    up: &Recorder,
    rows: &[Row],
) -> Vec<(Answer, Vec<Seen>, Vec<String>)> {
    rows.iter()
        .map(|row| {
            up.take();
            let a = exchange(addr, row);
            let seen = up.take();
            let v = check(row, &a, &seen);
            (a, seen, v)
        })
        .collect()
}

fn stitch_config(up: SocketAddr) -> String {
    format!(
        "{}[upstream.app]\nservers = [\"{up}\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config()
    )
}

// ----------------------------------------------------------------------------------------------
// nginx, the reference

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// nginx as a plain reverse proxy in front of `up`, in one foreground process. nginx cannot
/// listen on port 0, so a free port is found first; a lost race is retried.
fn start_nginx(bin: &PathBuf, up: SocketAddr) -> Result<Nginx, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             upstream app {{ server {up}; keepalive 8; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app;\n\
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "nginx exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
                break;
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(Nginx {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("nginx did not listen within 10 s".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    Err(last)
}

// ----------------------------------------------------------------------------------------------

#[test]
fn smuggling_and_framing_table() {
    let rows = rows();
    let up = Recorder::start();
    let stitch = Stitch::start(&stitch_config(up.addr));
    let ours = run_rows(stitch.proxy, &up, &rows);

    let theirs = match nginx_bin() {
        None => {
            eprintln!(
                "nginx column skipped: nginx is not installed (`.ci/setup bench` installs it)"
            );
            None
        }
        Some(bin) => {
            let nginx_up = Recorder::start();
            match start_nginx(&bin, nginx_up.addr) {
                Ok(n) => Some(run_rows(n.addr, &nginx_up, &rows)),
                Err(e) => {
                    eprintln!("nginx column skipped: {e}");
                    None
                }
            }
        }
    };

    let mut table = String::from(
        "| case | bytes | stitch | upstream behind stitch | nginx | upstream behind nginx |\n|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (a, seen, v) = &ours[i];
        let (n_answer, n_seen) = match &theirs {
            Some(t) => (describe(&t[i].0), describe_seen(&t[i].1)),
            None => ("not run".into(), "".into()),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.case,
            row.what,
            describe(a),
            describe_seen(seen),
            n_answer,
            n_seen
        ));
        if !v.is_empty() {
            failures.push(format!("{}: {}", row.case, v.join("; ")));
        }
    }
    eprintln!("{table}");
    if let Some(path) = std::env::var_os("STITCH_SMUGGLING_TABLE") {
        std::fs::write(path, &table).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows fail:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
