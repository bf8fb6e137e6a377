//! Paths of the operator components built for the tests and benchmarks.
//!
//! `build.rs` builds every crate under `operators/` (for wasm32-wasip2, or
//! for wasm32-unknown-unknown and made a component there when the crate
//! says `wasi = false`) into `target/guest/components/`, and generates one
//! constant per operator (`UPPER`, `WORD_COUNT`, ...) and the
//! `foreach_operator!` macro.

include!(concat!(env!("OUT_DIR"), "/operators.rs"));

/// The `xcs:examples/latency@0.1.0` capability that the `wait` operator
/// imports, counting the calls in flight (tests and benchmarks assert
/// concurrency bounds on it).
pub mod latency {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use xcs::Capability;

    /// The interface the `wait` operator imports.
    pub const INTERFACE: &str = "xcs:examples/latency@0.1.0";

    /// Calls of `sleep` in flight, and the most there were at once.
    #[derive(Debug, Default)]
    pub struct InFlight {
        now: AtomicU64,
        peak: AtomicU64,
    }

    impl InFlight {
        /// The most calls that were in flight at once since the last
        /// [`reset_peak`](Self::reset_peak).
        pub fn peak(&self) -> u64 {
            self.peak.load(Ordering::SeqCst)
        }

        /// Forgets the peak (after a warm-up, say).
        pub fn reset_peak(&self) {
            self.peak.store(0, Ordering::SeqCst);
        }
    }

    /// The capability: an async `sleep(ms: u32)` that waits on tokio's
    /// timer, and the counter of its calls in flight.
    pub fn capability() -> (Capability, Arc<InFlight>) {
        let in_flight = Arc::new(InFlight::default());
        let capability = Capability::new(INTERFACE).func_async("sleep", {
            let in_flight = in_flight.clone();
            move |(ms,): (u32,)| {
                let in_flight = in_flight.clone();
                async move {
                    let _counted = Counted::new(&in_flight);
                    tokio::time::sleep(Duration::from_millis(ms.into())).await;
                    Ok(())
                }
            }
        });
        (capability, in_flight)
    }

    /// One call in flight, until dropped (also when the call is cancelled
    /// mid-sleep, say by a deadline).
    struct Counted<'a>(&'a InFlight);

    impl<'a> Counted<'a> {
        fn new(in_flight: &'a InFlight) -> Self {
            let now = in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
            in_flight.peak.fetch_max(now, Ordering::SeqCst);
            Counted(in_flight)
        }
    }

    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

pub mod mock_http;
