//! `noop` through `xcs serve` over HTTP (keep-alive connections, a Rust
//! load generator in this process) against the same calls through the
//! library directly, at the same concurrency, in one run, rounds
//! interleaved; and `xcs call` as one process per call (the start-up cost
//! a service removes). `XCS_BENCH_QUICK=1`: a smoke run.

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

/// A keep-alive HTTP/1.1 connection that posts `{}` to one path.
struct Connection {
    stream: TcpStream,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(address: &str, path: &str) -> Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        )
        .into_bytes();
        Ok(Connection {
            stream,
            request,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// One request; its response's status.
    async fn call(&mut self) -> Result<u16> {
        self.stream.write_all(&self.request).await?;
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
    std::fs::copy(xcs_tests::NOOP, dir.join("noop.wasm"))?;
    let server = Server::start(&dir)?;
    let host = xcs::Host::builder().build()?;
    let noop = host.load(xcs_tests::NOOP).await?;
    let limits = xcs::Limits::default();
    let input = json!({});

    let (rounds, per_task) = if common::quick() { (3, 10) } else { (11, 200) };
    let address = Arc::new(server.address.clone());
    let (mut http, mut library) = (Samples::default(), Samples::default());
    let (mut http_rates, mut library_rates) = (Vec::new(), Vec::new());
    for index in 0..rounds * 2 {
        if index % 2 == 0 {
            let rate = round(&mut http, || {
                let address = address.clone();
                async move {
                    let mut connection =
                        Connection::open(&address, "/v1/operators/noop/call").await?;
                    let mut latencies = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let started = Instant::now();
                        let status = connection.call().await?;
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
                let (noop, limits, input) = (noop.clone(), limits.clone(), input.clone());
                async move {
                    let mut latencies = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let started = Instant::now();
                        noop.call(&input, &limits).await?;
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
            .args(["call", xcs_tests::NOOP, "--input", "{}"])
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
        "| `noop`, {CONCURRENCY} at once | latency p50 (p25–p75) | p99 | calls/s (median of rounds) | p50 vs library |"
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
