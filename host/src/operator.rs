//! A loaded operator: validated, compiled, checked against the contract,
//! described by its metadata and signature; and one attempt at calling it
//! (input checked against the signature, guest run in a fresh sandbox,
//! result converted back). The policies around an attempt are the call
//! layer's (`call.rs`).

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use wasmtime::component::{ComponentExportIndex, InstancePre, Val};

use crate::codec;
use crate::error::Error;
use crate::grants::Grants;
use crate::limits::Limits;
use crate::metrics::OperatorHandles;
use crate::policy::{BreakerState, PolicyState};
use crate::runtime::Runtime;
use crate::sandbox::{self, CallStats};
use crate::store::{ComposeStop, Composer, StoreState};
use crate::types::Signature;

pub(crate) mod load;
mod shape;
mod wit;

/// What an operator says about itself (its `metadata` export).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Metadata {
    /// Kebab-case name, e.g. `word-count`.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// One line saying what it does.
    pub description: String,
    /// Whether its result depends only on its input.
    pub deterministic: bool,
}

/// A loaded operator. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct Operator {
    inner: Arc<OperatorInner>,
}

struct OperatorInner {
    runtime: Arc<Runtime>,
    name: Arc<str>,
    metadata: Metadata,
    signature: Signature,
    imports: Vec<String>,
    digest: String,
    pre: InstancePre<StoreState>,
    invoke: ComponentExportIndex,
    policy_state: PolicyState,
    metrics: OperatorHandles,
    /// What its calls may reach beyond the sandbox (the host's grants for
    /// its name); `None`: nothing.
    grants: Option<Arc<Grants>>,
}

/// What an operator without grants has.
static NO_GRANTS: Grants = Grants {
    dirs: Vec::new(),
    env: Vec::new(),
    from_host: Vec::new(),
    http: crate::grants::HttpGrant::NONE,
};

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("metadata", &self.inner.metadata)
            .field("signature", &self.inner.signature.to_string())
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

/// A call's result with what the call used.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CallOutput {
    /// The `ok` value of `invoke`, as JSON (`null` when it returns nothing).
    pub value: Value,
    /// What the call used (the last attempt's; zero for a cache hit).
    pub stats: CallStats,
    /// Whether the result came from the result cache.
    pub cached: bool,
}

impl Operator {
    /// The operator's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// The operator's name (from its metadata).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The signature of `invoke`, read from the component's type.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// The interfaces the component imports, e.g. `xcs:operator/host@0.1.0`.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// What its calls may reach beyond the sandbox: the host's grants for
    /// its name (see [`HostBuilder::grants_for`](crate::HostBuilder::grants_for)).
    pub fn grants(&self) -> &Grants {
        self.inner.grants.as_deref().unwrap_or(&NO_GRANTS)
    }

    /// Whether its results may be cached and identical calls merged: its
    /// metadata says it is deterministic, and it is granted no directory
    /// (what a file holds is not part of the input) and no HTTP unless the
    /// grant says the responses are deterministic too.
    pub(crate) fn is_repeatable(&self) -> bool {
        self.inner.metadata.deterministic
            && self
                .inner
                .grants
                .as_deref()
                .is_none_or(Grants::keep_repeatable)
    }

    /// Whether it is a composite: it imports `xcs:operator/compose` to call
    /// other operators, and runs with them (see [`crate::graph::Composite`]).
    pub fn is_composite(&self) -> bool {
        self.inner
            .imports
            .iter()
            .any(|import| import == load::COMPOSE_INTERFACE)
    }

    /// The SHA-256 digest of the component's bytes, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The state of this operator's circuit breaker on its host (closed
    /// when it has none).
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.policy_state.circuit.state()
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.inner.name
    }

    pub(crate) fn metrics(&self) -> &OperatorHandles {
        &self.inner.metrics
    }

    /// The policy state of this operator on its host.
    pub(crate) fn policy_state(&self) -> &PolicyState {
        &self.inner.policy_state
    }

    /// One attempt: check the input against the signature, run `invoke`
    /// in a fresh sandbox, convert its result.
    pub(crate) async fn attempt(
        &self,
        input: &Value,
        limits: &Limits,
    ) -> Result<CallOutput, Error> {
        match self.attempt_composed(input, limits, None, false).await? {
            Composed::Returned(output) => Ok(output),
            // Without a composer, `compose` calls fail (a `config` error).
            Composed::Finished | Composed::Stopped { .. } => Err(Error::Config {
                message: format!("{}: a composite ended without its composer", self.name()),
            }),
        }
    }

    /// One attempt of a composite whose `compose` calls go to `composer`
    /// (or of any operator, with `None`); with `claim_slot`, it first waits
    /// for one of the host's composite slots (within its deadline).
    pub(crate) async fn attempt_composed(
        &self,
        input: &Value,
        limits: &Limits,
        composer: Option<Box<dyn Composer>>,
        claim_slot: bool,
    ) -> Result<Composed, Error> {
        let inner = &*self.inner;
        let args = codec::encode_params(&inner.signature.params, input, limits.max_input_bytes)
            .map_err(|error| error.into_error(&inner.name))?;
        // A composite's code waits for a composite slot, within its deadline.
        let mut waited_limits = None;
        let _composite_slot = match claim_slot {
            false => None,
            true => {
                let started = std::time::Instant::now();
                let slot = inner.runtime.composite_slots.acquire_owned();
                let Ok(slot) = tokio::time::timeout(limits.timeout, slot).await else {
                    return Err(Error::Timeout {
                        operator: inner.name.to_string(),
                        timeout: limits.timeout,
                    });
                };
                let left = limits.timeout.saturating_sub(started.elapsed());
                waited_limits = Some(limits.clone().timeout(left));
                Some(slot)
            }
        };
        let limits = waited_limits.as_ref().unwrap_or(limits);
        let (pre, invoke) = (inner.pre.clone(), inner.invoke);
        let grants = inner.grants.clone();
        let http_counters = inner.metrics.http().clone();
        let state = move |state: StoreState| {
            let state = state.with_grants(grants, http_counters);
            match composer {
                Some(composer) => state.with_composer(composer),
                None => state,
            }
        };
        let (end, stats) =
            sandbox::attempt_in(&inner.runtime, &inner.name, limits, state, move |store| {
                Box::pin(async move {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    let func = instance.get_func(&mut *store, invoke).ok_or_else(|| {
                        wasmtime::Error::msg("`invoke` export disappeared after type checking")
                    })?;
                    let mut results = [Val::Bool(false)];
                    match func.call_async(&mut *store, &args, &mut results).await {
                        Ok(()) => {
                            let [result] = results;
                            Ok(GuestEnd::Returned(result))
                        }
                        Err(error) => match error.downcast_ref::<ComposeStop>() {
                            Some(ComposeStop::Finished) => Ok(GuestEnd::Finished),
                            Some(ComposeStop::Stopped) => Ok(GuestEnd::Stopped(backtrace(&error))),
                            _ => Err(error),
                        },
                    }
                })
            })
            .await?;
        let result = match end {
            GuestEnd::Returned(result) => result,
            GuestEnd::Finished => return Ok(Composed::Finished),
            GuestEnd::Stopped(backtrace) => return Ok(Composed::Stopped { backtrace }),
        };
        match result {
            Val::Result(Ok(payload)) => {
                let value = match payload {
                    Some(payload) => codec::decode(&payload, limits.max_output_bytes)
                        .map_err(|error| error.into_output_error(&inner.name))?,
                    None => Value::Null,
                };
                inner.metrics.usage(
                    stats.duration.as_secs_f64(),
                    stats.fuel_consumed,
                    stats.peak_memory_bytes,
                );
                Ok(Composed::Returned(CallOutput {
                    value,
                    stats,
                    cached: false,
                }))
            }
            Val::Result(Err(Some(error))) => Err(operator_error(&inner.name, *error)),
            other => Err(Error::Contract {
                operator: inner.name.to_string(),
                reason: format!("`invoke` returned {other:?}, not result<_, error>"),
                source: None,
            }),
        }
    }
}

/// How a guest's `invoke` ended.
enum GuestEnd {
    Returned(Val),
    Finished,
    Stopped(Vec<String>),
}

/// How a composite's attempt ended.
#[derive(Debug)]
pub(crate) enum Composed {
    /// `invoke` returned a value (any operator).
    Returned(CallOutput),
    /// It called `finish`: its result is a deferred the composer knows.
    Finished,
    /// Its trace stopped (the composer knows why), in these functions,
    /// innermost first.
    Stopped { backtrace: Vec<String> },
}

/// The guest's own functions on the stack when `error` left the guest,
/// innermost first, by name (those the component names, demangled; the
/// guest SDK's and the bindings' frames left out).
fn backtrace(error: &wasmtime::Error) -> Vec<String> {
    let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return Vec::new();
    };
    trace
        .frames()
        .iter()
        .filter_map(|frame| frame.func_name())
        .map(|name| format!("{:#}", rustc_demangle::demangle(name)))
        .filter(|name| {
            !["xcs_guest::", "wit_bindgen", "<xcs_guest", "__"]
                .iter()
                .any(|glue| name.starts_with(glue))
                && !name.contains("::__xcs_operator::")
        })
        .collect()
}

/// The error an operator returned, as an [`Error::Operator`].
fn operator_error(operator: &str, error: Val) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut retryable = false;
    if let Val::Record(fields) = error {
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("code", Val::String(s)) => code = s,
                ("message", Val::String(s)) => message = s,
                ("retryable", Val::Bool(b)) => retryable = b,
                _ => {}
            }
        }
    }
    Error::Operator {
        operator: operator.to_owned(),
        code,
        message,
        retryable,
    }
}
