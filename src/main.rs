//! The `stitch` command: run the proxy, check a configuration, or explain a request.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the load profile showed about 14% of CPU per request in
/// malloc/free (Pingora and stitch together make about 145 allocations per proxied request).
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With `--features dhat-heap`: every allocation is recorded with its call stack, and when the
/// server stops, `dhat-heap.json` (in the working directory) holds the heap at its largest,
/// by call site (DHAT's viewer, dh_view.html, reads it). Slow; never for timing.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[derive(Parser)]
#[command(
    name = "stitch",
    version,
    about = "An edge proxy that keeps RUM sessions linked to backend traces"
)]
struct Cli {
    /// Configuration file to run with.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Do not watch the configuration's directory; reload on SIGHUP only.
    #[arg(long)]
    no_watch: bool,
    /// Take the listening sockets over from a running stitch on the same configuration, which
    /// is then sent SIGQUIT (binary upgrade without dropping connections).
    #[arg(short, long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file (with the environment's overrides) and report every
    /// problem with its line.
    Check,
    /// Show what stitch extracts from a request on a route, which format wins and why, the
    /// sampling decision, and the exact trace headers it would send upstream.
    Explain {
        /// The route's name (as in metrics).
        #[arg(long)]
        route: String,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The address the request comes from: the client, or a trusted proxy whose
        /// X-Forwarded-For names the client (for `trust` rules and the forwarding headers).
        #[arg(long)]
        client: Option<std::net::IpAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config else {
        eprintln!("stitch: --config FILE is required (try conf/stitch.toml)");
        return ExitCode::from(2);
    };
    let loaded = match stitch::config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Some(Command::Check) => {
            println!(
                "{}: ok ({} routes, {} upstreams)",
                path.display(),
                loaded.config.routes.len(),
                loaded.config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Some(Command::Explain {
            route,
            headers,
            client,
        }) => {
            let result = stitch::explain::parse_headers(&headers)
                .and_then(|h| stitch::explain::explain(&loaded.config, &route, &h, client));
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stitch explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
        None => run(
            loaded,
            stitch::server::RunOptions {
                config_path: path,
                watch: !cli.no_watch,
                upgrade: cli.upgrade,
            },
        ),
    }
}

fn run(loaded: stitch::config::Loaded, opts: stitch::server::RunOptions) -> ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,stitch=info"))
        .init();
    let built = match stitch::server::build(loaded, &opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("stitch: cannot start: {e:#}");
            return ExitCode::from(1);
        }
    };
    for (a, scheme) in built.proxy_addrs.iter().zip(&built.proxy_schemes) {
        eprintln!("stitch: proxy listening on {scheme}://{a}");
    }
    if let Some(a) = built.admin_addr {
        eprintln!("stitch: admin listening on http://{a}");
    }
    built.server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(built.signals),
    });
    eprintln!("stitch: stopped");
    ExitCode::SUCCESS
}
