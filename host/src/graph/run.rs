//! The dataflow scheduler: a node starts as soon as its inputs are ready,
//! at most `max_concurrency` guests run at once (per run, and per host),
//! under a graph deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::check::{Plan, Resolved};
use crate::codec;
use crate::error::Error;
use crate::limits::Limits;
use crate::operator::{CallOutput, Operator};

/// Called after each node ends with (nodes ended, nodes in all).
pub type ProgressFn = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// How a graph runs.
#[derive(Clone)]
pub struct RunOptions {
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) timeout: Duration,
    pub(crate) keep_going: bool,
    pub(crate) limits: Option<Limits>,
    pub(crate) progress: Option<ProgressFn>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("keep_going", &self.keep_going)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    /// | option | default |
    /// |---|---|
    /// | `max_concurrency` | the host's (available parallelism) |
    /// | `timeout` | 5 minutes |
    /// | `keep_going` | off: the first failure cancels the rest |
    /// | `limits` | the host's default limits, unless a node has its own |
    fn default() -> Self {
        RunOptions {
            max_concurrency: None,
            timeout: Duration::from_secs(300),
            keep_going: false,
            limits: None,
            progress: None,
        }
    }
}

impl RunOptions {
    /// At most this many guests of this run at once (the host's own bound
    /// still applies). Default: the host's.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = Some(max.max(1));
        self
    }

    /// The graph deadline: when it passes, running guests are interrupted
    /// and pending nodes cancelled. Default: 5 minutes; at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = crate::limits::capped(timeout);
        self
    }

    /// Run every node that does not depend on a failed one, instead of
    /// cancelling everything at the first failure. Default: off.
    pub fn keep_going(mut self, on: bool) -> Self {
        self.keep_going = on;
        self
    }

    /// Limits for calls of nodes without limits of their own.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Called after each node ends, with (ended, total).
    pub fn on_progress(mut self, progress: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }
}

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// It ran and returned a value.
    Ok,
    /// It ran and failed; see its `error`.
    Failed,
    /// It did not run: a node it depends on failed (with `keep_going`).
    Skipped,
    /// It was pending or running when the run stopped (a failure without
    /// `keep_going`, or the graph deadline).
    Cancelled,
}

/// One guest call of a node (a map node has one per element), for the
/// timeline: when, and on which concurrency slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    /// Concurrency slot it ran on (0-based; at most `max_concurrency`).
    pub slot: usize,
    /// Start, from the start of the run (milliseconds in JSON).
    #[serde(rename = "start_ms", serialize_with = "millis_plain")]
    pub start: Duration,
    /// End, from the start of the run (milliseconds in JSON).
    #[serde(rename = "end_ms", serialize_with = "millis_plain")]
    pub end: Duration,
    /// The element index, for a map node.
    pub element: Option<usize>,
}

fn millis<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_f64(duration.as_secs_f64() * 1e3),
        None => serializer.serialize_none(),
    }
}

fn millis_plain<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1e3)
}

/// What happened to one node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeReport {
    /// The node's id.
    pub id: String,
    /// The operator's key.
    pub operator: String,
    /// How it ended.
    pub status: NodeStatus,
    /// When its first call started, from the start of the run
    /// (milliseconds in JSON).
    #[serde(rename = "start_ms", serialize_with = "millis")]
    pub start: Option<Duration>,
    /// When it ended, from the start of the run (milliseconds in JSON).
    #[serde(rename = "end_ms", serialize_with = "millis")]
    pub end: Option<Duration>,
    /// Guest calls made: one per element for a map node, more with
    /// retries, none for results served from the cache.
    pub attempts: u64,
    /// Fuel consumed by its calls.
    pub fuel_consumed: Option<u64>,
    /// The most linear memory one of its calls had.
    pub peak_memory_bytes: u64,
    /// Why it failed, was skipped or cancelled: `(kind, message)`.
    pub error: Option<(String, String)>,
    /// Its guest calls.
    pub spans: Vec<Span>,
}

impl NodeReport {
    /// How long it took, when it ran.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.end?.saturating_sub(self.start?))
    }
}

/// The result of [`Plan::run`]: the outputs that were produced, every
/// node's outcome, and the error that ended the run, if any.
#[derive(Debug)]
pub struct RunReport {
    /// Graph outputs whose producers succeeded.
    pub outputs: Map<String, Value>,
    /// Every node, in graph order.
    pub nodes: Vec<NodeReport>,
    /// Wall time of the run.
    pub duration: Duration,
    /// The concurrency bound the run had.
    pub max_concurrency: usize,
    /// Why the run failed: the first node failure (its kind preserved, the
    /// node named), the graph deadline, or invalid inputs. With
    /// `keep_going`, the first failure, after everything that could run ran.
    pub error: Option<Error>,
}

impl RunReport {
    /// The outputs, or the error that ended the run.
    pub fn into_result(self) -> Result<Map<String, Value>, Error> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.outputs),
        }
    }

    /// The report of node `id`.
    pub fn node(&self, id: &str) -> Option<&NodeReport> {
        self.nodes.iter().find(|node| node.id == id)
    }
}

/// Hands out slot numbers, so the timeline shows one track per slot.
struct SlotPool {
    free: Mutex<Vec<usize>>,
}

impl SlotPool {
    fn take(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or(usize::MAX)
    }

    fn give(&self, slot: usize) {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(slot);
    }
}

/// What the tasks of one run share.
struct Shared {
    started: Instant,
    run_slots: Arc<Semaphore>,
    host_slots: Arc<Semaphore>,
    slot_ids: SlotPool,
}

struct CallRecord {
    span: Span,
    attempts: u32,
    fuel: Option<u64>,
    peak_memory: u64,
}

/// One guest call under both concurrency bounds, recorded for the report.
async fn bounded_call(
    shared: &Shared,
    operator: &Operator,
    input: &Value,
    limits: &Limits,
    element: Option<usize>,
) -> (Result<CallOutput, Error>, CallRecord) {
    // Both semaphores live as long as the run; they are never closed.
    let _run_permit = shared.run_slots.acquire().await;
    let _host_permit = shared.host_slots.acquire().await;
    let slot = shared.slot_ids.take();
    let start = shared.started.elapsed();
    let (result, attempts) = operator.call_counting_attempts(input, limits).await;
    let end = shared.started.elapsed();
    shared.slot_ids.give(slot);
    let (fuel, peak_memory) = match &result {
        Ok(output) => (output.stats.fuel_consumed, output.stats.peak_memory_bytes),
        Err(_) => (None, 0),
    };
    let span = Span {
        slot,
        start,
        end,
        element,
    };
    (
        result,
        CallRecord {
            span,
            attempts,
            fuel,
            peak_memory,
        },
    )
}

/// What a node task returns.
struct NodeOutcome {
    index: usize,
    result: Result<Value, Error>,
    calls: Vec<CallRecord>,
}

fn node_error(id: &str, error: Error, element: Option<usize>) -> Error {
    Error::Node {
        node: id.to_owned(),
        element,
        cause: Box::new(error),
    }
}

/// Runs one node: one call, or one call per element for a map node.
async fn run_node(
    shared: Arc<Shared>,
    index: usize,
    id: String,
    operator: Operator,
    mut input: Map<String, Value>,
    map: Option<(String, usize)>,
    limits: Limits,
) -> NodeOutcome {
    let Some((param, map_bound)) = map else {
        let (result, record) =
            bounded_call(&shared, &operator, &Value::Object(input), &limits, None).await;
        return NodeOutcome {
            index,
            result: result
                .map(|output| output.value)
                .map_err(|error| node_error(&id, error, None)),
            calls: vec![record],
        };
    };
    let elements = match input.remove(&param) {
        Some(Value::Array(elements)) => elements,
        _ => Vec::new(), // checked by the input validation and the type check
    };
    let map_slots = Arc::new(Semaphore::new(map_bound));
    let mut calls = JoinSet::new();
    for (element_index, element) in elements.into_iter().enumerate() {
        let mut element_input = input.clone();
        element_input.insert(param.clone(), element);
        let (shared, operator, limits, map_slots) = (
            shared.clone(),
            operator.clone(),
            limits.clone(),
            map_slots.clone(),
        );
        calls.spawn(async move {
            let _map_permit = map_slots.acquire().await;
            let (result, record) = bounded_call(
                &shared,
                &operator,
                &Value::Object(element_input),
                &limits,
                Some(element_index),
            )
            .await;
            (element_index, result, record)
        });
    }
    let mut values: Vec<Option<Value>> = vec![None; calls.len()];
    let mut records = Vec::with_capacity(values.len());
    let mut first_error: Option<(usize, Error)> = None;
    while let Some(joined) = calls.join_next().await {
        let Ok((element_index, result, record)) = joined else {
            continue; // aborted below, after the first failure
        };
        records.push(record);
        match result {
            Ok(output) => values[element_index] = Some(output.value),
            Err(error) => {
                if first_error
                    .as_ref()
                    .is_none_or(|(first, _)| element_index < *first)
                {
                    first_error = Some((element_index, error));
                }
                calls.abort_all();
            }
        }
    }
    let result = match first_error {
        Some((element_index, error)) => Err(node_error(&id, error, Some(element_index))),
        None => Ok(Value::Array(
            values
                .into_iter()
                .map(|value| value.unwrap_or(Value::Null))
                .collect(),
        )),
    };
    NodeOutcome {
        index,
        result,
        calls: records,
    }
}

fn resolve_value(
    resolved: &Resolved,
    inputs: &Map<String, Value>,
    outputs: &[Option<Arc<Value>>],
) -> Value {
    match resolved {
        Resolved::Input(name) => inputs.get(name).cloned().unwrap_or(Value::Null),
        Resolved::Literal(value) => value.clone(),
        Resolved::Node { index, field } => {
            let output = outputs[*index].as_deref().unwrap_or(&Value::Null);
            match field {
                Some(field) => output.get(field).cloned().unwrap_or(Value::Null),
                None => output.clone(),
            }
        }
    }
}

impl Plan {
    /// Runs the graph with `inputs` (a JSON object keyed by input name).
    ///
    /// Inputs are checked against the types their consumers need before
    /// anything runs. Never fails outright: the report says what happened
    /// to every node, and [`RunReport::into_result`] gives the outputs or
    /// the error that ended the run.
    pub async fn run(&self, inputs: &Value, options: &RunOptions) -> RunReport {
        // Coordinate on a runtime worker rather than on the caller's thread
        // (often a `block_on` thread outside the pool): every node's
        // completion wakes the coordinator, and on the caller's thread each
        // wake-up is a context switch. Measured on 100-node fan-outs: the
        // completion tail halves and context switches drop ~10x.
        struct AbortOnDrop(tokio::task::JoinHandle<RunReport>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                // Dropping the run cancels it, as for any future.
                self.0.abort();
            }
        }
        let plan = self.clone();
        let (inputs, options) = (inputs.clone(), options.clone());
        let mut coordinator = AbortOnDrop(tokio::spawn(async move {
            plan.run_here(&inputs, &options).await
        }));
        match (&mut coordinator.0).await {
            Ok(report) => report,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only `AbortOnDrop` aborts it, and it is still held here.
                Err(cancelled) => unreachable!("the run's coordinator was cancelled: {cancelled}"),
            },
        }
    }

    async fn run_here(&self, inputs: &Value, options: &RunOptions) -> RunReport {
        let started = Instant::now();
        for (key, policy) in &self.graph.policies {
            if let Some(position) = self
                .graph
                .nodes
                .iter()
                .position(|node| &node.operator == key)
            {
                let operator = &self.operators[position];
                operator
                    .runtime()
                    .set_policy(operator.name(), policy.clone());
            }
        }
        let runtime = self
            .operators
            .first()
            .map(|operator| operator.runtime().clone());
        let host_bound = runtime
            .as_ref()
            .map_or(1, |runtime| runtime.max_concurrency);
        let max_concurrency = options.max_concurrency.unwrap_or(host_bound).max(1);
        let mut nodes: Vec<NodeReport> = self
            .graph
            .nodes
            .iter()
            .map(|node| NodeReport {
                id: node.id.clone(),
                operator: node.operator.clone(),
                status: NodeStatus::Cancelled,
                start: None,
                end: None,
                attempts: 0,
                fuel_consumed: None,
                peak_memory_bytes: 0,
                error: None,
                spans: Vec::new(),
            })
            .collect();
        let finish =
            |nodes: Vec<NodeReport>, outputs: Map<String, Value>, error: Option<Error>| RunReport {
                outputs,
                nodes,
                duration: started.elapsed(),
                max_concurrency,
                error,
            };

        let inputs = match self.check_inputs(inputs) {
            Ok(inputs) => inputs,
            Err(error) => {
                for node in &mut nodes {
                    node.error = Some(("validation".into(), "the graph inputs are invalid".into()));
                }
                return finish(nodes, Map::new(), Some(error));
            }
        };

        let shared = Arc::new(Shared {
            started,
            run_slots: Arc::new(Semaphore::new(max_concurrency)),
            host_slots: runtime.map_or_else(
                || Arc::new(Semaphore::new(1)),
                |runtime| runtime.scheduler_slots.clone(),
            ),
            slot_ids: SlotPool {
                free: Mutex::new((0..max_concurrency).rev().collect()),
            },
        });
        let total = self.graph.nodes.len();
        let mut waiting_on: Vec<usize> = self.dependencies.iter().map(Vec::len).collect();
        // How many consumers still need each output; an output nobody needs
        // any more is dropped, so a long chain runs in bounded memory.
        let mut consumers_left: Vec<usize> = self.dependents.iter().map(Vec::len).collect();
        let mut keep: Vec<bool> = vec![false; total];
        for (_, resolved) in &self.outputs {
            if let Resolved::Node { index, .. } = resolved {
                keep[*index] = true;
            }
        }
        let mut outputs: Vec<Option<Arc<Value>>> = vec![None; total];
        let mut tasks: JoinSet<NodeOutcome> = JoinSet::new();
        let mut ended = 0usize;
        let mut first_error: Option<Error> = None;

        let mut running = vec![false; total];
        let spawn = |index: usize,
                     tasks: &mut JoinSet<NodeOutcome>,
                     outputs: &[Option<Arc<Value>>],
                     running: &mut [bool]| {
            running[index] = true;
            let node = &self.graph.nodes[index];
            let input: Map<String, Value> = self.args[index]
                .iter()
                .map(|(name, resolved)| (name.clone(), resolve_value(resolved, &inputs, outputs)))
                .collect();
            let limits = node
                .limits
                .clone()
                .or_else(|| options.limits.clone())
                .unwrap_or_else(|| self.operators[index].runtime().default_limits.clone());
            let map = node.map.as_ref().map(|map| {
                (
                    map.param.clone(),
                    map.max_concurrency.unwrap_or(max_concurrency).max(1),
                )
            });
            let span = tracing::debug_span!("node", node = %node.id, operator = %node.operator);
            tasks.spawn(
                run_node(
                    shared.clone(),
                    index,
                    node.id.clone(),
                    self.operators[index].clone(),
                    input,
                    map,
                    limits,
                )
                .instrument(span),
            );
        };

        let ready: Vec<usize> = (0..total).filter(|&index| waiting_on[index] == 0).collect();
        for index in ready {
            spawn(index, &mut tasks, &outputs, &mut running);
        }

        let deadline = tokio::time::Instant::from_std(started + options.timeout);
        loop {
            let joined = match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_elapsed) => {
                    tasks.abort_all();
                    let running: Vec<String> = (0..total)
                        .filter(|&index| running[index])
                        .map(|index| nodes[index].id.clone())
                        .collect();
                    let error = Error::GraphTimeout {
                        timeout: options.timeout,
                        running,
                    };
                    for node in nodes
                        .iter_mut()
                        .filter(|node| node.status == NodeStatus::Cancelled)
                    {
                        node.error = Some(("cancelled".into(), "the graph deadline passed".into()));
                    }
                    return finish(nodes, Map::new(), Some(first_error.unwrap_or(error)));
                }
            };
            let Ok(outcome) = joined else {
                continue; // a task panicked or was aborted; its node stays cancelled
            };
            ended += 1;
            running[outcome.index] = false;
            let report = &mut nodes[outcome.index];
            report.attempts = outcome
                .calls
                .iter()
                .map(|call| u64::from(call.attempts))
                .sum();
            report.start = outcome.calls.iter().map(|call| call.span.start).min();
            report.end = Some(shared.started.elapsed());
            report.fuel_consumed = outcome.calls.iter().map(|call| call.fuel).sum();
            report.peak_memory_bytes = outcome
                .calls
                .iter()
                .map(|call| call.peak_memory)
                .max()
                .unwrap_or(0);
            report.spans = outcome.calls.iter().map(|call| call.span).collect();
            report.spans.sort_by_key(|span| span.start);
            for &producer in &self.dependencies[outcome.index] {
                consumers_left[producer] -= 1;
                if consumers_left[producer] == 0 && !keep[producer] {
                    outputs[producer] = None;
                }
            }
            match outcome.result {
                Ok(value) => {
                    report.status = NodeStatus::Ok;
                    outputs[outcome.index] = Some(Arc::new(value));
                    for &dependent in &self.dependents[outcome.index] {
                        waiting_on[dependent] -= 1;
                        if waiting_on[dependent] == 0
                            && nodes[dependent].status == NodeStatus::Cancelled
                        {
                            spawn(dependent, &mut tasks, &outputs, &mut running);
                        }
                    }
                }
                Err(error) => {
                    report.status = NodeStatus::Failed;
                    let message = match &error {
                        Error::Node {
                            cause,
                            element: Some(element),
                            ..
                        } => format!("element {element}: {cause}"),
                        Error::Node { cause, .. } => cause.to_string(),
                        other => other.to_string(),
                    };
                    report.error = Some((error.kind().as_str().into(), message));
                    let failed_id = report.id.clone();
                    if options.keep_going {
                        // Everything downstream is skipped, explicitly.
                        let mut downstream = self.dependents[outcome.index].clone();
                        while let Some(dependent) = downstream.pop() {
                            if nodes[dependent].status == NodeStatus::Cancelled
                                && nodes[dependent].error.is_none()
                            {
                                nodes[dependent].status = NodeStatus::Skipped;
                                nodes[dependent].error = Some((
                                    "skipped".into(),
                                    format!("depends on `{failed_id}`, which failed"),
                                ));
                                ended += 1;
                                downstream.extend(self.dependents[dependent].iter().copied());
                            }
                        }
                        first_error.get_or_insert(error);
                    } else {
                        tasks.abort_all();
                        for node in nodes
                            .iter_mut()
                            .filter(|node| node.status == NodeStatus::Cancelled)
                        {
                            node.error =
                                Some(("cancelled".into(), format!("`{failed_id}` failed first")));
                        }
                        if let Some(progress) = &options.progress {
                            progress(ended, total);
                        }
                        return finish(nodes, Map::new(), Some(error));
                    }
                }
            }
            if let Some(progress) = &options.progress {
                progress(ended, total);
            }
        }

        let mut graph_outputs = Map::new();
        for (name, resolved) in &self.outputs {
            let produced = match resolved {
                Resolved::Node { index, .. } => outputs[*index].is_some(),
                _ => true,
            };
            if produced {
                graph_outputs.insert(name.clone(), resolve_value(resolved, &inputs, &outputs));
            }
        }
        finish(nodes, graph_outputs, first_error)
    }

    /// Checks the graph inputs against the types their consumers need.
    fn check_inputs(&self, inputs: &Value) -> Result<Map<String, Value>, Error> {
        let invalid = |path: String, expected: String, found: String| Error::Validation {
            operator: "graph".into(),
            path,
            expected,
            found,
        };
        let object = match inputs {
            Value::Object(object) => object.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(invalid(
                    "$".into(),
                    "an object of graph inputs".into(),
                    codec::describe(other),
                ));
            }
        };
        let mut missing = BTreeMap::new();
        for (name, ty) in &self.input_types {
            match object.get(name) {
                Some(value) => codec::check_value(ty, value).map_err(|error| match error {
                    codec::CodecError::Mismatch {
                        path,
                        expected,
                        found,
                    } => invalid(
                        format!("$.{name}{}", path.trim_start_matches('$')),
                        expected,
                        found,
                    ),
                    codec::CodecError::TooLarge { size, limit } => Error::InputTooLarge {
                        operator: "graph".into(),
                        size,
                        limit,
                    },
                })?,
                None => {
                    missing.insert(name.clone(), ty.to_string());
                }
            }
        }
        if let Some((name, ty)) = missing.into_iter().next() {
            return Err(invalid(
                format!("$.{name}"),
                ty,
                "nothing (missing graph input)".into(),
            ));
        }
        Ok(object)
    }
}
