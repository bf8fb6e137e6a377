//! Resident memory stays bounded across many calls that dirty much memory:
//! a used pool slot keeps at most its keep-resident bytes (in place, with
//! `PAGEMAP_SCAN`) and returns the rest to the kernel.
//!
//! A test binary of its own: resident memory is the process's, and no
//! other test may allocate while it measures.

#[allow(dead_code)]
#[path = "all/fixtures.rs"]
mod fixtures;

use serde_json::json;
use xcs::policy::Policy;
use xcs::{Host, Limits, Operator};

/// Calls in flight at once: every one in its own pool slot.
const IN_FLIGHT: usize = 16;
/// Linear memory each call grows and fills: 8 MiB.
const PAGES: u32 = 128;
const MIB: u64 = 1 << 20;

/// The process's resident set, in bytes (Linux).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

async fn host(pagemap_scan: bool) -> (Host, Operator) {
    let host = Host::builder()
        .no_disk_cache()
        .max_concurrent_instances(IN_FLIGHT as u32)
        .pagemap_scan(pagemap_scan)
        .memory_keep_resident(1 << 20)
        .default_policy(Policy::new().cache(false))
        .build()
        .expect("host");
    let bytes = wat::parse_str(fixtures::dirties_memory()).expect("fixture");
    let operator = host.load_bytes(bytes, "dirty.wat").await.expect("loads");
    (host, operator)
}

/// `rounds` rounds of [`IN_FLIGHT`] calls at once, each dirtying 8 MiB.
async fn dirty(operator: &Operator, rounds: usize) {
    let input = json!({ "pages": PAGES });
    let limits = Limits::default();
    for _ in 0..rounds {
        let calls = (0..IN_FLIGHT).map(|_| operator.call(&input, &limits));
        for result in futures::future::join_all(calls).await {
            let pages = result.expect("the call succeeds");
            assert!(
                pages
                    .as_u64()
                    .is_some_and(|pages| pages >= u64::from(PAGES)),
                "{pages}"
            );
        }
    }
}

/// Resident growth over 50 rounds of 16 × 8 MiB dirtied.
async fn growth(pagemap_scan: bool) -> (u64, xcs::MemoryReset) {
    let (host, operator) = host(pagemap_scan).await;
    let before = resident();
    dirty(&operator, 50).await;
    let after = resident();
    (after.saturating_sub(before), host.memory_reset())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_stays_bounded_across_calls_that_dirty_much_memory() {
    // Kept: 16 slots × (1 MiB of memory + 64 KiB of tables) at most; the
    // rest is allocator and runtime noise. Were used pages not returned,
    // 16 slots × 8 MiB would stay.
    let bound = IN_FLIGHT as u64 * (MIB + 64 * 1024) + 24 * MIB;
    for pagemap_scan in [true, false] {
        let (grown, reset) = growth(pagemap_scan).await;
        assert_eq!(
            reset.memory_keep_resident,
            if reset.pagemap_scan { 1 << 20 } else { 0 }
        );
        assert!(
            grown <= bound,
            "{reset}: resident memory grew {} MiB over 800 calls of 8 MiB (bound {} MiB)",
            grown / MIB,
            bound / MIB
        );
        eprintln!("{reset}: grew {} KiB", grown >> 10);
    }
}
