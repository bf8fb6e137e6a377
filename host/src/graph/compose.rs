//! Composite operators: traced into graphs, and run (see [`Composite`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::check::Resolved;
use super::options::{ComposeOptions, RunOptions};
use super::report::{StopReason, TraceReport, TraceStop};
use super::{Graph, Node, Operators, Plan, RunReport, Source};
use crate::error::Error;
use crate::limits::Limits;
use crate::operator::Operator;

mod journal;
mod staged;
mod trace;

pub(crate) use journal::{Journal, Scope};
pub(crate) use staged::{Event, run_composite, scope_for_node};
pub(crate) use trace::{ScopeEnd, trace_in};

/// What a dry trace found: the graph the composite builds (up to where it
/// stopped, when it stopped), with one output, `output`, the composite's
/// result.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The recorded graph.
    pub graph: Graph,
    /// Where and why the trace stopped, if it did not complete.
    pub stopped: Option<TraceStop>,
    /// Calls recorded, merged ones included.
    pub calls: usize,
    /// Calls merged into identical earlier calls of deterministic operators.
    pub merged: usize,
}

impl Trace {
    /// Whether the composite was traced to its end: the graph is all of it.
    pub fn is_complete(&self) -> bool {
        self.stopped.is_none()
    }
}

/// Composite operators: operators whose code calls other operators by name
/// (the `compose` interface of `wit/operator.wit`), traced into graphs
/// without side effects, and run.
///
/// A [`Composite`] pairs a composite operator with the [`Operators`] it may
/// call (never a path on disk). [`Composite::trace`] runs the composite's
/// code in a sandbox where calls are only recorded: the result is a
/// [`Trace`] holding the same [`Graph`] the TOML and builder front ends
/// produce, built without running any callee and without reaching any
/// capability. If the composite needs a value while it is traced (it
/// forces a deferred to branch on it) or calls a capability, the trace
/// stops there and says where ([`TraceStop`]); it never guesses.
///
/// [`Composite::run`] runs it. A composite that traces completely runs as
/// its traced graph, from a bounded cache of traces keyed by the
/// composite's digest and the canonical input. One that does not runs
/// *staged*: its code runs once more, each recorded call is scheduled at
/// once (independent calls overlap), and a forced value is computed and
/// handed back while the composite goes on recording. That fallback is
/// logged (a `tracing` warning) and in the report's [`TraceReport`];
/// [`ComposeOptions::strict`] makes it an `analysis` error instead.
///
/// In both, identical calls of deterministic operators are merged (run
/// once), nested composites flatten into the graph (their nodes' ids are
/// prefixed by the calling node's), and every call is checked against the
/// callee's signature when it is recorded: an unknown operator or a
/// mistyped argument is a `graph` error naming the call, before anything
/// downstream runs. Recursion is bounded by [`ComposeOptions::max_depth`]
/// and the number of calls by [`ComposeOptions::max_calls`], both
/// `analysis` errors.
///
/// ```
/// # async fn example(host: xcs::Host) -> Result<(), xcs::Error> {
/// use serde_json::json;
/// use xcs::graph::{COMPOSITE_OUTPUT, Composite, Operators, RunOptions};
///
/// let mut operators = Operators::new();
/// for name in ["guess", "most-common"] {
///     let operator = host.load(format!("target/operators/{name}.wasm")).await?;
///     operators.insert(name, operator);
/// }
/// let ensemble = host.load("target/operators/ensemble.wasm").await?;
/// let ensemble = Composite::new(ensemble, operators)?;
///
/// let input = json!({"text": "a b a", "n": 3, "wait-ms": 0});
/// let trace = ensemble.trace(&input).await?; // nothing runs
/// assert!(trace.is_complete());
/// println!("{}", trace.graph.to_toml()?);
///
/// let outputs = ensemble.run(&input, &RunOptions::default()).await.into_result()?;
/// assert_eq!(outputs[COMPOSITE_OUTPUT], json!("a"));
/// # Ok(())
/// # }
/// ```
///
/// Cheap to clone: clones share the cache of traces.
#[derive(Debug, Clone)]
pub struct Composite {
    operator: Operator,
    operators: Operators,
    options: ComposeOptions,
    traces: moka::sync::Cache<String, Arc<CachedTrace>>,
}

/// A complete trace's plan, with what its trace counted, and its weight in
/// the cache (bytes, roughly: its nodes and their literal arguments).
#[derive(Debug)]
struct CachedTrace {
    plan: Plan,
    calls: usize,
    merged: usize,
    weight: u32,
}

impl CachedTrace {
    fn new(plan: Plan, calls: usize, merged: usize) -> Self {
        let literals: usize = plan
            .graph
            .nodes
            .iter()
            .flat_map(|node| &node.args)
            .map(|(name, source)| name.len() + source.to_string().len())
            .sum();
        let weight = plan
            .graph
            .nodes
            .len()
            .saturating_mul(256)
            .saturating_add(literals);
        CachedTrace {
            plan,
            calls,
            merged,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    async fn run(&self, options: &RunOptions, cached: bool) -> RunReport {
        let mut report = self.plan.run(&Value::Null, options).await;
        report.graph = Some(self.plan.graph.clone());
        report.trace = Some(TraceReport {
            complete: true,
            cached,
            stopped: None,
            forced: 0,
            calls: self.calls,
            merged: self.merged,
        });
        report
    }
}

impl Composite {
    /// `composite`, calling only `operators` (by key, usually their
    /// names). A `config` error when `composite` is not a composite.
    pub fn new(composite: Operator, operators: Operators) -> Result<Composite, Error> {
        Composite::with_options(composite, operators, ComposeOptions::default())
    }

    /// Like [`Composite::new`], with `options`.
    pub fn with_options(
        composite: Operator,
        operators: Operators,
        options: ComposeOptions,
    ) -> Result<Composite, Error> {
        if !composite.is_composite() {
            return Err(Error::Config {
                message: format!(
                    "`{}` is not a composite: it does not import xcs:operator/compose",
                    composite.name()
                ),
            });
        }
        Ok(Composite {
            traces: moka::sync::Cache::builder()
                .max_capacity(options.trace_cache_bytes)
                // The key is the canonical input: it counts too.
                .weigher(|key: &String, trace: &Arc<CachedTrace>| {
                    u32::try_from(key.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(trace.weight)
                })
                .build(),
            operator: composite,
            operators,
            options,
        })
    }

    /// The composite operator.
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// The operators it may call.
    pub fn operators(&self) -> &Operators {
        &self.operators
    }

    /// Traces the composite with `input` (its `invoke` arguments, as for
    /// [`Operator::call`]): records its calls without running any, and
    /// reaches no capability (but the files and variables granted to it). Errors are the composite's own failures (a
    /// trap, a refused call, too many calls, too deep a recursion).
    pub async fn trace(&self, input: &Value) -> Result<Trace, Error> {
        let metrics = self.operator.metrics();
        metrics.traced();
        trace_in(
            &self.operator,
            &self.operators,
            &self.options,
            input,
            self.limits(),
        )
        .await
    }

    fn limits(&self) -> &Limits {
        self.options
            .limits
            .as_ref()
            .unwrap_or(&self.operator.runtime().default_limits)
    }

    /// The cache key of a trace with `input`: the composite's digest and
    /// the input's canonical JSON (object keys sorted).
    fn trace_key(&self, input: &Value) -> String {
        // `serde_json`'s maps are sorted, so its text is canonical.
        format!("{}\n{input}", self.operator.digest())
    }

    /// Runs the composite with `input`: as its cached or fresh trace when
    /// it traces completely, else staged (see the [`Composite`] docs).
    /// The report's [`RunReport::trace`] says which; the composite's result
    /// is the output `output`.
    pub async fn run(&self, input: &Value, options: &RunOptions) -> RunReport {
        let started = std::time::Instant::now();
        let key = self.trace_key(input);
        let metrics = self.operator.metrics();
        // A composite that can read granted files or variables (or calls
        // one that can, traced into it) may build another graph from the
        // same input: its trace is not kept.
        let keep_trace = self.operator.grants().is_empty()
            && self
                .operators
                .by_key
                .values()
                .all(|callee| !callee.is_composite() || callee.grants().is_empty());
        if keep_trace {
            if let Some(cached) = self.traces.get(&key) {
                metrics.trace_lookup(true);
                return cached.run(options, true).await;
            }
            metrics.trace_lookup(false);
        }
        // The trace is part of the run: within the run's deadline.
        let limits = self.limits();
        let limits = limits.clone().timeout(limits.timeout.min(options.timeout));
        metrics.traced();
        let traced = trace_in(
            &self.operator,
            &self.operators,
            &self.options,
            input,
            &limits,
        )
        .await;
        let trace = match traced {
            Ok(trace) => trace,
            Err(error) => return RunReport::failed(error),
        };
        let options = options
            .clone()
            .timeout(options.timeout.saturating_sub(started.elapsed()));
        let Some(stop) = trace.stopped.clone() else {
            let plan = match trace.graph.check(&self.operators) {
                Ok(plan) => plan,
                Err(error) => return RunReport::failed(error),
            };
            let cached = Arc::new(CachedTrace::new(plan, trace.calls, trace.merged));
            if keep_trace {
                self.traces.insert(key, cached.clone());
            }
            return cached.run(&options, false).await;
        };
        if self.options.strict {
            return RunReport::failed(Error::Analysis {
                composite: self.operator.name().to_owned(),
                reason: format!("the trace is incomplete (strict): {stop}"),
            });
        }
        tracing::warn!(
            composite = self.operator.name(),
            reason = %stop,
            "the composite cannot be traced completely; running it staged"
        );
        let plan = staged_plan(&self.operator, &self.operators, input);
        let options = options.compose(self.options.clone());
        let mut report = plan.run(&Value::Null, &options).await;
        if let Some(trace) = &mut report.trace {
            trace.stopped = Some(stop);
        }
        report
    }

    /// The number of traces in the cache.
    pub fn cached_traces(&self) -> u64 {
        self.traces.run_pending_tasks();
        self.traces.entry_count()
    }
}

/// A plan of one node, `composite` called with `input` (already checked by
/// its trace), whose output [`COMPOSITE_OUTPUT`] is the composite's result; the
/// composite's calls go to `operators`.
fn staged_plan(composite: &Operator, operators: &Operators, input: &Value) -> Plan {
    let params = &composite.signature().params;
    let args: Vec<(String, Value)> = match input {
        Value::Object(object) => object
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        Value::Array(items) => params
            .iter()
            .zip(items)
            .map(|(param, value)| (param.name.clone(), value.clone()))
            .collect(),
        _ => Vec::new(),
    };
    let name = composite.name();
    let mut node = Node::new(name, name);
    for (param, value) in &args {
        node = node.arg(param.clone(), Source::Literal(value.clone()));
    }
    let graph = Graph::new()
        .node(node)
        .output(COMPOSITE_OUTPUT, Source::node(name));
    Plan {
        graph,
        operators: vec![composite.clone()],
        args: vec![
            args.into_iter()
                .map(|(param, value)| (param, Resolved::Literal(value)))
                .collect(),
        ],
        dependencies: vec![Vec::new()],
        dependents: vec![Vec::new()],
        outputs: vec![(
            COMPOSITE_OUTPUT.to_owned(),
            Resolved::Node {
                index: 0,
                field: None,
            },
        )],
        input_types: Default::default(),
        policies: Arc::new(HashMap::new()),
        operator_set: operators.clone(),
    }
}

/// The graph output that holds a composite's result.
pub const COMPOSITE_OUTPUT: &str = "output";

/// A graph with one node per recorded call, and the composite's result as
/// the output [`COMPOSITE_OUTPUT`].
pub(crate) fn traced_graph(journal: Journal, output: Option<Source>) -> Graph {
    let mut graph = journal.graph;
    if let Some(output) = output {
        graph = graph.output(COMPOSITE_OUTPUT, output);
    }
    graph
}
