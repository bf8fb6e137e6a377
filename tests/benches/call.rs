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

/// The call variants, interleaved within every round.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// xcs, the lean `noop` (one core module, one core instance, no WASI; `panic_hook = false`).
    XcsLean,
    /// xcs, `noop` built for wasip2 (the default wasip2 build).
    XcsWasi,
    /// Bare wasmtime, best settings, the lean `noop`.
    BareLean,
    /// Bare wasmtime, best settings, `noop` built for wasip2.
    BareWasi,
    /// Bare wasmtime, the settings before in-place resets, `noop` built for wasip2.
    OldWasi,
    /// Bare wasmtime, a minimal hand-written component.
    Minimal,
    /// Bare wasmtime, one reused instance of `noop` built for wasip2.
    Reused,
    /// Extism 1.30, a fresh plugin from a compiled one per call.
    ExtismFresh,
    /// Extism 1.30, one reused plugin.
    ExtismReused,
}

const VARIANTS: [Variant; 9] = [
    Variant::XcsLean,
    Variant::XcsWasi,
    Variant::BareLean,
    Variant::BareWasi,
    Variant::OldWasi,
    Variant::Minimal,
    Variant::Reused,
    Variant::ExtismFresh,
    Variant::ExtismReused,
];

/// One variant's batch means and the minor page faults of its batches.
#[derive(Default)]
struct Timed {
    samples: Samples,
    faults: u64,
}

impl Timed {
    fn faults_per_call(&self, calls: usize) -> f64 {
        self.faults as f64 / calls as f64
    }
}

/// The Extism peer: `tests/peer-extism`, its own process (its wasmtime is
/// not ours), driven over its stdin one batch at a time.
struct Peer {
    child: std::process::Child,
    commands: std::process::ChildStdin,
    answers: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Peer {
    /// Starts the binary that `XCS_PEER_EXTISM` names (`just bench` builds
    /// it and sets it); `None` when unset.
    fn start() -> Result<Option<Peer>> {
        use std::io::BufRead;
        let Some(path) = std::env::var_os("XCS_PEER_EXTISM") else {
            return Ok(None);
        };
        let mut child = std::process::Command::new(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the Extism peer {}", Path::new(&path).display()))?;
        let commands = child.stdin.take().context("the peer's stdin")?;
        let answers =
            std::io::BufReader::new(child.stdout.take().context("the peer's stdout")?).lines();
        Ok(Some(Peer {
            child,
            commands,
            answers,
        }))
    }

    /// Runs `calls` calls of `what` (`fresh` or `reused`) in the peer and
    /// records their mean.
    fn batch(&mut self, what: &str, calls: usize, samples: &mut Samples) -> Result<()> {
        use std::io::Write;
        writeln!(self.commands, "{what} {calls}")?;
        self.commands.flush()?;
        let answer = self
            .answers
            .next()
            .context("the Extism peer exited (its stderr says why)")??;
        let nanos = answer
            .trim()
            .parse::<u64>()
            .with_context(|| format!("the Extism peer answered {answer:?}"))?;
        samples.push(std::time::Duration::from_nanos(nanos), calls);
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Between batches it only waits on its stdin: nothing to lose.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Results {
    /// Per variant, in the order of [`VARIANTS`] (`variant as usize`).
    calls: Vec<Timed>,
    /// Calls per variant.
    calls_per_variant: usize,
    /// Whether the Extism peer ran.
    peer: bool,
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

async fn measure(plan: &Plan, lean: &[u8], wasi: &[u8], cache_dir: &Path) -> Result<Results> {
    // The xcs side: a default host without the disk cache (the user's
    // cache directory is left alone), default limits.
    // A fresh sandbox every call: the result cache would answer `noop` (it is
    // deterministic) without running it.
    let host = Host::builder()
        .no_disk_cache()
        .default_policy(Policy::new().cache(false))
        .build()?;
    let noop = host.load_bytes(lean.to_vec(), "noop.wasm").await?;
    let noop_wasi = host.load_bytes(wasi.to_vec(), "noop-wasip2.wasm").await?;
    let limits = Limits::default();
    let input = json!([]);

    let bare_lean = Bare::new(bare_engine(false)?, lean)?;
    let bare = Bare::new(bare_engine(false)?, wasi)?;
    let old_bare = Bare::new(bare_engine(true)?, wasi)?;
    // The floor set by the component's shape: one core module, one
    // memory, no imports, an `invoke` that returns `ok`.
    let minimal = Bare::new(bare_engine(false)?, &wat::parse_str(MINIMAL_COMPONENT)?)?;
    let mut reused_store = bare.store()?;
    let reused_instance = bare.pre.instantiate_async(&mut reused_store).await?;
    let mut peer = Peer::start()?;

    // Sanity and warm-up: every variant returns `ok` and has touched its
    // pool slots before timing starts.
    for _ in 0..plan.calls_per_batch.max(50) {
        xcs_call(&noop, &input, &limits).await?;
        xcs_call(&noop_wasi, &input, &limits).await?;
        let results = [
            bare_lean.call_fresh().await?,
            bare.call_fresh().await?,
            old_bare.call_fresh().await?,
            invoke(&mut reused_store, reused_instance, &bare.invoke).await?,
            minimal.call_fresh().await?,
        ];
        for result in results {
            if !matches!(result, Val::Result(Ok(None))) {
                bail!("bare `invoke` returned {result:?}, expected ok");
            }
        }
    }

    let batch = plan.calls_per_batch;
    let mut calls: Vec<Timed> = VARIANTS.iter().map(|_| Timed::default()).collect();
    for round in 0..plan.call_rounds {
        for offset in 0..VARIANTS.len() {
            let variant = VARIANTS[(round + offset) % VARIANTS.len()];
            let timed = &mut calls[variant as usize];
            let (samples, faults) = (&mut timed.samples, &mut timed.faults);
            match variant {
                Variant::XcsLean => {
                    time_batch!(
                        samples,
                        *faults,
                        batch,
                        xcs_call(&noop, &input, &limits).await?
                    )
                }
                Variant::XcsWasi => time_batch!(
                    samples,
                    *faults,
                    batch,
                    xcs_call(&noop_wasi, &input, &limits).await?
                ),
                Variant::BareLean => {
                    time_batch!(samples, *faults, batch, bare_lean.call_fresh().await?)
                }
                Variant::BareWasi => time_batch!(samples, *faults, batch, bare.call_fresh().await?),
                Variant::OldWasi => {
                    time_batch!(samples, *faults, batch, old_bare.call_fresh().await?)
                }
                Variant::Minimal => time_batch!(samples, batch, minimal.call_fresh().await?),
                Variant::Reused => time_batch!(
                    samples,
                    batch,
                    invoke(&mut reused_store, reused_instance, &bare.invoke).await?
                ),
                Variant::ExtismFresh | Variant::ExtismReused => {
                    if let Some(peer) = peer.as_mut() {
                        let what = if variant == Variant::ExtismFresh {
                            "fresh"
                        } else {
                            "reused"
                        };
                        peer.batch(what, batch, samples)?;
                    }
                }
            };
        }
    }
    let calls_per_variant = plan.call_rounds * batch;
    let peer_ran = peer.is_some();
    drop(peer);
    let peer = peer_ran;
    let memory_reset = host.memory_reset();
    drop(reused_store);
    // Loads are measured on the default build, the larger of the two.
    let bytes = wasi;

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
            host.load_bytes(copy, "noop-wasip2.wasm").await?;
        }
        memory_hit.push(started.elapsed(), batch);
        time_batch!(
            memory_hit_path,
            batch,
            host.load(xcs_tests::NOOP_WASIP2).await?
        );
    }
    drop((noop, noop_wasi));
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
            populating
                .load_bytes(bytes.to_vec(), "noop-wasip2.wasm")
                .await?
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
        fresh_host.load_bytes(copy, "noop-wasip2.wasm").await?;
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
        calls,
        calls_per_variant,
        peer,
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

fn print_report(plan: &Plan, lean: &[u8], wasi: &[u8], results: &Results) {
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
        "- operators: noop, lean ({} bytes), and noop built for wasip2 ({} bytes; also the loads' component); wasmtime 48, same engine settings on both sides",
        lean.len(),
        wasi.len()
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
    let row = |name: &str, samples: &Samples, ratio: String| {
        println!("| {name} | {} | {ratio} |", samples.summary());
    };
    let per_call = results.calls_per_variant;
    let timed = |variant: Variant| &results.calls[variant as usize];
    let median = |variant| timed(variant).samples.median();
    let faults = |variant| timed(variant).faults_per_call(per_call);
    let (bare_lean, bare, old) = (
        median(Variant::BareLean),
        median(Variant::BareWasi),
        median(Variant::OldWasi),
    );
    let (xcs_lean, xcs) = (median(Variant::XcsLean), median(Variant::XcsWasi));
    row(
        &format!(
            "bare wasmtime call of the lean `noop` (one core module, one core instance, no WASI; `panic_hook = false`): fresh store + instantiate + invoke, best settings ({:.2} page faults per call)",
            faults(Variant::BareLean)
        ),
        &timed(Variant::BareLean).samples,
        "1.00 (baseline of the lean rows)".into(),
    );
    row(
        &format!(
            "xcs `Operator::call(&json!([]))` of the lean `noop`, fresh sandbox ({:.2} page faults per call)",
            faults(Variant::XcsLean)
        ),
        &timed(Variant::XcsLean).samples,
        format!(
            "**{:.2}** (target ≤ 1.10; ≤ 10 µs: {xcs_lean:.2} µs)",
            xcs_lean / bare_lean
        ),
    );
    row(
        &format!(
            "bare wasmtime call of `noop` built for wasip2 (the default build: 3 core modules, 17 core instances, WASI stdio), best settings ({:.2} page faults per call)",
            faults(Variant::BareWasi)
        ),
        &timed(Variant::BareWasi).samples,
        "1.00 (baseline of the wasip2 rows)".into(),
    );
    row(
        &format!(
            "xcs call of `noop` built for wasip2, fresh sandbox ({:.2} page faults per call)",
            faults(Variant::XcsWasi)
        ),
        &timed(Variant::XcsWasi).samples,
        format!(
            "**{:.2}** (the lean build is {:.2}× faster through xcs)",
            xcs / bare,
            xcs / xcs_lean
        ),
    );
    row(
        &format!(
            "bare wasmtime call of `noop` built for wasip2, the old settings: no `PAGEMAP_SCAN`, nothing kept resident ({:.2} page faults per call)",
            faults(Variant::OldWasi)
        ),
        &timed(Variant::OldWasi).samples,
        format!(
            "{:.2} (xcs is {:.2}× faster with the lean build, {:.2}× with the wasip2 one; target ≥ 2×)",
            old / bare,
            old / xcs_lean,
            old / xcs
        ),
    );
    row(
        "bare wasmtime call of a minimal component: one core module, no imports (reference: the floor of the component's shape)",
        &timed(Variant::Minimal).samples,
        format!("{:.2}", median(Variant::Minimal) / bare),
    );
    row(
        "bare wasmtime call on a reused instance of `noop` built for wasip2 (reference, not isolated)",
        &timed(Variant::Reused).samples,
        format!("{:.3}", median(Variant::Reused) / bare),
    );
    if results.peer {
        let extism = median(Variant::ExtismFresh);
        row(
            "Extism 1.30 call on a plugin freshly instantiated from a `CompiledPlugin` (its isolation; own process, its own wasmtime 43)",
            &timed(Variant::ExtismFresh).samples,
            format!(
                "{:.2} (xcs's lean call is **{:.1}× faster**, target ≥ 15×; the wasip2 one {:.1}×)",
                extism / bare,
                extism / xcs_lean,
                extism / xcs
            ),
        );
        row(
            "Extism 1.30 call on one reused plugin (reference, not isolated)",
            &timed(Variant::ExtismReused).samples,
            format!("{:.3}", median(Variant::ExtismReused) / bare),
        );
    } else {
        println!(
            "| Extism 1.30 (not measured: `just bench` builds tests/peer-extism and sets XCS_PEER_EXTISM) | | |"
        );
    }
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
    let read = |path: &str| std::fs::read(path).with_context(|| format!("reading {path}"));
    let (lean, wasi) = (read(xcs_tests::NOOP)?, read(xcs_tests::NOOP_WASIP2)?);
    let cache_dir: PathBuf =
        std::env::temp_dir().join(format!("xcs-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);
    let _ = std::fs::remove_file(cache_dir.with_extension("key"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let results = runtime.block_on(measure(&plan, &lean, &wasi, &cache_dir));
    // The cache directory is ours alone; remove it whatever happened.
    let _ = std::fs::remove_dir_all(&cache_dir);
    let _ = std::fs::remove_file(cache_dir.with_extension("key"));
    print_report(&plan, &lean, &wasi, &results?);
    print_builds(&runtime.block_on(builds(&plan))?);
    print_throughput(&throughput(&lean)?);
    Ok(())
}

/// The lean operators, each with an input, a lean and a wasip2 build.
const BUILDS: [(&str, &str, &str); 3] = [
    ("noop", xcs_tests::NOOP, xcs_tests::NOOP_WASIP2),
    ("upper", xcs_tests::UPPER, xcs_tests::UPPER_WASIP2),
    ("sum", xcs_tests::SUM, xcs_tests::SUM_WASIP2),
];

/// Fresh-sandbox xcs calls of each lean operator's two builds, interleaved:
/// `(name, lean, wasip2)` per operator.
async fn builds(plan: &Plan) -> Result<Vec<(&'static str, Samples, Samples)>> {
    let host = Host::builder()
        .no_disk_cache()
        .default_policy(Policy::new().cache(false))
        .build()?;
    let limits = Limits::default();
    let mut operators = Vec::new();
    for (name, lean, wasip2) in BUILDS {
        let input = match name {
            "noop" => json!([]),
            "upper" => json!(["hello, world"]),
            _ => json!([[1, 2, 3, 4, 5, 6, 7, 8]]),
        };
        let (lean, wasip2) = (host.load(lean).await?, host.load(wasip2).await?);
        ensure!(
            lean.call(&input, &limits).await? == wasip2.call(&input, &limits).await?,
            "the two builds of {name} disagree"
        );
        operators.push((name, input, lean, wasip2));
    }
    let batch = plan.calls_per_batch / 2;
    let mut samples: Vec<[Samples; 2]> = BUILDS.iter().map(|_| Default::default()).collect();
    for round in 0..plan.call_rounds / 2 {
        for offset in 0..operators.len() * 2 {
            let which = (round + offset) % (operators.len() * 2);
            let (_, input, lean, wasip2) = &operators[which / 2];
            let operator = if which % 2 == 0 { lean } else { wasip2 };
            let timed = &mut samples[which / 2][which % 2];
            time_batch!(timed, batch, operator.call(input, &limits).await?);
        }
    }
    Ok(operators
        .iter()
        .zip(samples)
        .map(|((name, ..), [lean, wasip2])| (*name, lean, wasip2))
        .collect())
}

fn print_builds(figures: &[(&str, Samples, Samples)]) {
    println!();
    println!(
        "Lean build against wasip2 build of the same operator, xcs fresh-sandbox calls, interleaved:"
    );
    println!();
    println!("| operator | lean | wasip2 | lean is faster by |");
    println!("|---|---|---|---|");
    for (name, lean, wasip2) in figures {
        println!(
            "| `{name}` | {} | {} | {:.2}× ({:.2} µs a call) |",
            lean.summary(),
            wasip2.summary(),
            wasip2.median() / lean.median(),
            wasip2.median() - lean.median()
        );
    }
}

/// Calls in flight at once in the throughput runs.
const IN_FLIGHT: [usize; 3] = [2, 8, 32];

/// Isolated calls of the lean `noop` per second with 2, 8 and 32 in flight, on a
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
    println!(
        "Throughput, isolated calls of the lean `noop`, {cores} worker threads, median of 5 runs:"
    );
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
