//! Graphs: the static check, dataflow results, the concurrency bound, the
//! graph deadline, fail-fast and keep-going, map nodes, and pictures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use xcs::graph::{Graph, Node, NodeStatus, Operators, RunOptions, Source};
use xcs::{ErrorKind, Host, Limits};
use xcs_tests::latency::{self, InFlight};

use crate::util::{expect_kind, host, load};

/// A host whose `wait` operator sleeps on an async capability that counts
/// calls in flight; graph nodes run at most `max_concurrency` at once.
async fn latency_host(max_concurrency: usize) -> (Operators, Arc<InFlight>) {
    let (latency, in_flight) = latency::capability();
    let host = Host::builder()
        .grant(latency)
        .max_concurrency(max_concurrency)
        .build()
        .expect("host builds");
    (
        operators(&host)
            .await
            .with(load(&host, xcs_tests::WAIT).await),
        in_flight,
    )
}

async fn operators(host: &Host) -> Operators {
    let mut operators = Operators::new();
    for path in [
        xcs_tests::UPPER,
        xcs_tests::WORD_COUNT,
        xcs_tests::SUM,
        xcs_tests::STATS,
        xcs_tests::FACTORIAL,
        xcs_tests::SPIN,
        xcs_tests::PANIC,
        xcs_tests::NOOP,
    ] {
        let operator = load(host, path).await;
        operators.insert(operator.name().to_owned(), operator);
    }
    operators
}

fn problems(graph: &Graph, operators: &Operators) -> Vec<String> {
    match graph.check(operators) {
        Err(xcs::Error::Graph { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected graph problems, got {other:?}"),
    }
}

fn wait_fan_out(width: usize, ms: u32) -> Graph {
    (0..width).fold(Graph::new(), |graph, n| {
        graph
            .node(Node::new(format!("w{n}"), "wait").arg("ms", Source::literal(json!(ms))))
            .output(format!("w{n}"), Source::node(format!("w{n}")))
    })
}

#[tokio::test]
async fn each_static_problem_is_reported_with_its_node() {
    let ops = operators(&host()).await;
    let single = |graph: Graph| {
        let found = problems(&graph, &ops);
        assert_eq!(found.len(), 1, "{found:?}");
        found.into_iter().next().unwrap()
    };
    let unknown = single(Graph::new().node(Node::new("a", "nope")));
    assert!(
        unknown.starts_with("node `a`: unknown operator `nope` (known: factorial,"),
        "{unknown}"
    );
    let duplicate = single(
        Graph::new()
            .node(Node::new("a", "noop"))
            .node(Node::new("a", "noop")),
    );
    assert_eq!(duplicate, "node `a`: duplicate node id");
    let dangling =
        single(Graph::new().node(Node::new("a", "upper").arg("text", Source::node("ghost"))));
    assert_eq!(
        dangling,
        "node `a`: parameter `text`: refers to `ghost`, which is not a node of the graph"
    );
    let missing = single(Graph::new().node(Node::new("a", "upper")));
    assert_eq!(missing, "node `a`: parameter `text: string` is not bound");
    let extra =
        single(Graph::new().node(Node::new("a", "noop").arg("x", Source::literal(json!(1)))));
    assert_eq!(
        extra,
        "node `a`: `noop` has no parameter `x` (parameters: none)"
    );
    let literal =
        single(Graph::new().node(Node::new("a", "factorial").arg("n", Source::literal(json!(-1)))));
    assert!(
        literal.starts_with("node `a`: parameter `n`: literal -1 does not fit: $: expected u64"),
        "{literal}"
    );
    let edge = single(
        Graph::new()
            .node(Node::new("a", "upper").arg("text", Source::literal(json!("x"))))
            .node(Node::new("b", "factorial").arg("n", Source::node("a"))),
    );
    assert_eq!(
        edge,
        "node `b`: parameter `n`: `@a` is string, which cannot feed u64"
    );
    let field = single(
        Graph::new()
            .node(Node::new("s", "stats").arg("xs", Source::literal(json!([1.0]))))
            .node(Node::new("f", "factorial").arg("n", Source::field("s", "median"))),
    );
    assert_eq!(
        field,
        "node `f`: parameter `n`: node `s` has no field `median` (fields: count, mean, min, max)"
    );
    let cycle = single(
        Graph::new()
            .node(Node::new("a", "upper").arg("text", Source::node("c")))
            .node(Node::new("b", "upper").arg("text", Source::node("a")))
            .node(Node::new("c", "upper").arg("text", Source::node("b"))),
    );
    assert!(
        [
            "cycle: a → b → c → a",
            "cycle: b → c → a → b",
            "cycle: c → a → b → c"
        ]
        .contains(&cycle.as_str()),
        "{cycle}"
    );
}

#[tokio::test]
async fn several_problems_are_reported_together() {
    let ops = operators(&host()).await;
    let graph = Graph::new()
        .node(Node::new("a", "nope"))
        .node(Node::new("b", "upper"))
        .node(Node::new("b", "noop"))
        .node(Node::new("c", "factorial").arg("n", Source::literal(json!("five"))))
        .output("out", Source::node("missing"));
    let error = graph.check(&ops).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Graph);
    assert!(
        error
            .to_string()
            .starts_with("the graph has 5 problems\n  - node `a`: unknown operator"),
        "{error}"
    );
    assert_eq!(problems(&graph, &ops).len(), 5);
}

#[tokio::test]
async fn dataflow_results_with_map_fields_and_widening() {
    let ops = operators(&host()).await;
    let graph = Graph::new()
        .node(
            Node::new("counts", "word-count")
                .arg("text", Source::input("docs"))
                .map_over("text", Some(2)),
        )
        .node(Node::new("summary", "stats").arg("xs", Source::node("counts")))
        .node(Node::new("loud", "upper").arg("text", Source::input("title")))
        .output("counts", Source::node("counts"))
        .output("max", Source::field("summary", "max"))
        .output("loud", Source::node("loud"));
    let plan = graph.check(&ops).unwrap();
    assert_eq!(
        plan.inputs()
            .get("docs")
            .map(ToString::to_string)
            .as_deref(),
        Some("list<string>")
    );
    let report = plan
        .run(
            &json!({"docs": ["a b c", "d", "e f"], "title": "hi"}),
            &RunOptions::default(),
        )
        .await;
    assert!(
        report
            .nodes
            .iter()
            .all(|node| node.status == NodeStatus::Ok),
        "{report:?}"
    );
    assert_eq!(
        report.node("counts").unwrap().attempts,
        3,
        "one call per element"
    );
    let outputs = report.into_result().unwrap();
    assert_eq!(
        Value::Object(outputs),
        json!({"counts": [3, 1, 2], "max": 3.0, "loud": "HI"})
    );
}

#[tokio::test]
async fn graph_inputs_are_checked_before_anything_runs() {
    let ops = operators(&host()).await;
    let plan = Graph::new()
        .node(Node::new("n", "sum").arg("xs", Source::input("xs")))
        .output("total", Source::node("n"))
        .check(&ops)
        .unwrap();
    let report = plan
        .run(&json!({"xs": [1, "2"]}), &RunOptions::default())
        .await;
    assert!(report.nodes.iter().all(|node| node.attempts == 0));
    let error = expect_kind(report.into_result(), ErrorKind::Validation);
    assert_eq!(
        error.to_string(),
        "graph: $.xs[1]: expected s64, found string \"2\""
    );
    let missing = plan.run(&json!({}), &RunOptions::default()).await;
    assert!(
        missing
            .into_result()
            .unwrap_err()
            .to_string()
            .contains("missing graph input")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_in_flight_is_min_of_width_and_max_concurrency() {
    for (width, max_concurrency) in [(8, 3), (2, 5), (6, 6)] {
        let (ops, in_flight) = latency_host(max_concurrency).await;
        let plan = wait_fan_out(width, 40).check(&ops).unwrap();
        let report = plan.run(&Value::Null, &RunOptions::default()).await;
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(
            in_flight.peak(),
            width.min(max_concurrency) as u64,
            "width {width}, bound {max_concurrency}"
        );
        let slots: std::collections::BTreeSet<usize> = report
            .nodes
            .iter()
            .flat_map(|node| node.spans.iter().map(|span| span.slot))
            .collect();
        assert!(
            slots.len() <= max_concurrency && slots.iter().all(|&slot| slot < max_concurrency),
            "{slots:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_bound_below_the_host_bound_is_honoured() {
    let (ops, in_flight) = latency_host(8).await;
    let plan = wait_fan_out(8, 30).check(&ops).unwrap();
    plan.run(&Value::Null, &RunOptions::default().max_concurrency(2))
        .await
        .into_result()
        .unwrap();
    assert_eq!(in_flight.peak(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_preserves_order_reports_the_failing_index_and_honours_its_bound() {
    let ops = operators(&host()).await;
    let plan = Graph::new()
        .node(
            Node::new("f", "factorial")
                .arg("n", Source::input("ns"))
                .map_over("n", None),
        )
        .output("f", Source::node("f"))
        .check(&ops)
        .unwrap();
    let outputs = plan
        .run(&json!({"ns": [5, 0, 3, 10]}), &RunOptions::default())
        .await
        .into_result()
        .unwrap();
    assert_eq!(outputs["f"], json!([120, 1, 6, 3_628_800]));
    let report = plan
        .run(&json!({"ns": [1, 25, 3]}), &RunOptions::default())
        .await;
    let error = expect_kind(report.into_result(), ErrorKind::Operator);
    assert!(
        matches!(error, xcs::Error::Node { ref node, element: Some(1), .. } if node == "f"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("node `f` (element 1): factorial: operator error"),
        "{error}"
    );

    let (ops, in_flight) = latency_host(8).await;
    let plan = Graph::new()
        .node(
            Node::new("waits", "wait")
                .arg("ms", Source::input("ms"))
                .map_over("ms", Some(3)),
        )
        .output("waits", Source::node("waits"))
        .check(&ops)
        .unwrap();
    let outputs = plan
        .run(&json!({"ms": vec![30; 10]}), &RunOptions::default())
        .await
        .into_result()
        .unwrap();
    assert_eq!(outputs["waits"], json!(vec![30; 10]));
    assert_eq!(in_flight.peak(), 3, "the map's own bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_deadline_interrupts_a_spinning_node_and_cancels_the_rest() {
    let ops = operators(&host()).await;
    let plan = Graph::new()
        .node(Node::new("spin", "spin"))
        .node(Node::new("after", "noop"))
        .node(Node::new("loud", "upper").arg("text", Source::literal(json!("x"))))
        .node(
            Node::new("later", "factorial")
                .arg("n", Source::literal(json!(3)))
                .arg("n", Source::literal(json!(3))),
        )
        .output("loud", Source::node("loud"));
    // (`later` binds `n` twice: fix the graph, then run it.)
    assert_eq!(
        problems(&plan, &ops),
        vec!["node `later`: parameter `n` is bound twice".to_owned()]
    );
    let report = run_spin_and_loud(&ops, RunOptions::default()).await;
    assert_eq!(report.node("spin").unwrap().status, NodeStatus::Cancelled);
    assert_eq!(
        report.node("loud").unwrap().status,
        NodeStatus::Ok,
        "an independent node still ran"
    );
    let error = expect_kind(report.into_result(), ErrorKind::Timeout);
    assert_eq!(
        error.to_string(),
        "graph timed out after 300ms; still running: spin"
    );
}

/// Runs a spinning node beside an independent `upper` under a 300 ms graph
/// deadline and no per-call limits beyond the defaults.
async fn run_spin_and_loud(ops: &Operators, options: RunOptions) -> xcs::graph::RunReport {
    let plan = Graph::new()
        .node(Node::new("spin", "spin"))
        .node(Node::new("loud", "upper").arg("text", Source::literal(json!("x"))))
        .output("loud", Source::node("loud"))
        .check(ops)
        .expect("the graph checks");
    let options = options
        .timeout(Duration::from_millis(300))
        .limits(Limits::default());
    plan.run(&Value::Null, &options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_and_keep_going_runs_what_it_can() {
    let (ops, _) = latency_host(4).await;
    let ops = ops
        .with(load(&host(), xcs_tests::PANIC).await)
        .with(load(&host(), xcs_tests::UPPER).await);
    let graph = Graph::new()
        .node(Node::new("boom", "panic"))
        .node(Node::new("downstream", "upper").arg("text", Source::node("boom")))
        .node(Node::new("slow", "wait").arg("ms", Source::literal(json!(300))))
        .output("slow", Source::node("slow"));
    // `panic` returns nothing, so `downstream` cannot take its output.
    assert_eq!(problems(&graph, &ops), vec!["node `downstream`: parameter `text`: node `boom` produces nothing (its operator returns no value)".to_owned()]);

    let graph = Graph::new()
        .node(Node::new("boom", "factorial").arg("n", Source::literal(json!(25))))
        .node(Node::new("downstream", "factorial").arg("n", Source::node("boom")))
        .node(Node::new("slow", "wait").arg("ms", Source::literal(json!(300))))
        .output("slow", Source::node("slow"));
    let ops = ops.with(load(&host(), xcs_tests::FACTORIAL).await);
    let plan = graph.check(&ops).unwrap();

    let report = plan.run(&Value::Null, &RunOptions::default()).await;
    assert_eq!(report.node("boom").unwrap().status, NodeStatus::Failed);
    assert_eq!(
        report.node("slow").unwrap().status,
        NodeStatus::Cancelled,
        "fail-fast cancels running work"
    );
    assert_eq!(
        report.node("downstream").unwrap().status,
        NodeStatus::Cancelled
    );
    let error = expect_kind(report.into_result(), ErrorKind::Operator);
    assert!(
        error
            .to_string()
            .starts_with("node `boom`: factorial: operator error [invalid-input]"),
        "{error}"
    );

    let report = plan
        .run(&Value::Null, &RunOptions::default().keep_going(true))
        .await;
    assert_eq!(report.node("slow").unwrap().status, NodeStatus::Ok);
    let downstream = report.node("downstream").unwrap();
    assert_eq!(downstream.status, NodeStatus::Skipped);
    assert_eq!(
        downstream.stopped.as_ref().map(ToString::to_string),
        Some("depends on `boom`, which failed".to_owned())
    );
    assert_eq!(report.outputs.get("slow"), Some(&json!(300)));
    expect_kind(report.into_result(), ErrorKind::Operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_node_graph_runs() {
    let ops = operators(&host()).await;
    // A chain (each output feeds the next and is then dropped) beside a wide
    // fan-out of independent nodes.
    let mut graph =
        Graph::new().node(Node::new("n0", "upper").arg("text", Source::literal(json!("a"))));
    for n in 1..5_000 {
        graph = graph.node(
            Node::new(format!("n{n}"), "upper").arg("text", Source::node(format!("n{}", n - 1))),
        );
    }
    for n in 0..5_000 {
        graph = graph.node(Node::new(format!("w{n}"), "noop"));
    }
    let plan = graph
        .output("last", Source::node("n4999"))
        .check(&ops)
        .unwrap();
    let report = plan.run(&Value::Null, &RunOptions::default()).await;
    assert_eq!(report.nodes.len(), 10_000);
    assert!(
        report
            .nodes
            .iter()
            .all(|node| node.status == NodeStatus::Ok)
    );
    assert_eq!(report.into_result().unwrap()["last"], json!("A"));
}

#[tokio::test]
async fn dot_and_timeline_parse() {
    let ops = operators(&host()).await;
    let plan = Graph::from_toml(include_str!("../../examples/pipeline.toml"))
        .unwrap()
        .check(&ops)
        .unwrap();
    let inputs: Value =
        serde_json::from_str(include_str!("../../examples/documents.json")).unwrap();
    let report = plan
        .run(&inputs, &RunOptions::default().keep_going(true))
        .await;

    let dot = plan.to_dot(Some(&report));
    let parsed = dot_parser::ast::Graph::try_from(dot.as_str())
        .unwrap_or_else(|error| panic!("{error}\n{dot}"));
    let statements = format!("{parsed:?}");
    for id in ["counts", "summary", "titles", "too-big", "after-too-big"] {
        assert!(statements.contains(id), "{id} in {dot}");
    }
    assert!(
        dot.contains("fillcolor=salmon")
            && dot.contains("fillcolor=lightgrey")
            && dot.contains("fillcolor=palegreen")
    );

    let timeline = report.to_timeline();
    let text = serde_json::to_string(&timeline).unwrap();
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    let events = reparsed["traceEvents"].as_array().unwrap();
    let calls: Vec<&Value> = events.iter().filter(|event| event["ph"] == "X").collect();
    assert_eq!(
        calls.len(),
        5 + 1 + 5 + 1,
        "map elements, stats, and the failed call"
    );
    for event in &calls {
        for field in ["name", "ts", "dur", "pid", "tid"] {
            assert!(!event[field].is_null(), "{field} in {event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_limits_override_the_run_limits() {
    let ops = operators(&host()).await;
    let plan = Graph::new()
        .node(
            Node::new("spin", "spin").limits(Limits::default().timeout(Duration::from_millis(100))),
        )
        .check(&ops)
        .unwrap();
    let report = plan
        .run(
            &Value::Null,
            &RunOptions::default().timeout(Duration::from_secs(20)),
        )
        .await;
    let spin = report.node("spin").unwrap();
    assert_eq!(spin.status, NodeStatus::Failed);
    assert_eq!(
        spin.error.as_ref().map(|error| error.kind.as_str()),
        Some("timeout")
    );
    let error = expect_kind(report.into_result(), ErrorKind::Timeout);
    assert_eq!(
        error.to_string(),
        "node `spin`: spin: timed out after 100ms"
    );
}

/// A CPU-bound guest yields at every epoch tick: on a single-threaded
/// runtime, a ticking task keeps running while the guest spins.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_does_not_starve_other_tasks() {
    let spin = load(&host(), xcs_tests::SPIN).await;
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let limits = Limits::default().timeout(Duration::from_millis(500));
    expect_kind(spin.call(&Value::Null, &limits).await, ErrorKind::Timeout);
    ticker.abort();
    // Without yielding the ticker could not run at all until the guest
    // stopped, and it is aborted before it could run after: 0 ticks. Two
    // ticks prove it ran, twice, while the guest spun (no rate asserted).
    assert!(
        ticks.load(Ordering::Relaxed) >= 2,
        "ticks while spinning: {}",
        ticks.load(Ordering::Relaxed)
    );
}

/// A panic in a node's task (here, in an embedder's capability) is not
/// swallowed: it reaches the caller of `run`, as it would a direct call's.
#[tokio::test]
async fn a_panicking_capability_in_a_node_panics_the_run_not_silently() {
    let error = run_panicking_wait(RunOptions::default()).await;
    let panic = error.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        message.contains("the embedder's capability panicked"),
        "{message}"
    );
}

/// A deterministic node's report says what its call used (it said
/// `fuel_consumed: null` and `peak_memory_bytes: 0`: the result cache's
/// path dropped the statistics).
#[tokio::test]
async fn a_deterministic_node_reports_its_fuel_and_memory() {
    let host = Host::builder().no_disk_cache().build().unwrap();
    let mut ops = Operators::new();
    ops.insert("upper", load(&host, xcs_tests::UPPER).await);
    let graph = Graph::new()
        .node(Node::new("loud", "upper").arg("text", Source::input("title")))
        .output("loud", Source::node("loud"));
    let report = graph
        .check(&ops)
        .unwrap()
        .run(&json!({ "title": "hi" }), &RunOptions::default())
        .await;
    let node = report.node("loud").unwrap();
    assert_eq!(node.status, NodeStatus::Ok, "{report:?}");
    assert!(node.fuel_consumed.is_some_and(|fuel| fuel > 0), "{node:?}");
    assert!(node.peak_memory_bytes > 0, "{node:?}");
}

/// At bound 1 the coordinator runs each single-call node itself instead of
/// spawning it (unless it imports an embedder's capability, which might
/// block): the bound, the deadline, fail-fast and a panic behave as at any
/// other bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_one_keeps_every_guarantee() {
    let one = RunOptions::default().max_concurrency(1);
    let (ops, in_flight) = latency_host(4).await;
    let plan = wait_fan_out(4, 20).check(&ops).unwrap();
    let report = plan.run(&Value::Null, &one).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(in_flight.peak(), 1, "one node at a time");
    assert!(
        report
            .nodes
            .iter()
            .flat_map(|node| &node.spans)
            .all(|span| span.slot == 0),
        "one timeline track"
    );

    // The deadline interrupts the node the coordinator is running; the
    // node waiting for the slot never starts.
    let ops = operators(&host()).await;
    let report = run_spin_and_loud(&ops, one.clone()).await;
    assert_eq!(report.node("spin").unwrap().status, NodeStatus::Cancelled);
    assert_eq!(report.node("loud").unwrap().status, NodeStatus::Cancelled);
    let error = expect_kind(report.into_result(), ErrorKind::Timeout);
    assert_eq!(
        error.to_string(),
        "graph timed out after 300ms; still running: spin"
    );

    // Fail-fast: the first failure ends the run, the rest is cancelled;
    // keep-going runs what does not depend on it.
    let ops = ops.with(load(&host(), xcs_tests::FACTORIAL).await);
    let plan = Graph::new()
        .node(Node::new("boom", "factorial").arg("n", Source::literal(json!(25))))
        .node(Node::new("downstream", "factorial").arg("n", Source::node("boom")))
        .node(Node::new("after", "upper").arg("text", Source::literal(json!("y"))))
        .output("after", Source::node("after"))
        .check(&ops)
        .unwrap();
    let report = plan.run(&Value::Null, &one).await;
    assert_eq!(report.node("boom").unwrap().status, NodeStatus::Failed);
    assert_eq!(report.node("after").unwrap().status, NodeStatus::Cancelled);
    expect_kind(report.into_result(), ErrorKind::Operator);
    let report = plan.run(&Value::Null, &one.clone().keep_going(true)).await;
    assert_eq!(
        report.node("downstream").unwrap().status,
        NodeStatus::Skipped
    );
    assert_eq!(report.outputs.get("after"), Some(&json!("Y")));

    // A panic in the node's call reaches the run's caller.
    run_panicking_wait(one).await;
}

/// Runs a one-node graph whose `wait` calls a capability that panics, in
/// a task of its own; the task's panic, which the run must not swallow.
async fn run_panicking_wait(options: RunOptions) -> tokio::task::JoinError {
    let capability = xcs::Capability::new(latency::INTERFACE).func(
        "sleep",
        |(_ms,): (u32,)| -> Result<(), xcs::BoxError> {
            panic!("the embedder's capability panicked")
        },
    );
    let host = Host::builder()
        .grant(capability)
        .build()
        .expect("a host with the capability");
    let wait = load(&host, xcs_tests::WAIT).await;
    let plan = Graph::new()
        .node(Node::new("w", "wait").arg("ms", Source::literal(json!(1))))
        .output("w", Source::node("w"))
        .check(&Operators::new().with(wait))
        .expect("the graph checks");
    let run = tokio::spawn(async move { plan.run(&Value::Null, &options).await });
    let error = run.await.expect_err("the run panicked");
    assert!(error.is_panic(), "{error}");
    error
}

/// A chain of 100,000 nodes checks and runs (nothing recurses along it),
/// at bound 1 and at the default bound; a failure at its head skips the
/// rest without recursing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_a_hundred_thousand_nodes_runs() {
    let host = host();
    let sum = load(&host, xcs_tests::SUM).await;
    let chain = |head: Value| {
        let mut graph = Graph::new().node(Node::new("n0", "sum").arg("xs", Source::literal(head)));
        for n in 1..100_000 {
            graph = graph.node(
                Node::new(format!("n{n}"), "sum")
                    .arg("xs", Source::list([Source::node(format!("n{}", n - 1))])),
            );
        }
        graph
            .output("last", Source::node("n99999"))
            .check(&Operators::new().with(sum.clone()))
            .unwrap()
    };
    let plan = chain(json!([1, 2]));
    // Bound 1 runs each node in the coordinator; bound 4 spawns tasks.
    for options in [
        RunOptions::default().max_concurrency(1),
        RunOptions::default().max_concurrency(4),
    ] {
        let report = plan.run(&Value::Null, &options).await;
        assert_eq!(report.into_result().unwrap()["last"], json!(3));
    }
    // i64::MAX + 1 overflows in the first node.
    let plan = chain(json!([i64::MAX, 1]));
    for bound in [1, 4] {
        let options = RunOptions::default()
            .max_concurrency(bound)
            .keep_going(true);
        let report = plan.run(&Value::Null, &options).await;
        assert_eq!(report.node("n0").unwrap().status, NodeStatus::Failed);
        assert_eq!(report.node("n99999").unwrap().status, NodeStatus::Skipped);
    }
}

/// A source that names one large value many times is refused from its
/// size before it is copied: a node's input past four times its input
/// limit is a `validation` error of that node; the graph's outputs past
/// four times what its nodes may produce, a `memory` error.
#[tokio::test]
async fn a_value_named_many_times_is_refused_before_it_is_copied() {
    let host = host();
    let mut operators = Operators::new();
    operators.insert("most-common", load(&host, xcs_tests::MOST_COMMON).await);
    let text = "x".repeat(10_000);
    let many = |count: usize| Source::list((0..count).map(|_| Source::input("text")));
    let limits = Limits::default()
        .max_input_bytes(1 << 20)
        .max_output_bytes(1 << 20);
    let options = RunOptions::default().limits(limits);

    // 1,000 copies of 10 KB as one node's input: 10 MB > 4 MiB.
    let graph = Graph::new()
        .node(Node::new("vote", "most-common").arg("votes", many(1000)))
        .output("winner", Source::node("vote"));
    let plan = graph.check(&operators).unwrap();
    let report = plan.run(&json!({ "text": text }), &options).await;
    let error = expect_kind(report.into_result(), ErrorKind::Validation);
    assert!(error.to_string().contains("node `vote`"), "{error}");
    // 10 copies are fine.
    let graph = Graph::new()
        .node(Node::new("vote", "most-common").arg("votes", many(10)))
        .output("winner", Source::node("vote"));
    let plan = graph.check(&operators).unwrap();
    let outputs = plan
        .run(&json!({ "text": text }), &options)
        .await
        .into_result()
        .unwrap();
    assert_eq!(outputs["winner"], json!(text));

    // The outputs: 1,000 copies of 10 KB > 4 × 1 MiB for one node.
    let graph = Graph::new()
        .node(Node::new("vote", "most-common").arg("votes", many(1)))
        .output("copies", many(1000));
    let plan = graph.check(&operators).unwrap();
    let report = plan.run(&json!({ "text": text }), &options).await;
    let error = expect_kind(report.into_result(), ErrorKind::Memory);
    assert!(error.to_string().contains("outputs"), "{error}");
}
