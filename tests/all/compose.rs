//! Composite operators: dry traces (no callee runs, no capability is
//! reached), staged runs, merging of identical calls, the bounds on depth
//! and calls, typed errors at the call site, and the trace cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use serde_json::json;
use xcs::graph::{
    COMPOSITE_OUTPUT, ComposeOptions, Composite, Graph, NodeStatus, Operators, RunOptions, Source,
    StopReason, Stopped,
};
use xcs::{Capability, ErrorKind, Host};
use xcs_tests::latency::{self, InFlight};

use crate::util::{expect_kind, load};

/// Every operator the example composites call, and the composites, on a
/// host granting the latency capability (its calls counted in flight);
/// graph nodes run at most `bound` at once.
async fn composites(bound: usize) -> (Host, Operators, Arc<InFlight>) {
    let (latency, in_flight) = latency::capability();
    let host = Host::builder()
        .grant(latency)
        .max_concurrency(bound)
        .build()
        .expect("host builds");
    let operators = operators_on(&host).await;
    (host, operators, in_flight)
}

async fn operators_on(host: &Host) -> Operators {
    let mut operators = Operators::new();
    for path in [
        xcs_tests::GUESS,
        xcs_tests::MOST_COMMON,
        xcs_tests::WORD_COUNT,
        xcs_tests::UPPER,
        xcs_tests::SORT,
        xcs_tests::STATS,
        xcs_tests::WAIT,
        xcs_tests::ENSEMBLE,
        xcs_tests::REFINE,
        xcs_tests::RECURSE,
        xcs_tests::PIPELINE,
        xcs_tests::TWICE,
        xcs_tests::SPY,
    ] {
        let operator = load(host, path).await;
        operators.insert(operator.name().to_owned(), operator);
    }
    operators
}

fn composite(operators: &Operators, name: &str) -> Composite {
    let operator = operators.get(name).expect("a composite").clone();
    Composite::new(operator, operators.clone()).expect("a composite")
}

/// A capability that counts its calls (and sleeps no time).
fn counting_latency() -> (Capability, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let capability = Capability::new(latency::INTERFACE).func("sleep", {
        let calls = calls.clone();
        move |(_ms,): (u32,)| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    (capability, calls)
}

#[tokio::test]
async fn a_dry_trace_of_ensemble_is_its_graph_and_runs_nothing() {
    let (host, operators, in_flight) = composites(4).await;
    let ensemble = composite(&operators, "ensemble");
    assert!(ensemble.operator().is_composite());
    let trace = ensemble
        .trace(&json!({"text": "a b a", "n": 5, "wait-ms": 50}))
        .await
        .expect("traces");
    assert!(trace.is_complete(), "{:?}", trace.stopped);
    assert_eq!((trace.calls, trace.merged), (6, 0));
    let nodes = trace.graph.nodes();
    assert_eq!(nodes.len(), 6, "5 guesses and the vote");
    let guesses: Vec<&str> = nodes
        .iter()
        .filter(|node| node.operator() == "guess")
        .map(|node| node.id())
        .collect();
    assert_eq!(
        guesses,
        ["guess#1", "guess#2", "guess#3", "guess#4", "guess#5"]
    );
    let vote = &nodes[5];
    assert_eq!(vote.id(), "most-common#6");
    let plan = trace
        .graph
        .check(&operators)
        .expect("the traced graph checks");
    let dot = plan.to_dot(None);
    for guess in &guesses {
        assert!(
            dot.contains(&format!("\"{guess}\" -> \"most-common#6\"")),
            "{dot}"
        );
        for other in &guesses {
            assert!(
                !dot.contains(&format!("\"{guess}\" -> \"{other}\"")),
                "{dot}"
            );
        }
    }
    assert_eq!(in_flight.peak(), 0, "no guess ran: none slept");
    let metrics = host.metrics();
    assert!(
        metrics
            .operators
            .get("guess")
            .is_none_or(|guess| guess.calls == 0),
        "no guess was called: {metrics:?}"
    );
    assert_eq!(metrics.operators["ensemble"].traces, 1);
    assert_eq!(
        trace.graph.nodes()[5].args(),
        &[(
            "votes".to_owned(),
            Source::list(guesses.iter().map(|guess| Source::node(*guess)))
        )]
    );
}

#[tokio::test]
async fn running_ensemble_votes_with_the_guesses_in_parallel() {
    let (_host, operators, in_flight) = composites(3).await;
    let ensemble = composite(&operators, "ensemble");
    let report = ensemble
        .run(
            &json!({"text": "a b a", "n": 5, "wait-ms": 30}),
            &RunOptions::default(),
        )
        .await;
    let trace = report.trace.clone().expect("a trace report");
    assert!(trace.complete && !trace.cached);
    let outputs = report.into_result().expect("runs");
    assert_eq!(
        outputs[COMPOSITE_OUTPUT],
        json!("a"),
        "a, b, a, a, b: a wins"
    );
    assert_eq!(in_flight.peak(), 3, "min(5 guesses, bound 3) at once");
}

#[tokio::test]
async fn refine_stops_its_trace_at_the_force_and_runs_staged() {
    let (_host, operators, _) = composites(2).await;
    let refine = composite(&operators, "refine");
    let trace = refine
        .trace(&json!({"text": "one two three", "threshold": 2}))
        .await
        .expect("traces");
    let stop = trace.stopped.clone().expect("stopped at the force");
    assert_eq!(
        stop.reason,
        StopReason::Forced {
            node: "word-count#1".into()
        }
    );
    assert_eq!((stop.composite.as_str(), stop.calls), ("refine", 1));
    assert_eq!(trace.graph.nodes().len(), 1, "the graph up to the force");

    for (input, expected) in [
        (
            json!({"text": "one two three", "threshold": 2}),
            json!("ONE TWO THREE"),
        ),
        (json!({"text": "b a b", "threshold": 5}), json!("b")),
    ] {
        let report = refine.run(&input, &RunOptions::default()).await;
        let trace = report.trace.clone().expect("a trace report");
        assert!(!trace.complete, "staged");
        assert_eq!(trace.forced, 1);
        assert!(trace.stopped.is_some(), "the report says why");
        let outputs = report.into_result().expect("runs");
        assert_eq!(outputs[COMPOSITE_OUTPUT], expected, "{input}");
    }

    let strict = Composite::with_options(
        refine.operator().clone(),
        operators.clone(),
        ComposeOptions::default().strict(true),
    )
    .expect("a composite");
    let report = strict
        .run(
            &json!({"text": "x", "threshold": 1}),
            &RunOptions::default(),
        )
        .await;
    let error = expect_kind(report.into_result(), ErrorKind::Analysis);
    assert!(
        error
            .to_string()
            .contains("forced the value of `word-count#1`"),
        "{error}"
    );
}

#[tokio::test]
async fn identical_deterministic_calls_run_once_and_others_do_not() {
    let (counting, calls) = counting_latency();
    let host = Host::builder().grant(counting).build().unwrap();
    let operators = operators_on(&host).await;
    let twice = composite(&operators, "twice");
    let trace = twice.trace(&json!({"ms": 1})).await.expect("traces");
    assert_eq!((trace.calls, trace.merged), (4, 1));
    assert_eq!(trace.graph.nodes().len(), 3, "one guess, two waits");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a trace reaches no capability"
    );
    let outputs = twice
        .run(&json!({"ms": 1}), &RunOptions::default())
        .await
        .into_result()
        .expect("runs");
    assert_eq!(outputs[COMPOSITE_OUTPUT], json!([1, 1]));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the guess once, each wait");
}

#[tokio::test]
async fn recursion_meets_max_depth_cleanly() {
    let (_host, operators, _) = composites(2).await;
    let recurse = composite(&operators, "recurse");
    let trace = recurse.trace(&json!([3])).await.expect("shallow enough");
    assert!(trace.is_complete());
    assert_eq!(trace.graph.nodes().len(), 1, "only the final word count");
    assert_eq!(
        trace.graph.nodes()[0].id(),
        "recurse#1/recurse#1/recurse#1/word-count#1"
    );
    let outputs = recurse
        .run(&json!([3]), &RunOptions::default())
        .await
        .into_result()
        .expect("runs");
    assert_eq!(outputs[COMPOSITE_OUTPUT], json!(0));

    let error = recurse.trace(&json!([100])).await.expect_err("too deep");
    assert_eq!(error.kind(), ErrorKind::Analysis, "{error}");
    let message = error.to_string();
    assert!(message.contains("max_depth (16)"), "{message}");
    assert!(message.contains("recurse → recurse"), "{message}");
}

#[tokio::test]
async fn max_calls_holds() {
    let (_host, operators, _) = composites(2).await;
    let ensemble = Composite::with_options(
        operators.get("ensemble").unwrap().clone(),
        operators.clone(),
        ComposeOptions::default().max_calls(10),
    )
    .unwrap();
    let error = ensemble
        .trace(&json!({"text": "a", "n": 50, "wait-ms": 0}))
        .await
        .expect_err("too many calls");
    assert_eq!(error.kind(), ErrorKind::Analysis, "{error}");
    assert!(error.to_string().contains("max_calls (10)"), "{error}");
}

#[tokio::test]
async fn a_composite_that_imports_an_ungranted_capability_is_refused_at_load() {
    let host = Host::builder().build().unwrap();
    let error = host.load(xcs_tests::SPY).await.expect_err("not granted");
    assert_eq!(error.kind(), ErrorKind::Capability, "{error}");
}

#[tokio::test]
async fn a_capability_call_stops_a_trace_and_says_so() {
    let (counting, calls) = counting_latency();
    let host = Host::builder().grant(counting).build().unwrap();
    let operators = operators_on(&host).await;
    let spy = composite(&operators, "spy");
    let trace = spy
        .trace(&json!({"text": "hi", "ms": 1}))
        .await
        .expect("traces");
    let stop = trace.stopped.expect("stopped");
    assert_eq!(
        stop.reason,
        StopReason::Capability {
            function: format!("{}#sleep", latency::INTERFACE)
        }
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the capability was not reached"
    );
    let outputs = spy
        .run(&json!({"text": "hi", "ms": 1}), &RunOptions::default())
        .await
        .into_result()
        .expect("a run reaches it");
    assert_eq!(outputs[COMPOSITE_OUTPUT], json!("HI"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_operators_and_mistyped_edges_are_errors_at_the_call_site() {
    let (host, operators, _) = composites(2).await;
    let mut without_vote = Operators::new();
    for key in ["guess", "ensemble"] {
        without_vote.insert(key, operators.get(key).unwrap().clone());
    }
    let ensemble =
        Composite::new(operators.get("ensemble").unwrap().clone(), without_vote).unwrap();
    let error = ensemble
        .trace(&json!({"text": "a", "n": 2, "wait-ms": 0}))
        .await
        .expect_err("no vote");
    assert_eq!(error.kind(), ErrorKind::Graph, "{error}");
    assert!(
        error
            .to_string()
            .contains("node `most-common#3`: call 3 of `ensemble`: unknown operator `most-common`"),
        "{error}"
    );

    // `word-count` replaced by `upper`: the counts are strings, which
    // cannot feed `stats`.
    let mut mistyped = operators.clone();
    mistyped.insert("word-count", load(&host, xcs_tests::UPPER).await);
    let pipeline = Composite::new(operators.get("pipeline").unwrap().clone(), mistyped).unwrap();
    let error = pipeline
        .trace(&json!({"documents": ["a b", "c"]}))
        .await
        .expect_err("mistyped");
    assert_eq!(error.kind(), ErrorKind::Graph, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("node `stats#3`: call 3 of `pipeline`: argument `xs`")
            && message.contains("list<string>, which cannot feed list<f64>"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_callee_fails_the_run_and_is_named() {
    let (_host, operators, _) = composites(2).await;
    let pipeline = composite(&operators, "pipeline");
    let report = pipeline
        .run(&json!({"documents": []}), &RunOptions::default())
        .await;
    let error = expect_kind(report.into_result(), ErrorKind::Operator);
    assert!(
        error.to_string().starts_with("node `stats#3`: stats:"),
        "{error}"
    );

    let ensemble = composite(&operators, "ensemble");
    let report = ensemble
        .run(
            &json!({"text": "", "n": 3, "wait-ms": 0}),
            &RunOptions::default(),
        )
        .await;
    assert!(
        report
            .nodes
            .iter()
            .any(|node| node.status == NodeStatus::Failed && node.operator == "guess"),
        "{:?}",
        report.nodes
    );
    let error = expect_kind(report.into_result(), ErrorKind::Operator);
    assert!(
        error.to_string().contains("no words to guess from"),
        "{error}"
    );
}

#[tokio::test]
async fn pipeline_is_a_chain_a_fan_out_and_a_join() {
    let (_host, operators, _) = composites(2).await;
    let pipeline = composite(&operators, "pipeline");
    let trace = pipeline
        .trace(&json!({"documents": ["b c d", "a"]}))
        .await
        .expect("traces");
    let shapes: Vec<(&str, Option<&str>)> = trace
        .graph
        .nodes()
        .iter()
        .map(|node| (node.operator(), node.map_param()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("sort", None),
            ("word-count", Some("text")),
            ("stats", None)
        ]
    );
    let outputs = pipeline
        .run(
            &json!({"documents": ["b c d", "a"]}),
            &RunOptions::default(),
        )
        .await
        .into_result()
        .expect("runs");
    assert_eq!(
        outputs[COMPOSITE_OUTPUT],
        json!({"count": 2, "mean": 2.0, "min": 1.0, "max": 3.0})
    );
}

#[tokio::test]
async fn traces_are_cached_by_input() {
    let (host, operators, _) = composites(2).await;
    let ensemble = composite(&operators, "ensemble");
    let input = json!({"text": "x y", "n": 2, "wait-ms": 0});
    for _ in 0..2 {
        let report = ensemble.run(&input, &RunOptions::default()).await;
        report.into_result().expect("runs");
    }
    let metrics = host.metrics().operators["ensemble"].clone();
    assert_eq!(
        (metrics.traces, metrics.trace_hits, metrics.trace_misses),
        (1, 1, 1)
    );
    let other = json!({"text": "x y", "n": 3, "wait-ms": 0});
    let report = ensemble.run(&other, &RunOptions::default()).await;
    assert!(!report.trace.as_ref().unwrap().cached);
    let metrics = host.metrics().operators["ensemble"].clone();
    assert_eq!(
        (metrics.traces, metrics.trace_hits, metrics.trace_misses),
        (2, 1, 2)
    );
    assert_eq!(ensemble.cached_traces(), 2);
}

/// A composite with grants (its code may read a granted file to decide
/// what to call) is traced afresh on every run: no trace is kept.
#[tokio::test]
async fn composites_with_grants_are_traced_every_run() {
    let (latency, _) = latency::capability();
    let host = Host::builder()
        .grant(latency)
        .grants_for("pipeline", xcs::Grants::new().env_value("MODE", "x"))
        .build()
        .expect("host builds");
    let operators = operators_on(&host).await;
    let pipeline = composite(&operators, "pipeline");
    let input = json!({"documents": ["b c d", "a"]});
    for _ in 0..2 {
        let report = pipeline.run(&input, &RunOptions::default()).await;
        assert!(!report.trace.as_ref().expect("traced").cached);
        report.into_result().expect("runs");
    }
    let metrics = host.metrics().operators["pipeline"].clone();
    assert_eq!((metrics.traces, metrics.trace_hits), (2, 0));
    assert_eq!(pipeline.cached_traces(), 0);
}

/// A composite can be a node of a graph file: it runs there (staged), its
/// calls joining the graph; with `keep_going` a failure elsewhere does not
/// stop it.
#[tokio::test]
async fn a_composite_node_in_a_graph_runs_and_keep_going_holds() {
    let (host, mut operators, _) = composites(2).await;
    operators.insert("factorial", load(&host, xcs_tests::FACTORIAL).await);
    let graph = Graph::from_toml(
        r#"
        [[node]]
        id = "boom"
        operator = "factorial"
        args = { n = 25 }

        [[node]]
        id = "pipe"
        operator = "pipeline"
        args = { documents = ["a b", "c"] }

        [outputs]
        stats = "@pipe"
        "#,
    )
    .unwrap();
    let plan = graph.check(&operators).unwrap();
    let report = plan
        .run(&Value::Null, &RunOptions::default().keep_going(true))
        .await;
    assert_eq!(report.node("boom").unwrap().status, NodeStatus::Failed);
    assert_eq!(report.node("pipe").unwrap().status, NodeStatus::Ok);
    for recorded in ["pipe/sort#1", "pipe/word-count#2", "pipe/stats#3"] {
        assert_eq!(
            report.node(recorded).map(|node| node.status),
            Some(NodeStatus::Ok),
            "{recorded}: {:?}",
            report.nodes
        );
    }
    assert_eq!(
        report.graph.as_ref().map(|graph| graph.nodes().len()),
        Some(5)
    );
    assert_eq!(report.trace.as_ref().map(|trace| trace.calls), Some(3));
    assert_eq!(
        report.outputs["stats"],
        json!({"count": 2, "mean": 1.5, "min": 1.0, "max": 2.0})
    );
    expect_kind(report.into_result(), ErrorKind::Operator);
}

/// Without `keep_going`, a failure cancels a composite that is still
/// running, its sandbox included: the pool slot it held is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cancels_a_running_composite_and_its_sandbox() {
    let (latency, in_flight) = latency::capability();
    let host = Host::builder()
        .grant(latency)
        .max_concurrent_instances(3)
        .build()
        .unwrap();
    let operators = operators_on(&host).await;
    // `boom` fails after 200 ms (a guess with no words), by which time
    // `slow` sleeps in its sandbox, for a minute.
    let graph = Graph::from_toml(
        r#"
        [[node]]
        id = "boom"
        operator = "guess"
        args = { text = "", variant = 0, wait-ms = 200 }

        [[node]]
        id = "slow"
        operator = "spy"
        args = { text = "late", ms = 60000 }
        "#,
    )
    .unwrap();
    let plan = graph.check(&operators).unwrap();
    let report = plan.run(&Value::Null, &RunOptions::default()).await;
    assert_eq!(in_flight.peak(), 2, "both slept at once");
    let slow = report.node("slow").unwrap();
    assert_eq!(slow.status, NodeStatus::Cancelled);
    assert_eq!(
        slow.stopped,
        Some(Stopped::FailedFirst {
            node: "boom".into()
        })
    );
    let error = expect_kind(report.into_result(), ErrorKind::Operator);
    assert!(
        error.to_string().contains("no words to guess from"),
        "{error}"
    );
    // The three pool slots are free: three calls at once get one each.
    let upper = operators.get("upper").unwrap().clone();
    let limits = xcs::Limits::default().timeout(std::time::Duration::from_secs(5));
    let inputs = [json!(["a"]), json!(["b"]), json!(["c"])];
    let (a, b, c) = tokio::join!(
        upper.call(&inputs[0], &limits),
        upper.call(&inputs[1], &limits),
        upper.call(&inputs[2], &limits)
    );
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (json!("A"), json!("B"), json!("C"))
    );
}

/// Hostile composites that make the host keep things (gathers doubling or
/// nesting, calls, deferreds or argument bytes without end) are refused
/// with an `analysis` error; the host stays healthy.
#[tokio::test]
async fn what_a_composite_makes_the_host_keep_is_bounded() {
    let (host, mut operators, _) = composites(2).await;
    let hoard = load(&host, xcs_tests::HOARD).await;
    operators.insert("hoard", hoard);
    let hoard = composite(&operators, "hoard");
    for (mode, expected) in [
        ("double", "references"),
        ("nest", "gathers nest deeper than 32"),
        ("calls", "max_calls (10000)"),
        ("handles", "deferred values"),
        ("bytes", "max_recorded_bytes"),
    ] {
        let error = hoard.trace(&json!([mode])).await.expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Analysis, "{mode}: {error}");
        assert!(error.to_string().contains(expected), "{mode}: {error}");
    }
    crate::util::assert_healthy(&host).await;
}

/// A graph file may not map a composite, set a policy for one, or map
/// over a parameter it does not bind.
#[tokio::test]
async fn the_graph_check_refuses_what_cannot_apply_to_composites() {
    let (host, mut operators, _) = composites(2).await;
    operators.insert("factorial", load(&host, xcs_tests::FACTORIAL).await);
    let graph = Graph::from_toml(
        r#"
        [[node]]
        id = "each"
        operator = "refine"
        map = "text"
        args = { text = ["a", "b"], threshold = 1 }

        [[node]]
        id = "unbound"
        operator = "most-common"
        map = "votes"

        [policy.refine]
        retry = { attempts = 2 }
        "#,
    )
    .unwrap();
    let error = graph.check(&operators).expect_err("refused");
    let message = error.to_string();
    for expected in [
        "node `each`: `refine` is a composite: a map node cannot call it",
        "node `unbound`: maps over `votes`, which is not bound",
        "a policy names `refine`, a composite",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
}
