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
