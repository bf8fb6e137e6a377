//! What a call through xcs costs, against bare wasmtime measured in the
//! same run with the same engine settings; and what a cached load saves
//! over compiling.
//!
//! `cargo bench -p xcs-tests --bench call` prints a markdown table of
//! medians. `XCS_BENCH_QUICK=1` runs a few iterations only (a smoke run).
//!
//! Per-call numbers are medians of batch means; the batches of the
//! variants are interleaved (and their order rotated) so that a noisy
//! neighbour slows every variant alike instead of one of them.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde_json::{Value, json};
use wasmtime::component::{
    Component, ComponentExportIndex, Instance, InstancePre, Linker, ResourceTable, Val,
};
// wasmtime 48 has its own error type (anyhow's would need wasmtime's
// `anyhow` feature, which would rebuild wasmtime for the whole workspace).
use common::Samples;
use wasmtime::error::Context;
use wasmtime::{Engine, Result, Store, bail, ensure};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use xcs::policy::Policy;
use xcs::{Host, Limits, Operator};

/// How much work one run does.
struct Plan {
    /// Interleaved rounds of per-call batches (one batch per variant).
    call_rounds: usize,
    /// Calls per batch.
    calls_per_batch: usize,
    /// Fresh compiles without any cache.
    compiles: usize,
    /// Rounds of in-memory cache hits, `calls_per_batch` loads each.
    memory_hit_rounds: usize,
    /// Loads from the on-disk cache, each in a new host.
    disk_hits: usize,
}

impl Plan {
    fn from_env() -> Plan {
        if common::quick() {
            Plan {
                call_rounds: 5,
                calls_per_batch: 20,
                compiles: 2,
                memory_hit_rounds: 5,
                disk_hits: 2,
            }
        } else {
            Plan {
                call_rounds: 101,
                calls_per_batch: 500,
                compiles: 15,
                memory_hit_rounds: 31,
                // Not more: every host that loaded an operator stays alive
                // with its ~4 TiB pool reservation (see `leaked_tickers`).
                disk_hits: 15,
            }
        }
    }
}

/// A component with nothing but an `invoke` that returns `ok`: one core
/// module with one memory, no imports.
const MINIMAL_COMPONENT: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "invoke") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func (export "invoke") (result (result))
    (canon lift (core func $i "invoke"))))"#;

/// Store data of the bare-wasmtime baseline: only what WASI needs.
struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// An engine configured exactly like a default xcs host's (the library
/// hands out its configuration, so the two cannot drift apart); `old`:
/// with the configuration before in-place resets (no `PAGEMAP_SCAN`,
/// nothing kept resident), the old baseline.
fn bare_engine(old: bool) -> Result<Engine> {
    let mut builder = Host::builder().no_disk_cache();
    if old {
        builder = builder
            .pagemap_scan(false)
            .memory_keep_resident(0)
            .table_keep_resident(0);
    }
    let config = builder
        .__engine_config()
        .map_err(|error| wasmtime::Error::msg(error.to_string()))?;
    Engine::new(&config).context("building the bare engine")
}

/// Minor page faults of this process so far (`/proc/self/stat`, Linux).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and
            // may hold spaces: state is the first, minflt the seventh.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Bare wasmtime's load of precompiled code from a file, unchecked: the
/// reference for what of an on-disk hit is wasmtime's.
#[allow(unsafe_code)]
fn bare_deserialize(engine: &Engine, artifact: &Path) -> Result<Component> {
    let bytes = std::fs::read(artifact)?;
    // SAFETY: the file was written by this benchmark, a moment ago, with
    // what `Engine::precompile_component` returned on this engine.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// The bare baseline: the component pre-instantiated against WASI and a
/// no-op `xcs:operator` host interface.
struct Bare {
    engine: Engine,
    pre: InstancePre<BareState>,
    invoke: ComponentExportIndex,
}

impl Bare {
    fn new(engine: Engine, bytes: &[u8]) -> Result<Bare> {
        let component =
            Component::from_binary(&engine, bytes).context("compiling for the baseline")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).context("linking WASI")?;
        // `types` only holds types: an empty instance satisfies the import.
        linker.instance("xcs:operator/types@0.1.0")?;
        // `log` is never called by `noop`; a dynamic no-op spares the
        // baseline a Rust mirror of the `level` enum.
        linker
            .instance("xcs:operator/host@0.1.0")?
            .func_new("log", |_store, _type, _params, _results| Ok(()))?;
        let pre = linker
            .instantiate_pre(&component)
            .context("pre-instantiating")?;
        let invoke = component
            .get_export_index(None, "invoke")
            .context("the component exports `invoke`")?;
        Ok(Bare {
            engine,
            pre,
            invoke,
        })
    }

    fn store(&self) -> Result<Store<BareState>> {
        let state = BareState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_fuel(u64::MAX)?;
        // No ticker advances this engine's epoch: the deadline never fires,
        // but the guest still pays for the checks.
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// One isolated call: fresh store, instantiate, call `invoke`.
    async fn call_fresh(&self) -> Result<Val> {
        let mut store = self.store()?;
        let instance = self.pre.instantiate_async(&mut store).await?;
        invoke(&mut store, instance, &self.invoke).await
    }
}

async fn invoke(
    store: &mut Store<BareState>,
    instance: Instance,
    index: &ComponentExportIndex,
) -> Result<Val> {
    let func = instance
        .get_func(&mut *store, index)
        .context("`invoke` export")?;
    let mut results = [Val::Bool(false)];
    func.call_async(&mut *store, &[], &mut results).await?;
    let [result] = results;
    Ok(result)
}

async fn xcs_call(noop: &Operator, input: &Value, limits: &Limits) -> Result<()> {
    let output = noop.call(input, limits).await?;
    ensure!(output == Value::Null, "noop returned {output}");
    Ok(())
}

/// Times `batch` sequential runs of `op`, recording the mean per run.
macro_rules! time_batch {
    ($samples:expr, $batch:expr, $op:expr) => {{
        let started = Instant::now();
        for _ in 0..$batch {
            $op;
        }
        $samples.push(started.elapsed(), $batch);
    }};
    // Also counts the batch's minor page faults into `$faults`.
    ($samples:expr, $faults:expr, $batch:expr, $op:expr) => {{
        let faults = minor_faults();
        time_batch!($samples, $batch, $op);
        $faults += minor_faults() - faults;
    }};
}

struct Results {
    xcs_call: Samples,
    bare_call: Samples,
    old_bare_call: Samples,
    reused_call: Samples,
    minimal_call: Samples,
    /// Minor page faults per call of xcs, the bare and the old bare calls.
    faults: [f64; 3],
    memory_reset: xcs::MemoryReset,
    compile: Samples,
    memory_hit: Samples,
    memory_hit_path: Samples,
    disk_populate: Samples,
    disk_hit: Samples,
    bare_disk_hit: Samples,
    hosts_built: usize,
    /// Epoch ticker threads still running once every host was dropped.
    leaked_tickers: usize,
}

async fn measure(plan: &Plan, bytes: &[u8], cache_dir: &Path) -> Result<Results> {
    // The xcs side: a default host without the disk cache (the user's
    // cache directory is left alone), default limits.
    // A fresh sandbox every call: the result cache would answer `noop` (it is
    // deterministic) without running it.
    let host = Host::builder()
        .no_disk_cache()
        .default_policy(Policy::new().cache(false))
        .build()?;
    let noop = host.load_bytes(bytes.to_vec(), "noop.wasm").await?;
    let limits = Limits::default();
    let input = json!([]);

    let bare = Bare::new(bare_engine(false)?, bytes)?;
    let old_bare = Bare::new(bare_engine(true)?, bytes)?;
    // The floor set by the component's shape: one core module, one
    // memory, no imports, an `invoke` that returns `ok`.
    let minimal = Bare::new(bare_engine(false)?, &wat::parse_str(MINIMAL_COMPONENT)?)?;
    let mut reused_store = bare.store()?;
    let reused_instance = bare.pre.instantiate_async(&mut reused_store).await?;

    // Sanity and warm-up: every variant returns `ok` and has touched its
    // pool slots before timing starts.
    for _ in 0..plan.calls_per_batch.max(50) {
        xcs_call(&noop, &input, &limits).await?;
        let fresh = bare.call_fresh().await?;
        let old = old_bare.call_fresh().await?;
        let reused = invoke(&mut reused_store, reused_instance, &bare.invoke).await?;
        let floor = minimal.call_fresh().await?;
        for result in [fresh, old, reused, floor] {
            if !matches!(result, Val::Result(Ok(None))) {
                bail!("bare `invoke` returned {result:?}, expected ok");
            }
        }
    }

    let batch = plan.calls_per_batch;
    let mut minimal_samples = Samples::default();
    let (mut xcs_samples, mut bare_samples, mut old_samples, mut reused_samples) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let (mut xcs_faults, mut bare_faults, mut old_faults) = (0u64, 0u64, 0u64);
    for round in 0..plan.call_rounds {
        for variant in 0..5 {
            match (round + variant) % 5 {
                0 => time_batch!(
                    xcs_samples,
                    xcs_faults,
                    batch,
                    xcs_call(&noop, &input, &limits).await?
                ),
                1 => time_batch!(bare_samples, bare_faults, batch, bare.call_fresh().await?),
                2 => time_batch!(old_samples, old_faults, batch, old_bare.call_fresh().await?),
                3 => time_batch!(minimal_samples, batch, minimal.call_fresh().await?),
                _ => time_batch!(
                    reused_samples,
                    batch,
                    invoke(&mut reused_store, reused_instance, &bare.invoke).await?
                ),
            };
        }
    }
    let calls = (plan.call_rounds * batch) as f64;
    let faults = [xcs_faults, bare_faults, old_faults].map(|faults| faults as f64 / calls);
    let memory_reset = host.memory_reset();
    drop(reused_store);

    // Compiling from scratch: the bare engine has no disk cache.
    let mut compile = Samples::default();
    for _ in 0..plan.compiles {
        time_batch!(compile, 1, Component::from_binary(&bare.engine, bytes)?);
    }

    // In-memory hit: the bytes were loaded by `host` already. The copy the
    // caller hands over is made outside the timing.
    let mut memory_hit = Samples::default();
    let mut memory_hit_path = Samples::default();
    for _ in 0..plan.memory_hit_rounds {
        let copies: Vec<Vec<u8>> = (0..batch).map(|_| bytes.to_vec()).collect();
        let started = Instant::now();
        for copy in copies {
            host.load_bytes(copy, "noop.wasm").await?;
        }
        memory_hit.push(started.elapsed(), batch);
        time_batch!(memory_hit_path, batch, host.load(xcs_tests::NOOP).await?);
    }
    drop(noop);
    drop(host);

    // On-disk hit: a first host compiles and stores, then every load is in
    // a new host (an empty in-memory cache) over the same directory.
    let mut disk_populate = Samples::default();
    {
        let populating = Host::builder()
            .cache_dir(cache_dir)
            .cache_key_file(cache_dir.with_extension("key"))
            .build()?;
        time_batch!(
            disk_populate,
            1,
            populating.load_bytes(bytes.to_vec(), "noop.wasm").await?
        );
    }
    let mut disk_hit = Samples::default();
    for _ in 0..plan.disk_hits {
        let fresh_host = Host::builder()
            .cache_dir(cache_dir)
            .cache_key_file(cache_dir.with_extension("key"))
            .build()?;
        let copy = bytes.to_vec();
        let started = Instant::now();
        fresh_host.load_bytes(copy, "noop.wasm").await?;
        disk_hit.push(started.elapsed(), 1);
        ensure!(
            fresh_host.compilations() == 0,
            "the on-disk cache did not answer a load in a new host"
        );
    }

    // The same on-disk entry read by bare wasmtime: what of a disk-cache
    // load is wasmtime's, and what is xcs's (checks, metadata call).
    let mut bare_disk_hit = Samples::default();
    let artifact = cache_dir.join("bare.cwasm");
    drop(old_bare);
    std::fs::write(&artifact, bare.engine.precompile_component(bytes)?)?;
    for _ in 0..plan.disk_hits {
        // A new engine each time, as xcs's hit is in a new host.
        let engine = bare_engine(false)?;
        time_batch!(bare_disk_hit, 1, bare_deserialize(&engine, &artifact)?);
    }

    let hosts_built = 2 + plan.disk_hits;
    let leaked_tickers = threads_named("xcs-epoch");

    Ok(Results {
        xcs_call: xcs_samples,
        bare_call: bare_samples,
        old_bare_call: old_samples,
        reused_call: reused_samples,
        minimal_call: minimal_samples,
        faults,
        memory_reset,
        compile,
        memory_hit,
        memory_hit_path,
        disk_populate,
        disk_hit,
        bare_disk_hit,
        hosts_built,
        leaked_tickers,
    })
}

/// How many threads of this process are named `name` (Linux only; 0
/// elsewhere).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| {
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    })
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
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

fn print_report(plan: &Plan, bytes: &[u8], results: &Results) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("# xcs call benchmark");
    println!();
    println!("- machine: {cores} cores (nproc), {}", cpu_model());
    println!(
        "- kernel {}, load average {} (at the end of the run)",
        first_line("/proc/sys/kernel/osrelease"),
        first_line("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("- xcs sandbox reset: {}", results.memory_reset);
    println!(
        "- operator: noop ({} bytes), wasmtime 48, same engine settings on both sides",
        bytes.len()
    );
    println!(
        "- calls: {} interleaved rounds × {} calls per variant; medians of batch means (p25–p75)",
        plan.call_rounds, plan.calls_per_batch
    );
    println!(
        "- loads: {} compiles, {} × {} in-memory hits, {} on-disk hits (each in a new host)",
        plan.compiles, plan.memory_hit_rounds, plan.calls_per_batch, plan.disk_hits
    );
    println!(
        "- xcs hosts built and dropped: {}; their `xcs-epoch` ticker threads still running: {}",
        results.hosts_built, results.leaked_tickers
    );
    println!();
    println!("| measurement | median | ratio vs baseline |");
    println!("|---|---|---|");
    let bare = results.bare_call.median();
    let row = |name: &str, samples: &Samples, ratio: String| {
        println!("| {name} | {} | {ratio} |", samples.summary());
    };
    let [xcs_faults, bare_faults, old_faults] = results.faults;
    row(
        &format!(
            "bare wasmtime call: fresh store + instantiate + invoke, best settings ({bare_faults:.2} page faults per call)"
        ),
        &results.bare_call,
        "1.00 (baseline)".into(),
    );
    let xcs = results.xcs_call.median();
    row(
        &format!(
            "xcs `Operator::call(&json!([]))`, fresh sandbox ({xcs_faults:.2} page faults per call)"
        ),
        &results.xcs_call,
        format!(
            "**{:.2}** (target ≤ 1.10; ≤ 10 µs: {xcs:.2} µs)",
            xcs / bare
        ),
    );
    let old = results.old_bare_call.median();
    row(
        &format!(
            "bare wasmtime call, the old settings: no `PAGEMAP_SCAN`, nothing kept resident ({old_faults:.2} page faults per call)"
        ),
        &results.old_bare_call,
        format!(
            "{:.2} (xcs is {:.2}× faster; target ≥ 2×)",
            old / bare,
            old / xcs
        ),
    );
    row(
        "bare wasmtime call of a minimal component: one core module, no imports (reference: the floor of the component's shape)",
        &results.minimal_call,
        format!("{:.2}", results.minimal_call.median() / bare),
    );
    row(
        "bare wasmtime call on a reused instance (reference)",
        &results.reused_call,
        format!("{:.3}", results.reused_call.median() / bare),
    );
    let compile = results.compile.median();
    let load_ratio = |samples: &Samples, target: &str| {
        let median = samples.median();
        format!(
            "{:.5} ({:.0}× faster{target})",
            median / compile,
            compile / median
        )
    };
    row(
        "`Component::from_binary`, fresh compile, no cache",
        &results.compile,
        "1.00 (baseline)".into(),
    );
    row(
        "`Host::load_bytes`, in-memory hit (sha256 + lookup)",
        &results.memory_hit,
        load_ratio(&results.memory_hit, "; target ≥ 50×"),
    );
    row(
        "`Host::load(path)`, in-memory hit (+ file read)",
        &results.memory_hit_path,
        load_ratio(&results.memory_hit_path, ""),
    );
    row(
        "`Host::load_bytes`, on-disk cache hit in a new host",
        &results.disk_hit,
        load_ratio(&results.disk_hit, "; target ≥ 50×"),
    );
    row(
        "bare `Component::deserialize` of a precompiled file in a new engine, unchecked (reference)",
        &results.bare_disk_hit,
        load_ratio(&results.bare_disk_hit, ""),
    );
    row(
        "`Host::load_bytes`, cold (compile + write disk cache), 1 run",
        &results.disk_populate,
        format!("{:.2}", results.disk_populate.median() / compile),
    );
}

fn run() -> Result<()> {
    let plan = Plan::from_env();
    let bytes =
        std::fs::read(xcs_tests::NOOP).with_context(|| format!("reading {}", xcs_tests::NOOP))?;
    let cache_dir: PathBuf =
        std::env::temp_dir().join(format!("xcs-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);
    let _ = std::fs::remove_file(cache_dir.with_extension("key"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let results = runtime.block_on(measure(&plan, &bytes, &cache_dir));
    // The cache directory is ours alone; remove it whatever happened.
    let _ = std::fs::remove_dir_all(&cache_dir);
    let _ = std::fs::remove_file(cache_dir.with_extension("key"));
    print_report(&plan, &bytes, &results?);
    print_throughput(&throughput(&bytes)?);
    Ok(())
}

/// Calls in flight at once in the throughput runs.
const IN_FLIGHT: [usize; 3] = [2, 8, 32];

/// Isolated `noop` calls per second with 2, 8 and 32 in flight, on a
/// multi-threaded runtime with a worker per core: the median of 5 runs.
fn throughput(bytes: &[u8]) -> Result<Vec<(usize, f64)>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the multi-threaded runtime")?;
    let calls = if common::quick() { 2_000 } else { 50_000 };
    runtime.block_on(async {
        let host = Host::builder()
            .no_disk_cache()
            .default_policy(Policy::new().cache(false))
            .build()?;
        let noop = host.load_bytes(bytes.to_vec(), "noop.wasm").await?;
        let mut figures = Vec::new();
        for in_flight in IN_FLIGHT {
            let mut rates = Samples::default();
            for _ in 0..5 {
                let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(calls));
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..in_flight {
                    let (noop, left) = (noop.clone(), left.clone());
                    tasks.spawn(async move {
                        let (input, limits) = (json!([]), Limits::default());
                        while left
                            .fetch_update(
                                std::sync::atomic::Ordering::Relaxed,
                                std::sync::atomic::Ordering::Relaxed,
                                |left| left.checked_sub(1),
                            )
                            .is_ok()
                        {
                            xcs_call(&noop, &input, &limits).await?;
                        }
                        Ok::<(), wasmtime::Error>(())
                    });
                }
                while let Some(joined) = tasks.join_next().await {
                    joined.map_err(|error| wasmtime::Error::msg(error.to_string()))??;
                }
                // Samples holds µs per operation; the rate is its inverse.
                rates.push(started.elapsed(), calls);
            }
            figures.push((in_flight, 1e6 / rates.median()));
        }
        Ok(figures)
    })
}

fn print_throughput(figures: &[(usize, f64)]) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!("Throughput, isolated `noop` calls, {cores} worker threads, median of 5 runs:");
    println!();
    println!("| in flight | calls per second |");
    println!("|---|---|");
    for (in_flight, rate) in figures {
        println!("| {in_flight} | {rate:.0} |");
    }
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
