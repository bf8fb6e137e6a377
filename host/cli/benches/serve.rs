//! The lean `upper` through `xcs serve` over HTTP (keep-alive
//! connections, a Rust load generator in this process) against the same
//! calls through the library directly, at the same concurrency, in one
//! run, rounds interleaved; and `xcs call` as one process per call (the
//! start-up cost a service removes). Every call's text is new, so that
//! none is answered by the result cache: each is a fresh sandbox.
//! `XCS_BENCH_QUICK=1`: a smoke run.

#[path = "../../../tests/benches/common/mod.rs"]
mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::Samples;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const XCS: &str = env!("CARGO_BIN_EXE_xcs");
/// Connections (and library tasks) at once.
const CONCURRENCY: usize = 16;

/// A keep-alive HTTP/1.1 connection that posts to one path.
struct Connection {
    stream: TcpStream,
    head: String,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(address: &str, path: &str) -> Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n"
        );
        Ok(Connection {
            stream,
            head,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// One request with `body`; its response's status.
    async fn call(&mut self, body: &str) -> Result<u16> {
        let request = format!("{}content-length: {}\r\n\r\n{body}", self.head, body.len());
        self.stream.write_all(request.as_bytes()).await?;
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buffer[..end])?;
                let status: u16 = head.split(' ').nth(1).context("a status line")?.parse()?;
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .context("a content-length")?;
                while self.buffer.len() < end + 4 + length {
                    let read = self.stream.read(&mut chunk).await?;
                    ensure!(read > 0, "the server closed the connection");
                    self.buffer.extend_from_slice(&chunk[..read]);
                }
                return Ok(status);
            }
            let read = self.stream.read(&mut chunk).await?;
            ensure!(read > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `xcs serve` on a free loopback port, until dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(operators: &std::path::Path) -> Result<Server> {
        let mut child = Command::new(XCS)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-concurrency",
                "256",
                "--operators",
            ])
            .arg(operators)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let address = loop {
            let Some(line) = lines.next() else {
                bail!("xcs serve exited before listening")
            };
            if let Some(rest) = line?.split("listening on http://").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        // Keep reading (and dropping) its log so that it never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, address })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The calls of `CONCURRENCY` tasks made by `make`; every call's latency
/// in `latencies`, and the round's calls per second.
async fn round<F, Fut>(latencies: &mut Samples, make: F) -> Result<f64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<Duration>>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY).map(|_| tokio::spawn(make())).collect();
    let mut calls = 0;
    for task in tasks {
        for latency in task.await?? {
            latencies.push(latency, 1);
            calls += 1;
        }
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

async fn run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xcs-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(xcs_tests::UPPER, dir.join("upper.wasm"))?;
    let server = Server::start(&dir)?;
    let host = xcs::Host::builder().build()?;
    let upper = host.load(xcs_tests::UPPER).await?;
    let limits = xcs::Limits::default();
    // A new text for every call of every round and task.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let (rounds, per_task) = if common::quick() { (3, 10) } else { (11, 200) };
    let address = Arc::new(server.address.clone());
    let (mut http, mut library) = (Samples::default(), Samples::default());
    let (mut http_rates, mut library_rates) = (Vec::new(), Vec::new());
    for index in 0..rounds * 2 {
        if index % 2 == 0 {
            let rate = round(&mut http, || {
                let (address, next) = (address.clone(), next.clone());
                async move {
                    let mut connection =
                        Connection::open(&address, "/v1/operators/upper/call").await?;
                    let mut latencies = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let text = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let body = format!("{{\"text\": \"t{text}\"}}");
                        let started = Instant::now();
                        let status = connection.call(&body).await?;
                        ensure!(status == 200, "status {status}");
                        latencies.push(started.elapsed());
                    }
                    Ok(latencies)
                }
            })
            .await?;
            http_rates.push(rate);
        } else {
            let rate = round(&mut library, || {
                let (upper, limits, next) = (upper.clone(), limits.clone(), next.clone());
                async move {
                    let mut latencies = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let text = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let input = json!({ "text": format!("t{text}") });
                        let started = Instant::now();
                        upper.call(&input, &limits).await?;
                        latencies.push(started.elapsed());
                    }
                    Ok(latencies)
                }
            })
            .await?;
            library_rates.push(rate);
        }
    }

    // One process per call: start-up, engine, the operator from the disk
    // cache, one call.
    let processes = if common::quick() { 3 } else { 15 };
    let mut per_process = Samples::default();
    let cache = dir.join("cache");
    for _ in 0..processes {
        let started = Instant::now();
        let status = Command::new(XCS)
            .args(["call", xcs_tests::UPPER, "--input", r#"{"text": "t"}"#])
            .env("XCS_CACHE_DIR", &cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "xcs call failed");
        per_process.push(started.elapsed(), 1);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let baseline = library.median();
    println!(
        "| lean `upper`, fresh sandbox each, {CONCURRENCY} at once | latency p50 (p25–p75) | p99 | calls/s (median of rounds) | p50 vs library |"
    );
    println!("|---|---|---|---|---|");
    for (name, samples, rate) in [
        (
            "library: `Operator::call`",
            &library,
            Some(median(&mut library_rates)),
        ),
        (
            "`xcs serve` over HTTP/1.1, keep-alive",
            &http,
            Some(median(&mut http_rates)),
        ),
        (
            "`xcs call`, one process per call (one at a time)",
            &per_process,
            None,
        ),
    ] {
        println!(
            "| {name} | {} | {:.0} µs | {} | {:.2}x |",
            samples.summary(),
            samples.quantile(0.99),
            rate.map_or_else(
                || format!("{:.0}", 1e6 / samples.median()),
                |rate| format!("{rate:.0}")
            ),
            samples.median() / baseline
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::run_async(run())
}
