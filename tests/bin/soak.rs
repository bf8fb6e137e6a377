//! Soak: a long run of isolated calls, mixed good and failing operators,
//! against one `Host`, watching resident memory.
//!
//! `just soak` (or `cargo run --release -p xcs-tests --bin soak -- --calls N`)
//! runs `--calls` calls (default 1,000,000; also `XCS_SOAK_CALLS`) with the
//! result cache off, at most `--concurrency` at a time, samples `VmRSS`
//! every `calls / --samples` calls, and prints calls/s and the RSS table.
//! It exits non-zero if any call has an outcome its operator cannot have,
//! or if memory grows: the median RSS of the last quarter of the run must
//! not exceed the second quarter's by more than `--tolerance-percent` (5 %).
//! The first quarter is warm-up: allocator arenas and pooled slots fill.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use xcs::policy::Policy;
use xcs::{ErrorKind, Host, Limits, Operator};

#[derive(Debug, Parser)]
#[command(about = "Soak xcs with mixed good and failing calls and check that memory stays flat")]
struct Args {
    /// Calls to run [default: `XCS_SOAK_CALLS`, else 1000000].
    #[arg(long)]
    calls: Option<u64>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How many times resident memory is sampled over the run (RSS moves
    /// by megabytes with the calls in flight; the quarters' medians need
    /// dozens of samples each to be steady).
    #[arg(long, default_value_t = 400)]
    samples: u64,
    /// Rows of the printed RSS table (every sample counts in the medians).
    #[arg(long, default_value_t = 20)]
    table_rows: usize,
    /// How much the last quarter's median RSS may exceed the second's.
    #[arg(long, default_value_t = 5.0)]
    tolerance_percent: f64,
}

/// One operator of the mix: how often it is called, its input for call `n`,
/// its limits, and the outcome it must have.
struct Workload {
    name: &'static str,
    path: &'static str,
    weight: u64,
    limits: Limits,
    input: fn(u64) -> Value,
    expect: Expect,
}

#[derive(Clone, Copy)]
enum Expect {
    /// Succeeds with this output for call `n`.
    Output(fn(u64) -> Value),
    /// Fails with this kind.
    Fails(ErrorKind),
    /// Either succeeds with this output or fails with this kind.
    Either(fn(u64) -> Value, ErrorKind),
}

fn workloads() -> Vec<Workload> {
    let base = Limits::default().timeout(Duration::from_secs(10));
    vec![
        Workload {
            name: "upper",
            path: xcs_tests::UPPER,
            weight: 30,
            limits: base.clone(),
            input: |n| json!({ "text": format!("call {n}") }),
            expect: Expect::Output(|n| json!(format!("CALL {n}"))),
        },
        Workload {
            name: "sum",
            path: xcs_tests::SUM,
            weight: 25,
            limits: base.clone(),
            input: |n| json!({ "xs": [n, 1, -1, 2] }),
            expect: Expect::Output(|n| json!(n + 2)),
        },
        Workload {
            name: "noop",
            path: xcs_tests::NOOP,
            weight: 15,
            limits: base.clone(),
            input: |_| Value::Null,
            expect: Expect::Output(|_| Value::Null),
        },
        Workload {
            name: "flaky",
            path: xcs_tests::FLAKY,
            weight: 15,
            limits: base.clone().seed(7),
            input: |n| json!({ "key": n, "failure-percent": 30 }),
            expect: Expect::Either(|n| json!(n), ErrorKind::Operator),
        },
        Workload {
            name: "panic",
            path: xcs_tests::PANIC,
            weight: 5,
            limits: base.clone(),
            input: |_| Value::Null,
            expect: Expect::Fails(ErrorKind::Trap),
        },
        Workload {
            name: "spin",
            path: xcs_tests::SPIN,
            weight: 5,
            // Small enough that a runaway guest costs about as much as a
            // normal call, so the mix is not dominated by it.
            limits: base.clone().fuel(Some(200_000)),
            input: |_| Value::Null,
            expect: Expect::Fails(ErrorKind::Fuel),
        },
        Workload {
            name: "hog",
            path: xcs_tests::HOG,
            weight: 5,
            limits: base.max_memory_bytes(4 << 20),
            input: |_| Value::Null,
            expect: Expect::Fails(ErrorKind::Memory),
        },
    ]
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("VmRSS is not a number of kB: {line:?}"))?;
    Ok(kib * 1024)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    calls: u64,
    elapsed: Duration,
    resident_bytes: u64,
}

/// What the workers share.
struct Run {
    operators: Vec<(Workload, Operator)>,
    /// Cumulative weights, to pick an operator for call `n`.
    thresholds: Vec<u64>,
    total_weight: u64,
    calls: u64,
    sample_every: u64,
    next: AtomicU64,
    done: AtomicU64,
    started: Instant,
    samples: std::sync::Mutex<Vec<Sample>>,
}

/// (operator, outcome) → count, where outcome is `ok` or an error kind.
type Outcomes = BTreeMap<(&'static str, &'static str), u64>;

impl Run {
    /// Picks call `n`'s operator by a fixed hash of `n`: the same mix every
    /// run, spread evenly over time.
    fn pick(&self, n: u64) -> &(Workload, Operator) {
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let draw = (z ^ (z >> 31)) % self.total_weight;
        let index = self.thresholds.partition_point(|&limit| limit <= draw);
        &self.operators[index]
    }

    async fn worker(self: Arc<Self>) -> anyhow::Result<Outcomes> {
        let mut outcomes = Outcomes::new();
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.calls {
                return Ok(outcomes);
            }
            let (workload, operator) = self.pick(n);
            let result = operator.call(&(workload.input)(n), &workload.limits).await;
            let outcome = match (&result, workload.expect) {
                (Ok(output), Expect::Output(expected) | Expect::Either(expected, _))
                    if *output == expected(n) =>
                {
                    "ok"
                }
                (Err(error), Expect::Fails(kind) | Expect::Either(_, kind))
                    if error.kind() == kind =>
                {
                    kind.as_str()
                }
                _ => bail!(
                    "call {n} of {}: unexpected outcome {result:?}",
                    workload.name
                ),
            };
            *outcomes.entry((workload.name, outcome)).or_default() += 1;

            let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            if done.is_multiple_of(self.sample_every) || done == self.calls {
                let sample = Sample {
                    calls: done,
                    elapsed: self.started.elapsed(),
                    resident_bytes: resident_bytes()?,
                };
                self.samples
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a worker panicked while sampling"))?
                    .push(sample);
            }
        }
    }
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

async fn soak(args: &Args) -> anyhow::Result<bool> {
    let calls = match args.calls {
        Some(calls) => calls,
        None => match std::env::var("XCS_SOAK_CALLS") {
            Ok(text) => text
                .parse()
                .with_context(|| format!("XCS_SOAK_CALLS is not a number: {text:?}"))?,
            Err(_) => 1_000_000,
        },
    };
    ensure!(calls > 0, "--calls must be positive");
    ensure!(args.concurrency > 0, "--concurrency must be positive");
    // Result cache off: every call runs its guest.
    let host = Host::builder()
        .default_policy(Policy::new().cache(false))
        .build()
        .context("building the host")?;
    let mut operators = Vec::new();
    for workload in workloads() {
        let operator = host.load(workload.path).await.with_context(|| {
            format!(
                "loading {} (build the operators: `just build-operators` or build xcs-tests)",
                workload.path
            )
        })?;
        operators.push((workload, operator));
    }
    let mut total_weight = 0;
    let thresholds = operators
        .iter()
        .map(|(workload, _)| {
            total_weight += workload.weight;
            total_weight
        })
        .collect();
    let run = Arc::new(Run {
        operators,
        thresholds,
        total_weight,
        calls,
        sample_every: (calls / args.samples.max(1)).max(1),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        started: Instant::now(),
        samples: std::sync::Mutex::new(vec![Sample {
            calls: 0,
            elapsed: Duration::ZERO,
            resident_bytes: resident_bytes()?,
        }]),
    });
    println!(
        "soak: {} calls, {} in flight, result cache off, RSS sampled every {} calls",
        calls, args.concurrency, run.sample_every
    );

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(Arc::clone(&run).worker());
    }
    let mut outcomes = Outcomes::new();
    while let Some(joined) = workers.join_next().await {
        for (key, count) in joined.context("a soak worker panicked")?? {
            *outcomes.entry(key).or_default() += count;
        }
    }
    let elapsed = run.started.elapsed();

    let mut samples = run
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("a worker panicked while sampling"))?
        .clone();
    // Workers push samples as they finish calls, not strictly in order of
    // the call count; the table's intervals need them sorted.
    samples.sort_by_key(|sample| sample.calls);
    println!("\n|     calls | elapsed s | RSS MiB | calls/s (interval) |");
    println!("|----------:|----------:|--------:|-------------------:|");
    let stride = (samples.len() / args.table_rows.max(1)).max(1);
    let rows: Vec<Sample> = samples
        .iter()
        .step_by(stride)
        .chain(samples.last())
        .copied()
        .collect();
    for pair in rows.windows(2) {
        let [before, after] = pair else { continue };
        if after.calls == before.calls {
            continue;
        }
        let interval = (after.elapsed - before.elapsed).as_secs_f64();
        println!(
            "| {:>9} | {:>9.1} | {:>7.1} | {:>18.0} |",
            after.calls,
            after.elapsed.as_secs_f64(),
            mib(after.resident_bytes),
            (after.calls - before.calls) as f64 / interval.max(f64::EPSILON),
        );
    }

    println!("\n| operator | outcome | calls |\n|---|---|---:|");
    for ((name, outcome), count) in &outcomes {
        println!("| {name} | {outcome} | {count} |");
    }
    let metered: u64 = host
        .metrics()
        .operators
        .values()
        .map(|operator| operator.calls)
        .sum();
    ensure!(
        metered == calls,
        "the host's metrics count {metered} calls, the soak made {}",
        calls
    );

    let quarter = |index: u64| -> Option<u64> {
        let (from, to) = (calls * index / 4, calls * (index + 1) / 4);
        median(
            samples
                .iter()
                .filter(|sample| sample.calls > from && sample.calls <= to)
                .map(|sample| sample.resident_bytes)
                .collect(),
        )
    };
    let (Some(second), Some(last)) = (quarter(1), quarter(3)) else {
        bail!("too few RSS samples to compare quarters; raise --samples or --calls");
    };
    let change_percent = (mib(last) - mib(second)) / mib(second) * 100.0;
    // Growth is what a leak looks like; memory given back is not.
    let flat = change_percent <= args.tolerance_percent;
    println!(
        "\n{} calls in {:.1} s: {:.0} calls/s; peak RSS {:.1} MiB",
        calls,
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        mib(samples
            .iter()
            .map(|sample| sample.resident_bytes)
            .max()
            .unwrap_or(0)),
    );
    println!(
        "median RSS: second quarter {:.1} MiB, last quarter {:.1} MiB ({change_percent:+.1} %, limit +{} %): {}",
        mib(second),
        mib(last),
        args.tolerance_percent,
        if flat { "flat" } else { "NOT FLAT" },
    );
    Ok(flat)
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(soak(&args))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("soak: {error:#}");
            ExitCode::from(2)
        }
    }
}
