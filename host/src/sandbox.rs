//! One call's sandbox: a fresh store with WASI granting nothing, virtual
//! seeded clocks and randomness, a resource limiter, a log budget and an
//! epoch deadline; and the classification of everything that can stop it.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::error::Error;
use crate::host::Runtime;
use crate::limits::Limits;

pub(crate) mod bindings {
    //! The one `bindgen!` of the host: the `operator` world of `wit/`.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "operator",
        exports: { default: async },
    });
}

use bindings::xcs::operator::types::Level;

/// Severity of a guest log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// A message an operator logged through the host's `log` import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// The operator's name.
    pub operator: &'a str,
    /// The severity the guest gave.
    pub level: LogLevel,
    /// The message.
    pub message: &'a str,
}

/// Receives every guest log message that fits in the call's log budget.
pub(crate) type LogSink = Arc<dyn Fn(&LogRecord<'_>) + Send + Sync>;

/// Data of one call's store.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    log: LogState,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::xcs::operator::types::Host for StoreState {}

impl bindings::xcs::operator::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        self.log.record(level.into(), &message);
    }
}

struct LogState {
    operator: Arc<str>,
    budget_left: u64,
    dropped_messages: u64,
    sink: Option<LogSink>,
}

impl LogState {
    fn record(&mut self, level: LogLevel, message: &str) {
        let size = message.len() as u64;
        if size > self.budget_left {
            self.budget_left = 0;
            self.dropped_messages += 1;
            return;
        }
        self.budget_left -= size;
        let operator = &*self.operator;
        match level {
            LogLevel::Trace => tracing::trace!(target: "xcs::guest", operator, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "xcs::guest", operator, "{message}"),
            LogLevel::Info => tracing::info!(target: "xcs::guest", operator, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "xcs::guest", operator, "{message}"),
            LogLevel::Error => tracing::error!(target: "xcs::guest", operator, "{message}"),
        }
        if let Some(sink) = &self.sink {
            sink(&LogRecord {
                operator,
                level,
                message,
            });
        }
    }
}

/// Why the limiter refused to grow something.
#[derive(Debug, Clone, Copy)]
struct Denied {
    what: &'static str,
    requested: u64,
    limit: u64,
}

/// The error the limiter returns so that a denied growth traps at once
/// (instead of the guest's allocator aborting with `unreachable`).
#[derive(Debug)]
struct GrowthDenied;

impl fmt::Display for GrowthDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("resource limit reached")
    }
}

impl std::error::Error for GrowthDenied {}

struct Limiter {
    max_memory_bytes: u64,
    max_table_elements: u64,
    max_instances: usize,
    memory_bytes: u64,
    peak_memory_bytes: u64,
    denied: Option<Denied>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_bytes + (desired as u64).saturating_sub(current as u64);
        if total > self.max_memory_bytes {
            self.denied = Some(Denied {
                what: "linear memory",
                requested: total,
                limit: self.max_memory_bytes,
            });
            return Err(wasmtime::Error::new(GrowthDenied));
        }
        self.memory_bytes = total;
        self.peak_memory_bytes = self.peak_memory_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_table_elements {
            self.denied = Some(Denied {
                what: "table",
                requested: desired as u64,
                limit: self.max_table_elements,
            });
            return Err(wasmtime::Error::new(GrowthDenied));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }
}

/// A guest output stream (stdout or stderr) that keeps the first bytes up
/// to a cap and counts the rest, so a chatty guest never fails a write and
/// never grows host memory without bound.
#[derive(Clone)]
struct CapturedOutput {
    inner: Arc<CapturedInner>,
}

struct CapturedInner {
    kept: Mutex<Vec<u8>>,
    cap: usize,
    dropped: AtomicU64,
}

impl CapturedOutput {
    fn new(cap: u64) -> Self {
        CapturedOutput {
            inner: Arc::new(CapturedInner {
                kept: Mutex::new(Vec::new()),
                cap: usize::try_from(cap).unwrap_or(usize::MAX),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    fn text(&self) -> String {
        let kept = self
            .inner
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut kept = self
            .inner
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = self.inner.cap.saturating_sub(kept.len());
        let taken = room.min(buf.len());
        kept.extend_from_slice(&buf[..taken]);
        self.inner
            .dropped
            .fetch_add((buf.len() - taken) as u64, Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Start of the virtual wall clock: 2024-01-01T00:00:00Z.
const VIRTUAL_EPOCH: Duration = Duration::from_secs(1_704_067_200);
/// How far the virtual clocks move on every reading.
const CLOCK_STEP: Duration = Duration::from_micros(1);

/// A clock that starts at a fixed point and moves by a fixed step on every
/// reading: guests see time pass, reproducibly.
struct VirtualClock {
    start: Duration,
    readings: u64,
}

impl VirtualClock {
    fn next(&mut self) -> Duration {
        self.readings += 1;
        self.start + CLOCK_STEP * u32::try_from(self.readings).unwrap_or(u32::MAX)
    }
}

struct WallClock(Mutex<VirtualClock>);
struct MonotonicClock(Mutex<VirtualClock>);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        CLOCK_STEP
    }

    fn now(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next()
    }
}

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        let reading = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next();
        u64::try_from(reading.as_nanos()).unwrap_or(u64::MAX)
    }
}

fn wasi_context(limits: &Limits, stdout: &CapturedOutput, stderr: &CapturedOutput) -> WasiCtx {
    let seed = limits.seed;
    // No preopens, environment, arguments or network: nothing is granted.
    WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .secure_random(StdRng::seed_from_u64(seed))
        .insecure_random(StdRng::seed_from_u64(
            seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
        ))
        .insecure_random_seed(u128::from(seed) << 64 | u128::from(!seed))
        .wall_clock(WallClock(Mutex::new(VirtualClock {
            start: VIRTUAL_EPOCH,
            readings: 0,
        })))
        .monotonic_clock(MonotonicClock(Mutex::new(VirtualClock {
            start: Duration::ZERO,
            readings: 0,
        })))
        .build()
}

/// What one call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CallStats {
    /// Wall time of the call, instantiation included.
    pub duration: Duration,
    /// Fuel consumed, when the host consumes fuel.
    pub fuel_consumed: Option<u64>,
    /// The most linear memory the guest had at once, in bytes.
    pub peak_memory_bytes: u64,
    /// Log messages dropped because the call's log budget was spent.
    pub log_messages_dropped: u64,
    /// Bytes of stdout and stderr dropped past the log budget.
    pub output_bytes_dropped: u64,
}

/// A fresh store for one call of `operator`.
pub(crate) struct Sandbox {
    pub(crate) store: Store<StoreState>,
    operator: Arc<str>,
    limits: Limits,
    started: Instant,
    fuel_budget: Option<u64>,
    max_wasm_stack: usize,
}

impl Sandbox {
    pub(crate) fn new(
        host: &Runtime,
        operator: Arc<str>,
        limits: &Limits,
    ) -> Result<Sandbox, Error> {
        let started = Instant::now();
        let stdout = CapturedOutput::new(limits.max_log_bytes);
        let stderr = CapturedOutput::new(limits.max_log_bytes);
        let state = StoreState {
            wasi: wasi_context(limits, &stdout, &stderr),
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory_bytes: limits.max_memory_bytes,
                max_table_elements: limits.max_table_elements,
                max_instances: usize::try_from(limits.max_instances).unwrap_or(usize::MAX),
                memory_bytes: 0,
                peak_memory_bytes: 0,
                denied: None,
            },
            log: LogState {
                operator: operator.clone(),
                budget_left: limits.max_log_bytes,
                dropped_messages: 0,
                sink: host.log_sink.clone(),
            },
            stdout,
            stderr,
        };
        let mut store = Store::new(&host.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Data the guest hands the host (its result, log messages, capability
        // arguments) becomes host values of up to ~40 bytes per element; the
        // copy is bounded so that an output bomb is refused while it is being
        // copied rather than after. Within [4 MiB, 128 MiB (wasmtime's
        // default)]; an output within `max_output_bytes` then reaches the
        // codec's own, exact check unless it is made of tiny elements.
        let hostcall_bytes = limits
            .max_output_bytes
            .max(limits.max_log_bytes)
            .saturating_mul(40)
            .clamp(4 << 20, 128 << 20);
        store.set_hostcall_fuel(usize::try_from(hostcall_bytes).unwrap_or(usize::MAX));

        let fuel_budget = match (host.consume_fuel, limits.fuel) {
            (true, budget) => {
                store
                    .set_fuel(budget.unwrap_or(u64::MAX))
                    .map_err(|error| config_error(&operator, &error))?;
                budget
            }
            (false, None) => None,
            (false, Some(_)) => {
                return Err(Error::Config {
                    message: format!(
                        "{operator}: a fuel budget was set, but this host was built with fuel consumption off"
                    ),
                });
            }
        };

        // Every epoch tick the guest yields to the async executor (so a
        // busy guest never starves other tasks) and is interrupted once the
        // wall-clock deadline has passed.
        let deadline = started + limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        Ok(Sandbox {
            store,
            operator,
            limits: limits.clone(),
            started,
            fuel_budget,
            max_wasm_stack: host.max_wasm_stack,
        })
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.started + self.limits.timeout
    }

    pub(crate) fn stats(&self) -> CallStats {
        let state = self.store.data();
        let fuel_consumed = self
            .store
            .get_fuel()
            .ok()
            .map(|left| self.fuel_budget.unwrap_or(u64::MAX).saturating_sub(left));
        CallStats {
            duration: self.started.elapsed(),
            fuel_consumed,
            peak_memory_bytes: state.limiter.peak_memory_bytes,
            log_messages_dropped: state.log.dropped_messages,
            output_bytes_dropped: state.stdout.dropped() + state.stderr.dropped(),
        }
    }

    /// Reports what the guest wrote and what was dropped, once the call is
    /// over: nothing is dropped silently.
    pub(crate) fn finish(&self) {
        let state = self.store.data();
        let operator = &*self.operator;
        for (stream, output) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            let text = output.text();
            if !text.is_empty() {
                tracing::debug!(target: "xcs::guest", operator, stream, "{}", text.trim_end());
            }
            if output.dropped() > 0 {
                tracing::warn!(
                    operator,
                    stream,
                    dropped_bytes = output.dropped(),
                    "guest output over the log budget was dropped"
                );
            }
        }
        if state.log.dropped_messages > 0 {
            tracing::warn!(
                operator,
                dropped_messages = state.log.dropped_messages,
                budget_bytes = self.limits.max_log_bytes,
                "guest log messages over the log budget were dropped"
            );
        }
    }

    /// The error for a call that ended with `error`: classified by its
    /// cause, never by its message.
    pub(crate) fn classify(&self, error: wasmtime::Error) -> Error {
        let operator = self.operator.to_string();
        let state = self.store.data();
        if let Some(denied) = state.limiter.denied {
            return Error::Memory {
                operator,
                what: denied.what,
                requested: denied.requested,
                limit: denied.limit,
            };
        }
        if let Some(failure) = error.downcast_ref::<crate::capability::CapabilityFailure>() {
            return Error::Trap {
                operator,
                message: failure.to_string(),
                guest_stderr: state.stderr.text(),
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.timeout(),
            Some(Trap::OutOfFuel) => Error::Fuel {
                operator,
                fuel: self.fuel_budget.unwrap_or(u64::MAX),
            },
            Some(Trap::StackOverflow) => Error::StackOverflow {
                operator,
                max_stack_bytes: self.max_wasm_stack,
            },
            Some(trap) => Error::Trap {
                operator,
                message: trap.to_string(),
                guest_stderr: state.stderr.text(),
            },
            None => Error::Trap {
                operator,
                message: format!("{error:#}"),
                guest_stderr: state.stderr.text(),
            },
        }
    }

    pub(crate) fn timeout(&self) -> Error {
        Error::Timeout {
            operator: self.operator.to_string(),
            timeout: self.limits.timeout,
        }
    }
}

fn config_error(operator: &str, error: &wasmtime::Error) -> Error {
    Error::Config {
        message: format!("{operator}: {error:#}"),
    }
}
