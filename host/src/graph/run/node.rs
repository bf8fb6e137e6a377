//! What one node's task does: its guest calls under the run's and the
//! host's concurrency bounds, one call or one per element of a map, each
//! recorded for the report and the timeline.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{JoinError, JoinSet};

use crate::call::{self, Called, Policies, RemoteAttempt};
use crate::error::Error;
use crate::graph::check::GraphPolicy;
use crate::graph::report::Span;
use crate::limits::Limits;
use crate::operator::Operator;
use crate::policy::Installed;
use crate::slots::Slots;

/// Hands out slot numbers, so the timeline shows one track per slot: one
/// given back, else a new one (numbers are made as they are needed, so a
/// bound of a billion costs nothing).
#[derive(Default)]
pub(super) struct SlotIds {
    free: Mutex<(Vec<usize>, usize)>,
}

impl SlotIds {
    fn take(&self) -> usize {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (returned, made) = &mut *free;
        returned.pop().unwrap_or_else(|| {
            *made += 1;
            *made - 1
        })
    }

    fn give(&self, slot: usize) {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
            .push(slot);
    }
}

/// What the tasks of one run share.
pub(super) struct Shared {
    pub(super) started: Instant,
    pub(super) run_slots: Slots,
    pub(super) host_slots: Slots,
    pub(super) slot_ids: SlotIds,
    /// The run's executor, as the attempt its calls make (`None`: here).
    pub(super) remote: Option<Box<RemoteAttempt>>,
}

/// The policies of a node's calls: the graph's own for its operator (whose
/// state the run keeps, for this run only), or the operator's on its host.
#[derive(Clone)]
pub(crate) enum NodePolicy {
    Graph(Arc<GraphPolicy>),
    Host(Arc<Installed>),
}

impl NodePolicy {
    fn policies<'a>(&'a self, operator: &'a Operator) -> Policies<'a> {
        match self {
            NodePolicy::Graph(own) => Policies {
                policy: &own.installed.policy,
                fingerprint: own.installed.fingerprint,
                state: &own.state,
                on_host: false,
                remote: None,
            },
            NodePolicy::Host(installed) => Policies {
                policy: &installed.policy,
                fingerprint: installed.fingerprint,
                state: operator.policy_state(),
                on_host: true,
                remote: None,
            },
        }
    }
}

/// One guest call of a node, for its report.
pub(super) struct CallRecord {
    pub(super) span: Span,
    pub(super) attempts: u32,
    pub(super) fuel: Option<u64>,
    pub(super) peak_memory: u64,
}

/// What a node calls, and how.
#[derive(Clone)]
pub(super) struct NodeCall {
    pub(super) operator: Operator,
    pub(super) policy: NodePolicy,
    pub(super) limits: Limits,
}

/// One guest call under both concurrency bounds, recorded for the report.
/// `run_permit`: the run's slot, when the coordinator took it already.
async fn bounded_call(
    shared: &Shared,
    call: &NodeCall,
    input: impl FnOnce() -> Value,
    element: Option<usize>,
    run_permit: Option<OwnedSemaphorePermit>,
) -> (Result<Value, Error>, CallRecord) {
    let _run_permit = match run_permit {
        Some(permit) => permit,
        None => shared.run_slots.acquire_owned().await,
    };
    // The host's bound is on guests running here; a remote attempt runs
    // on a worker (bounded by the run's slots and the executor's own).
    let _host_permit = match shared.remote {
        None => Some(shared.host_slots.acquire().await),
        Some(_) => None,
    };
    // Made once the call may run: a map's waiting elements hold no copy
    // of the node's other arguments.
    let input = &input();
    let slot = shared.slot_ids.take();
    let start = shared.started.elapsed();
    let mut policies = call.policy.policies(&call.operator);
    policies.remote = shared.remote.as_deref();
    let Called { result, attempts } =
        call::call(&call.operator, input, &call.limits, policies).await;
    let end = shared.started.elapsed();
    shared.slot_ids.give(slot);
    let (fuel, peak_memory) = match &result {
        Ok(output) => (output.stats.fuel_consumed, output.stats.peak_memory_bytes),
        Err(_) => (None, 0),
    };
    let record = CallRecord {
        span: Span {
            slot,
            start,
            end,
            element,
        },
        attempts,
        fuel,
        peak_memory,
    };
    (result.map(|output| output.value), record)
}

/// The most element calls of one map node alive at once (each is a task
/// waiting for its slots): beyond it, the run's and the host's bounds keep
/// them waiting anyway.
const MAX_MAP_TASKS: usize = 1024;

/// What a node task returns.
pub(super) struct NodeOutcome {
    pub(super) index: usize,
    pub(super) result: Result<Value, Error>,
    pub(super) calls: Vec<CallRecord>,
}

fn node_error(id: &str, error: Error, element: Option<usize>) -> Error {
    Error::Node {
        node: id.to_owned(),
        element,
        cause: Box::new(error),
    }
}

/// A task that ended by panicking: the panic goes on, in the caller's
/// task, as it would have for a direct call. (Tasks are only aborted right
/// before the run returns, so a cancelled one is never joined.)
pub(super) fn resume_panic(error: JoinError) {
    if let Ok(panic) = error.try_into_panic() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs one node: one call, in the run's slot that the coordinator took for
/// it (so that a bound of 1 has one node task, not one per ready node).
pub(super) async fn run_node(
    shared: Arc<Shared>,
    index: usize,
    id: String,
    call: NodeCall,
    input: Map<String, Value>,
    run_permit: OwnedSemaphorePermit,
) -> NodeOutcome {
    let (result, record) = bounded_call(
        &shared,
        &call,
        move || Value::Object(input),
        None,
        Some(run_permit),
    )
    .await;
    NodeOutcome {
        index,
        result: result.map_err(|error| node_error(&id, error, None)),
        calls: vec![record],
    }
}

/// Runs one map node: one call per element of the list bound to `param`,
/// at most `map_bound` at once; the first failure (by element order among
/// those that failed) cancels the rest.
pub(super) async fn run_map_node(
    shared: Arc<Shared>,
    index: usize,
    id: String,
    call: NodeCall,
    mut input: Map<String, Value>,
    (param, map_bound): (String, usize),
) -> NodeOutcome {
    let elements = match input.remove(&param) {
        Some(Value::Array(elements)) => elements,
        _ => Vec::new(), // checked by the input validation and the type check
    };
    // Tasks are spawned as the bound lets them run, not all up front: the
    // memory is O(bound + output), whatever the number of elements.
    let in_flight = map_bound.clamp(1, MAX_MAP_TASKS);
    // The other arguments, shared by the element tasks until each runs.
    let others = Arc::new(input);
    let total = elements.len();
    let mut elements = elements.into_iter().enumerate();
    let mut calls = JoinSet::new();
    let mut values: Vec<Option<Value>> = vec![None; total];
    let mut records = Vec::with_capacity(total);
    let mut first_error: Option<(usize, Error)> = None;
    loop {
        while first_error.is_none() && calls.len() < in_flight {
            let Some((element_index, element)) = elements.next() else {
                break;
            };
            let (shared, call) = (shared.clone(), call.clone());
            let (others, param) = (others.clone(), param.clone());
            calls.spawn(async move {
                let make_input = move || {
                    let mut element_input = Map::clone(&others);
                    element_input.insert(param, element);
                    Value::Object(element_input)
                };
                let (result, record) =
                    bounded_call(&shared, &call, make_input, Some(element_index), None).await;
                (element_index, result, record)
            });
        }
        let Some(joined) = calls.join_next().await else {
            break;
        };
        let (element_index, result, record) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                resume_panic(error);
                continue; // aborted below, after the first failure
            }
        };
        records.push(record);
        match result {
            Ok(value) => values[element_index] = Some(value),
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
