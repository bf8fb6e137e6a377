//! Granted outgoing HTTP, against a real server on 127.0.0.1: what the
//! allow-list lets through, what it refuses (counted, and failing inside
//! the guest with the WASI HTTP error code), and the limits of a call's
//! requests. Every refusal leaves the host healthy.

use std::time::Duration;

use serde_json::{Value, json};
use xcs::{Error, ErrorKind, Grants, GrantsTable, Host, HttpGrant, Limits, Operator};
use xcs_tests::mock_http::MockServer;

use crate::util::{assert_healthy, expect_kind, load};

async fn server() -> MockServer {
    MockServer::start("sk-test")
        .await
        .expect("the mock server starts")
}

/// A host granting `fetch` what `http` allows, and `fetch` loaded.
async fn fetcher(http: HttpGrant) -> (Host, Operator) {
    let host = Host::builder()
        .grants_for("fetch", Grants::new().http(http))
        .build()
        .expect("the host builds");
    let fetch = load(&host, xcs_tests::FETCH).await;
    (host, fetch)
}

async fn fetch(fetch: &Operator, input: Value) -> Result<Value, Error> {
    fetch.call(&input, &Limits::default()).await
}

/// The operator error code and message of a failed call.
fn refusal(outcome: Result<Value, Error>) -> (String, String) {
    match outcome {
        Err(Error::Operator { code, message, .. }) => (code, message),
        other => panic!("expected an operator error, got {other:?}"),
    }
}

fn metrics(host: &Host) -> (u64, u64) {
    let snapshot = host.metrics();
    let fetch = &snapshot.operators["fetch"];
    (fetch.http_requests, fetch.http_denied)
}

#[tokio::test]
async fn an_allowed_origin_is_reached() {
    let server = server().await;
    let (host, operator) = fetcher(HttpGrant::new().allow(server.origin())).await;
    let output = fetch(
        &operator,
        json!({ "url": format!("{}/hello", server.origin()) }),
    )
    .await
    .unwrap();
    assert_eq!(output["status"], 200);
    assert_eq!(output["text"], "hello from the mock server");
    assert_eq!(output["bytes"], 26);
    assert_eq!(server.requests(), 1);
    assert_eq!(metrics(&host), (1, 0));
}

/// Another port, another name for the same address, a redirect to a host
/// not on the list and plain http where only https is allowed: all
/// refused before any connection, with `http-request-denied`, counted.
#[tokio::test]
async fn destinations_off_the_list_are_denied_and_counted() {
    let server = server().await;
    let port = server.port();
    let (host, operator) = fetcher(HttpGrant::new().allow(server.origin())).await;
    let other_port = port.wrapping_add(1).max(1);
    for url in [
        format!("http://127.0.0.1:{other_port}/hello"),
        format!("http://localhost:{port}/hello"),
        format!("https://127.0.0.1:{port}/hello"),
    ] {
        let (code, message) = refusal(fetch(&operator, json!({ "url": url })).await);
        assert_eq!(code, "denied", "{url}: {message}");
        assert!(message.contains("HttpRequestDenied"), "{message}");
    }
    assert_eq!(server.requests(), 0, "nothing reached the server");
    // The redirect itself is allowed; where it leads is not.
    let redirect = format!(
        "{}/redirect?to=http://localhost:{port}/hello",
        server.origin()
    );
    let (code, message) = refusal(fetch(&operator, json!({ "url": redirect, "follow": 3 })).await);
    assert_eq!(code, "denied", "{message}");
    assert!(message.contains("localhost"), "{message}");
    assert_eq!(server.requests(), 1);
    assert_eq!(metrics(&host), (1, 4));
    assert_healthy(&host).await;

    // https only: plain http to the same origin is refused.
    let https_only = Host::builder()
        .grants_for(
            "fetch",
            Grants::new().allow_http(format!("https://127.0.0.1:{port}")),
        )
        .build()
        .unwrap();
    let operator = load(&https_only, xcs_tests::FETCH).await;
    let (code, _) = refusal(
        fetch(
            &operator,
            json!({ "url": format!("{}/hello", server.origin()) }),
        )
        .await,
    );
    assert_eq!(code, "denied");
    // Allowed as https, the server's plain-HTTP answer fails the TLS
    // handshake: an `http` error in the guest, the host unharmed.
    let (code, message) = refusal(
        fetch(
            &operator,
            json!({ "url": format!("https://127.0.0.1:{port}/hello") }),
        )
        .await,
    );
    assert_eq!(code, "http", "{message}");
    assert_eq!(server.requests(), 2);
    assert_healthy(&https_only).await;
}

/// `localhost` resolves to a loopback address: listed by name, it is
/// refused (`destination-ip-prohibited`) until private addresses are
/// allowed.
#[tokio::test]
async fn a_name_at_a_private_address_needs_explicit_permission() {
    let server = server().await;
    let origin = format!("http://localhost:{}", server.port());
    let url = format!("{origin}/hello");
    let (host, operator) = fetcher(HttpGrant::new().allow(&origin)).await;
    let (code, message) = refusal(fetch(&operator, json!({ "url": url })).await);
    assert_eq!(code, "denied", "{message}");
    assert!(message.contains("DestinationIpProhibited"), "{message}");
    assert_eq!(server.requests(), 0);
    assert_eq!(metrics(&host).1, 1);

    let (_, operator) = fetcher(HttpGrant::new().allow(&origin).private_addresses(true)).await;
    let output = fetch(&operator, json!({ "url": url })).await.unwrap();
    assert_eq!(output["status"], 200);
}

#[tokio::test]
async fn a_response_over_the_cap_is_a_clean_error() {
    let server = server().await;
    let (host, operator) = fetcher(
        HttpGrant::new()
            .allow(server.origin())
            .max_response_bytes(100_000),
    )
    .await;
    let at = |path: &str| json!({ "url": format!("{}{path}", server.origin()) });
    let output = fetch(&operator, at("/bytes/100000")).await.unwrap();
    assert_eq!(output["bytes"], 100_000);
    // A HEAD's length is not a body.
    let head = json!({ "url": format!("{}/bytes/1000000", server.origin()), "method": "HEAD" });
    let output = fetch(&operator, head).await.unwrap();
    assert_eq!(
        (output["status"].clone(), output["bytes"].clone()),
        (json!(200), json!(0))
    );
    // Said ahead by its length, or found while streaming.
    for path in ["/bytes/100001", "/chunked/1000000"] {
        let (code, message) = refusal(fetch(&operator, at(path)).await);
        assert_eq!(code, "http", "{path}: {message}");
        assert!(message.contains("HttpResponseBodySize"), "{message}");
    }
    assert_healthy(&host).await;
}

/// A slow server meets the grant's per-request timeout within the call's
/// deadline (an error the guest sees); past the call's deadline, the call
/// is a `timeout`.
#[tokio::test]
async fn a_slow_server_meets_the_request_timeout_or_the_deadline() {
    let server = server().await;
    let slow = json!({ "url": format!("{}/slow/5000", server.origin()) });
    let (host, operator) = fetcher(
        HttpGrant::new()
            .allow(server.origin())
            .timeout(Duration::from_millis(200)),
    )
    .await;
    let (code, message) = refusal(fetch(&operator, slow.clone()).await);
    assert_eq!(code, "http", "{message}");
    assert!(message.contains("Timeout"), "{message}");

    let (_, operator) = fetcher(HttpGrant::new().allow(server.origin())).await;
    let outcome = operator
        .call(
            &slow,
            &Limits::default().timeout(Duration::from_millis(300)),
        )
        .await;
    expect_kind(outcome, ErrorKind::Timeout);
    assert_healthy(&host).await;
}

/// Past `max_requests`, a call's requests fail with
/// `connection-limit-reached`.
#[tokio::test]
async fn a_call_makes_at_most_its_cap_of_requests() {
    let server = server().await;
    let (host, operator) = fetcher(HttpGrant::new().allow(server.origin()).max_requests(2)).await;
    // Two redirects, then the page: three requests.
    let url = format!("{}/redirect?to=/redirect?to=/hello", server.origin());
    let (code, message) = refusal(fetch(&operator, json!({ "url": url, "follow": 5 })).await);
    assert_eq!(code, "denied", "{message}");
    assert!(message.contains("ConnectionLimitReached"), "{message}");
    assert_eq!(server.requests(), 2);
    // The cap is per call: the next call has its own.
    let output = fetch(
        &operator,
        json!({ "url": format!("{}/redirect?to=/hello", server.origin()), "follow": 1 }),
    )
    .await
    .unwrap();
    assert_eq!(
        (output["status"].clone(), output["redirects"].clone()),
        (json!(200), json!(1))
    );
    assert_eq!(metrics(&host), (4, 1));
}

#[tokio::test]
async fn a_hundred_concurrent_calls_each_make_their_requests() {
    let server = server().await;
    let (host, operator) = fetcher(HttpGrant::new().allow(server.origin())).await;
    let url = format!("{}/redirect?to=/hello", server.origin());
    let calls = (0..100).map(|_| fetch(&operator, json!({ "url": url, "follow": 1 })));
    for output in futures::future::join_all(calls).await {
        let output = output.unwrap();
        assert_eq!(output["text"], "hello from the mock server");
    }
    assert_eq!(server.requests(), 200);
    assert_eq!(metrics(&host), (200, 0));
    assert_healthy(&host).await;
}

/// The pattern of a model-calling operator: the key comes from a granted
/// variable, never from the input.
#[tokio::test]
async fn a_model_call_with_its_key_from_a_granted_variable() {
    let server = server().await;
    let host = Host::builder()
        .grants_for(
            "fetch",
            Grants::new()
                .allow_http(server.origin())
                .env_value("MODEL_KEY", "sk-test"),
        )
        .build()
        .unwrap();
    let operator = load(&host, xcs_tests::FETCH).await;
    let body = json!({ "model": "mock", "messages": [{ "role": "user", "content": "hi" }] });
    let request = |bearer: Option<&str>| {
        json!({
            "url": format!("{}/v1/chat/completions", server.origin()),
            "method": "POST",
            "body": body.to_string(),
            "bearer-env": bearer,
        })
    };
    let output = fetch(&operator, request(Some("MODEL_KEY"))).await.unwrap();
    assert_eq!(output["status"], 200);
    let answer: Value = serde_json::from_str(output["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: hi");
    let output = fetch(&operator, request(None)).await.unwrap();
    assert_eq!(output["status"], 401);
    let (code, _) = refusal(fetch(&operator, request(Some("OTHER_KEY"))).await);
    assert_eq!(code, "invalid-input");
}

/// An operator that imports `wasi:http/outgoing-handler` loads only with
/// HTTP granted to it; the error names the flag and the file key.
#[tokio::test]
async fn importing_http_without_a_grant_is_refused_at_load() {
    for host in [
        Host::builder().build().unwrap(),
        Host::builder()
            .grants_for("upper", Grants::new().allow_http("https://example.com"))
            .grants(Grants::new().env_value("A", "b"))
            .build()
            .unwrap(),
    ] {
        let error = expect_kind(host.load(xcs_tests::FETCH).await, ErrorKind::Capability);
        let message = error.to_string();
        assert!(message.contains("wasi:http/outgoing-handler"), "{message}");
        assert!(message.contains("--allow-http"), "{message}");
        assert!(message.contains("[grants.fetch]"), "{message}");
        assert_healthy(&host).await;
    }
}

#[test]
fn grants_file_http_keys_and_their_errors() {
    let table = GrantsTable::from_toml(
        r#"
[grants.fetch]
http = ["https://api.example.com", "http://127.0.0.1:*"]
http-timeout = "5s"
http-max-response-bytes = "1MiB"
http-max-requests = 3
http-private-addresses = true
"#,
        std::path::Path::new("."),
    )
    .unwrap();
    let (_, grants) = table.operators().next().unwrap();
    let http = grants.http_grant();
    assert_eq!(
        http.patterns().collect::<Vec<_>>(),
        ["https://api.example.com", "http://127.0.0.1:*"]
    );
    assert_eq!(http.request_timeout(), Duration::from_secs(5));
    assert_eq!(http.response_bytes_cap(), 1 << 20);
    assert_eq!(http.requests_cap(), 3);
    assert!(http.allows_private_addresses());
    assert!(!http.is_deterministic());

    for (text, needle) in [
        (
            "[grants.fetch]\n\nhttp = [\"ftp://example.com\"]\n",
            "line 3",
        ),
        ("[grants.fetch]\nhttp = [\"https://*\"]\n", "line 2"),
        ("[grants.fetch]\nhttp-timout = \"5s\"\n", "line 2"),
        ("[grants.fetch]\nhttp-timeout = \"soon\"\n", "http-timeout"),
        (
            "[grants.fetch]\nhttp-max-response-bytes = \"lots\"\n",
            "http-max-response-bytes",
        ),
    ] {
        let error = GrantsTable::from_toml(text, std::path::Path::new(".")).expect_err(text);
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(error.to_string().contains(needle), "{text}: {error}");
    }
}

/// With HTTP granted, a deterministic operator's calls all run (what a
/// server answers is not part of the input), unless the grant declares
/// the responses deterministic; a variable alone does not stop caching
/// (its value is fixed for the host's life).
#[tokio::test]
async fn http_grants_stop_caching_unless_declared_deterministic() {
    let http = || HttpGrant::new().allow("https://example.com");
    for (grants, hits) in [
        (Grants::new().http(http()), 0),
        (Grants::new().http(http().deterministic(false)), 0),
        (Grants::new().http(http().deterministic(true)), 2),
        (Grants::new().env_value("MODEL_KEY", "sk"), 2),
    ] {
        let host = Host::builder()
            .grants_for("upper", grants.clone())
            .build()
            .unwrap();
        let upper = load(&host, xcs_tests::UPPER).await;
        assert!(upper.metadata().deterministic);
        for _ in 0..3 {
            upper
                .call(&json!({ "text": "a" }), &Limits::default())
                .await
                .unwrap();
        }
        assert_eq!(
            host.metrics().operators["upper"].cache_hits,
            hits,
            "{grants:?}"
        );
    }
}

/// A guest waiting for a slow server waits off its turn: on a host with a
/// single turn, another call runs to its end meanwhile.
#[tokio::test]
async fn a_guest_waiting_on_a_server_gives_its_turn_away() {
    let server = server().await;
    let host = Host::builder()
        .max_running_guests(1)
        .grants_for("fetch", Grants::new().allow_http(server.origin()))
        .build()
        .unwrap();
    let fetch = load(&host, xcs_tests::FETCH).await;
    let upper = load(&host, xcs_tests::UPPER).await;
    let slow = json!({ "url": format!("{}/slow/3000", server.origin()) });
    let waiting = tokio::spawn(async move { fetch.call(&slow, &Limits::default()).await });
    // The request is in flight once the server has accepted it.
    while server.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shouted = upper
        .call(&json!({ "text": "meanwhile" }), &Limits::default())
        .await
        .unwrap();
    assert_eq!(shouted, "MEANWHILE");
    assert!(
        !waiting.is_finished(),
        "the other call ran only after the waiting one"
    );
    let fetched = waiting.await.unwrap().unwrap();
    assert_eq!(fetched["text"], "slow");
}
