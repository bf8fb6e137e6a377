//! Per-operator metrics: a snapshot for the library, Prometheus (OpenMetrics)
//! text for scrapers and the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ErrorKind;
use crate::policy::BreakerState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperatorLabel {
    operator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    operator: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabel {
    operator: String,
    from: String,
    to: String,
}

type HistogramFamily = Family<OperatorLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs to ~40 s.
    Histogram::new(exponential_buckets(1e-5, 4.0, 12))
}

fn fuel_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e3, 10.0, 10))
}

fn memory_histogram() -> Histogram {
    // 64 KiB to 4 GiB.
    Histogram::new(exponential_buckets(65_536.0, 4.0, 9))
}

/// The host's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    operators: Mutex<BTreeSet<String>>,
    calls: Family<OperatorLabel, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    retries: Family<OperatorLabel, Counter>,
    cache_hits: Family<OperatorLabel, Counter>,
    cache_misses: Family<OperatorLabel, Counter>,
    cache_evictions: Family<OperatorLabel, Counter>,
    traces: Family<OperatorLabel, Counter>,
    trace_hits: Family<OperatorLabel, Counter>,
    trace_misses: Family<OperatorLabel, Counter>,
    breaker_state: Family<OperatorLabel, Gauge>,
    breaker_transitions: Family<TransitionLabel, Counter>,
    in_flight: Family<OperatorLabel, Gauge>,
    queued: Family<OperatorLabel, Gauge>,
    http_requests: Family<OperatorLabel, Counter>,
    http_denied: Family<OperatorLabel, Counter>,
    latency: HistogramFamily,
    fuel: HistogramFamily,
    peak_memory: HistogramFamily,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `metric`, registered in `registry` as `xcs_<name>` with `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("xcs");
        let r = &mut registry;
        let histograms = |constructor: fn() -> Histogram| Family::new_with_constructor(constructor);
        Metrics {
            operators: Mutex::new(BTreeSet::new()),
            calls: registered(
                r,
                "calls",
                "Calls, each counted once with its final outcome",
                Family::default(),
            ),
            outcomes: registered(
                r,
                "outcomes",
                "Final outcomes of calls: ok, or the error kind",
                Family::default(),
            ),
            retries: registered(r, "retries", "Attempts beyond the first", Family::default()),
            cache_hits: registered(
                r,
                "cache_hits",
                "Calls answered by the result cache",
                Family::default(),
            ),
            cache_misses: registered(
                r,
                "cache_misses",
                "Cacheable calls that ran",
                Family::default(),
            ),
            cache_evictions: registered(
                r,
                "cache_evictions",
                "Results evicted from the cache (size or age)",
                Family::default(),
            ),
            traces: registered(r, "traces", "Dry traces of a composite", Family::default()),
            http_requests: registered(
                r,
                "http_requests",
                "Outgoing HTTP requests let through to a granted origin",
                Family::default(),
            ),
            http_denied: registered(
                r,
                "http_denied",
                "Outgoing HTTP requests refused: not on the allow-list, past the per-call cap, \
                 or to a name at a prohibited address",
                Family::default(),
            ),
            trace_hits: registered(
                r,
                "trace_cache_hits",
                "Composite runs answered by a cached trace",
                Family::default(),
            ),
            trace_misses: registered(
                r,
                "trace_cache_misses",
                "Composite runs that traced anew",
                Family::default(),
            ),
            breaker_state: registered(
                r,
                "breaker_state",
                "Circuit breaker: 0 closed, 1 open, 2 half-open",
                Family::default(),
            ),
            breaker_transitions: registered(
                r,
                "breaker_transitions",
                "Circuit breaker state changes",
                Family::default(),
            ),
            in_flight: registered(r, "in_flight", "Calls running now", Family::default()),
            queued: registered(
                r,
                "queued",
                "Calls waiting in a bulkhead queue",
                Family::default(),
            ),
            latency: registered(
                r,
                "call_duration_seconds",
                "Wall time of calls that reached a guest",
                histograms(latency_histogram),
            ),
            fuel: registered(
                r,
                "fuel_consumed",
                "Fuel consumed by calls",
                histograms(fuel_histogram),
            ),
            peak_memory: registered(
                r,
                "peak_memory_bytes",
                "Peak linear memory of calls",
                histograms(memory_histogram),
            ),
            registry,
        }
    }
}

fn label(operator: &str) -> OperatorLabel {
    OperatorLabel {
        operator: operator.to_owned(),
    }
}

/// A gauge increment undone on drop, so a cancelled call still leaves.
pub(crate) struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The counters of one operator's outgoing HTTP requests.
#[derive(Clone, Default)]
pub(crate) struct HttpCounters {
    requests: Counter,
    denied: Counter,
}

impl std::fmt::Debug for HttpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCounters")
            .field("requests", &self.requests.get())
            .field("denied", &self.denied.get())
            .finish()
    }
}

impl HttpCounters {
    /// A request was let through.
    pub(crate) fn request(&self) {
        self.requests.inc();
    }

    /// A request was refused.
    pub(crate) fn denied(&self) {
        self.denied.inc();
    }
}

/// One operator's metric handles, looked up once when it is loaded, so a
/// call only touches atomics (no label hashing or allocation).
#[derive(Clone)]
pub(crate) struct OperatorHandles {
    calls: Counter,
    /// `ok` first, then one per [`ErrorKind::ALL`].
    outcomes: Vec<Counter>,
    retries: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    traces: Counter,
    trace_hits: Counter,
    trace_misses: Counter,
    in_flight: Gauge,
    queued: Gauge,
    http: HttpCounters,
    latency: Histogram,
    fuel: Histogram,
    peak_memory: Histogram,
}

impl std::fmt::Debug for OperatorHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorHandles").finish_non_exhaustive()
    }
}

impl OperatorHandles {
    pub(crate) fn call(&self, outcome: Result<(), ErrorKind>) {
        self.calls.inc();
        let index = match outcome {
            Ok(()) => 0,
            Err(kind) => {
                1 + ErrorKind::ALL
                    .iter()
                    .position(|known| *known == kind)
                    .unwrap_or(0)
            }
        };
        self.outcomes[index].inc();
    }

    pub(crate) fn retry(&self) {
        self.retries.inc();
    }

    pub(crate) fn cache(&self, hit: bool) {
        if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        }
        .inc();
    }

    /// A composite was traced.
    pub(crate) fn traced(&self) {
        self.traces.inc();
    }

    /// A composite's run found its trace cached (`hit`) or not.
    pub(crate) fn trace_lookup(&self, hit: bool) {
        if hit {
            &self.trace_hits
        } else {
            &self.trace_misses
        }
        .inc();
    }

    /// The counters of its outgoing HTTP requests.
    pub(crate) fn http(&self) -> &HttpCounters {
        &self.http
    }

    pub(crate) fn in_flight(&self) -> GaugeGuard {
        self.in_flight.inc();
        GaugeGuard(self.in_flight.clone())
    }

    pub(crate) fn queued(&self) -> GaugeGuard {
        self.queued.inc();
        GaugeGuard(self.queued.clone())
    }

    pub(crate) fn usage(&self, seconds: f64, fuel: Option<u64>, peak_memory: u64) {
        self.latency.observe(seconds);
        if let Some(fuel) = fuel {
            self.fuel.observe(fuel as f64);
        }
        self.peak_memory.observe(peak_memory as f64);
    }
}

impl Metrics {
    /// The handles of `operator`'s metrics (and it is known from now on).
    pub(crate) fn handles(&self, operator: &str) -> OperatorHandles {
        self.known(operator);
        let outcome = |outcome: &str| {
            self.outcomes
                .get_or_create(&OutcomeLabel {
                    operator: operator.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .clone()
        };
        OperatorHandles {
            calls: self.calls.get_or_create(&label(operator)).clone(),
            outcomes: std::iter::once("ok")
                .chain(ErrorKind::ALL.iter().map(|kind| kind.as_str()))
                .map(outcome)
                .collect(),
            retries: self.retries.get_or_create(&label(operator)).clone(),
            cache_hits: self.cache_hits.get_or_create(&label(operator)).clone(),
            cache_misses: self.cache_misses.get_or_create(&label(operator)).clone(),
            traces: self.traces.get_or_create(&label(operator)).clone(),
            trace_hits: self.trace_hits.get_or_create(&label(operator)).clone(),
            trace_misses: self.trace_misses.get_or_create(&label(operator)).clone(),
            in_flight: self.in_flight.get_or_create(&label(operator)).clone(),
            queued: self.queued.get_or_create(&label(operator)).clone(),
            http: HttpCounters {
                requests: self.http_requests.get_or_create(&label(operator)).clone(),
                denied: self.http_denied.get_or_create(&label(operator)).clone(),
            },
            latency: self.latency.get_or_create(&label(operator)).clone(),
            fuel: self.fuel.get_or_create(&label(operator)).clone(),
            peak_memory: self.peak_memory.get_or_create(&label(operator)).clone(),
        }
    }

    fn known(&self, operator: &str) {
        let mut operators = self
            .operators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !operators.contains(operator) {
            operators.insert(operator.to_owned());
        }
    }

    pub(crate) fn eviction(&self, operator: &str) {
        self.cache_evictions.get_or_create(&label(operator)).inc();
    }

    /// A breaker of `operator` changed state; `on_host` when it is the
    /// operator's own breaker on the host (a graph's breaker for it is
    /// counted, but its state is not the operator's).
    pub(crate) fn transition(
        &self,
        operator: &str,
        from: BreakerState,
        to: BreakerState,
        on_host: bool,
    ) {
        self.known(operator);
        self.breaker_transitions
            .get_or_create(&TransitionLabel {
                operator: operator.to_owned(),
                from: from.as_str().to_owned(),
                to: to.as_str().to_owned(),
            })
            .inc();
        if on_host {
            let code = match to {
                BreakerState::Closed => 0,
                BreakerState::Open => 1,
                BreakerState::HalfOpen => 2,
            };
            self.breaker_state.get_or_create(&label(operator)).set(code);
        }
        tracing::info!(
            operator,
            graph = !on_host,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker"
        );
    }

    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let operators = self
            .operators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        // Reads never create a series: `Family::get`, with 0 for a series
        // that was never written (creating it would add zero-valued
        // samples to the Prometheus text).
        let counter = |family: &Family<OperatorLabel, Counter>, operator: &str| {
            family
                .get(&label(operator))
                .map_or(0, |counter| counter.get())
        };
        let operators = operators
            .into_iter()
            .map(|operator| {
                let mut outcomes = BTreeMap::new();
                for outcome in
                    std::iter::once("ok").chain(ErrorKind::ALL.iter().map(|kind| kind.as_str()))
                {
                    let count = self
                        .outcomes
                        .get(&OutcomeLabel {
                            operator: operator.clone(),
                            outcome: outcome.to_owned(),
                        })
                        .map_or(0, |counter| counter.get());
                    if count > 0 {
                        outcomes.insert(outcome.to_owned(), count);
                    }
                }
                let mut breaker_transitions = 0;
                for (from, to) in BreakerState::TRANSITIONS {
                    breaker_transitions += self
                        .breaker_transitions
                        .get(&TransitionLabel {
                            operator: operator.clone(),
                            from: from.as_str().to_owned(),
                            to: to.as_str().to_owned(),
                        })
                        .map_or(0, |counter| counter.get());
                }
                let snapshot = OperatorMetrics {
                    calls: counter(&self.calls, &operator),
                    outcomes,
                    retries: counter(&self.retries, &operator),
                    cache_hits: counter(&self.cache_hits, &operator),
                    cache_misses: counter(&self.cache_misses, &operator),
                    cache_evictions: counter(&self.cache_evictions, &operator),
                    traces: counter(&self.traces, &operator),
                    trace_hits: counter(&self.trace_hits, &operator),
                    trace_misses: counter(&self.trace_misses, &operator),
                    breaker_transitions,
                    in_flight: self
                        .in_flight
                        .get(&label(&operator))
                        .map_or(0, |gauge| gauge.get()),
                    queued: self
                        .queued
                        .get(&label(&operator))
                        .map_or(0, |gauge| gauge.get()),
                    http_requests: counter(&self.http_requests, &operator),
                    http_denied: counter(&self.http_denied, &operator),
                };
                (operator, snapshot)
            })
            .collect();
        MetricsSnapshot { operators }
    }
}

/// Metrics of every operator called so far, by operator name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Per operator.
    pub operators: BTreeMap<String, OperatorMetrics>,
}

/// One operator's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct OperatorMetrics {
    /// Calls, each counted once with its final outcome.
    pub calls: u64,
    /// Final outcomes: `ok`, or an error kind; they add up to `calls`.
    pub outcomes: BTreeMap<String, u64>,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Calls answered by the result cache.
    pub cache_hits: u64,
    /// Cacheable calls that ran.
    pub cache_misses: u64,
    /// Results evicted from the cache.
    pub cache_evictions: u64,
    /// Dry traces of this composite.
    pub traces: u64,
    /// Runs of this composite answered by a cached trace.
    pub trace_hits: u64,
    /// Runs of this composite that traced anew.
    pub trace_misses: u64,
    /// Circuit breaker state changes.
    pub breaker_transitions: u64,
    /// Calls running now.
    pub in_flight: i64,
    /// Calls waiting in a bulkhead queue now.
    pub queued: i64,
    /// Outgoing HTTP requests let through to a granted origin.
    pub http_requests: u64,
    /// Outgoing HTTP requests refused (not on the allow-list, past the
    /// per-call cap, or to a name at a prohibited address).
    pub http_denied: u64,
}
