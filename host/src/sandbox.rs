//! One attempt in a fresh store: wait for an instance slot, build the store
//! under the call's limits, run the guest under its deadline, and classify
//! every way it can stop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use crate::error::Error;
use crate::limits::Limits;
use crate::runtime::Runtime;
use crate::store::{CapabilityFailure, ComposeStop, StoreState};
use crate::turns::{Priority, Seat};

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

/// The guest's part of an attempt: it runs on the fresh store it is given.
pub(crate) type GuestFuture<'s, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 's>>;

/// Runs `guest` once in a fresh store for `operator` under `limits`, and
/// returns what it returned with what it used, or the error it ended with.
///
/// The attempt waits for an instance slot first (the pool is bounded), then
/// for a turn on the processor (see `turns`); the deadline covers both
/// waits, instantiation and the guest's code.
pub(crate) async fn attempt<T>(
    runtime: &Runtime,
    operator: &Arc<str>,
    limits: &Limits,
    guest: impl for<'s> FnOnce(&'s mut Store<StoreState>) -> GuestFuture<'s, T>,
) -> Result<(T, CallStats), Error> {
    attempt_in(runtime, operator, limits, |state| state, guest).await
}

/// [`attempt`], with the store's state shaped by `state` (a composite's
/// gets its composer).
pub(crate) async fn attempt_in<T>(
    runtime: &Runtime,
    operator: &Arc<str>,
    limits: &Limits,
    state: impl FnOnce(StoreState) -> StoreState,
    guest: impl for<'s> FnOnce(&'s mut Store<StoreState>) -> GuestFuture<'s, T>,
) -> Result<(T, CallStats), Error> {
    let started = Instant::now();
    if limits.timeout.is_zero() {
        // No time at all: expired before anything runs.
        return Err(Error::Timeout {
            operator: operator.to_string(),
            timeout: limits.timeout,
        });
    }
    let deadline = tokio::time::Instant::from_std(started + limits.timeout);
    // The permit is released after the store (and with it the pool slot) is
    // dropped, as locals drop in reverse order.
    // A free slot is taken at once, without arming a timer.
    let _slot = match runtime.instance_slots.try_acquire() {
        Some(slot) => slot,
        None => {
            let waited = tokio::time::timeout_at(deadline, runtime.instance_slots.acquire()).await;
            let Ok(slot) = waited else {
                return Err(Error::Timeout {
                    operator: operator.to_string(),
                    timeout: limits.timeout,
                });
            };
            slot
        }
    };
    let mut sandbox = Sandbox::new(runtime, operator.clone(), limits, started, state)?;
    let seat = sandbox.store.data().seat.clone();
    // Waits for a turn, then runs; a guest waiting for its next turn is
    // parked on this timer, so its deadline ends it on time.
    let outcome = tokio::time::timeout_at(deadline, async {
        seat.sit(Priority::Fresh).await;
        guest(&mut sandbox.store).await
    })
    .await;
    seat.stand();
    sandbox
        .store
        .data()
        .report_output(sandbox.limits.max_log_bytes);
    match outcome {
        Err(_elapsed) => Err(sandbox.timeout()),
        Ok(Err(error)) => Err(sandbox.classify(error)),
        Ok(Ok(value)) => Ok((value, sandbox.stats())),
    }
}

/// A fresh store for one call of `operator`.
struct Sandbox {
    store: Store<StoreState>,
    operator: Arc<str>,
    limits: Limits,
    started: Instant,
    fuel_budget: Option<u64>,
    max_wasm_stack: usize,
}

impl Sandbox {
    fn new(
        runtime: &Runtime,
        operator: Arc<str>,
        limits: &Limits,
        started: Instant,
        state: impl FnOnce(StoreState) -> StoreState,
    ) -> Result<Sandbox, Error> {
        let state = state(
            StoreState::new(
                operator.clone(),
                limits,
                runtime.max_memory_bytes_per_instance,
                runtime.log_sink.clone(),
                Seat::new(runtime.turns.clone()),
            )
            .with_deadline(started + limits.timeout),
        );
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(StoreState::limiter);
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

        let fuel_budget = match (runtime.consume_fuel, limits.fuel) {
            (true, budget) => {
                // Fails only on an engine without fuel, which this is not.
                store
                    .set_fuel(budget.unwrap_or(u64::MAX))
                    .map_err(|error| Error::Config {
                        message: format!("{operator}: {error:#}"),
                    })?;
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

        // Every epoch tick the guest ends its slice: it hands its turn on,
        // waits for another and yields to the async executor (so a busy
        // guest never starves other tasks); it is interrupted once the
        // wall-clock deadline has passed.
        let deadline = started + limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    store.data().seat.end_of_slice(),
                ))
            }
        });

        Ok(Sandbox {
            store,
            operator,
            limits: limits.clone(),
            started,
            fuel_budget,
            max_wasm_stack: runtime.max_wasm_stack,
        })
    }

    fn stats(&self) -> CallStats {
        let state = self.store.data();
        let fuel_consumed = self
            .store
            .get_fuel()
            .ok()
            .map(|left| self.fuel_budget.unwrap_or(u64::MAX).saturating_sub(left));
        CallStats {
            duration: self.started.elapsed(),
            fuel_consumed,
            peak_memory_bytes: state.peak_memory_bytes(),
            log_messages_dropped: state.log_messages_dropped(),
            output_bytes_dropped: state.output_bytes_dropped(),
        }
    }

    /// The error for a call that ended with `error`: classified by its
    /// cause, never by its message.
    fn classify(&self, error: wasmtime::Error) -> Error {
        let error = match error.downcast::<ComposeStop>() {
            // A composite's call the host refused or that failed.
            Ok(ComposeStop::Failed(error)) => return error,
            Ok(other) => wasmtime::Error::new(other),
            Err(error) => error,
        };
        let operator = self.operator.to_string();
        let state = self.store.data();
        if let Some(denied) = state.denied() {
            return Error::Memory {
                operator,
                what: denied.what,
                requested: denied.requested,
                limit: denied.limit,
            };
        }
        let trap = |message: String| Error::Trap {
            operator: self.operator.to_string(),
            message,
            guest_stderr: state.stderr_text(),
        };
        if let Some(failure) = error.downcast_ref::<CapabilityFailure>() {
            return trap(failure.to_string());
        }
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return trap(format!(
                "the guest called exit({}): an operator returns from `invoke` instead",
                exit.0
            ));
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
            Some(other) => trap(other.to_string()),
            // The cause first (the outer error only says "error while
            // executing"), then the guest's stack.
            None => {
                let mut message = error.root_cause().to_string();
                if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
                    message.push('\n');
                    message.push_str(&backtrace.to_string());
                }
                trap(message)
            }
        }
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            operator: self.operator.to_string(),
            timeout: self.limits.timeout,
        }
    }
}
