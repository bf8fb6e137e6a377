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

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{Graph, GraphProblem, Node, Source};

mod write;

use crate::error::Error;
use crate::grants::{GrantSpec, GrantsTable};
use crate::limits::{Limits, parse_size};
use crate::policy::{Breaker, Bulkhead, Policy, Retry};
pub(crate) use write::write;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphSpec {
    #[serde(default, rename = "node")]
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    outputs: toml::Table,
    #[serde(default)]
    policy: std::collections::BTreeMap<String, PolicySpec>,
    #[serde(default)]
    grants: std::collections::BTreeMap<String, GrantSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    cache: Option<bool>,
    retry: Option<RetrySpec>,
    breaker: Option<BreakerSpec>,
    bulkhead: Option<BulkheadSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    attempts: Option<u32>,
    base_delay: Option<String>,
    multiplier: Option<f64>,
    max_delay: Option<String>,
    jitter: Option<f64>,
    attempt_timeout: Option<String>,
    on_timeout: Option<bool>,
    on_trap: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerSpec {
    failures: Option<u32>,
    failure_ratio: Option<f64>,
    window: Option<u32>,
    cool_down: Option<String>,
    probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkheadSpec {
    max_in_flight: Option<usize>,
    max_queue: Option<usize>,
}

/// Reads the settings of one table (`policy.<operator>.retry`, a node),
/// collecting every problem instead of stopping at the first.
struct Fields<'a> {
    /// Where the settings are, for messages: `policy.flaky.retry`.
    table: String,
    /// The node they belong to, if any.
    node: Option<&'a str>,
    problems: &'a mut Vec<GraphProblem>,
}

impl Fields<'_> {
    fn problem(&mut self, message: String) {
        self.problems.push(GraphProblem {
            node: self.node.map(str::to_owned),
            message,
        });
    }

    /// The place of `field` in messages: `policy.x.retry.jitter`, or just
    /// `timeout` in a node (whose id the problem names).
    fn place(&self, field: &str) -> String {
        if self.table.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.table)
        }
    }

    fn duration(&mut self, field: &str, text: Option<&str>) -> Option<std::time::Duration> {
        let text = text?;
        match humantime::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(error) => {
                let place = self.place(field);
                self.problem(format!("{place} `{text}`: {error}"));
                None
            }
        }
    }

    /// `value` when it is a finite number; NaN and infinities are a problem.
    fn finite(&mut self, field: &str, value: Option<f64>) -> Option<f64> {
        let value = value?;
        if value.is_finite() {
            return Some(value);
        }
        let place = self.place(field);
        self.problem(format!("{place} is {value}, not a finite number"));
        None
    }

    fn size(&mut self, field: &str, text: Option<&str>) -> Option<u64> {
        let text = text?;
        match parse_size(text) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                let place = self.place(field);
                let message = match error {
                    Error::Config { message } => message,
                    other => other.to_string(),
                };
                self.problem(format!("{place}: {message}"));
                None
            }
        }
    }
}

fn policy(operator: &str, spec: PolicySpec, problems: &mut Vec<GraphProblem>) -> Policy {
    fn fields<'a>(operator: &str, table: &str, problems: &'a mut Vec<GraphProblem>) -> Fields<'a> {
        Fields {
            table: format!("policy.{operator}.{table}"),
            node: None,
            problems,
        }
    }
    let mut policy = Policy::new();
    if let Some(cache) = spec.cache {
        policy = policy.cache(cache);
    }
    if let Some(retry_spec) = spec.retry {
        let mut fields = fields(operator, "retry", problems);
        let mut retry = Retry::default()
            .on_timeout(retry_spec.on_timeout.unwrap_or(false))
            .on_trap(retry_spec.on_trap.unwrap_or(false));
        if let Some(attempts) = retry_spec.attempts {
            retry = retry.max_attempts(attempts);
        }
        if let Some(delay) = fields.duration("base_delay", retry_spec.base_delay.as_deref()) {
            retry = retry.base_delay(delay);
        }
        if let Some(multiplier) = fields.finite("multiplier", retry_spec.multiplier) {
            retry = retry.multiplier(multiplier);
        }
        if let Some(delay) = fields.duration("max_delay", retry_spec.max_delay.as_deref()) {
            retry = retry.max_delay(delay);
        }
        if let Some(jitter) = fields.finite("jitter", retry_spec.jitter) {
            retry = retry.jitter(jitter);
        }
        if let Some(timeout) =
            fields.duration("attempt_timeout", retry_spec.attempt_timeout.as_deref())
        {
            retry = retry.attempt_timeout(timeout);
        }
        policy = policy.retry(retry);
    }
    if let Some(breaker_spec) = spec.breaker {
        let mut fields = fields(operator, "breaker", problems);
        let mut breaker = Breaker::default();
        if let Some(failures) = breaker_spec.failures {
            breaker = breaker.consecutive_failures(failures);
        }
        if let Some(ratio) = fields.finite("failure_ratio", breaker_spec.failure_ratio) {
            breaker = breaker.failure_ratio(ratio, breaker_spec.window.unwrap_or(20));
        }
        if let Some(cool_down) = fields.duration("cool_down", breaker_spec.cool_down.as_deref()) {
            breaker = breaker.cool_down(cool_down);
        }
        if let Some(probes) = breaker_spec.probes {
            breaker = breaker.half_open_probes(probes);
        }
        policy = policy.breaker(breaker);
    }
    if let Some(bulkhead_spec) = spec.bulkhead {
        let mut bulkhead = Bulkhead::default();
        if let Some(max) = bulkhead_spec.max_in_flight {
            bulkhead = bulkhead.max_in_flight(max);
        }
        if let Some(max) = bulkhead_spec.max_queue {
            bulkhead = bulkhead.max_queue(max);
        }
        policy = policy.bulkhead(bulkhead);
    }
    policy
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

pub(crate) fn graph_error(problems: Vec<GraphProblem>) -> Error {
    Error::Graph { problems }
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

/// The key of a table that holds a literal as JSON text: `{ "@json" =
/// "[1, null]" }` (for what TOML cannot write: `null`, integers past
/// `i64`).
pub(crate) const JSON_KEY: &str = "@json";

/// Reads `@input.NAME`, `@NODE`, `@NODE.FIELD`, `@@literal`, a literal, an
/// array of any of these (a list source when one of them is a reference),
/// or `{ "@json" = "..." }`.
pub(crate) fn source(value: toml::Value) -> Result<Source, String> {
    Ok(match value {
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
        toml::Value::Array(items) => {
            let items = items
                .into_iter()
                .map(source)
                .collect::<Result<Vec<_>, _>>()?;
            if items.iter().all(|item| matches!(item, Source::Literal(_))) {
                let values = items.into_iter().map(|item| match item {
                    Source::Literal(value) => value,
                    _ => Value::Null, // all are literals: checked above
                });
                Source::Literal(Value::Array(values.collect()))
            } else {
                Source::List(items)
            }
        }
        toml::Value::Table(table) if table.len() == 1 && table.contains_key(JSON_KEY) => {
            let Some(toml::Value::String(text)) = table.get(JSON_KEY) else {
                return Err(format!("`{JSON_KEY}` holds JSON text, a string"));
            };
            let value = serde_json::from_str(text)
                .map_err(|error| format!("`{JSON_KEY}` is not JSON: {error}"))?;
            Source::Literal(value)
        }
        other => Source::Literal(to_json(other)),
    })
}

pub(crate) fn parse(text: &str) -> Result<Graph, Error> {
    let spec: GraphSpec = toml::from_str(text).map_err(|error| {
        graph_error(vec![GraphProblem::graph(format!(
            "invalid graph file: {}",
            error.to_string().trim_end()
        ))])
    })?;
    let mut problems = Vec::new();
    let mut graph = Graph::new();
    for node_spec in spec.nodes {
        let mut node = Node::new(&node_spec.id, node_spec.operator);
        for (name, value) in node_spec.args {
            match source(value) {
                Ok(value) => node = node.arg(name, value),
                Err(message) => problems.push(GraphProblem::node(
                    &node_spec.id,
                    format!("argument `{name}`: {message}"),
                )),
            }
        }
        if let Some(param) = node_spec.map {
            node = node.map_over(param, node_spec.max_concurrency);
        } else if node_spec.max_concurrency.is_some() {
            problems.push(GraphProblem::node(
                &node_spec.id,
                "max_concurrency is for map nodes (add `map = \"<parameter>\"`)",
            ));
        }
        if node_spec.timeout.is_some() || node_spec.fuel.is_some() || node_spec.memory.is_some() {
            let mut fields = Fields {
                table: String::new(),
                node: Some(&node_spec.id),
                problems: &mut problems,
            };
            let mut limits = Limits::default().fuel(node_spec.fuel);
            if let Some(timeout) = fields.duration("timeout", node_spec.timeout.as_deref()) {
                limits = limits.timeout(timeout);
            }
            if let Some(bytes) = fields.size("memory", node_spec.memory.as_deref()) {
                limits = limits.max_memory_bytes(bytes);
            }
            node = node.limits(limits);
        }
        graph = graph.node(node);
    }
    for (name, value) in spec.outputs {
        match source(value) {
            Ok(value) => graph = graph.output(name, value),
            Err(message) => {
                problems.push(GraphProblem::graph(format!("output `{name}`: {message}")))
            }
        }
    }
    for (operator, policy_spec) in spec.policy {
        let policy = policy(&operator, policy_spec, &mut problems);
        graph = graph.policy(operator, policy);
    }
    // Host paths stay as written: relative to the file, which the caller
    // knows (`GrantsTable::relative_to`).
    match GrantsTable::from_specs(spec.grants, Path::new(""), text) {
        Ok(grants) => graph = graph.with_grants(grants),
        Err(error) => problems.push(GraphProblem::graph(format!("[grants]: {error}"))),
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
            Ok(Source::input("docs"))
        );
        assert_eq!(
            source(toml::Value::String("@count".into())),
            Ok(Source::node("count"))
        );
        assert_eq!(
            source(toml::Value::String("@stats.mean".into())),
            Ok(Source::field("stats", "mean"))
        );
        assert_eq!(
            source(toml::Value::String("@@home".into())),
            Ok(Source::literal(json!("@home")))
        );
        assert_eq!(
            source(toml::Value::String("plain".into())),
            Ok(Source::literal(json!("plain")))
        );
        assert_eq!(
            source(toml::Value::Integer(3)).expect("a source"),
            Source::literal(json!(3))
        );
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
        assert_eq!(limits.timeout, std::time::Duration::from_millis(250));
        assert_eq!(limits.max_memory_bytes, 8 << 20);
        assert_eq!(
            graph.outputs,
            vec![("counts".into(), Source::node("counts"))]
        );
    }

    #[test]
    fn policies() {
        let graph = parse(
            r#"
            [[node]]
            id = "f"
            operator = "flaky"

            [policy.flaky]
            cache = false
            retry = { attempts = 4, base_delay = "5ms", jitter = 0.0, attempt_timeout = "1s", on_timeout = true }
            breaker = { failures = 3, cool_down = "2s", probes = 2 }
            bulkhead = { max_in_flight = 2, max_queue = 8 }
            "#,
        )
        .expect("valid");
        let expected = Policy::new()
            .cache(false)
            .retry(
                Retry::default()
                    .max_attempts(4)
                    .base_delay(std::time::Duration::from_millis(5))
                    .jitter(0.0)
                    .attempt_timeout(std::time::Duration::from_secs(1))
                    .on_timeout(true),
            )
            .breaker(
                Breaker::default()
                    .consecutive_failures(3)
                    .cool_down(std::time::Duration::from_secs(2))
                    .half_open_probes(2),
            )
            .bulkhead(Bulkhead::default().max_in_flight(2).max_queue(8));
        assert_eq!(graph.policies(), &[("flaky".to_owned(), expected)]);
        let error =
            parse("[policy.x]\nretry = { attempts = 2, backoff = 3 }").expect_err("unknown key");
        assert!(error.to_string().contains("backoff"), "{error}");
        let error = parse(
            "[policy.x]\nretry = { jitter = nan, multiplier = inf }\nbreaker = { failure_ratio = -nan }",
        )
        .expect_err("not finite");
        assert!(
            error.to_string().starts_with("the graph has 3 problems"),
            "{error}"
        );
        assert!(
            error.to_string().contains("policy.x.retry.jitter is NaN"),
            "{error}"
        );
    }

    #[test]
    fn written_graphs_read_back_the_same() {
        let text = r#"
            [[node]]
            id = "a"
            operator = "x"
            map = "items"
            max_concurrency = 3
            timeout = "1s 500ms"
            fuel = 1000
            memory = "8MiB"
            args = { items = [1, 2], name = "@@at", deep = { "@json" = "[null, 18446744073709551615]" } }

            [[node]]
            id = "b"
            operator = "y"
            args = { xs = ["@a", "@a.f", "@@lit", 4], raw = { s = "@raw", l = ["@raw"] } }

            [outputs]
            b = "@b"
            both = ["@a", "@b"]
            none = { "@json" = "null" }

            [policy.x]
            cache = false
            retry = { attempts = 4, base_delay = "5ms", attempt_timeout = "1s", on_timeout = true }
            breaker = { failures = 3, failure_ratio = 0.5, window = 10, cool_down = "2s", probes = 2 }
            bulkhead = { max_in_flight = 2, max_queue = 8 }
            "#;
        let graph = parse(text).expect("valid");
        let written = write(&graph).expect("writable");
        assert_eq!(parse(&written).expect("reads back"), graph, "{written}");
        let node_b = &graph.nodes()[1];
        assert_eq!(
            node_b.args[0],
            (
                "raw".to_owned(),
                Source::literal(json!({"s": "@raw", "l": ["@raw"]}))
            ),
            "table contents are read as they are"
        );
        assert_eq!(
            node_b.args[1],
            (
                "xs".to_owned(),
                Source::list([
                    Source::node("a"),
                    Source::field("a", "f"),
                    Source::literal(json!("@lit")),
                    Source::literal(json!(4)),
                ])
            )
        );
        let error = parse("[outputs]\nx = { \"@json\" = \"[\" }").expect_err("bad JSON");
        assert!(error.to_string().contains("not JSON"), "{error}");
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
