//! Chaos (the seed's "Testing for Robustness"): flaky operators under
//! retries, and a concurrent mix of every fault.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use xcs::policy::{Policy, Retry};
use xcs::{ErrorKind, Host, Limits};

use crate::util::load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_at_30_percent_with_3_attempts_succeeds_at_least_97_percent() {
    let retry = Retry::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(1))
        .jitter(0.0);
    let host = Host::builder()
        .policy("flaky", Policy::new().retry(retry))
        .default_policy(Policy::new().cache(false))
        .build()
        .unwrap();
    let flaky = load(&host, xcs_tests::FLAKY).await;
    let mut tasks = tokio::task::JoinSet::new();
    for key in 0..1000u64 {
        let flaky = flaky.clone();
        tasks.spawn(async move {
            flaky
                .call(
                    &json!({"key": key, "failure-percent": 30}),
                    &Limits::default(),
                )
                .await
        });
    }
    let mut succeeded = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(_) => succeeded += 1,
            Err(error) => assert!(error.is_retryable(), "only flaky failures: {error}"),
        }
    }
    let metrics = host.metrics().operators["flaky"].clone();
    println!(
        "flaky: {succeeded}/1000 succeeded, {} retries",
        metrics.retries
    );
    assert!(succeeded >= 970, "{succeeded} of 1000 succeeded");
    assert_eq!(metrics.calls, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_mix_of_every_fault_never_hurts_the_host() {
    let retry = Retry::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(1));
    let host = Host::builder()
        .policy("flaky", Policy::new().retry(retry))
        .build()
        .unwrap();
    let mut operators = BTreeMap::new();
    for path in [
        xcs_tests::SPIN,
        xcs_tests::HOG,
        xcs_tests::DEEP,
        xcs_tests::PANIC,
        xcs_tests::FLAKY,
        xcs_tests::UPPER,
        xcs_tests::SUM,
    ] {
        let operator = load(&host, path).await;
        operators.insert(operator.name().to_owned(), operator);
    }
    // Runaway guests are stopped by fuel (fast and deterministic) with the
    // deadline behind it; hogs by a small memory cap. The deadline counts
    // from the call, waits for a turn included, and 2,000 calls take turns
    // on two threads: it is far enough that only fuel can end a spin.
    let limits = Limits::default()
        .fuel(Some(20_000_000))
        .timeout(Duration::from_secs(60))
        .max_memory_bytes(16 << 20);
    let names: Vec<String> = operators.keys().cloned().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..2000usize {
        let name = names[n % names.len()].clone();
        let operator = operators[&name].clone();
        let limits = limits.clone();
        tasks.spawn(async move {
            let input = match name.as_str() {
                "flaky" => json!({"key": n, "failure-percent": 30}),
                "upper" => json!([format!("call {n}")]),
                "sum" => json!([[n, 1]]),
                _ => Value::Null,
            };
            let result = operator.call(&input, &limits).await;
            (name, n, result)
        });
    }
    let mut outcomes: BTreeMap<(String, String), u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, n, result) = joined.expect("no call panics the host");
        let outcome = match &result {
            Ok(value) => {
                match name.as_str() {
                    "upper" => assert_eq!(value, &json!(format!("CALL {n}"))),
                    "sum" => assert_eq!(value, &json!(n + 1)),
                    "flaky" => assert_eq!(value, &json!(n)),
                    other => panic!("{other} cannot succeed"),
                }
                "ok".to_owned()
            }
            Err(error) => {
                let expected = match name.as_str() {
                    "spin" => ErrorKind::Fuel,
                    "hog" => ErrorKind::Memory,
                    "deep" => ErrorKind::StackOverflow,
                    "panic" => ErrorKind::Trap,
                    "flaky" => ErrorKind::Operator,
                    other => panic!("{other} failed: {error}"),
                };
                assert_eq!(error.kind(), expected, "{name}: {error}");
                error.kind().as_str().to_owned()
            }
        };
        *outcomes.entry((name, outcome)).or_default() += 1;
    }
    // The metrics agree with what the callers saw, exactly.
    let metrics = host.metrics();
    let mut total = 0;
    for (name, operator) in &metrics.operators {
        total += operator.calls;
        assert_eq!(
            operator.outcomes.values().sum::<u64>(),
            operator.calls,
            "{name}"
        );
        for (outcome, count) in &operator.outcomes {
            assert_eq!(
                outcomes.get(&(name.clone(), outcome.clone())),
                Some(count),
                "{name} {outcome}"
            );
        }
        assert_eq!(operator.in_flight, 0, "{name}");
    }
    assert_eq!(total, 2000);
    crate::util::assert_healthy(&host).await;
}
