//! What every call needs and [`Host`](crate::Host) shares with the
//! operators it loaded: the engine (pooling allocator, epoch interruption,
//! fuel), the on-disk compilation cache, the linker with WASI, the
//! contract's host interface and the granted capabilities, the epoch
//! ticker, the instance and scheduler slots, the result cache, metrics and
//! per-operator policies.
//!
//! Operators hold the runtime, not the host: a dropped host frees its
//! cache of loaded operators, and the ticker stops with the last operator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capability::Capability;
use crate::disk_cache::DiskCache;
use crate::error::Error;
use crate::grants::{Grants, GrantsTable};
use crate::limits::{Limits, LoadLimits};
use crate::metrics::Metrics;
use crate::policy::{CachedResult, Installed, Policy, ResultKey};
use crate::slots::Slots;
use crate::store::{LogSink, StoreState, bindings};
use crate::turns::Turns;

/// How the pool returns a used sandbox to its initial state between calls
/// ([`Host::memory_reset`](crate::Host::memory_reset)).
///
/// Every call gets fresh memory; what differs is the cost. Returning
/// pages to the kernel (`madvise`) makes the next call fault them back in;
/// with Linux's `PAGEMAP_SCAN` (kernel 6.7 or later) the pool finds the
/// pages a call dirtied and resets them in place, so they stay resident
/// and the next call takes no fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryReset {
    /// Whether `PAGEMAP_SCAN` finds the dirty pages.
    pub pagemap_scan: bool,
    /// Bytes at the start of each linear memory reset in place (and kept
    /// resident) instead of returned to the kernel; 0 without
    /// `pagemap_scan`, where resetting in place would clear every page,
    /// dirty or not.
    pub memory_keep_resident: usize,
    /// The same for each table.
    pub table_keep_resident: usize,
}

impl std::fmt::Display for MemoryReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pagemap_scan {
            write!(f, "dirty pages reset in place (PAGEMAP_SCAN)")?;
        } else {
            write!(f, "pages returned to the kernel (madvise)")?;
        }
        write!(
            f,
            ", {} KiB of memory and {} KiB of tables kept resident",
            self.memory_keep_resident >> 10,
            self.table_keep_resident >> 10
        )
    }
}

/// Whether this system has `PAGEMAP_SCAN` (asked once).
fn pagemap_scan_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(PoolingAllocationConfig::is_pagemap_scan_available)
}

/// Used sandbox slots the pool keeps warm (wasmtime's default): each holds
/// at most its keep-resident bytes of memory and tables.
const MAX_WARM_SLOTS: u32 = 100;

/// Everything a runtime is built from: what
/// [`HostBuilder`](crate::HostBuilder) collects, each setting documented
/// (with its default) on the builder's method of the same name.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) default_limits: Limits,
    pub(crate) load_limits: LoadLimits,
    pub(crate) consume_fuel: bool,
    pub(crate) epoch_tick: Duration,
    pub(crate) max_concurrent_instances: u32,
    pub(crate) max_tables_per_component: u32,
    pub(crate) max_memories_per_component: u32,
    pub(crate) max_concurrency: usize,
    pub(crate) max_running_guests: usize,
    pub(crate) max_memory_bytes_per_instance: u64,
    pub(crate) max_wasm_stack: usize,
    pub(crate) pagemap_scan: bool,
    pub(crate) memory_keep_resident: usize,
    pub(crate) table_keep_resident: usize,
    /// The on-disk compilation cache and the file of its key, resolved;
    /// vetted when the runtime is built.
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) cache_key_file: Option<PathBuf>,
    pub(crate) disk_cache_bytes: u64,
    pub(crate) capabilities: Vec<Capability>,
    /// Grants of every operator, and more by operator name or digest.
    pub(crate) grants: GrantsTable,
    /// Whether an operator importing `wasi:http/outgoing-handler` without
    /// an HTTP grant is refused at load.
    pub(crate) refuse_ungranted_http: bool,
    pub(crate) log_sink: Option<LogSink>,
    pub(crate) policies: HashMap<String, Policy>,
    pub(crate) default_policy: Policy,
    pub(crate) result_cache_bytes: u64,
    pub(crate) result_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_limits: Limits::default(),
            load_limits: LoadLimits::default(),
            consume_fuel: true,
            epoch_tick: Duration::from_millis(10),
            max_concurrent_instances: 1000,
            max_tables_per_component: 16,
            max_memories_per_component: 1,
            max_concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            max_running_guests: std::thread::available_parallelism().map_or(1, usize::from),
            max_memory_bytes_per_instance: 4 << 30,
            max_wasm_stack: 512 << 10,
            pagemap_scan: true,
            memory_keep_resident: 1 << 20,
            table_keep_resident: 64 << 10,
            cache_dir: None,
            cache_key_file: None,
            disk_cache_bytes: 1 << 30,
            capabilities: Vec::new(),
            grants: GrantsTable::default(),
            refuse_ungranted_http: true,
            log_sink: None,
            policies: HashMap::new(),
            default_policy: Policy::default(),
            result_cache_bytes: 64 << 20,
            result_ttl: Duration::from_secs(600),
        }
    }
}

impl Settings {
    /// Instance slots of the pool (at least one).
    fn slots(&self) -> u32 {
        self.max_concurrent_instances.max(1)
    }

    /// Tables one component may create, within [1, 10,000].
    pub(crate) fn max_tables_per_component(&self) -> u32 {
        self.max_tables_per_component.clamp(1, 10_000)
    }

    /// Linear memories one component may define, within [1, 1,000].
    pub(crate) fn max_memories_per_component(&self) -> u32 {
        self.max_memories_per_component.clamp(1, 1000)
    }

    /// How used sandboxes are reset: in place where `PAGEMAP_SCAN` is
    /// available and wanted, else by returning pages to the kernel.
    pub(crate) fn memory_reset(&self) -> MemoryReset {
        let pagemap_scan = self.pagemap_scan && pagemap_scan_available();
        MemoryReset {
            pagemap_scan,
            memory_keep_resident: if pagemap_scan {
                self.memory_keep_resident
            } else {
                0
            },
            table_keep_resident: self.table_keep_resident,
        }
    }

    /// The engine configuration: the pooling allocator sized for
    /// [`Settings::slots`] sandboxes, epoch interruption, fuel, stack
    /// limits, the way used sandboxes are reset ([`Settings::memory_reset`]).
    pub(crate) fn engine_config(&self) -> Result<Config, Error> {
        let slots = self.slots();
        // The pool admits what the default limits allow: a component of
        // `max_instances` core instances loads (a call's own, lower
        // `Limits::max_instances` still applies to it).
        let core_instances =
            u32::try_from(self.default_limits.max_instances.clamp(1, 10_000)).unwrap_or(10_000);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(slots)
            .total_memories(slots.saturating_mul(self.max_memories_per_component()))
            .total_tables(slots.saturating_mul(self.max_tables_per_component()))
            .total_core_instances(slots.saturating_mul(core_instances))
            .total_stacks(slots)
            .max_memory_size(
                usize::try_from(self.max_memory_bytes_per_instance).unwrap_or(usize::MAX),
            )
            .table_elements(
                usize::try_from(self.default_limits.max_table_elements).unwrap_or(usize::MAX),
            )
            .max_core_instances_per_component(core_instances)
            .max_tables_per_component(self.max_tables_per_component())
            .max_tables_per_module(self.max_tables_per_component())
            .max_memories_per_component(self.max_memories_per_component())
            .max_memories_per_module(self.max_memories_per_component());
        let reset = self.memory_reset();
        pooling
            .pagemap_scan(if reset.pagemap_scan {
                Enabled::Yes
            } else {
                Enabled::No
            })
            .linear_memory_keep_resident(reset.memory_keep_resident)
            .table_keep_resident(reset.table_keep_resident)
            .max_unused_warm_slots(MAX_WARM_SLOTS.min(slots));

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .epoch_interruption(true)
            .consume_fuel(self.consume_fuel)
            .max_wasm_stack(self.max_wasm_stack)
            .async_stack_size(self.max_wasm_stack.saturating_add(1 << 20));
        Ok(config)
    }
}

fn config_error(what: &str, error: &wasmtime::Error) -> Error {
    Error::Config {
        message: format!("{what}: {error:#}"),
    }
}

/// What calls need, shared by the host and every operator it loaded.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) default_limits: Limits,
    pub(crate) load_limits: LoadLimits,
    pub(crate) consume_fuel: bool,
    pub(crate) max_wasm_stack: usize,
    pub(crate) memory_reset: MemoryReset,
    /// The pool's ceiling on one linear memory.
    pub(crate) max_memory_bytes_per_instance: u64,
    /// The interfaces the embedder granted.
    pub(crate) granted: Vec<String>,
    /// Grants of every operator, and more by operator name or digest.
    grants: GrantsTable,
    pub(crate) refuse_ungranted_http: bool,
    pub(crate) log_sink: Option<LogSink>,
    /// One per sandbox the pool can hold; a call waits for one.
    pub(crate) instance_slots: Slots,
    pub(crate) max_concurrent_instances: u32,
    /// The host-wide bound on graph-node guests.
    pub(crate) max_concurrency: usize,
    pub(crate) scheduler_slots: Slots,
    /// Turns on the processor: guests executing at once.
    pub(crate) turns: Turns,
    /// Composites whose code runs at once (traced or staged): half the
    /// pool, so that they, who hold their slot while they wait for values,
    /// never take every slot from the calls they wait for.
    pub(crate) composite_slots: Slots,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) results: moka::future::Cache<ResultKey, CachedResult>,
    pub(crate) result_ttl: Duration,
    /// Compiled components, authenticated, by digest (`None`: off, or
    /// not usable).
    pub(crate) disk_cache: Option<DiskCache>,
    /// Components compiled (loads answered neither by the host's cache
    /// nor by the disk cache).
    pub(crate) compilations: AtomicU64,
    policies: RwLock<HashMap<String, Arc<Installed>>>,
    default_policy: Arc<Installed>,
    ticker: Ticker,
}

impl Runtime {
    /// The grants of the operator named `name` with `digest`
    /// (`sha256:…`): the default ones, then those for its name, then those
    /// for its digest (a variable in more than one takes the last value);
    /// `None` when nothing is granted; a `config` error when together they
    /// grant one guest path twice.
    pub(crate) fn grants_of(&self, name: &str, digest: &str) -> Result<Option<Arc<Grants>>, Error> {
        let table = &self.grants;
        let mut grants = table.default.clone();
        for key in [name, digest] {
            if let Some(own) = table.by_operator.get(key) {
                grants = grants.and(own);
            }
        }
        if grants.is_empty() {
            return Ok(None);
        }
        grants.check(&format!("`{name}` ({digest})"))?;
        Ok(Some(Arc::new(grants)))
    }

    /// Builds the engine and the linker and starts the epoch ticker.
    pub(crate) fn new(mut settings: Settings) -> Result<Runtime, Error> {
        let engine = Engine::new(&settings.engine_config()?)
            .map_err(|error| config_error("engine", &error))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| config_error("wasi", &error))?;
        crate::store::add_io_to_linker(&mut linker)
            .map_err(|error| config_error("wasi:io", &error))?;
        crate::store::add_http_to_linker(&mut linker)
            .map_err(|error| config_error("wasi:http", &error))?;
        bindings::Composite::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|error| config_error("host interface", &error))?;
        let mut granted = Vec::new();
        for capability in &settings.capabilities {
            let mut instance = linker
                .instance(&capability.interface)
                .map_err(|error| config_error(&capability.interface, &error))?;
            for (name, register) in &capability.functions {
                register(&mut instance).map_err(|error| {
                    config_error(&format!("{}#{name}", capability.interface), &error)
                })?;
            }
            granted.push(capability.interface.clone());
        }

        let disk_cache = settings.cache_dir.as_deref().and_then(|dir| {
            let Some(key_file) = settings.cache_key_file.as_deref() else {
                tracing::warn!(
                    target: "xcs::cache",
                    "not using the compilation cache {}: no place for its key (set {} or HOME)",
                    dir.display(),
                    crate::disk_cache::CACHE_KEY_FILE_ENV,
                );
                return None;
            };
            DiskCache::open(dir, key_file, &engine, settings.disk_cache_bytes)
                .map_err(|problem| {
                    tracing::warn!(
                        target: "xcs::cache",
                        "not using the compilation cache {}: {problem}",
                        dir.display()
                    );
                })
                .ok()
        });
        let ticker = Ticker::start(&engine, settings.epoch_tick)?;
        let metrics = Arc::new(Metrics::default());
        let results = moka::future::Cache::builder()
            .max_capacity(settings.result_cache_bytes)
            .weigher(|key: &ResultKey, (_, value): &CachedResult| key.weight(value))
            .time_to_live(settings.result_ttl)
            .eviction_listener({
                let metrics = metrics.clone();
                move |key: Arc<ResultKey>, _value, cause: moka::notification::RemovalCause| {
                    if cause.was_evicted() {
                        metrics.eviction(&key.operator);
                    }
                }
            })
            .build();
        let mut grants = std::mem::take(&mut settings.grants);
        // Variables granted by name take their values now.
        grants.default = grants.default.resolved()?;
        for own in grants.by_operator.values_mut() {
            *own = std::mem::take(own).resolved()?;
        }
        grants.default.check("every operator")?;
        for (key, own) in &grants.by_operator {
            grants.default.clone().and(own).check(&format!("`{key}`"))?;
        }
        let slots = settings.slots();
        let memory_reset = settings.memory_reset();
        Ok(Runtime {
            grants,
            refuse_ungranted_http: settings.refuse_ungranted_http,
            engine,
            linker,
            default_limits: settings.default_limits,
            load_limits: settings.load_limits,
            consume_fuel: settings.consume_fuel,
            max_wasm_stack: settings.max_wasm_stack,
            memory_reset,
            max_memory_bytes_per_instance: settings.max_memory_bytes_per_instance,
            granted,
            log_sink: settings.log_sink,
            instance_slots: Slots::new(slots as usize),
            max_concurrent_instances: slots,
            max_concurrency: settings.max_concurrency,
            scheduler_slots: Slots::new(settings.max_concurrency),
            turns: Turns::new(settings.max_running_guests),
            composite_slots: Slots::new((slots as usize / 2).max(1)),
            metrics,
            results,
            result_ttl: settings.result_ttl,
            disk_cache,
            compilations: AtomicU64::new(0),
            policies: RwLock::new(
                settings
                    .policies
                    .into_iter()
                    .map(|(name, policy)| (name, Arc::new(Installed::new(policy))))
                    .collect(),
            ),
            default_policy: Arc::new(Installed::new(settings.default_policy)),
            ticker,
        })
    }

    /// Sets the policy of the operator called `name`.
    pub(crate) fn set_policy(&self, name: &str, policy: Policy) {
        let mut policies = self
            .policies
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        policies.insert(name.to_owned(), Arc::new(Installed::new(policy)));
    }

    /// The policy of the operator called `name`.
    pub(crate) fn policy_for(&self, name: &str) -> Arc<Installed> {
        let policies = self
            .policies
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        policies.get(name).unwrap_or(&self.default_policy).clone()
    }

    pub(crate) fn count_compilation(&self) {
        self.compilations.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// The thread that advances the engine's epoch every tick.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> Result<Ticker, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("xcs-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(tick);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                }
            })
            .map_err(|source| Error::io("<epoch ticker thread>", source))?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only sleeps and ticks; a panic there is a bug of
            // ours that must not take the embedder down with it on drop.
            let _ = thread.join();
        }
    }
}
