//! Per-call limits and sandbox settings.

use std::time::Duration;

use crate::error::Error;

/// The seed used when none is given: fixed, so runs are reproducible.
pub const DEFAULT_SEED: u64 = 0x5eed_0000_0000_0001;

/// The longest timeout, delay or cool-down xcs keeps: about 100 years.
/// Longer ones (say `Duration::MAX`, or `"1000000years"` in a graph file)
/// are taken as this, so that deadlines computed from them cannot
/// overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `duration`, at most [`MAX_DURATION`].
pub(crate) fn capped(duration: Duration) -> Duration {
    duration.min(MAX_DURATION)
}

/// Limits and sandbox settings for one call.
///
/// Every call runs in a fresh sandbox under these limits. Build one from
/// [`Limits::default()`] and override what you need:
///
/// ```
/// use std::time::Duration;
/// let limits = xcs::Limits::default()
///     .timeout(Duration::from_millis(200))
///     .fuel(Some(10_000_000))
///     .max_memory_bytes(32 << 20);
/// assert_ne!(limits, xcs::Limits::default());
/// ```
///
/// Like wasmtime's `StoreLimitsBuilder`, it is written, not read: the
/// settings take effect in the calls it is given to. It serializes (serde)
/// for a remote executor to carry a call's limits to its worker; the
/// timeout is a duration, what is left, never an instant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "UncheckedLimits")]
pub struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) fuel: Option<u64>,
    pub(crate) max_memory_bytes: u64,
    pub(crate) max_input_bytes: u64,
    pub(crate) max_output_bytes: u64,
    pub(crate) max_table_elements: u64,
    pub(crate) max_instances: u64,
    pub(crate) max_log_bytes: u64,
    pub(crate) seed: u64,
}

/// Limits as they come from elsewhere (the wire): made into [`Limits`]
/// through the builders, so that their caps hold (a timeout past
/// [`MAX_DURATION`] is that).
#[derive(serde::Deserialize)]
struct UncheckedLimits {
    timeout: Duration,
    fuel: Option<u64>,
    max_memory_bytes: u64,
    max_input_bytes: u64,
    max_output_bytes: u64,
    max_table_elements: u64,
    max_instances: u64,
    max_log_bytes: u64,
    seed: u64,
}

impl From<UncheckedLimits> for Limits {
    fn from(unchecked: UncheckedLimits) -> Limits {
        Limits::default()
            .timeout(unchecked.timeout)
            .fuel(unchecked.fuel)
            .max_memory_bytes(unchecked.max_memory_bytes)
            .max_input_bytes(unchecked.max_input_bytes)
            .max_output_bytes(unchecked.max_output_bytes)
            .max_table_elements(unchecked.max_table_elements)
            .max_instances(unchecked.max_instances)
            .max_log_bytes(unchecked.max_log_bytes)
            .seed(unchecked.seed)
    }
}

impl Default for Limits {
    /// | setting | default |
    /// |---|---|
    /// | `timeout` | 10 s |
    /// | `fuel` | none (unbounded) |
    /// | `max_memory_bytes` | 64 MiB |
    /// | `max_input_bytes` | 64 MiB |
    /// | `max_output_bytes` | 16 MiB |
    /// | `max_table_elements` | 20,000 |
    /// | `max_instances` | 64 |
    /// | `max_log_bytes` | 64 KiB |
    /// | `seed` | [`DEFAULT_SEED`] |
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            fuel: None,
            max_memory_bytes: 64 << 20,
            max_input_bytes: 64 << 20,
            max_output_bytes: 16 << 20,
            max_table_elements: 20_000,
            max_instances: 64,
            max_log_bytes: 64 << 10,
            seed: DEFAULT_SEED,
        }
    }
}

impl Limits {
    /// Wall-clock deadline for the whole call, instantiation included.
    /// A guest that runs past it is interrupted within one epoch tick
    /// (see [`HostBuilder::epoch_tick`](crate::HostBuilder::epoch_tick)).
    /// Default: 10 s; at most [`MAX_DURATION`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = capped(timeout);
        self
    }

    /// Instruction budget (wasmtime fuel). `None`: unbounded. Needs a host
    /// built with fuel consumption on (the default). Default: `None`.
    pub fn fuel(mut self, fuel: Option<u64>) -> Self {
        self.fuel = fuel;
        self
    }

    /// Cap on the guest's linear memory, in bytes. Growing past it stops
    /// the call with a `memory` error. Default: 64 MiB.
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// Cap on the size of the input, measured as the canonical size of the
    /// values handed to the guest (strings in bytes, numbers at their WIT
    /// width). Checked before any guest code runs. Default: 64 MiB.
    pub fn max_input_bytes(mut self, bytes: u64) -> Self {
        self.max_input_bytes = bytes;
        self
    }

    /// Cap on the size of the result, measured like the input.
    /// Default: 16 MiB.
    pub fn max_output_bytes(mut self, bytes: u64) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// Cap on the number of elements of each table. Default: 20,000.
    pub fn max_table_elements(mut self, elements: u64) -> Self {
        self.max_table_elements = elements;
        self
    }

    /// Cap on the number of core instances a component may create.
    /// Default: 64.
    pub fn max_instances(mut self, instances: u64) -> Self {
        self.max_instances = instances;
        self
    }

    /// Bytes of log messages (through the host `log` import, stdout and
    /// stderr) kept per call; messages beyond are counted and dropped.
    /// Default: 64 KiB.
    pub fn max_log_bytes(mut self, bytes: u64) -> Self {
        self.max_log_bytes = bytes;
        self
    }

    /// Seed of the sandbox's randomness and virtual clocks: the same seed
    /// gives the same random bytes and clock readings. Default:
    /// [`DEFAULT_SEED`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Parses a size: `4096`, `512B`, `64KiB`, `32MiB`, `1GiB` (binary), or
/// `10KB`, `10MB`, `1GB` (decimal).
///
/// ```
/// assert_eq!(xcs::parse_size("32MiB")?, 32 << 20);
/// let error = xcs::parse_size("32 parsecs").unwrap_err();
/// assert_eq!(error.kind(), xcs::ErrorKind::Config);
/// # Ok::<(), xcs::Error>(())
/// ```
pub fn parse_size(text: &str) -> Result<u64, Error> {
    parse_size_words(text).map_err(|message| Error::Config { message })
}

fn parse_size_words(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 32MiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Bounds on the shape of a component, checked before it is compiled.
///
/// Compiling is the one step before any limit of a call applies, and its
/// cost grows faster than the component. Measured here (Cranelift, one
/// function): 1,000 loops nested over 4,000 locals, 43 KB of code, took
/// 10.7 s (over 50,000 locals, minutes and gigabytes); 5,000 nested loops
/// with a branch each 6.6 s; 20,000 nested `if`s 5.2 s; 50,000 nested
/// blocks 4.3 s — while 4,096 blocks, or 256 loops, compile in well under
/// a second. These bounds, read in one linear pass over the code, refuse
/// such shapes with an `invalid-component` error naming the bound, before
/// compiling. Real code is far inside them: CPython's interpreter loop
/// (componentize-py) nests 781 blocks and 6 loops over 271 locals;
/// componentize-js's engine 456 blocks and 6 loops. Bytes answered by a
/// valid entry of the on-disk compilation cache are not compiled, so not
/// checked either: the entry is this user's own earlier compilation of
/// the very same bytes.
///
/// | bound | default |
/// |---|---|
/// | `max_function_nesting` (blocks, loops and ifs open at once in one function) | 4,096 |
/// | `max_loop_nesting` (loops open at once in one function) | 256 |
/// | `max_loop_locals` (loops open at once × the function's locals) | 500,000 |
/// | `max_function_locals` | 50,000 |
/// | `max_function_bytes` (one function body) | 1 MiB |
/// | `max_functions` (all core modules together) | 100,000 |
/// | `max_code_bytes` (all function bodies together) | 64 MiB |
///
/// ```
/// let limits = xcs::LoadLimits::default().max_function_nesting(1024);
/// let host = xcs::Host::builder().load_limits(limits).build()?;
/// # drop(host);
/// # Ok::<(), xcs::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadLimits {
    pub(crate) max_function_nesting: u32,
    pub(crate) max_loop_nesting: u32,
    pub(crate) max_loop_locals: u64,
    pub(crate) max_function_locals: u32,
    pub(crate) max_function_bytes: u64,
    pub(crate) max_functions: u32,
    pub(crate) max_code_bytes: u64,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_function_nesting: 4096,
            max_loop_nesting: 256,
            max_loop_locals: 500_000,
            max_function_locals: 50_000,
            max_function_bytes: 1 << 20,
            max_functions: 100_000,
            max_code_bytes: 64 << 20,
        }
    }
}

impl LoadLimits {
    /// Blocks, loops and ifs open at once in one function. Default: 4,096.
    pub fn max_function_nesting(mut self, depth: u32) -> Self {
        self.max_function_nesting = depth;
        self
    }

    /// Loops open at once in one function. Default: 256.
    pub fn max_loop_nesting(mut self, depth: u32) -> Self {
        self.max_loop_nesting = depth;
        self
    }

    /// Loops open at once in one function times its locals (each loop
    /// header carries every local live in it). Default: 500,000.
    pub fn max_loop_locals(mut self, product: u64) -> Self {
        self.max_loop_locals = product;
        self
    }

    /// Locals of one function. Default: 50,000.
    pub fn max_function_locals(mut self, locals: u32) -> Self {
        self.max_function_locals = locals;
        self
    }

    /// Bytes of one function body. Default: 1 MiB.
    pub fn max_function_bytes(mut self, bytes: u64) -> Self {
        self.max_function_bytes = bytes;
        self
    }

    /// Functions of all the core modules together. Default: 100,000.
    pub fn max_functions(mut self, functions: u32) -> Self {
        self.max_functions = functions;
        self
    }

    /// Bytes of all function bodies together. Default: 64 MiB.
    pub fn max_code_bytes(mut self, bytes: u64) -> Self {
        self.max_code_bytes = bytes;
        self
    }
}
