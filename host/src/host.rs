//! The façade: [`HostBuilder`] collects settings, [`Host`] loads operators
//! (once per content digest) and shares one runtime with them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::capability::Capability;
use crate::disk_cache::CACHE_KEY_FILE_ENV;
use crate::error::Error;
use crate::grants::{Grants, GrantsTable};
use crate::limits::{Limits, LoadLimits};
use crate::metrics::MetricsSnapshot;
use crate::operator::{Operator, load};
use crate::policy::Policy;
use crate::runtime::{MemoryReset, Runtime, Settings};
use crate::store::LogRecord;

/// Environment variable naming the on-disk compilation cache directory.
pub const CACHE_DIR_ENV: &str = "XCS_CACHE_DIR";

/// Loads operators and runs their calls.
///
/// Cheap to clone (an `Arc`), `Send + Sync`: share one host across tasks
/// and threads. Build one with [`Host::builder`].
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runtime = &self.inner.runtime;
        f.debug_struct("Host")
            .field("default_limits", &runtime.default_limits)
            .field(
                "max_concurrent_instances",
                &runtime.max_concurrent_instances,
            )
            .field("granted", &runtime.granted)
            .field("memory_reset", &runtime.memory_reset)
            .field("disk_cache", &self.disk_cache_dir())
            .finish_non_exhaustive()
    }
}

struct HostInner {
    runtime: Arc<Runtime>,
    operators: moka::future::Cache<[u8; 32], Operator>,
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

    /// How many components this host has compiled: loads answered
    /// neither by the in-memory cache of loaded operators nor by a valid
    /// entry of the on-disk cache.
    pub fn compilations(&self) -> u64 {
        self.inner.runtime.compilations.load(Ordering::Relaxed)
    }

    /// How this host's pool resets a used sandbox between calls: in place
    /// (Linux `PAGEMAP_SCAN`, kernel 6.7 or later) or by returning pages
    /// to the kernel (see [`HostBuilder::pagemap_scan`]).
    pub fn memory_reset(&self) -> MemoryReset {
        self.inner.runtime.memory_reset
    }

    /// The directory of the on-disk compilation cache this host uses, or
    /// `None` when it is off or could not be used (the reason was logged,
    /// `tracing` target `xcs::cache`).
    pub fn disk_cache_dir(&self) -> Option<&Path> {
        self.inner
            .runtime
            .disk_cache
            .as_ref()
            .map(|cache| cache.dir())
    }

    /// Sets the policies of the operator called `name` (its metadata name),
    /// for every call from now on. (A graph's own policies apply to its
    /// runs instead.)
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
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| Error::io(path, source))?;
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
        let digest = load::digest(&bytes);
        let runtime = &self.inner.runtime;
        self.inner
            .operators
            .try_get_with(digest, load::load(runtime, bytes, digest, source_name))
            .await
            // moka shares one error between every waiter.
            .map_err(Arc::unwrap_or_clone)
    }

    #[cfg(test)]
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }
}

/// Configures a [`Host`]. Every setting has a documented default.
pub struct HostBuilder {
    settings: Settings,
    cache_dir: CacheDir,
    cache_key_file: Option<PathBuf>,
    operator_cache_capacity: u64,
}

impl fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        f.debug_struct("HostBuilder")
            .field("default_limits", &settings.default_limits)
            .field("consume_fuel", &settings.consume_fuel)
            .field("epoch_tick", &settings.epoch_tick)
            .field(
                "max_concurrent_instances",
                &settings.max_concurrent_instances,
            )
            .field("max_wasm_stack", &settings.max_wasm_stack)
            .field("cache_dir", &self.cache_dir)
            .field("cache_key_file", &self.cache_key_file)
            .field("capabilities", &settings.capabilities)
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
            settings: Settings::default(),
            cache_dir: CacheDir::Default,
            cache_key_file: None,
            operator_cache_capacity: 256,
        }
    }
}

impl HostBuilder {
    /// Limits for calls that do not bring their own. Default:
    /// [`Limits::default()`].
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.settings.default_limits = limits;
        self
    }

    /// Bounds on the shape of a component, checked before it is compiled
    /// (see [`LoadLimits`]). Default: [`LoadLimits::default()`].
    pub fn load_limits(mut self, limits: LoadLimits) -> Self {
        self.settings.load_limits = limits;
        self
    }

    /// Whether guests consume fuel, which [`Limits::fuel`] budgets need.
    /// Costs a little speed. Default: on.
    pub fn consume_fuel(mut self, on: bool) -> Self {
        self.settings.consume_fuel = on;
        self
    }

    /// How often the epoch advances: the precision of call deadlines, and
    /// how often a running guest yields to other tasks. Default: 10 ms.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.settings.epoch_tick = tick;
        self
    }

    /// How many sandboxes may exist at once: the size of wasmtime's
    /// pooling allocator. Calls beyond it wait for a slot. Default: 1000.
    pub fn max_concurrent_instances(mut self, count: u32) -> Self {
        self.settings.max_concurrent_instances = count;
        self
    }

    /// Tables one component may create (each of at most
    /// [`Limits::max_table_elements`] elements); the pool reserves this
    /// many per instance slot. Past it, a load is a `contract` error that
    /// names this setting. Default: 16; within [1, 10,000].
    pub fn max_tables_per_component(mut self, count: u32) -> Self {
        self.settings.max_tables_per_component = count;
        self
    }

    /// Linear memories one component may define, in one core module or
    /// across them (every toolchain seen — Rust, componentize-py,
    /// componentize-js, C — makes one); the pool reserves this many per
    /// instance slot, each up to [`max_memory_bytes_per_instance`] of
    /// address space. Past it, a load is a `contract` error that names
    /// this setting. Default: 1; within [1, 1,000].
    ///
    /// [`max_memory_bytes_per_instance`]: Self::max_memory_bytes_per_instance
    pub fn max_memories_per_component(mut self, count: u32) -> Self {
        self.settings.max_memories_per_component = count;
        self
    }

    /// How many graph-node guests run at once across every graph this host
    /// runs: the one scheduler bound. Default: the available parallelism.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.settings.max_concurrency = max.max(1);
        self
    }

    /// How many guests execute at once: turns on the processor. A call in
    /// a sandbox waits for a turn, runs one epoch tick, then hands the turn
    /// on if others wait; a guest waiting on the host (a capability, a
    /// composite's value) does so without one. Calls that have not yet run
    /// a whole tick go first, so a short call is not queued behind busy
    /// guests, and a guest waiting for a turn is ended by its deadline on
    /// time. Default: the available parallelism (the async runtime's
    /// worker threads, by default); at least 1.
    pub fn max_running_guests(mut self, count: usize) -> Self {
        self.settings.max_running_guests = count.max(1);
        self
    }

    /// Address space reserved per linear memory in the pool: the ceiling
    /// of any call's [`Limits::max_memory_bytes`]. Default: 4 GiB.
    pub fn max_memory_bytes_per_instance(mut self, bytes: u64) -> Self {
        self.settings.max_memory_bytes_per_instance = bytes;
        self
    }

    /// Wasm stack limit; deeper recursion is a `stack-overflow` error.
    /// Default: 512 KiB.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.settings.max_wasm_stack = bytes;
        self
    }

    /// Whether used sandboxes are reset in place with Linux's
    /// `PAGEMAP_SCAN` where the kernel has it (6.7 or later): the pages a
    /// call dirtied, up to [`memory_keep_resident`](Self::memory_keep_resident)
    /// bytes of each memory and [`table_keep_resident`](Self::table_keep_resident)
    /// of each table, are cleared in place and stay resident, so the next
    /// call in that slot takes no page fault and no `madvise`; the rest is
    /// returned to the kernel. Elsewhere, or when off, every used page of
    /// a memory is returned to the kernel. [`Host::memory_reset`] says
    /// which is in use. Default: on.
    pub fn pagemap_scan(mut self, on: bool) -> Self {
        self.settings.pagemap_scan = on;
        self
    }

    /// Bytes at the start of each linear memory that are reset in place
    /// and kept resident between calls (only with
    /// [`pagemap_scan`](Self::pagemap_scan): without it, resetting in place
    /// clears every page of the region, dirty or not, which costs more than
    /// it saves). Resident memory per warm pool slot is at most this plus
    /// the tables'; at most 100 slots (or
    /// [`max_concurrent_instances`](Self::max_concurrent_instances), if
    /// fewer) are kept warm. Default: 1 MiB.
    pub fn memory_keep_resident(mut self, bytes: usize) -> Self {
        self.settings.memory_keep_resident = bytes;
        self
    }

    /// Bytes of each table reset in place and kept resident between calls
    /// (with or without `pagemap_scan`). Default: 64 KiB.
    pub fn table_keep_resident(mut self, bytes: usize) -> Self {
        self.settings.table_keep_resident = bytes;
        self
    }

    /// Where compiled operators are cached on disk. Default: the
    /// directory in `XCS_CACHE_DIR`, else `$XDG_CACHE_HOME/xcs`, else
    /// `$HOME/.cache/xcs`.
    ///
    /// Compiled code is native code the host runs, so the directory must
    /// be absolute, this user's and not writable by group or others
    /// (created `0700` if missing), and every entry is checked before use:
    /// it must be for the very bytes being loaded, on this engine
    /// configuration, and carry a MAC under the key of
    /// [`cache_key_file`](Self::cache_key_file). A directory that fails
    /// the checks is not used (a warning, `tracing` target `xcs::cache`;
    /// loads compile); an entry that fails them is compiled anew and
    /// replaced.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = CacheDir::At(dir.into());
        self
    }

    /// The file holding the key that authenticates the cache's entries (64
    /// hex digits), kept outside the cache directory: whoever can read it
    /// can forge entries. Created with a new random key (mode `0600`) if
    /// missing; one that is not this user's, or that group or others can
    /// read or write, is refused (and the cache not used). Processes that
    /// share a cache directory (a service and its workers) share the key
    /// file. Default: the file in `XCS_CACHE_KEY_FILE`, else
    /// `$XDG_CONFIG_HOME/xcs/cache-key`, else `$HOME/.config/xcs/cache-key`.
    pub fn cache_key_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.cache_key_file = Some(file.into());
        self
    }

    /// Bound of the on-disk cache, in bytes of entries; the least recently
    /// used entries are deleted to keep under it, and compiled code larger
    /// than it is not stored. Default: 1 GiB.
    pub fn disk_cache_bytes(mut self, bytes: u64) -> Self {
        self.settings.disk_cache_bytes = bytes;
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
        self.settings.policies.insert(name.to_owned(), policy);
        self
    }

    /// Policies of operators without their own. Default: [`Policy::default()`]
    /// (no retry, breaker or bulkhead; result cache on).
    pub fn default_policy(mut self, policy: Policy) -> Self {
        self.settings.default_policy = policy;
        self
    }

    /// Bound of the result cache, in bytes of keys and JSON results.
    /// Default: 64 MiB.
    pub fn result_cache_bytes(mut self, bytes: u64) -> Self {
        self.settings.result_cache_bytes = bytes;
        self
    }

    /// How long a cached result is served. Default: 10 minutes; at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn result_cache_ttl(mut self, ttl: Duration) -> Self {
        self.settings.result_ttl = crate::limits::capped(ttl);
        self
    }

    /// Whether an operator that imports `wasi:http/outgoing-handler` with
    /// no HTTP granted to it is refused at load, with a `capability` error
    /// naming what would grant it (default `true`). Off, it loads and every
    /// request it makes is denied: what `xcs inspect` does, to describe any
    /// operator.
    pub fn refuse_ungranted_http(mut self, refuse: bool) -> Self {
        self.settings.refuse_ungranted_http = refuse;
        self
    }

    /// Grants every operator the outgoing HTTP, directories and
    /// environment variables in `grants`, with those already given;
    /// checked by [`build`](Self::build). Default: nothing.
    pub fn grants(mut self, grants: Grants) -> Self {
        self.settings.grants.default =
            std::mem::take(&mut self.settings.grants.default).and(&grants);
        self
    }

    /// Grants the operator named `operator` (its metadata's name), or the
    /// one with the digest `operator` (`sha256:…`, as
    /// [`Operator::digest`] says it), these on top of the default ones.
    pub fn grants_for(mut self, operator: impl Into<String>, grants: Grants) -> Self {
        let key = operator.into();
        let mine = self
            .settings
            .grants
            .by_operator
            .remove(&key)
            .unwrap_or_default();
        self.settings
            .grants
            .by_operator
            .insert(key, mine.and(&grants));
        self
    }

    /// Grants what a grants file (or a graph file's `[grants]`) says, with
    /// those already given.
    pub fn grants_table(mut self, table: &GrantsTable) -> Self {
        self.settings.grants = std::mem::take(&mut self.settings.grants).and(table);
        self
    }

    /// Grants a capability to every operator that imports it.
    pub fn grant(mut self, capability: Capability) -> Self {
        self.settings.capabilities.push(capability);
        self
    }

    /// Receives every guest log message within the call's log budget (they
    /// also go to `tracing`, target `xcs::guest`).
    pub fn on_log(mut self, sink: impl Fn(&LogRecord<'_>) + Send + Sync + 'static) -> Self {
        self.settings.log_sink = Some(Arc::new(sink));
        self
    }

    fn resolved_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            CacheDir::Off => None,
            CacheDir::At(dir) => Some(dir.clone()),
            CacheDir::Default => user_path(CACHE_DIR_ENV, "XDG_CACHE_HOME", ".cache", "xcs"),
        }
    }

    fn resolved_key_file(&self) -> Option<PathBuf> {
        self.cache_key_file.clone().or_else(|| {
            user_path(
                CACHE_KEY_FILE_ENV,
                "XDG_CONFIG_HOME",
                ".config",
                "xcs/cache-key",
            )
        })
    }

    fn settings(mut self) -> (Settings, u64) {
        self.settings.cache_dir = self.resolved_cache_dir();
        if self.settings.cache_dir.is_some() {
            self.settings.cache_key_file = self.resolved_key_file();
        }
        (self.settings, self.operator_cache_capacity)
    }

    /// The wasmtime engine configuration [`build`](Self::build) would use,
    /// for benchmarks that measure a bare-wasmtime baseline on the same
    /// kind of engine. Not a stable interface.
    #[doc(hidden)]
    pub fn __engine_config(self) -> Result<wasmtime::Config, Error> {
        self.settings().0.engine_config()
    }

    /// Builds the host: creates the engine (pooling allocator, epoch
    /// interruption, fuel), opens the compilation cache, creates the
    /// linker, and starts the epoch ticker.
    pub fn build(self) -> Result<Host, Error> {
        let (settings, operator_cache_capacity) = self.settings();
        Ok(Host {
            inner: Arc::new(HostInner {
                runtime: Arc::new(Runtime::new(settings)?),
                operators: moka::future::Cache::new(operator_cache_capacity),
            }),
        })
    }
}

/// A per-user path: the one in the environment variable `own`, else
/// `$<xdg>/<tail>` (when absolute: the XDG spec ignores relative ones),
/// else `$HOME/<home_dir>/<tail>`.
fn user_path(own: &str, xdg: &str, home_dir: &str, tail: &str) -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    var(own).map(PathBuf::from).or_else(|| {
        var(xdg)
            .filter(|dir| Path::new(dir).is_absolute())
            .map(|dir| PathBuf::from(dir).join(tail))
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(home_dir).join(tail)))
    })
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
        let runtime = Arc::downgrade(host.runtime());
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
