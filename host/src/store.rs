//! What one call's store holds: the WASI context (granting nothing), the
//! resource limiter and what it refused, the log budget, captured stdout
//! and stderr, virtual seeded clocks and randomness; and the one
//! `bindgen!` of the host.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::error::BoxError;
use crate::grants::Grants;
use crate::limits::Limits;
use crate::metrics::HttpCounters;
use crate::turns::Seat;

pub(crate) mod bindings {
    //! The one `bindgen!` of the host: the `composite` world of `wit/` (the
    //! `operator` world plus the `compose` import composites use).
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "composite",
        imports: { "xcs:operator/compose": async | trappable },
        exports: { default: async },
        with: { "xcs:operator/compose.deferred": super::compose::Deferred },
    });
}

mod compose;
mod http;
mod io;

pub(crate) use compose::{ArgValue, ComposeStop, Composer, ComposerFuture};
pub(crate) use http::add_to_linker as add_http_to_linker;
pub(crate) use io::add_to_linker as add_io_to_linker;

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
    /// Made at the guest's first WASI call: most calls of most operators
    /// make none, and a context costs about a microsecond to build (its
    /// builder seeds random generators that are then replaced).
    wasi: Option<WasiCtx>,
    /// What the context is made from (see [`wasi_context`]).
    seed: u64,
    grants: Option<Arc<Grants>>,
    /// Made at the guest's first `wasi:http` call.
    http: Option<http::HttpState>,
    /// When the call's deadline passes: no HTTP request waits past it.
    deadline: std::time::Instant,
    http_counters: HttpCounters,
    table: ResourceTable,
    limiter: Limiter,
    log: LogState,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    /// The guest's last error-level log message, at most
    /// [`LAST_ERROR_BYTES`]: what a trap without stderr can say.
    last_error_log: Option<String>,
    /// What a composite's `compose` calls go to; `None` for a call that
    /// is not a composite's run or trace.
    composer: Option<Box<dyn Composer>>,
    /// Where the call keeps its turn on the processor.
    pub(crate) seat: Seat,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (seed, stdout, stderr) = (self.seed, &self.stdout, &self.stderr);
        let (grants, operator) = (self.grants.as_deref(), &self.log.operator);
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| wasi_context(seed, stdout, stderr, grants, operator)),
            table: &mut self.table,
        }
    }
}

impl bindings::xcs::operator::types::Host for StoreState {}

impl bindings::xcs::operator::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        let level = LogLevel::from(level);
        self.log.record(level, &message);
        // The last error-level message is quoted by a `trap` error with
        // the stderr: a lean component (no WASI, so no stderr) reports its
        // panic message this way (see `xcs_guest`'s panic hook). Kept apart
        // from stderr so that neither crowds the other out of its cap.
        if level == LogLevel::Error {
            self.last_error_log = Some(truncated(message, LAST_ERROR_BYTES));
        }
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
pub(crate) struct Denied {
    pub(crate) what: &'static str,
    pub(crate) requested: u64,
    pub(crate) limit: u64,
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
    /// The most bytes one memory may have in the pool.
    memory_ceiling: u64,
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
        // Past the pool's ceiling per memory the growth fails anyway: say
        // so, as a `memory` error, instead of letting the guest trap on it.
        if desired as u64 > self.memory_ceiling {
            self.denied = Some(Denied {
                what: "linear memory",
                requested: desired as u64,
                limit: self.memory_ceiling,
            });
            return Err(wasmtime::Error::new(GrowthDenied));
        }
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

/// The most of the last error-level log message a trap error quotes.
const LAST_ERROR_BYTES: usize = 4096;

/// `message` cut to at most `max` bytes, on a character boundary.
fn truncated(message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
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

    /// Keeps what fits under the cap of `bytes` and counts the rest.
    fn keep(&self, bytes: &[u8]) {
        let mut kept = self
            .inner
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = self.inner.cap.saturating_sub(kept.len());
        let taken = room.min(bytes.len());
        kept.extend_from_slice(&bytes[..taken]);
        self.inner
            .dropped
            .fetch_add((bytes.len() - taken) as u64, Ordering::Relaxed);
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
        self.keep(buf);
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

/// A call's WASI context: captured stdout and stderr, no network, clocks
/// and randomness from `seed` (the same whenever it is made), and only the
/// directories (read-only) and environment variables of `grants`.
fn wasi_context(
    seed: u64,
    stdout: &CapturedOutput,
    stderr: &CapturedOutput,
    grants: Option<&Grants>,
    operator: &str,
) -> WasiCtx {
    // No preopens, environment, arguments or network unless granted.
    let mut builder = WasiCtx::builder();
    if let Some(grants) = grants {
        for dir in &grants.dirs {
            // Checked when the host was built; a directory removed since
            // is missing in the guest, and said so here.
            if let Err(error) =
                builder.preopened_dir(&dir.host, &dir.guest, wasmtime_wasi::FsPerms::ReadOnly)
            {
                tracing::warn!(
                    %operator,
                    "the granted directory {} cannot be opened: {error:#}",
                    dir.host.display()
                );
            }
        }
        for (name, value) in &grants.env {
            builder.env(name, value);
        }
    }
    builder
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

/// A capability function failed; the guest that called it traps.
#[derive(Debug)]
pub(crate) struct CapabilityFailure {
    pub(crate) function: String,
    pub(crate) cause: BoxError,
}

impl fmt::Display for CapabilityFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capability `{}` failed: {}", self.function, self.cause)
    }
}

impl std::error::Error for CapabilityFailure {}

impl StoreState {
    /// The state of a fresh store for one call of `operator` under
    /// `limits`; guest log messages within the budget also go to `sink`.
    pub(crate) fn new(
        operator: Arc<str>,
        limits: &Limits,
        memory_ceiling: u64,
        sink: Option<LogSink>,
        seat: Seat,
    ) -> StoreState {
        let stdout = CapturedOutput::new(limits.max_log_bytes);
        let stderr = CapturedOutput::new(limits.max_log_bytes);
        StoreState {
            wasi: None,
            seed: limits.seed,
            grants: None,
            http: None,
            deadline: std::time::Instant::now() + limits.timeout,
            http_counters: HttpCounters::default(),
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory_bytes: limits.max_memory_bytes,
                memory_ceiling,
                max_table_elements: limits.max_table_elements,
                max_instances: usize::try_from(limits.max_instances).unwrap_or(usize::MAX),
                memory_bytes: 0,
                peak_memory_bytes: 0,
                denied: None,
            },
            log: LogState {
                operator,
                budget_left: limits.max_log_bytes,
                dropped_messages: 0,
                sink,
            },
            stdout,
            stderr,
            last_error_log: None,
            composer: None,
            seat,
        }
    }

    /// The same, with what `grants` grants the guest's WASI context and
    /// HTTP requests, which count in `http_counters`.
    pub(crate) fn with_grants(
        mut self,
        grants: Option<Arc<Grants>>,
        http_counters: HttpCounters,
    ) -> StoreState {
        self.grants = grants;
        self.http_counters = http_counters;
        self
    }

    /// The same, for a call whose deadline passes at `deadline`.
    pub(crate) fn with_deadline(mut self, deadline: std::time::Instant) -> StoreState {
        self.deadline = deadline;
        self
    }

    /// The same, for a composite whose `compose` calls go to `composer`.
    pub(crate) fn with_composer(mut self, composer: Box<dyn Composer>) -> StoreState {
        self.composer = Some(composer);
        self
    }

    /// Called by every granted capability function before it runs: `Err`
    /// when the call must not reach it (a composite being traced).
    pub(crate) fn before_capability(&mut self, function: &str) -> Result<(), wasmtime::Error> {
        match &mut self.composer {
            Some(composer) => composer.capability(function).map_err(wasmtime::Error::new),
            None => Ok(()),
        }
    }

    /// The limiter, for `Store::limiter`.
    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// What the limiter refused, if it refused anything.
    pub(crate) fn denied(&self) -> Option<Denied> {
        self.limiter.denied
    }

    /// The most linear memory the guest had at once, in bytes.
    pub(crate) fn peak_memory_bytes(&self) -> u64 {
        self.limiter.peak_memory_bytes
    }

    /// Log messages dropped past the log budget.
    pub(crate) fn log_messages_dropped(&self) -> u64 {
        self.log.dropped_messages
    }

    /// Bytes of stdout and stderr dropped past the log budget.
    pub(crate) fn output_bytes_dropped(&self) -> u64 {
        self.stdout.dropped() + self.stderr.dropped()
    }

    /// What the guest wrote to stderr (within the budget).
    /// What a `trap` error quotes: the captured stderr, then the last
    /// error-level log message when stderr does not already hold it.
    pub(crate) fn stderr_text(&self) -> String {
        let mut text = self.stderr.text();
        if let Some(last) = &self.last_error_log
            && !text.contains(last.as_str())
        {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(last);
        }
        text
    }

    /// Reports what the guest wrote and what was dropped, once the call is
    /// over: nothing is dropped silently.
    pub(crate) fn report_output(&self, max_log_bytes: u64) {
        let operator = &*self.log.operator;
        for (stream, output) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
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
        if self.log.dropped_messages > 0 {
            tracing::warn!(
                operator,
                dropped_messages = self.log.dropped_messages,
                budget_bytes = max_log_bytes,
                "guest log messages over the log budget were dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("short".to_owned(), 10), "short");
        assert_eq!(truncated("abcdef".to_owned(), 3), "abc");
        // 'é' is two bytes: a cut inside it goes back to before it.
        assert_eq!(truncated("aé".to_owned(), 2), "a");
        assert_eq!(truncated("é".to_owned(), 0), "");
    }
}
