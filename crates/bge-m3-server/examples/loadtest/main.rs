//! Load test: many concurrent clients against a real server process on the loopback, for a
//! bounded time and number of requests, mixing valid and hostile requests.
//!
//! ```sh
//! cargo run --release -p bge-m3-server --example loadtest -- --duration 30 --clients 32
//! ```
//!
//! The server is a child process on a free loopback port serving the tiny-pt fixture model
//! (`--model` for another): by default this program started again in server mode, which runs
//! `bge_m3_server::run` as `main.rs` does; `--server-bin target/release/bge-m3-server` runs a
//! built server binary instead. Before the load, every input of the request pools is embedded
//! (and every sentence pair scored) alone, one request at a time. Then `--clients` threads send
//! requests for `--duration` seconds:
//!
//! - valid: `/v1/embeddings` (float, base64, `dimensions`, every `sparse_format` and
//!   `input_type`), `/embeddings`, token-id inputs, batches of 1 to 16 inputs of 0 to ~300
//!   tokens at `max_length` 8192, 512 or 16, and `/score` with 1 to 8 pairs. Every answer must
//!   be 200 and equal, within 1e-5 on every dense value, sparse weight, ColBERT value and score,
//!   the answer the same input got alone: proof that concurrent requests never mix or disturb
//!   each other. A 429 (queue full) is counted apart; a transport error is a violation.
//! - hostile: malformed JSON, wrong types, empty lists, too many inputs, oversized bodies,
//!   invalid token ids, out-of-range values, unknown routes and methods, wrong content types,
//!   clients that hang up mid-body or before the answer. Each must get its documented 4xx in
//!   OpenAI's error shape (a transport error is tolerated: the server may close on an oversized
//!   body); a 5xx is a violation.
//!
//! - slow (`--slow-clients` threads beside the others): bodies sent a byte at a time, large
//!   answers never read or read at 2 MiB/s, and requests whose client closes its side (FIN) at
//!   once. The server must close each slow body with 408 within its body timeout, cut each
//!   unread answer within its write timeout, serve the slow reader, and close after a FIN; see
//!   `slow.rs`.
//!
//! Meanwhile the server's RSS is read from `/proc` every second: it must stay flat, its median
//! over the last third of the load at most `--rss-growth-mib` above its median over the middle
//! third (after the warm-up). After the load, 50 more valid requests are checked one at a time,
//! the server must stop cleanly on SIGTERM, and its log must hold no ERROR line and no panic.
//! The program prints a summary and exits 1 on any violation.

#![forbid(unsafe_code)]

mod client;
mod hostile;
mod pools;
mod report;
mod rng;
mod server;
mod slow;
mod valid;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use hostile::{HangUp, Hostile};
use pools::{Pools, References};
use report::Stats;
use rng::Rng;
use server::{Launch, Server, Settings};
use valid::Valid;

/// Load-tests bge-m3-server: concurrent valid and hostile requests against a server process on
/// the loopback; every valid answer is checked against the same input's answer alone. Exits 1
/// on any violation.
#[derive(Debug, Parser)]
#[command(name = "loadtest")]
struct Args {
    /// Seconds of load (the warm-up included).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Concurrent clients, one thread and one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Stop after this many requests even if time is left.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Share of hostile requests.
    #[arg(long, default_value_t = 0.2)]
    hostile: f64,
    /// Model directory to serve.
    #[arg(long, default_value_os_t = bge_m3_test_support::tiny_pt())]
    model: PathBuf,
    /// Serve with this server binary (e.g. target/release/bge-m3-server) instead of this
    /// program in server mode.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The server's `--queue-size`. Default: twice the clients, at least 64, so that a 429 is
    /// rare.
    #[arg(long)]
    queue_size: Option<usize>,
    /// Most growth of the server's RSS, in MiB, from after the warm-up (its median over the
    /// load's middle third) to the end (its median over the last third).
    #[arg(long, default_value_t = 64)]
    rss_growth_mib: u64,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server's log file. Default: bge-m3-loadtest-<pid>.log in the temporary directory.
    #[arg(long)]
    log: Option<PathBuf>,
    /// The server's `RUST_LOG`.
    #[arg(long, default_value = "info")]
    server_log_level: String,
    /// Slow clients (slow bodies, unread and slowly read answers, hang-ups), each a thread of
    /// its own beside `--clients` that runs the four kinds in turn, the i-th starting with the
    /// i-th kind: the default 4 runs every kind from the start, even in a short load.
    #[arg(long, default_value_t = 4)]
    slow_clients: usize,
    /// The server's `--body-timeout` and `--write-timeout`, in seconds: short, so that the slow
    /// clients meet them within the load.
    #[arg(long, default_value_t = 3)]
    server_deadlines: u64,
}

/// The server's `--max-inputs`: small, so that "too many inputs" bodies stay small.
const MAX_INPUTS: usize = 256;
/// The server's `--max-body-bytes`: 1 MiB, far above the valid requests.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Clients whose first request is the heaviest one.
const HEAVY_STARTS: usize = 4;
/// Longest wait for one valid answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What every client thread shares.
struct Shared {
    base: String,
    addr: std::net::SocketAddr,
    pools: Pools,
    refs: References,
    hostile: f64,
    deadline: Instant,
    max_requests: u64,
    sent: AtomicU64,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(server::SERVE) {
        return serve();
    }
    let args = Args::parse();
    match run(&args) {
        Ok(0) => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Ok(violations) => {
            println!("FAIL: {violations} violations");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("FAIL: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Server mode: the remaining arguments are the server's, and this is `main.rs`.
fn serve() -> ExitCode {
    let args = std::iter::once("bge-m3-server".to_string()).chain(std::env::args().skip(2));
    let config = bge_m3_server::Config::parse_from(args);
    bge_m3_server::logging::init(config.log_format);
    match actix_web::rt::System::new().block_on(bge_m3_server::run(config)) {
        Ok(stopped) if stopped.abandoned == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(bge_m3_server::EXIT_ABANDONED),
        Err(error) => {
            eprintln!("bge-m3-server stopped: {}", bge_m3_server::Report(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<usize, String> {
    let launch = match &args.server_bin {
        Some(path) => Launch::Binary(path.clone()),
        None => Launch::SelfExec,
    };
    let log = args.log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("bge-m3-loadtest-{}.log", std::process::id()))
    });
    let settings = Settings {
        model: args.model.clone(),
        queue_size: args.queue_size.unwrap_or((2 * args.clients).max(64)),
        max_inputs: MAX_INPUTS,
        max_body_bytes: MAX_BODY_BYTES,
        log: log.clone(),
        rust_log: args.server_log_level.clone(),
        body_timeout: args.server_deadlines,
        write_timeout: args.server_deadlines,
    };
    let mut server = Server::start(&launch, &settings)?;
    println!(
        "server: pid {} at {} ({}), model {}, queue size {}, log {}",
        server.pid,
        server.base,
        server.program,
        args.model.display(),
        settings.queue_size,
        log.display()
    );
    let loaded = server.wait_healthy(Duration::from_secs(120))?;
    let loaded_kib = server.rss_kib();
    println!("healthy after {:.1} s", loaded.as_secs_f64());

    let pools = Pools::new();
    let start = Instant::now();
    let agent = client::agent(REQUEST_TIMEOUT);
    let refs = References::fetch(&agent, &server.base, &pools)?;
    let longest = refs
        .embeddings
        .values()
        .map(|a| a.tokens)
        .max()
        .unwrap_or(0);
    println!(
        "references: {} requests, each input alone ({} texts, {} token-id lists, {} pairs; \
         the longest input {longest} tokens), in {:.1} s",
        refs.requests,
        pools.texts.len(),
        pools.ids.len(),
        pools.pairs.len(),
        start.elapsed().as_secs_f64()
    );

    let duration = Duration::from_secs(args.duration);
    let load_start = Instant::now();
    let shared = Arc::new(Shared {
        base: server.base.clone(),
        addr: server.addr,
        pools,
        refs,
        hostile: args.hostile,
        deadline: load_start + duration,
        max_requests: args.max_requests,
        sent: AtomicU64::new(0),
    });
    println!(
        "load: {} clients for {} s, {:.0}% hostile, seed {}",
        args.clients,
        args.duration,
        args.hostile * 100.0,
        args.seed
    );
    let clients: Vec<_> = (0..args.clients)
        .map(|id| {
            let shared = shared.clone();
            let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(id as u64);
            // The first clients start with the heaviest request, so that the warm-up reaches
            // the largest forward passes and the RSS its plateau.
            let heavy = id < HEAVY_STARTS;
            std::thread::Builder::new()
                .name(format!("client-{id}"))
                .spawn(move || client_loop(&shared, seed, heavy))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;

    let deadlines = slow::Deadlines {
        body: Duration::from_secs(args.server_deadlines),
        write: Duration::from_secs(args.server_deadlines),
    };
    let slow_clients: Vec<_> = (0..args.slow_clients)
        .map(|id| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("slow-{id}"))
                .spawn(move || {
                    slow::slow_loop(
                        shared.addr,
                        &shared.pools,
                        MAX_INPUTS,
                        deadlines,
                        shared.deadline,
                        id,
                    )
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let clients: Vec<_> = clients.into_iter().chain(slow_clients).collect();

    // Watch the server while the clients run; give up on clients stuck past every timeout.
    let mut stats = Stats::default();
    let give_up = shared.deadline + REQUEST_TIMEOUT + Duration::from_secs(30);
    while !clients.iter().all(|c| c.is_finished()) {
        if let Some(status) = server.exited() {
            return Err(format!("the server exited during the load: {status}"));
        }
        if Instant::now() > give_up {
            return Err("clients still waiting long after the deadline".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = load_start.elapsed();
    let load_end = Instant::now();
    for client in clients {
        stats.merge(client.join().map_err(|_| "a client thread panicked")?);
    }

    // The same server, quiet again: answers must not have changed.
    let mut rng = Rng::new(args.seed ^ 0xafe7);
    for _ in 0..50 {
        let request = Valid::random(&mut rng, &shared.pools, shared.refs.dense_dim);
        match client::post_json(&agent, &shared.base, request.path, &request.body) {
            Ok(reply) => {
                if let Err(e) = request.check(&shared.refs, &reply) {
                    stats.violation(format!("after the load, {}: {e}", request.kind));
                }
            }
            Err(e) => stats.violation(format!("after the load, {}: {e}", request.kind)),
        }
    }

    let samples = server.samples();
    let peak = server.peak_kib();
    let stopped = server.stop(Duration::from_secs(40));

    // The report.
    println!();
    stats.print_table();
    let total: usize = stats.kinds.values().map(|t| t.requests()).sum();
    let valid_ok: usize = stats
        .kinds
        .values()
        .filter(|t| t.valid)
        .filter_map(|t| t.outcomes.get("200"))
        .sum();
    let inputs: usize = stats.kinds.values().map(|t| t.inputs).sum();
    let secs = elapsed.as_secs_f64();
    println!();
    println!(
        "{total} requests in {secs:.1} s: {:.0} requests/s; valid answered 200: {valid_ok} \
         ({:.0}/s, {:.0} inputs/s)",
        total as f64 / secs,
        valid_ok as f64 / secs,
        inputs as f64 / secs
    );
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!(
        "valid latency: p50 {:.1} ms, p99 {:.1} ms",
        ms(stats.valid_latency(0.5)),
        ms(stats.valid_latency(0.99))
    );
    println!(
        "429 (queue full): {} valid, {} hostile; transport errors: {} valid, {} hostile",
        stats.count(true, "429"),
        stats.count(false, "429"),
        stats.count(true, "transport error"),
        stats.count(false, "transport error")
    );

    report::rss(
        &mut stats,
        &samples,
        (loaded_kib, peak),
        (load_start, load_end),
        args.rss_growth_mib,
    );
    match stopped {
        Ok((status, took)) if status.success() => {
            println!(
                "stopped by SIGTERM: {status} after {:.2} s",
                took.as_secs_f64()
            )
        }
        Ok((status, _)) => stats.violation(format!("the server stopped with {status} on SIGTERM")),
        Err(e) => stats.violation(e),
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("panicked"))
        .collect();
    println!(
        "server log: {} lines, {} ERROR or panic lines",
        log_text.lines().count(),
        errors.len()
    );
    for line in errors.iter().take(5) {
        stats.violation(format!("server log: {line}"));
    }
    if errors.len() > 5 {
        stats.violation(format!("server log: {} more ERROR lines", errors.len() - 5));
    }

    if stats.violation_count > 0 {
        println!();
        println!("violations ({}):", stats.violation_count);
        for violation in &stats.violations {
            println!("- {violation}");
        }
    }
    Ok(stats.violation_count)
}

/// One client: requests until the deadline or the request budget is spent, the first one the
/// heaviest if `heavy`.
fn client_loop(shared: &Shared, seed: u64, heavy: bool) -> Stats {
    let mut rng = Rng::new(seed);
    let mut stats = Stats::default();
    let agent = client::agent(REQUEST_TIMEOUT);
    // Hostile requests get their own connection: the server may close it after an error.
    let hostile_agent = client::agent(Duration::from_secs(30));
    let mut first = heavy;
    while Instant::now() < shared.deadline
        && shared.sent.fetch_add(1, Ordering::Relaxed) < shared.max_requests
    {
        if first {
            let request = Valid::heaviest(&shared.pools, &shared.refs);
            valid(shared, request, &agent, &mut stats);
            first = false;
        } else if rng.chance(shared.hostile) {
            hostile(shared, &mut rng, &hostile_agent, &mut stats);
        } else {
            let request = Valid::random(&mut rng, &shared.pools, shared.refs.dense_dim);
            valid(shared, request, &agent, &mut stats);
        }
    }
    stats
}

fn valid(shared: &Shared, request: Valid, agent: &ureq::Agent, stats: &mut Stats) {
    let start = Instant::now();
    let result = client::post_json(agent, &shared.base, request.path, &request.body);
    let latency = start.elapsed();
    let shown = || {
        let body = request.body.to_string();
        let cut = body.char_indices().nth(300).map_or(body.len(), |(i, _)| i);
        format!("POST {} {}", request.path, &body[..cut])
    };
    match result {
        Err(e) => {
            stats.record(request.kind, true, "transport error", None);
            stats.violation(format!(
                "{}: transport error {e}: {}",
                request.kind,
                shown()
            ));
        }
        // Refused at once; its latency would only flatter the percentiles.
        Ok(reply) if reply.status == 429 => stats.record(request.kind, true, "429", None),
        Ok(reply) => {
            stats.record(request.kind, true, reply.status.to_string(), Some(latency));
            match request.check(&shared.refs, &reply) {
                Ok(()) => stats.add_inputs(request.kind, request.inputs()),
                Err(e) => stats.violation(format!("{}: {e}: {}", request.kind, shown())),
            }
        }
    }
}

fn hostile(shared: &Shared, rng: &mut Rng, agent: &ureq::Agent, stats: &mut Stats) {
    let request = Hostile::random(rng, &shared.pools, MAX_INPUTS, MAX_BODY_BYTES);
    let body = request.body.as_deref().unwrap_or_default();
    if let Some(hang_up) = &request.hang_up {
        let announced = match hang_up {
            HangUp::MidBody(announced) => *announced,
            HangUp::BeforeAnswer => body.len(),
        };
        let outcome = match client::hang_up(shared.addr, &request.path, announced, body) {
            Ok(()) => "hung up",
            Err(_) => "connection error",
        };
        stats.record(request.kind, false, outcome, None);
        return;
    }
    let start = Instant::now();
    let result = client::send(
        agent,
        &shared.base,
        request.method,
        &request.path,
        request.content_type,
        request.body.as_deref(),
    );
    let latency = start.elapsed();
    let reply = match result {
        Ok(reply) => reply,
        // The server may close the connection on a body it refuses before reading it all.
        Err(_) => return stats.record(request.kind, false, "transport error", None),
    };
    stats.record(request.kind, false, reply.status.to_string(), Some(latency));
    let what = || format!("{} {} {}", request.method, request.path, request.kind);
    if !request.expect.contains(&reply.status) && reply.status != 429 {
        stats.violation(format!(
            "{}: {} (expected {:?}): {}",
            what(),
            reply.status,
            request.expect,
            String::from_utf8_lossy(&reply.body)
        ));
        return;
    }
    let shaped = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|body| body["error"]["message"].as_str().map(|m| !m.is_empty()))
        .unwrap_or(false);
    if !shaped {
        stats.violation(format!(
            "{}: {} without OpenAI's error body: {}",
            what(),
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
}
