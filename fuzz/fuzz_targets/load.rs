//! Loading untrusted bytes, and the first call of what loads.
//!
//! The first input byte picks how the rest becomes a component:
//! - raw bytes, as they are;
//! - a `wasm-smith` component, or a `wasm-smith` core module under an
//!   arbitrary configuration (which the host must refuse);
//! - an *operator-shaped* component: a fixed shell that satisfies the
//!   contract around a `wasm-smith` core module with the exports it needs.
//!   In one shell the generated module provides `metadata` too, so loading
//!   runs arbitrary code; in the other `metadata` comes from a fixed module
//!   and only `realloc` and `invoke` are generated, so most inputs load and
//!   the call lowers its input through an arbitrary `realloc` and lifts
//!   whatever an arbitrary `invoke` returns.
//!
//! Whatever loads is called once with `{"text": "fuzz"}`. With
//! `XCS_FUZZ_DUMP=<file>`, each input's component is written to `<file>`.
//!
//! Property: nothing panics; every outcome is `Ok` or an error with a
//! stable kind that a load (or a call) can have.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use wasm_smith::{Component, Config, Module};
use xcs::ErrorKind;
use xcs::__doc_fixture::TYPES_IMPORT;

/// `invoke(text: string) -> result<string, error>`, lifted from `$i`.
const INVOKE_EXPORT: &str = r#"
  (func (export "invoke") (param "text" string) (result (result string (error $error)))
    (canon lift (core func $i "invoke") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
"#;

/// An operator whose whole core module is generated.
const GENERATED_METADATA: Shell = Shell {
    core_exports: r#"
  (memory (export "memory") 1)
  (func (export "metadata") (result i32) unreachable)
  (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
  (func (export "invoke") (param i32 i32) (result i32) unreachable)"#,
    rest: r#"
  (core instance $i (instantiate $m))
  (func (export "metadata") (result $metadata)
    (canon lift (core func $i "metadata") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
"#,
};

/// An operator whose `metadata` is a fixed module's (name `shaped`).
const FIXED_METADATA: Shell = Shell {
    core_exports: r#"
  (memory (export "memory") 1)
  (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
  (func (export "invoke") (param i32 i32) (result i32) unreachable)"#,
    rest: r#"
  (core module $meta
    (memory (export "memory") 1)
    (data (i32.const 16) "shaped")
    (data (i32.const 32) "0.1.0")
    (func (export "metadata") (result i32)
      (i32.store (i32.const 64) (i32.const 16)) (i32.store (i32.const 68) (i32.const 6))
      (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
      (i32.const 64))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable))
  (core instance $i (instantiate $m))
  (core instance $meta_i (instantiate $meta))
  (func (export "metadata") (result $metadata)
    (canon lift (core func $meta_i "metadata") (memory (core memory $meta_i "memory"))
      (realloc (core func $meta_i "realloc"))))
"#,
};

/// A component around one generated core module `$m`.
struct Shell {
    /// The exports `$m` must have (the body of a core module).
    core_exports: &'static str,
    /// The component's items after `$m` and the types import.
    rest: &'static str,
}

/// A shell, encoded: `$m` is the first section, so a generated module
/// replaces it by splicing bytes.
struct EncodedShell {
    /// A module with exactly `$m`'s exports, for `wasm-smith`.
    core_exports: Vec<u8>,
    /// The component's header, and its sections after `$m`.
    header: Vec<u8>,
    after_module: Vec<u8>,
}

const CORE_MODULE_SECTION: u8 = 1;

impl Shell {
    fn encode(&self) -> EncodedShell {
        let core_exports =
            wat::parse_str(format!("(module {})", self.core_exports)).expect("valid WAT");
        let component = wat::parse_str(format!(
            "(component (core module $m {}) {TYPES_IMPORT} {} {INVOKE_EXPORT})",
            self.core_exports, self.rest
        ))
        .expect("valid WAT");
        assert_eq!(component[8], CORE_MODULE_SECTION, "`$m` comes first");
        let (size, leb_len) = read_leb_u32(&component[9..]);
        let end = 9 + leb_len + usize::try_from(size).expect("u32 fits usize");
        EncodedShell {
            core_exports,
            header: component[..8].to_vec(),
            after_module: component[end..].to_vec(),
        }
    }
}

impl EncodedShell {
    fn generate(&self, u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
        let config = Config {
            exports: Some(self.core_exports.clone()),
            max_imports: 0,
            // No memories beyond the exported one: the host's pool allows
            // one per module, and a refusal costs a whole compilation.
            max_memories: 0,
            max_memory32_bytes: 32 << 20,
            ..supported_config()
        };
        let module = Module::new(config, u)?.to_bytes();
        let mut component = self.header.clone();
        component.push(CORE_MODULE_SECTION);
        write_leb_u32(
            u32::try_from(module.len()).expect("generated modules are small"),
            &mut component,
        );
        component.extend_from_slice(&module);
        component.extend_from_slice(&self.after_module);
        Ok(component)
    }
}

static SHELLS: LazyLock<[EncodedShell; 2]> =
    LazyLock::new(|| [GENERATED_METADATA.encode(), FIXED_METADATA.encode()]);

fn read_leb_u32(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0_u32;
    for (index, byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    panic!("the shell has a valid section size")
}

fn write_leb_u32(mut value: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The proposals this host's engine compiles (modules using others are
/// refused before any guest code runs, which the raw and unconstrained
/// modes cover), and small sizes: compiling is most of an input's time,
/// and the host's paths do not depend on how much code a function has.
fn supported_config() -> Config {
    Config {
        gc_enabled: false,
        exceptions_enabled: false,
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        memory64_enabled: false,
        custom_descriptors_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        compact_imports_enabled: false,
        acquire_release_atomics_enabled: false,
        multibyte_array_access_enabled: false,
        // wasm-smith 0.263 encodes `externref` element segments in a form
        // that wasmtime 48's parser takes for a GC type: with reference
        // types on, most generated modules were refused before running.
        reference_types_enabled: false,
        max_funcs: 12,
        max_instructions: 200,
        max_types: 24,
        max_globals: 12,
        max_tables: 2,
        max_elements: 100,
        max_data_segments: 8,
        max_components: 4,
        max_instances: 8,
        max_modules: 4,
        ..Config::default()
    }
}

/// Kinds that no load, and no single call, can produce.
fn possible(kind: ErrorKind) -> bool {
    !matches!(
        kind,
        ErrorKind::Graph | ErrorKind::Io | ErrorKind::Config | ErrorKind::CircuitOpen
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let mode = mode % 8;
    let generated = match mode {
        0 => Ok(rest.to_vec()),
        1 => Component::new(supported_config(), &mut u).map(|component| component.to_bytes()),
        2 => Config::arbitrary(&mut u)
            .and_then(|config| Module::new(config, &mut u))
            .map(|module| module.to_bytes()),
        3 | 4 => SHELLS[0].generate(&mut u),
        _ => SHELLS[1].generate(&mut u),
    };
    let Ok(bytes) = generated else {
        return;
    };
    if let Some(path) = std::env::var_os("XCS_FUZZ_DUMP") {
        // Reproducing a finding starts from the component, not the input.
        std::fs::write(path, &bytes).expect("XCS_FUZZ_DUMP is writable");
    }
    // The shells' signature takes the input below; other components may
    // refuse it.
    let input_is_valid = mode >= 3;
    xcs_fuzz::block_on(async {
        let operator = match xcs_fuzz::host().load_bytes(bytes, "fuzz.wasm").await {
            Ok(operator) => operator,
            Err(error) => {
                xcs_fuzz::check_error(&format!("mode {mode} load"), &error, possible);
                return;
            }
        };
        match operator
            .call(&json!({ "text": "fuzz" }), &xcs_fuzz::limits())
            .await
        {
            Ok(output) => xcs_fuzz::trace(&format!("mode {mode} call"), &output),
            Err(error) => xcs_fuzz::check_error(&format!("mode {mode} call"), &error, |kind| {
                possible(kind) && !(input_is_valid && kind == ErrorKind::Validation)
            }),
        }
    });
});
