//! The value codec: arbitrary JSON against a signature with every WIT type
//! family.
//!
//! Property: a call never panics, and since the guest ignores its input and
//! returns `ok`, every outcome is either `null` (the input was a valid value
//! and was lowered into the guest) or a `validation` error.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xcs::{ErrorKind, Operator};

/// `invoke(all: all) -> result<_, error>`, `all` a record with a field of
/// every WIT value type family: a copy of `every_family()` from
/// `tests/all/fixtures.rs`, expanded.
const EVERY_FAMILY_WAT: &str = r#"
(component
  (import "xcs:operator/types@0.1.0" (instance $types
    (type $metadata (record (field "name" string) (field "version" string)
                            (field "description" string) (field "deterministic" bool)))
    (export "metadata" (type (eq $metadata)))
    (type $error (record (field "code" string) (field "message" string) (field "retryable" bool)))
    (export "error" (type (eq $error)))))
  (alias export $types "metadata" (type $metadata))
  (alias export $types "error" (type $error))
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (data (i32.const 16) "fixture")
    (data (i32.const 32) "0.1.0")
    (data (i32.const 48) "a fixture")
    (func (export "metadata") (result i32)
      (i32.store (i32.const 64) (i32.const 16)) (i32.store (i32.const 68) (i32.const 7))
      (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
      (i32.store (i32.const 80) (i32.const 48)) (i32.store (i32.const 84) (i32.const 8))
      (i32.store8 (i32.const 88) (i32.const 1))
      (i32.const 64))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32)
      (local.set $ptr (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                               (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $ptr) (local.get 3)))
      (block $enough
        (br_if $enough (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
        (br_if $enough (i32.ne (memory.grow (i32.add (i32.shr_u (global.get $bump) (i32.const 16)) (i32.const 1)))
                               (i32.const -1)))
        unreachable)
      (local.get $ptr))
    (func (export "ok") (param i32) (result i32)
      (i32.store8 (i32.const 128) (i32.const 0))
      (i32.const 128)))
  (core instance $i (instantiate $m))
  (func (export "metadata") (result $metadata)
    (canon lift (core func $i "metadata") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (type $shape' (variant (case "circle" f64) (case "point")))
  (export $shape "shape" (type $shape'))
  (type $color' (enum "red" "green"))
  (export $color "color" (type $color'))
  (type $perms' (flags "read" "write"))
  (export $perms "perms" (type $perms'))
  (type $all' (record
    (field "flag" bool) (field "small" s8) (field "byte" u8) (field "short" s16) (field "ushort" u16)
    (field "int" s32) (field "uint" u32) (field "long" s64) (field "ulong" u64)
    (field "ratio" f32) (field "real" f64) (field "letter" char) (field "text" string)
    (field "items" (list u32)) (field "pair" (tuple u8 string)) (field "shape" $shape)
    (field "color" $color) (field "maybe" (option u32)) (field "outcome" (result u32 (error string)))
    (field "perms" $perms)))
  (export $all "all" (type $all'))
  (func (export "invoke") (param "all" $all) (result (result (error $error)))
    (canon lift (core func $i "ok") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
"#;

static EVERY_FAMILY: LazyLock<Operator> = LazyLock::new(|| {
    let wasm = wat::parse_str(EVERY_FAMILY_WAT).expect("the fixture is valid WAT");
    xcs_fuzz::block_on(xcs_fuzz::host().load_bytes(wasm, "every_family.wasm"))
        .expect("the fixture loads")
});

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let operator = &*EVERY_FAMILY;
    match xcs_fuzz::block_on(operator.call(&input, &xcs_fuzz::limits())) {
        Ok(output) => {
            xcs_fuzz::trace("call", &output);
            assert_eq!(output, Value::Null, "the guest returns ok with no payload");
        }
        Err(error) => xcs_fuzz::check_error("call", &error, |kind| kind == ErrorKind::Validation),
    }
});
