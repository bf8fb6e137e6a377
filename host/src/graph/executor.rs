//! Remote execution: a graph's calls handed to workers on other machines
//! through an [`Executor`]. The scheduler, the policies (retry, breaker,
//! bulkhead, result cache) and the graph's deadline stay here; only each
//! attempt goes to the executor.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use crate::error::Error;
use crate::limits::Limits;

/// One attempt of a call, to run elsewhere.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteCall {
    /// The operator's name.
    pub operator: String,
    /// Its `sha256:` digest: what identifies its bytes to a worker.
    pub digest: String,
    /// The input, as for [`Operator::call`](crate::Operator::call).
    pub input: Value,
    /// The attempt's limits, whose timeout is [`timeout`](Self::timeout).
    pub limits: Limits,
    /// What is left of the call's deadline for this attempt (a duration,
    /// never an instant: no clock is shared with the worker).
    pub timeout: std::time::Duration,
}

/// What runs a graph's calls elsewhere (set with
/// [`RunOptions::executor`](super::RunOptions::executor)).
///
/// An implementation returns the output value of the attempt, the error
/// it ended with on the worker as an [`Error::Remote`] (its kind kept, so
/// that retries and breakers treat it as they would a local one), or
/// [`Error::Unavailable`] when no worker answers.
pub trait Executor: Send + Sync + 'static {
    /// Runs `call` on a worker.
    fn call(&self, call: RemoteCall) -> Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>>;
}
