//! Helpers shared by the benchmarks: the quick-run switch and medians.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Runs a bench's async body on a multi-threaded runtime; an error is
/// printed and fails the process.
#[allow(
    dead_code,
    reason = "each bench compiles this module; not every one is async"
)]
pub fn run_async(body: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(body));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `XCS_BENCH_QUICK` asks for a smoke run.
pub fn quick() -> bool {
    std::env::var_os("XCS_BENCH_QUICK").is_some_and(|value| !value.is_empty() && value != "0")
}

/// Times in microseconds, one per batch, run, node or call.
#[derive(Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Records a batch of `operations` that took `elapsed`, per operation.
    pub fn push(&mut self, elapsed: Duration, operations: usize) {
        self.0.push(elapsed.as_secs_f64() * 1e6 / operations as f64);
    }

    /// The `q` quantile (0 to 1); NaN without samples.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            len => sorted[((len - 1) as f64 * q).round() as usize],
        }
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// `median (p25–p75)`, in µs or ms.
    pub fn summary(&self) -> String {
        let (low, median, high) = (self.quantile(0.25), self.median(), self.quantile(0.75));
        if median >= 1000.0 {
            format!(
                "{:.2} ms ({:.2}–{:.2})",
                median / 1e3,
                low / 1e3,
                high / 1e3
            )
        } else {
            format!("{median:.2} µs ({low:.2}–{high:.2})")
        }
    }
}
