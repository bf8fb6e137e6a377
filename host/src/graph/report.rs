//! What a run reports: every node's outcome, timings and usage, and the
//! error that ended the run.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Graph;
use crate::error::{Error, ErrorKind};

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// It ran and returned a value.
    Ok,
    /// It ran and failed; its [`NodeReport::error`] says why.
    Failed,
    /// It did not run: a node it depends on failed (with `keep_going`);
    /// its [`NodeReport::stopped`] names that node.
    Skipped,
    /// It was pending or running when the run stopped (a failure without
    /// `keep_going`, the graph deadline, invalid inputs); its
    /// [`NodeReport::stopped`] says which.
    Cancelled,
}

/// Why a node failed: its error's kind and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeError {
    /// The error's kind.
    pub kind: ErrorKind,
    /// The error's message (for a map node, prefixed with the element).
    pub message: String,
}

/// Why a node did not run, or did not run to its end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Stopped {
    /// It depends, directly or not, on `node`, which failed (the node is
    /// [`Skipped`](NodeStatus::Skipped)).
    DependsOnFailed {
        /// The failed node.
        node: String,
    },
    /// `node` failed first, and the run stopped (without `keep_going`).
    FailedFirst {
        /// The node that failed.
        node: String,
    },
    /// The graph deadline passed.
    Deadline,
    /// The graph inputs were invalid: nothing ran.
    InvalidInputs,
    /// The run was cancelled from outside (its async runtime shut down).
    Interrupted,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::DependsOnFailed { node } => write!(f, "depends on `{node}`, which failed"),
            Stopped::FailedFirst { node } => write!(f, "`{node}` failed first"),
            Stopped::Deadline => f.write_str("the graph deadline passed"),
            Stopped::InvalidInputs => f.write_str("the graph inputs are invalid"),
            Stopped::Interrupted => f.write_str("the run was cancelled from outside"),
        }
    }
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
        Some(duration) => millis_plain(duration, serializer),
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
    /// Why it failed, when it did.
    pub error: Option<NodeError>,
    /// Why it was skipped or cancelled, when it was.
    pub stopped: Option<Stopped>,
    /// Its guest calls.
    pub spans: Vec<Span>,
}

impl NodeReport {
    /// A node that has not run (yet).
    pub(crate) fn pending(id: &str, operator: &str) -> Self {
        NodeReport {
            id: id.to_owned(),
            operator: operator.to_owned(),
            status: NodeStatus::Cancelled,
            start: None,
            end: None,
            attempts: 0,
            fuel_consumed: None,
            peak_memory_bytes: 0,
            error: None,
            stopped: None,
            spans: Vec::new(),
        }
    }

    /// How long it took, when it ran.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.end?.saturating_sub(self.start?))
    }

    /// Records that it failed with `error`.
    pub(crate) fn fail(&mut self, error: &Error) {
        self.status = NodeStatus::Failed;
        let message = match error {
            Error::Node {
                cause,
                element: Some(element),
                ..
            } => format!("element {element}: {cause}"),
            Error::Node { cause, .. } => cause.to_string(),
            other => other.to_string(),
        };
        self.error = Some(NodeError {
            kind: error.kind(),
            message,
        });
    }
}

/// The result of [`Plan::run`](super::Plan::run): the outputs that were
/// produced, every node's outcome, and the error that ended the run, if
/// any.
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
    /// For a composite's run (or a graph with composite nodes): how its
    /// tracing went.
    pub trace: Option<TraceReport>,
    /// For a run whose composites recorded calls as it ran: the whole
    /// graph that ran, the plan's nodes and the recorded ones (check it
    /// against the operators to draw it with the report).
    pub graph: Option<Graph>,
}

impl RunReport {
    /// The report of a run that failed with `error` before any node ran.
    pub(crate) fn failed(error: Error) -> RunReport {
        RunReport {
            outputs: Map::new(),
            nodes: Vec::new(),
            duration: Duration::ZERO,
            max_concurrency: 0,
            error: Some(error),
            trace: None,
            graph: None,
        }
    }

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

/// Why a trace stopped before the composite finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StopReason {
    /// The composite forced the value of `node` (it needed it to go on).
    Forced {
        /// The node whose value was forced.
        node: String,
    },
    /// The composite called the granted capability `function`.
    Capability {
        /// The capability function, `interface#name`.
        function: String,
    },
    /// The composite called the composite `operator` with an argument that
    /// is not known while tracing.
    NestedInput {
        /// The nested composite.
        operator: String,
    },
}

/// Where and why a trace stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceStop {
    /// Why.
    #[serde(flatten)]
    pub reason: StopReason,
    /// The composite whose code stopped.
    pub composite: String,
    /// How many calls that composite had recorded when it stopped.
    pub calls: usize,
    /// The composite's own stack where it stopped, innermost first, when
    /// the component has function names.
    pub backtrace: Vec<String>,
}

impl fmt::Display for TraceStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            StopReason::Forced { node } => write!(
                f,
                "`{}` forced the value of `{node}` after {} call(s)",
                self.composite, self.calls
            )?,
            StopReason::Capability { function } => write!(
                f,
                "`{}` called the capability `{function}` after {} call(s)",
                self.composite, self.calls
            )?,
            StopReason::NestedInput { operator } => write!(
                f,
                "`{}` called the composite `{operator}` with a value not known while tracing, \
                 after {} call(s)",
                self.composite, self.calls
            )?,
        }
        if let Some(frame) = self.backtrace.first() {
            write!(f, ", in {frame}")?;
        }
        Ok(())
    }
}

/// How a composite's run went, as far as tracing is concerned: in the
/// [`RunReport`] of [`Composite::run`](super::Composite::run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceReport {
    /// Whether the composite traced completely (the run ran its graph).
    pub complete: bool,
    /// Whether the trace came from the composite's cache of traces.
    pub cached: bool,
    /// Where the trace stopped, when the run was staged.
    pub stopped: Option<TraceStop>,
    /// Values the composite forced during a staged run.
    pub forced: usize,
    /// Calls recorded (in the trace, or the staged run).
    pub calls: usize,
    /// Calls merged into identical earlier calls.
    pub merged: usize,
}
