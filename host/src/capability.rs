//! Host interfaces an embedder grants to the operators that import them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use wasmtime::component::LinkerInstance;
pub use wasmtime::component::{ComponentNamedList, ComponentType, Lift, Lower};

use crate::error::BoxError;
use crate::sandbox::StoreState;

type Register =
    Arc<dyn Fn(&mut LinkerInstance<'_, StoreState>) -> wasmtime::Result<()> + Send + Sync>;

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

/// A capability function failed; the guest that called it traps.
#[derive(Debug)]
pub(crate) struct CapabilityFailure {
    function: String,
    cause: BoxError,
}

impl fmt::Display for CapabilityFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capability `{}` failed: {}", self.function, self.cause)
    }
}

impl std::error::Error for CapabilityFailure {}

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

    fn qualified(&self, name: &str) -> String {
        format!("{}#{name}", self.interface)
    }

    /// Adds a synchronous function. Keep it quick: it runs on the calling
    /// guest's task.
    pub fn func<Params, Results, F>(mut self, name: &str, function: F) -> Self
    where
        Params: ComponentNamedList + Lift + 'static,
        Results: ComponentNamedList + Lower + 'static,
        F: Fn(Params) -> Result<Results, BoxError> + Send + Sync + 'static,
    {
        let function = Arc::new(function);
        let qualified = self.qualified(name);
        let owned_name = name.to_owned();
        let register: Register = Arc::new(move |instance| {
            let function = function.clone();
            let qualified = qualified.clone();
            instance.func_wrap(&owned_name, move |_store, params: Params| {
                function(params).map_err(|cause| {
                    wasmtime::Error::new(CapabilityFailure {
                        function: qualified.clone(),
                        cause,
                    })
                })
            })
        });
        self.functions.push((name.to_owned(), register));
        self
    }

    /// Adds an asynchronous function: the guest blocks on it while other
    /// tasks keep running.
    pub fn func_async<Params, Results, F, Fut>(mut self, name: &str, function: F) -> Self
    where
        Params: ComponentNamedList + Lift + Send + 'static,
        Results: ComponentNamedList + Lower + Send + 'static,
        F: Fn(Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Results, BoxError>> + Send + 'static,
    {
        let function = Arc::new(function);
        let qualified = self.qualified(name);
        let owned_name = name.to_owned();
        let register: Register = Arc::new(move |instance| {
            let function = function.clone();
            let qualified = qualified.clone();
            instance.func_wrap_async(&owned_name, move |_store, params: Params| {
                let future = function(params);
                let qualified = qualified.clone();
                Box::new(async move {
                    future.await.map_err(|cause| {
                        wasmtime::Error::new(CapabilityFailure {
                            function: qualified,
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
