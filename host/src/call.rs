//! The policy stack around a call, in the order documented in
//! [`crate::policy`]: result cache → circuit breaker → bulkhead → retry →
//! sandbox call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::Error;
use crate::limits::Limits;
use crate::operator::{CallOutput, Operator, clone_error};
use crate::policy::{Admission, Policy, verdict};
use crate::sandbox::CallStats;

/// Key of the result cache: the operator (for metrics), its digest and the
/// canonical encoding of the input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ResultKey {
    pub(crate) operator: Arc<str>,
    pub(crate) key: String,
}

/// A cached result and when it was stored (on tokio's clock, so expiry is
/// testable with a paused clock).
pub(crate) type CachedResult = (Instant, Arc<Value>);

/// Inputs nested deeper than this are not cached: the key is built by
/// recursion, before the input is checked against the signature.
const MAX_KEY_DEPTH: usize = 64;

/// JSON with object keys sorted, whatever order the input had; `None` when
/// the input is nested deeper than [`MAX_KEY_DEPTH`].
fn canonical(value: &Value, out: &mut String) -> Option<()> {
    canonical_at(value, out, 0)
}

fn canonical_at(value: &Value, out: &mut String, depth: usize) -> Option<()> {
    if depth > MAX_KEY_DEPTH {
        return None;
    }
    match value {
        Value::Object(object) => {
            let mut entries: Vec<_> = object.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_at(value, out, depth + 1)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical_at(item, out, depth + 1)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
    Some(())
}

pub(crate) async fn with_policies(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policy: &Policy,
) -> (Result<CallOutput, Error>, u32) {
    let runtime = operator.runtime();
    let cacheable = policy.cache && limits.use_result_cache && operator.metadata().deterministic;
    if !cacheable {
        return guarded(operator, input, limits, policy).await;
    }
    let mut key = String::with_capacity(operator.digest_ref().len() + 32);
    key.push_str(operator.digest_ref());
    // Limits decide whether a call succeeds: calls under other limits must
    // not share an execution (single flight) or, in principle, a result.
    key.push_str(&format!(
        "\n{:?}/{:?}/{}/{}/{}\n",
        limits.timeout,
        limits.fuel,
        limits.max_memory_bytes,
        limits.max_input_bytes,
        limits.max_output_bytes
    ));
    if canonical(input, &mut key).is_none() {
        // Too deep to key; the codec refuses or accepts it (without
        // recursing over the JSON) when the call runs.
        return guarded(operator, input, limits, policy).await;
    }
    let key = ResultKey {
        operator: operator.name_arc().clone(),
        key,
    };
    // Single flight: concurrent identical calls wait for one execution.
    for _ in 0..2 {
        let ran = AtomicBool::new(false);
        let attempts = AtomicUsize::new(0);
        let loaded = runtime
            .results
            .try_get_with(key.clone(), async {
                ran.store(true, Ordering::Relaxed);
                let (result, made) = guarded(operator, input, limits, policy).await;
                attempts.store(made as usize, Ordering::Relaxed);
                result.map(|output| (Instant::now(), Arc::new(output.value)))
            })
            .await;
        let ran = ran.load(Ordering::Relaxed);
        let attempts = attempts.load(Ordering::Relaxed) as u32;
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
        match loaded {
            Ok((_, value)) => {
                let output = CallOutput {
                    value: Value::clone(&value),
                    stats: CallStats::default(),
                    cached: !ran,
                };
                return (Ok(output), attempts);
            }
            Err(shared) => {
                let error = Arc::try_unwrap(shared).unwrap_or_else(|shared| clone_error(&shared));
                return (Err(error), attempts.max(u32::from(ran)));
            }
        }
    }
    // Expired twice in a row: only with a zero TTL; run uncached.
    guarded(operator, input, limits, policy).await
}

/// Circuit breaker around the bulkhead.
async fn guarded(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policy: &Policy,
) -> (Result<CallOutput, Error>, u32) {
    let Some(breaker) = &policy.breaker else {
        return bulkheaded(operator, input, limits, policy).await;
    };
    let metrics = &operator.runtime().metrics;
    let state = operator.policy_state();
    let admission = match state.admit(breaker, Instant::now()) {
        Ok((admission, transition)) => {
            if let Some((from, to)) = transition {
                metrics.transition(operator.name(), from, to);
            }
            admission
        }
        Err(retry_after) => {
            let error = Error::CircuitOpen {
                operator: operator.name().to_owned(),
                retry_after,
            };
            return (Err(error), 0);
        }
    };
    let mut admitted = Admitted {
        state,
        admission: Some(admission),
    };
    let (result, attempts) = bulkheaded(operator, input, limits, policy).await;
    if let Some(failed) = verdict(&result) {
        admitted.admission = None;
        if let Some((from, to)) = state.record(breaker, admission, failed, Instant::now()) {
            metrics.transition(operator.name(), from, to);
        }
    }
    (result, attempts)
}

/// A breaker admission whose call has not reported a verdict yet; dropped
/// without one (a bulkhead refusal, a neutral error, a cancelled call), it
/// gives back what it took.
struct Admitted<'a> {
    state: &'a crate::policy::PolicyState,
    admission: Option<Admission>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.state.release(admission);
        }
    }
}

/// Leaves the bulkhead's queue when dropped, a cancelled call included.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bulkhead around the retries.
async fn bulkheaded(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policy: &Policy,
) -> (Result<CallOutput, Error>, u32) {
    let Some(bulkhead) = &policy.bulkhead else {
        return retried(operator, input, limits, policy).await;
    };
    let state = operator.policy_state();
    let semaphore = state.bulkhead(bulkhead);
    let mut waited_limits = None;
    let _permit = match semaphore.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            let queued = state.queued();
            if queued.fetch_add(1, Ordering::AcqRel) >= bulkhead.max_queue {
                queued.fetch_sub(1, Ordering::AcqRel);
                let error = Error::Overloaded {
                    operator: operator.name().to_owned(),
                    max_in_flight: bulkhead.max_in_flight,
                    max_queue: bulkhead.max_queue,
                };
                return (Err(error), 0);
            }
            let _queued = Queued(queued);
            let _gauge = operator.metrics().queued();
            // Time in the queue counts against the call's deadline; a call
            // that times out there is a timeout like any other (the breaker
            // counts it: the operator's slots are saturated).
            let queued_at = Instant::now();
            let acquired = tokio::time::timeout(limits.timeout, semaphore.acquire_owned()).await;
            let Ok(acquired) = acquired else {
                let error = Error::Timeout {
                    operator: operator.name().to_owned(),
                    timeout: limits.timeout,
                };
                return (Err(error), 0);
            };
            let left = limits.timeout.saturating_sub(queued_at.elapsed());
            waited_limits = Some(limits.clone().timeout(left));
            match acquired {
                Ok(permit) => permit,
                Err(_closed) => {
                    // A semaphore replaced by a new bulkhead configuration is
                    // dropped, never closed; a closed one would be a bug here.
                    let error = Error::Config {
                        message: format!("{}: bulkhead closed", operator.name()),
                    };
                    return (Err(error), 0);
                }
            }
        }
    };
    retried(
        operator,
        input,
        waited_limits.as_ref().unwrap_or(limits),
        policy,
    )
    .await
}

/// Mixes the attempt number into the seed: each retry sees other
/// randomness, reproducibly.
fn attempt_seed(seed: u64, attempt: u32) -> u64 {
    seed ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Retries around the sandbox call, within the call's deadline.
async fn retried(
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    policy: &Policy,
) -> (Result<CallOutput, Error>, u32) {
    let _in_flight = operator.metrics().in_flight();
    let Some(retry) = &policy.retry else {
        return (operator.sandbox_call(input, limits).await, 1);
    };
    let deadline = Instant::now() + limits.timeout;
    let mut attempt = 1;
    loop {
        let result = if attempt == 1 && retry.attempt_timeout.is_none() {
            operator.sandbox_call(input, limits).await
        } else {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = retry
                .attempt_timeout
                .map_or(remaining, |bound| bound.min(remaining));
            // The first attempt keeps the caller's seed.
            let seed = if attempt == 1 {
                limits.seed
            } else {
                attempt_seed(limits.seed, attempt)
            };
            let attempt_limits = limits.clone().seed(seed).timeout(timeout);
            operator
                .sandbox_call(input, &attempt_limits)
                .instrument(tracing::debug_span!("attempt", attempt))
                .await
        };
        let Err(error) = &result else {
            return (result, attempt);
        };
        let jitter = operator.policy_state().next_jitter();
        match retry.next_delay(error, attempt, jitter, Instant::now(), deadline) {
            Some(delay) => {
                tracing::debug!(operator = operator.name(), attempt, delay_us = delay.as_micros() as u64, error = %error, "retrying");
                operator.metrics().retry();
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            None => return (result, attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::canonical;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut a = String::new();
        canonical(
            &json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": "s"}}),
            &mut a,
        )
        .expect("shallow");
        assert_eq!(a, r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#);
        let mut b = String::new();
        canonical(
            &json!({"a": {"x": "s", "y": [1, {"p": 1, "q": 2}]}, "b": 1}),
            &mut b,
        )
        .expect("shallow");
        assert_eq!(a, b);
    }

    #[test]
    fn deep_inputs_are_not_keyed() {
        let mut deep = serde_json::Value::Null;
        for _ in 0..1000 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        assert_eq!(
            canonical(&deep, &mut String::new()),
            None,
            "too deep to key"
        );
        // Tear down without recursion: a test thread's stack is small.
        while let serde_json::Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(serde_json::Value::Null);
        }
    }
}
