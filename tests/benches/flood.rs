//! Deadlines and other tenants under a flood: `FLOOD` concurrent calls of
//! `spin` (a guest that never returns) with a 100 ms timeout, all submitted
//! at once, while a probe calls `upper` (a normal, sub-millisecond call)
//! every `PROBE_EVERY`, one at a time, until the flood has drained.
//!
//! Reported, as medians over the rounds:
//! - how long after its deadline each flooding call returned (`timeout`),
//!   p50, p99 and the worst;
//! - the probe's latency during the flood, p50 and p99, against the same
//!   probe on an idle host measured in the same run.
//!
//! `cargo bench -p xcs-tests --bench flood` prints a markdown table.
//! `XCS_BENCH_QUICK=1` runs one small round (a smoke run).

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::Samples;
use serde_json::json;
use xcs::{ErrorKind, Host, Limits, Operator};

const TIMEOUT: Duration = Duration::from_millis(100);
const PROBE_EVERY: Duration = Duration::from_millis(20);

struct Round {
    /// Per flooding call, how long after its deadline it returned (µs).
    overshoot: Samples,
    /// The probe's latencies during the flood (µs).
    probe: Samples,
    /// From submitting the flood to its last call returning.
    drained: Duration,
}

async fn flood(spin: &Operator, upper: &Operator, calls: usize) -> Result<Round> {
    let limits = Limits::default().timeout(TIMEOUT);
    let submitted = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let spin = spin.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let outcome = spin.call(&json!([]), &limits).await;
                (outcome, Instant::now())
            })
        })
        .collect();
    // The probe's requests arrive on time from a thread of their own, as
    // a client's would; each is timed from its arrival.
    let done = Arc::new(AtomicBool::new(false));
    let probing = {
        let (upper, done) = (upper.clone(), done.clone());
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let mut arrivals = Vec::new();
            let mut index = 0_u64;
            while !done.load(Ordering::Relaxed) {
                let upper = upper.clone();
                let arrived = Instant::now();
                // Fresh input each time: the result cache must not answer.
                let input = json!([format!("probe {index}")]);
                arrivals.push(runtime.spawn(async move {
                    upper
                        .call(&input, &Limits::default())
                        .await
                        .map(|_| arrived.elapsed())
                }));
                index += 1;
                std::thread::sleep(PROBE_EVERY);
            }
            arrivals
        })
    };
    let mut overshoot = Samples::default();
    for task in tasks {
        let (outcome, ended) = task.await.context("a flooding call's task")?;
        let error = outcome.err().context("spin returned")?;
        ensure!(
            error.kind() == ErrorKind::Timeout,
            "spin ended with {error}"
        );
        overshoot.push(ended.saturating_duration_since(submitted + TIMEOUT), 1);
    }
    let drained = submitted.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut probe = Samples::default();
    let arrivals = probing
        .join()
        .map_err(|_| anyhow::anyhow!("the probe's thread panicked"))?;
    for arrival in arrivals {
        probe.push(arrival.await.context("a probe's task")??, 1);
    }
    Ok(Round {
        overshoot,
        probe,
        drained,
    })
}

async fn idle_probe(upper: &Operator, calls: usize) -> Result<Samples> {
    let mut probe = Samples::default();
    for index in 0..calls {
        let started = Instant::now();
        let input = json!([format!("idle probe {index} {:?}", Instant::now())]);
        upper.call(&input, &Limits::default()).await?;
        probe.push(started.elapsed(), 1);
    }
    Ok(probe)
}

fn ms(micros: f64) -> String {
    if micros >= 1000.0 {
        format!("{:.1} ms", micros / 1e3)
    } else {
        format!("{micros:.0} µs")
    }
}

fn median(values: &[f64]) -> f64 {
    Samples(values.to_vec()).median()
}

async fn measure() -> Result<()> {
    let (calls, rounds) = if common::quick() { (200, 1) } else { (1000, 5) };
    let host = Host::builder().no_disk_cache().build()?;
    let spin = host.load(xcs_tests::SPIN).await?;
    let upper = host.load(xcs_tests::UPPER).await?;
    let mut idle = Samples::default();
    let (mut p50, mut p99, mut worst, mut probe50, mut probe99, mut drained, mut probes) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        idle.0.extend(idle_probe(&upper, 50).await?.0);
        let round = flood(&spin, &upper, calls).await?;
        p50.push(round.overshoot.quantile(0.5));
        p99.push(round.overshoot.quantile(0.99));
        worst.push(round.overshoot.quantile(1.0));
        probe50.push(round.probe.quantile(0.5));
        probe99.push(round.probe.quantile(0.99));
        drained.push(round.drained.as_secs_f64() * 1e6);
        probes.push(round.probe.0.len() as f64);
    }
    let idle50 = idle.quantile(0.5);
    println!(
        "{calls} concurrent `spin` calls, timeout {} ms; probe `upper` every {} ms; \
         {rounds} rounds, medians; {} threads",
        TIMEOUT.as_millis(),
        PROBE_EVERY.as_millis(),
        std::thread::available_parallelism().map_or(1, usize::from),
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| overshoot past the deadline, p50 | {} |",
        ms(median(&p50))
    );
    println!(
        "| overshoot past the deadline, p99 | {} |",
        ms(median(&p99))
    );
    println!(
        "| overshoot past the deadline, worst | {} |",
        ms(median(&worst))
    );
    println!("| flood drained after | {} |", ms(median(&drained)));
    println!(
        "| probe on an idle host, median (p25–p75) | {} |",
        idle.summary()
    );
    println!("| probes made during the flood | {:.0} |", median(&probes));
    println!(
        "| probe during the flood, p50 | {} ({:.1}× idle) |",
        ms(median(&probe50)),
        median(&probe50) / idle50
    );
    println!(
        "| probe during the flood, p99 | {} ({:.1}× idle) |",
        ms(median(&probe99)),
        median(&probe99) / idle50
    );
    Ok(())
}

fn main() -> ExitCode {
    common::run_async(measure())
}
