//! Graphs over NATS against the same graphs here, in one run: a
//! `nats-server` (JetStream) on loopback, up to three `xcs worker`
//! processes, `xcs run --nats` timed against `xcs run`, medians of
//! rounds. Needs `nats-server` (`just setup-nats`). `XCS_BENCH_QUICK=1`:
//! a smoke run.

#[path = "../../../tests/benches/common/mod.rs"]
#[allow(dead_code, reason = "the benches' shared helpers: this one uses some")]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::Samples;

const XCS: &str = env!("CARGO_BIN_EXE_xcs");

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(dir: &Path) -> Result<(Process, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let binary = if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    };
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nats-server (`just setup-nats`)")?;
    let server = Process(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "nats-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, format!("nats://127.0.0.1:{port}")))
}

fn worker(url: &str, origin: &str) -> Result<Process> {
    let mut child = Command::new(XCS)
        .args([
            "worker",
            "--nats",
            url,
            "--max-concurrency",
            "4",
            "--allow-http",
            origin,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    loop {
        let Some(line) = lines.next() else {
            bail!("the worker exited")
        };
        if line?.contains(": ready on ") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Process(child))
}

/// The median wall time of `xcs run <graph> <args>` over `rounds`.
fn time_run(
    graph: &Path,
    operators: &Path,
    input: &str,
    args: &[&str],
    rounds: usize,
) -> Result<f64> {
    let mut samples = Samples::default();
    for _ in 0..rounds {
        let started = Instant::now();
        let output = Command::new(XCS)
            .arg("run")
            .arg(graph)
            .arg("--operators")
            .arg(operators)
            .args(["--input", input])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        ensure!(
            output.status.success(),
            "xcs run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        samples.push(started.elapsed(), 1);
    }
    Ok(samples.median())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xcs-bench-nats-{}", std::process::id()));
    let operators = dir.join("operators");
    std::fs::create_dir_all(&operators)?;
    for (name, from) in [
        ("noop", xcs_tests::NOOP),
        ("fetch", xcs_tests::FETCH),
        ("burn", xcs_tests::BURN),
    ] {
        std::fs::copy(from, operators.join(format!("{name}.wasm")))?;
    }
    let slow = xcs_tests::mock_http::MockServer::start("key").await?;
    let origin = slow.origin();
    let (_server, url) = nats_server(&dir)?;
    let quick = common::quick();
    let rounds = if quick { 1 } else { 5 };

    // 400 independent nodes of almost no work (`burn` of a few rounds,
    // each its own input: no two calls are merged): the overhead per node
    // of a remote call.
    let nodes = if quick { 40 } else { 400 };
    let mut noops = String::new();
    for index in 0..nodes {
        noops.push_str(&format!(
            "[[node]]\nid = \"n{index}\"\noperator = \"burn\"\nargs = {{ iterations = {} }}\n\n",
            index + 1
        ));
    }
    noops.push_str("[outputs]\nlast = \"@n0\"\n");
    let noops = write(&dir, "noops.toml", &noops)?;
    // 48 calls each waiting 20 ms on a server, and 16 CPU-bound calls.
    let waits = write(
        &dir,
        "waits.toml",
        "[[node]]\nid = \"get\"\noperator = \"fetch\"\nmap = \"url\"\nmax_concurrency = 64\nargs = { url = \"@input.urls\" }\n\n[outputs]\ngot = \"@get\"\n",
    )?;
    let urls: Vec<String> = (0..48).map(|_| format!("{origin}/slow/20")).collect();
    let waits_input = serde_json::json!({ "urls": urls }).to_string();
    let burns = write(
        &dir,
        "burns.toml",
        "[[node]]\nid = \"spin\"\noperator = \"burn\"\nmap = \"iterations\"\nmax_concurrency = 64\nargs = { iterations = \"@input.n\" }\n\n[outputs]\nstates = \"@spin\"\n",
    )?;
    let burns_input = serde_json::json!({ "n": vec![20_000_000u64; 16] }).to_string();

    let local_noops = time_run(&noops, &operators, "{}", &[], rounds)?;
    let mut workers = vec![worker(&url, &origin)?];
    let remote = ["--nats", url.as_str(), "--max-concurrency", "64"];
    let remote_noops = time_run(&noops, &operators, "{}", &remote, rounds)?;
    println!("| {nodes} tiny `burn` nodes | local | over NATS, 1 worker | per node |");
    println!("|---|---|---|---|");
    println!(
        "| wall time of `xcs run` | {:.1} ms | {:.1} ms | +{:.0} µs |",
        local_noops / 1e3,
        remote_noops / 1e3,
        (remote_noops - local_noops) / nodes as f64
    );
    println!();
    println!(
        "| workers (4 places each) | 48 waits of 20 ms | vs 1 worker | 16 CPU-bound `burn` calls | vs 1 worker |"
    );
    println!("|---|---|---|---|---|");
    let mut first = None;
    for count in 1..=3 {
        while workers.len() < count {
            workers.push(worker(&url, &origin)?);
        }
        let waited = time_run(&waits, &operators, &waits_input, &remote, rounds)?;
        let burned = time_run(&burns, &operators, &burns_input, &remote, rounds)?;
        let (one_wait, one_burn) = *first.get_or_insert((waited, burned));
        println!(
            "| {count} | {:.0} ms | {:.2}x | {:.0} ms | {:.2}x |",
            waited / 1e3,
            one_wait / waited,
            burned / 1e3,
            one_burn / burned
        );
    }
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> ExitCode {
    common::run_async(run())
}
