//! Loading: every way a component can be wrong gives a typed error that
//! names the problem, and the same bytes compile once.

use std::time::Duration;

use serde_json::json;
use xcs::{Capability, ErrorKind, Host, Limits};

use crate::fixtures;
use crate::util::{assert_healthy, expect_kind, host, load_wat};

/// Core modules, core instances and imported interfaces of a component,
/// nested ones included.
fn shape(path: &str) -> (usize, usize, Vec<String>) {
    let bytes = std::fs::read(path).expect("the operator was built");
    let (mut modules, mut instances, mut imports) = (0, 0_usize, Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.expect("a valid component") {
            wasmparser::Payload::ModuleSection { .. } => modules += 1,
            wasmparser::Payload::InstanceSection(section) => instances += section.count() as usize,
            wasmparser::Payload::ComponentImportSection(section) => {
                for import in section {
                    imports.push(import.expect("a valid import").name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    (modules, instances, imports)
}

#[tokio::test]
async fn lean_operators_import_no_wasi_and_instantiate_less() {
    let builds = [
        (xcs_tests::NOOP, xcs_tests::NOOP_WASIP2),
        (xcs_tests::UPPER, xcs_tests::UPPER_WASIP2),
        (xcs_tests::SUM, xcs_tests::SUM_WASIP2),
    ];
    for (lean, wasip2) in builds {
        let (_, lean_instances, lean_imports) = shape(lean);
        let (_, wasip2_instances, wasip2_imports) = shape(wasip2);
        assert!(
            lean_imports
                .iter()
                .all(|import| !import.starts_with("wasi:")),
            "{lean} imports no WASI: {lean_imports:?}"
        );
        // The same code built for wasip2 links the adapter and WASI's stdio.
        assert!(
            wasip2_imports
                .iter()
                .any(|import| import.starts_with("wasi:cli/")),
            "{wasip2_imports:?}"
        );
        assert!(
            lean_instances * 3 <= wasip2_instances,
            "{lean}: {lean_instances} core instances, {wasip2_instances} in the wasip2 build"
        );
    }
    // Without the panic hook nothing is imported that needs lowering: one
    // core module, instantiated once.
    assert_eq!(shape(xcs_tests::NOOP).0, 1, "noop is one core module");
    // Lean components run like any other.
    let host = host();
    let upper = host.load(xcs_tests::UPPER).await.expect("upper loads");
    assert_eq!(
        upper
            .call(&json!(["lean"]), &Limits::default())
            .await
            .expect("upper runs"),
        json!("LEAN")
    );
}

#[tokio::test]
async fn the_lean_allocator_moves_on_to_grown_memory() {
    // Past the ~50 KiB that lean builds allocate from before growing the
    // memory: large values, reallocated while they grow, and many small
    // blocks freed out of order.
    let host = host();
    let upper = host.load(xcs_tests::UPPER).await.expect("upper loads");
    // A small call fits in the free end of the initial memory: it does not
    // grow the memory at all (one `memory.grow` per call was the cost).
    let bytes = std::fs::read(xcs_tests::UPPER).expect("upper was built");
    let initial: u64 = wasmparser::Parser::new(0)
        .parse_all(&bytes)
        .find_map(|payload| match payload.expect("a valid component") {
            wasmparser::Payload::MemorySection(memories) => {
                Some(memories.into_iter().next()?.expect("a memory").initial * 65_536)
            }
            _ => None,
        })
        .expect("upper has a memory");
    let small = upper
        .call_with_stats(&json!(["abc"]), &Limits::default())
        .await
        .expect("a small upper");
    assert_eq!(small.stats.peak_memory_bytes, initial, "no memory.grow");
    let text = "abc ".repeat(300_000);
    let output = upper
        .call(&json!([text]), &Limits::default())
        .await
        .expect("a 1.2 MB upper");
    assert_eq!(output, json!(text.to_uppercase()));
    let sort = host.load(xcs_tests::SORT).await.expect("sort loads");
    let items: Vec<String> = (0..20_000)
        .map(|i| format!("item {}", (i * 7919) % 20_000))
        .collect();
    let mut sorted = items.clone();
    sorted.sort_unstable();
    assert_eq!(
        sort.call(&json!([items]), &Limits::default())
            .await
            .expect("sort runs"),
        json!(sorted)
    );
    // Growing past the memory cap is a `memory` error, as in wasip2 builds.
    expect_kind(
        upper
            .call(&json!([text]), &Limits::default().max_memory_bytes(2 << 20))
            .await,
        ErrorKind::Memory,
    );
    assert_healthy(&host).await;
}

#[tokio::test]
async fn malformed_bytes_are_an_invalid_component() {
    let host = host();
    let error = expect_kind(
        host.load_bytes(b"hello, world".to_vec(), "hello.wasm")
            .await,
        ErrorKind::InvalidComponent,
    );
    assert!(
        error
            .to_string()
            .starts_with("hello.wasm: not a WebAssembly binary"),
        "{error}"
    );
    expect_kind(
        host.load_bytes(Vec::new(), "empty.wasm").await,
        ErrorKind::InvalidComponent,
    );
    assert_healthy(&host).await;
}

#[tokio::test]
async fn truncated_component_is_invalid() {
    let host = host();
    let bytes = std::fs::read(xcs_tests::UPPER).unwrap();
    for cut in [9, bytes.len() / 2, bytes.len() - 1] {
        let error = expect_kind(
            host.load_bytes(bytes[..cut].to_vec(), "cut.wasm").await,
            ErrorKind::InvalidComponent,
        );
        assert!(
            std::error::Error::source(&error).is_some(),
            "the parser's reason is kept as the cause"
        );
    }
    assert_healthy(&host).await;
}

#[tokio::test]
async fn core_module_is_refused_with_how_to_fix_it() {
    let host = host();
    let module = wat::parse_str("(module (func (export \"invoke\")))").unwrap();
    let error = expect_kind(
        host.load_bytes(module, "module.wasm").await,
        ErrorKind::InvalidComponent,
    );
    let message = error.to_string();
    assert!(
        message.contains("core WebAssembly module, not a component"),
        "{message}"
    );
    assert!(
        message.contains("wasm32-wasip2"),
        "says how to make one: {message}"
    );
}

#[tokio::test]
async fn component_without_the_contract() {
    let host = host();
    let error = expect_kind(load_wat(&host, "(component)").await, ErrorKind::Contract);
    assert!(
        error.to_string().contains("no `invoke` function export"),
        "{error}"
    );
    let error = expect_kind(
        load_wat(&host, &fixtures::no_invoke()).await,
        ErrorKind::Contract,
    );
    assert!(error.to_string().contains("no `invoke`"), "{error}");
    let error = expect_kind(
        load_wat(&host, &fixtures::invoke_returns_u32()).await,
        ErrorKind::Contract,
    );
    assert!(
        error.to_string().contains("must return result<T, error>"),
        "{error}"
    );
    assert!(error.to_string().contains("it returns u32"), "{error}");
    assert_healthy(&host).await;
}

/// The signature keeps the WIT names of its flags, enums, records,
/// aliases and variants, defines each once after what it uses, and escapes
/// a name spelled like a WIT keyword; the structural types (what inputs
/// are checked against) are unchanged.
#[tokio::test]
async fn signatures_keep_their_wit_names() {
    let operator = load_wat(&host(), &fixtures::named_types())
        .await
        .expect("loads");
    let signature = operator.signature();
    assert_eq!(
        signature.to_string(),
        "func(t: thing, data: bytes) -> result<list<shape>, error>"
    );
    let definitions: Vec<(&str, &str)> = signature
        .types
        .iter()
        .map(|ty| (ty.name.as_str(), ty.definition.as_str()))
        .collect();
    assert_eq!(
        definitions,
        [
            ("perms", "flags perms { read, write }"),
            ("color", "enum color { red, green }"),
            (
                "thing",
                "record thing { perms: perms, color: color, %type: u32 }"
            ),
            ("bytes", "type bytes = list<u8>"),
            ("shape", "variant shape { circle(f64), none }"),
        ]
    );
    assert_eq!(signature.params[0].wit, "thing");
    assert_eq!(
        signature.params[0].ty.to_string(),
        "record { perms: flags { read, write }, color: enum { red, green }, %type: u32 }"
    );
    assert_eq!(signature.result_wit.as_deref(), Some("list<shape>"));
}

/// A resource in `invoke`'s signature is a contract error saying so,
/// whether the component defines the resource or imports the interface
/// that does (not a capability error: no grant would make it callable).
#[tokio::test]
async fn resource_parameters_are_a_contract_error() {
    let host = host();
    for (fixture, wat) in [
        ("own", fixtures::takes_a_resource()),
        ("imported", fixtures::takes_an_imported_resource()),
    ] {
        let error = expect_kind(load_wat(&host, &wat).await, ErrorKind::Contract);
        let text = error.to_string();
        assert!(
            text.contains("`thing`")
                && text.contains("resources are not supported in operator signatures"),
            "{fixture}: {error}"
        );
        assert!(!text.contains("Capability"), "{fixture}: {error}");
    }
    assert_healthy(&host).await;
}

/// Sockets are linked inert, as the filesystem is without preopens: an
/// operator that merely links them (as componentize-py's output does)
/// loads and runs. HTTP is refused, saying how componentize-js builds
/// without it.
#[tokio::test]
async fn sockets_link_inert_and_http_is_refused() {
    let host = host();
    let sockets = [
        "wasi:sockets/network@0.2.0",
        "wasi:sockets/instance-network@0.2.6",
        "wasi:sockets/tcp@0.2.6",
        "wasi:sockets/tcp-create-socket@0.2.6",
        "wasi:sockets/udp@0.2.6",
        "wasi:sockets/udp-create-socket@0.2.6",
        "wasi:sockets/ip-name-lookup@0.2.6",
    ];
    let linked = load_wat(&host, &fixtures::importing_all(&sockets))
        .await
        .unwrap();
    assert_eq!(
        linked.call(&json!([]), &Limits::default()).await.unwrap(),
        serde_json::Value::Null
    );
    let error = expect_kind(
        load_wat(
            &host,
            &fixtures::importing("wasi:http/outgoing-handler@0.2.6"),
        )
        .await,
        ErrorKind::Capability,
    );
    assert!(error.to_string().contains("--disable http"), "{error}");
    assert_healthy(&host).await;
}

/// Every refused import is named in one error, read from the bytes before
/// anything is compiled.
#[tokio::test]
async fn every_refused_import_is_named_before_compiling() {
    let host = Host::builder().no_disk_cache().build().unwrap();
    let error = expect_kind(
        load_wat(
            &host,
            &fixtures::importing_all(&[
                "wasi:cli/environment@0.2.6",
                "acme:kv/store@1.0.0",
                "wasi:keyvalue/store@0.2.0",
                "wasi:random/random@9.9.9",
            ]),
        )
        .await,
        ErrorKind::Capability,
    );
    match &error {
        xcs::Error::Capability { import, also, .. } => {
            assert_eq!(import, "acme:kv/store@1.0.0");
            assert_eq!(
                also,
                &["wasi:keyvalue/store@0.2.0", "wasi:random/random@9.9.9"]
            );
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("also refused: `wasi:keyvalue/store@0.2.0`, `wasi:random/random@9.9.9`"),
        "{message}"
    );
    assert_eq!(host.compilations(), 0, "refused before compiling");
}

#[tokio::test]
async fn ungranted_import_names_the_import_and_granting_it_works() {
    let error = expect_kind(
        load_wat(&host(), &fixtures::importing("acme:kv/store@1.0.0")).await,
        ErrorKind::Capability,
    );
    assert!(
        error.to_string().contains("`acme:kv/store@1.0.0`"),
        "{error}"
    );
    assert!(
        error.to_string().contains("xcs::Capability"),
        "says how to grant it: {error}"
    );

    let granted = Host::builder()
        .grant(Capability::new("acme:kv/store@1.0.0"))
        .build()
        .unwrap();
    let operator = load_wat(&granted, &fixtures::importing("acme:kv/store@1.0.0"))
        .await
        .unwrap();
    assert_eq!(
        operator.call(&json!([]), &Limits::default()).await.unwrap(),
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn other_contract_version_is_refused() {
    let error = expect_kind(
        load_wat(&host(), &fixtures::importing("xcs:operator/host@0.2.0")).await,
        ErrorKind::Capability,
    );
    assert!(
        error
            .to_string()
            .contains("this host implements xcs:operator/host@0.1.0"),
        "{error}"
    );
}

#[tokio::test]
async fn metadata_that_traps_or_loops_fails_the_load_cleanly() {
    let host = Host::builder()
        .default_limits(Limits::default().timeout(Duration::from_millis(300)))
        .build()
        .unwrap();
    expect_kind(
        load_wat(&host, &fixtures::metadata_runs("unreachable")).await,
        ErrorKind::Trap,
    );
    expect_kind(
        load_wat(
            &host,
            &fixtures::metadata_runs("(loop $l (br $l)) unreachable"),
        )
        .await,
        ErrorKind::Timeout,
    );
    assert_healthy(&host).await;
}

#[tokio::test]
async fn same_bytes_compile_once() {
    let host = Host::builder().no_disk_cache().build().unwrap();
    let bytes = std::fs::read(xcs_tests::SORT).unwrap();
    let loads = (0..10).map(|_| host.load_bytes(bytes.clone(), "sort.wasm"));
    let operators = futures::future::join_all(loads).await;
    let again = host.load(xcs_tests::SORT).await.unwrap();
    for operator in operators {
        assert_eq!(operator.unwrap().digest(), again.digest());
    }
    assert!(again.digest().starts_with("sha256:") && again.digest().len() == 7 + 64);
    assert_eq!(
        host.compilations(),
        1,
        "ten concurrent loads and one more compiled once"
    );
}

#[tokio::test]
async fn inspect_reports_imports() {
    let operator = crate::util::load(&host(), xcs_tests::CHATTY).await;
    let imports = operator.imports();
    assert!(
        imports
            .iter()
            .any(|import| import == "xcs:operator/host@0.1.0"),
        "{imports:?}"
    );
    assert!(
        imports
            .iter()
            .all(|import| !import.starts_with("wasi:sockets")),
        "{imports:?}"
    );
}
