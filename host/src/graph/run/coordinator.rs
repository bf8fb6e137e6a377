//! The coordinator of one run: it owns the run's state, starts each ready
//! node when a run slot is free (a task per node; at bound 1, the node's
//! call polled by the coordinator itself), and as each one ends records
//! the outcome, frees the inputs nobody needs any more, and starts what
//! became ready — or, on a failure, skips what depends on it
//! (`keep_going`) or cancels the rest.
//!
//! Composite nodes grow the graph while it runs: their code runs in a task
//! of its own whose calls come in as events (a recorded node, a forced
//! value); a composite node ends with its result, once the nodes that
//! result comes from have.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::node::{
    CallRecord, NodeCall, NodeOutcome, NodePolicy, Shared, resume_panic, run_map_node, run_node,
};
use super::{RunOptions, resolve_value, resolved_size};
use crate::error::Error;
use crate::graph::check::{Plan, Resolved};
use crate::graph::compose::{Event, Journal, Scope, ScopeEnd};
use crate::graph::report::TraceReport;
use crate::graph::report::{NodeReport, NodeStatus, Stopped};
use crate::graph::{Graph, Node};
use crate::limits::Limits;
use crate::operator::Operator;

mod composites;

/// What a run produced: the node reports, the graph outputs, the error,
/// and how its composites went with the graph they grew.
pub(super) type Ended = (
    Vec<NodeReport>,
    Map<String, Value>,
    Option<Error>,
    (Option<TraceReport>, Option<Graph>),
);

/// A node a composite recorded during the run.
struct RecordedNode {
    node: Node,
    operator: Operator,
    args: Vec<(String, Resolved)>,
    policy: NodePolicy,
    /// For a composite: the scope its code runs in.
    scope: Option<Scope>,
}

/// Something that waits for the values of nodes.
enum Waiter {
    /// A composite's forced value.
    Reply {
        needs: Resolved,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// A composite node's result.
    Complete { node: usize, needs: Resolved },
}

/// The composites of a run: made when the first one starts.
struct Compose {
    journal: Arc<Mutex<Journal>>,
    sender: mpsc::UnboundedSender<Event>,
    receiver: mpsc::UnboundedReceiver<Event>,
    tasks: JoinSet<CompositeEnd>,
    /// The node each composite task runs.
    task_nodes: HashMap<tokio::task::Id, usize>,
    waiters: Vec<Waiter>,
    forced: usize,
}

/// The coordinator's state of one run.
pub(super) struct Run<'a> {
    plan: &'a Plan,
    options: &'a RunOptions,
    inputs: Map<String, Value>,
    shared: Arc<Shared>,
    max_concurrency: usize,
    /// Per node of the plan: its policies.
    policies: Vec<NodePolicy>,
    /// Nodes composites recorded, after the plan's.
    recorded: Vec<RecordedNode>,
    /// Node index by id, made when a composite records its first node.
    ids: HashMap<String, usize>,
    nodes: Vec<NodeReport>,
    /// Per node, how many of its producers have not succeeded yet.
    waiting_on: Vec<usize>,
    /// Per node, how many consumers still need its output; an output
    /// nobody needs any more is dropped, so a long chain runs in bounded
    /// memory.
    consumers_left: Vec<usize>,
    /// Dependents that recorded nodes added (the plan's are in the plan).
    more_dependents: Vec<Vec<usize>>,
    /// Outputs kept to the end: those a graph output names, and every
    /// recorded node's (a composite may force any of them later).
    keep: Vec<bool>,
    outputs: Vec<Option<Arc<Value>>>,
    running: Vec<bool>,
    /// Single-call nodes that are ready but wait for a run slot, in the
    /// order they became ready. The coordinator takes a node's slot before
    /// it spawns its task: at bound 1 one node task exists at a time, and
    /// the next starts on the coordinator's worker instead of waking a
    /// parked one.
    ready: VecDeque<usize>,
    /// At bound 1, the one single-call node running, polled by the
    /// coordinator itself: no task to spawn, no worker to wake, and nothing
    /// to run in parallel with anyway. Only for operators that import no
    /// embedder capability (see `start`).
    inline: Option<Pin<Box<dyn Future<Output = NodeOutcome> + Send + 'a>>>,
    tasks: JoinSet<NodeOutcome>,
    /// The node each running task runs.
    task_nodes: HashMap<tokio::task::Id, usize>,
    ended: usize,
    first_error: Option<Error>,
    compose: Option<Compose>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
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
            recorded: Vec::new(),
            ids: HashMap::new(),
            nodes,
            waiting_on: plan.dependencies.iter().map(Vec::len).collect(),
            consumers_left: plan.dependents.iter().map(Vec::len).collect(),
            more_dependents: vec![Vec::new(); total],
            keep,
            outputs: vec![None; total],
            running: vec![false; total],
            ready: VecDeque::new(),
            inline: None,
            tasks: JoinSet::new(),
            task_nodes: HashMap::new(),
            ended: 0,
            first_error: None,
            compose: None,
        }
    }

    fn plan_len(&self) -> usize {
        self.plan.graph.nodes.len()
    }

    fn recorded(&self, index: usize) -> Option<&RecordedNode> {
        index
            .checked_sub(self.plan_len())
            .and_then(|at| self.recorded.get(at))
    }

    fn graph_node(&self, index: usize) -> &Node {
        self.recorded(index)
            .map_or_else(|| &self.plan.graph.nodes[index], |recorded| &recorded.node)
    }

    fn operator(&self, index: usize) -> &Operator {
        self.recorded(index).map_or_else(
            || &self.plan.operators[index],
            |recorded| &recorded.operator,
        )
    }

    fn args(&self, index: usize) -> &[(String, Resolved)] {
        self.recorded(index)
            .map_or_else(|| &self.plan.args[index][..], |recorded| &recorded.args[..])
    }

    /// The nodes that depend on `index`, taken: a node ends (succeeds,
    /// fails or is skipped) once, and only then are they visited.
    fn take_dependents(&mut self, index: usize) -> impl Iterator<Item = usize> + use<'a> {
        let plan = self.plan;
        let more = std::mem::take(&mut self.more_dependents[index]);
        plan.dependents
            .get(index)
            .into_iter()
            .flatten()
            .copied()
            .chain(more)
    }

    fn policy(&self, index: usize) -> &NodePolicy {
        self.recorded(index)
            .map_or_else(|| &self.policies[index], |recorded| &recorded.policy)
    }

    /// Runs every node that can run, until the graph is done, fails or
    /// passes its deadline.
    pub(super) async fn drive(&mut self) -> Ended {
        for index in 0..self.nodes.len() {
            if self.waiting_on[index] == 0 {
                self.spawn(index);
            }
        }
        let deadline = tokio::time::Instant::from_std(self.shared.started + self.options.timeout);
        // One timer for the whole run, not one per wake-up.
        let deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(deadline);
        let run_slots = self.shared.run_slots.clone();
        loop {
            let composites_running = self
                .compose
                .as_ref()
                .is_some_and(|compose| !compose.tasks.is_empty());
            // A ready node waits for a slot that a running task holds, so
            // the run is over only when nothing runs and nothing waits.
            if self.tasks.is_empty()
                && self.inline.is_none()
                && !composites_running
                && self.ready.is_empty()
            {
                let event = self
                    .compose
                    .as_mut()
                    .and_then(|compose| compose.receiver.try_recv().ok());
                match event {
                    Some(event) => {
                        if let Some(ended) = self.event(event) {
                            return ended;
                        }
                        continue;
                    }
                    None => return self.finish(),
                }
            }
            let waiting = !self.ready.is_empty();
            let inline = &mut self.inline;
            let inline = std::future::poll_fn(|cx| match inline {
                Some(future) => future.as_mut().poll(cx),
                None => Poll::Pending,
            });
            let step = match &mut self.compose {
                // No composite: only node tasks, run slots and the deadline.
                // Biased: the deadline first, then ends, then new starts,
                // so that a run is the same from one time to the next.
                None => tokio::select! {
                    biased;
                    () = &mut deadline => Step::Deadline,
                    outcome = inline => Step::Inline(outcome),
                    joined = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Step::Task(joined),
                    permit = run_slots.acquire_owned(), if waiting => Step::Slot(permit),
                },
                Some(compose) => tokio::select! {
                    biased;
                    () = &mut deadline => Step::Deadline,
                    permit = run_slots.acquire_owned(), if waiting => Step::Slot(permit),
                    outcome = inline => Step::Inline(outcome),
                    Some(event) = compose.receiver.recv() => Step::Event(event),
                    joined = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Step::Task(joined),
                    Some(done) = compose.tasks.join_next_with_id(), if !compose.tasks.is_empty() => Step::Composite(done),
                },
            };
            let ended = match step {
                Step::Deadline => return self.deadline_passed(),
                Step::Inline(outcome) => {
                    self.inline = None;
                    self.ended(outcome)
                }
                Step::Slot(permit) => {
                    if let Some(index) = self.ready.pop_front() {
                        self.start(index, permit);
                    }
                    None
                }
                Step::Event(event) => self.event(event),
                Step::Task(None) => None,
                Step::Task(Some(Ok((task, outcome)))) => {
                    self.task_nodes.remove(&task);
                    self.ended(outcome)
                }
                Step::Task(Some(Err(error))) => self.task_failed(error),
                Step::Composite(Ok((task, (index, end)))) => {
                    if let Some(compose) = &mut self.compose {
                        compose.task_nodes.remove(&task);
                    }
                    self.composite_ended(index, end)
                }
                Step::Composite(Err(error)) => {
                    let task = error.id();
                    if error.is_panic() {
                        self.abort_all();
                        resume_panic(error);
                    }
                    // Cancelled, not by the run (it aborts its tasks only
                    // right before it returns): the runtime is shutting down.
                    let index = self
                        .compose
                        .as_mut()
                        .and_then(|compose| compose.task_nodes.remove(&task));
                    index.and_then(|index| {
                        let end = Err(Error::Cancelled {
                            reason: "the composite's task was cancelled".into(),
                        });
                        self.composite_ended(index, end)
                    })
                }
            };
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    fn task_failed(&mut self, error: tokio::task::JoinError) -> Option<Ended> {
        let task = error.id();
        if error.is_panic() {
            self.abort_all();
            resume_panic(error);
        }
        // Cancelled, not by the run (it aborts its tasks only right before
        // it returns): the runtime is shutting down.
        let index = self.task_nodes.remove(&task)?;
        let outcome = NodeOutcome {
            index,
            result: Err(Error::Cancelled {
                reason: format!("node `{}`: its task was cancelled", self.nodes[index].id),
            }),
            calls: Vec::new(),
        };
        self.ended(outcome)
    }

    fn abort_all(&mut self) {
        self.tasks.abort_all();
        self.inline = None;
        if let Some(compose) = &mut self.compose {
            compose.tasks.abort_all();
        }
    }

    fn limits(&self, index: usize) -> Limits {
        self.graph_node(index)
            .limits
            .clone()
            .or_else(|| self.options.limits.clone())
            .unwrap_or_else(|| self.operator(index).runtime().default_limits.clone())
    }

    /// Starts node `index`, which became ready: a composite or a map node
    /// at once (a map's element calls take run slots of their own), a
    /// single call when a run slot is free, else in its turn.
    fn spawn(&mut self, index: usize) {
        if self.operator(index).is_composite() {
            return self.start_composite(index);
        }
        if let Some(map) = &self.graph_node(index).map {
            let bound = map.max_concurrency.unwrap_or(self.max_concurrency).max(1);
            let map = (map.param.clone(), bound);
            return self.start_map(index, map);
        }
        match self.shared.run_slots.try_acquire_owned() {
            Some(permit) => {
                // Ready nodes that waited go first, in this free slot.
                self.ready.push_back(index);
                if let Some(first) = self.ready.pop_front() {
                    self.start(first, permit);
                }
            }
            None => self.ready.push_back(index),
        }
    }

    /// Marks node `index` running: its input, from the values it depends
    /// on, and its tracing span; or, if its input would be over four times
    /// the node's input limit as JSON text, the `validation` error that
    /// ends it before the input is made.
    fn begin(&mut self, index: usize) -> (Result<Map<String, Value>, Error>, tracing::Span) {
        self.running[index] = true;
        let node = self.graph_node(index);
        let span = tracing::debug_span!("node", node = %node.id, operator = %node.operator);
        let limit = self.limits(index).max_input_bytes.saturating_mul(4);
        let size = self.args(index).iter().fold(0u64, |size, (_, resolved)| {
            size.saturating_add(resolved_size(resolved, &self.inputs, &self.outputs))
        });
        if size > limit {
            let error = Error::Node {
                node: node.id.clone(),
                element: None,
                cause: Box::new(Error::InputTooLarge {
                    operator: node.operator.clone(),
                    size,
                    limit,
                }),
            };
            return (Err(error), span);
        }
        let input = self
            .args(index)
            .iter()
            .map(|(name, resolved)| {
                let value = resolve_value(resolved, &self.inputs, &self.outputs);
                (name.clone(), value)
            })
            .collect();
        (Ok(input), span)
    }

    /// Ends node `index` with `error` without running it (its permit, if
    /// it had one, freed).
    fn refuse(&mut self, index: usize, error: Error) {
        let task = self.tasks.spawn(async move {
            NodeOutcome {
                index,
                result: Err(error),
                calls: Vec::new(),
            }
        });
        self.task_nodes.insert(task.id(), index);
    }

    /// What node `index` calls, and how.
    fn node_call(&self, index: usize) -> NodeCall {
        NodeCall {
            operator: self.operator(index).clone(),
            policy: self.policy(index).clone(),
            limits: self.limits(index),
        }
    }

    /// Runs the single-call node `index` in the run slot `permit`.
    fn start(&mut self, index: usize, permit: OwnedSemaphorePermit) {
        let (input, span) = self.begin(index);
        let input = match input {
            Ok(input) => input,
            Err(error) => return self.refuse(index, error),
        };
        let call = self.node_call(index);
        // Inline only what cannot block the coordinator: an embedder's
        // capability may be a synchronous function that blocks its thread
        // (and with it the run's deadline); xcs's own and WASI's imports
        // never do.
        let inline =
            self.max_concurrency == 1
                && self.inline.is_none()
                && call.operator.imports().iter().all(|import| {
                    import.starts_with("xcs:operator/") || import.starts_with("wasi:")
                });
        let id = self.graph_node(index).id.clone();
        let node = run_node(self.shared.clone(), index, id, call, input, permit).instrument(span);
        if inline {
            self.inline = Some(Box::pin(node));
            return;
        }
        let task = self.tasks.spawn(node);
        self.task_nodes.insert(task.id(), index);
    }

    /// Spawns the map node `index`: `(param, bound)` of its elements.
    fn start_map(&mut self, index: usize, map: (String, usize)) {
        let (input, span) = self.begin(index);
        let input = match input {
            Ok(input) => input,
            Err(error) => return self.refuse(index, error),
        };
        let call = self.node_call(index);
        let id = self.graph_node(index).id.clone();
        let task = self
            .tasks
            .spawn(run_map_node(self.shared.clone(), index, id, call, input, map).instrument(span));
        self.task_nodes.insert(task.id(), index);
    }

    /// Starts the composite node `index` (see `composites.rs`).
    fn start_composite(&mut self, index: usize) {
        let (input, span) = self.begin(index);
        let input = match input {
            Ok(input) => input,
            Err(error) => return self.refuse(index, error),
        };
        let operator = self.operator(index).clone();
        self.spawn_composite(index, operator, Value::Object(input), span);
    }

    /// Node `index` cannot run: `failed` (a node it depends on) failed.
    fn skip(&mut self, index: usize, failed: &str) {
        let report = &mut self.nodes[index];
        if report.status == NodeStatus::Cancelled && report.stopped.is_none() {
            report.status = NodeStatus::Skipped;
            report.stopped = Some(Stopped::DependsOnFailed {
                node: failed.to_owned(),
            });
            self.ended += 1;
        }
    }

    /// Records a node's outcome and acts on it; `Some` when the run is over.
    fn ended(&mut self, outcome: NodeOutcome) -> Option<Ended> {
        let index = outcome.index;
        self.ended += 1;
        self.running[index] = false;
        self.record_calls(index, &outcome.calls);
        // Recorded nodes keep their outputs (and read only recorded ones).
        let plan = self.plan;
        for &producer in plan.dependencies.get(index).into_iter().flatten() {
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
        stop.or_else(|| self.wake_waiters())
    }

    fn record_calls(&mut self, index: usize, calls: &[CallRecord]) {
        let report = &mut self.nodes[index];
        report.end = Some(self.shared.started.elapsed());
        if calls.is_empty() {
            return; // a composite node: its start was set when it started
        }
        report.attempts = calls.iter().map(|call| u64::from(call.attempts)).sum();
        report.start = calls.iter().map(|call| call.span.start).min();
        report.fuel_consumed = calls.iter().map(|call| call.fuel).sum();
        report.peak_memory_bytes = calls.iter().map(|call| call.peak_memory).max().unwrap_or(0);
        report.spans = calls.iter().map(|call| call.span).collect();
        report.spans.sort_by_key(|span| span.start);
    }

    fn succeeded(&mut self, index: usize, value: Value) {
        self.nodes[index].status = NodeStatus::Ok;
        self.outputs[index] = Some(Arc::new(value));
        for dependent in self.take_dependents(index) {
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
            self.abort_all();
            self.cancel_pending(&Stopped::FailedFirst { node: failed });
            return Some(self.take(Map::new(), Some(error)));
        }
        let mut downstream: Vec<usize> = self.take_dependents(index).collect();
        while let Some(dependent) = downstream.pop() {
            let report = &self.nodes[dependent];
            if report.status == NodeStatus::Cancelled && report.stopped.is_none() {
                self.skip(dependent, &failed);
                downstream.extend(self.take_dependents(dependent));
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
        self.abort_all();
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
        self.take(Map::new(), Some(error))
    }

    fn finish(&mut self) -> Ended {
        // The outputs may name one value many times: they are not made
        // past what the nodes may produce in all (four times their output
        // limits, as JSON text).
        let limit = (0..self.nodes.len()).fold(0u64, |limit, index| {
            limit.saturating_add(self.limits(index).max_output_bytes.saturating_mul(4))
        });
        let size = self.plan.outputs.iter().fold(0u64, |size, (_, resolved)| {
            size.saturating_add(resolved_size(resolved, &self.inputs, &self.outputs))
        });
        if size > limit {
            let error = Error::Memory {
                operator: "graph".into(),
                what: "outputs",
                requested: size,
                limit,
            };
            let error = self.first_error.take().unwrap_or(error);
            return self.take(Map::new(), Some(error));
        }
        let mut graph_outputs = Map::new();
        for (name, resolved) in &self.plan.outputs {
            let mut produced = true;
            resolved.for_each_node(&mut |index| produced &= self.outputs[index].is_some());
            if produced {
                let value = resolve_value(resolved, &self.inputs, &self.outputs);
                graph_outputs.insert(name.clone(), value);
            }
        }
        let error = self.first_error.take();
        self.take(graph_outputs, error)
    }

    /// What the run produced, taken out of the coordinator.
    fn take(&mut self, outputs: Map<String, Value>, error: Option<Error>) -> Ended {
        let trace = self.compose.as_ref().map(|compose| {
            let journal = compose
                .journal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            TraceReport {
                complete: false,
                cached: false,
                stopped: None,
                forced: compose.forced,
                calls: journal.calls,
                merged: journal.merged,
            }
        });
        let graph = trace.as_ref().map(|_| {
            let mut graph = self.plan.graph.clone();
            graph
                .nodes
                .extend(self.recorded.iter().map(|recorded| recorded.node.clone()));
            graph
        });
        (
            std::mem::take(&mut self.nodes),
            outputs,
            error,
            (trace, graph),
        )
    }
}

/// A composite node's task's result: the node, and how its code ended.
type CompositeEnd = (usize, Result<ScopeEnd, Error>);

/// What the coordinator's loop woke up for.
enum Step {
    Deadline,
    /// The node the coordinator ran itself ended.
    Inline(NodeOutcome),
    /// A run slot for the first ready node.
    Slot(OwnedSemaphorePermit),
    Event(Event),
    Task(Option<Result<(tokio::task::Id, NodeOutcome), tokio::task::JoinError>>),
    Composite(Result<(tokio::task::Id, CompositeEnd), tokio::task::JoinError>),
}
