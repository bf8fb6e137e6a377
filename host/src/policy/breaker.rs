//! The circuit breaker: its configuration and the state of one operator's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::limits::capped;

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
    /// Every state change a breaker makes, for metrics.
    pub(crate) const TRANSITIONS: [Transition; 4] = [
        (BreakerState::Closed, BreakerState::Open),
        (BreakerState::Open, BreakerState::HalfOpen),
        (BreakerState::HalfOpen, BreakerState::Open),
        (BreakerState::HalfOpen, BreakerState::Closed),
    ];

    /// `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// A breaker state change, for metrics and logs.
pub(crate) type Transition = (BreakerState, BreakerState);

/// Whether a call was let through as a normal call or as a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
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

impl Circuit {
    fn closed() -> Self {
        Circuit::Closed {
            consecutive: 0,
            window: VecDeque::new(),
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

/// The circuit of one operator's breaker.
#[derive(Debug)]
pub(crate) struct CircuitState(Mutex<Circuit>);

impl Default for CircuitState {
    fn default() -> Self {
        CircuitState(Mutex::new(Circuit::closed()))
    }
}

impl CircuitState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
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
        let mut circuit = self.lock();
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
        let mut circuit = self.lock();
        let open = Circuit::Open {
            until: now + breaker.cool_down,
        };
        match (&mut *circuit, admission) {
            (Circuit::HalfOpen { .. }, Admission::Probe) if failed => {
                *circuit = open;
                Some((BreakerState::HalfOpen, BreakerState::Open))
            }
            (Circuit::HalfOpen { .. }, Admission::Probe) => {
                *circuit = Circuit::closed();
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
        if let Circuit::HalfOpen { probes } = &mut *self.lock() {
            *probes = probes.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn breaker_transitions_and_probes() {
        let breaker = Breaker::default()
            .consecutive_failures(3)
            .cool_down(Duration::from_secs(2))
            .half_open_probes(2);
        let state = CircuitState::default();
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
        assert_eq!(state.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_a_verdict_gives_its_slot_back() {
        let breaker = Breaker::default()
            .consecutive_failures(1)
            .cool_down(Duration::from_secs(1))
            .half_open_probes(1);
        let state = CircuitState::default();
        let now = Instant::now();
        state.record(&breaker, Admission::Normal, true, now);
        let later = now + Duration::from_secs(1);
        let (probe, _) = state.admit(&breaker, later).expect("half-open");
        assert!(
            state.admit(&breaker, later).is_err(),
            "the one slot is taken"
        );
        state.release(probe);
        assert_eq!(state.state(), BreakerState::HalfOpen);
        let (probe, _) = state
            .admit(&breaker, later)
            .expect("the slot is free again");
        assert_eq!(probe, Admission::Probe);
        // A normal admission has nothing to give back.
        state.release(Admission::Normal);
        assert!(state.admit(&breaker, later).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn huge_cool_downs_and_nan_never_panic() {
        let breaker = Breaker::default()
            .consecutive_failures(1)
            .cool_down(Duration::MAX)
            .failure_ratio(f64::NAN, 4);
        assert_eq!(breaker.failure_ratio, None, "a NaN ratio leaves it off");
        let state = CircuitState::default();
        let now = Instant::now();
        assert_eq!(
            state.record(&breaker, Admission::Normal, true, now),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(state.admit(&breaker, now), Err(crate::MAX_DURATION));
    }

    #[test]
    fn failure_ratio_over_a_window() {
        let breaker = Breaker::default()
            .consecutive_failures(100)
            .failure_ratio(0.5, 4);
        let state = CircuitState::default();
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
}
