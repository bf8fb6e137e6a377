//! A loaded operator: validated, compiled, checked against the contract,
//! described by its metadata and signature; and its calls.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::Instrument;
use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Val};

use crate::codec::{self, CodecError};
use crate::error::{self, Error};
use crate::host::{Host, Runtime};
use crate::limits::Limits;
use crate::sandbox::{CallStats, Sandbox, StoreState, bindings};
use crate::types::{Param, Signature, WitType};

/// The interfaces of the contract, as components import them.
const HOST_INTERFACE: &str = "xcs:operator/host@0.1.0";
const TYPES_INTERFACE: &str = "xcs:operator/types@0.1.0";
const CONTRACT_PACKAGE: &str = "xcs:operator/";

/// WASI interfaces the sandbox provides, all inert unless granted: no
/// preopened directories, no environment, virtual clocks and randomness.
/// Sockets and HTTP are not among them.
const PROVIDED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

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
    policy_state: crate::policy::PolicyState,
    metrics: crate::metrics::OperatorHandles,
}

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

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
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

    /// The SHA-256 digest of the component's bytes, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Calls `invoke` with `input` in a fresh sandbox under `limits`.
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
        self.call_counting_attempts(input, limits).await.0
    }

    /// The policy-wrapped call (see [`crate::policy`]), with the number of
    /// attempts it made (0 for a cache hit).
    pub(crate) async fn call_counting_attempts(
        &self,
        input: &Value,
        limits: &Limits,
    ) -> (Result<CallOutput, Error>, u32) {
        let span =
            tracing::debug_span!("call", operator = %self.inner.name, digest = %self.inner.digest);
        let started = Instant::now();
        let policy = self.inner.runtime.policy_for(&self.inner.name);
        let (result, attempts) = crate::call::with_policies(self, input, limits, &policy)
            .instrument(span.clone())
            .await;
        self.inner
            .metrics
            .call(result.as_ref().map(drop).map_err(Error::kind));
        tracing::debug!(
            parent: &span,
            outcome = match &result { Ok(_) => "ok", Err(error) => error.kind().as_str() },
            attempts,
            elapsed_us = started.elapsed().as_micros() as u64,
            "call finished"
        );
        (result, attempts)
    }

    /// One attempt: validate the input, run the guest in a fresh sandbox.
    pub(crate) async fn sandbox_call(
        &self,
        input: &Value,
        limits: &Limits,
    ) -> Result<CallOutput, Error> {
        let args =
            codec::encode_params(&self.inner.signature.params, input, limits.max_input_bytes)
                .map_err(|error| self.codec_error(error, "input"))?;
        let output = self.run(args, limits).await?;
        self.inner.metrics.usage(
            output.stats.duration.as_secs_f64(),
            output.stats.fuel_consumed,
            output.stats.peak_memory_bytes,
        );
        Ok(output)
    }

    pub(crate) fn digest_ref(&self) -> &str {
        &self.inner.digest
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// The state of this operator's circuit breaker (closed when it has
    /// none).
    pub fn breaker_state(&self) -> crate::policy::BreakerState {
        self.inner.policy_state.breaker_state()
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::OperatorHandles {
        &self.inner.metrics
    }

    pub(crate) fn policy_state(&self) -> &crate::policy::PolicyState {
        &self.inner.policy_state
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
            operator: self.inner.name.to_string(),
            path: "$".into(),
            expected: "parameters that serialize to JSON".into(),
            found: error.to_string(),
        })?;
        let output = self.call(&input, limits).await?;
        serde_json::from_value(output).map_err(|error| Error::Validation {
            operator: self.inner.name.to_string(),
            path: "$ (result)".into(),
            expected: std::any::type_name::<R>().into(),
            found: error.to_string(),
        })
    }

    fn codec_error(&self, error: CodecError, what: &str) -> Error {
        let operator = self.inner.name.to_string();
        match (error, what) {
            (
                CodecError::Mismatch {
                    path,
                    expected,
                    found,
                },
                _,
            ) => Error::Validation {
                operator,
                path,
                expected,
                found,
            },
            (CodecError::TooLarge { size, limit }, "input") => Error::InputTooLarge {
                operator,
                size,
                limit,
            },
            (CodecError::TooLarge { size, limit }, _) => Error::Memory {
                operator,
                what: "output",
                requested: size,
                limit,
            },
        }
    }

    async fn run(&self, args: Vec<Val>, limits: &Limits) -> Result<CallOutput, Error> {
        let host = &*self.inner.runtime;
        // Wait for a pool slot; the permit is released after the store (and
        // with it the slot) is dropped, as locals drop in reverse order.
        let _permit = host
            .instance_slots
            .acquire()
            .await
            .map_err(|_| Error::Config {
                message: "the host's instance pool is closed".into(),
            })?;
        let mut sandbox = Sandbox::new(host, self.inner.name.clone(), limits)?;
        let deadline = tokio::time::Instant::from_std(sandbox.deadline());
        let mut results = [Val::Bool(false)];
        let pre = &self.inner.pre;
        let invoke = &self.inner.invoke;
        let outcome = tokio::time::timeout_at(deadline, async {
            let instance = pre.instantiate_async(&mut sandbox.store).await?;
            let func = instance
                .get_func(&mut sandbox.store, invoke)
                .ok_or_else(|| {
                    wasmtime::Error::msg("`invoke` export disappeared after type checking")
                })?;
            func.call_async(&mut sandbox.store, &args, &mut results)
                .await
        })
        .await;
        sandbox.finish();
        match outcome {
            Err(_elapsed) => return Err(sandbox.timeout()),
            Ok(Err(error)) => return Err(sandbox.classify(error)),
            Ok(Ok(())) => {}
        }
        let stats = sandbox.stats();
        let [result] = results;
        match result {
            Val::Result(Ok(payload)) => {
                let value = match payload {
                    Some(payload) => codec::decode(&payload, limits.max_output_bytes)
                        .map_err(|error| self.codec_error(error, "output"))?,
                    None => Value::Null,
                };
                Ok(CallOutput {
                    value,
                    stats,
                    cached: false,
                })
            }
            Val::Result(Err(Some(error))) => Err(self.operator_error(*error)),
            other => Err(Error::Contract {
                operator: self.inner.name.to_string(),
                reason: format!("`invoke` returned {other:?}, not result<_, error>"),
                source: None,
            }),
        }
    }

    fn operator_error(&self, error: Val) -> Error {
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
            operator: self.inner.name.to_string(),
            code,
            message,
            retryable,
        }
    }
}

pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(digest: &[u8; 32]) -> String {
    use std::fmt::Write;
    digest
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Rebuilds an error shared between concurrent loads; sources become text.
pub(crate) fn clone_error(error: &Error) -> Error {
    match error {
        Error::InvalidComponent {
            source_name,
            reason,
            source,
        } => Error::InvalidComponent {
            source_name: source_name.clone(),
            reason: reason.clone(),
            source: source.as_ref().map(|source| source.to_string().into()),
        },
        Error::Contract {
            operator,
            reason,
            source,
        } => Error::Contract {
            operator: operator.clone(),
            reason: reason.clone(),
            source: source.as_ref().map(|source| source.to_string().into()),
        },
        Error::Capability {
            operator,
            import,
            hint,
        } => Error::Capability {
            operator: operator.clone(),
            import: import.clone(),
            hint: hint.clone(),
        },
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Validation {
            operator,
            path,
            expected,
            found,
        } => Error::Validation {
            operator: operator.clone(),
            path: path.clone(),
            expected: expected.clone(),
            found: found.clone(),
        },
        Error::InputTooLarge {
            operator,
            size,
            limit,
        } => Error::InputTooLarge {
            operator: operator.clone(),
            size: *size,
            limit: *limit,
        },
        Error::Operator {
            operator,
            code,
            message,
            retryable,
        } => Error::Operator {
            operator: operator.clone(),
            code: code.clone(),
            message: message.clone(),
            retryable: *retryable,
        },
        Error::Timeout { operator, timeout } => Error::Timeout {
            operator: operator.clone(),
            timeout: *timeout,
        },
        Error::Fuel { operator, fuel } => Error::Fuel {
            operator: operator.clone(),
            fuel: *fuel,
        },
        Error::Memory {
            operator,
            what,
            requested,
            limit,
        } => Error::Memory {
            operator: operator.clone(),
            what,
            requested: *requested,
            limit: *limit,
        },
        Error::StackOverflow {
            operator,
            max_stack_bytes,
        } => Error::StackOverflow {
            operator: operator.clone(),
            max_stack_bytes: *max_stack_bytes,
        },
        Error::Trap {
            operator,
            message,
            guest_stderr,
        } => Error::Trap {
            operator: operator.clone(),
            message: message.clone(),
            guest_stderr: guest_stderr.clone(),
        },
        Error::Config { message } => Error::Config {
            message: message.clone(),
        },
        Error::CircuitOpen {
            operator,
            retry_after,
        } => Error::CircuitOpen {
            operator: operator.clone(),
            retry_after: *retry_after,
        },
        Error::Overloaded {
            operator,
            max_in_flight,
            max_queue,
        } => Error::Overloaded {
            operator: operator.clone(),
            max_in_flight: *max_in_flight,
            max_queue: *max_queue,
        },
        Error::Graph { problems, message } => Error::Graph {
            problems: problems.clone(),
            message: message.clone(),
        },
        Error::Node {
            node,
            element,
            cause,
        } => Error::Node {
            node: node.clone(),
            element: *element,
            cause: Box::new(clone_error(cause)),
        },
        Error::GraphTimeout { timeout, running } => Error::GraphTimeout {
            timeout: *timeout,
            running: running.clone(),
        },
    }
}

/// What the first bytes say the binary is.
enum Header {
    Component,
    CoreModule,
    NotWasm,
}

fn header(bytes: &[u8]) -> Header {
    match bytes {
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => Header::Component,
        [0, b'a', b's', b'm', _, _, 0, 0, ..] => Header::CoreModule,
        _ => Header::NotWasm,
    }
}

/// Loads one operator (the body of the single-flight load cache).
pub(crate) async fn load(
    host: Host,
    bytes: Vec<u8>,
    digest: [u8; 32],
    source_name: String,
) -> Result<Operator, Error> {
    let invalid = |reason: String, source: Option<error::BoxError>| Error::InvalidComponent {
        source_name: source_name.clone(),
        reason,
        source,
    };
    match header(&bytes) {
        Header::Component => {}
        Header::CoreModule => {
            return Err(invalid(
                "this is a core WebAssembly module, not a component; operators must be components \
                 (build with `--target wasm32-wasip2`, or wrap a module with `wasm-tools component new`)"
                    .into(),
                None,
            ));
        }
        Header::NotWasm => {
            return Err(invalid(
                format!(
                    "not a WebAssembly binary ({} bytes, no `\\0asm` header)",
                    bytes.len()
                ),
                None,
            ));
        }
    }

    host.inner
        .compilations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let runtime = host.inner.runtime.clone();
    let engine = runtime.engine.clone();
    let compiled = tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
        .await
        .map_err(|join| invalid(format!("compilation did not finish: {join}"), None))?;
    let component =
        compiled.map_err(|error| invalid("invalid component".into(), error::boxed(error)))?;

    let engine = &runtime.engine;
    let component_type = component.component_type();

    // Imports: the contract's own interfaces, the inert WASI the sandbox
    // provides, and whatever the embedder granted. Anything else is refused
    // by name, before instantiation is even attempted.
    let mut imports = Vec::new();
    for (name, _) in component_type.imports(engine) {
        imports.push(name.to_owned());
        if name == HOST_INTERFACE || name == TYPES_INTERFACE {
            continue;
        }
        let unversioned = name.split('@').next().unwrap_or(name);
        if PROVIDED_WASI.contains(&unversioned) {
            continue;
        }
        if runtime
            .granted
            .iter()
            .any(|granted| granted == name || granted == unversioned)
        {
            continue;
        }
        let hint = if name.starts_with(CONTRACT_PACKAGE) {
            Some(format!("this host implements {HOST_INTERFACE}"))
        } else if name.starts_with("wasi:") {
            Some("the sandbox provides no sockets, HTTP or other ambient authority".into())
        } else {
            Some("an embedder can grant it with `xcs::Capability`".into())
        };
        return Err(Error::Capability {
            operator: source_name.clone(),
            import: name.to_owned(),
            hint,
        });
    }

    let contract = |reason: String, source: Option<error::BoxError>| Error::Contract {
        operator: source_name.clone(),
        reason,
        source,
    };

    // Exports: `metadata` (checked by the bindings below) and `invoke`.
    let Some(ComponentItem::ComponentFunc(invoke_type)) = component_type
        .get_export(engine, "invoke")
        .map(|export| export.ty)
    else {
        return Err(contract(
            "no `invoke` function export; an operator exports `metadata` and `invoke` (see wit/operator.wit)".into(),
            None,
        ));
    };
    let mut params = Vec::new();
    for (name, ty) in invoke_type.params() {
        let ty = WitType::from_wasmtime(&ty).map_err(|unsupported| {
            contract(
                format!(
                    "`invoke` parameter `{name}` uses {}, which operators cannot take",
                    unsupported.0
                ),
                None,
            )
        })?;
        params.push(Param {
            name: name.to_owned(),
            ty,
        });
    }
    let results: Vec<Type> = invoke_type.results().collect();
    let result = match results.as_slice() {
        [Type::Result(result)] if result.err().as_ref().is_some_and(is_error_record) => result
            .ok()
            .map(|ok| {
                WitType::from_wasmtime(&ok).map_err(|unsupported| {
                    contract(
                        format!(
                            "`invoke` returns {}, which operators cannot return",
                            unsupported.0
                        ),
                        None,
                    )
                })
            })
            .transpose()?,
        _ => {
            let found = results
                .iter()
                .map(|ty| {
                    WitType::from_wasmtime(ty)
                        .map_or_else(|_| "an unsupported type".into(), |ty| ty.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(contract(
                format!(
                    "`invoke` must return result<T, error> with the `error` record of xcs:operator/types; it returns {}",
                    if found.is_empty() {
                        "nothing".into()
                    } else {
                        found
                    }
                ),
                None,
            ));
        }
    };
    let invoke = component
        .get_export_index(None, "invoke")
        .ok_or_else(|| contract("`invoke` export has no index".into(), None))?;

    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|error| {
            contract(
                "its imports do not match what the host provides".into(),
                error::boxed(error),
            )
        })?;
    let bindings_pre = bindings::OperatorPre::new(pre.clone())
        .map_err(|error| contract("no valid `metadata` export".into(), error::boxed(error)))?;

    // Ask the guest for its metadata, in a sandbox under the host's limits.
    let limits = runtime.default_limits.clone();
    let mut sandbox = Sandbox::new(
        &runtime,
        Arc::from(format!("{source_name} (metadata)")),
        &limits,
    )?;
    let deadline = tokio::time::Instant::from_std(sandbox.deadline());
    let outcome = tokio::time::timeout_at(deadline, async {
        let instance = bindings_pre.instantiate_async(&mut sandbox.store).await?;
        instance.call_metadata(&mut sandbox.store).await
    })
    .await;
    sandbox.finish();
    let metadata = match outcome {
        Err(_elapsed) => return Err(sandbox.timeout()),
        Ok(Err(error)) => return Err(sandbox.classify(error)),
        Ok(Ok(metadata)) => metadata,
    };
    if metadata.name.is_empty() {
        return Err(contract("`metadata` returned an empty name".into(), None));
    }
    let metadata = Metadata {
        name: metadata.name,
        version: metadata.version,
        description: metadata.description,
        deterministic: metadata.deterministic,
    };
    let signature = Signature { params, result };
    tracing::debug!(operator = %metadata.name, %signature, "loaded");
    let metrics = runtime.metrics.handles(&metadata.name);
    Ok(Operator {
        inner: Arc::new(OperatorInner {
            name: Arc::from(metadata.name.as_str()),
            runtime,
            metadata,
            signature,
            imports,
            digest: format!("sha256:{}", hex(&digest)),
            pre,
            invoke,
            policy_state: crate::policy::PolicyState::default(),
            metrics,
        }),
    })
}

/// Whether `ty` is the contract's `error` record.
fn is_error_record(ty: &Type) -> bool {
    let Type::Record(record) = ty else {
        return false;
    };
    let fields: Vec<_> = record
        .fields()
        .map(|field| (field.name, field.ty))
        .collect();
    matches!(
        fields.as_slice(),
        [
            ("code", Type::String),
            ("message", Type::String),
            ("retryable", Type::Bool)
        ]
    )
}
