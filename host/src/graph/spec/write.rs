//! Writing a graph in the TOML format, such that the parser reads it back
//! as the same graph.

use serde_json::Value;

use super::{JSON_KEY, graph_error};
use crate::error::{Error, GraphProblem};
use crate::graph::{Graph, Source};
use crate::limits::Limits;
use crate::policy::Policy;

/// `source` as a TOML value that `source()` reads back as the same.
fn write_source(value: &Source) -> toml::Value {
    match value {
        Source::Input(name) => toml::Value::String(format!("@input.{name}")),
        Source::Node { node, field: None } => toml::Value::String(format!("@{node}")),
        Source::Node {
            node,
            field: Some(field),
        } => toml::Value::String(format!("@{node}.{field}")),
        Source::List(items) => toml::Value::Array(items.iter().map(write_source).collect()),
        Source::Literal(value) => write_literal(value).unwrap_or_else(|| {
            let mut table = toml::Table::new();
            table.insert(JSON_KEY.into(), toml::Value::String(value.to_string()));
            toml::Value::Table(table)
        }),
    }
}

/// `value` in plain TOML as `source()` reads it back (strings that
/// start with `@` escaped, in arrays too), when TOML can say it; `None`
/// otherwise.
fn write_literal(value: &Value) -> Option<toml::Value> {
    match value {
        Value::String(text) if text.starts_with('@') => {
            Some(toml::Value::String(format!("@{text}")))
        }
        Value::Array(items) => Some(toml::Value::Array(
            items.iter().map(write_literal).collect::<Option<_>>()?,
        )),
        Value::Object(object) if object.len() == 1 && object.contains_key(JSON_KEY) => None,
        other => raw_toml(other),
    }
}

/// `value` in TOML as it is (what a table's contents are read as), when
/// TOML can say it: no `null`, no integer past `i64`.
fn raw_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => toml::Value::Integer(integer),
            None if number.is_f64() => toml::Value::Float(number.as_f64()?),
            None => return None,
        },
        Value::String(text) => toml::Value::String(text.clone()),
        Value::Array(items) => {
            toml::Value::Array(items.iter().map(raw_toml).collect::<Option<_>>()?)
        }
        Value::Object(object) => {
            let mut table = toml::Table::new();
            for (key, value) in object {
                table.insert(key.clone(), raw_toml(value)?);
            }
            toml::Value::Table(table)
        }
    })
}

/// The graph in the TOML format, such that `parse` gives it back.
pub(crate) fn write(graph: &Graph) -> Result<String, Error> {
    let duration = |duration: std::time::Duration| {
        toml::Value::String(humantime::format_duration(duration).to_string())
    };
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    let mut problems = Vec::new();
    for node in &graph.nodes {
        let mut table = toml::Table::new();
        table.insert("id".into(), node.id.clone().into());
        table.insert("operator".into(), node.operator.clone().into());
        if let Some(map) = &node.map {
            table.insert("map".into(), map.param.clone().into());
            if let Some(max) = map.max_concurrency {
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                table.insert("max_concurrency".into(), max.into());
            }
        }
        if let Some(limits) = &node.limits {
            let written = Limits::default()
                .timeout(limits.timeout)
                .fuel(limits.fuel)
                .max_memory_bytes(limits.max_memory_bytes);
            if &written != limits {
                problems.push(GraphProblem::node(
                    &node.id,
                    "only a node's timeout, fuel and memory can be written as TOML",
                ));
            }
            table.insert("timeout".into(), duration(limits.timeout));
            if let Some(fuel) = limits.fuel {
                let fuel = i64::try_from(fuel).unwrap_or(i64::MAX);
                table.insert("fuel".into(), fuel.into());
            }
            table.insert("memory".into(), limits.max_memory_bytes.to_string().into());
        }
        let mut args = toml::Table::new();
        for (name, value) in &node.args {
            args.insert(name.clone(), write_source(value));
        }
        table.insert("args".into(), toml::Value::Table(args));
        nodes.push(toml::Value::Table(table));
    }
    let mut outputs = toml::Table::new();
    for (name, value) in &graph.outputs {
        outputs.insert(name.clone(), write_source(value));
    }
    let mut policies = toml::Table::new();
    for (operator, policy) in &graph.policies {
        policies.insert(
            operator.clone(),
            toml::Value::Table(write_policy(policy, duration)),
        );
    }
    if !problems.is_empty() {
        return Err(graph_error(problems));
    }
    let mut document = toml::Table::new();
    document.insert("node".into(), toml::Value::Array(nodes));
    document.insert("outputs".into(), toml::Value::Table(outputs));
    if !policies.is_empty() {
        document.insert("policy".into(), toml::Value::Table(policies));
    }
    if !graph.grants.is_empty() {
        document.insert("grants".into(), toml::Value::Table(graph.grants.to_toml()));
    }
    toml::to_string(&document).map_err(|error| {
        graph_error(vec![GraphProblem::graph(format!(
            "the graph cannot be written as TOML: {error}"
        ))])
    })
}

fn write_policy(
    policy: &Policy,
    duration: impl Fn(std::time::Duration) -> toml::Value,
) -> toml::Table {
    let mut table = toml::Table::new();
    table.insert("cache".into(), policy.cache.into());
    if let Some(retry) = &policy.retry {
        let mut spec = toml::Table::new();
        spec.insert("attempts".into(), i64::from(retry.max_attempts).into());
        spec.insert("base_delay".into(), duration(retry.base_delay));
        spec.insert("multiplier".into(), retry.multiplier.into());
        spec.insert("max_delay".into(), duration(retry.max_delay));
        spec.insert("jitter".into(), retry.jitter.into());
        if let Some(timeout) = retry.attempt_timeout {
            spec.insert("attempt_timeout".into(), duration(timeout));
        }
        spec.insert("on_timeout".into(), retry.on_timeout.into());
        spec.insert("on_trap".into(), retry.on_trap.into());
        table.insert("retry".into(), toml::Value::Table(spec));
    }
    if let Some(breaker) = &policy.breaker {
        let mut spec = toml::Table::new();
        spec.insert(
            "failures".into(),
            i64::from(breaker.consecutive_failures).into(),
        );
        if let Some((ratio, window)) = breaker.failure_ratio {
            spec.insert("failure_ratio".into(), ratio.into());
            spec.insert("window".into(), i64::from(window).into());
        }
        spec.insert("cool_down".into(), duration(breaker.cool_down));
        spec.insert("probes".into(), i64::from(breaker.half_open_probes).into());
        table.insert("breaker".into(), toml::Value::Table(spec));
    }
    if let Some(bulkhead) = &policy.bulkhead {
        let mut spec = toml::Table::new();
        let count = |count: usize| toml::Value::Integer(i64::try_from(count).unwrap_or(i64::MAX));
        spec.insert("max_in_flight".into(), count(bulkhead.max_in_flight));
        spec.insert("max_queue".into(), count(bulkhead.max_queue));
        table.insert("bulkhead".into(), toml::Value::Table(spec));
    }
    table
}
