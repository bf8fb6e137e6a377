//! Pictures of a graph: Graphviz DOT, and a Chrome trace-event timeline
//! (opens in Perfetto or chrome://tracing) of a run.

use std::fmt::Write;

use serde_json::{Value, json};

use super::check::{Plan, Resolved};
use super::report::{NodeStatus, RunReport};

/// Quotes `text` as a DOT string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn colour(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Ok => "palegreen",
        NodeStatus::Failed => "salmon",
        NodeStatus::Skipped => "lightgrey",
        NodeStatus::Cancelled => "khaki",
    }
}

impl Plan {
    /// The graph in Graphviz DOT: nodes labelled with id and operator (and
    /// status, coloured, when `report` is given), inputs and outputs as
    /// ellipses, edges labelled with the parameter they feed.
    pub fn to_dot(&self, report: Option<&RunReport>) -> String {
        // Reports by node id: a composite's run reports more nodes than
        // its plan has, in another order.
        let reports: std::collections::HashMap<&str, &super::report::NodeReport> = report
            .into_iter()
            .flat_map(|report| &report.nodes)
            .map(|node| (node.id.as_str(), node))
            .collect();
        let mut dot = String::from(
            "digraph xcs {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];\n",
        );
        let mut inputs: Vec<&str> = self.input_types.keys().map(String::as_str).collect();
        inputs.dedup();
        for input in &inputs {
            let _ = writeln!(
                dot,
                "  {} [shape=ellipse, fillcolor=lightblue, label={}];",
                quoted(&format!("input.{input}")),
                quoted(input)
            );
        }
        for (index, node) in self.graph.nodes.iter().enumerate() {
            let mut label = format!("{}\n{}", node.id, node.operator);
            if let Some(map) = &node.map {
                let _ = write!(label, " (map over {})", map.param);
            }
            let mut fill = "white";
            if let Some(node_report) = reports.get(node.id.as_str()) {
                fill = colour(node_report.status);
                let status = serde_json::to_value(node_report.status).ok();
                let status = status.as_ref().and_then(Value::as_str).unwrap_or("?");
                match node_report.duration() {
                    Some(duration) => {
                        let _ = write!(
                            label,
                            "\n{status} in {:.1} ms",
                            duration.as_secs_f64() * 1e3
                        );
                    }
                    None => {
                        let _ = write!(label, "\n{status}");
                    }
                }
            }
            let _ = writeln!(
                dot,
                "  {} [label={}, fillcolor={fill}];",
                quoted(&node.id),
                quoted(&label)
            );
            for (param, resolved) in &self.args[index] {
                for (from, label) in self.edges(param, resolved) {
                    let _ = writeln!(
                        dot,
                        "  {} -> {} [label={}];",
                        quoted(&from),
                        quoted(&node.id),
                        quoted(&label)
                    );
                }
            }
        }
        for (name, resolved) in &self.outputs {
            let output = format!("output.{name}");
            let _ = writeln!(
                dot,
                "  {} [shape=ellipse, fillcolor=lightyellow, label={}];",
                quoted(&output),
                quoted(name)
            );
            for (from, _) in self.edges(name, resolved) {
                let _ = writeln!(dot, "  {} -> {};", quoted(&from), quoted(&output));
            }
        }
        dot.push_str("}\n");
        dot
    }

    /// The edges into parameter (or output) `param` from `resolved`: the
    /// DOT node each comes from, and its label.
    fn edges(&self, param: &str, resolved: &Resolved) -> Vec<(String, String)> {
        match resolved {
            Resolved::Input(name) => vec![(format!("input.{name}"), param.to_owned())],
            Resolved::Node { index, field } => {
                let label = match field {
                    Some(field) => format!("{field} → {param}"),
                    None => param.to_owned(),
                };
                vec![(self.graph.nodes[*index].id.clone(), label)]
            }
            Resolved::Literal(_) => Vec::new(),
            Resolved::List(items) => items
                .iter()
                .enumerate()
                .flat_map(|(position, item)| self.edges(&format!("{param}[{position}]"), item))
                .collect(),
        }
    }
}

impl RunReport {
    /// The run as Chrome trace-event JSON: one complete (`X`) event per
    /// guest call, on one track per concurrency slot, so parallelism is
    /// visible. Opens in <https://ui.perfetto.dev> or chrome://tracing.
    pub fn to_timeline(&self) -> Value {
        let mut events = vec![json!({
            "name": "process_name", "ph": "M", "pid": 1,
            "args": { "name": format!("xcs run (max concurrency {})", self.max_concurrency) },
        })];
        // The slots used (a bound of a billion has no billion tracks).
        let slots: std::collections::BTreeSet<usize> = self
            .nodes
            .iter()
            .flat_map(|node| node.spans.iter().map(|span| span.slot))
            .collect();
        for slot in slots {
            events.push(json!({
                "name": "thread_name", "ph": "M", "pid": 1, "tid": slot,
                "args": { "name": format!("slot {slot}") },
            }));
        }
        for node in &self.nodes {
            for span in &node.spans {
                let name = match span.element {
                    Some(element) => format!("{}[{element}]", node.id),
                    None => node.id.clone(),
                };
                events.push(json!({
                    "name": name,
                    "cat": node.operator,
                    "ph": "X",
                    "pid": 1,
                    "tid": span.slot,
                    "ts": span.start.as_secs_f64() * 1e6,
                    "dur": span.end.saturating_sub(span.start).as_secs_f64() * 1e6,
                    "args": { "node": node.id, "operator": node.operator, "status": node.status },
                }));
            }
        }
        json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }
}
