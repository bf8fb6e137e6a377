//! Retry with exponential backoff and jitter, within the call's deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::limits::capped;

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

    /// Growth of the delay per attempt, at least 1 (NaN is taken as 1).
    /// Default: 2.
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

    /// The seed of attempt `attempt` (1-based) of a call seeded `seed`:
    /// the first keeps the caller's, each retry sees other randomness,
    /// reproducibly.
    pub(crate) fn attempt_seed(seed: u64, attempt: u32) -> u64 {
        if attempt <= 1 {
            seed
        } else {
            seed ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
    }
}

/// A reproducible source of jitter fractions: a splitmix64 sequence.
#[derive(Debug)]
pub(crate) struct Jitter(std::sync::atomic::AtomicU64);

impl Default for Jitter {
    fn default() -> Self {
        Jitter(std::sync::atomic::AtomicU64::new(0x853c_49e6_748f_ea9b))
    }
}

impl Jitter {
    /// The next fraction, in [0, 1).
    pub(crate) fn next(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
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
    async fn huge_delays_and_nan_never_panic() {
        let now = Instant::now();
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
    fn jitter_is_a_fraction() {
        let jitter = Jitter::default();
        let samples: Vec<f64> = (0..1000).map(|_| jitter.next()).collect();
        assert!(samples.iter().all(|&j| (0.0..1.0).contains(&j)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn retries_see_other_seeds() {
        assert_eq!(Retry::attempt_seed(7, 1), 7, "the first keeps the caller's");
        assert_ne!(Retry::attempt_seed(7, 2), 7);
        assert_ne!(Retry::attempt_seed(7, 2), Retry::attempt_seed(7, 3));
    }
}
