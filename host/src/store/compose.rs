//! The host side of the `compose` interface, as the store sees it: each
//! function goes to the call's [`Composer`] (the graph layer's tracer or
//! run), in terms of expression ids; the store only keeps the guest's
//! `deferred` handles in its resource table.

use std::future::Future;
use std::pin::Pin;

use wasmtime::component::Resource;

use super::StoreState;
use super::bindings::xcs::operator::compose::{self, Arg, Value};
use super::bindings::xcs::operator::types::Error as WitError;
use crate::error::Error;

/// The host side of a guest's `deferred` handle: the id of an expression
/// the composer recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred(pub(crate) u32);

/// One argument's value, as the guest gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArgValue {
    /// JSON text.
    Json(String),
    /// An expression id.
    Deferred(u32),
}

/// Why a composite's code stopped in a `compose` call: the error a host
/// function returns to end the guest at once.
#[derive(Debug)]
pub(crate) enum ComposeStop {
    /// `finish` was called: the composite is done, its result is known.
    Finished,
    /// A trace stopped here (a forced value, a capability); the composer
    /// knows where and why.
    Stopped,
    /// The call was refused or failed; the composite fails with this.
    Failed(Error),
}

impl std::fmt::Display for ComposeStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComposeStop::Finished => f.write_str("the composite finished"),
            ComposeStop::Stopped => f.write_str("the trace stopped"),
            ComposeStop::Failed(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ComposeStop {}

/// A composer's answer to a `compose` call, computed asynchronously.
pub(crate) type ComposerFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ComposeStop>> + Send + 'a>>;

/// What a composite's `compose` calls do: record (and, in a run, schedule)
/// calls, and hand out values. Ids are the composer's expression ids.
pub(crate) trait Composer: Send {
    /// Records a call of `operator` (a map over parameter `over`, if any).
    fn call(
        &mut self,
        operator: String,
        over: Option<String>,
        args: Vec<(String, ArgValue)>,
    ) -> ComposerFuture<'_, u32>;

    /// Field `name` of expression `of`.
    fn field(&mut self, of: u32, name: String) -> Result<u32, ComposeStop>;

    /// The list of the values of `items`.
    fn gather(&mut self, items: Vec<u32>) -> Result<u32, ComposeStop>;

    /// The value of `of` as JSON, or the error of the call that failed
    /// (code, message, retryable).
    fn get(&mut self, of: u32) -> ComposerFuture<'_, Result<String, (String, String, bool)>>;

    /// Makes `output` the composite's result.
    fn finish(&mut self, output: u32) -> ComposeStop;

    /// A granted capability `function` is about to be called.
    fn capability(&mut self, function: &str) -> Result<(), ComposeStop>;
}

/// The error that ends the guest for `stop`.
fn stop(stop: ComposeStop) -> wasmtime::Error {
    wasmtime::Error::new(stop)
}

/// A composite called `compose` outside a run or trace (say, through
/// `Operator::call`).
fn no_composer() -> wasmtime::Error {
    stop(ComposeStop::Failed(Error::Config {
        message: "this operator is a composite (it imports xcs:operator/compose): \
                  run it with its operators (`Host::jit`, `xcs run`, `xcs trace`)"
            .into(),
    }))
}

impl StoreState {
    fn composer(&mut self) -> wasmtime::Result<&mut Box<dyn Composer>> {
        self.composer.as_mut().ok_or_else(no_composer)
    }

    fn handle(&mut self, id: u32) -> wasmtime::Result<Resource<Deferred>> {
        Ok(self.table.push(Deferred(id))?)
    }

    fn id(&self, handle: &Resource<Deferred>) -> wasmtime::Result<u32> {
        Ok(self.table.get(handle)?.0)
    }

    fn args(&self, args: Vec<Arg>) -> wasmtime::Result<Vec<(String, ArgValue)>> {
        args.into_iter()
            .map(|arg| {
                let value = match arg.value {
                    Value::Json(text) => ArgValue::Json(text),
                    Value::Deferred(handle) => ArgValue::Deferred(self.id(&handle)?),
                };
                Ok((arg.name, value))
            })
            .collect()
    }

    async fn record(
        &mut self,
        operator: String,
        over: Option<String>,
        args: Vec<Arg>,
    ) -> wasmtime::Result<Resource<Deferred>> {
        let args = self.args(args)?;
        // Waiting for room to record is waiting on the host: off turn.
        let seat = self.seat.clone();
        let id = seat
            .away(self.composer()?.call(operator, over, args))
            .await
            .map_err(stop)?;
        self.handle(id)
    }
}

impl compose::Host for StoreState {
    async fn call(
        &mut self,
        operator: String,
        args: Vec<Arg>,
    ) -> wasmtime::Result<Resource<Deferred>> {
        self.record(operator, None, args).await
    }

    async fn map(
        &mut self,
        operator: String,
        over: String,
        args: Vec<Arg>,
    ) -> wasmtime::Result<Resource<Deferred>> {
        self.record(operator, Some(over), args).await
    }

    async fn gather(
        &mut self,
        items: Vec<Resource<Deferred>>,
    ) -> wasmtime::Result<Resource<Deferred>> {
        let ids = items
            .iter()
            .map(|item| self.id(item))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let id = self.composer()?.gather(ids).map_err(stop)?;
        self.handle(id)
    }

    async fn finish(&mut self, output: Resource<Deferred>) -> wasmtime::Result<()> {
        let id = self.id(&output)?;
        Err(stop(self.composer()?.finish(id)))
    }
}

impl compose::HostDeferred for StoreState {
    async fn field(
        &mut self,
        of: Resource<Deferred>,
        name: String,
    ) -> wasmtime::Result<Resource<Deferred>> {
        let of = self.id(&of)?;
        let id = self.composer()?.field(of, name).map_err(stop)?;
        self.handle(id)
    }

    async fn get(&mut self, of: Resource<Deferred>) -> wasmtime::Result<Result<String, WitError>> {
        let of = self.id(&of)?;
        // Waiting for a value is waiting on the host: off turn.
        let seat = self.seat.clone();
        let value = seat.away(self.composer()?.get(of)).await.map_err(stop)?;
        Ok(value.map_err(|(code, message, retryable)| WitError {
            code,
            message,
            retryable,
        }))
    }

    async fn drop(&mut self, handle: Resource<Deferred>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
