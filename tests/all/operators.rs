//! One test per operator under `operators/`: what it does, how it fails,
//! and that the host serves a normal call afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use xcs::{Capability, ErrorKind, Host, Limits};

use crate::util::{assert_healthy, expect_kind, host, load, quick, uncached_host};

// Every operator must have a test below named after it.
macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports, reason = "only proves the test function exists")]
        use self::$name as _;
    };
}
xcs_tests::foreach_operator!(assert_test_exists);

#[tokio::test]
async fn upper() {
    let upper = load(&host(), xcs_tests::UPPER).await;
    assert_eq!(upper.metadata().name, "upper");
    assert!(upper.metadata().deterministic);
    assert_eq!(
        upper.signature().to_string(),
        "func(text: string) -> result<string, error>"
    );
    let output = upper
        .call(&json!(["grüße, world"]), &Limits::default())
        .await
        .unwrap();
    assert_eq!(output, json!("GRÜSSE, WORLD"));
}

#[tokio::test]
async fn word_count() {
    let op = load(&host(), xcs_tests::WORD_COUNT).await;
    assert_eq!(op.metadata().name, "word-count");
    let output = op
        .call(
            &json!({"text": "the quick  brown\tfox\n"}),
            &Limits::default(),
        )
        .await
        .unwrap();
    assert_eq!(output, json!(4));
    assert_eq!(
        op.call(&json!({"text": ""}), &Limits::default())
            .await
            .unwrap(),
        json!(0)
    );
}

#[tokio::test]
async fn sum() {
    let op = load(&host(), xcs_tests::SUM).await;
    assert_eq!(
        op.signature().to_string(),
        "func(xs: list<s64>) -> result<s64, error>"
    );
    assert_eq!(
        op.call(&json!({"xs": [1, -2, 40]}), &Limits::default())
            .await
            .unwrap(),
        json!(39)
    );
    let overflow = op
        .call(&json!({"xs": [i64::MAX, 1]}), &Limits::default())
        .await;
    let error = expect_kind(overflow, ErrorKind::Operator);
    assert!(
        matches!(error, xcs::Error::Operator { ref code, retryable: false, .. } if code == "invalid-input"),
        "{error}"
    );
}

#[tokio::test]
async fn sort() {
    let op = load(&host(), xcs_tests::SORT).await;
    let output = op
        .call(
            &json!({"items": ["pear", "apple", "fig"]}),
            &Limits::default(),
        )
        .await
        .unwrap();
    assert_eq!(output, json!(["apple", "fig", "pear"]));
}

#[tokio::test]
async fn stats() {
    let op = load(&host(), xcs_tests::STATS).await;
    assert_eq!(
        op.signature().to_string(),
        "func(xs: list<f64>) -> result<stats, error>"
    );
    assert_eq!(
        op.signature().types[0].definition,
        "record stats { count: u32, mean: f64, min: f64, max: f64 }"
    );
    let output = op
        .call(&json!({"xs": [1.0, 2.0, 6.0]}), &Limits::default())
        .await
        .unwrap();
    assert_eq!(
        output,
        json!({"count": 3, "mean": 3.0, "min": 1.0, "max": 6.0})
    );
    let empty = op.call(&json!({"xs": []}), &Limits::default()).await;
    expect_kind(empty, ErrorKind::Operator);
}

#[tokio::test]
async fn noop() {
    let op = load(&host(), xcs_tests::NOOP).await;
    assert!(op.signature().params.is_empty());
    assert_eq!(op.signature().result, None);
    assert_eq!(
        op.call(&json!([]), &Limits::default()).await.unwrap(),
        Value::Null
    );
    assert_eq!(
        op.call(&Value::Null, &Limits::default()).await.unwrap(),
        Value::Null
    );
}

#[tokio::test]
async fn factorial() {
    let op = load(&host(), xcs_tests::FACTORIAL).await;
    assert_eq!(
        op.call(&json!([20]), &Limits::default()).await.unwrap(),
        json!(2_432_902_008_176_640_000u64)
    );
    expect_kind(
        op.call(&json!([21]), &Limits::default()).await,
        ErrorKind::Operator,
    );
}

#[tokio::test]
async fn spin() {
    let host = host();
    let op = load(&host, xcs_tests::SPIN).await;
    let limits = Limits::default().timeout(Duration::from_millis(200));
    let error = expect_kind(op.call(&json!([]), &limits).await, ErrorKind::Timeout);
    assert_eq!(error.to_string(), "spin: timed out after 200ms");
    // With a fuel budget, the same loop runs out of fuel instead.
    let limits = quick().fuel(Some(5_000_000));
    expect_kind(op.call(&json!([]), &limits).await, ErrorKind::Fuel);
    assert_healthy(&host).await;
}

#[tokio::test]
async fn hog() {
    let host = host();
    let op = load(&host, xcs_tests::HOG).await;
    let limits = quick().max_memory_bytes(32 << 20);
    let error = expect_kind(op.call(&json!([]), &limits).await, ErrorKind::Memory);
    match error {
        xcs::Error::Memory {
            what,
            requested,
            limit,
            ..
        } => {
            assert_eq!((what, limit), ("linear memory", 32 << 20));
            assert!(requested > limit);
        }
        other => panic!("{other:?}"),
    }
    assert_healthy(&host).await;
}

#[tokio::test]
async fn deep() {
    let host = host();
    let op = load(&host, xcs_tests::DEEP).await;
    expect_kind(
        op.call(&json!([]), &quick()).await,
        ErrorKind::StackOverflow,
    );
    assert_healthy(&host).await;
}

#[tokio::test]
async fn panic() {
    let host = host();
    let op = load(&host, xcs_tests::PANIC).await;
    let error = expect_kind(op.call(&json!([]), &quick()).await, ErrorKind::Trap);
    assert!(
        error
            .to_string()
            .contains("panic fixture: this operator always panics"),
        "the panic message is carried: {error}"
    );
    assert_healthy(&host).await;
}

#[tokio::test]
async fn panic_lean() {
    let host = host();
    let op = load(&host, xcs_tests::PANIC_LEAN).await;
    let error = expect_kind(op.call(&json!([]), &quick()).await, ErrorKind::Trap);
    let text = error.to_string();
    assert!(
        text.contains("panicked at") && text.contains("this lean operator always panics"),
        "a component without stderr carries its panic message through the log: {error}"
    );
    // The 5,000 error lines before it (past the log budget) are not quoted.
    assert!(!text.contains("error line 4999"), "{error}");
    assert_healthy(&host).await;
}

#[tokio::test]
async fn counter() {
    let op = load(&host(), xcs_tests::COUNTER).await;
    for _ in 0..5 {
        assert_eq!(
            op.call(&json!([]), &Limits::default()).await.unwrap(),
            json!(1),
            "every call starts fresh"
        );
    }
}

#[tokio::test]
async fn entropy() {
    let op = load(&host(), xcs_tests::ENTROPY).await;
    assert!(!op.metadata().deterministic);
    let first = op.call(&json!([]), &Limits::default()).await.unwrap();
    let second = op.call(&json!([]), &Limits::default()).await.unwrap();
    assert_eq!(
        first, second,
        "same seed, same randomness and clock readings"
    );
    assert_eq!(first["random"].as_array().map(Vec::len), Some(16));
    assert!(
        first["wall-clock-ns"].as_u64().unwrap() >= 1_704_067_200_000_000_000,
        "virtual wall clock starts in 2024"
    );
    let reseeded = op
        .call(&json!([]), &Limits::default().seed(7))
        .await
        .unwrap();
    assert_ne!(
        first["random"], reseeded["random"],
        "another seed, other random bytes"
    );
}

#[tokio::test]
async fn flaky() {
    let op = load(&host(), xcs_tests::FLAKY).await;
    assert_eq!(
        op.call(&json!({"key": 9, "failure-percent": 0}), &Limits::default())
            .await
            .unwrap(),
        json!(9)
    );
    let always = op
        .call(
            &json!({"key": 9, "failure-percent": 100}),
            &Limits::default(),
        )
        .await;
    let error = expect_kind(always, ErrorKind::Operator);
    assert!(error.is_retryable());
    // The outcome is a function of (input, seed): the same call twice agrees.
    let mut failures = 0;
    for key in 0..50u64 {
        let input = json!({"key": key, "failure-percent": 30});
        let once = op.call(&input, &Limits::default()).await.is_ok();
        let twice = op.call(&input, &Limits::default()).await.is_ok();
        assert_eq!(once, twice, "key {key}");
        failures += u32::from(!once);
    }
    assert!(
        (5..=25).contains(&failures),
        "about 30% of 50 fail: {failures}"
    );
}

#[tokio::test]
async fn chatty() {
    let messages = Arc::new(AtomicU64::new(0));
    let host = Host::builder()
        .on_log({
            let messages = messages.clone();
            move |record| {
                assert_eq!(record.operator, "chatty");
                messages.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .unwrap();
    let op = load(&host, xcs_tests::CHATTY).await;
    let limits = Limits::default().max_log_bytes(10_000);
    let output = op.call_with_stats(&json!([]), &limits).await.unwrap();
    let sent = output.value.as_u64().unwrap();
    assert_eq!(sent, 100_000);
    let kept = messages.load(Ordering::Relaxed);
    assert!(
        kept > 0 && kept <= 10_000 / 50,
        "at most the budget's worth is kept: {kept}"
    );
    assert_eq!(
        kept + output.stats.log_messages_dropped,
        sent,
        "every message is kept or counted as dropped"
    );
}

#[tokio::test]
async fn wait() {
    let (latency, in_flight) = xcs_tests::latency::capability();
    let host = Host::builder().grant(latency).build().unwrap();
    let op = load(&host, xcs_tests::WAIT).await;
    assert!(
        op.imports()
            .iter()
            .any(|import| import == xcs_tests::latency::INTERFACE)
    );
    let (input, limits) = (json!({"ms": 50}), Limits::default());
    let calls = (0..8).map(|_| op.call(&input, &limits));
    for output in futures::future::join_all(calls).await {
        assert_eq!(output.unwrap(), json!(50));
    }
    assert_eq!(
        in_flight.peak(),
        8,
        "the async capability let all eight calls wait at once"
    );

    // A synchronous capability works the same way; its failure traps the
    // guest and names the capability.
    let host = Host::builder()
        .grant(
            Capability::new(xcs_tests::latency::INTERFACE).func("sleep", |(ms,): (u32,)| {
                if ms > 100 {
                    Err(format!("{ms} ms is too long").into())
                } else {
                    Ok(())
                }
            }),
        )
        .build()
        .unwrap();
    let op = load(&host, xcs_tests::WAIT).await;
    assert_eq!(
        op.call(&json!([5]), &Limits::default()).await.unwrap(),
        json!(5)
    );
    let error = expect_kind(
        op.call(&json!([500]), &Limits::default()).await,
        ErrorKind::Trap,
    );
    assert!(
        error
            .to_string()
            .contains("capability `xcs:examples/latency@0.1.0#sleep` failed: 500 ms is too long"),
        "{error}"
    );

    // Without the grant, the operator does not load.
    let error = expect_kind(
        crate::util::host().load(xcs_tests::WAIT).await,
        ErrorKind::Capability,
    );
    assert!(
        error.to_string().contains(xcs_tests::latency::INTERFACE),
        "{error}"
    );
}

#[tokio::test]
async fn burn() {
    let host = host();
    let op = load(&host, xcs_tests::BURN).await;
    assert!(op.metadata().deterministic);
    assert_eq!(
        op.signature().to_string(),
        "func(iterations: u64) -> result<u64, error>"
    );
    let once = op.call(&json!([1000]), &Limits::default()).await.unwrap();
    let uncached = load(&uncached_host(), xcs_tests::BURN).await;
    let twice = uncached
        .call(&json!([1000]), &Limits::default())
        .await
        .unwrap();
    assert_eq!(once, twice, "the same input gives the same output");
    let other = op.call(&json!([1001]), &Limits::default()).await.unwrap();
    assert_ne!(once, other, "one more round changes the output");
    // A budget far below what 10^12 rounds need stops the loop.
    let limits = quick().fuel(Some(5_000_000));
    expect_kind(
        op.call(&json!([1_000_000_000_000u64]), &limits).await,
        ErrorKind::Fuel,
    );
    assert_healthy(&host).await;
}

#[tokio::test]
async fn most_common() {
    let vote = load(&host(), xcs_tests::MOST_COMMON).await;
    assert_eq!(
        vote.signature().to_string(),
        "func(votes: list<string>) -> result<string, error>"
    );
    let call = |votes: Value| {
        let vote = vote.clone();
        async move { vote.call(&json!([votes]), &Limits::default()).await }
    };
    assert_eq!(call(json!(["b", "a", "b"])).await.unwrap(), json!("b"));
    assert_eq!(
        call(json!(["x", "y"])).await.unwrap(),
        json!("x"),
        "a tie: the first"
    );
    assert_eq!(call(json!(["y", "x", "x", "y"])).await.unwrap(), json!("y"));
    expect_kind(call(json!([])).await, ErrorKind::Operator);
    assert_healthy(&host()).await;
}

#[tokio::test]
async fn guess() {
    let (latency, in_flight) = xcs_tests::latency::capability();
    let host = Host::builder().grant(latency).build().unwrap();
    let guess = load(&host, xcs_tests::GUESS).await;
    let call = |text: &str, variant: u32, wait: u32| {
        let (guess, input) = (
            guess.clone(),
            json!({"text": text, "variant": variant, "wait-ms": wait}),
        );
        async move { guess.call(&input, &Limits::default()).await }
    };
    assert_eq!(call("a b c", 4, 0).await.unwrap(), json!("b"));
    assert_eq!(in_flight.peak(), 0, "no wait asked for");
    assert_eq!(call("a b c", 2, 5).await.unwrap(), json!("c"));
    assert_eq!(in_flight.peak(), 1, "it waited on the capability");
    expect_kind(call("", 0, 0).await, ErrorKind::Operator);
    assert_healthy(&host).await;
}

/// The composites (their behaviour is in `compose.rs`): they load as
/// composites, and called as plain operators they say how to run them.
#[tokio::test]
async fn ensemble() {
    assert_composite(
        xcs_tests::ENSEMBLE,
        "func(text: string, n: u32, wait-ms: u32) -> result<string, error>",
    )
    .await;
}

#[tokio::test]
async fn refine() {
    assert_composite(
        xcs_tests::REFINE,
        "func(text: string, threshold: u32) -> result<string, error>",
    )
    .await;
}

#[tokio::test]
async fn recurse() {
    assert_composite(xcs_tests::RECURSE, "func(depth: u32) -> result<u32, error>").await;
}

#[tokio::test]
async fn pipeline() {
    assert_composite(
        xcs_tests::PIPELINE,
        "func(documents: list<string>) -> result<stats, error>",
    )
    .await;
}

#[tokio::test]
async fn twice() {
    assert_composite(
        xcs_tests::TWICE,
        "func(ms: u32) -> result<list<u32>, error>",
    )
    .await;
}

#[tokio::test]
async fn spy() {
    assert_composite(
        xcs_tests::SPY,
        "func(text: string, ms: u32) -> result<string, error>",
    )
    .await;
}

async fn assert_composite(path: &str, signature: &str) {
    let (latency, _) = xcs_tests::latency::capability();
    let host = Host::builder()
        .grant(latency)
        .build()
        .expect("the host builds");
    let composite = load(&host, path).await;
    assert!(composite.is_composite(), "{}", composite.name());
    assert!(
        composite
            .imports()
            .iter()
            .any(|import| import == "xcs:operator/compose@0.1.0")
    );
    assert_eq!(composite.signature().to_string(), signature);
    let input = match composite.signature().params.len() {
        1 => json!([3]),
        _ => Value::Null,
    };
    let error = composite
        .call(&input, &Limits::default())
        .await
        .expect_err("a composite runs with its operators");
    if error.kind() == ErrorKind::Config {
        assert!(error.to_string().contains("is a composite"), "{error}");
    } else {
        assert_eq!(error.kind(), ErrorKind::Validation, "{error}");
    }
    // Plain operators are not composites.
    assert!(!load(&host, xcs_tests::UPPER).await.is_composite());
}

#[tokio::test]
async fn hoard() {
    assert_composite(xcs_tests::HOARD, "func(mode: string) -> result<u32, error>").await;
}

#[tokio::test]
async fn quitter() {
    let quitter = load(&host(), xcs_tests::QUITTER).await;
    for code in [0, 3] {
        let error = expect_kind(
            quitter.call(&json!([code]), &Limits::default()).await,
            ErrorKind::Trap,
        );
        let first_line = error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        // Rust's std on wasip2 reports every nonzero code as 1, so only
        // success and failure are told apart.
        let reported = if code == 0 { 0 } else { 1 };
        assert_eq!(
            first_line,
            format!(
                "quitter: the guest called exit({reported}): an operator returns from `invoke` instead"
            ),
            "the first line says what happened"
        );
    }
    assert_healthy(&host()).await;
}

/// The sockets the sandbox links are inert: a Rust operator's std TCP
/// connect to a listening loopback port, UDP bind and name lookup all fail
/// inside the guest, and the listener sees no connection.
#[tokio::test]
async fn netprobe() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let probe = load(&host(), xcs_tests::NETPROBE).await;
    assert!(
        probe
            .imports()
            .iter()
            .any(|import| import.starts_with("wasi:sockets/")),
        "std's networking links wasi:sockets: {:?}",
        probe.imports()
    );
    let lines = probe
        .call(
            &json!({ "address": address, "host": "localhost" }),
            &Limits::default(),
        )
        .await
        .unwrap();
    let lines: Vec<String> = serde_json::from_value(lines).unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert!(
            line.contains(": error: "),
            "refused inside the guest: {lines:?}"
        );
    }
    assert_eq!(
        listener.accept().map(drop).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "no connection reached the listener"
    );
}

/// `reader` sees no file and no environment without grants (the grants
/// tests give it some).
#[tokio::test]
async fn reader() {
    let host = host();
    let reader = load(&host, xcs_tests::READER).await;
    for (request, code) in [
        ("read:/etc/hostname", "io"),
        ("list:/", "io"),
        ("env:HOME", "unset"),
    ] {
        let error = reader
            .call(&json!({ "request": request }), &Limits::default())
            .await
            .expect_err("nothing is granted");
        match &error {
            xcs::Error::Operator { code: found, .. } => assert_eq!(found, code, "{error}"),
            other => panic!("{request}: {other}"),
        }
    }
    assert_healthy(&host).await;
}

/// `fetch` reaches a granted origin (the HTTP tests attack it further).
#[tokio::test]
async fn fetch() {
    let server = xcs_tests::mock_http::MockServer::start("key")
        .await
        .expect("the mock server starts");
    let host = Host::builder()
        .grants_for("fetch", xcs::Grants::new().allow_http(server.origin()))
        .build()
        .unwrap();
    let fetch = load(&host, xcs_tests::FETCH).await;
    let output = fetch
        .call(
            &json!({ "url": format!("{}/bytes/3", server.origin()) }),
            &Limits::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        output,
        json!({
            "status": 200,
            "bytes": 3,
            "sha256": "cd2eb0837c9b4c962c22d2ff8b5441b7b45805887f051d39bf133b583baf6860",
            "text": "xxx",
            "redirects": 0,
        })
    );
}
