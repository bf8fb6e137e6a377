//! Host interfaces an embedder grants to the operators that import them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use wasmtime::component::{ComponentNamedList, Lift, LinkerInstance, Lower};

use crate::error::BoxError;
use crate::store::{CapabilityFailure, StoreState};

/// Adds one function to the linker instance of the capability's interface.
pub(crate) type Register =
    Arc<dyn Fn(&mut LinkerInstance<'_, StoreState>) -> wasmtime::Result<()> + Send + Sync>;

/// The parameters of a capability function: a tuple of Rust types that
/// mirror the WIT parameters, e.g. `(u32, String)` for
/// `f: func(n: u32, s: string)`.
///
/// Implemented for every such tuple; there is nothing to implement, only a
/// bound to name in generic code. (Its supertraits are wasmtime's, which
/// decide what a component value is; naming this one keeps an embedder's
/// code free of wasmtime's paths.)
pub trait CapabilityParams: ComponentNamedList + Lift + Send + 'static {}

impl<T: ComponentNamedList + Lift + Send + 'static> CapabilityParams for T {}

/// The results of a capability function: a tuple of Rust types that
/// mirror the WIT results, `()` for none, `(u64,)` for `-> u64`.
///
/// Implemented for every such tuple, like [`CapabilityParams`].
pub trait CapabilityResults: ComponentNamedList + Lower + Send + 'static {}

impl<T: ComponentNamedList + Lower + Send + 'static> CapabilityResults for T {}

/// A WIT interface implemented by the embedder and granted to operators.
///
/// An operator that imports an interface no capability provides fails to
/// load with a `capability` error naming the import. Functions are typed
/// with Rust tuples that mirror the WIT parameters and results: for
/// `sleep: func(ms: u32)` the parameters are `(u32,)` and the result `()`.
/// A function that returns `Err` traps the calling guest; the call then
/// fails with a `trap` error that names the capability and the cause.
///
/// ```
/// use std::time::Duration;
/// use xcs::Capability;
///
/// let latency = Capability::new("xcs:examples/latency@0.1.0")
///     .func_async("sleep", |(ms,): (u32,)| async move {
///         tokio::time::sleep(Duration::from_millis(ms.into())).await;
///         Ok(())
///     });
/// let host = xcs::Host::builder().grant(latency).build()?;
/// # drop(host);
/// # Ok::<(), xcs::Error>(())
/// ```
#[derive(Clone)]
pub struct Capability {
    pub(crate) interface: String,
    pub(crate) functions: Vec<(String, Register)>,
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capability")
            .field("interface", &self.interface)
            .field(
                "functions",
                &self
                    .functions
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Capability {
    /// A capability for the WIT interface `interface`, named as components
    /// import it: `package:name/interface@version`.
    pub fn new(interface: impl Into<String>) -> Self {
        Capability {
            interface: interface.into(),
            functions: Vec::new(),
        }
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Adds a synchronous function. Keep it quick: it runs on the calling
    /// guest's task.
    pub fn func<Params, Results, F>(self, name: &str, function: F) -> Self
    where
        Params: CapabilityParams,
        Results: CapabilityResults,
        F: Fn(Params) -> Result<Results, BoxError> + Send + Sync + 'static,
    {
        self.func_async(name, move |params| std::future::ready(function(params)))
    }

    /// Adds an asynchronous function: the guest blocks on it while other
    /// tasks keep running.
    pub fn func_async<Params, Results, F, Fut>(mut self, name: &str, function: F) -> Self
    where
        Params: CapabilityParams,
        Results: CapabilityResults,
        F: Fn(Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Results, BoxError>> + Send + 'static,
    {
        let function = Arc::new(function);
        let qualified: Arc<str> = Arc::from(format!("{}#{name}", self.interface));
        let owned_name = name.to_owned();
        let register: Register = Arc::new(move |instance| {
            let function = function.clone();
            let qualified = qualified.clone();
            instance.func_wrap_async(&owned_name, move |mut store, params: Params| {
                // A composite being traced reaches no capability.
                let call = store
                    .data_mut()
                    .before_capability(&qualified)
                    .map(|()| function(params));
                let qualified = qualified.clone();
                // A function that waits does so off turn.
                let seat = store.data().seat.clone();
                Box::new(async move {
                    seat.away(call?).await.map_err(|cause| {
                        wasmtime::Error::new(CapabilityFailure {
                            function: qualified.to_string(),
                            cause,
                        })
                    })
                })
            })
        });
        self.functions.push((name.to_owned(), register));
        self
    }
}
