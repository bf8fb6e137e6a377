//! What composites cost and buy, each against a baseline measured in the
//! same run:
//!
//! 1. tracing: a dry trace of `ensemble` recording 1,000 calls (999
//!    guesses and the vote), against one direct call of `guess`;
//! 2. fan-out: `ensemble` of 10 guesses that each wait 100 ms on the
//!    latency capability, run at the host's bound against bound 1;
//! 3. run overhead: `ensemble` of 200 guesses (no wait) run as a composite
//!    (its trace cached, and traced anew) against the same graph from its
//!    TOML (`xcs trace --toml`), per call;
//! 4. staging: `refine` (one forced value: a staged run) against the same
//!    two calls as a graph.
//!
//! `cargo bench -p xcs-tests --bench compose` prints a markdown table of
//! medians. `XCS_BENCH_QUICK=1` runs a few iterations only (a smoke run).
//! The variants of each section are interleaved round by round.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::Samples;
use serde_json::{Value, json};
use xcs::graph::{COMPOSITE_OUTPUT, ComposeOptions, Composite, Graph, Operators, RunOptions};
use xcs::policy::Policy;
use xcs::{Host, Limits};

/// Calls the traced `ensemble` records: `TRACED_GUESSES` guesses and a vote.
const TRACED_GUESSES: u32 = 999;
/// Guesses of the fan-out section, and what each waits.
const FAN_OUT: u32 = 10;
const FAN_OUT_WAIT_MS: u32 = 100;
/// Guesses of the run-overhead section.
const OVERHEAD_GUESSES: u32 = 200;

/// How much work one run does.
struct Workload {
    trace_rounds: usize,
    fan_out_rounds: usize,
    overhead_rounds: usize,
    staged_rounds: usize,
}

impl Workload {
    fn from_env() -> Workload {
        if common::quick() {
            Workload {
                trace_rounds: 2,
                fan_out_rounds: 1,
                overhead_rounds: 2,
                staged_rounds: 2,
            }
        } else {
            Workload {
                trace_rounds: 15,
                fan_out_rounds: 5,
                overhead_rounds: 11,
                staged_rounds: 31,
            }
        }
    }
}

/// The operators the composites call, and the composites, on `host`.
async fn operators(host: &Host) -> Result<Operators> {
    let mut operators = Operators::new();
    for path in [
        xcs_tests::GUESS,
        xcs_tests::MOST_COMMON,
        xcs_tests::WORD_COUNT,
        xcs_tests::UPPER,
        xcs_tests::ENSEMBLE,
        xcs_tests::REFINE,
    ] {
        let operator = host
            .load(path)
            .await
            .with_context(|| format!("loading {path}"))?;
        operators.insert(operator.name().to_owned(), operator);
    }
    Ok(operators)
}

fn composite(operators: &Operators, name: &str, options: ComposeOptions) -> Result<Composite> {
    let operator = operators.get(name).context("loaded")?.clone();
    Ok(Composite::with_options(
        operator,
        operators.clone(),
        options,
    )?)
}

/// Runs `composite` once with `input`; its wall time.
async fn timed_composite(
    composite: &Composite,
    input: &Value,
    options: &RunOptions,
    expected: &Value,
) -> Result<Duration> {
    let started = Instant::now();
    let outputs = composite.run(input, options).await.into_result()?;
    let elapsed = started.elapsed();
    ensure!(
        &outputs[COMPOSITE_OUTPUT] == expected,
        "wrong output: {outputs:?}"
    );
    Ok(elapsed)
}

/// Runs `graph`'s plan once; its wall time.
async fn timed_graph(graph: &Graph, operators: &Operators, expected: &Value) -> Result<Duration> {
    let plan = graph.check(operators)?;
    let started = Instant::now();
    let outputs = plan
        .run(&Value::Null, &RunOptions::default())
        .await
        .into_result()?;
    let elapsed = started.elapsed();
    ensure!(
        &outputs[COMPOSITE_OUTPUT] == expected,
        "wrong output: {outputs:?}"
    );
    Ok(elapsed)
}

#[derive(Default)]
struct Results {
    trace_1000: Samples,
    direct_guess: Samples,
    fan_out_parallel: Samples,
    fan_out_sequential: Samples,
    overhead_cached: Samples,
    overhead_fresh: Samples,
    overhead_toml: Samples,
    staged: Samples,
    staged_as_graph: Samples,
    bound: usize,
}

async fn measure(workload: &Workload) -> Result<Results> {
    let (latency, _) = xcs_tests::latency::capability();
    // Results are not cached: every call runs its guest. The host's bound
    // on guests at once (default: the cores) lets the fan-out's waits overlap.
    let host = Host::builder()
        .no_disk_cache()
        .grant(latency)
        .max_concurrency(FAN_OUT as usize)
        .default_policy(Policy::new().cache(false))
        .build()?;
    let operators = operators(&host).await?;
    let mut results = Results::default();

    // 1. A 1,000-call trace, against one direct call of the leaf.
    let ensemble = composite(&operators, "ensemble", ComposeOptions::default())?;
    let guess = operators.get("guess").context("loaded")?.clone();
    let big = json!({"text": "a b a", "n": TRACED_GUESSES, "wait-ms": 0});
    for _ in 0..workload.trace_rounds {
        let started = Instant::now();
        let trace = ensemble.trace(&big).await?;
        results.trace_1000.push(started.elapsed(), 1);
        ensure!(trace.is_complete() && trace.calls == TRACED_GUESSES as usize + 1);
        let started = Instant::now();
        guess
            .call(
                &json!({"text": "a b a", "variant": 0, "wait-ms": 0}),
                &Limits::default(),
            )
            .await?;
        results.direct_guess.push(started.elapsed(), 1);
    }

    // 2. The fan-out, at the host's bound and at bound 1.
    let fan_out = json!({"text": "a b a", "n": FAN_OUT, "wait-ms": FAN_OUT_WAIT_MS});
    let vote = json!("a");
    let bound = RunOptions::default().max_concurrency(FAN_OUT as usize);
    results.bound = FAN_OUT as usize;
    let one = RunOptions::default().max_concurrency(1);
    for _ in 0..workload.fan_out_rounds {
        let elapsed = timed_composite(&ensemble, &fan_out, &bound, &vote).await?;
        results.fan_out_parallel.push(elapsed, 1);
        let elapsed = timed_composite(&ensemble, &fan_out, &one, &vote).await?;
        results.fan_out_sequential.push(elapsed, 1);
    }

    // 3. Per-call overhead: the composite (cached trace; fresh trace)
    //    against the same graph from its TOML.
    let input = json!({"text": "a b a", "n": OVERHEAD_GUESSES, "wait-ms": 0});
    let calls = OVERHEAD_GUESSES as usize + 1;
    let trace = ensemble.trace(&input).await?;
    let graph = Graph::from_toml(&trace.graph.to_toml()?)?;
    // Warm the composite's cache of traces.
    timed_composite(&ensemble, &input, &RunOptions::default(), &vote).await?;
    for _ in 0..workload.overhead_rounds {
        let elapsed = timed_composite(&ensemble, &input, &RunOptions::default(), &vote).await?;
        results.overhead_cached.push(elapsed, calls);
        // A composite of its own: an empty cache, so this run traces.
        let fresh = composite(&operators, "ensemble", ComposeOptions::default())?;
        let elapsed = timed_composite(&fresh, &input, &RunOptions::default(), &vote).await?;
        results.overhead_fresh.push(elapsed, calls);
        let elapsed = timed_graph(&graph, &operators, &vote).await?;
        results.overhead_toml.push(elapsed, calls);
    }

    // 4. A staged run (one forced value) against the same calls as a graph.
    let refine = composite(&operators, "refine", ComposeOptions::default())?;
    let text = "one two three";
    let staged_input = json!({"text": text, "threshold": 2});
    let shout = json!(text.to_uppercase());
    let same_graph = Graph::from_toml(&format!(
        r#"
        [[node]]
        id = "count"
        operator = "word-count"
        args = {{ text = "{text}" }}

        [[node]]
        id = "shout"
        operator = "upper"
        args = {{ text = "{text}" }}

        [outputs]
        output = "@shout"
        "#
    ))?;
    for _ in 0..workload.staged_rounds {
        let elapsed =
            timed_composite(&refine, &staged_input, &RunOptions::default(), &shout).await?;
        results.staged.push(elapsed, 1);
        let elapsed = timed_graph(&same_graph, &operators, &shout).await?;
        results.staged_as_graph.push(elapsed, 1);
    }
    Ok(results)
}

fn row(measurement: &str, samples: &Samples, ratio: String) {
    println!("| {measurement} | {} | {ratio} |", samples.summary());
}

fn print_report(workload: &Workload, results: &Results) {
    println!("## xcs composites");
    println!();
    println!(
        "- trace: {} rounds; fan-out: {} rounds; overhead: {} rounds of {} calls; staged: {} rounds",
        workload.trace_rounds,
        workload.fan_out_rounds,
        workload.overhead_rounds,
        OVERHEAD_GUESSES + 1,
        workload.staged_rounds
    );
    println!();
    println!("| measurement | median | ratio |");
    println!("|---|---|---|");
    let direct = results.direct_guess.median();
    row(
        "one direct `guess` call (reference)",
        &results.direct_guess,
        "1.00".into(),
    );
    row(
        &format!(
            "dry trace of `ensemble`, {} calls recorded",
            TRACED_GUESSES + 1
        ),
        &results.trace_1000,
        format!(
            "{:.1}× one call (target ≤ 10 ms)",
            results.trace_1000.median() / direct
        ),
    );
    let sequential = results.fan_out_sequential.median();
    row(
        &format!("`ensemble` of {FAN_OUT} guesses waiting {FAN_OUT_WAIT_MS} ms, bound 1"),
        &results.fan_out_sequential,
        "1.00 (baseline)".into(),
    );
    row(
        &format!("the same, bound {}", results.bound),
        &results.fan_out_parallel,
        format!(
            "{:.2}× faster (target ≥ 9×)",
            sequential / results.fan_out_parallel.median()
        ),
    );
    let toml = results.overhead_toml.median();
    row(
        &format!(
            "`ensemble` graph from its TOML, {} calls, per call",
            OVERHEAD_GUESSES + 1
        ),
        &results.overhead_toml,
        "1.00 (baseline)".into(),
    );
    row(
        "the composite, trace cached, per call",
        &results.overhead_cached,
        format!(
            "{:.2} (target ≤ 1.2)",
            results.overhead_cached.median() / toml
        ),
    );
    row(
        "the composite, traced anew, per call",
        &results.overhead_fresh,
        format!("{:.2}", results.overhead_fresh.median() / toml),
    );
    let as_graph = results.staged_as_graph.median();
    row(
        "`refine`'s two calls as a graph",
        &results.staged_as_graph,
        "1.00 (baseline)".into(),
    );
    row(
        "`refine`, staged (one forced value)",
        &results.staged,
        format!("{:.2}", results.staged.median() / as_graph),
    );
}

fn run() -> Result<()> {
    let workload = Workload::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let results = runtime.block_on(measure(&workload))?;
    print_report(&workload, &results);
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
