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
//! Metrics are recorded around all of them, so every call is counted once
//! with its final outcome.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::limits::capped;

/// The policies of one operator. [`Policy::default()`] has none: no retry,
/// no breaker, no bulkhead, and the result cache on (it only ever applies
/// to operators whose metadata says deterministic).
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

    /// Whether results of this (deterministic) operator are cached.
    pub fn cache(mut self, on: bool) -> Self {
        self.cache = on;
        self
    }
}

/// Retry with exponential backoff and jitter.
///
/// The delay before attempt `n + 1` is `min(max_delay, base_delay ×
/// multiplier^(n-1))`, reduced by a random fraction of at most `jitter`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub(crate) max_attempts: u32,
    pub(crate) base_delay: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max_delay: Duration,
    pub(crate) jitter: f64,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) on_timeout: bool,
    pub(crate) on_trap: bool,
}

impl Default for Retry {
    /// 3 attempts, 10 ms base delay, multiplier 2, at most 1 s, jitter 0.5,
    /// no per-attempt timeout, only retryable operator errors.
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            jitter: 0.5,
            attempt_timeout: None,
            on_timeout: false,
            on_trap: false,
        }
    }
}

impl Retry {
    /// Attempts in all, the first included (at least 1). Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Delay before the second attempt. Default: 10 ms; at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = capped(delay);
        self
    }

    /// Growth of the delay per attempt. Default: 2.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier.max(1.0);
        self
    }

    /// Cap on one delay. Default: 1 s; at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = capped(delay);
        self
    }

    /// Largest fraction of a delay taken off at random, 0 to 1 (NaN is
    /// taken as 0). Default: 0.5.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// Bounds each attempt by `timeout` as well as by what is left of the
    /// call's deadline ([`Limits::timeout`](crate::Limits::timeout)), so
    /// that an attempt that hangs leaves time for another. Default: none
    /// (an attempt may use all the time left); at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(capped(timeout));
        self
    }

    /// Also retry attempts that timed out. Default: off. Without an
    /// [`attempt_timeout`](Self::attempt_timeout) a timed-out attempt has
    /// used up the call's deadline, so there is no time left to retry.
    pub fn on_timeout(mut self, on: bool) -> Self {
        self.on_timeout = on;
        self
    }

    /// Also retry calls that trapped (panics included). Default: off.
    pub fn on_trap(mut self, on: bool) -> Self {
        self.on_trap = on;
        self
    }

    /// The delay after failed attempt `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let scaled = self.base_delay.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(scaled.min(self.max_delay.as_secs_f64()))
    }

    fn retries(&self, error: &Error) -> bool {
        match error.kind() {
            ErrorKind::Operator => error.is_retryable(),
            ErrorKind::Timeout => self.on_timeout,
            ErrorKind::Trap => self.on_trap,
            _ => false,
        }
    }
}

/// A circuit breaker: closed → open after `consecutive_failures` failures
/// in a row (or a failure ratio over a window) → half-open after
/// `cool_down`, letting `half_open_probes` calls through; a probe's success
/// closes it, a failure opens it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_ratio: Option<(f64, u32)>,
    pub(crate) cool_down: Duration,
    pub(crate) half_open_probes: u32,
}

impl Default for Breaker {
    /// Opens after 5 consecutive failures, cools down for 5 s, 1 probe.
    fn default() -> Self {
        Breaker {
            consecutive_failures: 5,
            failure_ratio: None,
            cool_down: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }
}

impl Breaker {
    /// Failures in a row that open the breaker. Default: 5.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures.max(1);
        self
    }

    /// Also open when at least `ratio` (0 to 1) of the last `window` calls
    /// failed. Default: off; a NaN ratio leaves it off.
    pub fn failure_ratio(mut self, ratio: f64, window: u32) -> Self {
        self.failure_ratio = (!ratio.is_nan()).then(|| (ratio.clamp(0.0, 1.0), window.max(1)));
        self
    }

    /// How long it stays open. Default: 5 s; at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = capped(cool_down);
        self
    }

    /// Calls let through while half-open. Default: 1.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes.max(1);
        self
    }
}

/// Bounds calls of one operator: at most `max_in_flight` run, at most
/// `max_queue` wait; beyond that a call fails at once with `overloaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulkhead {
    pub(crate) max_in_flight: usize,
    pub(crate) max_queue: usize,
}

impl Default for Bulkhead {
    /// 16 in flight, 64 queued.
    fn default() -> Self {
        Bulkhead {
            max_in_flight: 16,
            max_queue: 64,
        }
    }
}

impl Bulkhead {
    /// Calls running at once. Default: 16.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Calls waiting for a slot. Default: 64.
    pub fn max_queue(mut self, max: usize) -> Self {
        self.max_queue = max;
        self
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls fail at once.
    Open,
    /// A bounded number of probe calls pass.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum Circuit {
    Closed {
        consecutive: u32,
        window: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probes: u32,
    },
}

/// Whether a call was let through as a normal call or as a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
}

/// A breaker state change, for metrics and logs.
pub(crate) type Transition = (BreakerState, BreakerState);

/// The policy state of one loaded operator (one digest).
#[derive(Debug)]
pub(crate) struct PolicyState {
    circuit: Mutex<Circuit>,
    bulkhead: Mutex<Option<(Bulkhead, std::sync::Arc<Semaphore>)>>,
    queued: AtomicUsize,
    jitter_seed: AtomicU64,
}

impl Default for PolicyState {
    fn default() -> Self {
        PolicyState {
            circuit: Mutex::new(Circuit::Closed {
                consecutive: 0,
                window: VecDeque::new(),
            }),
            bulkhead: Mutex::new(None),
            queued: AtomicUsize::new(0),
            jitter_seed: AtomicU64::new(0x853c_49e6_748f_ea9b),
        }
    }
}

/// What an outcome tells the breaker: `Some(true)` for the operator's own
/// failures, `Some(false)` for a success, and `None` for the caller's
/// (bad input) and the policies' refusals, which say nothing about the
/// operator: they neither count as failures nor reset the count.
pub(crate) fn verdict<T>(outcome: &Result<T, Error>) -> Option<bool> {
    match outcome {
        Ok(_) => Some(false),
        Err(error) => matches!(
            error.kind(),
            ErrorKind::Operator
                | ErrorKind::Timeout
                | ErrorKind::Fuel
                | ErrorKind::Memory
                | ErrorKind::StackOverflow
                | ErrorKind::Trap
        )
        .then_some(true),
    }
}

impl PolicyState {
    pub(crate) fn breaker_state(&self) -> BreakerState {
        match *self
            .circuit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            Circuit::Closed { .. } => BreakerState::Closed,
            Circuit::Open { .. } => BreakerState::Open,
            Circuit::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Lets a call through, or says how long until the breaker half-opens.
    pub(crate) fn admit(
        &self,
        breaker: &Breaker,
        now: Instant,
    ) -> Result<(Admission, Option<Transition>), Duration> {
        let mut circuit = self
            .circuit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &mut *circuit {
            Circuit::Closed { .. } => Ok((Admission::Normal, None)),
            Circuit::Open { until } if now < *until => Err(*until - now),
            Circuit::Open { .. } => {
                *circuit = Circuit::HalfOpen { probes: 1 };
                Ok((
                    Admission::Probe,
                    Some((BreakerState::Open, BreakerState::HalfOpen)),
                ))
            }
            Circuit::HalfOpen { probes } if *probes < breaker.half_open_probes => {
                *probes += 1;
                Ok((Admission::Probe, None))
            }
            Circuit::HalfOpen { .. } => Err(breaker.cool_down),
        }
    }

    /// Records a call's outcome; returns the state change it caused.
    pub(crate) fn record(
        &self,
        breaker: &Breaker,
        admission: Admission,
        failed: bool,
        now: Instant,
    ) -> Option<Transition> {
        let mut circuit = self
            .circuit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = Circuit::Open {
            until: now + breaker.cool_down,
        };
        match (&mut *circuit, admission) {
            (Circuit::HalfOpen { .. }, Admission::Probe) if failed => {
                *circuit = open;
                Some((BreakerState::HalfOpen, BreakerState::Open))
            }
            (Circuit::HalfOpen { .. }, Admission::Probe) => {
                *circuit = Circuit::Closed {
                    consecutive: 0,
                    window: VecDeque::new(),
                };
                Some((BreakerState::HalfOpen, BreakerState::Closed))
            }
            (
                Circuit::Closed {
                    consecutive,
                    window,
                },
                Admission::Normal,
            ) => {
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                let mut trips = *consecutive >= breaker.consecutive_failures;
                if let Some((ratio, size)) = breaker.failure_ratio {
                    window.push_back(failed);
                    while window.len() > size as usize {
                        window.pop_front();
                    }
                    let failures = window.iter().filter(|&&failed| failed).count();
                    trips |=
                        window.len() == size as usize && failures as f64 >= ratio * f64::from(size);
                }
                if trips {
                    *circuit = open;
                    Some((BreakerState::Closed, BreakerState::Open))
                } else {
                    None
                }
            }
            // A call admitted before the state changed: its outcome is stale.
            _ => None,
        }
    }

    /// Gives back what an admission took when its call ends without a
    /// verdict (refused by the bulkhead, a neutral error, or cancelled): a
    /// probe's slot, so that the breaker cannot stay half-open with every
    /// slot taken by calls that will never report.
    pub(crate) fn release(&self, admission: Admission) {
        if admission != Admission::Probe {
            return;
        }
        let mut circuit = self
            .circuit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Circuit::HalfOpen { probes } = &mut *circuit {
            *probes = probes.saturating_sub(1);
        }
    }

    /// The semaphore of the bulkhead `config`, made anew when it changes.
    pub(crate) fn bulkhead(&self, config: &Bulkhead) -> std::sync::Arc<Semaphore> {
        let mut bulkhead = self
            .bulkhead
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*bulkhead {
            Some((current, semaphore)) if current == config => semaphore.clone(),
            _ => {
                let semaphore = std::sync::Arc::new(Semaphore::new(config.max_in_flight));
                *bulkhead = Some((config.clone(), semaphore.clone()));
                semaphore
            }
        }
    }

    pub(crate) fn queued(&self) -> &AtomicUsize {
        &self.queued
    }

    /// A jitter fraction in [0, 1): a splitmix64 sequence, so runs are
    /// reproducible.
    pub(crate) fn next_jitter(&self) -> f64 {
        let mut z = self
            .jitter_seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Retry {
    /// Whether `error` from attempt `attempt` is tried again, and after
    /// what delay; `None` once attempts run out, the error is not
    /// retryable, or the delay would end past `deadline`.
    pub(crate) fn next_delay(
        &self,
        error: &Error,
        attempt: u32,
        jitter: f64,
        now: Instant,
        deadline: Instant,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts || !self.retries(error) {
            return None;
        }
        let delay = self.backoff(attempt).mul_f64(1.0 - self.jitter * jitter);
        (now + delay < deadline).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_error(retryable: bool) -> Error {
        Error::Operator {
            operator: "op".into(),
            code: "x".into(),
            message: "y".into(),
            retryable,
        }
    }

    #[test]
    fn backoff_schedule() {
        let retry = Retry::default()
            .max_attempts(6)
            .base_delay(Duration::from_millis(10))
            .multiplier(3.0)
            .max_delay(Duration::from_millis(200))
            .jitter(0.0);
        let delays: Vec<u128> = (1..=5)
            .map(|attempt| retry.backoff(attempt).as_millis())
            .collect();
        assert_eq!(delays, [10, 30, 90, 200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_decisions() {
        let retry = Retry::default().max_attempts(3).jitter(0.5);
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let delay = retry
            .next_delay(&operator_error(true), 1, 0.5, now, far)
            .expect("retryable");
        assert_eq!(delay, Duration::from_micros(7_500), "10 ms less a quarter");
        assert_eq!(
            retry.next_delay(&operator_error(false), 1, 0.0, now, far),
            None,
            "not retryable"
        );
        assert_eq!(
            retry.next_delay(&operator_error(true), 3, 0.0, now, far),
            None,
            "attempts used up"
        );
        let near = now + Duration::from_millis(5);
        assert_eq!(
            retry.next_delay(&operator_error(true), 1, 0.0, now, near),
            None,
            "never sleeps past the deadline"
        );
        let timeout = Error::Timeout {
            operator: "op".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(retry.next_delay(&timeout, 1, 0.0, now, far), None);
        assert!(
            retry
                .clone()
                .on_timeout(true)
                .next_delay(&timeout, 1, 0.0, now, far)
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_transitions_and_probes() {
        let breaker = Breaker::default()
            .consecutive_failures(3)
            .cool_down(Duration::from_secs(2))
            .half_open_probes(2);
        let state = PolicyState::default();
        let now = Instant::now();
        for _ in 0..2 {
            let (admission, _) = state.admit(&breaker, now).expect("closed");
            assert_eq!(state.record(&breaker, admission, true, now), None);
        }
        let (admission, _) = state.admit(&breaker, now).expect("closed");
        assert_eq!(
            state.record(&breaker, admission, false, now),
            None,
            "a success resets the count"
        );
        for _ in 0..2 {
            state.record(&breaker, Admission::Normal, true, now);
        }
        assert_eq!(
            state.record(&breaker, Admission::Normal, true, now),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(
            state.admit(&breaker, now + Duration::from_millis(500)),
            Err(Duration::from_millis(1500))
        );

        let later = now + Duration::from_secs(2);
        let (first, transition) = state.admit(&breaker, later).expect("half-open");
        assert_eq!(
            (first, transition),
            (
                Admission::Probe,
                Some((BreakerState::Open, BreakerState::HalfOpen))
            )
        );
        assert_eq!(
            state.admit(&breaker, later).map(|(admission, _)| admission),
            Ok(Admission::Probe)
        );
        assert!(state.admit(&breaker, later).is_err(), "only two probes");
        assert_eq!(
            state.record(&breaker, Admission::Probe, true, later),
            Some((BreakerState::HalfOpen, BreakerState::Open))
        );
        let again = later + Duration::from_secs(2);
        let (probe, _) = state.admit(&breaker, again).expect("half-open again");
        assert_eq!(
            state.record(&breaker, probe, false, again),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        assert_eq!(state.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_a_verdict_gives_its_slot_back() {
        let breaker = Breaker::default()
            .consecutive_failures(1)
            .cool_down(Duration::from_secs(1))
            .half_open_probes(1);
        let state = PolicyState::default();
        let now = Instant::now();
        state.record(&breaker, Admission::Normal, true, now);
        let later = now + Duration::from_secs(1);
        let (probe, _) = state.admit(&breaker, later).expect("half-open");
        assert!(
            state.admit(&breaker, later).is_err(),
            "the one slot is taken"
        );
        state.release(probe);
        assert_eq!(state.breaker_state(), BreakerState::HalfOpen);
        let (probe, _) = state
            .admit(&breaker, later)
            .expect("the slot is free again");
        assert_eq!(probe, Admission::Probe);
        // A normal admission has nothing to give back.
        state.release(Admission::Normal);
        assert!(state.admit(&breaker, later).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn huge_durations_and_nan_never_panic() {
        let breaker = Breaker::default()
            .consecutive_failures(1)
            .cool_down(Duration::MAX)
            .failure_ratio(f64::NAN, 4);
        assert_eq!(breaker.failure_ratio, None, "a NaN ratio leaves it off");
        let state = PolicyState::default();
        let now = Instant::now();
        assert_eq!(
            state.record(&breaker, Admission::Normal, true, now),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(state.admit(&breaker, now), Err(crate::MAX_DURATION));
        let retry = Retry::default()
            .base_delay(Duration::MAX)
            .max_delay(Duration::MAX)
            .multiplier(f64::NAN)
            .jitter(f64::NAN);
        let error = operator_error(true);
        let far = now + crate::MAX_DURATION;
        assert_eq!(retry.next_delay(&error, 1, 0.5, now, far), None);
        assert_eq!(
            retry.next_delay(&error, 1, 0.5, now, far + crate::MAX_DURATION),
            Some(crate::MAX_DURATION)
        );
    }

    #[test]
    fn failure_ratio_over_a_window() {
        let breaker = Breaker::default()
            .consecutive_failures(100)
            .failure_ratio(0.5, 4);
        let state = PolicyState::default();
        let now = Instant::now();
        for failed in [true, false, true] {
            assert_eq!(
                state.record(&breaker, Admission::Normal, failed, now),
                None,
                "window not full yet"
            );
        }
        assert_eq!(
            state.record(&breaker, Admission::Normal, false, now),
            Some((BreakerState::Closed, BreakerState::Open)),
            "2 of the last 4 failed"
        );
    }

    #[test]
    fn jitter_is_a_fraction() {
        let state = PolicyState::default();
        let samples: Vec<f64> = (0..1000).map(|_| state.next_jitter()).collect();
        assert!(samples.iter().all(|&j| (0.0..1.0).contains(&j)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
