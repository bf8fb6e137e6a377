//! Calling other operators from an operator: writing a *composite*.
//!
//! A composite is an ordinary `#[operator]` function that calls other
//! operators by name. A call returns a [`Deferred`] at once — a handle for
//! what the call will produce — which can be passed as an argument to
//! further calls (an edge of the graph the composite builds), narrowed to a
//! record field with [`Deferred::field`], gathered with others into a list
//! with [`gather`], forced with [`Deferred::get`], or returned as the
//! composite's result:
//!
//! ```
//! use xcs_guest::Error;
//! use xcs_guest::compose::{self, Args, Deferred};
//!
//! /// Counts the words of a text, upper-cased.
//! #[xcs_guest::operator]
//! fn shout_count(text: String) -> Result<Deferred<u32>, Error> {
//!     let loud = compose::call::<String>("upper", Args::new().arg("text", &text));
//!     Ok(compose::call("word-count", Args::new().arg("text", &loud)))
//! }
//! # fn main() {}
//! ```
//!
//! The host *traces* a composite — runs its code with calls only recorded,
//! so that it learns the graph without running any callee — and *runs* it,
//! scheduling each call as soon as its inputs are ready. A composite that
//! never calls [`Deferred::get`] traces completely; one that forces a
//! value to decide what to call next is run staged (the host computes what
//! the value needs and hands it back). Either way its code must not
//! depend on anything but its input and the values it forces: it may run
//! more than once.
//!
//! Values cross as JSON in the host's mapping of WIT values (see the
//! README): arguments are serialized with `serde`, forced values
//! deserialized. Rust's own conventions mostly agree (`Option` is `null`
//! or the value, `Vec` and tuples are arrays); records are objects keyed
//! by their WIT (kebab-case) field names, so a struct needs
//! `#[serde(rename_all = "kebab-case")]`, and a WIT `result` is
//! `{"ok": v}` / `{"err": e}`, not serde's `{"Ok": v}`.
//!
//! The host checks every call when it is recorded: an unknown operator, a
//! missing, extra or mistyped argument, too many calls or too deep a
//! recursion end the composite with a typed error; they are not returned
//! to it.
//!
//! Outside WebAssembly (native unit tests and doc tests) there is no host
//! to call: every function here panics.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// What a call will produce, of type `T` (as JSON, once forced).
pub struct Deferred<T> {
    handle: imp::Handle,
    value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").finish_non_exhaustive()
    }
}

impl<T> Deferred<T> {
    fn new(handle: imp::Handle) -> Self {
        Deferred {
            handle,
            value: PhantomData,
        }
    }

    /// The same deferred, read as a `U` when forced (the host's value is
    /// what it is: `U` only says how to deserialize it).
    pub fn cast<U>(self) -> Deferred<U> {
        Deferred::new(self.handle)
    }

    /// Field `name` (its WIT name, kebab-case) of this record value.
    pub fn field<U>(&self, name: &str) -> Deferred<U> {
        Deferred::new(imp::field(&self.handle, name))
    }

    /// The value. While the host traces the composite this stops the trace
    /// here (the composite's code does not go on); in a run it waits for
    /// the value. An `Err` is the callee's failure, seen only when the run
    /// goes on past failures (its code is the error kind).
    pub fn get(&self) -> Result<T, Error>
    where
        T: DeserializeOwned,
    {
        let text = imp::get(&self.handle)?;
        serde_json::from_str(&text).map_err(|error| {
            Error::internal(format!(
                "a forced value does not fit `{}`: {error}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// An argument's value: a deferred, or anything `serde` serializes.
pub trait Arg {
    #[doc(hidden)]
    fn to_arg(&self) -> ArgValue<'_>;
}

/// An argument as it goes to the host. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub enum ArgValue<'a> {
    /// JSON text.
    Json(String),
    /// A deferred's handle.
    Deferred(&'a imp::Handle),
}

impl<T> Arg for Deferred<T> {
    fn to_arg(&self) -> ArgValue<'_> {
        ArgValue::Deferred(&self.handle)
    }
}

/// Wraps a value that `serde` serializes as an argument:
/// `Args::new().arg("xs", &Json(vec![1, 2]))`. Values of the common types
/// (numbers, strings, `bool`, `Vec`, `Option`) need no wrapper.
#[derive(Debug, Clone, Copy)]
pub struct Json<T>(pub T);

impl<T: Serialize> Arg for Json<T> {
    fn to_arg(&self) -> ArgValue<'_> {
        ArgValue::Json(to_json(&self.0))
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serializing a value of these types to a string cannot fail (a map
    // with non-string keys could, and is refused by the host as not JSON).
    serde_json::to_string(value).unwrap_or_else(|error| format!("!{error}"))
}

macro_rules! serialized_args {
    ($($ty:ty),* $(,)?) => {
        $(impl Arg for $ty {
            fn to_arg(&self) -> ArgValue<'_> {
                ArgValue::Json(to_json(self))
            }
        })*
    };
}

serialized_args!(
    bool, u8, u16, u32, u64, i8, i16, i32, i64, f32, f64, char, String, str
);

impl<T: Serialize> Arg for Vec<T> {
    fn to_arg(&self) -> ArgValue<'_> {
        ArgValue::Json(to_json(self))
    }
}

impl<T: Serialize> Arg for Option<T> {
    fn to_arg(&self) -> ArgValue<'_> {
        ArgValue::Json(to_json(self))
    }
}

impl<T: Serialize> Arg for [T] {
    fn to_arg(&self) -> ArgValue<'_> {
        ArgValue::Json(to_json(self))
    }
}

/// The arguments of a call, by parameter name (its WIT name, kebab-case).
#[derive(Default)]
pub struct Args<'a> {
    args: Vec<(String, ArgValue<'a>)>,
}

impl std::fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.args.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Args").field("names", &names).finish()
    }
}

impl<'a> Args<'a> {
    /// No arguments.
    pub fn new() -> Self {
        Args::default()
    }

    /// Binds parameter `name` to `value`: a [`Deferred`], or a value.
    pub fn arg<V: Arg + ?Sized>(mut self, name: &str, value: &'a V) -> Self {
        self.args.push((name.to_owned(), value.to_arg()));
        self
    }
}

/// Calls the operator called `operator` with `args`; returns at once.
pub fn call<T>(operator: &str, args: Args<'_>) -> Deferred<T> {
    Deferred::new(imp::call(operator, None, &args.args))
}

/// Calls `operator` once per element of the list bound to parameter
/// `over` (in `args`), in parallel; the value is the list of the results.
pub fn map<T>(operator: &str, over: &str, args: Args<'_>) -> Deferred<Vec<T>> {
    Deferred::new(imp::call(operator, Some(over), &args.args))
}

/// The list of the values of `items`, in order.
pub fn gather<T>(items: &[Deferred<T>]) -> Deferred<Vec<T>> {
    gather_each(items)
}

/// The list of the values of `items` (borrowed from anywhere), in order;
/// the same deferred may be gathered more than once.
pub fn gather_each<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a Deferred<T>>,
) -> Deferred<Vec<T>> {
    let handles: Vec<&imp::Handle> = items.into_iter().map(|item| &item.handle).collect();
    Deferred::new(imp::gather(&handles))
}

/// Makes `output` the composite's result and ends its code: the host does
/// not return from this. `#[operator]` calls it for a function that
/// returns `Ok(deferred)`.
pub fn finish<T>(output: &Deferred<T>) -> ! {
    imp::finish(&output.handle)
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod imp {
    //! The `compose` import, through wit-bindgen.

    #[allow(
        unsafe_code,
        reason = "the canonical-ABI glue that wit-bindgen generates is unsafe by nature"
    )]
    mod bindings {
        // The contract's `composite` world, for its `compose` import only:
        // the SDK never exports its `Guest` (each operator's `#[operator]`
        // expansion exports its own world).
        wit_bindgen::generate!({
            path: "../wit",
            world: "composite",
            runtime_path: "::wit_bindgen::rt",
        });
    }

    use bindings::xcs::operator::compose::{self, Arg, Value};

    use super::ArgValue;
    use crate::Error;

    /// A `deferred` handle.
    pub type Handle = compose::Deferred;

    pub(super) fn call(
        operator: &str,
        over: Option<&str>,
        args: &[(String, ArgValue<'_>)],
    ) -> Handle {
        let args: Vec<Arg<'_>> = args
            .iter()
            .map(|(name, value)| Arg {
                name: name.clone(),
                value: match value {
                    ArgValue::Json(text) => Value::Json(text.clone()),
                    ArgValue::Deferred(handle) => Value::Deferred(handle),
                },
            })
            .collect();
        match over {
            None => compose::call(operator, &args),
            Some(over) => compose::map(operator, over, &args),
        }
    }

    pub(super) fn field(handle: &Handle, name: &str) -> Handle {
        handle.field(name)
    }

    pub(super) fn gather(items: &[&Handle]) -> Handle {
        compose::gather(items)
    }

    pub(super) fn get(handle: &Handle) -> Result<String, Error> {
        handle
            .get()
            .map_err(|error| Error::new(error.code, error.message).retryable(error.retryable))
    }

    pub(super) fn finish(handle: &Handle) -> ! {
        compose::finish(handle);
        unreachable!("the host ends a composite's code at `finish`")
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod imp {
    //! Outside WebAssembly there is no host: every call panics.

    use super::ArgValue;
    use crate::Error;

    /// A `deferred` handle (none exist outside WebAssembly).
    #[derive(Debug)]
    pub struct Handle(());

    fn no_host() -> ! {
        panic!("xcs_guest::compose needs the xcs host: build for wasm32-wasip2")
    }

    pub(super) fn call(_: &str, _: Option<&str>, _: &[(String, ArgValue<'_>)]) -> Handle {
        no_host()
    }

    pub(super) fn field(_: &Handle, _: &str) -> Handle {
        no_host()
    }

    pub(super) fn gather(_: &[&Handle]) -> Handle {
        no_host()
    }

    pub(super) fn get(_: &Handle) -> Result<String, Error> {
        no_host()
    }

    pub(super) fn finish(_: &Handle) -> ! {
        no_host()
    }
}
