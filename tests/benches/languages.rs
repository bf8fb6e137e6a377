//! Fresh-sandbox calls of the same operator in Python, JavaScript and
//! Rust: the `upper` that `xcs new` writes in each language (componentize-py,
//! componentize-js, cargo for wasm32-wasip2), and the repository's lean
//! Rust `upper`, in one run, batches interleaved and rotated so that a
//! noisy neighbour slows every variant alike.
//!
//! The foreign components are the CLI tests' builds in `target/foreign/`
//! (`just bench` runs those tests' builds first); without them the bench
//! says so and measures nothing. `XCS_BENCH_QUICK=1`: a smoke run.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use common::Samples;
use serde_json::json;
use xcs::policy::Policy;
use xcs::{Host, Limits, Operator};

/// The newest `target/foreign/<name>-<hash>.wasm`.
fn newest_build(dir: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let file = entry.file_name().into_string().ok()?;
            let hash = file.strip_prefix(&prefix)?.strip_suffix(".wasm")?;
            // `<16 hex digits>`: not `upper-py-x.wasm.partial`, not a
            // longer name that starts the same.
            (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
            Some((entry.metadata().ok()?.modified().ok()?, entry.path()))
        })
        .max()
        .map(|(_, path)| path)
}

async fn run() -> Result<()> {
    let foreign = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/foreign");
    let mut paths = Vec::new();
    for name in ["upper-py", "upper-js", "upper-rs"] {
        match newest_build(&foreign, name) {
            Some(path) => paths.push((name, path)),
            None => {
                eprintln!(
                    "languages bench: no {name} build in {} — `just bench` makes them \
                     (the CLI's language tests build them); nothing measured",
                    foreign.display()
                );
                return Ok(());
            }
        }
    }
    // A fresh sandbox every call (the result cache would answer these
    // deterministic operators without running them); the user's on-disk
    // cache is left alone.
    let host = Host::builder()
        .no_disk_cache()
        .default_policy(Policy::new().cache(false))
        .build()?;
    let mut operators: Vec<(String, Operator)> = Vec::new();
    for (name, path) in &paths {
        let operator = host
            .load(path)
            .await
            .with_context(|| format!("loading {}", path.display()))?;
        operators.push(((*name).to_owned(), operator));
    }
    operators.push((
        "upper (Rust, lean)".to_owned(),
        host.load(xcs_tests::UPPER).await?,
    ));
    let limits = Limits::default();
    let input = json!({ "text": "hello, world" });
    for (name, operator) in &operators {
        let output = operator.call(&input, &limits).await?;
        ensure!(output == json!("HELLO, WORLD"), "{name} returned {output}");
    }
    let (rounds, batch) = if common::quick() { (3, 5) } else { (31, 40) };
    let mut samples: Vec<Samples> = operators.iter().map(|_| Samples::default()).collect();
    for round in 0..rounds {
        for offset in 0..operators.len() {
            let index = (round + offset) % operators.len();
            let operator = &operators[index].1;
            let start = Instant::now();
            for _ in 0..batch {
                operator.call(&input, &limits).await?;
            }
            samples[index].push(start.elapsed(), batch);
        }
    }
    let rust = samples[2].median();
    println!("| `upper`, one fresh sandbox per call | median (p25–p75) | vs Rust wasip2 |");
    println!("|---|---|---|");
    for ((name, _), samples) in operators.iter().zip(&samples) {
        println!(
            "| {name} | {} | {:.2}x |",
            samples.summary(),
            samples.median() / rust
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    common::run_async(run())
}
