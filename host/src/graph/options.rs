//! How graphs and composites run: [`RunOptions`], [`ComposeOptions`].

use std::sync::Arc;
use std::time::Duration;

use super::executor::Executor;
use crate::limits::Limits;

/// Called after each node ends with (nodes ended, nodes in all).
pub type ProgressFn = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// How a graph runs.
#[derive(Clone)]
pub struct RunOptions {
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) timeout: Duration,
    pub(crate) keep_going: bool,
    pub(crate) limits: Option<Limits>,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) compose: ComposeOptions,
    pub(crate) executor: Option<Arc<dyn Executor>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("keep_going", &self.keep_going)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    /// | option | default |
    /// |---|---|
    /// | `max_concurrency` | the host's (available parallelism) |
    /// | `timeout` | 5 minutes |
    /// | `keep_going` | off: the first failure cancels the rest |
    /// | `limits` | the host's default limits, unless a node has its own |
    /// | `compose` | [`ComposeOptions::default()`] |
    fn default() -> Self {
        RunOptions {
            max_concurrency: None,
            timeout: Duration::from_secs(300),
            keep_going: false,
            limits: None,
            progress: None,
            compose: ComposeOptions::default(),
            executor: None,
        }
    }
}

impl RunOptions {
    /// Hands the attempts of the run's single-call and map nodes to
    /// `executor` (remote workers) instead of running them here; the
    /// scheduler, policies and deadline stay here, and composite nodes run
    /// here. Default: none, every call runs here.
    pub fn executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// At most this many guests of this run at once (the host's own bound
    /// still applies). Default: the host's.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = Some(max.max(1));
        self
    }

    /// The graph deadline: when it passes, running guests are interrupted
    /// and pending nodes cancelled. Default: 5 minutes; at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = crate::limits::capped(timeout);
        self
    }

    /// Run every node that does not depend on a failed one, instead of
    /// cancelling everything at the first failure. Default: off.
    pub fn keep_going(mut self, on: bool) -> Self {
        self.keep_going = on;
        self
    }

    /// Limits for calls of nodes without limits of their own.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How the graph's composite nodes run (see [`Composite`](super::Composite)(crate::graph::Composite)).
    /// Default: [`ComposeOptions::default()`].
    pub fn compose(mut self, options: ComposeOptions) -> Self {
        self.compose = options;
        self
    }

    /// Called after each node ends, with (ended, total; the total grows
    /// as composites record calls).
    pub fn on_progress(mut self, progress: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }
}

/// How composites are traced and run.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeOptions {
    pub(crate) max_depth: usize,
    pub(crate) max_calls: usize,
    pub(crate) strict: bool,
    pub(crate) limits: Option<Limits>,
    pub(crate) trace_cache_bytes: u64,
    pub(crate) max_recorded_bytes: u64,
}

impl Default for ComposeOptions {
    /// | option | default |
    /// |---|---|
    /// | `max_depth` | 16 composites, the top one included |
    /// | `max_calls` | 10,000 per trace or run |
    /// | `strict` | off: an incomplete trace runs staged, with a warning |
    /// | `limits` | the host's default limits (for the composite's own code) |
    /// | `trace_cache_bytes` | 64 MiB of traces |
    /// | `max_recorded_bytes` | 64 MiB of JSON arguments per trace or run |
    fn default() -> Self {
        ComposeOptions {
            max_depth: 16,
            max_calls: 10_000,
            strict: false,
            limits: None,
            trace_cache_bytes: 64 << 20,
            max_recorded_bytes: 64 << 20,
        }
    }
}

impl ComposeOptions {
    /// How deep composites may call composites, the top one counting as 1;
    /// deeper is an `analysis` error naming the chain. Default: 16.
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// How many calls one trace or run may record, every composite in it
    /// together; more is an `analysis` error. Default: 10,000.
    pub fn max_calls(mut self, calls: usize) -> Self {
        self.max_calls = calls;
        self
    }

    /// Whether a composite that cannot be traced completely is an
    /// `analysis` error (instead of a staged run). Default: off.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Limits of the composite's own code (its callees have their own: a
    /// node's, the run's, or the host's defaults). Its timeout also bounds
    /// how long it may wait for a forced value. Default: the host's
    /// default limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How many bytes of JSON arguments one trace or run may record, every
    /// composite in it together (the host keeps them until it ends); more
    /// is an `analysis` error. Default: 64 MiB.
    pub fn max_recorded_bytes(mut self, bytes: u64) -> Self {
        self.max_recorded_bytes = bytes;
        self
    }

    /// How much a [`Composite`](super::Composite)'s cache of complete traces (by canonical
    /// input) may hold, in bytes of nodes and literal arguments, roughly.
    /// Default: 64 MiB.
    pub fn trace_cache_bytes(mut self, bytes: u64) -> Self {
        self.trace_cache_bytes = bytes;
        self
    }
}
