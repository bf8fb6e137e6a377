//! A granted HTTP request through `fetch` (a fresh sandbox per call, the
//! request admitted against the allow-list and sent by the host's client)
//! against the same request made directly by the host (a plain HTTP/1.1
//! GET over a new TCP connection), to the same mock server on 127.0.0.1,
//! in one run, batches interleaved. `XCS_BENCH_QUICK=1`: a smoke run.

mod common;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, ensure};
use common::Samples;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xcs::{Grants, Host, Limits};
use xcs_tests::mock_http::MockServer;

/// The request `fetch` makes, made by the host itself: the body's bytes.
async fn direct(address: &str) -> Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET /hello HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    ensure!(response.starts_with(b"HTTP/1.1 200"), "not a 200");
    Ok(response.len())
}

async fn run() -> Result<()> {
    let server = MockServer::start("key").await?;
    let origin = server.origin();
    let address = origin.trim_start_matches("http://").to_owned();
    let host = Host::builder()
        .no_disk_cache()
        .grants_for("fetch", Grants::new().allow_http(&origin))
        .build()?;
    let fetch = host.load(xcs_tests::FETCH).await?;
    let input = json!({ "url": format!("{origin}/hello") });
    let limits = Limits::default();
    let output = fetch.call(&input, &limits).await?;
    ensure!(output["status"] == 200, "fetch returned {output}");
    direct(&address).await?;

    let (rounds, batch) = if common::quick() { (3, 5) } else { (31, 40) };
    let mut through_xcs = Samples::default();
    let mut by_the_host = Samples::default();
    for round in 0..rounds {
        for turn in 0..2 {
            let start = Instant::now();
            if (round + turn) % 2 == 0 {
                for _ in 0..batch {
                    fetch.call(&input, &limits).await?;
                }
                through_xcs.push(start.elapsed(), batch);
            } else {
                for _ in 0..batch {
                    direct(&address).await?;
                }
                by_the_host.push(start.elapsed(), batch);
            }
        }
    }
    let baseline = by_the_host.median();
    println!(
        "| GET of 26 bytes from 127.0.0.1, new connection each | median (p25–p75) | vs direct |"
    );
    println!("|---|---|---|");
    for (name, samples) in [
        ("direct from the host (TCP + HTTP/1.1)", &by_the_host),
        ("`fetch` through xcs (fresh sandbox, granted)", &through_xcs),
    ] {
        println!(
            "| {name} | {} | {:.2}x |",
            samples.summary(),
            samples.median() / baseline
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::run_async(run())
}
