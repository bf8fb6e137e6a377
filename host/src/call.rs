//! A call: the policy stack around one operator's attempts, in the order
//! documented in [`crate::policy`] — result cache → circuit breaker →
//! bulkhead → retry → attempt — with metrics and a `tracing` span around
//! it all; and the public `Operator::call*` methods.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant as StdInstant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::Error;
use crate::limits::Limits;
use crate::operator::{CallOutput, Operator};
use crate::policy::verdict;
use crate::policy::{Admission, CircuitState, Policy, PolicyState, Refused, ResultKey, Retry};
use crate::sandbox::CallStats;

impl Operator {
    /// Calls `invoke` with `input` in a fresh sandbox under `limits`, with
    /// the operator's policies on its host (see [`crate::policy`]).
    ///
    /// `input` is a JSON object keyed by parameter name, or an array of the
    /// arguments in order (`null` or `[]` for no parameters). It is checked
    /// against the signature before any guest code runs. The result is the
    /// `ok` value of `invoke` as JSON; an `err` is an [`Error::Operator`].
    pub async fn call(&self, input: &Value, limits: &Limits) -> Result<Value, Error> {
        self.call_with_stats(input, limits)
            .await
            .map(|output| output.value)
    }

    /// Like [`Operator::call`], with what the call used.
    pub async fn call_with_stats(
        &self,
        input: &Value,
        limits: &Limits,
    ) -> Result<CallOutput, Error> {
        let installed = self.runtime().policy_for(self.name());
        let policies = Policies {
            policy: &installed.policy,
            fingerprint: installed.fingerprint,
            state: self.policy_state(),
            on_host: true,
            remote: None,
        };
        call(self, input, limits, policies).await.result
    }

    /// Calls `invoke` with Rust values: `params` serializes to the input
    /// JSON (a tuple or array in parameter order, or a struct keyed by
    /// parameter name) and the result deserializes into `R`.
    pub async fn call_typed<P: Serialize, R: DeserializeOwned>(
        &self,
        params: &P,
        limits: &Limits,
    ) -> Result<R, Error> {
        let input = serde_json::to_value(params).map_err(|error| Error::Validation {
            operator: self.name().to_owned(),
            path: "$".into(),
            expected: "parameters that serialize to JSON".into(),
            found: error.to_string(),
        })?;
        let output = self.call(&input, limits).await?;
        serde_json::from_value(output).map_err(|error| Error::Validation {
            operator: self.name().to_owned(),
            path: "$ (result)".into(),
            expected: std::any::type_name::<R>().into(),
            found: error.to_string(),
        })
    }
}

/// The policies a call runs under, and the state they keep: the
/// operator's own on its host, or a checked graph's.
#[derive(Clone, Copy)]
pub(crate) struct Policies<'a> {
    pub(crate) policy: &'a Policy,
    /// The policy's fingerprint (see `Installed`).
    pub(crate) fingerprint: u64,
    pub(crate) state: &'a PolicyState,
    /// Whether they are the operator's own on its host, whose breaker is
    /// the one the `breaker_state` metric shows.
    pub(crate) on_host: bool,
    /// Where the attempts run: handed to a remote executor, or (`None`)
    /// in a sandbox of this host.
    pub(crate) remote: Option<&'a RemoteAttempt>,
}

/// One attempt handed elsewhere (a remote worker): the operator, its input
/// and the attempt's limits, to the output value or the worker's error.
pub(crate) type RemoteAttempt = dyn Fn(&Operator, Value, Limits) -> Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>>
    + Send
    + Sync;

/// One attempt, here or remote.
async fn attempt(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    remote: Option<&RemoteAttempt>,
) -> Result<CallOutput, Error> {
    match remote {
        None => operator.attempt(input, limits).await,
        Some(remote) => remote(operator, input.clone(), limits.clone())
            .await
            .map(|value| CallOutput {
                value,
                // What a remote attempt used stays with its worker.
                stats: CallStats::default(),
                cached: false,
            }),
    }
}

/// How a call ended, and the attempts it made (0 for a cache hit or a
/// refusal by a policy).
#[derive(Debug)]
pub(crate) struct Called {
    pub(crate) result: Result<CallOutput, Error>,
    pub(crate) attempts: u32,
}

/// One call of `operator` with `input` under `limits` and `policies`:
/// counted once in the metrics with its final outcome.
pub(crate) async fn call(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policies: Policies<'_>,
) -> Called {
    let span =
        tracing::debug_span!("call", operator = %operator.name(), digest = %operator.digest());
    let started = StdInstant::now();
    let called = cached(operator, input, limits, policies)
        .instrument(span.clone())
        .await;
    operator
        .metrics()
        .call(called.result.as_ref().map(drop).map_err(Error::kind));
    tracing::debug!(
        parent: &span,
        outcome = match &called.result { Ok(_) => "ok", Err(error) => error.kind().as_str() },
        attempts = called.attempts,
        elapsed_us = started.elapsed().as_micros() as u64,
        "call finished"
    );
    called
}

/// Policy 1, the result cache, single flight, for deterministic operators.
async fn cached(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policies: Policies<'_>,
) -> Called {
    let cacheable = policies.policy.cache && operator.is_repeatable();
    let key = cacheable
        .then(|| {
            let digest = operator.digest();
            ResultKey::new(
                operator.name_arc(),
                digest,
                policies.fingerprint,
                input,
                limits,
            )
        })
        .flatten();
    // Too deep to key: the codec refuses or accepts it (without recursing
    // over the JSON) when the call runs.
    let Some(key) = key else {
        return guarded(operator, input, limits, policies).await;
    };
    let runtime = operator.runtime();
    for _ in 0..2 {
        let ran = AtomicBool::new(false);
        let attempts = AtomicU32::new(0);
        // What the call used, when this caller's call is the one that ran.
        let ran_stats = std::sync::Mutex::new(CallStats::default());
        let loaded = runtime
            .results
            .try_get_with(key.clone(), async {
                ran.store(true, Ordering::Relaxed);
                let called = guarded(operator, input, limits, policies).await;
                attempts.store(called.attempts, Ordering::Relaxed);
                called.result.map(|output| {
                    *ran_stats
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = output.stats;
                    (Instant::now(), Arc::new(output.value))
                })
            })
            .await;
        let ran = ran.load(Ordering::Relaxed);
        let attempts = attempts.load(Ordering::Relaxed);
        if let Ok((stored, _)) = &loaded
            && !ran
            && stored.elapsed() >= runtime.result_ttl
        {
            // Expired (moka's own expiry runs on another clock): drop it
            // and look again, which runs the call.
            runtime.results.invalidate(&key).await;
            continue;
        }
        // A shared error is neither: errors are never cached.
        if ran || loaded.is_ok() {
            operator.metrics().cache(!ran);
        }
        return match loaded {
            Ok((_, value)) => Called {
                result: Ok(CallOutput {
                    value: Value::clone(&value),
                    // A hit ran nothing: it used nothing.
                    stats: ran_stats
                        .into_inner()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    cached: !ran,
                }),
                attempts,
            },
            Err(shared) => Called {
                result: Err(Arc::unwrap_or_clone(shared)),
                attempts: attempts.max(u32::from(ran)),
            },
        };
    }
    // Expired twice in a row: only with a zero TTL; run uncached.
    guarded(operator, input, limits, policies).await
}

/// A breaker admission whose call has not reported a verdict yet; dropped
/// without one (a bulkhead refusal, a neutral error, a cancelled call), it
/// gives back what it took.
struct Admitted<'a> {
    circuit: &'a CircuitState,
    admission: Option<Admission>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.circuit.release(admission);
        }
    }
}

/// Policy 2, the circuit breaker, around the bulkhead.
async fn guarded(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policies: Policies<'_>,
) -> Called {
    let Some(breaker) = &policies.policy.breaker else {
        return bulkheaded(operator, input, limits, policies).await;
    };
    let metrics = &operator.runtime().metrics;
    let circuit = &policies.state.circuit;
    let admission = match circuit.admit(breaker, Instant::now()) {
        Ok((admission, transition)) => {
            if let Some((from, to)) = transition {
                metrics.transition(operator.name(), from, to, policies.on_host);
            }
            admission
        }
        Err(retry_after) => {
            return Called {
                result: Err(Error::CircuitOpen {
                    operator: operator.name().to_owned(),
                    retry_after,
                }),
                attempts: 0,
            };
        }
    };
    let mut admitted = Admitted {
        circuit,
        admission: Some(admission),
    };
    let called = bulkheaded(operator, input, limits, policies).await;
    if let Some(failed) = verdict(&called.result) {
        admitted.admission = None;
        if let Some((from, to)) = circuit.record(breaker, admission, failed, Instant::now()) {
            metrics.transition(operator.name(), from, to, policies.on_host);
        }
    }
    called
}

/// Policy 3, the bulkhead, around the retries: time in its queue counts against
/// the call's deadline.
async fn bulkheaded(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policies: Policies<'_>,
) -> Called {
    let Some(bulkhead) = &policies.policy.bulkhead else {
        return retried(operator, input, limits, policies).await;
    };
    let entered = policies
        .state
        .bulkhead
        .enter(bulkhead, limits.timeout, || operator.metrics().queued())
        .await;
    let refusal = |error| Called {
        result: Err(error),
        attempts: 0,
    };
    let entered = match entered {
        Ok(entered) => entered,
        Err(Refused::Full) => {
            return refusal(Error::Overloaded {
                operator: operator.name().to_owned(),
                max_in_flight: bulkhead.max_in_flight,
                max_queue: bulkhead.max_queue,
            });
        }
        // A call that times out in the queue is a timeout like any other
        // (the breaker counts it: the operator's slots are saturated).
        Err(Refused::TimedOut) => {
            return refusal(Error::Timeout {
                operator: operator.name().to_owned(),
                timeout: limits.timeout,
            });
        }
    };
    match entered.queued_for {
        None => retried(operator, input, limits, policies).await,
        Some(waited) => {
            let left = limits
                .clone()
                .timeout(limits.timeout.saturating_sub(waited));
            retried(operator, input, &left, policies).await
        }
    }
}

/// Policy 4, the retries, around the attempts, within the call's deadline.
async fn retried(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policies: Policies<'_>,
) -> Called {
    let _in_flight = operator.metrics().in_flight();
    let Some(retry) = &policies.policy.retry else {
        return Called {
            result: attempt(operator, input, limits, policies.remote).await,
            attempts: 1,
        };
    };
    let deadline = Instant::now() + limits.timeout;
    let mut attempt_number = 1;
    loop {
        let result = if attempt_number == 1 && retry.attempt_timeout.is_none() {
            attempt(operator, input, limits, policies.remote).await
        } else {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = retry
                .attempt_timeout
                .map_or(remaining, |bound| bound.min(remaining));
            let attempt_limits = limits
                .clone()
                .seed(Retry::attempt_seed(limits.seed, attempt_number))
                .timeout(timeout);
            attempt(operator, input, &attempt_limits, policies.remote)
                .instrument(tracing::debug_span!("attempt", attempt = attempt_number))
                .await
        };
        let Err(error) = &result else {
            return Called {
                result,
                attempts: attempt_number,
            };
        };
        let jitter = policies.state.jitter.next();
        match retry.next_delay(error, attempt_number, jitter, Instant::now(), deadline) {
            Some(delay) => {
                tracing::debug!(operator = operator.name(), attempt = attempt_number, delay_us = delay.as_micros() as u64, error = %error, "retrying");
                operator.metrics().retry();
                tokio::time::sleep(delay).await;
                attempt_number += 1;
            }
            None => {
                return Called {
                    result,
                    attempts: attempt_number,
                };
            }
        }
    }
}
