//! The one error type of the library, its kinds, and the problems a graph
//! check reports (they are part of [`Error::Graph`], so they live here, at
//! the bottom, rather than in the graph module that finds them).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error: what a [`Capability`](crate::Capability) function returns
/// when it fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An opaque cause kept by an [`Error`]: shared, so that errors can be
/// cloned (a failed load or call shared by concurrent callers reaches each
/// of them whole, cause included).
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong when loading or calling an operator.
///
/// Each variant names the operator involved (its metadata name, or the
/// source it was loaded from when the name is not known yet) and, for limits,
/// the limit that was hit. [`Error::kind`] gives the stable kebab-case kind
/// used by the CLI's exit codes and by metrics.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid WebAssembly component.
    #[error("{source_name}: {reason}")]
    InvalidComponent {
        /// Where the bytes came from (a path, or `<bytes>`).
        source_name: String,
        /// What is wrong, in words.
        reason: String,
        /// The underlying parser or compiler error, when there is one.
        #[source]
        source: Option<SharedError>,
    },

    /// The component does not follow the `xcs:operator` contract, or
    /// needs more core instances or tables than this host allows per
    /// component.
    #[error("{operator}: {reason}")]
    Contract {
        /// The operator (or source) concerned.
        operator: String,
        /// What is wrong, in words.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<SharedError>,
    },

    /// The component imports something the host does not grant.
    #[error(
        "{operator}: imports `{import}`, which this host does not grant{}{}",
        hint.as_deref().map(|hint| format!(" ({hint})")).unwrap_or_default(),
        also_refused(also)
    )]
    Capability {
        /// The operator (or source) concerned.
        operator: String,
        /// The (first) import that was refused, e.g. `acme:kv/store@1.0.0`.
        import: String,
        /// How to fix it, when there is an obvious way.
        hint: Option<String>,
        /// Every other import refused with it, in the component's order.
        also: Vec<String>,
    },

    /// The input does not match the operator's signature.
    #[error("{operator}: {path}: expected {expected}, found {found}")]
    Validation {
        /// The operator whose signature was violated.
        operator: String,
        /// Where in the input, as a JSON path (`$.xs[3]`).
        path: String,
        /// What the signature expects there (a WIT type, or a constraint).
        expected: String,
        /// What the input has there.
        found: String,
    },

    /// The input is larger than [`Limits::max_input_bytes`](crate::Limits::max_input_bytes).
    #[error("{operator}: input of at least {size} bytes is over the limit of {limit} bytes")]
    InputTooLarge {
        /// The operator that was called.
        operator: String,
        /// The input's size in bytes, as far as it was measured before
        /// refusing it.
        size: u64,
        /// The limit in force.
        limit: u64,
    },

    /// The operator returned `err(error)`.
    #[error("{operator}: operator error [{code}]{}: {message}", if *retryable { " (retryable)" } else { "" })]
    Operator {
        /// The operator that failed.
        operator: String,
        /// The error code the operator gave.
        code: String,
        /// The message the operator gave.
        message: String,
        /// Whether the operator says trying again may succeed.
        retryable: bool,
    },

    /// The call ran past its wall-clock deadline and was interrupted.
    #[error("{operator}: timed out after {}", humanize(*timeout))]
    Timeout {
        /// The operator that was interrupted.
        operator: String,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// The call used up its fuel (instruction budget).
    #[error("{operator}: ran out of fuel (budget {fuel})")]
    Fuel {
        /// The operator that was stopped.
        operator: String,
        /// The fuel budget it was given.
        fuel: u64,
    },

    /// The guest asked for more memory than its cap.
    #[error(
        "{operator}: {what} of {requested} {unit} refused: the limit is {limit} {unit}",
        unit = if *what == "table" { "elements" } else { "bytes" }
    )]
    Memory {
        /// The operator that was stopped.
        operator: String,
        /// What needed the memory (`linear memory`, `table`, `output`).
        what: &'static str,
        /// How many bytes it asked for in total (or produced, for output);
        /// elements, for a table.
        requested: u64,
        /// The cap in force (bytes; elements, for a table).
        limit: u64,
    },

    /// The guest overflowed its stack.
    #[error("{operator}: stack overflow (wasm stack limit {max_stack_bytes} bytes)")]
    StackOverflow {
        /// The operator that was stopped.
        operator: String,
        /// The wasm stack limit in force.
        max_stack_bytes: usize,
    },

    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access,
    /// or a failing host capability).
    #[error("{operator}: {message}{}", stderr_suffix(guest_stderr))]
    Trap {
        /// The operator that trapped.
        operator: String,
        /// The trap's cause.
        message: String,
        /// What the guest wrote to stderr before trapping, truncated, then
        /// its last error-level log message (a Rust panic message lands
        /// here, by stderr or, from a component without WASI, by the SDK's
        /// panic hook and the log).
        guest_stderr: String,
    },

    /// The operator's circuit breaker is open: the call was not attempted.
    #[error("{operator}: circuit open after repeated failures; retry in {}", humanize(*retry_after))]
    CircuitOpen {
        /// The operator.
        operator: String,
        /// When the breaker lets a probe through.
        retry_after: Duration,
    },

    /// The operator's bulkhead is full: the call was refused at once.
    #[error("{operator}: overloaded ({max_in_flight} calls in flight and {max_queue} queued)")]
    Overloaded {
        /// The operator.
        operator: String,
        /// The bulkhead's bound on calls in flight.
        max_in_flight: usize,
        /// The bulkhead's bound on queued calls.
        max_queue: usize,
    },

    /// The graph has problems, found before anything ran. The message
    /// lists every problem, one per line.
    #[error("{}", problems_message(problems))]
    Graph {
        /// Every problem, each naming its node.
        problems: Vec<GraphProblem>,
    },

    /// A composite could not be analysed as asked: it nests deeper than
    /// `max_depth`, records more calls than `max_calls`, or (with `strict`)
    /// cannot be traced completely.
    #[error("{composite}: {reason}")]
    Analysis {
        /// The composite concerned.
        composite: String,
        /// What went wrong, in words.
        reason: String,
    },

    /// A graph node failed; the kind is the cause's.
    #[error("node `{node}`{}: {cause}", element.map(|index| format!(" (element {index})")).unwrap_or_default())]
    Node {
        /// The node's id.
        node: String,
        /// For a map node, the index of the element whose call failed.
        element: Option<usize>,
        /// Why it failed (its kind is this error's kind).
        cause: Box<Error>,
    },

    /// The graph ran past its deadline; running guests were interrupted and
    /// pending nodes cancelled.
    #[error("graph timed out after {}{}", humanize(*timeout), if running.is_empty() { String::new() } else { format!("; still running: {}", running.join(", ")) })]
    GraphTimeout {
        /// The graph deadline.
        timeout: Duration,
        /// The nodes that were still running.
        running: Vec<String>,
    },

    /// The work was cancelled before it could finish, from outside: its
    /// async runtime shut down, say.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// What was cancelled, and by what.
        reason: String,
    },

    /// Reading a file failed. The I/O error is shared (errors are
    /// cloneable): `source.kind()` and the rest work through the `Arc`.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The host or a call was configured in a way that cannot work.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },

    /// A call made by a remote worker failed there: the worker's error,
    /// with its kind, operator and message kept across the wire.
    #[error("{message}")]
    Remote {
        /// The kind of the worker's error.
        kind: ErrorKind,
        /// The operator it is about, if any.
        operator: Option<String>,
        /// The worker's message (its `Display`).
        message: String,
        /// Whether the operator said trying again may succeed.
        retryable: bool,
    },

    /// No remote worker answered: none is running, or none could be
    /// reached.
    #[error("{operator}: no worker is available: {reason}")]
    Unavailable {
        /// The operator that was to be called.
        operator: String,
        /// Why.
        reason: String,
    },
}

/// "; also `b`, `c`" for the other refused imports of a capability error.
fn also_refused(also: &[String]) -> String {
    match also {
        [] => String::new(),
        names => {
            let names: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            format!("; also refused: {}", names.join(", "))
        }
    }
}

impl Error {
    /// An [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// One problem a graph has, as found by
/// [`Graph::check`](crate::graph::Graph::check) or the graph-file parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphProblem {
    /// The node concerned, when there is one.
    pub node: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl GraphProblem {
    /// A problem of node `node`.
    pub(crate) fn node(node: &str, message: impl Into<String>) -> Self {
        GraphProblem {
            node: Some(node.to_owned()),
            message: message.into(),
        }
    }

    /// A problem of the graph as a whole.
    pub(crate) fn graph(message: impl Into<String>) -> Self {
        GraphProblem {
            node: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node `{node}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn problems_message(problems: &[GraphProblem]) -> String {
    let mut message = match problems.len() {
        1 => "the graph has 1 problem".to_owned(),
        n => format!("the graph has {n} problems"),
    };
    for problem in problems {
        message.push_str("\n  - ");
        message.push_str(&problem.to_string());
    }
    message
}

/// `a, b, c`, or `none` for no items: lists of names in messages.
pub(crate) fn list_or_none<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut list = String::new();
    for item in items {
        if !list.is_empty() {
            list.push_str(", ");
        }
        use fmt::Write as _;
        let _ = write!(list, "{item}");
    }
    if list.is_empty() {
        list.push_str("none");
    }
    list
}

fn stderr_suffix(guest_stderr: &str) -> String {
    let trimmed = guest_stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("\nguest stderr:\n{trimmed}")
    }
}

/// `1.5s`, `200ms`, `37µs`: short and exact enough for messages.
pub(crate) fn humanize(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos >= 1_000_000_000 && nanos.is_multiple_of(1_000_000) {
        format!("{}s", duration.as_secs_f64())
    } else if nanos >= 1_000_000 && nanos.is_multiple_of(1_000) {
        format!("{}ms", nanos as f64 / 1e6)
    } else if nanos >= 1_000 {
        format!("{}µs", nanos as f64 / 1e3)
    } else {
        format!("{nanos}ns")
    }
}

/// The stable kind of an [`Error`], as used by the CLI and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `invalid-component`
    InvalidComponent,
    /// `contract`
    Contract,
    /// `capability`
    Capability,
    /// `validation` (also an input over its size limit)
    Validation,
    /// `operator`
    Operator,
    /// `timeout`
    Timeout,
    /// `fuel`
    Fuel,
    /// `memory` (linear memory, tables, or output over its size limit)
    Memory,
    /// `stack-overflow`
    StackOverflow,
    /// `trap`
    Trap,
    /// `circuit-open`
    CircuitOpen,
    /// `overloaded`
    Overloaded,
    /// `graph`
    Graph,
    /// `analysis`
    Analysis,
    /// `cancelled`
    Cancelled,
    /// `io`
    Io,
    /// `config`
    Config,
    /// `unavailable` (no remote worker answers)
    Unavailable,
}

impl ErrorKind {
    /// Every kind, in a stable order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidComponent,
        ErrorKind::Contract,
        ErrorKind::Capability,
        ErrorKind::Validation,
        ErrorKind::Operator,
        ErrorKind::Timeout,
        ErrorKind::Fuel,
        ErrorKind::Memory,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::CircuitOpen,
        ErrorKind::Overloaded,
        ErrorKind::Graph,
        ErrorKind::Analysis,
        ErrorKind::Cancelled,
        ErrorKind::Io,
        ErrorKind::Config,
        ErrorKind::Unavailable,
    ];

    /// The kebab-case name, e.g. `stack-overflow`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidComponent => "invalid-component",
            ErrorKind::Contract => "contract",
            ErrorKind::Capability => "capability",
            ErrorKind::Validation => "validation",
            ErrorKind::Operator => "operator",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Fuel => "fuel",
            ErrorKind::Memory => "memory",
            ErrorKind::StackOverflow => "stack-overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::CircuitOpen => "circuit-open",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Graph => "graph",
            ErrorKind::Analysis => "analysis",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Io => "io",
            ErrorKind::Config => "config",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// The kind named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The error's stable kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidComponent { .. } => ErrorKind::InvalidComponent,
            Error::Contract { .. } => ErrorKind::Contract,
            Error::Capability { .. } => ErrorKind::Capability,
            Error::Validation { .. } | Error::InputTooLarge { .. } => ErrorKind::Validation,
            Error::Operator { .. } => ErrorKind::Operator,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Fuel { .. } => ErrorKind::Fuel,
            Error::Memory { .. } => ErrorKind::Memory,
            Error::StackOverflow { .. } => ErrorKind::StackOverflow,
            Error::Trap { .. } => ErrorKind::Trap,
            Error::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            Error::Overloaded { .. } => ErrorKind::Overloaded,
            Error::Graph { .. } => ErrorKind::Graph,
            Error::Analysis { .. } => ErrorKind::Analysis,
            Error::Node { cause, .. } => cause.kind(),
            Error::GraphTimeout { .. } => ErrorKind::Timeout,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Io { .. } => ErrorKind::Io,
            Error::Config { .. } => ErrorKind::Config,
            Error::Remote { kind, .. } => *kind,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
        }
    }

    /// The operator the error is about, when it is about one (a node's
    /// error: its operator's). A component that failed to load has no
    /// name yet: its source name is given instead.
    pub fn operator(&self) -> Option<&str> {
        match self {
            Error::InvalidComponent { source_name, .. } => Some(source_name),
            Error::Contract { operator, .. }
            | Error::Capability { operator, .. }
            | Error::Validation { operator, .. }
            | Error::InputTooLarge { operator, .. }
            | Error::Operator { operator, .. }
            | Error::Timeout { operator, .. }
            | Error::Fuel { operator, .. }
            | Error::Memory { operator, .. }
            | Error::StackOverflow { operator, .. }
            | Error::Trap { operator, .. }
            | Error::CircuitOpen { operator, .. }
            | Error::Overloaded { operator, .. }
            | Error::Unavailable { operator, .. } => Some(operator),
            Error::Remote { operator, .. } => operator.as_deref(),
            Error::Analysis { composite, .. } => Some(composite),
            Error::Node { cause, .. } => cause.operator(),
            Error::Graph { .. }
            | Error::GraphTimeout { .. }
            | Error::Cancelled { .. }
            | Error::Io { .. }
            | Error::Config { .. } => None,
        }
    }

    /// Whether the operator said that trying again may succeed.
    ///
    /// Only an [`Error::Operator`] with its `retryable` flag set is; every
    /// other failure is a property of the operator or its input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Operator { retryable, .. } | Error::Remote { retryable, .. } => *retryable,
            Error::Node { cause, .. } => cause.is_retryable(),
            _ => false,
        }
    }
}

/// Wraps a `wasmtime::Error` so it can be kept as a `#[source]`.
#[derive(Debug)]
pub(crate) struct WasmtimeError(pub(crate) wasmtime::Error);

impl fmt::Display for WasmtimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for WasmtimeError {}

impl From<wasmtime::Error> for WasmtimeError {
    fn from(error: wasmtime::Error) -> Self {
        WasmtimeError(error)
    }
}

/// `error` as the cause of an [`Error`].
pub(crate) fn cause(error: wasmtime::Error) -> Option<SharedError> {
    Some(Arc::new(WasmtimeError(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_kebab_case() {
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(humanize(Duration::from_millis(200)), "200ms");
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_micros(1500)), "1.5ms");
    }
}
