//! The host: one engine, one linker, one epoch ticker, shared by every
//! operator and every call.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use crate::call::{CachedResult, ResultKey};
use crate::capability::Capability;
use crate::error::Error;
use crate::limits::Limits;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::operator::{self, Operator};
use crate::policy::Policy;
use crate::sandbox::{LogRecord, LogSink, StoreState, bindings};

/// Environment variable naming the on-disk compilation cache directory.
pub const CACHE_DIR_ENV: &str = "XCS_CACHE_DIR";

/// Loads operators and runs their calls.
///
/// Cheap to clone (an `Arc`), `Send + Sync`: share one host across tasks
/// and threads. Build one with [`Host::builder`].
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("default_limits", &self.inner.runtime.default_limits)
            .field(
                "max_concurrent_instances",
                &self.inner.runtime.max_concurrent_instances,
            )
            .field("granted", &self.inner.runtime.granted)
            .finish_non_exhaustive()
    }
}

pub(crate) struct HostInner {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) operators: moka::future::Cache<[u8; 32], Operator>,
    pub(crate) compilations: AtomicU64,
}

/// What calls need, shared by the host and every operator it loaded (the
/// operators do not hold the host: a dropped host frees its cache of
/// loaded operators, and the ticker stops with the last operator).
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) default_limits: Limits,
    pub(crate) consume_fuel: bool,
    pub(crate) max_wasm_stack: usize,
    pub(crate) granted: Vec<String>,
    pub(crate) log_sink: Option<LogSink>,
    pub(crate) instance_slots: Arc<Semaphore>,
    pub(crate) max_concurrent_instances: u32,
    pub(crate) max_concurrency: usize,
    pub(crate) scheduler_slots: Arc<Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) results: moka::future::Cache<ResultKey, CachedResult>,
    pub(crate) result_ttl: Duration,
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    default_policy: RwLock<Arc<Policy>>,
    ticker: Ticker,
}

impl Runtime {
    pub(crate) fn set_policy(&self, name: &str, policy: Policy) {
        let mut policies = self
            .policies
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        policies.insert(name.to_owned(), Arc::new(policy));
    }

    /// The policy of the operator called `name`.
    pub(crate) fn policy_for(&self, name: &str) -> Arc<Policy> {
        let policies = self
            .policies
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match policies.get(name) {
            Some(policy) => policy.clone(),
            None => self
                .default_policy
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
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
            .map_err(|source| Error::Io {
                path: PathBuf::from("<epoch ticker thread>"),
                source,
            })?;
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

impl Host {
    /// A builder with every default (see [`HostBuilder`]).
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The limits used by [`Operator::call`] when the caller has none of
    /// its own.
    pub fn default_limits(&self) -> &Limits {
        &self.inner.runtime.default_limits
    }

    /// How many components this host has compiled: loads that were not
    /// answered by the in-memory cache of loaded operators. (A compilation
    /// answered by the on-disk cache still counts: it is fast, not free.)
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Sets the policies of the operator called `name` (its metadata name),
    /// for every call from now on, graph nodes included.
    pub fn set_policy(&self, name: &str, policy: Policy) {
        self.inner.runtime.set_policy(name, policy);
    }

    /// A snapshot of every operator's metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.runtime.metrics.snapshot()
    }

    /// Every operator's metrics in the Prometheus (OpenMetrics) text format.
    pub fn metrics_text(&self) -> String {
        self.inner.runtime.metrics.text()
    }

    /// Loads an operator from a `.wasm` file. See [`Host::load_bytes`].
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Operator, Error> {
        let path = path.as_ref();
        let bytes = tokio::fs::read(path).await.map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(bytes, &path.display().to_string()).await
    }

    /// Loads an operator from the bytes of a component; `source_name`
    /// names it in errors until its metadata is known.
    ///
    /// The component is validated, compiled (or fetched from the on-disk
    /// cache), checked against the `xcs:operator` contract, and asked for
    /// its metadata in a sandbox. Loading the same bytes again returns the
    /// operator already loaded, without compiling; concurrent loads of the
    /// same bytes compile once.
    pub async fn load_bytes(
        &self,
        bytes: impl Into<Vec<u8>>,
        source_name: &str,
    ) -> Result<Operator, Error> {
        let bytes = bytes.into();
        let digest = operator::digest(&bytes);
        let host = self.clone();
        let name = source_name.to_owned();
        self.inner
            .operators
            .try_get_with(digest, async move {
                operator::load(host, bytes, digest, name).await
            })
            .await
            .map_err(|shared: Arc<Error>| {
                // moka shares one error between every waiter; rebuild an
                // owned one that keeps the kind and the message.
                Arc::try_unwrap(shared).unwrap_or_else(|shared| operator::clone_error(&shared))
            })
    }
}

/// Configures a [`Host`]. Every setting has a documented default.
pub struct HostBuilder {
    default_limits: Limits,
    consume_fuel: bool,
    epoch_tick: Duration,
    max_concurrent_instances: u32,
    max_concurrency: usize,
    max_memory_bytes_per_instance: u64,
    max_wasm_stack: usize,
    cache_dir: CacheDir,
    operator_cache_capacity: u64,
    capabilities: Vec<Capability>,
    log_sink: Option<LogSink>,
    policies: HashMap<String, Arc<Policy>>,
    default_policy: Policy,
    result_cache_bytes: u64,
    result_ttl: Duration,
}

impl fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuilder")
            .field("default_limits", &self.default_limits)
            .field("consume_fuel", &self.consume_fuel)
            .field("epoch_tick", &self.epoch_tick)
            .field("max_concurrent_instances", &self.max_concurrent_instances)
            .field("max_wasm_stack", &self.max_wasm_stack)
            .field("cache_dir", &self.cache_dir)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum CacheDir {
    /// `XCS_CACHE_DIR`, else `$XDG_CACHE_HOME/xcs`, else `$HOME/.cache/xcs`.
    Default,
    Off,
    At(PathBuf),
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            default_limits: Limits::default(),
            consume_fuel: true,
            epoch_tick: Duration::from_millis(10),
            max_concurrent_instances: 1000,
            max_concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            max_memory_bytes_per_instance: 4 << 30,
            max_wasm_stack: 512 << 10,
            cache_dir: CacheDir::Default,
            operator_cache_capacity: 256,
            capabilities: Vec::new(),
            log_sink: None,
            policies: HashMap::new(),
            default_policy: Policy::default(),
            result_cache_bytes: 64 << 20,
            result_ttl: Duration::from_secs(600),
        }
    }
}

impl HostBuilder {
    /// Limits for calls that do not bring their own. Default:
    /// [`Limits::default()`].
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default_limits = limits;
        self
    }

    /// Whether guests consume fuel, which [`Limits::fuel`] budgets need.
    /// Costs a little speed. Default: on.
    pub fn consume_fuel(mut self, on: bool) -> Self {
        self.consume_fuel = on;
        self
    }

    /// How often the epoch advances: the precision of call deadlines, and
    /// how often a running guest yields to other tasks. Default: 10 ms.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick;
        self
    }

    /// How many sandboxes may exist at once: the size of wasmtime's
    /// pooling allocator. Calls beyond it wait for a slot. Default: 1000.
    pub fn max_concurrent_instances(mut self, count: u32) -> Self {
        self.max_concurrent_instances = count;
        self
    }

    /// How many graph-node guests run at once across every graph this host
    /// runs: the one scheduler bound. Default: the available parallelism.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }

    /// Address space reserved per linear memory in the pool: the ceiling
    /// of any call's [`Limits::max_memory_bytes`]. Default: 4 GiB.
    pub fn max_memory_bytes_per_instance(mut self, bytes: u64) -> Self {
        self.max_memory_bytes_per_instance = bytes;
        self
    }

    /// Wasm stack limit; deeper recursion is a `stack-overflow` error.
    /// Default: 512 KiB.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// Where compiled operators are cached on disk. Default: the
    /// directory in `XCS_CACHE_DIR`, else `$XDG_CACHE_HOME/xcs`, else
    /// `$HOME/.cache/xcs`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = CacheDir::At(dir.into());
        self
    }

    /// Turns the on-disk compilation cache off.
    pub fn no_disk_cache(mut self) -> Self {
        self.cache_dir = CacheDir::Off;
        self
    }

    /// How many loaded operators are kept in memory, keyed by content
    /// digest. Default: 256.
    pub fn operator_cache_capacity(mut self, count: u64) -> Self {
        self.operator_cache_capacity = count;
        self
    }

    /// Policies of the operator called `name` (see [`crate::policy`]).
    pub fn policy(mut self, name: &str, policy: Policy) -> Self {
        self.policies.insert(name.to_owned(), Arc::new(policy));
        self
    }

    /// Policies of operators without their own. Default: [`Policy::default()`]
    /// (no retry, breaker or bulkhead; result cache on).
    pub fn default_policy(mut self, policy: Policy) -> Self {
        self.default_policy = policy;
        self
    }

    /// Bound of the result cache, in bytes of keys and JSON results.
    /// Default: 64 MiB.
    pub fn result_cache_bytes(mut self, bytes: u64) -> Self {
        self.result_cache_bytes = bytes;
        self
    }

    /// How long a cached result is served. Default: 10 minutes.
    pub fn result_cache_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = crate::limits::capped(ttl);
        self
    }

    /// Grants a capability to every operator that imports it.
    pub fn grant(mut self, capability: Capability) -> Self {
        self.capabilities.push(capability);
        self
    }

    /// Receives every guest log message within the call's log budget (they
    /// also go to `tracing`, target `xcs::guest`).
    pub fn on_log(mut self, sink: impl Fn(&LogRecord<'_>) + Send + Sync + 'static) -> Self {
        self.log_sink = Some(Arc::new(sink));
        self
    }

    fn resolved_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            CacheDir::Off => None,
            CacheDir::At(dir) => Some(dir.clone()),
            CacheDir::Default => std::env::var_os(CACHE_DIR_ENV)
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("xcs"))
                })
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/xcs"))
                }),
        }
    }

    /// Builds the host: creates the engine (pooling allocator, epoch
    /// interruption, fuel, compilation cache), the linker, and starts the
    /// epoch ticker.
    pub fn build(self) -> Result<Host, Error> {
        let config_error = |what: &str, error: wasmtime::Error| Error::Config {
            message: format!("{what}: {error:#}"),
        };
        let slots = self.max_concurrent_instances.max(1);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(slots)
            .total_memories(slots)
            .total_tables(slots.saturating_mul(4))
            .total_core_instances(slots.saturating_mul(16))
            .total_stacks(slots)
            .max_memory_size(
                usize::try_from(self.max_memory_bytes_per_instance).unwrap_or(usize::MAX),
            )
            .table_elements(
                usize::try_from(self.default_limits.max_table_elements).unwrap_or(usize::MAX),
            )
            .max_core_instances_per_component(16)
            .max_tables_per_component(4);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .epoch_interruption(true)
            .consume_fuel(self.consume_fuel)
            .max_wasm_stack(self.max_wasm_stack)
            .async_stack_size(self.max_wasm_stack + (1 << 20));
        if let Some(dir) = self.resolved_cache_dir() {
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(&dir);
            let cache = Cache::new(cache_config)
                .map_err(|error| config_error("compilation cache", error))?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).map_err(|error| config_error("engine", error))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| config_error("wasi", error))?;
        bindings::Operator::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|error| config_error("host interface", error))?;
        let mut granted = Vec::new();
        for capability in &self.capabilities {
            let mut instance = linker
                .instance(&capability.interface)
                .map_err(|error| config_error(&capability.interface, error))?;
            for (name, register) in &capability.functions {
                register(&mut instance).map_err(|error| {
                    config_error(&format!("{}#{name}", capability.interface), error)
                })?;
            }
            granted.push(capability.interface.clone());
        }

        let ticker = Ticker::start(&engine, self.epoch_tick)?;
        let metrics = Arc::new(Metrics::default());
        let results = moka::future::Cache::builder()
            .max_capacity(self.result_cache_bytes)
            .weigher(|key: &ResultKey, (_, value): &CachedResult| {
                let bytes = key.key.len() + value.to_string().len();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_live(self.result_ttl)
            .eviction_listener({
                let metrics = metrics.clone();
                move |key: Arc<ResultKey>, _value, cause: moka::notification::RemovalCause| {
                    if cause.was_evicted() {
                        metrics.eviction(&key.operator);
                    }
                }
            })
            .build();
        Ok(Host {
            inner: Arc::new(HostInner {
                runtime: Arc::new(Runtime {
                    engine,
                    linker,
                    default_limits: self.default_limits,
                    consume_fuel: self.consume_fuel,
                    max_wasm_stack: self.max_wasm_stack,
                    granted,
                    log_sink: self.log_sink,
                    instance_slots: Arc::new(Semaphore::new(slots as usize)),
                    max_concurrent_instances: slots,
                    max_concurrency: self.max_concurrency,
                    scheduler_slots: Arc::new(Semaphore::new(self.max_concurrency)),
                    metrics,
                    results,
                    result_ttl: self.result_ttl,
                    policies: RwLock::new(self.policies),
                    default_policy: RwLock::new(Arc::new(self.default_policy)),
                    ticker,
                }),
                operators: moka::future::Cache::new(self.operator_cache_capacity),
                compilations: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Host;

    #[tokio::test]
    async fn a_dropped_host_is_freed_with_its_operators() {
        let host = Host::builder().no_disk_cache().build().expect("host");
        let bytes = wat::parse_str(crate::__doc_fixture::DOUBLE_WAT).expect("fixture");
        let operator = host.load_bytes(bytes, "double.wat").await.expect("loads");
        let runtime = Arc::downgrade(&host.inner.runtime);
        drop(host);
        assert!(
            runtime.upgrade().is_some(),
            "a live operator keeps what its calls need"
        );
        drop(operator);
        assert!(
            runtime.upgrade().is_none(),
            "nothing is left once host and operators are gone"
        );
    }
}
