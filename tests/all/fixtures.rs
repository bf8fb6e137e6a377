//! Hand-written components for cases a Rust guest cannot express.

// The contract's types, imported the way wit-bindgen components do.
use xcs::__doc_fixture::TYPES_IMPORT;

/// Core functions every fixture module has: `metadata` (name `fixture`),
/// a bump-allocating `realloc`, and `ok`, returning `ok` with no payload.
/// `$metadata_body` replaces the metadata function's body when given.
fn core_module(metadata_body: &str, extra: &str) -> String {
    let metadata_body = if metadata_body.is_empty() {
        r#"(i32.store (i32.const 64) (i32.const 16)) (i32.store (i32.const 68) (i32.const 7))
           (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
           (i32.store (i32.const 80) (i32.const 48)) (i32.store (i32.const 84) (i32.const 8))
           (i32.store8 (i32.const 88) (i32.const 1))
           (i32.const 64)"#
    } else {
        metadata_body
    };
    format!(
        r#"
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (data (i32.const 16) "fixture")
    (data (i32.const 32) "0.1.0")
    (data (i32.const 48) "a fixture")
    (func (export "metadata") (result i32) {metadata_body})
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
      (i32.const 128))
    {extra})
  (core instance $i (instantiate $m))
"#
    )
}

const LIFT: &str = r#"(memory (core memory $i "memory")) (realloc (core func $i "realloc"))"#;

fn metadata_export() -> String {
    format!(
        r#"(func (export "metadata") (result $metadata) (canon lift (core func $i "metadata") {LIFT}))"#
    )
}

/// A component with `invoke(all: all) -> result<_, error>` where `all` is a
/// record holding one field of every WIT value type family. The guest
/// ignores its input: only the host's checking and lowering are exercised.
/// (A file, because the `codec` fuzz target uses it too.)
pub fn every_family() -> String {
    include_str!("../wat/every-family.wat").to_owned()
}

/// The file keeps its own copy of the contract's types import (it is a
/// whole component): it must not drift from the one the host's fixtures use.
#[test]
fn every_family_imports_the_contract_types() {
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words(&every_family()).contains(&words(TYPES_IMPORT)),
        "tests/wat/every-family.wat and xcs::__doc_fixture::TYPES_IMPORT differ"
    );
}

/// `invoke(bytes: list<u8>) -> result<_, error>` whose guest traps as soon
/// as it runs (its `realloc`, called to receive the list, is `unreachable`):
/// proves whether an input reached the guest.
pub fn traps_when_run() -> String {
    format!(
        r#"(component {TYPES_IMPORT}
  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 16) "fixture")
    (data (i32.const 32) "0.1.0")
    (data (i32.const 48) "a fixture")
    (func (export "metadata") (result i32)
      (i32.store (i32.const 64) (i32.const 16)) (i32.store (i32.const 68) (i32.const 7))
      (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
      (i32.store (i32.const 80) (i32.const 48)) (i32.store (i32.const 84) (i32.const 9))
      (i32.store8 (i32.const 88) (i32.const 1))
      (i32.const 64))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
    (func (export "invoke") (param i32 i32) (result i32) unreachable))
  (core instance $i (instantiate $m))
  {metadata}
  (func (export "invoke") (param "bytes" (list u8)) (result (result (error $error)))
    (canon lift (core func $i "invoke") {LIFT})))"#,
        metadata = metadata_export(),
    )
}

/// A component whose `metadata` export runs `body` (e.g. loops or traps).
pub fn metadata_runs(body: &str) -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result (result (error $error))) (canon lift (core func $i "ok2") {LIFT})))"#,
        core = core_module(
            body,
            r#"(func (export "ok2") (result i32) (i32.store8 (i32.const 128) (i32.const 0)) (i32.const 128))"#
        ),
        metadata = metadata_export(),
    )
}

/// A component with a valid `metadata` but `invoke` returning `u32`.
pub fn invoke_returns_u32() -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result u32) (canon lift (core func $i "seven") {LIFT})))"#,
        core = core_module("", r#"(func (export "seven") (result i32) (i32.const 7))"#),
        metadata = metadata_export(),
    )
}

/// A component with only `metadata`, no `invoke`.
pub fn no_invoke() -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata})"#,
        core = core_module("", ""),
        metadata = metadata_export()
    )
}

/// A component that imports the instance `name` (with no functions), and
/// is otherwise a valid operator.
pub fn importing(name: &str) -> String {
    importing_all(&[name])
}

/// A component that imports every instance of `names` (with no
/// functions), and is otherwise a valid operator.
pub fn importing_all(names: &[&str]) -> String {
    let imports: String = names
        .iter()
        .map(|name| format!(r#"(import "{name}" (instance))"#))
        .collect();
    format!(
        r#"(component {imports}
  {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result (result (error $error))) (canon lift (core func $i "ok2") {LIFT})))"#,
        core = core_module(
            "",
            r#"(func (export "ok2") (result i32) (i32.store8 (i32.const 128) (i32.const 0)) (i32.const 128))"#
        ),
        metadata = metadata_export(),
    )
}

/// A component whose `invoke` takes a handle to a resource it defines.
pub fn takes_a_resource() -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (type $r' (resource (rep i32)))
  (export $r "thing" (type $r'))
  (func (export "invoke") (param "thing" (own $r)) (result (result (error $error)))
    (canon lift (core func $i "take") {LIFT})))"#,
        core = core_module("", TAKES_A_HANDLE),
        metadata = metadata_export(),
    )
}

/// A component whose `invoke` names a flags, an enum, a record (with a
/// field spelled like a WIT keyword), an alias and a variant:
/// `invoke(t: thing, data: bytes) -> result<list<shape>, error>`.
pub fn named_types() -> String {
    format!(
        r#"(component {TYPES_IMPORT}
  (type $perms' (flags "read" "write"))
  (import "perms" (type $perms (eq $perms')))
  (type $color' (enum "red" "green"))
  (import "color" (type $color (eq $color')))
  (type $thing' (record (field "perms" $perms) (field "color" $color) (field "type" u32)))
  (import "thing" (type $thing (eq $thing')))
  (type $bytes' (list u8))
  (import "bytes" (type $bytes (eq $bytes')))
  (type $shape' (variant (case "circle" f64) (case "none")))
  (import "shape" (type $shape (eq $shape')))
  {core} {metadata}
  (func (export "invoke") (param "t" $thing) (param "data" $bytes)
    (result (result (list $shape) (error $error)))
    (canon lift (core func $i "five") {LIFT})))"#,
        core = core_module(
            "",
            r#"(func (export "five") (param i32 i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 128) (i32.const 0)) (i32.store (i32.const 132) (i32.const 0))
    (i32.store (i32.const 136) (i32.const 0)) (i32.const 128))"#
        ),
        metadata = metadata_export(),
    )
}

/// A component whose `invoke` takes a handle to a resource of an interface
/// it imports (which no embedder granted).
pub fn takes_an_imported_resource() -> String {
    format!(
        r#"(component {TYPES_IMPORT}
  (import "test:things/things" (instance $things (export "thing" (type (sub resource)))))
  (alias export $things "thing" (type $r))
  {core} {metadata}
  (func (export "invoke") (param "thing" (own $r)) (result (result (error $error)))
    (canon lift (core func $i "take") {LIFT})))"#,
        core = core_module("", TAKES_A_HANDLE),
        metadata = metadata_export(),
    )
}

/// A core function taking a handle (an i32) and returning `ok`.
const TAKES_A_HANDLE: &str = r#"(func (export "take") (param i32) (result i32)
    (i32.store8 (i32.const 128) (i32.const 0)) (i32.const 128))"#;

/// A component whose core module traps in its start function, so every
/// instantiation (the load's `metadata` call included) traps.
pub fn traps_in_start() -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result (result (error $error))) (canon lift (core func $i "ok2") {LIFT})))"#,
        core = core_module(
            "",
            r#"(func $boom unreachable) (start $boom)
               (func (export "ok2") (result i32) (i32.store8 (i32.const 128) (i32.const 0)) (i32.const 128))"#
        ),
        metadata = metadata_export(),
    )
}

/// `invoke() -> result<ty, error>` for a `ty` that is a string or a list:
/// the guest runs `setup`, then returns `ok` with the pointer and length
/// it is given, whatever its memory holds there (or does not hold).
/// Memory at 512 holds the bytes 0xff 0xfe (not UTF-8).
pub fn returns_pointer_and_length(ty: &str, setup: &str, pointer: u32, length: u32) -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result (result {ty} (error $error))) (canon lift (core func $i "give") {LIFT})))"#,
        core = core_module(
            "",
            &format!(
                r#"(data (i32.const 512) "\ff\fe")
               (func (export "give") (result i32)
                 {setup}
                 (i32.store8 (i32.const 256) (i32.const 0))
                 (i32.store (i32.const 260) (i32.const {pointer}))
                 (i32.store (i32.const 264) (i32.const {length}))
                 (i32.const 256))"#
            )
        ),
        metadata = metadata_export(),
    )
}

/// `invoke(pages: u32) -> result<u32, error>`: grows its memory by
/// `pages` 64 KiB pages, writes to every one, and returns its memory size
/// in pages (traps when the growth is refused).
pub fn allocates_then_returns() -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (param "pages" u32) (result (result u32 (error $error)))
    (canon lift (core func $i "grow") {LIFT})))"#,
        core = core_module(
            "",
            r#"(func (export "grow") (param $pages i32) (result i32)
                 (local $base i32) (local $page i32)
                 (local.set $base (memory.grow (local.get $pages)))
                 (if (i32.eq (local.get $base) (i32.const -1)) (then unreachable))
                 (block $done
                   (loop $touch
                     (br_if $done (i32.ge_u (local.get $page) (local.get $pages)))
                     (i32.store8 (i32.mul (i32.add (local.get $base) (local.get $page)) (i32.const 65536))
                                 (i32.const 0xa5))
                     (local.set $page (i32.add (local.get $page) (i32.const 1)))
                     (br $touch)))
                 (i32.store8 (i32.const 256) (i32.const 0))
                 (i32.store (i32.const 260) (memory.size))
                 (i32.const 256))"#
        ),
        metadata = metadata_export(),
    )
}

/// `invoke(pages: u32) -> result<u32, error>`: grows its memory by
/// `pages` 64 KiB pages and fills them whole (every byte dirty), returning
/// its memory size in pages (traps when the growth is refused). It also
/// overwrites a byte of its data segment and a zeroed kilobyte of its
/// first page, after checking that both are as instantiation leaves them:
/// it traps if an earlier call's writes are still there.
pub fn dirties_memory() -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (param "pages" u32) (result (result u32 (error $error)))
    (canon lift (core func $i "grow") {LIFT})))"#,
        core = core_module(
            "",
            r#"(func (export "grow") (param $pages i32) (result i32)
                 (local $base i32)
                 (if (i32.ne (i32.load8_u (i32.const 16)) (i32.const 0x66)) (then unreachable))
                 (if (i32.ne (i32.load8_u (i32.const 1024)) (i32.const 0)) (then unreachable))
                 (if (i32.ne (i32.load8_u (i32.const 2047)) (i32.const 0)) (then unreachable))
                 (i32.store8 (i32.const 16) (i32.const 0xa5))
                 (memory.fill (i32.const 1024) (i32.const 0xa5) (i32.const 1024))
                 (local.set $base (memory.grow (local.get $pages)))
                 (if (i32.eq (local.get $base) (i32.const -1)) (then unreachable))
                 (memory.fill (i32.mul (local.get $base) (i32.const 65536))
                              (i32.const 0xa5)
                              (i32.mul (local.get $pages) (i32.const 65536)))
                 (i32.store8 (i32.const 256) (i32.const 0))
                 (i32.store (i32.const 260) (memory.size))
                 (i32.const 256))"#
        ),
        metadata = metadata_export(),
    )
}

/// `invoke(x: list<element>) -> result<list<element>, error>` returning
/// its argument unchanged: the guest hands back the pointer and length the
/// host lowered the list to, so the output is the host's own lowering
/// lifted again. `type_definitions` defines (and exports, as the component
/// model requires of records, variants, enums and flags) the named types
/// `element` refers to.
pub fn identity(type_definitions: &str, element: &str) -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  {type_definitions}
  (func (export "invoke") (param "x" (list {element})) (result (result (list {element}) (error $error)))
    (canon lift (core func $i "echo") {LIFT})))"#,
        core = core_module(
            "",
            r#"(func (export "echo") (param $pointer i32) (param $length i32) (result i32)
                 (i32.store8 (i32.const 256) (i32.const 0))
                 (i32.store (i32.const 260) (local.get $pointer))
                 (i32.store (i32.const 264) (local.get $length))
                 (i32.const 256))"#
        ),
        metadata = metadata_export(),
    )
}

/// `invoke() -> result<_, error>` running `body` (core WAT instructions)
/// before it returns `ok`; `declarations` go into the core module (a
/// table, say).
pub fn invoke_runs(declarations: &str, body: &str) -> String {
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result (result (error $error))) (canon lift (core func $i "run") {LIFT})))"#,
        core = core_module(
            "",
            &format!(
                r#"{declarations}
    (func (export "run") (result i32) {body} (i32.store8 (i32.const 128) (i32.const 0)) (i32.const 128))"#
            ),
        ),
        metadata = metadata_export(),
    )
}

/// A valid operator whose metadata says `name` and `description` (WAT
/// string literals: `\1b` is an escape character).
pub fn described(name: &str, name_len: u32, description: &str, description_len: u32) -> String {
    let metadata_body = format!(
        r#"(i32.store (i32.const 64) (i32.const 256)) (i32.store (i32.const 68) (i32.const {name_len}))
           (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
           (i32.store (i32.const 80) (i32.const 1024)) (i32.store (i32.const 84) (i32.const {description_len}))
           (i32.store8 (i32.const 88) (i32.const 1))
           (i32.const 64)"#
    );
    format!(
        r#"(component {TYPES_IMPORT} {core} {metadata}
  (func (export "invoke") (result (result (error $error))) (canon lift (core func $i "ok2") {LIFT})))"#,
        core = core_module(
            &metadata_body,
            &format!(
                r#"(data (i32.const 256) "{name}") (data (i32.const 1024) "{description}")
    (func (export "ok2") (result i32) (i32.store8 (i32.const 128) (i32.const 0)) (i32.const 128))"#
            ),
        ),
        metadata = metadata_export(),
    )
}
