//! What a composite's calls record: nodes of a graph, and the expressions
//! (deferreds) that stand for their values — type-checked as they are
//! recorded, identical deterministic calls merged, bounded in number.

use std::collections::HashMap;

use serde_json::Value;

use super::ComposeOptions;
use crate::codec;
use crate::error::{Error, GraphProblem, list_or_none};
use crate::graph::{Graph, Node, Operators, Source};
use crate::operator::Operator;
use crate::store::ArgValue;
use crate::types::WitType;

/// Where a composite's code runs: which composite, under which node (for
/// a nested one), how deep, and its calls so far.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// The composite's name.
    pub(crate) composite: String,
    /// Prefix of the ids of the nodes it records: empty at the top, the
    /// calling node's id and `/` for a nested composite.
    pub(crate) prefix: String,
    /// The composites from the top down to this one.
    pub(crate) chain: Vec<String>,
    /// Calls this composite recorded so far.
    pub(crate) calls: usize,
}

impl Scope {
    pub(crate) fn top(composite: &str) -> Scope {
        Scope {
            composite: composite.to_owned(),
            prefix: String::new(),
            chain: vec![composite.to_owned()],
            calls: 0,
        }
    }

    /// The scope of composite `composite`, called as node `node` from here.
    pub(crate) fn nested(&self, node: &str, composite: &str) -> Scope {
        let mut chain = self.chain.clone();
        chain.push(composite.to_owned());
        Scope {
            composite: composite.to_owned(),
            prefix: format!("{node}/"),
            chain,
            calls: 0,
        }
    }

    /// How many composites deep it is (1 at the top).
    pub(crate) fn depth(&self) -> usize {
        self.chain.len()
    }
}

/// A deferred's value: where it comes from in the graph, and its type
/// (`None` when it is not known, for an operator that returns nothing).
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub(crate) source: Source,
    pub(crate) ty: Option<WitType>,
    /// How many node references and literals the source holds, and how
    /// deeply its lists nest: gathers of gathers are bounded by both.
    leaves: usize,
    depth: usize,
}

impl Expr {
    /// A source that is not a list: one leaf.
    pub(crate) fn leaf(source: Source, ty: Option<WitType>) -> Expr {
        Expr {
            source,
            ty,
            leaves: 1,
            depth: 1,
        }
    }
}

/// The deepest gathers of gathers may nest: the host walks sources by
/// recursion.
const MAX_GATHER_DEPTH: usize = 32;

/// Node references and literals all expressions together may hold, per
/// allowed call (a gather copies its items).
const LEAVES_PER_CALL: usize = 16;

/// A call as the journal recorded it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The node's index in the graph.
    pub(crate) index: usize,
    /// The expression of its value.
    pub(crate) expr: u32,
    /// Whether it was merged into an earlier identical call.
    pub(crate) merged: bool,
}

/// A call counted and checked, not yet in the graph.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) node: Node,
    pub(crate) operator: Operator,
}

/// The recording of one trace or run: shared by every composite in it.
#[derive(Debug)]
pub(crate) struct Journal {
    operators: Operators,
    options: ComposeOptions,
    pub(crate) graph: Graph,
    /// Per node: the type of its output.
    output_types: Vec<Option<WitType>>,
    /// Node index by id.
    index: HashMap<String, usize>,
    exprs: Vec<Expr>,
    /// Deterministic calls by their canonical form, for merging.
    seen: HashMap<String, usize>,
    /// Calls recorded, merged ones included.
    pub(crate) calls: usize,
    /// Calls merged into an earlier identical one.
    pub(crate) merged: usize,
    /// Bytes of JSON arguments recorded.
    recorded_bytes: u64,
    /// Leaves of every expression.
    leaves: usize,
}

/// The most expressions (deferreds of calls, fields, gathers) per allowed
/// call: a composite that makes handles without end is stopped too.
const EXPRS_PER_CALL: usize = 4;

impl Journal {
    pub(crate) fn new(operators: Operators, options: ComposeOptions) -> Self {
        Journal {
            operators,
            options,
            graph: Graph::new(),
            output_types: Vec::new(),
            index: HashMap::new(),
            exprs: Vec::new(),
            seen: HashMap::new(),
            calls: 0,
            merged: 0,
            recorded_bytes: 0,
            leaves: 0,
        }
    }

    pub(crate) fn operators(&self) -> &Operators {
        &self.operators
    }

    pub(crate) fn options(&self) -> &ComposeOptions {
        &self.options
    }

    pub(crate) fn expr(&self, id: u32) -> Option<&Expr> {
        self.exprs.get(id as usize)
    }

    /// A new expression; `Err` past the bound on expressions.
    pub(crate) fn push_expr(&mut self, scope: &Scope, expr: Expr) -> Result<u32, Error> {
        let bound = self.options.max_calls.saturating_mul(EXPRS_PER_CALL);
        if self.exprs.len() >= bound {
            return Err(Error::Analysis {
                composite: scope.composite.clone(),
                reason: format!(
                    "made more than {bound} deferred values ({EXPRS_PER_CALL} per allowed call; \
                     max_calls is {})",
                    self.options.max_calls
                ),
            });
        }
        let leaf_bound = self.options.max_calls.saturating_mul(LEAVES_PER_CALL);
        self.leaves = self.leaves.saturating_add(expr.leaves);
        if self.leaves > leaf_bound {
            return Err(analysis(
                scope,
                format!(
                    "its deferred values hold more than {leaf_bound} references \
                     ({LEAVES_PER_CALL} per allowed call): gathers copy their items"
                ),
            ));
        }
        let id = u32::try_from(self.exprs.len()).unwrap_or(u32::MAX);
        self.exprs.push(expr);
        Ok(id)
    }

    /// The expression of node `index`'s value.
    pub(crate) fn node_expr(&mut self, scope: &Scope, index: usize) -> Result<u32, Error> {
        let node = &self.graph.nodes[index];
        let expr = Expr::leaf(Source::node(node.id()), self.output_types[index].clone());
        self.push_expr(scope, expr)
    }

    /// The output type of the node `id`, and whether there is such a node.
    fn output_type(&self, id: &str) -> Option<&Option<WitType>> {
        self.index.get(id).map(|&index| &self.output_types[index])
    }

    /// Field `name` of expression `of`.
    pub(crate) fn field(&mut self, scope: &Scope, of: u32, name: &str) -> Result<u32, Error> {
        let problem = |message: String| analysis(scope, message);
        let Some(expr) = self.expr(of).cloned() else {
            return Err(problem(format!("no deferred value {of}")));
        };
        let Source::Node { node, field: None } = &expr.source else {
            return Err(problem(format!(
                "field `{name}` of `{}`: only a call's own result has fields",
                expr.source
            )));
        };
        let ty = match &expr.ty {
            Some(WitType::Record(fields)) => match fields.iter().find(|(field, _)| field == name) {
                Some((_, ty)) => ty.clone(),
                None => {
                    return Err(problem(format!(
                        "`{node}` has no field `{name}` (fields: {})",
                        list_or_none(fields.iter().map(|(field, _)| field))
                    )));
                }
            },
            Some(other) => {
                return Err(problem(format!(
                    "`{node}` is {other}, which has no field `{name}`"
                )));
            }
            None => return Err(problem(format!("`{node}` produces nothing"))),
        };
        self.push_expr(
            scope,
            Expr::leaf(Source::field(node.clone(), name), Some(ty)),
        )
    }

    /// The list of the values of `items`, all of one type.
    pub(crate) fn gather(&mut self, scope: &Scope, items: &[u32]) -> Result<u32, Error> {
        let mut sources = Vec::with_capacity(items.len());
        let mut element: Option<WitType> = None;
        let (mut leaves, mut depth) = (0usize, 1usize);
        for &item in items {
            let Some(expr) = self.expr(item) else {
                return Err(analysis(scope, format!("no deferred value {item}")));
            };
            leaves = leaves.saturating_add(expr.leaves);
            depth = depth.max(expr.depth + 1);
            if depth > MAX_GATHER_DEPTH {
                return Err(analysis(
                    scope,
                    format!("gathers nest deeper than {MAX_GATHER_DEPTH}"),
                ));
            }
            let Some(ty) = &expr.ty else {
                return Err(analysis(
                    scope,
                    format!("gather: `{}` produces nothing", expr.source),
                ));
            };
            element = match element {
                None => Some(ty.clone()),
                Some(known) if ty.can_feed(&known) => Some(known),
                Some(known) if known.can_feed(ty) => Some(ty.clone()),
                Some(known) => {
                    return Err(analysis(
                        scope,
                        format!(
                            "gather: `{}` is {ty}, the items before it {known}",
                            expr.source
                        ),
                    ));
                }
            };
            sources.push(expr.source.clone());
        }
        let ty = element.map(|element| WitType::List(Box::new(element)));
        let expr = Expr {
            source: Source::List(sources),
            ty,
            leaves: leaves.max(1),
            depth,
        };
        self.push_expr(scope, expr)
    }

    /// Records a call of `key` (a map over `over`) with `args` from
    /// `scope`: checked against the callee's signature, merged into an
    /// identical earlier call of a deterministic operator.
    pub(crate) fn record(
        &mut self,
        scope: &mut Scope,
        key: &str,
        over: Option<&str>,
        args: Vec<(String, ArgValue)>,
    ) -> Result<Recorded, Error> {
        let call = self.prepare(scope, key, over, args)?;
        self.commit(scope, call)
    }

    /// Counts and checks a call of `key` from `scope`, and names its node,
    /// without adding it to the graph yet (a nested composite traced in
    /// place never is).
    pub(crate) fn prepare(
        &mut self,
        scope: &mut Scope,
        key: &str,
        over: Option<&str>,
        args: Vec<(String, ArgValue)>,
    ) -> Result<Prepared, Error> {
        self.calls += 1;
        if self.calls > self.options.max_calls {
            return Err(analysis(
                scope,
                format!(
                    "recorded more than max_calls ({}) calls",
                    self.options.max_calls
                ),
            ));
        }
        let bytes: u64 = args
            .iter()
            .map(|(name, value)| match value {
                ArgValue::Json(text) => (name.len() + text.len()) as u64,
                ArgValue::Deferred(_) => name.len() as u64,
            })
            .sum();
        self.recorded_bytes = self.recorded_bytes.saturating_add(bytes);
        if self.recorded_bytes > self.options.max_recorded_bytes {
            return Err(analysis(
                scope,
                format!(
                    "recorded more than max_recorded_bytes ({} bytes) of arguments",
                    self.options.max_recorded_bytes
                ),
            ));
        }
        scope.calls += 1;
        let id = format!("{}{key}#{}", scope.prefix, scope.calls);
        let problems_at = |problems: Vec<String>| Error::Graph {
            problems: problems
                .into_iter()
                .map(|message| {
                    GraphProblem::node(
                        &id,
                        format!("call {} of `{}`: {message}", scope.calls, scope.composite),
                    )
                })
                .collect(),
        };
        let Some(operator) = self.operators.get(key).cloned() else {
            return Err(problems_at(vec![format!(
                "unknown operator `{key}` (known: {})",
                list_or_none(self.operators.by_key.keys())
            )]));
        };
        let mut node = Node::new(&id, key);
        let mut problems = Vec::new();
        for (name, value) in args {
            let source = match value {
                ArgValue::Json(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(value) => Source::Literal(value),
                    Err(error) => {
                        problems.push(format!("argument `{name}` is not JSON: {error}"));
                        continue;
                    }
                },
                ArgValue::Deferred(expr) => match self.expr(expr) {
                    // The node's argument is a copy of the deferred value's
                    // references: they count against the same bound as a
                    // gather's, checked before copying.
                    Some(expr) => {
                        let leaves = self.leaves.saturating_add(expr.leaves);
                        let leaf_bound = self.options.max_calls.saturating_mul(LEAVES_PER_CALL);
                        if leaves > leaf_bound {
                            return Err(analysis(
                                scope,
                                format!(
                                    "its calls' arguments and deferred values hold more than \
                                     {leaf_bound} references ({LEAVES_PER_CALL} per allowed \
                                     call): every argument copies its value's"
                                ),
                            ));
                        }
                        let source = expr.source.clone();
                        self.leaves = leaves;
                        source
                    }
                    None => {
                        problems.push(format!("argument `{name}`: no deferred value {expr}"));
                        continue;
                    }
                },
            };
            node = node.arg(name, source);
        }
        if let Some(over) = over {
            node = node.map_over(over, None);
        }
        problems.extend(self.check_args(&node, &operator));
        if !problems.is_empty() {
            return Err(problems_at(problems));
        }
        if self.index.contains_key(&id) {
            return Err(problems_at(vec!["a node of this id exists already".into()]));
        }
        Ok(Prepared { node, operator })
    }

    /// Adds a prepared call to the graph, or merges it into an identical
    /// earlier call of a deterministic operator.
    pub(crate) fn commit(&mut self, scope: &Scope, call: Prepared) -> Result<Recorded, Error> {
        let Prepared { node, operator } = call;
        let merge_key =
            (operator.is_repeatable() && !operator.is_composite()).then(|| canonical_call(&node));
        if let Some(&index) = merge_key.as_ref().and_then(|key| self.seen.get(key)) {
            self.merged += 1;
            let expr = self.node_expr(scope, index)?;
            return Ok(Recorded {
                index,
                expr,
                merged: true,
            });
        }
        let output = operator
            .signature()
            .result
            .clone()
            .map(|result| match node.map {
                Some(_) => WitType::List(Box::new(result)),
                None => result,
            });
        let index = self.graph.nodes.len();
        self.index.insert(node.id.clone(), index);
        self.graph.nodes.push(node);
        self.output_types.push(output);
        if let Some(key) = merge_key {
            self.seen.insert(key, index);
        }
        let expr = self.node_expr(scope, index)?;
        Ok(Recorded {
            index,
            expr,
            merged: false,
        })
    }

    /// The problems of `node`'s arguments against `operator`'s parameters.
    fn check_args(&self, node: &Node, operator: &Operator) -> Vec<String> {
        let mut problems = Vec::new();
        let params = &operator.signature().params;
        let map = node.map.as_ref().map(|map| map.param.as_str());
        if let Some(over) = map {
            if !params.iter().any(|param| param.name == over) {
                problems.push(format!("maps over `{over}`, which is not a parameter"));
            } else if !node.args.iter().any(|(name, _)| name == over) {
                problems.push(format!("maps over `{over}`, which is not given"));
            }
        }
        // A set, not a scan of the earlier arguments: a guest decides how
        // many arguments a call has.
        let mut given = std::collections::HashSet::with_capacity(node.args.len());
        for (name, source) in &node.args {
            if !given.insert(name.as_str()) {
                problems.push(format!("argument `{name}` is given twice"));
                continue;
            }
            let Some(param) = params.iter().find(|param| &param.name == name) else {
                problems.push(format!(
                    "`{}` has no parameter `{name}` (parameters: {})",
                    node.operator,
                    list_or_none(
                        params
                            .iter()
                            .map(|param| format!("{}: {}", param.name, param.ty))
                    )
                ));
                continue;
            };
            let expected = match map {
                Some(over) if over == name => WitType::List(Box::new(param.ty.clone())),
                _ => param.ty.clone(),
            };
            if let Err(problem) = self.check_source(source, &expected) {
                problems.push(format!("argument `{name}`: {problem}"));
            }
        }
        for param in params {
            let bound = node.args.iter().any(|(name, _)| *name == param.name);
            if !bound && !matches!(param.ty, WitType::Option(_)) {
                problems.push(format!(
                    "parameter `{}: {}` is not given",
                    param.name, param.ty
                ));
            }
        }
        problems
    }

    /// Whether `source` can feed a parameter of type `expected`.
    fn check_source(&self, source: &Source, expected: &WitType) -> Result<(), String> {
        match source {
            Source::Literal(value) => codec::check_value(expected, value)
                .map_err(|error| format!("{value} does not fit {expected}: {error}")),
            Source::List(items) => {
                let WitType::List(element) = expected else {
                    return Err(format!("a list of values cannot feed {expected}"));
                };
                items
                    .iter()
                    .try_for_each(|item| self.check_source(item, element))
            }
            Source::Node { node, field } => {
                let produced = match self.output_type(node) {
                    None => return Err(format!("refers to `{node}`, which is not a node")),
                    Some(None) => return Err(format!("`{node}` produces nothing")),
                    Some(Some(ty)) => ty,
                };
                let produced = match field {
                    None => produced,
                    Some(field) => match produced {
                        WitType::Record(fields) => {
                            match fields.iter().find(|(name, _)| name == field) {
                                Some((_, ty)) => ty,
                                None => return Err(format!("`{node}` has no field `{field}`")),
                            }
                        }
                        _ => return Err(format!("`{node}` has no field `{field}`")),
                    },
                };
                if produced.can_feed(expected) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{source}` is {produced}, which cannot feed {expected}"
                    ))
                }
            }
            Source::Input(name) => Err(format!("graph input `{name}` in a composite's call")),
        }
    }
}

impl Journal {
    /// Checks that expression `output`, which `composite` finished with,
    /// has the type `composite`'s signature says it returns.
    pub(crate) fn check_output(&self, composite: &Operator, output: u32) -> Result<(), Error> {
        let contract = |reason: String| Error::Contract {
            operator: composite.name().to_owned(),
            reason,
            source: None,
        };
        let Some(expr) = self.expr(output) else {
            return Err(contract(format!(
                "finished with no deferred value {output}"
            )));
        };
        match (&expr.ty, &composite.signature().result) {
            (_, None) => Ok(()),
            (Some(produced), Some(declared)) if produced.can_feed(declared) => Ok(()),
            (produced, Some(declared)) => Err(contract(format!(
                "finished with `{}`, which is {}, not its result type {declared}",
                expr.source,
                produced
                    .as_ref()
                    .map_or_else(|| "nothing".to_owned(), ToString::to_string)
            ))),
        }
    }
}

/// An `analysis` error of `scope`'s composite.
pub(crate) fn analysis(scope: &Scope, reason: String) -> Error {
    Error::Analysis {
        composite: scope.composite.clone(),
        reason,
    }
}

/// A call's canonical text: operator, map parameter and arguments sorted by
/// name (object keys are sorted in `serde_json` values already).
fn canonical_call(node: &Node) -> String {
    let mut args: Vec<String> = node
        .args
        .iter()
        .map(|(name, source)| format!("{name}={source}"))
        .collect();
    args.sort_unstable();
    let map = node.map.as_ref().map_or("", |map| map.param.as_str());
    format!("{}\n{map}\n{}", node.operator, args.join("\n"))
}
