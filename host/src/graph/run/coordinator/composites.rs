//! The run's composites: composite nodes' code in tasks of their own, the
//! nodes they record while the run goes on, and the values they force.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{Compose, Ended, RecordedNode, Run, Waiter};
use crate::error::Error;
use crate::graph::Source;
use crate::graph::check::Resolved;
use crate::graph::compose::{Event, Journal, Scope, ScopeEnd, run_composite, scope_for_node};
use crate::graph::report::{NodeReport, NodeStatus};
use crate::graph::run::node::{NodeOutcome, NodePolicy};
use crate::graph::run::resolve_value;
use crate::operator::Operator;

impl Run<'_> {
    /// Starts a composite node's code: outside the concurrency bounds
    /// (it only orchestrates, and waits for the values it forces).
    pub(super) fn spawn_composite(
        &mut self,
        index: usize,
        operator: Operator,
        input: Value,
        span: tracing::Span,
    ) {
        let scope = match self
            .recorded(index)
            .and_then(|recorded| recorded.scope.clone())
        {
            Some(scope) => scope,
            None => scope_for_node(&self.graph_node(index).id, operator.name()),
        };
        let limits = self
            .graph_node(index)
            .limits
            .clone()
            .or_else(|| self.options.compose.limits.clone())
            .unwrap_or_else(|| operator.runtime().default_limits.clone());
        self.nodes[index].start = Some(self.shared.started.elapsed());
        let compose = self.compose();
        let (journal, events) = (compose.journal.clone(), compose.sender.clone());
        let task = compose.tasks.spawn(
            async move {
                let end = run_composite(&operator, &input, scope, journal, events, &limits).await;
                (index, end)
            }
            .instrument(span),
        );
        compose.task_nodes.insert(task.id(), index);
    }

    /// The run's composites' state, made on first use.
    pub(super) fn compose(&mut self) -> &mut Compose {
        let (plan, options) = (self.plan, self.options);
        if self.compose.is_none() {
            for (index, node) in plan.graph.nodes.iter().enumerate() {
                self.ids.insert(node.id.clone(), index);
            }
        }
        self.compose.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let journal = Journal::new(plan.operator_set.clone(), options.compose.clone());
            Compose {
                journal: Arc::new(Mutex::new(journal)),
                sender,
                receiver,
                tasks: JoinSet::new(),
                task_nodes: HashMap::new(),
                waiters: Vec::new(),
                forced: 0,
            }
        })
    }

    pub(super) fn event(&mut self, event: Event) -> Option<Ended> {
        match event {
            Event::Recorded { index, scope } => self.add_recorded(index, scope),
            Event::Force { source, reply } => {
                let compose = self.compose();
                compose.forced += 1;
                match self.resolve(&source) {
                    Ok(needs) => {
                        self.compose().waiters.push(Waiter::Reply { needs, reply });
                        self.wake_waiters()
                    }
                    Err(error) => {
                        // The composite is gone if the send fails: nothing waits.
                        let _ = reply.send(Err(error));
                        None
                    }
                }
            }
        }
    }

    /// `source` (from a composite's journal) with node ids as indices.
    pub(super) fn resolve(&self, source: &Source) -> Result<Resolved, Error> {
        Ok(match source {
            Source::Literal(value) => Resolved::Literal(value.clone()),
            Source::Input(name) => Resolved::Input(name.clone()),
            Source::List(items) => Resolved::List(
                items
                    .iter()
                    .map(|item| self.resolve(item))
                    .collect::<Result<_, _>>()?,
            ),
            Source::Node { node, field } => match self.ids.get(node) {
                Some(&index) => Resolved::Node {
                    index,
                    field: field.clone(),
                },
                None => {
                    return Err(Error::Config {
                        message: format!("a composite referred to `{node}`, which is not a node"),
                    });
                }
            },
        })
    }

    /// Adds node `index` of the journal, which a composite just recorded.
    pub(super) fn add_recorded(
        &mut self,
        journal_index: usize,
        scope: Option<Scope>,
    ) -> Option<Ended> {
        let (node, operator) = {
            let journal = self.compose().journal.clone();
            let journal = journal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let node = journal.graph.nodes[journal_index].clone();
            let operator = journal.operators().get(&node.operator).cloned();
            (node, operator)
        };
        let Some(operator) = operator else {
            return None; // the journal checked the name when it recorded it
        };
        let index = self.nodes.len();
        let mut args = Vec::with_capacity(node.args.len());
        let mut dependencies = Vec::new();
        // A set beside the list: a guest decides how many references a
        // call's arguments hold (up to the composite's reference bound).
        let mut depends_on = std::collections::HashSet::new();
        let mut refused = None;
        for (name, source) in &node.args {
            match self.resolve(source) {
                Ok(resolved) => {
                    resolved.for_each_node(&mut |producer| {
                        if depends_on.insert(producer) {
                            dependencies.push(producer);
                        }
                    });
                    args.push((name.clone(), resolved));
                }
                Err(error) => {
                    refused.get_or_insert(error);
                }
            }
        }
        if self.ids.contains_key(&node.id) {
            refused.get_or_insert(Error::Graph {
                problems: vec![crate::error::GraphProblem::node(
                    &node.id,
                    "a composite recorded a call whose id is another node's",
                )],
            });
        } else {
            self.ids.insert(node.id.clone(), index);
        }
        let policy = match self.plan.policies.get(&node.operator) {
            Some(own) => NodePolicy::Graph(own.clone()),
            None => NodePolicy::Host(operator.runtime().policy_for(operator.name())),
        };
        self.nodes
            .push(NodeReport::pending(&node.id, &node.operator));
        self.outputs.push(None);
        self.running.push(false);
        self.keep.push(true);
        self.consumers_left.push(0);
        self.more_dependents.push(Vec::new());
        let mut waiting = 0;
        let mut failed_producer = None;
        for &producer in &dependencies {
            match self.nodes[producer].status {
                NodeStatus::Ok => {}
                NodeStatus::Failed | NodeStatus::Skipped => {
                    failed_producer.get_or_insert(producer);
                }
                NodeStatus::Cancelled => {
                    waiting += 1;
                    self.more_dependents[producer].push(index);
                }
            }
        }
        self.waiting_on.push(waiting);
        self.recorded.push(RecordedNode {
            node,
            operator,
            args,
            policy,
            scope,
        });
        if let Some(error) = refused {
            let id = self.nodes[index].id.clone();
            let outcome = NodeOutcome {
                index,
                result: Err(Error::Node {
                    node: id,
                    element: None,
                    cause: Box::new(error),
                }),
                calls: Vec::new(),
            };
            return self.ended(outcome);
        }
        if let Some(producer) = failed_producer {
            let failed = self.nodes[producer].id.clone();
            self.skip(index, &failed);
            return self.wake_waiters();
        }
        if waiting == 0 {
            self.spawn(index);
        }
        None
    }

    /// A composite node's code ended.
    pub(super) fn composite_ended(
        &mut self,
        index: usize,
        end: Result<ScopeEnd, Error>,
    ) -> Option<Ended> {
        let id = self.nodes[index].id.clone();
        let outcome = |result| NodeOutcome {
            index,
            result,
            calls: Vec::new(),
        };
        let node_error = |error| Error::Node {
            node: id.clone(),
            element: None,
            cause: Box::new(error),
        };
        match end {
            Err(error) => self.ended(outcome(Err(node_error(error)))),
            Ok(ScopeEnd::Returned(value)) => self.ended(outcome(Ok(value))),
            Ok(ScopeEnd::Finished(expr)) => {
                let source = self
                    .compose()
                    .journal
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .expr(expr)
                    .map(|expr| expr.source.clone());
                let needs = source
                    .ok_or_else(|| Error::Config {
                        message: format!("`{id}` finished with no result"),
                    })
                    .and_then(|source| self.resolve(&source));
                match needs {
                    Ok(needs) => {
                        self.compose()
                            .waiters
                            .push(Waiter::Complete { node: index, needs });
                        self.wake_waiters()
                    }
                    Err(error) => self.ended(outcome(Err(node_error(error)))),
                }
            }
            Ok(ScopeEnd::Stopped(stop)) => {
                let error = Error::Config {
                    message: format!("a run's composite stopped as in a trace: {stop}"),
                };
                self.ended(outcome(Err(node_error(error))))
            }
        }
    }

    /// Answers the waiters whose nodes have all ended.
    pub(super) fn wake_waiters(&mut self) -> Option<Ended> {
        let Some(compose) = &mut self.compose else {
            return None;
        };
        let waiters = std::mem::take(&mut compose.waiters);
        let mut still = Vec::with_capacity(waiters.len());
        let mut completions = Vec::new();
        for waiter in waiters {
            let needs = match &waiter {
                Waiter::Reply { needs, .. } | Waiter::Complete { needs, .. } => needs,
            };
            match self.settled(needs) {
                None => still.push(waiter),
                Some(settled) => {
                    let value = settled.map(|()| resolve_value(needs, &self.inputs, &self.outputs));
                    match waiter {
                        Waiter::Reply { reply, .. } => {
                            // The composite is gone if the send fails.
                            let _ = reply.send(value);
                        }
                        Waiter::Complete { node, .. } => completions.push((node, value)),
                    }
                }
            }
        }
        if let Some(compose) = &mut self.compose {
            compose.waiters.extend(still);
        }
        for (node, value) in completions {
            let id = self.nodes[node].id.clone();
            let result = value.map_err(|error| Error::Node {
                node: id,
                element: None,
                cause: Box::new(error),
            });
            let outcome = NodeOutcome {
                index: node,
                result,
                calls: Vec::new(),
            };
            if let Some(ended) = self.ended(outcome) {
                return Some(ended);
            }
        }
        None
    }

    /// `Some(Ok)` once every node `needs` reads succeeded, `Some(Err)` once
    /// one of them failed or was skipped, `None` while one is pending.
    pub(super) fn settled(&self, needs: &Resolved) -> Option<Result<(), Error>> {
        let mut pending = false;
        let mut failed = None;
        needs.for_each_node(&mut |index| match self.nodes[index].status {
            NodeStatus::Ok => {}
            NodeStatus::Failed | NodeStatus::Skipped => {
                failed.get_or_insert(index);
            }
            NodeStatus::Cancelled => pending = true,
        });
        if let Some(index) = failed {
            let report = &self.nodes[index];
            let why = report.error.as_ref().map_or_else(
                || {
                    report
                        .stopped
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                },
                |error| error.message.clone(),
            );
            return Some(Err(Error::Node {
                node: report.id.clone(),
                element: None,
                cause: Box::new(Error::Cancelled {
                    reason: format!("its value is not there: {why}"),
                }),
            }));
        }
        (!pending).then_some(Ok(()))
    }
}
