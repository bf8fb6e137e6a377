//! The dry trace: a composite's code runs in its sandbox with a composer
//! that only records. Calls become nodes, deferreds stay symbolic, nested
//! composites called with known inputs are traced into the same graph; a
//! forced value, a capability call, or a nested composite whose input is
//! not known stops the trace where it happens.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::journal::{Expr, analysis};
use super::{ComposeOptions, Journal, Scope, StopReason, Trace, TraceStop, traced_graph};
use crate::error::Error;
use crate::graph::{Operators, Source};
use crate::limits::Limits;
use crate::operator::{Composed, Operator};
use crate::store::{ArgValue, ComposeStop, Composer, ComposerFuture};

/// How a composite's code ended.
#[derive(Debug)]
pub(crate) enum ScopeEnd {
    /// It called `finish` with this expression.
    Finished(u32),
    /// `invoke` returned this value.
    Returned(Value),
    /// Its trace stopped.
    Stopped(TraceStop),
}

/// Traces `composite` with `input`, calling `operators`; its own code runs
/// under `limits`.
pub(crate) async fn trace_in(
    composite: &Operator,
    operators: &Operators,
    options: &ComposeOptions,
    input: &Value,
    limits: &Limits,
) -> Result<Trace, Error> {
    let journal = Arc::new(Mutex::new(Journal::new(operators.clone(), options.clone())));
    let end = trace_scope(
        &journal,
        composite,
        input,
        Scope::top(composite.name()),
        limits,
    )
    .await?;
    let journal = match Arc::try_unwrap(journal) {
        Ok(journal) => journal
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
        // Every tracer is dropped with its sandbox, before here.
        Err(shared) => std::mem::replace(
            &mut *lock(&shared),
            Journal::new(operators.clone(), options.clone()),
        ),
    };
    let (calls, merged) = (journal.calls, journal.merged);
    let (output, stopped) = match end {
        ScopeEnd::Finished(expr) => (journal.expr(expr).map(|expr| expr.source.clone()), None),
        ScopeEnd::Returned(value) => (Some(Source::Literal(value)), None),
        ScopeEnd::Stopped(stop) => (None, Some(stop)),
    };
    Ok(Trace {
        graph: traced_graph(journal, output),
        stopped,
        calls,
        merged,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The depth check before a composite's code runs in `scope`.
pub(crate) fn check_depth(scope: &Scope, options: &ComposeOptions) -> Result<(), Error> {
    if scope.depth() <= options.max_depth {
        return Ok(());
    }
    Err(analysis(
        scope,
        format!(
            "composites nest deeper than max_depth ({}): {}",
            options.max_depth,
            scope.chain.join(" → ")
        ),
    ))
}

/// Runs `composite`'s code in `scope` with a recording composer.
fn trace_scope<'a>(
    journal: &'a Arc<Mutex<Journal>>,
    composite: &'a Operator,
    input: &'a Value,
    scope: Scope,
    limits: &'a Limits,
) -> ComposerFuture<'a, ScopeEnd>
where
{
    // Boxed: a nested composite's trace runs inside its caller's `call`.
    Box::pin(async move {
        check_depth(&scope, lock(journal).options()).map_err(ComposeStop::Failed)?;
        let state = Arc::new(Mutex::new(TracerState {
            scope,
            finished: None,
            stopped: None,
        }));
        let tracer = Tracer {
            journal: journal.clone(),
            state: state.clone(),
            limits: limits.clone(),
        };
        // A nested trace runs inside its caller's call, which holds a slot.
        let claim_slot = lock(&state).scope.depth() == 1;
        let composed = composite
            .attempt_composed(input, limits, Some(Box::new(tracer)), claim_slot)
            .await
            .map_err(ComposeStop::Failed)?;
        let mut state = lock(&state);
        Ok(match composed {
            Composed::Returned(output) => ScopeEnd::Returned(output.value),
            Composed::Finished => match state.finished {
                Some(expr) => {
                    lock(journal)
                        .check_output(composite, expr)
                        .map_err(ComposeStop::Failed)?;
                    ScopeEnd::Finished(expr)
                }
                None => {
                    return Err(ComposeStop::Failed(analysis(
                        &state.scope,
                        "finished without a result".into(),
                    )));
                }
            },
            Composed::Stopped { backtrace, .. } => match state.stopped.take() {
                Some(mut stop) => {
                    if stop.backtrace.is_empty() {
                        stop.backtrace = backtrace;
                    }
                    ScopeEnd::Stopped(stop)
                }
                None => {
                    return Err(ComposeStop::Failed(analysis(
                        &state.scope,
                        "its trace stopped without a reason".into(),
                    )));
                }
            },
        })
    })
}

/// What a tracer learns, read once the composite's code has ended.
struct TracerState {
    scope: Scope,
    finished: Option<u32>,
    stopped: Option<TraceStop>,
}

/// The recording composer of one composite's code.
struct Tracer {
    journal: Arc<Mutex<Journal>>,
    state: Arc<Mutex<TracerState>>,
    limits: Limits,
}

impl Tracer {
    /// Stops the trace here for `reason`.
    fn stop(&self, reason: StopReason) -> ComposeStop {
        let mut state = lock(&self.state);
        let stop = TraceStop {
            reason,
            composite: state.scope.composite.clone(),
            calls: state.scope.calls,
            backtrace: Vec::new(),
        };
        state.stopped = Some(stop);
        ComposeStop::Stopped
    }

    fn scope(&self) -> Scope {
        lock(&self.state).scope.clone()
    }
}

impl Composer for Tracer {
    fn call(
        &mut self,
        operator: String,
        over: Option<String>,
        args: Vec<(String, ArgValue)>,
    ) -> ComposerFuture<'_, u32> {
        Box::pin(async move {
            let callee = lock(&self.journal).operators().get(&operator).cloned();
            let Some(callee) = callee.filter(Operator::is_composite) else {
                let mut journal = lock(&self.journal);
                let mut state = lock(&self.state);
                let recorded = journal
                    .record(&mut state.scope, &operator, over.as_deref(), args)
                    .map_err(ComposeStop::Failed)?;
                return Ok(recorded.expr);
            };
            // A nested composite: counted and checked like any call, and
            // traced into the same graph when its input is known.
            let scope = self.scope();
            if over.is_some() {
                return Err(ComposeStop::Failed(analysis(
                    &scope,
                    format!("`{operator}` is a composite: a map cannot call it"),
                )));
            }
            let prepared = {
                let mut journal = lock(&self.journal);
                let mut state = lock(&self.state);
                journal
                    .prepare(&mut state.scope, &operator, None, args)
                    .map_err(ComposeStop::Failed)?
            };
            let mut input = Map::new();
            for (name, source) in prepared.node.args() {
                match source {
                    Source::Literal(value) => {
                        input.insert(name.clone(), value.clone());
                    }
                    _ => return Err(self.stop(StopReason::NestedInput { operator })),
                }
            }
            let input = Value::Object(input);
            let node = prepared.node.id().to_owned();
            let nested = scope.nested(&node, callee.name());
            let end = trace_scope(&self.journal, &callee, &input, nested, &self.limits).await?;
            match end {
                ScopeEnd::Finished(expr) => Ok(expr),
                ScopeEnd::Returned(value) => {
                    let expr =
                        Expr::leaf(Source::Literal(value), callee.signature().result.clone());
                    lock(&self.journal)
                        .push_expr(&scope, expr)
                        .map_err(ComposeStop::Failed)
                }
                ScopeEnd::Stopped(stop) => {
                    lock(&self.state).stopped = Some(stop);
                    Err(ComposeStop::Stopped)
                }
            }
        })
    }

    fn field(&mut self, of: u32, name: String) -> Result<u32, ComposeStop> {
        let scope = self.scope();
        lock(&self.journal)
            .field(&scope, of, &name)
            .map_err(ComposeStop::Failed)
    }

    fn gather(&mut self, items: Vec<u32>) -> Result<u32, ComposeStop> {
        let scope = self.scope();
        lock(&self.journal)
            .gather(&scope, &items)
            .map_err(ComposeStop::Failed)
    }

    fn get(&mut self, of: u32) -> ComposerFuture<'_, Result<String, (String, String, bool)>> {
        let node = lock(&self.journal)
            .expr(of)
            .map_or_else(|| format!("deferred {of}"), |expr| expr.source.to_string());
        let node = node.strip_prefix('@').map_or(node.clone(), str::to_owned);
        let stop = self.stop(StopReason::Forced { node });
        Box::pin(async move { Err(stop) })
    }

    fn finish(&mut self, output: u32) -> ComposeStop {
        lock(&self.state).finished = Some(output);
        ComposeStop::Finished
    }

    fn capability(&mut self, function: &str) -> Result<(), ComposeStop> {
        Err(self.stop(StopReason::Capability {
            function: function.to_owned(),
        }))
    }
}

impl From<ComposeStop> for Error {
    fn from(stop: ComposeStop) -> Error {
        match stop {
            ComposeStop::Failed(error) => error,
            other => Error::Config {
                message: format!("a trace ended unexpectedly: {other}"),
            },
        }
    }
}
