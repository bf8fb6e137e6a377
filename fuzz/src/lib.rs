//! Shared setup of the xcs fuzz targets: one single-threaded tokio runtime
//! and one [`Host`] per fuzzing process, and the properties every target
//! checks on an outcome.
//!
//! The host is built once because building one reserves the pooling
//! allocator's address space and starts the epoch ticker: per-input hosts
//! would measure that, not the code under test.

use std::fmt::Debug;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::runtime::Runtime;
use xcs::policy::Policy;
use xcs::{Error, ErrorKind, Host, Limits};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime can be built")
});

static HOST: LazyLock<Host> = LazyLock::new(|| {
    let _context = RUNTIME.enter();
    Host::builder()
        .no_disk_cache()
        .default_limits(limits())
        // Every call runs its guest.
        .default_policy(Policy::new().cache(false))
        // One input runs at a time; a small pool keeps the reserved address
        // space (and ASan's view of it) small.
        .max_concurrent_instances(4)
        .max_memory_bytes_per_instance(64 << 20)
        // Distinct generated components are rarely loaded twice.
        .operator_cache_capacity(16)
        .build()
        .expect("the fuzzing host builds")
});

/// Limits of every fuzzed call and of loading (`metadata` runs under the
/// host's default limits): small enough that a generated guest which loops
/// or allocates without end costs milliseconds, not the default 10 s.
pub fn limits() -> Limits {
    Limits::default()
        .timeout(Duration::from_secs(1))
        .fuel(Some(2_000_000))
        .max_memory_bytes(16 << 20)
        .max_output_bytes(1 << 20)
}

/// The process's host.
pub fn host() -> &'static Host {
    &HOST
}

/// Runs `future` to completion on the process's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

/// The property every outcome satisfies: an error has one of the stable
/// kinds, is not one that `allowed` rules out, and renders (with its
/// sources) without panicking.
pub fn check_error(what: &str, error: &Error, allowed: impl Fn(ErrorKind) -> bool) {
    let kind = error.kind();
    let mut rendered = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        rendered.push_str(": ");
        rendered.push_str(&cause.to_string());
        source = cause.source();
    }
    trace(what, &format_args!("{kind}: {rendered}"));
    assert!(
        ErrorKind::ALL.contains(&kind),
        "{kind:?} is not in ErrorKind::ALL: {error:#?}"
    );
    assert!(allowed(kind), "unexpected {kind} error: {error:#?}");
    assert!(!rendered.is_empty(), "an error renders as text: {error:?}");
}

/// With `XCS_FUZZ_DEBUG` set, prints an outcome to stderr: run a target
/// over its corpus with `-runs=0` to see what the inputs reach.
pub fn trace(what: &str, outcome: &dyn Debug) {
    static ON: LazyLock<bool> = LazyLock::new(|| std::env::var_os("XCS_FUZZ_DEBUG").is_some());
    if *ON {
        eprintln!("xcs-fuzz: {what}: {outcome:?}");
    }
}
