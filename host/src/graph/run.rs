//! The dataflow scheduler: a node starts as soon as its inputs are ready,
//! at most `max_concurrency` guests run at once (per run, and per host),
//! under a graph deadline.
//!
//! One coordinator task owns the run's state ([`Run`]): it spawns a task
//! per ready node, and as each one ends it records the outcome, frees the
//! inputs nobody needs any more, and starts what became ready — or, on a
//! failure, skips what depends on it (`keep_going`) or cancels the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::check::{Plan, Resolved};
use super::report::{NodeReport, NodeStatus, RunReport, Stopped};
use crate::codec;
use crate::error::Error;
use crate::limits::Limits;
use crate::slots::Slots;

mod node;

use node::{
    CallRecord, NodeCall, NodeOutcome, NodePolicy, Shared, SlotIds, resume_panic, run_map_node,
    run_node,
};

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

fn resolve_value(
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
        let report = |nodes, outputs, error| RunReport {
            outputs,
            nodes,
            duration: started.elapsed(),
            max_concurrency,
            error,
        };
        let inputs = match self.check_inputs(inputs) {
            Ok(inputs) => inputs,
            Err(error) => {
                let mut nodes = nodes;
                for node in &mut nodes {
                    node.stopped = Some(Stopped::InvalidInputs);
                }
                return report(nodes, Map::new(), Some(error));
            }
        };
        let shared = Arc::new(Shared {
            started,
            run_slots: Slots::new(max_concurrency),
            host_slots: runtime
                .map_or_else(|| Slots::new(1), |runtime| runtime.scheduler_slots.clone()),
            slot_ids: SlotIds::default(),
        });
        let mut run = Run::new(self, options, inputs, shared, nodes, max_concurrency);
        let (nodes, outputs, error) = run.drive().await;
        report(nodes, outputs, error)
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
    fn node_policies(&self) -> Vec<NodePolicy> {
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

/// The coordinator's state of one run.
struct Run<'a> {
    plan: &'a Plan,
    options: &'a RunOptions,
    inputs: Map<String, Value>,
    shared: Arc<Shared>,
    max_concurrency: usize,
    policies: Vec<NodePolicy>,
    nodes: Vec<NodeReport>,
    /// Per node, how many of its producers have not succeeded yet.
    waiting_on: Vec<usize>,
    /// Per node, how many consumers still need its output; an output
    /// nobody needs any more is dropped, so a long chain runs in bounded
    /// memory.
    consumers_left: Vec<usize>,
    /// Outputs that a graph output names, kept to the end.
    keep: Vec<bool>,
    outputs: Vec<Option<Arc<Value>>>,
    running: Vec<bool>,
    tasks: JoinSet<NodeOutcome>,
    /// The node each running task runs.
    task_nodes: HashMap<tokio::task::Id, usize>,
    ended: usize,
    first_error: Option<Error>,
}

/// What a run produced: the node reports, the graph outputs, the error.
type Ended = (Vec<NodeReport>, Map<String, Value>, Option<Error>);

impl<'a> Run<'a> {
    fn new(
        plan: &'a Plan,
        options: &'a RunOptions,
        inputs: Map<String, Value>,
        shared: Arc<Shared>,
        nodes: Vec<NodeReport>,
        max_concurrency: usize,
    ) -> Self {
        let total = plan.graph.nodes.len();
        let mut keep = vec![false; total];
        for (_, resolved) in &plan.outputs {
            resolved.for_each_node(&mut |index| keep[index] = true);
        }
        Run {
            plan,
            options,
            inputs,
            shared,
            max_concurrency,
            policies: plan.node_policies(),
            nodes,
            waiting_on: plan.dependencies.iter().map(Vec::len).collect(),
            consumers_left: plan.dependents.iter().map(Vec::len).collect(),
            keep,
            outputs: vec![None; total],
            running: vec![false; total],
            tasks: JoinSet::new(),
            task_nodes: HashMap::new(),
            ended: 0,
            first_error: None,
        }
    }

    /// Runs every node that can run, until the graph is done, fails or
    /// passes its deadline.
    async fn drive(&mut self) -> Ended {
        for index in 0..self.nodes.len() {
            if self.waiting_on[index] == 0 {
                self.spawn(index);
            }
        }
        let deadline = tokio::time::Instant::from_std(self.shared.started + self.options.timeout);
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(None) => return self.finish(),
                Err(_elapsed) => return self.deadline_passed(),
                Ok(Some(Err(error))) => {
                    let task = error.id();
                    if error.is_panic() {
                        self.tasks.abort_all();
                        resume_panic(error);
                    }
                    // Cancelled, not by the run (it aborts its tasks only
                    // right before it returns): the runtime is shutting down.
                    let Some(index) = self.task_nodes.remove(&task) else {
                        continue;
                    };
                    let outcome = NodeOutcome {
                        index,
                        result: Err(Error::Cancelled {
                            reason: format!(
                                "node `{}`: its task was cancelled",
                                self.nodes[index].id
                            ),
                        }),
                        calls: Vec::new(),
                    };
                    if let Some(ended) = self.ended(outcome) {
                        return ended;
                    }
                }
                Ok(Some(Ok((task, outcome)))) => {
                    self.task_nodes.remove(&task);
                    if let Some(ended) = self.ended(outcome) {
                        return ended;
                    }
                }
            }
        }
    }

    fn spawn(&mut self, index: usize) {
        self.running[index] = true;
        let plan = self.plan;
        let node = &plan.graph.nodes[index];
        let operator = &plan.operators[index];
        let input: Map<String, Value> = plan.args[index]
            .iter()
            .map(|(name, resolved)| {
                let value = resolve_value(resolved, &self.inputs, &self.outputs);
                (name.clone(), value)
            })
            .collect();
        let call = NodeCall {
            operator: operator.clone(),
            policy: self.policies[index].clone(),
            limits: node
                .limits
                .clone()
                .or_else(|| self.options.limits.clone())
                .unwrap_or_else(|| operator.runtime().default_limits.clone()),
        };
        let span = tracing::debug_span!("node", node = %node.id, operator = %node.operator);
        let (shared, id) = (self.shared.clone(), node.id.clone());
        let task = match &node.map {
            None => self
                .tasks
                .spawn(run_node(shared, index, id, call, input).instrument(span)),
            Some(map) => {
                let bound = map.max_concurrency.unwrap_or(self.max_concurrency).max(1);
                let map = (map.param.clone(), bound);
                self.tasks
                    .spawn(run_map_node(shared, index, id, call, input, map).instrument(span))
            }
        };
        self.task_nodes.insert(task.id(), index);
    }

    /// Records a node's outcome and acts on it; `Some` when the run is over.
    fn ended(&mut self, outcome: NodeOutcome) -> Option<Ended> {
        let index = outcome.index;
        self.ended += 1;
        self.running[index] = false;
        self.record_calls(index, &outcome.calls);
        for &producer in &self.plan.dependencies[index] {
            self.consumers_left[producer] -= 1;
            if self.consumers_left[producer] == 0 && !self.keep[producer] {
                self.outputs[producer] = None;
            }
        }
        let stop = match outcome.result {
            Ok(value) => {
                self.succeeded(index, value);
                None
            }
            Err(error) => self.failed(index, error),
        };
        if let Some(progress) = &self.options.progress {
            progress(self.ended, self.nodes.len());
        }
        stop
    }

    fn record_calls(&mut self, index: usize, calls: &[CallRecord]) {
        let report = &mut self.nodes[index];
        report.attempts = calls.iter().map(|call| u64::from(call.attempts)).sum();
        report.start = calls.iter().map(|call| call.span.start).min();
        report.end = Some(self.shared.started.elapsed());
        report.fuel_consumed = calls.iter().map(|call| call.fuel).sum();
        report.peak_memory_bytes = calls.iter().map(|call| call.peak_memory).max().unwrap_or(0);
        report.spans = calls.iter().map(|call| call.span).collect();
        report.spans.sort_by_key(|span| span.start);
    }

    fn succeeded(&mut self, index: usize, value: Value) {
        self.nodes[index].status = NodeStatus::Ok;
        self.outputs[index] = Some(Arc::new(value));
        for &dependent in &self.plan.dependents[index] {
            self.waiting_on[dependent] -= 1;
            if self.waiting_on[dependent] == 0
                && self.nodes[dependent].status == NodeStatus::Cancelled
            {
                self.spawn(dependent);
            }
        }
    }

    /// With `keep_going`, skips everything downstream of the failed node;
    /// otherwise cancels the rest and ends the run.
    fn failed(&mut self, index: usize, error: Error) -> Option<Ended> {
        self.nodes[index].fail(&error);
        let failed = self.nodes[index].id.clone();
        if !self.options.keep_going {
            self.tasks.abort_all();
            self.cancel_pending(&Stopped::FailedFirst { node: failed });
            return Some((std::mem::take(&mut self.nodes), Map::new(), Some(error)));
        }
        let mut downstream = self.plan.dependents[index].clone();
        while let Some(dependent) = downstream.pop() {
            let report = &mut self.nodes[dependent];
            if report.status == NodeStatus::Cancelled && report.stopped.is_none() {
                report.status = NodeStatus::Skipped;
                report.stopped = Some(Stopped::DependsOnFailed {
                    node: failed.clone(),
                });
                self.ended += 1;
                downstream.extend(self.plan.dependents[dependent].iter().copied());
            }
        }
        self.first_error.get_or_insert(error);
        None
    }

    fn cancel_pending(&mut self, why: &Stopped) {
        for node in &mut self.nodes {
            if node.status == NodeStatus::Cancelled {
                node.stopped = Some(why.clone());
            }
        }
    }

    fn deadline_passed(&mut self) -> Ended {
        self.tasks.abort_all();
        let running: Vec<String> = (0..self.nodes.len())
            .filter(|&index| self.running[index])
            .map(|index| self.nodes[index].id.clone())
            .collect();
        let timeout = Error::GraphTimeout {
            timeout: self.options.timeout,
            running,
        };
        self.cancel_pending(&Stopped::Deadline);
        let error = self.first_error.take().unwrap_or(timeout);
        (std::mem::take(&mut self.nodes), Map::new(), Some(error))
    }

    fn finish(&mut self) -> Ended {
        let mut graph_outputs = Map::new();
        for (name, resolved) in &self.plan.outputs {
            let mut produced = true;
            resolved.for_each_node(&mut |index| produced &= self.outputs[index].is_some());
            if produced {
                let value = resolve_value(resolved, &self.inputs, &self.outputs);
                graph_outputs.insert(name.clone(), value);
            }
        }
        (
            std::mem::take(&mut self.nodes),
            graph_outputs,
            self.first_error.take(),
        )
    }
}
