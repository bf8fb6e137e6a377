//! Graphs of operator calls: one representation built by a Rust builder or
//! a TOML file, checked before anything runs, run by a dataflow scheduler.
//!
//! A [`Graph`] is a list of [`Node`]s and named outputs. Each node calls one
//! operator; each of its parameters is bound to a [`Source`]: a graph input,
//! another node's output (or a field of it, when it is a record), or a
//! literal. A *map* node applies its operator to every element of the list
//! bound to one parameter, in parallel, and outputs the list of results.
//!
//! [`Graph::check`] resolves operators and reports every problem at once
//! (unknown operators, duplicate ids, dangling references, missing or extra
//! parameters, cycles, literals and edges whose types do not fit) as one
//! [`Error::Graph`]. The resulting [`Plan`] runs with
//! [`Plan::run`].

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::error::Error;
pub use crate::error::GraphProblem;
use crate::grants::GrantsTable;
use crate::limits::Limits;
use crate::operator::Operator;
use crate::policy::Policy;

mod check;
mod compose;
mod executor;
mod options;
mod pictures;
mod report;
mod run;
mod spec;

pub use check::Plan;
pub use compose::{COMPOSITE_OUTPUT, Composite, Trace};
pub use executor::{Executor, RemoteCall};
pub use options::{ComposeOptions, ProgressFn, RunOptions};
pub use report::{
    NodeError, NodeReport, NodeStatus, RunReport, Span, StopReason, Stopped, TraceReport, TraceStop,
};

/// Where a parameter's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The graph input of this name.
    Input(String),
    /// The output of another node, or one field of it when it is a record.
    Node {
        /// The producing node's id.
        node: String,
        /// A field of the producer's record output.
        field: Option<String>,
    },
    /// A constant, checked against the parameter's type.
    Literal(Value),
    /// A list of the values of these sources, in order (say, the outputs
    /// of several nodes gathered for one parameter of type `list<T>`).
    List(Vec<Source>),
}

impl Source {
    /// The graph input `name`.
    pub fn input(name: impl Into<String>) -> Self {
        Source::Input(name.into())
    }

    /// The output of node `id`.
    pub fn node(id: impl Into<String>) -> Self {
        Source::Node {
            node: id.into(),
            field: None,
        }
    }

    /// Field `field` of the record output of node `id`.
    pub fn field(id: impl Into<String>, field: impl Into<String>) -> Self {
        Source::Node {
            node: id.into(),
            field: Some(field.into()),
        }
    }

    /// A constant value.
    pub fn literal(value: Value) -> Self {
        Source::Literal(value)
    }

    /// The list of the values of `items`.
    pub fn list(items: impl IntoIterator<Item = Source>) -> Self {
        Source::List(items.into_iter().collect())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Input(name) => write!(f, "@input.{name}"),
            Source::Node { node, field: None } => write!(f, "@{node}"),
            Source::Node {
                node,
                field: Some(field),
            } => write!(f, "@{node}.{field}"),
            Source::Literal(value) => write!(f, "{value}"),
            Source::List(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// How a map node fans out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapSpec {
    pub(crate) param: String,
    pub(crate) max_concurrency: Option<usize>,
}

/// One operator call in a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub(crate) id: String,
    pub(crate) operator: String,
    pub(crate) args: Vec<(String, Source)>,
    pub(crate) map: Option<MapSpec>,
    pub(crate) limits: Option<Limits>,
}

impl Node {
    /// A node `id` that calls the operator known as `operator` in the
    /// [`Operators`] the graph is checked against.
    pub fn new(id: impl Into<String>, operator: impl Into<String>) -> Self {
        Node {
            id: id.into(),
            operator: operator.into(),
            args: Vec::new(),
            map: None,
            limits: None,
        }
    }

    /// Binds parameter `param` to `source`.
    pub fn arg(mut self, param: impl Into<String>, source: Source) -> Self {
        self.args.push((param.into(), source));
        self
    }

    /// Makes this a map node: the operator is applied to every element of
    /// the list bound to `param`, at most `max_concurrency` at once (default:
    /// the run's bound), and the node outputs the list of results in order.
    pub fn map_over(mut self, param: impl Into<String>, max_concurrency: Option<usize>) -> Self {
        self.map = Some(MapSpec {
            param: param.into(),
            max_concurrency,
        });
        self
    }

    /// Limits for this node's calls, instead of the run's.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Whether the node has limits of its own (see [`limits`](Self::limits)).
    pub fn has_own_limits(&self) -> bool {
        self.limits.is_some()
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The operator's key.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// Its arguments, by parameter name.
    pub fn args(&self) -> &[(String, Source)] {
        &self.args
    }

    /// For a map node, the parameter it maps over.
    pub fn map_param(&self) -> Option<&str> {
        self.map.as_ref().map(|map| map.param.as_str())
    }
}

/// A graph of operator calls; see the [module docs](self).
///
/// ```
/// use xcs::graph::{Graph, Node, Source};
/// let graph = Graph::new()
///     .node(Node::new("counts", "word-count").arg("text", Source::input("docs")).map_over("text", None))
///     .node(Node::new("summary", "stats").arg("xs", Source::node("counts")))
///     .output("mean", Source::field("summary", "mean"));
/// assert_eq!(graph.nodes().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) outputs: Vec<(String, Source)>,
    pub(crate) policies: Vec<(String, Policy)>,
    pub(crate) grants: GrantsTable,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph::default()
    }

    /// Adds a node.
    pub fn node(mut self, node: Node) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds the graph output `name`.
    pub fn output(mut self, name: impl Into<String>, source: Source) -> Self {
        self.outputs.push((name.into(), source));
        self
    }

    /// Policies for the operator known as `operator` in this graph. They
    /// apply to this graph's runs only, instead of the operator's policies
    /// on its host, and each run keeps their state (breaker, bulkhead) for
    /// itself; the host's policies are not changed.
    pub fn policy(mut self, operator: impl Into<String>, policy: Policy) -> Self {
        self.policies.push((operator.into(), policy));
        self
    }

    /// Grants the graph asks for (a graph file's `[grants]`, as in a
    /// grants file; host paths as written, so relative ones are relative
    /// to the graph file: see [`GrantsTable::relative_to`]). Grants are a
    /// host's: the `xcs` command gives these to the host it builds for the
    /// run; an embedder decides with
    /// [`HostBuilder::grants_table`](crate::HostBuilder::grants_table).
    pub fn grants(&self) -> &GrantsTable {
        &self.grants
    }

    /// The same graph, asking for `grants` (see [`grants`](Self::grants)).
    pub fn with_grants(mut self, grants: GrantsTable) -> Self {
        self.grants = grants;
        self
    }

    /// The graph's policies, by operator key.
    pub fn policies(&self) -> &[(String, Policy)] {
        &self.policies
    }

    /// The graph outputs, by name.
    pub fn outputs(&self) -> &[(String, Source)] {
        &self.outputs
    }

    /// The nodes, in the order they were added.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Parses a graph from TOML (the format is in the README):
    ///
    /// ```
    /// let graph = xcs::graph::Graph::from_toml(r#"
    ///     [[node]]
    ///     id = "shout"
    ///     operator = "upper"
    ///     args = { text = "@input.text" }
    ///
    ///     [outputs]
    ///     loud = "@shout"
    /// "#)?;
    /// assert_eq!(graph.nodes()[0].operator(), "upper");
    /// # Ok::<(), xcs::Error>(())
    /// ```
    pub fn from_toml(text: &str) -> Result<Graph, Error> {
        spec::parse(text)
    }

    /// The graph in the TOML format, which [`Graph::from_toml`] reads back
    /// as the same graph. Literals TOML cannot write (`null`, integers past
    /// `i64`) are written as JSON text, `{ "@json" = "..." }`; a node whose
    /// limits are more than a timeout, fuel and memory is a `graph` error.
    ///
    /// ```
    /// use serde_json::json;
    /// use xcs::graph::{Graph, Node, Source};
    /// let graph = Graph::new()
    ///     .node(Node::new("a", "maybe").arg("x", Source::literal(json!(null))))
    ///     .output("a", Source::node("a"));
    /// let text = graph.to_toml()?;
    /// assert_eq!(Graph::from_toml(&text)?, graph);
    /// # Ok::<(), xcs::Error>(())
    /// ```
    pub fn to_toml(&self) -> Result<String, Error> {
        spec::write(self)
    }
}

/// The operators a graph may call, by key (usually the operator's name; a
/// TOML graph may also name a `.wasm` path).
#[derive(Debug, Clone, Default)]
pub struct Operators {
    pub(crate) by_key: BTreeMap<String, Operator>,
}

impl Operators {
    /// No operators.
    pub fn new() -> Self {
        Operators::default()
    }

    /// Adds `operator` under its metadata name.
    pub fn with(mut self, operator: Operator) -> Self {
        self.insert(operator.name().to_owned(), operator);
        self
    }

    /// Adds `operator` under `key`.
    pub fn insert(&mut self, key: impl Into<String>, operator: Operator) {
        self.by_key.insert(key.into(), operator);
    }

    /// The operator under `key`.
    pub fn get(&self, key: &str) -> Option<&Operator> {
        self.by_key.get(key)
    }
}
