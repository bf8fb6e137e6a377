//! What the policy stack costs on a call, and what a result-cache hit
//! costs, measured in one run against a call with every policy off.
//!
//! `cargo bench -p xcs-tests --bench policy`; `XCS_BENCH_QUICK=1` for a
//! smoke run. Batches of the variants are interleaved, so noise hits them
//! alike; medians of batch means are reported.

mod common;

use std::time::Instant;

use common::Samples;
use serde_json::json;
use xcs::policy::{Breaker, Bulkhead, Policy, Retry};
use xcs::{Host, Limits, Operator};

/// Times a batch of `calls` calls into `samples`.
async fn batch(samples: &mut Samples, operator: &Operator, limits: &Limits, calls: usize) {
    let input = json!([]);
    let started = Instant::now();
    for _ in 0..calls {
        operator.call(&input, limits).await.expect("noop succeeds");
    }
    samples.push(started.elapsed(), calls);
}

fn main() {
    let (rounds, calls) = if common::quick() { (5, 20) } else { (61, 400) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let all_on = Policy::new()
            .cache(false)
            .retry(Retry::default())
            .breaker(Breaker::default())
            .bulkhead(Bulkhead::default());
        // Two hosts, so each keeps its own policy for `noop`.
        let off = Host::builder().no_disk_cache().policy("noop", Policy::new().cache(false)).build().expect("host");
        let on = Host::builder().no_disk_cache().policy("noop", all_on).build().expect("host");
        let cached = Host::builder().no_disk_cache().build().expect("host");
        let noop_off = off.load(xcs_tests::NOOP).await.expect("loads");
        let noop_on = on.load(xcs_tests::NOOP).await.expect("loads");
        let noop_cached = cached.load(xcs_tests::NOOP).await.expect("loads");
        let limits = Limits::default();
        noop_cached.call(&json!([]), &limits).await.expect("warms the cache");

        let (mut off_samples, mut on_samples, mut hit_samples) =
            (Samples::default(), Samples::default(), Samples::default());
        for round in 0..rounds {
            // Rotate the order so no variant always runs first.
            for variant in 0..3 {
                match (round + variant) % 3 {
                    0 => batch(&mut off_samples, &noop_off, &limits, calls).await,
                    1 => batch(&mut on_samples, &noop_on, &limits, calls).await,
                    _ => batch(&mut hit_samples, &noop_cached, &limits, calls * 10).await,
                }
            }
        }
        let (off, on, hit) = (off_samples.median(), on_samples.median(), hit_samples.median());
        let metrics = cached.metrics().operators["noop"].clone();
        assert_eq!(metrics.cache_misses, 1, "every measured call was a hit");

        println!("# xcs policy benchmark\n");
        println!("- machine: {} cores", std::thread::available_parallelism().map_or(1, usize::from));
        println!("- {rounds} interleaved rounds × {calls} calls ({} for cache hits); medians of batch means\n", calls * 10);
        println!("| measurement | median | ratio vs baseline |");
        println!("|---|---|---|");
        println!("| `noop` call, every policy off (cache off) | {} | 1.00 (baseline) |", off_samples.summary());
        println!("| `noop` call, retry + breaker + bulkhead on (cache off) | {} | {:.3} (target ≤ 1.05) |", on_samples.summary(), on / off);
        println!(
            "| `noop` result-cache hit | {} (target ≤ 2 µs) | {:.4} |",
            hit_samples.summary(),
            hit / off
        );
    });
}
