//! Embedding xcs: grant an async capability, load an operator that imports
//! it, and call it under limits.
//!
//! ```text
//! just build-operators
//! cargo run -p xcs-examples --example embed -- target/operators/wait.wasm
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use xcs::{Capability, Host, Limits};

/// Loads the `wait` operator from `path`, grants it a latency capability
/// that really sleeps, and calls it; returns the operator's output and how
/// many times the capability ran.
async fn run(path: &str) -> anyhow::Result<(serde_json::Value, u64)> {
    let sleeps = Arc::new(AtomicU64::new(0));
    // `wait` imports `xcs:examples/latency@0.1.0` with `sleep: func(ms: u32)`.
    let latency = Capability::new("xcs:examples/latency@0.1.0").func_async("sleep", {
        let sleeps = sleeps.clone();
        move |(ms,): (u32,)| {
            sleeps.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(ms.into())).await;
                Ok(())
            }
        }
    });
    let host = Host::builder().grant(latency).build()?;
    let wait = host.load(path).await?;
    println!(
        "{} {}: {}",
        wait.metadata().name,
        wait.metadata().version,
        wait.signature()
    );

    let limits = Limits::default().timeout(Duration::from_secs(1));
    let output = wait.call(&json!({ "ms": 20 }), &limits).await?;
    println!("waited {output} ms");
    Ok((output, sleeps.load(Ordering::Relaxed)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/operators/wait.wasm".into());
    run(&path).await?;
    Ok(())
}

#[tokio::test]
async fn embedding_example_runs() {
    let (output, sleeps) = run(xcs_tests::WAIT).await.expect("the example runs");
    assert_eq!(output, json!(20));
    assert_eq!(sleeps, 1);
}
