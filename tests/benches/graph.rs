//! What the graph scheduler buys and what it costs, each against a
//! baseline measured in the same run:
//!
//! 1. latency-bound fan-out: 100 `wait` nodes sleeping on an async
//!    capability, against one node alone and against the same graph run
//!    one node at a time;
//! 2. CPU-bound width: 8 `burn` nodes on 2 runtime workers, run two at a
//!    time against one at a time; and the same loop in native code on 2
//!    threads against 1, which shows what speed-up a busy machine allows;
//! 3. scheduler overhead: a graph of 10,000 `noop` nodes, per node, minus
//!    one direct `Operator::call` of `noop`;
//! 4. large graphs: 100,000 nodes as a chain, a wide fan-out and a random
//!    DAG, checked and run one node at a time, per node against a direct
//!    call of the same operator; and the process's peak resident memory.
//!
//! `cargo bench -p xcs-tests --bench graph` prints a markdown table of
//! medians. `XCS_BENCH_QUICK=1` runs a few iterations only (a smoke run).
//!
//! The variants of each section are interleaved round by round, so that a
//! noisy neighbour slows every variant alike instead of one of them.

mod common;

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::Samples;
use serde_json::{Value, json};
use xcs::graph::{Graph, Node, NodeStatus, Plan, RunOptions, Source};
use xcs::policy::Policy;
use xcs::{Host, Limits, Operator};

/// Nodes of the latency fan-out.
const FAN_OUT_WIDTH: usize = 100;
/// What each `wait` node sleeps on the latency capability.
const SLEEP_MS: u32 = 20;
/// Nodes of the CPU-bound graph.
const BURN_WIDTH: usize = 8;
/// What one `burn` call should take, alone, on this machine.
const BURN_TARGET: Duration = Duration::from_millis(30);
/// Runtime workers, and the concurrency of the CPU-bound graph's parallel run.
const WORKERS: usize = 2;

/// How much work one run does.
struct Workload {
    /// Interleaved rounds of the fan-out section.
    fan_out_rounds: usize,
    /// Runs of the fan-out graph and of the single node per round (the
    /// sequential graph runs once per round: it takes 100 sleeps).
    fast_runs_per_round: usize,
    /// Interleaved rounds of the CPU-bound section.
    burn_rounds: usize,
    /// Nodes of the overhead graph.
    noop_nodes: usize,
    /// Interleaved rounds of the overhead section.
    noop_rounds: usize,
    /// Direct calls of `noop` per round.
    direct_calls_per_round: usize,
}

impl Workload {
    fn from_env() -> Workload {
        if common::quick() {
            Workload {
                fan_out_rounds: 2,
                fast_runs_per_round: 2,
                burn_rounds: 2,
                noop_nodes: 1_000,
                noop_rounds: 2,
                direct_calls_per_round: 200,
            }
        } else {
            Workload {
                fan_out_rounds: 7,
                fast_runs_per_round: 5,
                burn_rounds: 15,
                noop_nodes: 10_000,
                noop_rounds: 9,
                direct_calls_per_round: 2_000,
            }
        }
    }
}

/// Runs `plan` once, checking that every node succeeded in a guest call of
/// its own; returns the wall time and the run's concurrency bound.
async fn timed_run(plan: &Plan, options: &RunOptions) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let report = plan.run(&Value::Null, options).await;
    let elapsed = started.elapsed();
    if let Some(error) = report.error {
        return Err(error).context("the graph run failed");
    }
    let failed = report
        .nodes
        .iter()
        .filter(|node| node.status != NodeStatus::Ok)
        .count();
    ensure!(failed == 0, "{failed} nodes did not end `ok`");
    let uncalled = report
        .nodes
        .iter()
        .filter(|node| node.attempts == 0)
        .count();
    ensure!(
        uncalled == 0,
        "{uncalled} nodes were answered without a call"
    );
    Ok((elapsed, report.max_concurrency))
}

/// `width` independent nodes calling `operator` with `args`.
fn independent(width: usize, operator: &str, args: &[(&str, Value)]) -> Graph {
    (0..width).fold(Graph::new(), |graph, n| {
        let node = args.iter().fold(Node::new(format!("n{n}"), operator), {
            |node, (param, value)| node.arg(*param, Source::literal(value.clone()))
        });
        graph.node(node)
    })
}

struct FanOut {
    graph: Samples,
    single: Samples,
    sequential: Samples,
    peak_in_flight: u64,
}

async fn fan_out(workload: &Workload) -> Result<FanOut> {
    let (latency, in_flight) = xcs_tests::latency::capability();
    let host = Host::builder()
        .no_disk_cache()
        .grant(latency)
        .max_concurrency(FAN_OUT_WIDTH)
        .build()?;
    let wait = host.load(xcs_tests::WAIT).await?;
    let operators = xcs::graph::Operators::new().with(wait);
    let args = [("ms", json!(SLEEP_MS))];
    let wide = independent(FAN_OUT_WIDTH, "wait", &args).check(&operators)?;
    let single = independent(1, "wait", &args).check(&operators)?;
    let parallel = RunOptions::default();
    let sequential = RunOptions::default().max_concurrency(1);

    // Warm-up: every pool slot the wide run needs has been touched.
    timed_run(&wide, &parallel).await?;
    timed_run(&single, &parallel).await?;
    in_flight.reset_peak();

    let mut results = FanOut {
        graph: Samples::default(),
        single: Samples::default(),
        sequential: Samples::default(),
        peak_in_flight: 0,
    };
    for round in 0..workload.fan_out_rounds {
        for variant in 0..3 {
            match (round + variant) % 3 {
                0 => {
                    for _ in 0..workload.fast_runs_per_round {
                        let (elapsed, bound) = timed_run(&wide, &parallel).await?;
                        ensure!(bound == FAN_OUT_WIDTH, "the wide run had bound {bound}");
                        results.graph.push(elapsed, 1);
                    }
                }
                1 => {
                    for _ in 0..workload.fast_runs_per_round {
                        results
                            .single
                            .push(timed_run(&single, &parallel).await?.0, 1);
                    }
                }
                _ => results
                    .sequential
                    .push(timed_run(&wide, &sequential).await?.0, 1),
            }
        }
    }
    results.peak_in_flight = in_flight.peak();
    Ok(results)
}

struct Cpu {
    iterations: u64,
    one_call: Samples,
    parallel: Samples,
    sequential: Samples,
    native_iterations: u64,
    native_parallel: Samples,
    native_sequential: Samples,
}

/// The loop of the `burn` operator, in native code.
fn native_burn(iterations: u64) -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..iterations {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state = black_box(
            state
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(round),
        );
    }
    state
}

/// [`BURN_WIDTH`] native chunks on `threads` OS threads: what speed-up the
/// machine itself allows right now, whatever else runs on it.
fn native_chunks(iterations: u64, threads: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for first in 0..threads {
            scope.spawn(move || {
                for _ in (first..BURN_WIDTH).step_by(threads) {
                    black_box(native_burn(iterations));
                }
            });
        }
    });
    started.elapsed()
}

/// How many native iterations take about [`BURN_TARGET`].
fn calibrate_native() -> u64 {
    let probe = 10_000_000_u64;
    let mut times = Samples::default();
    for _ in 0..5 {
        let started = Instant::now();
        black_box(native_burn(black_box(probe)));
        times.push(started.elapsed(), 1);
    }
    (BURN_TARGET.as_secs_f64() * 1e6 / (times.median() / probe as f64)) as u64
}

/// How many `burn` iterations take about [`BURN_TARGET`] on this machine.
async fn calibrate(burn: &Operator) -> Result<u64> {
    let probe = 2_000_000_u64;
    let limits = Limits::default();
    let mut times = Samples::default();
    for _ in 0..5 {
        let started = Instant::now();
        burn.call(&json!([probe]), &limits).await?;
        times.push(started.elapsed(), 1);
    }
    let per_iteration_us = times.median() / probe as f64;
    Ok((BURN_TARGET.as_secs_f64() * 1e6 / per_iteration_us) as u64)
}

async fn cpu_bound(workload: &Workload, host: &Host) -> Result<Cpu> {
    let burn = host.load(xcs_tests::BURN).await?;
    let iterations = calibrate(&burn).await?;
    let operators = xcs::graph::Operators::new().with(burn.clone());
    let plan =
        independent(BURN_WIDTH, "burn", &[("iterations", json!(iterations))]).check(&operators)?;
    let parallel = RunOptions::default().max_concurrency(WORKERS);
    let sequential = RunOptions::default().max_concurrency(1);
    timed_run(&plan, &parallel).await?;

    let native_iterations = calibrate_native();

    let limits = Limits::default();
    let input = json!([iterations]);
    let mut results = Cpu {
        iterations,
        one_call: Samples::default(),
        parallel: Samples::default(),
        sequential: Samples::default(),
        native_iterations,
        native_parallel: Samples::default(),
        native_sequential: Samples::default(),
    };
    for round in 0..workload.burn_rounds {
        for variant in 0..5 {
            match (round + variant) % 5 {
                0 => {
                    let (elapsed, bound) = timed_run(&plan, &parallel).await?;
                    ensure!(bound == WORKERS, "the parallel run had bound {bound}");
                    results.parallel.push(elapsed, 1);
                }
                1 => results
                    .sequential
                    .push(timed_run(&plan, &sequential).await?.0, 1),
                2 => {
                    let started = Instant::now();
                    burn.call(&input, &limits).await?;
                    results.one_call.push(started.elapsed(), 1);
                }
                // Blocking the caller's thread is fine: nothing else runs.
                3 => results
                    .native_parallel
                    .push(native_chunks(native_iterations, WORKERS), 1),
                _ => results
                    .native_sequential
                    .push(native_chunks(native_iterations, 1), 1),
            }
        }
    }
    Ok(results)
}

struct Overhead {
    direct_call: Samples,
    sequential_per_node: Samples,
    default_per_node: Samples,
    default_bound: usize,
}

/// `calls` direct calls of `noop`, one after the other, on a runtime
/// worker (where the graph's calls run too); the mean time per call.
async fn direct_calls(noop: &Operator, calls: usize) -> Result<Duration> {
    let noop = noop.clone();
    tokio::spawn(async move {
        let limits = Limits::default();
        let input = json!([]);
        let started = Instant::now();
        for _ in 0..calls {
            noop.call(&input, &limits).await?;
        }
        Ok(started.elapsed() / calls as u32)
    })
    .await?
}

async fn overhead(workload: &Workload, host: &Host) -> Result<Overhead> {
    let noop = host.load(xcs_tests::NOOP).await?;
    let operators = xcs::graph::Operators::new().with(noop.clone());
    let nodes = workload.noop_nodes;
    let plan = independent(nodes, "noop", &[]).check(&operators)?;
    let sequential = RunOptions::default().max_concurrency(1);
    let default = RunOptions::default();
    direct_calls(&noop, 200).await?;
    let (_, default_bound) = timed_run(&plan, &default).await?;

    let mut results = Overhead {
        direct_call: Samples::default(),
        sequential_per_node: Samples::default(),
        default_per_node: Samples::default(),
        default_bound,
    };
    for round in 0..workload.noop_rounds {
        for variant in 0..3 {
            match (round + variant) % 3 {
                0 => results
                    .sequential_per_node
                    .push(timed_run(&plan, &sequential).await?.0, nodes),
                1 => results
                    .default_per_node
                    .push(timed_run(&plan, &default).await?.0, nodes),
                _ => results.direct_call.push(
                    direct_calls(&noop, workload.direct_calls_per_round).await?,
                    1,
                ),
            }
        }
    }
    Ok(results)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-minute load average (Linux only): how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn print_report(
    workload: &Workload,
    load_before: &str,
    fan: &FanOut,
    cpu: &Cpu,
    overhead: &Overhead,
) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("# xcs graph benchmark");
    println!();
    println!("- machine: {cores} cores (nproc), {}", cpu_model());
    println!(
        "- 1-minute load average before / after: {load_before} / {} \
         (above {cores}, other processes competed for the cores)",
        load_average()
    );
    println!("- tokio multi-thread runtime, {WORKERS} workers; medians (p25–p75)");
    println!(
        "- fan-out: {} rounds; {FAN_OUT_WIDTH} `wait` nodes × {SLEEP_MS} ms, host bound {FAN_OUT_WIDTH}; \
         most sleeps in flight at once: {}",
        workload.fan_out_rounds, fan.peak_in_flight
    );
    println!(
        "- CPU-bound: {} rounds; {BURN_WIDTH} `burn` nodes × {} iterations (~{} ms alone)",
        workload.burn_rounds,
        cpu.iterations,
        BURN_TARGET.as_millis()
    );
    println!(
        "- overhead: {} rounds; {} `noop` nodes; {} direct calls per round",
        workload.noop_rounds, workload.noop_nodes, workload.direct_calls_per_round
    );
    println!();
    println!("| measurement | median | ratio |");
    println!("|---|---|---|");
    let row = |name: &str, samples: &Samples, ratio: String| {
        println!("| {name} | {} | {ratio} |", samples.summary());
    };

    let single = fan.single.median();
    row(
        "one `wait` node alone (graph of 1)",
        &fan.single,
        "1.00 (baseline)".into(),
    );
    row(
        &format!("{FAN_OUT_WIDTH} `wait` nodes, host bound {FAN_OUT_WIDTH}"),
        &fan.graph,
        format!(
            "{:.2} × one node (target ≤ 1.20)",
            fan.graph.median() / single
        ),
    );
    row(
        &format!("{FAN_OUT_WIDTH} `wait` nodes, `max_concurrency(1)`"),
        &fan.sequential,
        format!(
            "{:.1}× slower than the fan-out (target ≥ 80×)",
            fan.sequential.median() / fan.graph.median()
        ),
    );

    let sequential = cpu.sequential.median();
    row(
        "one direct `burn` call (reference)",
        &cpu.one_call,
        format!(
            "× {BURN_WIDTH} = {:.2} ms",
            cpu.one_call.median() * BURN_WIDTH as f64 / 1e3
        ),
    );
    row(
        &format!("{BURN_WIDTH} `burn` nodes, `max_concurrency(1)`"),
        &cpu.sequential,
        "1.00 (baseline)".into(),
    );
    row(
        &format!("{BURN_WIDTH} `burn` nodes, `max_concurrency({WORKERS})`"),
        &cpu.parallel,
        format!(
            "{:.2}× speed-up (target ≥ 1.90)",
            sequential / cpu.parallel.median()
        ),
    );
    let native_sequential = cpu.native_sequential.median();
    row(
        &format!(
            "{BURN_WIDTH} native chunks of the same loop ({} iterations), 1 thread",
            cpu.native_iterations
        ),
        &cpu.native_sequential,
        "1.00 (machine baseline)".into(),
    );
    row(
        &format!("{BURN_WIDTH} native chunks, {WORKERS} threads"),
        &cpu.native_parallel,
        format!(
            "{:.2}× speed-up (what the machine allowed)",
            native_sequential / cpu.native_parallel.median()
        ),
    );

    let direct = overhead.direct_call.median();
    row(
        "one direct `noop` call (sequential)",
        &overhead.direct_call,
        "baseline".into(),
    );
    row(
        &format!(
            "{} `noop` nodes, `max_concurrency(1)`, per node",
            workload.noop_nodes
        ),
        &overhead.sequential_per_node,
        format!(
            "+{:.2} µs per node over the call (target ≤ 5)",
            overhead.sequential_per_node.median() - direct
        ),
    );
    row(
        &format!(
            "{} `noop` nodes, default bound ({}), per node",
            workload.noop_nodes, overhead.default_bound
        ),
        &overhead.default_per_node,
        format!(
            "+{:.2} µs per node over the call",
            overhead.default_per_node.median() - direct
        ),
    );
}

/// Nodes of the large graphs.
fn large_nodes() -> usize {
    if common::quick() { 10_000 } else { 100_000 }
}

/// Resets the peak that [`peak_rss_mib`] reads (Linux ≥ 4.0; elsewhere
/// the peak stays the process's).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process since the last reset (`VmHWM`,
/// Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// A wide fan-out: independent `noop` nodes.
fn wide(nodes: usize) -> Graph {
    independent(nodes, "noop", &[])
}

/// A chain: `sum` of the previous node's value (each node waits for one).
fn chain(nodes: usize) -> Graph {
    let mut graph =
        Graph::new().node(Node::new("n0", "sum").arg("xs", Source::literal(json!([1]))));
    for n in 1..nodes {
        graph = graph.node(
            Node::new(format!("n{n}"), "sum")
                .arg("xs", Source::list([Source::node(format!("n{}", n - 1))])),
        );
    }
    graph.output("last", Source::node(format!("n{}", nodes - 1)))
}

/// A random DAG: after 100 roots, each node takes the `mean` of one to
/// three earlier nodes (a fixed seed, so every run has the same graph).
fn random_dag(nodes: usize) -> Graph {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    let mut graph = Graph::new();
    for n in 0..nodes {
        let node = Node::new(format!("n{n}"), "stats");
        let node = if n < 100 {
            node.arg("xs", Source::literal(json!([n as f64, 1.0])))
        } else {
            let parents = 1 + next(3);
            node.arg(
                "xs",
                Source::list((0..parents).map(|_| Source::field(format!("n{}", next(n)), "mean"))),
            )
        };
        graph = graph.node(node);
    }
    graph.output("last", Source::node(format!("n{}", nodes - 1)))
}

/// A large graph: its name, how it is made for a number of nodes, the
/// operator its nodes call and an input for a direct call of it.
type LargeGraph = (&'static str, fn(usize) -> Graph, &'static str, Value);

/// One large graph's figures.
struct Large {
    name: String,
    nodes: usize,
    check: Samples,
    run: Samples,
    /// A direct call of the graph's operator, per call.
    direct: Samples,
    /// Peak resident memory while the graph was built, checked and run.
    peak_rss_mib: f64,
}

/// Checks and runs each large graph (chain, wide fan-out, random DAG) at
/// bound 1, `rounds` times, next to direct calls of its operator.
async fn large(host: &Host, rounds: usize) -> Result<(Vec<Large>, f64)> {
    reset_peak_rss();
    let rss_before = peak_rss_mib();
    let nodes = large_nodes();
    let operators = xcs::graph::Operators::new()
        .with(host.load(xcs_tests::NOOP).await?)
        .with(host.load(xcs_tests::SUM).await?)
        .with(host.load(xcs_tests::STATS).await?);
    let graphs: [LargeGraph; 3] = [
        ("chain of `sum`", chain, "sum", json!([[1]])),
        ("wide fan-out of `noop`", wide, "noop", json!([])),
        (
            "random DAG of `stats`, 1–3 parents",
            random_dag,
            "stats",
            json!([[1.0, 2.0]]),
        ),
    ];
    let options = RunOptions::default()
        .max_concurrency(1)
        .timeout(Duration::from_secs(3600));
    let mut figures = Vec::new();
    for (name, graph, operator, input) in graphs {
        let operator = host
            .load(match operator {
                "sum" => xcs_tests::SUM,
                "noop" => xcs_tests::NOOP,
                _ => xcs_tests::STATS,
            })
            .await?;
        let mut figure = Large {
            name: name.to_owned(),
            nodes,
            check: Samples::default(),
            run: Samples::default(),
            direct: Samples::default(),
            peak_rss_mib: 0.0,
        };
        reset_peak_rss();
        let graph = graph(nodes);
        for _ in 0..rounds {
            let started = Instant::now();
            let plan = graph.clone().check(&operators)?;
            figure.check.push(started.elapsed(), nodes);
            figure.run.push(timed_run(&plan, &options).await?.0, nodes);
            let limits = Limits::default();
            let started = Instant::now();
            for _ in 0..2_000 {
                operator.call(&input, &limits).await?;
            }
            figure.direct.push(started.elapsed(), 2_000);
        }
        drop(graph);
        figure.peak_rss_mib = peak_rss_mib();
        figures.push(figure);
    }
    Ok((figures, rss_before))
}

fn print_large((figures, rss_before): &(Vec<Large>, f64)) {
    println!();
    println!(
        "Large graphs at `max_concurrency(1)`, per node (check: `Graph::check`; run: `Plan::run`; the direct call of the same operator in the same rounds):"
    );
    println!();
    println!(
        "| graph | nodes | check per node | run per node | direct call | run overhead per node | nodes per second | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for figure in figures {
        let (run, direct) = (figure.run.median(), figure.direct.median());
        println!(
            "| {} | {} | {} | {} | {} | +{:.2} µs | {:.0} | {:.0} |",
            figure.name,
            figure.nodes,
            figure.check.summary(),
            figure.run.summary(),
            figure.direct.summary(),
            run - direct,
            1e6 / run,
            figure.peak_rss_mib
        );
    }
    println!();
    println!(
        "Peak resident memory of the process before the large graphs: {rss_before:.1} MiB; \
         each row's is its peak while its graph was built, checked, run and dropped."
    );
}

fn run() -> Result<()> {
    let workload = Workload::from_env();
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let (fan, cpu, overhead, large) = runtime.block_on(async {
        let fan = fan_out(&workload).await.context("fan-out")?;
        // The user's cache directory is left alone. `burn` and `noop` are
        // deterministic: without this, their repeated calls would be served
        // by the result cache instead of measured.
        let host = Host::builder()
            .no_disk_cache()
            .default_policy(Policy::new().cache(false))
            .build()?;
        let cpu = cpu_bound(&workload, &host).await.context("CPU-bound")?;
        let overhead = overhead(&workload, &host).await.context("overhead")?;
        let rounds = if common::quick() { 1 } else { 3 };
        let large = large(&host, rounds).await.context("large graphs")?;
        anyhow::Ok((fan, cpu, overhead, large))
    })?;
    print_report(&workload, &load_before, &fan, &cpu, &overhead);
    print_large(&large);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
