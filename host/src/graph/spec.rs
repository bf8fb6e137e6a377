//! The TOML graph format.
//!
//! ```toml
//! [[node]]
//! id = "counts"              # unique; no `.` or `@`
//! operator = "word-count"    # a name (looked up in the operators directory) or a path to a .wasm
//! map = "text"               # optional: apply to every element of the list bound to `text`
//! max_concurrency = 4        # optional, map nodes: at most this many elements at once
//! timeout = "2s"             # optional per-node limits: timeout, fuel, memory
//! args = { text = "@input.documents" }
//!
//! [outputs]
//! counts = "@counts"         # `@input.NAME`, `@NODE`, `@NODE.FIELD`; anything else is a literal
//! ```
//!
//! A literal string that starts with `@` is written with `@@`.

use serde::Deserialize;
use serde_json::Value;

use super::{Graph, GraphProblem, Node, Source, problems_message};
use crate::error::Error;
use crate::limits::{Limits, parse_size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphSpec {
    #[serde(default, rename = "node")]
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    outputs: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    id: String,
    operator: String,
    #[serde(default)]
    args: toml::Table,
    map: Option<String>,
    max_concurrency: Option<usize>,
    timeout: Option<String>,
    fuel: Option<u64>,
    memory: Option<String>,
}

fn graph_error(problems: Vec<GraphProblem>) -> Error {
    Error::Graph {
        message: problems_message(&problems),
        problems,
    }
}

/// Converts a TOML value into JSON (datetimes become strings).
fn to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(n) => Value::from(n),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map_or_else(|| Value::String(f.to_string()), Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(key, value)| (key, to_json(value)))
                .collect(),
        ),
    }
}

/// Reads `@input.NAME`, `@NODE`, `@NODE.FIELD`, `@@literal`, or a literal.
pub(crate) fn source(value: toml::Value) -> Source {
    match value {
        toml::Value::String(text) => match text.strip_prefix('@') {
            Some(escaped) if escaped.starts_with('@') => {
                Source::Literal(Value::String(escaped.to_owned()))
            }
            Some(reference) => match reference.strip_prefix("input.") {
                Some(input) => Source::Input(input.to_owned()),
                None => match reference.split_once('.') {
                    Some((node, field)) => Source::field(node, field),
                    None => Source::node(reference),
                },
            },
            None => Source::Literal(Value::String(text)),
        },
        other => Source::Literal(to_json(other)),
    }
}

pub(crate) fn parse(text: &str) -> Result<Graph, Error> {
    let spec: GraphSpec = toml::from_str(text).map_err(|error| {
        graph_error(vec![GraphProblem {
            node: None,
            message: format!("invalid graph file: {}", error.to_string().trim_end()),
        }])
    })?;
    let mut problems = Vec::new();
    let mut graph = Graph::new();
    for node_spec in spec.nodes {
        let mut node = Node::new(&node_spec.id, node_spec.operator);
        for (name, value) in node_spec.args {
            node = node.arg(name, source(value));
        }
        if let Some(param) = node_spec.map {
            node = node.map_over(param, node_spec.max_concurrency);
        } else if node_spec.max_concurrency.is_some() {
            problems.push(GraphProblem {
                node: Some(node_spec.id.clone()),
                message: "max_concurrency is for map nodes (add `map = \"<parameter>\"`)".into(),
            });
        }
        if node_spec.timeout.is_some() || node_spec.fuel.is_some() || node_spec.memory.is_some() {
            let mut limits = Limits::default().fuel(node_spec.fuel);
            if let Some(timeout) = &node_spec.timeout {
                match humantime::parse_duration(timeout) {
                    Ok(timeout) => limits = limits.timeout(timeout),
                    Err(error) => problems.push(GraphProblem {
                        node: Some(node_spec.id.clone()),
                        message: format!("timeout `{timeout}`: {error}"),
                    }),
                }
            }
            if let Some(memory) = &node_spec.memory {
                match parse_size(memory) {
                    Ok(bytes) => limits = limits.max_memory_bytes(bytes),
                    Err(error) => problems.push(GraphProblem {
                        node: Some(node_spec.id.clone()),
                        message: format!("memory: {error}"),
                    }),
                }
            }
            node = node.limits(limits);
        }
        graph = graph.node(node);
    }
    for (name, value) in spec.outputs {
        graph = graph.output(name, source(value));
    }
    if problems.is_empty() {
        Ok(graph)
    } else {
        Err(graph_error(problems))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_and_literals() {
        assert_eq!(
            source(toml::Value::String("@input.docs".into())),
            Source::input("docs")
        );
        assert_eq!(
            source(toml::Value::String("@count".into())),
            Source::node("count")
        );
        assert_eq!(
            source(toml::Value::String("@stats.mean".into())),
            Source::field("stats", "mean")
        );
        assert_eq!(
            source(toml::Value::String("@@home".into())),
            Source::literal(json!("@home"))
        );
        assert_eq!(
            source(toml::Value::String("plain".into())),
            Source::literal(json!("plain"))
        );
        assert_eq!(source(toml::Value::Integer(3)), Source::literal(json!(3)));
    }

    #[test]
    fn parses_nodes_outputs_and_limits() {
        let graph = parse(
            r#"
            [[node]]
            id = "counts"
            operator = "word-count"
            map = "text"
            max_concurrency = 2
            timeout = "250ms"
            memory = "8MiB"
            args = { text = "@input.docs" }

            [outputs]
            counts = "@counts"
            "#,
        )
        .expect("valid");
        let node = &graph.nodes()[0];
        assert_eq!(
            node.map.as_ref().map(|map| map.max_concurrency),
            Some(Some(2))
        );
        let limits = node.limits.as_ref().expect("limits");
        assert_eq!(limits.get_timeout(), std::time::Duration::from_millis(250));
        assert_eq!(limits.get_max_memory_bytes(), 8 << 20);
        assert_eq!(
            graph.outputs,
            vec![("counts".into(), Source::node("counts"))]
        );
    }

    #[test]
    fn reports_bad_files() {
        let error = parse("[[node]]\nid = 3").expect_err("invalid");
        assert_eq!(error.kind(), crate::ErrorKind::Graph);
        let error = parse("[[node]]\nid = \"a\"\noperator = \"x\"\ncolour = \"red\"")
            .expect_err("unknown key");
        assert!(error.to_string().contains("colour"), "{error}");
        let error = parse(
            "[[node]]\nid = \"a\"\noperator = \"x\"\nmax_concurrency = 2\ntimeout = \"soon\"",
        )
        .expect_err("two problems");
        assert!(
            error.to_string().starts_with("the graph has 2 problems"),
            "{error}"
        );
    }
}
