//! The static check: resolve operators and references, check types, find
//! cycles; every problem is reported, together, before anything runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Graph, GraphProblem, Operators, Source};
use crate::codec;
use crate::error::{Error, list_or_none};
use crate::operator::Operator;
use crate::policy::{Installed, PolicyState};
use crate::types::WitType;

/// A source with node ids resolved to indices.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    Input(String),
    Node { index: usize, field: Option<String> },
    Literal(Value),
    List(Vec<Resolved>),
}

impl Resolved {
    /// Calls `each` with every graph input this source reads.
    pub(crate) fn for_each_input(&self, each: &mut impl FnMut(&str)) {
        match self {
            Resolved::Input(name) => each(name),
            Resolved::List(items) => items.iter().for_each(|item| item.for_each_input(each)),
            Resolved::Node { .. } | Resolved::Literal(_) => {}
        }
    }

    /// Calls `each` with every node this source reads, in order.
    pub(crate) fn for_each_node(&self, each: &mut impl FnMut(usize)) {
        match self {
            Resolved::Node { index, .. } => each(*index),
            Resolved::List(items) => items.iter().for_each(|item| item.for_each_node(each)),
            Resolved::Input(_) | Resolved::Literal(_) => {}
        }
    }
}

/// A checked graph, ready to run: every operator resolved, every edge
/// type-checked, no cycles.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) graph: Graph,
    pub(crate) operators: Vec<Operator>,
    pub(crate) args: Vec<Vec<(String, Resolved)>>,
    pub(crate) dependencies: Vec<Vec<usize>>,
    pub(crate) dependents: Vec<Vec<usize>>,
    pub(crate) outputs: Vec<(String, Resolved)>,
    pub(crate) input_types: BTreeMap<String, WitType>,
    /// The graph's own policies, by operator key, with the state they keep
    /// across every run of this plan (and its clones).
    pub(crate) policies: Arc<HashMap<String, Arc<GraphPolicy>>>,
    /// The operators the graph was checked against: those its composite
    /// nodes may call.
    pub(crate) operator_set: Operators,
}

/// A graph's own policy for an operator, and its state.
#[derive(Debug)]
pub(crate) struct GraphPolicy {
    pub(crate) installed: Installed,
    pub(crate) state: PolicyState,
}

impl Plan {
    /// The graph this plan runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph inputs the plan needs, with the type each must have.
    pub fn inputs(&self) -> &BTreeMap<String, WitType> {
        &self.input_types
    }

    /// The operator each node calls, in the order of the graph's nodes.
    pub fn node_operators(&self) -> &[Operator] {
        &self.operators
    }
}

struct Checker<'a> {
    graph: &'a Graph,
    problems: Vec<GraphProblem>,
    index: HashMap<&'a str, usize>,
    operators: Vec<Option<Operator>>,
    input_types: BTreeMap<String, WitType>,
}

impl Checker<'_> {
    fn problem(&mut self, node: Option<&str>, message: String) {
        self.problems.push(GraphProblem {
            node: node.map(str::to_owned),
            message,
        });
    }

    /// The type `index` outputs: its operator's result, a list of them for
    /// a map node.
    fn output_type(&self, index: usize) -> Option<WitType> {
        let result = self.operators[index].as_ref()?.signature().result.clone()?;
        Some(match self.graph.nodes[index].map {
            Some(_) => WitType::List(Box::new(result)),
            None => result,
        })
    }

    /// Resolves `source` for node `consumer` (None for a graph output),
    /// checking it can feed `expected` when that is known.
    fn resolve(
        &mut self,
        consumer: Option<&str>,
        what: &str,
        source: &Source,
        expected: Option<&WitType>,
    ) -> Option<Resolved> {
        match source {
            Source::Input(name) => {
                if let Some(expected) = expected {
                    match self.input_types.get(name) {
                        None => {
                            self.input_types.insert(name.clone(), expected.clone());
                        }
                        Some(known) if known.can_feed(expected) => {}
                        Some(known) if expected.can_feed(known) => {
                            // The narrower type serves both consumers.
                            self.input_types.insert(name.clone(), expected.clone());
                        }
                        Some(known) => {
                            let known = known.clone();
                            self.problem(
                                consumer,
                                format!("{what}: graph input `{name}` is used as {expected} here and as {known} elsewhere"),
                            );
                        }
                    }
                }
                Some(Resolved::Input(name.clone()))
            }
            Source::Literal(value) => {
                if let Some(expected) = expected
                    && let Err(error) = codec::check_value(expected, value)
                {
                    self.problem(
                        consumer,
                        format!("{what}: literal {value} does not fit: {error}"),
                    );
                }
                Some(Resolved::Literal(value.clone()))
            }
            Source::List(items) => {
                let element = match expected {
                    None => None,
                    Some(WitType::List(element)) => Some(&**element),
                    Some(other) => {
                        self.problem(
                            consumer,
                            format!("{what}: a list of sources `{source}` cannot feed {other}"),
                        );
                        None
                    }
                };
                let resolved = items
                    .iter()
                    .enumerate()
                    .map(|(position, item)| {
                        self.resolve(consumer, &format!("{what}[{position}]"), item, element)
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Resolved::List(resolved))
            }
            Source::Node { node, field } => {
                let Some(&index) = self.index.get(node.as_str()) else {
                    self.problem(
                        consumer,
                        format!("{what}: refers to `{node}`, which is not a node of the graph"),
                    );
                    return None;
                };
                let produced = match (self.operators[index].is_some(), self.output_type(index)) {
                    (false, _) => None, // unknown operator: reported already
                    (true, None) => {
                        self.problem(consumer, format!("{what}: node `{node}` produces nothing (its operator returns no value)"));
                        None
                    }
                    (true, Some(produced)) => match field {
                        None => Some(produced),
                        Some(field) => match &produced {
                            WitType::Record(fields) => {
                                match fields.iter().find(|(name, _)| name == field) {
                                    Some((_, ty)) => Some(ty.clone()),
                                    None => {
                                        let names: Vec<&str> =
                                            fields.iter().map(|(name, _)| name.as_str()).collect();
                                        self.problem(
                                        consumer,
                                        format!("{what}: node `{node}` has no field `{field}` (fields: {})", names.join(", ")),
                                    );
                                        None
                                    }
                                }
                            }
                            other => {
                                let other = other.clone();
                                self.problem(consumer, format!("{what}: node `{node}` outputs {other}, which has no field `{field}`"));
                                None
                            }
                        },
                    },
                };
                if let (Some(produced), Some(expected)) = (produced, expected)
                    && !produced.can_feed(expected)
                {
                    self.problem(
                        consumer,
                        format!("{what}: `{source}` is {produced}, which cannot feed {expected}"),
                    );
                }
                Some(Resolved::Node {
                    index,
                    field: field.clone(),
                })
            }
        }
    }
}

impl Graph {
    /// Checks the graph against `operators` and returns a runnable plan, or
    /// one [`Error::Graph`] listing every problem found.
    pub fn check(&self, operators: &Operators) -> Result<Plan, Error> {
        let mut checker = Checker {
            graph: self,
            problems: Vec::new(),
            index: HashMap::new(),
            operators: Vec::with_capacity(self.nodes.len()),
            input_types: BTreeMap::new(),
        };

        for (position, node) in self.nodes.iter().enumerate() {
            if node.id.is_empty() || node.id.contains(['.', '@']) {
                checker.problem(
                    Some(&node.id),
                    "a node id must be non-empty, without `.` or `@`".into(),
                );
            }
            if checker.index.insert(&node.id, position).is_some() {
                checker.problem(Some(&node.id), "duplicate node id".into());
            }
            let operator = operators.get(&node.operator).cloned();
            if operator.is_none() {
                checker.problem(
                    Some(&node.id),
                    format!(
                        "unknown operator `{}` (known: {})",
                        node.operator,
                        list_or_none(operators.by_key.keys())
                    ),
                );
            }
            checker.operators.push(operator);
        }

        let mut args = Vec::with_capacity(self.nodes.len());
        let mut dependencies = Vec::with_capacity(self.nodes.len());
        for (position, node) in self.nodes.iter().enumerate() {
            let id = Some(node.id.as_str());
            let params = checker.operators[position]
                .as_ref()
                .map(|operator| operator.signature().params.clone());
            if let (Some(map), Some(params)) = (&node.map, &params) {
                if !params.iter().any(|param| param.name == map.param) {
                    checker.problem(
                        id,
                        format!("maps over `{}`, which is not a parameter", map.param),
                    );
                }
                if map.max_concurrency == Some(0) {
                    checker.problem(id, "a map's max_concurrency must be at least 1".into());
                }
                if params.iter().any(|param| param.name == map.param)
                    && !node.args.iter().any(|(name, _)| *name == map.param)
                {
                    checker.problem(id, format!("maps over `{}`, which is not bound", map.param));
                }
                if checker.operators[position]
                    .as_ref()
                    .is_some_and(Operator::is_composite)
                {
                    checker.problem(
                        id,
                        format!(
                            "`{}` is a composite: a map node cannot call it",
                            node.operator
                        ),
                    );
                }
            }
            let mut resolved_args = Vec::with_capacity(node.args.len());
            let mut node_dependencies = Vec::new();
            let mut seen_dependencies = HashSet::new();
            let mut bound = HashSet::with_capacity(node.args.len());
            for (name, source) in &node.args {
                if !bound.insert(name.as_str()) {
                    checker.problem(id, format!("parameter `{name}` is bound twice"));
                    continue;
                }
                let expected = match &params {
                    None => None,
                    Some(params) => match params.iter().find(|param| &param.name == name) {
                        None => {
                            checker.problem(
                                id,
                                format!(
                                    "`{}` has no parameter `{name}` (parameters: {})",
                                    node.operator,
                                    list_or_none(params.iter().map(|param| &param.name))
                                ),
                            );
                            continue;
                        }
                        Some(param) => Some(match &node.map {
                            Some(map) if map.param == *name => {
                                WitType::List(Box::new(param.ty.clone()))
                            }
                            _ => param.ty.clone(),
                        }),
                    },
                };
                let what = format!("parameter `{name}`");
                if let Some(resolved) = checker.resolve(id, &what, source, expected.as_ref()) {
                    resolved.for_each_node(&mut |index| {
                        if seen_dependencies.insert(index) {
                            node_dependencies.push(index);
                        }
                    });
                    resolved_args.push((name.clone(), resolved));
                }
            }
            if let Some(params) = &params {
                for param in params {
                    if !bound.contains(param.name.as_str())
                        && !matches!(param.ty, WitType::Option(_))
                    {
                        checker.problem(
                            id,
                            format!("parameter `{}: {}` is not bound", param.name, param.ty),
                        );
                    }
                }
            }
            args.push(resolved_args);
            dependencies.push(node_dependencies);
        }

        let mut outputs = Vec::with_capacity(self.outputs.len());
        let mut output_names = HashSet::with_capacity(self.outputs.len());
        for (name, source) in &self.outputs {
            if !output_names.insert(name.as_str()) {
                checker.problem(None, format!("graph output `{name}` is defined twice"));
            }
            if let Some(resolved) =
                checker.resolve(None, &format!("graph output `{name}`"), source, None)
            {
                outputs.push((name.clone(), resolved));
            }
        }
        // An input only an output reads has no type to check it against:
        // it would be `null` when missing, silently.
        for (name, resolved) in &outputs {
            let mut unknown = Vec::new();
            resolved.for_each_input(&mut |input| {
                if !checker.input_types.contains_key(input) {
                    unknown.push(input.to_owned());
                }
            });
            for input in unknown {
                checker.problem(
                    None,
                    format!(
                        "graph output `{name}` reads graph input `{input}`, which no node takes \
                         (its type is unknown)"
                    ),
                );
            }
        }

        for (key, _) in &self.policies {
            if !self.nodes.iter().any(|node| &node.operator == key) {
                checker.problem(
                    None,
                    format!("a policy names operator `{key}`, which no node calls"),
                );
            } else if operators.get(key).is_some_and(Operator::is_composite) {
                checker.problem(
                    None,
                    format!(
                        "a policy names `{key}`, a composite: policies apply to the calls it \
                         makes, under their operators' names"
                    ),
                );
            }
        }

        let mut dependents = vec![Vec::new(); self.nodes.len()];
        for (consumer, producers) in dependencies.iter().enumerate() {
            for &producer in producers {
                dependents[producer].push(consumer);
            }
        }
        if let Some(cycle) = find_cycle(&dependencies) {
            let path: Vec<&str> = cycle
                .iter()
                .map(|&index| self.nodes[index].id.as_str())
                .collect();
            checker.problem(None, format!("cycle: {}", path.join(" → ")));
        }

        if !checker.problems.is_empty() {
            return Err(Error::Graph {
                problems: checker.problems,
            });
        }
        Ok(Plan {
            graph: self.clone(),
            operators: checker.operators.into_iter().flatten().collect(),
            args,
            dependencies,
            dependents,
            outputs,
            input_types: checker.input_types,
            policies: Arc::new(
                self.policies
                    .iter()
                    .map(|(key, policy)| {
                        let policy = GraphPolicy {
                            installed: Installed::new(policy.clone()),
                            state: PolicyState::default(),
                        };
                        (key.clone(), Arc::new(policy))
                    })
                    .collect(),
            ),
            operator_set: operators.clone(),
        })
    }
}

/// A cycle among the nodes, as a path that ends where it starts.
fn find_cycle(dependencies: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; dependencies.len()];
    // Iterative depth-first search: a 10,000-node chain must not overflow
    // the host's stack.
    for start in 0..dependencies.len() {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dependency) = dependencies[node].get(*next) {
                *next += 1;
                match marks[dependency] {
                    Mark::New => {
                        marks[dependency] = Mark::Open;
                        stack.push((dependency, 0));
                    }
                    Mark::Open => {
                        // `dependency` is on the stack: the cycle is the stack
                        // from it to here, reported in data-flow order.
                        let from = stack
                            .iter()
                            .position(|&(open, _)| open == dependency)
                            .unwrap_or(0);
                        let mut cycle: Vec<usize> =
                            stack[from..].iter().map(|&(open, _)| open).collect();
                        cycle.reverse();
                        cycle.push(cycle[0]);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn finds_cycles_in_data_flow_order() {
        // 0 depends on 2, 1 on 0, 2 on 1: 0 → 1 → 2 → 0.
        let cycle = find_cycle(&[vec![2], vec![0], vec![1]]).expect("a cycle");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0, 0]));
        let chain: Vec<Vec<usize>> = (0..100_000)
            .map(|n| if n == 0 { vec![] } else { vec![n - 1] })
            .collect();
        assert_eq!(find_cycle(&chain), None);
    }
}
