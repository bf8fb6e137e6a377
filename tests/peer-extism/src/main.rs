//! The Extism peer of xcs's call benchmark (`tests/benches/call.rs`).
//!
//! Extism 1.30 builds its own wasmtime (43), so it lives in its own
//! workspace and process: the call benchmark starts this binary and sends
//! it one command per line on stdin, interleaved with its own batches, so
//! that both are measured in the same run under the same load:
//!
//! - `fresh N`: N calls, each on a plugin freshly instantiated from one
//!   `CompiledPlugin` (Extism's equivalent of xcs's fresh sandbox per call);
//! - `reused N`: N calls on one plugin instance (not isolated);
//!
//! and it answers each with one line: the batch's wall time in nanoseconds.
//! The plugin is the smallest Extism plugin: a core module whose `noop`
//! export returns 0 and writes no output.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Instant;

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};

const NOOP: &str = r#"(module (func (export "noop") (result i32) (i32.const 0)))"#;

fn call(plugin: &mut Plugin) -> Result<(), String> {
    let output: &[u8] = plugin
        .call("noop", [0u8; 0].as_slice())
        .map_err(|error| format!("calling noop: {error:#}"))?;
    if output.is_empty() {
        Ok(())
    } else {
        Err(format!("noop returned {} bytes", output.len()))
    }
}

fn run() -> Result<(), String> {
    let module = wat::parse_str(NOOP).map_err(|error| error.to_string())?;
    let manifest = Manifest::new([Wasm::data(module)]);
    let compiled = CompiledPlugin::new(PluginBuilder::new(manifest).with_wasi(false))
        .map_err(|error| format!("compiling the plugin: {error:#}"))?;
    let fresh = || Plugin::new_from_compiled(&compiled).map_err(|error| format!("{error:#}"));
    let mut reused = fresh()?;
    // Warm-up, and a check that both paths work before anything is timed.
    for _ in 0..50 {
        call(&mut fresh()?)?;
        call(&mut reused)?;
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(|error| format!("reading a command: {error}"))?;
        let (what, count) = line
            .split_once(' ')
            .ok_or_else(|| format!("unknown command {line:?}"))?;
        let count: u64 = count
            .parse()
            .map_err(|_| format!("bad count in {line:?}"))?;
        let started = Instant::now();
        match what {
            "fresh" => {
                for _ in 0..count {
                    call(&mut fresh()?)?;
                }
            }
            "reused" => {
                for _ in 0..count {
                    call(&mut reused)?;
                }
            }
            _ => return Err(format!("unknown command {line:?}")),
        }
        let elapsed = started.elapsed().as_nanos();
        writeln!(stdout, "{elapsed}")
            .and_then(|()| stdout.flush())
            .map_err(|error| format!("answering: {error}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xcs-peer-extism: {message}");
            ExitCode::FAILURE
        }
    }
}
