//! Policies on real operators: retries, the circuit breaker, the bulkhead,
//! the result cache, and the metrics that count them.

use std::time::Duration;

use serde_json::{Value, json};
use xcs::policy::{Breaker, BreakerState, Bulkhead, Policy, Retry};
use xcs::{ErrorKind, Host, Limits};

use crate::util::{expect_kind, load};

fn fresh_host(policy_for: &str, policy: Policy) -> Host {
    Host::builder()
        .policy(policy_for, policy)
        .build()
        .expect("host builds")
}

#[tokio::test]
async fn retries_retryable_failures_in_fresh_sandboxes() {
    let retry = Retry::default()
        .max_attempts(5)
        .base_delay(Duration::from_millis(1))
        .jitter(0.0);
    let host = fresh_host("flaky", Policy::new().retry(retry));
    let flaky = load(&host, xcs_tests::FLAKY).await;
    // Always failing: every attempt is made, then the last error returned.
    let error = expect_kind(
        flaky
            .call(
                &json!({"key": 1, "failure-percent": 100}),
                &Limits::default(),
            )
            .await,
        ErrorKind::Operator,
    );
    assert!(error.is_retryable());
    let metrics = host.metrics().operators["flaky"].clone();
    assert_eq!(
        (metrics.calls, metrics.retries),
        (1, 4),
        "one call, four retries"
    );
    // Each attempt has its own seed, so a 50% failure rate mostly succeeds.
    let mut succeeded = 0;
    for key in 0..20u64 {
        succeeded += u32::from(
            flaky
                .call(
                    &json!({"key": key, "failure-percent": 50}),
                    &Limits::default(),
                )
                .await
                .is_ok(),
        );
    }
    assert!(succeeded >= 18, "{succeeded} of 20");
}

#[tokio::test]
async fn non_retryable_failures_are_not_retried() {
    let host = fresh_host(
        "factorial",
        Policy::new().retry(Retry::default().max_attempts(4)),
    );
    let factorial = load(&host, xcs_tests::FACTORIAL).await;
    expect_kind(
        factorial.call(&json!([25]), &Limits::default()).await,
        ErrorKind::Operator,
    );
    // Traps are retried only when asked.
    let panic = load(&host, xcs_tests::PANIC).await;
    host.set_policy(
        "panic",
        Policy::new()
            .retry(Retry::default().max_attempts(4))
            .cache(false),
    );
    expect_kind(
        panic.call(&json!([]), &Limits::default()).await,
        ErrorKind::Trap,
    );
    let metrics = host.metrics();
    assert_eq!(metrics.operators["factorial"].retries, 0);
    assert_eq!(
        metrics.operators["panic"].retries, 0,
        "traps are not retried"
    );
    host.set_policy(
        "panic",
        Policy::new()
            .retry(
                Retry::default()
                    .max_attempts(4)
                    .base_delay(Duration::from_millis(1))
                    .on_trap(true),
            )
            .cache(false),
    );
    expect_kind(
        panic.call(&json!([]), &Limits::default()).await,
        ErrorKind::Trap,
    );
    assert_eq!(
        host.metrics().operators["panic"].retries,
        3,
        "with on_trap, every attempt is made"
    );
}

/// A timed-out attempt is retried only with `on_timeout`, and only an
/// `attempt_timeout` leaves it time to be: otherwise the attempt used up
/// the call's deadline.
#[tokio::test]
async fn timeouts_are_retried_within_an_attempt_timeout() {
    let host = Host::builder().build().unwrap();
    let spin = load(&host, xcs_tests::SPIN).await;
    let limits = Limits::default().timeout(Duration::from_secs(2));
    let bounded = Retry::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(1))
        .attempt_timeout(Duration::from_millis(50));
    let mut retries = Vec::new();
    for retry in [
        bounded.clone().on_timeout(true),
        bounded.on_timeout(false),
        Retry::default().max_attempts(3).on_timeout(true),
    ] {
        host.set_policy("spin", Policy::new().retry(retry));
        let before = host.metrics().operators["spin"].retries;
        expect_kind(spin.call(&Value::Null, &limits).await, ErrorKind::Timeout);
        retries.push(host.metrics().operators["spin"].retries - before);
    }
    assert_eq!(
        retries,
        [2, 0, 0],
        "on_timeout with attempt_timeout; without on_timeout; without attempt_timeout"
    );
}

#[tokio::test]
async fn retries_never_run_past_the_deadline() {
    // Up to 10 attempts, 50 ms doubling delays, one 300 ms deadline for
    // the whole call: after delays of 50 and 100 ms, the next (200 ms)
    // would end past the deadline, so it is not waited for.
    let retry = Retry::default()
        .max_attempts(10)
        .base_delay(Duration::from_millis(50))
        .max_delay(Duration::from_secs(10))
        .jitter(0.0);
    let host = fresh_host("flaky", Policy::new().retry(retry).cache(false));
    let flaky = load(&host, xcs_tests::FLAKY).await;
    expect_kind(
        flaky
            .call(
                &json!({"key": 1, "failure-percent": 100}),
                &Limits::default().timeout(Duration::from_millis(300)),
            )
            .await,
        ErrorKind::Operator,
    );
    let retries = host.metrics().operators["flaky"].retries;
    assert!(
        (1..=2).contains(&retries),
        "the deadline cut 9 retries down to at most 2: {retries}"
    );
}

/// On tokio's paused clock: the cool-down passes when the test says so.
#[tokio::test(start_paused = true)]
async fn the_breaker_opens_fails_fast_and_probes_after_its_cool_down() {
    let breaker = Breaker::default()
        .consecutive_failures(3)
        .cool_down(Duration::from_millis(200));
    let host = fresh_host("factorial", Policy::new().breaker(breaker).cache(false));
    let factorial = load(&host, xcs_tests::FACTORIAL).await;
    for call in 0..3 {
        if call == 2 {
            // Bad input is the caller's fault: it neither counts against the
            // operator nor resets its count of consecutive failures.
            expect_kind(
                factorial.call(&json!(["five"]), &Limits::default()).await,
                ErrorKind::Validation,
            );
            assert_eq!(factorial.breaker_state(), BreakerState::Closed);
        }
        expect_kind(
            factorial.call(&json!([25]), &Limits::default()).await,
            ErrorKind::Operator,
        );
    }
    assert_eq!(factorial.breaker_state(), BreakerState::Open);
    let error = expect_kind(
        factorial.call(&json!([5]), &Limits::default()).await,
        ErrorKind::CircuitOpen,
    );
    assert!(error.to_string().contains("circuit open"), "{error}");
    tokio::time::advance(Duration::from_millis(250)).await;
    // A probe with bad input says nothing about the operator: the breaker
    // stays half-open and the next call probes.
    expect_kind(
        factorial.call(&json!(["five"]), &Limits::default()).await,
        ErrorKind::Validation,
    );
    assert_eq!(factorial.breaker_state(), BreakerState::HalfOpen);
    assert_eq!(
        factorial
            .call(&json!([5]), &Limits::default())
            .await
            .unwrap(),
        json!(120),
        "the probe succeeds"
    );
    assert_eq!(factorial.breaker_state(), BreakerState::Closed);
    let metrics = host.metrics().operators["factorial"].clone();
    assert_eq!(
        metrics.breaker_transitions, 3,
        "closed → open → half-open → closed"
    );
    assert_eq!(metrics.outcomes.get("circuit-open"), Some(&1));
    let text = host.metrics_text();
    assert!(
        text.contains(
            r#"xcs_breaker_transitions_total{operator="factorial",from="closed",to="open"} 1"#
        ),
        "{text}"
    );
}

/// A probe whose caller gives up (its future dropped mid-call) reports
/// nothing; its slot must come back, or the breaker would stay half-open
/// and refuse every call for good. On tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_slot_back() {
    let breaker = Breaker::default()
        .consecutive_failures(1)
        .cool_down(Duration::from_millis(50))
        .half_open_probes(1);
    let host = fresh_host("spin", Policy::new().breaker(breaker).cache(false));
    let spin = load(&host, xcs_tests::SPIN).await;
    let short = Limits::default().timeout(Duration::from_millis(50));
    expect_kind(spin.call(&Value::Null, &short).await, ErrorKind::Timeout);
    assert_eq!(spin.breaker_state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(100)).await;
    // The probe would spin for 10 s; its caller gives up once it is in.
    let probe = tokio::spawn({
        let spin = spin.clone();
        async move {
            let long = Limits::default().timeout(Duration::from_secs(10));
            spin.call(&Value::Null, &long).await
        }
    });
    while spin.breaker_state() != BreakerState::HalfOpen {
        tokio::task::yield_now().await;
    }
    probe.abort();
    let cancelled = probe.await.expect_err("the probe was aborted");
    assert!(
        cancelled.is_cancelled(),
        "the probe was cancelled: {cancelled}"
    );
    assert_eq!(spin.breaker_state(), BreakerState::HalfOpen);
    // The next call is admitted as the probe (and its timeout re-opens).
    expect_kind(spin.call(&Value::Null, &short).await, ErrorKind::Timeout);
    assert_eq!(spin.breaker_state(), BreakerState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_refuses_at_once() {
    let (latency, in_flight) = xcs_tests::latency::capability();
    let bulkhead = Bulkhead::default().max_in_flight(2).max_queue(3);
    let host = Host::builder()
        .grant(latency)
        .policy("wait", Policy::new().bulkhead(bulkhead))
        .build()
        .unwrap();
    let wait = load(&host, xcs_tests::WAIT).await;
    let calls = (0..10).map(|_| {
        let wait = wait.clone();
        tokio::spawn(async move { wait.call(&json!([200]), &Limits::default()).await })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = results.iter().filter(|result| result.is_ok()).count();
    let overloaded = results
        .iter()
        .filter(|result| matches!(result, Err(xcs::Error::Overloaded { .. })))
        .count();
    assert_eq!(
        (ok, overloaded),
        (5, 5),
        "2 in flight + 3 queued run; the rest are refused"
    );
    assert_eq!(in_flight.peak(), 2, "never more than 2 guests at once");
    let metrics = host.metrics().operators["wait"].clone();
    assert_eq!(
        (metrics.in_flight, metrics.queued),
        (0, 0),
        "gauges return to zero"
    );
    assert_eq!(metrics.outcomes.get("overloaded"), Some(&5));
}

/// Waiting in the bulkhead's queue counts against the call's deadline: a
/// call that cannot get a slot in time times out instead of running late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_in_the_bulkhead_queue_counts_against_the_deadline() {
    let (latency, _) = xcs_tests::latency::capability();
    let bulkhead = Bulkhead::default().max_in_flight(1).max_queue(1);
    let host = Host::builder()
        .grant(latency)
        .policy("wait", Policy::new().bulkhead(bulkhead))
        .build()
        .unwrap();
    let wait = load(&host, xcs_tests::WAIT).await;
    let holder = tokio::spawn({
        let wait = wait.clone();
        async move { wait.call(&json!([1000]), &Limits::default()).await }
    });
    while host.metrics().operators["wait"].in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Its own work takes 1 ms, but the slot is busy for a second.
    let error = expect_kind(
        wait.call(
            &json!([1]),
            &Limits::default().timeout(Duration::from_millis(100)),
        )
        .await,
        ErrorKind::Timeout,
    );
    assert!(error.to_string().contains("timed out after"), "{error}");
    assert_eq!(holder.await.unwrap().unwrap(), json!(1000));
}

/// Identical failing calls share one execution too, but an error is never
/// cached: the callers that shared it are not counted as cache hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_failure_is_not_a_cache_hit() {
    let host = Host::builder().build().unwrap();
    let burn = load(&host, xcs_tests::BURN).await;
    let limits = Limits::default().fuel(Some(100_000_000));
    let calls = (0..20).map(|_| {
        let (burn, limits) = (burn.clone(), limits.clone());
        tokio::spawn(async move { burn.call(&json!([1_000_000_000]), &limits).await })
    });
    for joined in futures::future::join_all(calls).await {
        expect_kind(joined.unwrap(), ErrorKind::Fuel);
    }
    let metrics = host.metrics().operators["burn"].clone();
    assert_eq!(metrics.calls, 20);
    assert_eq!(
        metrics.cache_hits, 0,
        "errors are never answered from the cache"
    );
    assert!(
        metrics.cache_misses < 20,
        "some calls shared one execution: {} ran",
        metrics.cache_misses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_calls_run_once() {
    let host = Host::builder().build().unwrap();
    let burn = load(&host, xcs_tests::BURN).await;
    assert!(burn.metadata().deterministic);
    let calls = (0..100).map(|_| {
        let burn = burn.clone();
        tokio::spawn(async move {
            burn.call_with_stats(&json!([2_000_000]), &Limits::default())
                .await
        })
    });
    let outputs: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();
    assert!(
        outputs
            .windows(2)
            .all(|pair| pair[0].value == pair[1].value)
    );
    assert_eq!(
        outputs.iter().filter(|output| !output.cached).count(),
        1,
        "one execution"
    );
    let metrics = host.metrics().operators["burn"].clone();
    assert_eq!(
        (metrics.calls, metrics.cache_misses, metrics.cache_hits),
        (100, 1, 99)
    );
    // Opting out runs the guest.
    host.set_policy("burn", Policy::new().cache(false));
    let uncached = burn
        .call_with_stats(&json!([2_000_000]), &Limits::default())
        .await
        .unwrap();
    assert!(!uncached.cached && uncached.stats.fuel_consumed.is_some());
}

#[tokio::test(start_paused = true)]
async fn cached_results_expire() {
    let host = Host::builder()
        .result_cache_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let upper = load(&host, xcs_tests::UPPER).await;
    let (input, limits) = (json!(["ttl"]), Limits::default());
    let call = || upper.call_with_stats(&input, &limits);
    assert!(!call().await.unwrap().cached);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(call().await.unwrap().cached, "fresh for 60 s");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(!call().await.unwrap().cached, "expired after 60 s");
    let metrics = host.metrics().operators["upper"].clone();
    assert_eq!((metrics.cache_hits, metrics.cache_misses), (1, 2));
}

#[tokio::test]
async fn the_cache_is_bounded_by_bytes() {
    let host = Host::builder().result_cache_bytes(4_096).build().unwrap();
    let upper = load(&host, xcs_tests::UPPER).await;
    let text = "x".repeat(200);
    for n in 0..200 {
        upper
            .call(&json!([format!("{text}{n}")]), &Limits::default())
            .await
            .unwrap();
    }
    // Eviction notices are delivered by the cache's housekeeping, which runs
    // as calls go on.
    for n in 0..200 {
        if host.metrics().operators["upper"].cache_evictions > 0 {
            break;
        }
        upper
            .call(&json!([format!("again {n}")]), &Limits::default())
            .await
            .unwrap();
    }
    assert!(host.metrics().operators["upper"].cache_evictions > 0);
}

#[tokio::test]
async fn non_deterministic_operators_are_never_cached() {
    let host = Host::builder().build().unwrap();
    let entropy = load(&host, xcs_tests::ENTROPY).await;
    for _ in 0..3 {
        assert!(
            !entropy
                .call_with_stats(&Value::Null, &Limits::default())
                .await
                .unwrap()
                .cached
        );
    }
    let metrics = host.metrics().operators["entropy"].clone();
    assert_eq!(
        (metrics.calls, metrics.cache_hits, metrics.cache_misses),
        (3, 0, 0)
    );
}

#[tokio::test]
async fn metrics_match_what_happened() {
    let host = Host::builder().build().unwrap();
    let sum = load(&host, xcs_tests::SUM).await;
    sum.call(&json!([[1, 2]]), &Limits::default())
        .await
        .unwrap();
    sum.call(&json!([[1, 2]]), &Limits::default())
        .await
        .unwrap();
    expect_kind(
        sum.call(&json!([["x"]]), &Limits::default()).await,
        ErrorKind::Validation,
    );
    expect_kind(
        sum.call(&json!([[i64::MAX, 1]]), &Limits::default()).await,
        ErrorKind::Operator,
    );
    let metrics = host.metrics().operators["sum"].clone();
    assert_eq!(metrics.calls, 4);
    assert_eq!(
        metrics.outcomes,
        [
            ("ok".to_owned(), 2),
            ("operator".to_owned(), 1),
            ("validation".to_owned(), 1)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!((metrics.cache_hits, metrics.cache_misses), (1, 3));
    let text = host.metrics_text();
    for line in [
        r#"xcs_calls_total{operator="sum"} 4"#,
        r#"xcs_outcomes_total{operator="sum",outcome="ok"} 2"#,
        r#"xcs_call_duration_seconds_count{operator="sum"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    // Taking the snapshot above made no series: `sum` has no breaker.
    assert!(!text.contains("xcs_breaker_transitions_total{"), "{text}");
}

/// A graph of one `flaky` node that always fails, with a retry policy of
/// its own (3 attempts), checked against `flaky` loaded on `host`.
async fn always_failing_graph_with_retries(host: &Host) -> (xcs::Operator, xcs::graph::Plan) {
    let flaky = load(host, xcs_tests::FLAKY).await;
    let graph = xcs::graph::Graph::from_toml(
        r#"
        [[node]]
        id = "f"
        operator = "flaky"
        args = { key = 3, failure-percent = 100 }

        [policy.flaky]
        retry = { attempts = 3, base_delay = "1ms" }
        "#,
    )
    .expect("the graph parses");
    let plan = graph
        .check(&xcs::graph::Operators::new().with(flaky.clone()))
        .expect("the graph checks");
    (flaky, plan)
}

#[tokio::test]
async fn graph_policies_apply_to_their_operator() {
    let host = Host::builder().build().unwrap();
    let (_, plan) = always_failing_graph_with_retries(&host).await;
    let report = plan
        .run(&Value::Null, &xcs::graph::RunOptions::default())
        .await;
    assert_eq!(report.node("f").unwrap().attempts, 3);
    expect_kind(report.into_result(), ErrorKind::Operator);
    assert_eq!(host.metrics().operators["flaky"].retries, 2);
}

/// A graph's own policy applies to its runs, and leaves the host's policy
/// of the operator as it was: a direct call after the run is not retried.
#[tokio::test]
async fn graph_policies_do_not_change_the_host() {
    let host = Host::builder().build().unwrap();
    let (flaky, plan) = always_failing_graph_with_retries(&host).await;
    let report = plan
        .run(&Value::Null, &xcs::graph::RunOptions::default())
        .await;
    assert_eq!(report.node("f").unwrap().attempts, 3, "the run retried");
    expect_kind(
        flaky
            .call(
                &json!({"key": 3, "failure-percent": 100}),
                &Limits::default(),
            )
            .await,
        ErrorKind::Operator,
    );
    assert_eq!(
        host.metrics().operators["flaky"].retries,
        2,
        "only the run's calls were retried"
    );
}

/// A graph's own breaker keeps its state across the runs of one checked
/// graph (its clones included), apart from the operator's breaker on the
/// host: the host's breaker stays closed and its `breaker_state` gauge is
/// not written.
#[tokio::test]
async fn a_graph_breaker_spans_the_runs_of_its_plan_not_the_host() {
    let host = Host::builder().build().unwrap();
    let factorial = load(&host, xcs_tests::FACTORIAL).await;
    let graph = xcs::graph::Graph::from_toml(
        r#"
        [[node]]
        id = "f"
        operator = "factorial"
        args = { n = 25 }

        [policy.factorial]
        cache = false
        breaker = { failures = 2, cool_down = "1h" }
        "#,
    )
    .unwrap();
    let plan = graph
        .check(&xcs::graph::Operators::new().with(factorial.clone()))
        .unwrap();
    let options = xcs::graph::RunOptions::default();
    for run in [plan.clone(), plan.clone()] {
        let report = run.run(&Value::Null, &options).await;
        expect_kind(report.into_result(), ErrorKind::Operator);
    }
    let report = plan.run(&Value::Null, &options).await;
    expect_kind(report.into_result(), ErrorKind::CircuitOpen);
    assert_eq!(factorial.breaker_state(), BreakerState::Closed);
    expect_kind(
        factorial.call(&json!([25]), &Limits::default()).await,
        ErrorKind::Operator,
    );
    let text = host.metrics_text();
    assert!(
        text.contains(
            r#"xcs_breaker_transitions_total{operator="factorial",from="closed",to="open"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains(r#"xcs_breaker_state{operator="factorial"}"#),
        "{text}"
    );
}

/// Bounds far past what tokio's semaphores can hold (a bulkhead, a map's
/// and a run's concurrency) are taken as "unbounded", not a panic.
#[tokio::test]
async fn enormous_bounds_are_not_a_panic() {
    let host = Host::builder().build().unwrap();
    let upper = load(&host, xcs_tests::UPPER).await;
    let graph = xcs::graph::Graph::from_toml(
        r#"
        [[node]]
        id = "up"
        operator = "upper"
        map = "text"
        max_concurrency = 9223372036854775807
        args = { text = ["a", "b"] }

        [outputs]
        up = "@up"

        [policy.upper]
        bulkhead = { max_in_flight = 9223372036854775807, max_queue = 9223372036854775807 }
        "#,
    )
    .unwrap();
    let plan = graph
        .check(&xcs::graph::Operators::new().with(upper))
        .unwrap();
    let options = xcs::graph::RunOptions::default().max_concurrency(usize::MAX);
    let outputs = plan
        .run(&Value::Null, &options)
        .await
        .into_result()
        .unwrap();
    assert_eq!(outputs["up"], json!(["A", "B"]));
}

/// The call that fills the result cache reports what it used (a graph
/// report showed `fuel_consumed: null` and `peak_memory_bytes: 0` for
/// every deterministic operator); a hit used nothing.
#[tokio::test]
async fn the_call_that_fills_the_cache_reports_its_stats() {
    let host = Host::builder().no_disk_cache().build().unwrap();
    let upper = load(&host, xcs_tests::UPPER).await;
    assert!(upper.metadata().deterministic);
    let input = json!({ "text": "stats" });
    let first = upper
        .call_with_stats(&input, &Limits::default())
        .await
        .unwrap();
    assert!(!first.cached);
    assert!(
        first.stats.fuel_consumed.is_some_and(|fuel| fuel > 0),
        "{:?}",
        first.stats
    );
    assert!(first.stats.peak_memory_bytes > 0, "{:?}", first.stats);
    assert!(first.stats.duration > Duration::ZERO, "{:?}", first.stats);
    let hit = upper
        .call_with_stats(&input, &Limits::default())
        .await
        .unwrap();
    assert!(hit.cached);
    assert_eq!(hit.stats, xcs::CallStats::default(), "a hit ran nothing");
    assert_eq!(hit.value, first.value);
}
