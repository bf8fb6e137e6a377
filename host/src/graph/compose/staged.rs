//! A composite's code in a run: its calls are recorded as in a trace and
//! sent to the run's coordinator at once (which schedules each as soon as
//! its inputs are ready); a forced value waits for the nodes it needs and
//! comes back as JSON; capabilities are reachable.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::journal::analysis;
use super::trace::{ScopeEnd, check_depth};
use super::{Journal, Scope};
use crate::error::Error;
use crate::graph::Source;
use crate::limits::Limits;
use crate::operator::{Composed, Operator};
use crate::store::{ArgValue, ComposeStop, Composer, ComposerFuture};

/// What a composite's code tells the run's coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    /// It recorded node `index` of the journal; `scope` is where that
    /// node's code runs, when it is a composite.
    Recorded { index: usize, scope: Option<Scope> },
    /// It forces the value of `source`.
    Force {
        source: Source,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
}

/// The scope of the composite `composite` run as the graph's node `node`:
/// its calls' ids are prefixed by the node's.
pub(crate) fn scope_for_node(node: &str, composite: &str) -> Scope {
    let mut scope = Scope::top(composite);
    scope.prefix = format!("{node}/");
    scope
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `composite`'s code with `input` in `scope`, its calls going to the
/// run through `events`.
pub(crate) async fn run_composite(
    composite: &Operator,
    input: &Value,
    scope: Scope,
    journal: Arc<Mutex<Journal>>,
    events: mpsc::UnboundedSender<Event>,
    limits: &Limits,
) -> Result<ScopeEnd, Error> {
    check_depth(&scope, lock(&journal).options())?;
    let finished = Arc::new(Mutex::new(None));
    let staged_journal = journal.clone();
    let staged = Staged {
        journal,
        scope: scope.clone(),
        events,
        finished: finished.clone(),
    };
    // A nested staged composite runs inside its caller's call, which holds
    // a composite slot (and may wait for this one's value).
    let claim_slot = scope.depth() == 1;
    match composite
        .attempt_composed(input, limits, Some(Box::new(staged)), claim_slot)
        .await?
    {
        Composed::Returned(output) => Ok(ScopeEnd::Returned(output.value)),
        Composed::Finished => {
            let expr = lock(&finished)
                .take()
                .ok_or_else(|| analysis(&scope, "finished without a result".into()))?;
            lock(&staged_journal).check_output(composite, expr)?;
            Ok(ScopeEnd::Finished(expr))
        }
        Composed::Stopped { .. } => Err(analysis(&scope, "stopped during a run".into())),
    }
}

/// The composer of a composite's code in a run.
struct Staged {
    journal: Arc<Mutex<Journal>>,
    scope: Scope,
    events: mpsc::UnboundedSender<Event>,
    finished: Arc<Mutex<Option<u32>>>,
}

/// The run is over (its coordinator is gone): the composite is cancelled.
fn run_gone() -> ComposeStop {
    ComposeStop::Failed(Error::Cancelled {
        reason: "the run ended while the composite was running".into(),
    })
}

impl Composer for Staged {
    fn call(
        &mut self,
        operator: String,
        over: Option<String>,
        args: Vec<(String, ArgValue)>,
    ) -> ComposerFuture<'_, u32> {
        let mut journal = lock(&self.journal);
        let callee = journal.operators().get(&operator).cloned();
        let result = if over.is_some() && callee.as_ref().is_some_and(Operator::is_composite) {
            Err(ComposeStop::Failed(analysis(
                &self.scope,
                format!("`{operator}` is a composite: a map cannot call it"),
            )))
        } else {
            match journal.record(&mut self.scope, &operator, over.as_deref(), args) {
                Err(error) => Err(ComposeStop::Failed(error)),
                Ok(recorded) if recorded.merged => Ok(recorded.expr),
                Ok(recorded) => {
                    let id = journal.graph.nodes[recorded.index].id().to_owned();
                    let scope = callee
                        .filter(Operator::is_composite)
                        .map(|callee| self.scope.nested(&id, callee.name()));
                    // Sent with the journal locked: the coordinator hears of
                    // every node before anything that another composite
                    // (which finds it in the journal) says about it.
                    let event = Event::Recorded {
                        index: recorded.index,
                        scope,
                    };
                    self.events
                        .send(event)
                        .map(|()| recorded.expr)
                        .map_err(|_| run_gone())
                }
            }
        };
        drop(journal);
        Box::pin(std::future::ready(result))
    }

    fn field(&mut self, of: u32, name: String) -> Result<u32, ComposeStop> {
        lock(&self.journal)
            .field(&self.scope, of, &name)
            .map_err(ComposeStop::Failed)
    }

    fn gather(&mut self, items: Vec<u32>) -> Result<u32, ComposeStop> {
        lock(&self.journal)
            .gather(&self.scope, &items)
            .map_err(ComposeStop::Failed)
    }

    fn get(&mut self, of: u32) -> ComposerFuture<'_, Result<String, (String, String, bool)>> {
        let source = lock(&self.journal).expr(of).map(|expr| expr.source.clone());
        let scope = self.scope.clone();
        let events = self.events.clone();
        Box::pin(async move {
            let Some(source) = source else {
                return Err(ComposeStop::Failed(analysis(
                    &scope,
                    format!("no deferred value {of}"),
                )));
            };
            let (reply, answer) = oneshot::channel();
            events
                .send(Event::Force { source, reply })
                .map_err(|_| run_gone())?;
            match answer.await {
                Ok(Ok(value)) => Ok(Ok(value.to_string())),
                Ok(Err(error)) => Ok(Err((
                    error.kind().as_str().to_owned(),
                    error.to_string(),
                    error.is_retryable(),
                ))),
                Err(_closed) => Err(run_gone()),
            }
        })
    }

    fn finish(&mut self, output: u32) -> ComposeStop {
        *lock(&self.finished) = Some(output);
        ComposeStop::Finished
    }

    fn capability(&mut self, _function: &str) -> Result<(), ComposeStop> {
        // A run may reach what the embedder granted.
        Ok(())
    }
}
