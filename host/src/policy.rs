//! Resilience policies around every call of an operator.
//!
//! Per operator (by name), composed around the sandbox call in this order,
//! outermost first:
//!
//! 1. **result cache** (deterministic operators only): a hit never reaches
//!    the breaker, the bulkhead or a guest; concurrent identical calls run
//!    once (single flight).
//! 2. **circuit breaker**: while open, calls fail at once with
//!    `circuit-open`, without queueing; it sees the outcome of the whole
//!    call, retries included.
//! 3. **bulkhead**: bounds calls in flight and the queue in front of them;
//!    beyond the queue, `overloaded` at once; time waiting in the queue
//!    counts against the call's deadline. A call keeps its slot across its
//!    retries, so a retry is never refused half-way.
//! 4. **retry**: retryable failures (the operator's `retryable` flag; also
//!    timeouts and traps when configured) are attempted again, each in a
//!    fresh sandbox with its own seed, with exponential backoff and jitter,
//!    never past the call's deadline ([`Limits::timeout`](crate::Limits)
//!    bounds the whole call, retries and backoff included).
//!
//! # Order
//!
//! The order is what makes each policy mean what it says. Were the breaker
//! inside the retries, one call that fails three times would count as three
//! failures and open a breaker set to three on its own; were the bulkhead
//! inside the retries, a retry could be refused as `overloaded` after its
//! first attempt had run; were the cache inside the breaker, an open
//! breaker would refuse calls whose answer is already known.
//!
//! Metrics are recorded around all of them, so every call is counted once
//! with its final outcome.
//!
//! Policies are set per operator on the host
//! ([`HostBuilder::policy`](crate::HostBuilder::policy),
//! [`Host::set_policy`](crate::Host::set_policy)), or in a graph, where
//! they apply to that graph's runs only
//! ([`Graph::policy`](crate::graph::Graph::policy)).

mod breaker;
mod bulkhead;
mod cache;
mod retry;

pub(crate) use breaker::{Admission, CircuitState, verdict};
pub use breaker::{Breaker, BreakerState};
pub use bulkhead::Bulkhead;
pub(crate) use bulkhead::{BulkheadState, Refused};
pub(crate) use cache::{CachedResult, ResultKey};
pub(crate) use retry::Jitter;
pub use retry::Retry;

/// The policies of one operator. [`Policy::default()`] has none: no retry,
/// no breaker, no bulkhead, and the result cache on (it only ever applies
/// to operators whose metadata says deterministic).
///
/// ```
/// use std::time::Duration;
/// use xcs::policy::{Breaker, Bulkhead, Policy, Retry};
///
/// let policy = Policy::new()
///     .retry(Retry::default().max_attempts(4).attempt_timeout(Duration::from_secs(1)))
///     .breaker(Breaker::default().consecutive_failures(3))
///     .bulkhead(Bulkhead::default().max_in_flight(8).max_queue(32))
///     .cache(false);
/// let host = xcs::Host::builder().policy("fetch", policy).build()?;
/// # drop(host);
/// # Ok::<(), xcs::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) retry: Option<Retry>,
    pub(crate) breaker: Option<Breaker>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) cache: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retry: None,
            breaker: None,
            bulkhead: None,
            cache: true,
        }
    }
}

impl Policy {
    /// No policies (and the result cache on).
    pub fn new() -> Self {
        Policy::default()
    }

    /// Retries failed calls.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Adds a circuit breaker.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Bounds calls in flight and queued.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Whether results of this operator are cached (only ever when its
    /// metadata says it is deterministic). Default: on.
    pub fn cache(mut self, on: bool) -> Self {
        self.cache = on;
        self
    }
}

/// A policy as it is installed for calls (on a host, or in a checked
/// graph), with its fingerprint: calls share a single flight (and cached
/// results) only under equal policies, so a call with retries never gets
/// the un-retried error of a concurrent call without them.
#[derive(Debug)]
pub(crate) struct Installed {
    pub(crate) policy: Policy,
    pub(crate) fingerprint: u64,
}

impl Installed {
    pub(crate) fn new(policy: Policy) -> Self {
        use std::hash::{DefaultHasher, Hash, Hasher};
        // Every setting is in the Debug text (f64s do not hash).
        let mut hasher = DefaultHasher::new();
        format!("{policy:?}").hash(&mut hasher);
        Installed {
            fingerprint: hasher.finish(),
            policy,
        }
    }
}

/// What the policies of one operator remember between its calls: the
/// breaker's circuit, the bulkhead's slots and queue, the jitter sequence.
/// An operator has one on the host; a graph that sets its own policy for
/// an operator has one for it, shared by every run of the checked graph.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    pub(crate) circuit: CircuitState,
    pub(crate) bulkhead: BulkheadState,
    pub(crate) jitter: Jitter,
}
