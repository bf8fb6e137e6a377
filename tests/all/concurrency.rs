//! One host, many concurrent calls.

use serde_json::json;
use xcs::{Host, Limits};

use crate::util::{host, load};

#[test]
fn host_and_operator_are_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Host>();
    shareable::<xcs::Operator>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_are_all_correct() {
    let upper = load(&host(), xcs_tests::UPPER).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..1000 {
        let upper = upper.clone();
        tasks.spawn(async move {
            let output = upper
                .call(&json!([format!("call {n}")]), &Limits::default())
                .await;
            (n, output)
        });
    }
    let mut seen = vec![false; 1000];
    while let Some(joined) = tasks.join_next().await {
        let (n, output) = joined.expect("the task did not panic");
        assert_eq!(
            output.expect("the call succeeded"),
            json!(format!("CALL {n}"))
        );
        seen[n] = true;
    }
    assert!(seen.iter().all(|&done| done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_pool_makes_calls_wait_not_fail() {
    let host = Host::builder().max_concurrent_instances(4).build().unwrap();
    let counter = load(&host, xcs_tests::COUNTER).await;
    let calls = (0..64).map(|_| {
        let counter = counter.clone();
        tokio::spawn(async move { counter.call(&json!([]), &Limits::default()).await })
    });
    for output in futures::future::join_all(calls).await {
        assert_eq!(output.unwrap().unwrap(), json!(1));
    }
}

/// Waiting for a sandbox slot counts against the call's deadline: with the
/// one slot taken by a waiting call, a call with a short timeout times out
/// while the other still runs, instead of waiting for the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_slot_counts_against_the_deadline() {
    let (latency, in_flight) = xcs_tests::latency::capability();
    let host = Host::builder()
        .grant(latency)
        .max_concurrent_instances(1)
        .build()
        .unwrap();
    let wait = host.load(xcs_tests::WAIT).await.unwrap();
    let upper = host.load(xcs_tests::UPPER).await.unwrap();
    let waiting = tokio::spawn(async move {
        wait.call(
            &json!([5_000]),
            &Limits::default().timeout(std::time::Duration::from_secs(10)),
        )
        .await
    });
    // The waiter is inside its sandbox once it sleeps on the capability.
    while in_flight.peak() == 0 {
        tokio::task::yield_now().await;
    }
    let short = Limits::default().timeout(std::time::Duration::from_millis(100));
    let error = upper
        .call(&json!(["waits"]), &short)
        .await
        .expect_err("no slot within the deadline");
    assert_eq!(error.kind(), xcs::ErrorKind::Timeout, "{error}");
    assert!(!waiting.is_finished(), "the waiter still holds the slot");
    waiting.abort();
}
