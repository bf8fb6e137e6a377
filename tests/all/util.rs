//! Helpers shared by the tests.

use std::sync::OnceLock;

use serde_json::{Value, json};
use xcs::policy::Policy;
use xcs::{Error, ErrorKind, Host, Limits, Operator};

/// One host for the tests that do not configure their own: loads are
/// cached by digest, so each operator compiles once per test binary.
pub fn host() -> Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::builder().build().expect("default host builds"))
        .clone()
}

/// A host whose operators' results are never cached: every call runs its
/// guest (the result cache would answer a deterministic operator's repeated
/// input without running it).
pub fn uncached_host() -> Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::builder()
            .default_policy(Policy::new().cache(false))
            .build()
            .expect("uncached host builds")
    })
    .clone()
}

/// Loads a built operator by its path constant.
pub async fn load(host: &Host, path: &str) -> Operator {
    host.load(path)
        .await
        .unwrap_or_else(|error| panic!("loading {path}: {error}"))
}

/// Loads a component written as WAT text.
pub async fn load_wat(host: &Host, wat: &str) -> Result<Operator, Error> {
    let bytes = wat::parse_str(wat).expect("fixture WAT parses");
    host.load_bytes(bytes, "fixture.wat").await
}

/// Short limits for calls expected to fail fast.
pub fn quick() -> Limits {
    Limits::default().timeout(std::time::Duration::from_secs(2))
}

/// Asserts that `result` failed with `kind`, returning the error.
#[track_caller]
pub fn expect_kind<T: std::fmt::Debug>(result: Result<T, Error>, kind: ErrorKind) -> Error {
    match result {
        Err(error) if error.kind() == kind => error,
        other => panic!("expected a `{kind}` error, got {other:?}"),
    }
}

/// Proves the host is healthy: a normal call on it returns the right value.
pub async fn assert_healthy(host: &Host) {
    let upper = load(host, xcs_tests::UPPER).await;
    let output = upper
        .call(&json!({ "text": "still fine" }), &Limits::default())
        .await
        .expect("a normal call after a failure");
    assert_eq!(output, Value::String("STILL FINE".into()));
}
