//! The dataflow scheduler: a node starts as soon as its inputs are ready,
//! at most `max_concurrency` guests run at once (per run, and per host),
//! under a graph deadline.
//!
//! One coordinator task owns the run's state (`run/coordinator.rs`); each
//! node runs in a task of its own (`run/node.rs`).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::check::{Plan, Resolved};
use super::executor::RemoteCall;
use super::options::RunOptions;
use super::report::{NodeReport, RunReport, Stopped};
use crate::codec;
use crate::error::Error;
use crate::slots::Slots;

mod coordinator;
mod node;

use coordinator::Run;
use node::{NodePolicy, Shared, SlotIds};

pub(crate) fn resolve_value(
    resolved: &Resolved,
    inputs: &Map<String, Value>,
    outputs: &[Option<Arc<Value>>],
) -> Value {
    match resolved {
        Resolved::Input(name) => inputs.get(name).cloned().unwrap_or(Value::Null),
        Resolved::Literal(value) => value.clone(),
        Resolved::List(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_value(item, inputs, outputs))
                .collect(),
        ),
        Resolved::Node { index, field } => {
            let output = outputs[*index].as_deref().unwrap_or(&Value::Null);
            match field {
                Some(field) => output.get(field).cloned().unwrap_or(Value::Null),
                None => output.clone(),
            }
        }
    }
}

/// About the length of `value` as JSON text, without writing it (nor
/// recursing: a value may nest deeply).
pub(crate) fn json_size(value: &Value) -> u64 {
    let mut size = 0u64;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        size = size.saturating_add(match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(text) => text.len() as u64 + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                items.len() as u64 + 2
            }
            Value::Object(fields) => {
                stack.extend(fields.values());
                fields.keys().map(|key| key.len() as u64 + 4).sum::<u64>() + 2
            }
        });
    }
    size
}

/// About the size of what [`resolve_value`] would make of `resolved`, as
/// JSON text, without making it: a source that names one large value many
/// times would otherwise be copied as many times before any limit is
/// checked.
pub(crate) fn resolved_size(
    resolved: &Resolved,
    inputs: &Map<String, Value>,
    outputs: &[Option<Arc<Value>>],
) -> u64 {
    match resolved {
        Resolved::Input(name) => inputs.get(name).map_or(5, json_size),
        Resolved::Literal(value) => json_size(value),
        Resolved::List(items) => items.iter().fold(2, |size, item| {
            size.saturating_add(resolved_size(item, inputs, outputs))
                .saturating_add(1)
        }),
        Resolved::Node { index, field } => {
            let output = outputs[*index].as_deref().unwrap_or(&Value::Null);
            match field {
                Some(field) => output.get(field).map_or(5, json_size),
                None => json_size(output),
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
    /// the error that ended the run. (A panic in a node's task, say in an
    /// embedder's capability, is resumed here, as it would be for a direct
    /// call.)
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
        let started = Instant::now();
        let mut coordinator = AbortOnDrop(tokio::spawn(async move {
            plan.run_here(&inputs, &options).await
        }));
        match (&mut coordinator.0).await {
            Ok(report) => report,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Not `AbortOnDrop` (it is still held here): the runtime
                // is shutting down under the caller.
                Err(_cancelled) => self.interrupted(started),
            },
        }
    }

    /// The report of a run its runtime cancelled.
    fn interrupted(&self, started: Instant) -> RunReport {
        let mut nodes: Vec<NodeReport> = self
            .graph
            .nodes
            .iter()
            .map(|node| NodeReport::pending(&node.id, &node.operator))
            .collect();
        for node in &mut nodes {
            node.stopped = Some(Stopped::Interrupted);
        }
        RunReport {
            outputs: Map::new(),
            nodes,
            duration: started.elapsed(),
            max_concurrency: 0,
            error: Some(Error::Cancelled {
                reason: "the graph run's async runtime shut down".into(),
            }),
            trace: None,
            graph: None,
        }
    }

    async fn run_here(&self, inputs: &Value, options: &RunOptions) -> RunReport {
        let started = Instant::now();
        let runtime = self
            .operators
            .first()
            .map(|operator| operator.runtime().clone());
        let host_bound = runtime
            .as_ref()
            .map_or(1, |runtime| runtime.max_concurrency);
        let max_concurrency = options.max_concurrency.unwrap_or(host_bound).max(1);
        let nodes: Vec<NodeReport> = self
            .graph
            .nodes
            .iter()
            .map(|node| NodeReport::pending(&node.id, &node.operator))
            .collect();
        let report = |nodes, outputs, error, (trace, graph)| RunReport {
            outputs,
            nodes,
            duration: started.elapsed(),
            max_concurrency,
            error,
            trace,
            graph,
        };
        if options.timeout.is_zero() {
            // No time at all: the deadline has passed before anything runs.
            let mut nodes = nodes;
            for node in &mut nodes {
                node.stopped = Some(Stopped::Deadline);
            }
            let error = Error::GraphTimeout {
                timeout: options.timeout,
                running: Vec::new(),
            };
            return report(nodes, Map::new(), Some(error), (None, None));
        }
        let inputs = match self.check_inputs(inputs) {
            Ok(inputs) => inputs,
            Err(error) => {
                let mut nodes = nodes;
                for node in &mut nodes {
                    node.stopped = Some(Stopped::InvalidInputs);
                }
                return report(nodes, Map::new(), Some(error), (None, None));
            }
        };
        let shared = Arc::new(Shared {
            started,
            run_slots: Slots::new(max_concurrency),
            host_slots: runtime
                .map_or_else(|| Slots::new(1), |runtime| runtime.scheduler_slots.clone()),
            slot_ids: SlotIds::default(),
            remote: options.executor.clone().map(|executor| {
                Box::new(
                    move |operator: &crate::operator::Operator,
                          input,
                          limits: crate::limits::Limits| {
                        executor.call(RemoteCall {
                            operator: operator.name().to_owned(),
                            digest: operator.digest().to_owned(),
                            input,
                            timeout: limits.timeout,
                            limits,
                        })
                    },
                ) as Box<crate::call::RemoteAttempt>
            }),
        });
        let mut run = Run::new(self, options, inputs, shared, nodes, max_concurrency);
        let (nodes, outputs, error, trace) = run.drive().await;
        report(nodes, outputs, error, trace)
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
        let mut missing = None;
        for (name, ty) in &self.input_types {
            match object.get(name) {
                Some(value) => codec::check_field(ty, name, value)
                    .map_err(|error| error.into_error("graph"))?,
                // The first missing input in name order.
                None => {
                    missing.get_or_insert((name, ty));
                }
            }
        }
        if let Some((name, ty)) = missing {
            return Err(invalid(
                format!("$.{name}"),
                ty.to_string(),
                "nothing (missing graph input)".into(),
            ));
        }
        Ok(object)
    }

    /// The policies of each node's calls: the graph's own for the node's
    /// operator key (with the plan's state for it), else the operator's on
    /// its host.
    pub(crate) fn node_policies(&self) -> Vec<NodePolicy> {
        self.graph
            .nodes
            .iter()
            .zip(&self.operators)
            .map(|(node, operator)| match self.policies.get(&node.operator) {
                Some(own) => NodePolicy::Graph(own.clone()),
                None => NodePolicy::Host(operator.runtime().policy_for(operator.name())),
            })
            .collect()
    }
}
