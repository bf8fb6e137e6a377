//! Limits on input, output, memory and fuel; and the stats a call reports.

use serde_json::{Value, json};
use xcs::graph::{Graph, Node, Operators, RunOptions, Source};
use xcs::{ErrorKind, Host, Limits};

use crate::fixtures;
use crate::util::{assert_healthy, expect_kind, host, load, load_wat, uncached_host};

#[tokio::test]
async fn a_million_element_input_under_default_limits() {
    let sum = load(&host(), xcs_tests::SUM).await;
    let xs: Vec<i64> = (0..1_000_000).collect();
    let output = sum
        .call(&json!({ "xs": xs }), &Limits::default())
        .await
        .unwrap();
    assert_eq!(output, json!(499_999_500_000i64));
}

#[tokio::test]
async fn input_over_the_limit_is_refused_before_the_guest_runs() {
    let host = host();
    let operator = load_wat(&host, &fixtures::traps_when_run()).await.unwrap();
    let bytes: Vec<u8> = vec![7; 2000];
    // Under the limit the guest runs (and this fixture traps at once)...
    expect_kind(
        operator.call(&json!([bytes]), &Limits::default()).await,
        ErrorKind::Trap,
    );
    // ...over it, the call is refused without running the guest.
    let limits = Limits::default().max_input_bytes(1000);
    let error = expect_kind(
        operator.call(&json!([bytes]), &limits).await,
        ErrorKind::Validation,
    );
    match error {
        xcs::Error::InputTooLarge { size, limit, .. } => assert_eq!((size, limit), (1001, 1000)),
        other => panic!("{other:?}"),
    }
    assert_healthy(&host).await;
}

#[tokio::test]
async fn output_over_the_limit_is_refused() {
    let upper = load(&host(), xcs_tests::UPPER).await;
    let limits = Limits::default().max_output_bytes(100);
    let error = expect_kind(
        upper.call(&json!(["x".repeat(200)]), &limits).await,
        ErrorKind::Memory,
    );
    assert!(
        error
            .to_string()
            .contains("output of 208 bytes refused: the limit is 100 bytes"),
        "{error}"
    );
    assert_eq!(
        upper.call(&json!(["x".repeat(50)]), &limits).await.unwrap(),
        json!("X".repeat(50))
    );
}

#[tokio::test]
async fn a_memory_cap_below_what_a_normal_call_needs() {
    let sum = load(&host(), xcs_tests::SUM).await;
    let xs: Vec<i64> = (0..1_000_000).collect();
    let limits = Limits::default().max_memory_bytes(4 << 20);
    expect_kind(
        sum.call(&json!({ "xs": xs }), &limits).await,
        ErrorKind::Memory,
    );
}

#[tokio::test]
async fn stats_report_fuel_and_memory() {
    let noop = load(&uncached_host(), xcs_tests::NOOP).await;
    let output = noop
        .call_with_stats(&Value::Null, &Limits::default().fuel(Some(1_000_000)))
        .await
        .unwrap();
    let fuel = output.stats.fuel_consumed.expect("the host consumes fuel");
    assert!(fuel > 0 && fuel < 1_000_000, "{fuel}");
    assert!(
        output.stats.peak_memory_bytes >= 64 << 10,
        "at least one wasm page"
    );
    assert_eq!(output.stats.log_messages_dropped, 0);
}

#[tokio::test]
async fn a_fuel_budget_needs_a_host_that_consumes_fuel() {
    let host = Host::builder().consume_fuel(false).build().unwrap();
    let noop = load(&host, xcs_tests::NOOP).await;
    expect_kind(
        noop.call(&Value::Null, &Limits::default().fuel(Some(10)))
            .await,
        ErrorKind::Config,
    );
    let output = noop
        .call_with_stats(&Value::Null, &Limits::default())
        .await
        .unwrap();
    assert_eq!(output.stats.fuel_consumed, None);
}

/// A timeout of `Duration::MAX` (a user's "no limit") is capped at
/// `MAX_DURATION` rather than overflowing the clock when the deadline is
/// computed, for a call and for a graph run.
#[tokio::test]
async fn an_endless_timeout_is_capped_not_a_panic() {
    let limits = Limits::default().timeout(std::time::Duration::MAX);
    assert_eq!(limits, Limits::default().timeout(xcs::MAX_DURATION));
    let upper = load(&host(), xcs_tests::UPPER).await;
    assert_eq!(
        upper.call(&json!(["hi"]), &limits).await.unwrap(),
        json!("HI")
    );
    let graph = Graph::new()
        .node(Node::new("up", "upper").arg("text", Source::literal(json!("a"))))
        .output("up", Source::node("up"));
    let plan = graph.check(&Operators::new().with(upper)).unwrap();
    let options = RunOptions::default().timeout(std::time::Duration::MAX);
    let outputs = plan.run(&json!({}), &options).await.into_result().unwrap();
    assert_eq!(outputs["up"], json!("A"));
}

/// Limits that come from the wire go through the builders: a timeout past
/// `MAX_DURATION` is capped, as `Limits::timeout` caps it.
#[test]
fn limits_from_the_wire_keep_their_caps() {
    let mut wire = serde_json::to_value(Limits::default()).unwrap();
    wire["timeout"] = serde_json::json!({ "secs": u64::MAX, "nanos": 0 });
    let limits: Limits = serde_json::from_value(wire).unwrap();
    assert_eq!(limits, Limits::default().timeout(std::time::Duration::MAX));
    assert_eq!(limits, Limits::default().timeout(xcs::MAX_DURATION));
}
