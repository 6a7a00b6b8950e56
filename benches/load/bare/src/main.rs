//! A bare Pingora reverse proxy, the baseline of stitch's load benchmark (`--baseline`): one
//! upstream, one header added to the request and one to the response, nothing else. A CORS
//! preflight (any OPTIONS request) is answered at the edge with a fixed 204, as stitch answers
//! it, so the benchmark also shows Pingora's floor for a response that never goes upstream.
//!
//! It matches stitch where stitch's choices are not stitch's own work: the same global allocator
//! (mimalloc, as in stitch's `main.rs`), the same downstream modules (none: stitch leaves out
//! Pingora's response-compression module) and, from benches/load/run, the same 4 KiB client read
//! buffer (`BARE_L4_READ`, stitch's default `read_buffer_bytes`). So the ratio of the two
//! measures what stitch adds.
//!
//! Settings from the environment: `BARE_LISTEN` and `BARE_UPSTREAM` (`IP:port`), `BARE_THREADS`
//! (default 1), `BARE_L4_READ` / `BARE_L4_WRITE` (the listener's L4 buffer sizes in bytes; unset:
//! Pingora's defaults, 64 KiB read and 1460 bytes write).
#![forbid(unsafe_code)]

use async_trait::async_trait;
use http::{header, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    /// No downstream modules, as in stitch (Pingora's default is its compression module).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// OPTIONS: a fixed preflight answer (the request's Origin echoed), written here and never
    /// forwarded; everything else goes on to the upstream.
    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if session.req_header().method != Method::OPTIONS {
            return Ok(false);
        }
        let origin = session.req_header().headers.get(header::ORIGIN).cloned();
        let mut resp = ResponseHeader::build(204, Some(6))?;
        if let Some(origin) = origin {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
        }
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")?;
        resp.insert_header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "traceparent, tracestate, x-datadog-trace-id",
        )?;
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, "600")?;
        resp.insert_header(header::VARY, "Origin")?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        req.insert_header("x-bare", "1")
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        resp.insert_header("x-bare", "1")
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_num(name: &str) -> Option<usize> {
    env(name).and_then(|v| v.parse().ok())
}

fn main() {
    let listen = env("BARE_LISTEN").unwrap_or_else(|| "127.0.0.1:8090".into());
    let upstream = env("BARE_UPSTREAM").unwrap_or_else(|| "127.0.0.1:8091".into());
    let threads = env_num("BARE_THREADS").unwrap_or(1);
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: tmp.join(format!("bare-{pid}.pid")).display().to_string(),
        upgrade_sock: tmp.join(format!("bare-{pid}.sock")).display().to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    let l4 = L4BufferSettings {
        read: env_num("BARE_L4_READ"),
        write: env_num("BARE_L4_WRITE"),
    };
    service.add_listener(ListenerConfig::tcp(listen.as_str()).l4_buffer(l4));
    server.add_service(service);
    eprintln!("bare: listening on {listen}, {threads} thread(s), L4 buffers {l4:?}");
    server.run_forever();
}
