//! Loading an operator, step by step: the header says it is a component;
//! it imports only what the host provides or the embedder granted (read
//! from the bytes); it compiles (or comes from the on-disk cache); it exports `invoke` with a
//! signature the host can call and `metadata`; and, run once in a
//! sandbox, `metadata` describes it.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use super::wit::{Invoke, Spelling};
use super::{Metadata, Operator, OperatorInner};
use crate::disk_cache::{Lookup, hex};
use crate::error::{self, Error, SharedError};
use crate::policy::PolicyState;
use crate::runtime::Runtime;
use crate::sandbox;
use crate::store::{StoreState, bindings};
use crate::types::{
    MAX_SIGNATURE_BYTES, Param, RESOURCE_HANDLES, Signature, Unsupported, WitType, is_operator_name,
};

/// The interfaces of the contract, as components import them.
const HOST_INTERFACE: &str = "xcs:operator/host@0.1.0";
const TYPES_INTERFACE: &str = "xcs:operator/types@0.1.0";
/// The interface that makes an operator a composite.
pub(crate) const COMPOSE_INTERFACE: &str = "xcs:operator/compose@0.1.0";
const CONTRACT_PACKAGE: &str = "xcs:operator/";

/// WASI interfaces the sandbox provides, all inert unless granted: no
/// preopened directories, no environment, virtual clocks and randomness.
/// So are `wasi:sockets/*` (every socket, address and name lookup is
/// refused). HTTP ([`HTTP_INTERFACES`]) is linked too, but an operator
/// that imports `outgoing-handler` loads only when HTTP is granted to it.
const PROVIDED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The `wasi:http` interfaces the host links (0.2.x).
const HTTP_INTERFACES: &[&str] = &["wasi:http/types", "wasi:http/outgoing-handler"];
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler";

/// A `capability` error unless an operator that imports
/// `wasi:http/outgoing-handler` is granted some HTTP origin: the error
/// names the flag and the grants-file key that would grant it.
fn check_http_granted(
    imports: &[String],
    name: &str,
    grants: Option<&crate::grants::Grants>,
) -> Result<(), Error> {
    let Some(import) = imports
        .iter()
        .find(|import| import.split('@').next() == Some(OUTGOING_HANDLER))
    else {
        return Ok(());
    };
    if grants.is_some_and(|grants| grants.http_grant().is_granted()) {
        return Ok(());
    }
    Err(Error::Capability {
        operator: name.to_owned(),
        import: import.clone(),
        hint: Some(format!(
            "no HTTP origin is granted to it: grant one with `--allow-http URLPATTERN` \
             (e.g. --allow-http https://api.example.com), or `http = [\"https://api.example.com\"]` \
             in `[grants.{name}]` or `[grants.default]` of the grants file (xcs.toml); \
             componentize-js links HTTP unless built with `--disable http fetch-event`"
        )),
        also: Vec::new(),
    })
}

/// The SHA-256 digest of a component's bytes: the key of loaded operators.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Loads one operator from `bytes` (whose digest is `digest`); errors name
/// it `source_name` until its metadata says its name. Step 3 checks the
/// shape of the code against [`LoadLimits`](crate::LoadLimits) before
/// compiling, unless the on-disk cache answers.
pub(crate) async fn load(
    runtime: &Arc<Runtime>,
    bytes: Vec<u8>,
    digest: [u8; 32],
    source_name: &str,
) -> Result<Operator, Error> {
    check_header(&bytes, source_name)?;
    let (spelling, imports, component) = compile(runtime, bytes, digest, source_name).await?;
    let (signature, invoke) = read_contract(runtime, &component, source_name, spelling)?;
    let (pre, bindings_pre) = link(runtime, &component, source_name)?;
    let metadata = read_metadata(runtime, bindings_pre, source_name).await?;
    tracing::debug!(operator = %metadata.name, %signature, "loaded");
    let metrics = runtime.metrics.handles(&metadata.name);
    let digest = format!("sha256:{}", hex(&digest));
    let grants = runtime.grants_of(&metadata.name, &digest)?;
    if runtime.refuse_ungranted_http {
        check_http_granted(&imports, &metadata.name, grants.as_deref())?;
    }
    Ok(Operator {
        inner: Arc::new(OperatorInner {
            name: Arc::from(metadata.name.as_str()),
            runtime: runtime.clone(),
            metadata,
            signature,
            imports,
            digest,
            pre,
            invoke,
            policy_state: PolicyState::default(),
            metrics,
            grants,
        }),
    })
}

fn invalid(source_name: &str, reason: String, source: Option<SharedError>) -> Error {
    Error::InvalidComponent {
        source_name: source_name.to_owned(),
        reason,
        source,
    }
}

fn contract(source_name: &str, reason: String, source: Option<SharedError>) -> Error {
    Error::Contract {
        operator: source_name.to_owned(),
        reason,
        source,
    }
}

/// Step 1: the first bytes say it is a component (and not a core module,
/// the most common mistake).
fn check_header(bytes: &[u8], source_name: &str) -> Result<(), Error> {
    match bytes {
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => Ok(()),
        [0, b'a', b's', b'm', _, _, 0, 0, ..] => Err(invalid(
            source_name,
            "this is a core WebAssembly module, not a component; operators must be components \
             (build with `--target wasm32-wasip2`, or wrap a module with `wasm-tools component new`)"
                .into(),
            None,
        )),
        _ => Err(invalid(
            source_name,
            format!(
                "not a WebAssembly binary ({} bytes, no `\\0asm` header)",
                bytes.len()
            ),
            None,
        )),
    }
}

/// Why a resource cannot be in `invoke`'s signature.
const NO_RESOURCES: &str = "resources are not supported in operator signatures (every call \
     runs in a fresh instance, so no handle outlives it); pass plain data: records, lists, strings";

/// `unsupported` in words, with why for resources.
fn unsupported_words(unsupported: &Unsupported) -> String {
    if unsupported.0 == RESOURCE_HANDLES {
        format!("{RESOURCE_HANDLES}: {NO_RESOURCES}")
    } else {
        unsupported.0.to_owned()
    }
}

/// Step 2, first: `invoke` as the component's WIT spells it (the names of its
/// types), read from the bytes; a resource in it is refused here, before
/// the imports that define it are (an embedder's grant would not help).
fn read_wit(bytes: &[u8], source_name: &str) -> Result<Option<Spelling>, Error> {
    match super::wit::read(bytes) {
        Invoke::Spelled(spelling) => Ok(Some(spelling)),
        Invoke::Unknown => Ok(None),
        Invoke::Resource(resource) => Err(contract(
            source_name,
            format!("`invoke` takes or returns the resource `{resource}`: {NO_RESOURCES}"),
            None,
        )),
    }
}

/// Steps 2 and 3, off the async threads (they read every byte): the WIT
/// and the imports, then the compiled code from a valid entry of the
/// on-disk cache, or the shape of the code checked against the
/// [`LoadLimits`](crate::LoadLimits) (what is already compiled is not
/// checked again: the bounds are there to keep compilation bounded), then
/// validation and compilation (and the result stored in the cache).
async fn compile(
    runtime: &Arc<Runtime>,
    bytes: Vec<u8>,
    digest: [u8; 32],
    source_name: &str,
) -> Result<(Option<Spelling>, Vec<String>, Component), Error> {
    let runtime = runtime.clone();
    let name = source_name.to_owned();
    tokio::task::spawn_blocking(move || {
        let spelling = read_wit(&bytes, &name)?;
        let imports = check_imports(&runtime, &bytes, &name)?;
        let engine = &runtime.engine;
        let cache = runtime.disk_cache.as_ref();
        if let Some(cache) = cache {
            match cache.lookup(engine, &digest) {
                Lookup::Hit(component) => return Ok((spelling, imports, component)),
                Lookup::Miss => {}
                Lookup::Rejected(why) => tracing::warn!(
                    target: "xcs::cache",
                    "compiling {name} again: its cache entry is not used: {why}"
                ),
            }
        }
        super::shape::check(&bytes, &runtime.load_limits)
            .map_err(|reason| invalid(&name, reason, None))?;
        runtime.count_compilation();
        let component = Component::from_binary(engine, &bytes).map_err(|error| {
            match over_pool_limit(&format!("{error:#}")) {
                Some(reason) => contract(&name, reason, None),
                None => invalid(&name, "invalid component".into(), error::cause(error)),
            }
        })?;
        if let Some(cache) = cache {
            let stored = component
                .serialize()
                .map_err(|error| std::io::Error::other(format!("{error:#}")))
                .and_then(|artifact| cache.store(&digest, &artifact));
            if let Err(error) = stored {
                tracing::warn!(target: "xcs::cache", "not caching {name}: {error}");
            }
        }
        Ok((spelling, imports, component))
    })
    .await
    .map_err(|join| {
        invalid(
            source_name,
            format!("compilation did not finish: {join}"),
            None,
        )
    })?
}

/// The words for wasmtime's refusal of a component that needs more core
/// instances or tables than the pool allows per component (a host limit,
/// not a fault of the component), naming the setting that raises it.
fn over_pool_limit(message: &str) -> Option<String> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &message[message.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    for (what, setting) in [
        ("tables", "max_tables_per_component"),
        ("memories", "max_memories_per_component"),
    ] {
        if let (Some(needed), Some(allowed)) = (
            number_after(&format!("defined {what} count of ")),
            number_after("per-instance limit of "),
        ) {
            return Some(format!(
                "a core module of it defines {needed} {what}, and this host allows {allowed}: \
                 raise `HostBuilder::{setting}`"
            ));
        }
    }
    let needed = number_after("transitively contains ")?;
    let allowed = number_after("configured maximum of ")?;
    let (what, setting) = if message.contains("core module instances") {
        (
            "core instances",
            "the default limits' `max_instances` (`HostBuilder::default_limits`)",
        )
    } else if message.contains(" tables, ") {
        ("tables", "`HostBuilder::max_tables_per_component`")
    } else if message.contains(" linear memories, ") {
        ("memories", "`HostBuilder::max_memories_per_component`")
    } else {
        return None;
    };
    Some(format!(
        "needs {needed} {what}, and this host allows {allowed} per component: raise {setting}"
    ))
}

/// Step 2: the imports are the contract's own interfaces, the inert WASI
/// the sandbox provides, and whatever the embedder granted. They are read
/// from the bytes before anything is compiled, and every one that is
/// neither is refused, by name, in one error.
fn check_imports(runtime: &Runtime, bytes: &[u8], source_name: &str) -> Result<Vec<String>, Error> {
    // Bytes that do not parse are the compiler's to report, in its words.
    let imports = top_level_imports(bytes).unwrap_or_default();
    let mut refused: Vec<(&str, Option<String>)> = Vec::new();
    for name in &imports {
        if let Some(hint) = refusal(runtime, name) {
            refused.push((name, hint));
        }
    }
    let mut refused = refused.into_iter();
    match refused.next() {
        None => Ok(imports),
        Some((import, hint)) => Err(Error::Capability {
            operator: source_name.to_owned(),
            import: import.to_owned(),
            hint,
            also: refused.map(|(name, _)| name.to_owned()).collect(),
        }),
    }
}

/// `None` if the host links `name`; else why not, in words when there is
/// something to say.
fn refusal(runtime: &Runtime, name: &str) -> Option<Option<String>> {
    if [HOST_INTERFACE, TYPES_INTERFACE, COMPOSE_INTERFACE].contains(&name) {
        return None;
    }
    let (unversioned, version) = name.split_once('@').unwrap_or((name, ""));
    if PROVIDED_WASI.contains(&unversioned)
        || HTTP_INTERFACES.contains(&unversioned)
        || unversioned.starts_with("wasi:sockets/")
    {
        // WASI 0.2 is what the host links (any 0.2.x: semver-compatible).
        if version.is_empty() || version.starts_with("0.2.") {
            return None;
        }
        return Some(Some(format!(
            "this host provides {unversioned}@0.2.x, not {version}"
        )));
    }
    if runtime
        .granted
        .iter()
        .any(|granted| granted == name || granted == unversioned)
    {
        return None;
    }
    Some(Some(if name.starts_with(CONTRACT_PACKAGE) {
        format!("this host implements {HOST_INTERFACE} and {COMPOSE_INTERFACE}")
    } else if name.starts_with("wasi:http/") {
        "the sandbox provides wasi:http/outgoing-handler and wasi:http/types only".into()
    } else if name.starts_with("wasi:") {
        "the sandbox provides no such ambient authority".into()
    } else {
        "an embedder can grant it with `xcs::Capability`".into()
    }))
}

/// The names of the component's own imports (not those of the components
/// and modules nested in it), or `None` if the bytes do not parse.
fn top_level_imports(bytes: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    // Nested modules and components start with their own `Version` and
    // end with their own `End`: depth 1 is the component itself.
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    let import = import.ok()?;
                    // A world's `use` of a type is a type import: nothing
                    // the host links.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        names.push(import.name.name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Some(names)
}

/// Step 4: the `invoke` export and its signature: parameters and an `ok`
/// type the codec can convert, and the contract's `error` record.
fn read_contract(
    runtime: &Runtime,
    component: &Component,
    source_name: &str,
    spelling: Option<Spelling>,
) -> Result<(Signature, ComponentExportIndex), Error> {
    let contract = |reason: String| contract(source_name, reason, None);
    let Some(ComponentItem::ComponentFunc(invoke_type)) = component
        .component_type()
        .get_export(&runtime.engine, "invoke")
        .map(|export| export.ty)
    else {
        return Err(contract(
            "no `invoke` function export; an operator exports `metadata` and `invoke` (see wit/operator.wit)".into(),
        ));
    };
    // One budget for the whole signature: parameters and result.
    let mut budget = MAX_SIGNATURE_BYTES;
    let mut params = Vec::new();
    for (name, ty) in invoke_type.params() {
        let ty = WitType::from_wasmtime(&ty, &mut budget).map_err(|unsupported| {
            contract(format!(
                "`invoke` parameter `{name}` uses {}, which operators cannot take",
                unsupported_words(&unsupported)
            ))
        })?;
        params.push(Param {
            name: name.to_owned(),
            wit: ty.to_string(),
            ty,
        });
    }
    let results: Vec<Type> = invoke_type.results().collect();
    let result = match results.as_slice() {
        [Type::Result(result)] if result.err().as_ref().is_some_and(is_error_record) => result
            .ok()
            .map(|ok| {
                WitType::from_wasmtime(&ok, &mut budget).map_err(|unsupported| {
                    contract(format!(
                        "`invoke` returns {}, which operators cannot return",
                        unsupported_words(&unsupported)
                    ))
                })
            })
            .transpose()?,
        _ => {
            let found = results
                .iter()
                .map(|ty| {
                    WitType::from_wasmtime(ty, &mut budget)
                        .map_or_else(|_| "an unsupported type".into(), |ty| ty.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(contract(format!(
                "`invoke` must return result<T, error> with the `error` record of xcs:operator/types; it returns {}",
                if found.is_empty() {
                    "nothing".into()
                } else {
                    found
                }
            )));
        }
    };
    let invoke = component
        .get_export_index(None, "invoke")
        .ok_or_else(|| contract("`invoke` export has no index".into()))?;
    let mut signature = Signature {
        result_wit: result.as_ref().map(ToString::to_string),
        params,
        result,
        types: Vec::new(),
    };
    // The names, where the WIT read agrees with the compiled component.
    if let Some(spelling) = spelling
        && spelling.params.len() == signature.params.len()
        && spelling.result.is_some() == signature.result.is_some()
    {
        for (param, wit) in signature.params.iter_mut().zip(spelling.params) {
            param.wit = wit;
        }
        signature.result_wit = spelling.result;
        signature.types = spelling.types;
    }
    Ok((signature, invoke))
}

/// Whether `ty` is the contract's `error` record.
fn is_error_record(ty: &Type) -> bool {
    let Type::Record(record) = ty else {
        return false;
    };
    let fields: Vec<_> = record
        .fields()
        .map(|field| (field.name, field.ty))
        .collect();
    matches!(
        fields.as_slice(),
        [
            ("code", Type::String),
            ("message", Type::String),
            ("retryable", Type::Bool)
        ]
    )
}

/// Step 5: pre-instantiate against the host's linker (every import
/// resolved, once), and type-check the `metadata` export.
fn link(
    runtime: &Runtime,
    component: &Component,
    source_name: &str,
) -> Result<(InstancePre<StoreState>, bindings::CompositePre<StoreState>), Error> {
    let pre = runtime.linker.instantiate_pre(component).map_err(|error| {
        contract(
            source_name,
            "its imports do not match what the host provides".into(),
            error::cause(error),
        )
    })?;
    let bindings_pre = bindings::CompositePre::new(pre.clone()).map_err(|error| {
        contract(
            source_name,
            "no valid `metadata` export".into(),
            error::cause(error),
        )
    })?;
    Ok((pre, bindings_pre))
}

/// The longest name, and version, an operator may have.
const MAX_NAME_BYTES: usize = crate::types::MAX_OPERATOR_NAME_BYTES;
/// The longest description.
const MAX_DESCRIPTION_BYTES: usize = 1024;

/// A name is kebab-case words of lowercase letters and digits, each
/// starting with a letter (WIT's identifiers), at most 64 bytes; a version
/// and a description hold no control characters, at most 64 and 1,024
/// bytes: what a guest says of itself is printed, logged and used as a
/// key.
fn check_metadata(name: &str, version: &str, description: &str) -> Result<(), String> {
    if !is_operator_name(name) {
        return Err(format!(
            "`metadata` returned the name {name:?}: a name is kebab-case (`word-count`), \
             at most {MAX_NAME_BYTES} bytes"
        ));
    }
    if version.len() > MAX_NAME_BYTES || version.chars().any(char::is_control) {
        return Err(format!(
            "`metadata` returned the version {version:?}: at most {MAX_NAME_BYTES} bytes, \
             no control characters"
        ));
    }
    if description.len() > MAX_DESCRIPTION_BYTES || description.chars().any(char::is_control) {
        return Err(format!(
            "`metadata` returned a description of {} bytes or with control characters: at \
             most {MAX_DESCRIPTION_BYTES} bytes, none",
            description.len()
        ));
    }
    Ok(())
}

/// Step 6: ask the guest for its metadata: one attempt in a sandbox under
/// the host's default limits, like any call.
async fn read_metadata(
    runtime: &Runtime,
    bindings_pre: bindings::CompositePre<StoreState>,
    source_name: &str,
) -> Result<Metadata, Error> {
    let sandbox_name: Arc<str> = Arc::from(format!("{source_name} (metadata)"));
    let (metadata, _stats) = sandbox::attempt(
        runtime,
        &sandbox_name,
        &runtime.default_limits,
        move |store| {
            Box::pin(async move {
                let instance = bindings_pre.instantiate_async(&mut *store).await?;
                instance.call_metadata(&mut *store).await
            })
        },
    )
    .await?;
    check_metadata(&metadata.name, &metadata.version, &metadata.description)
        .map_err(|reason| contract(source_name, reason, None))?;
    Ok(Metadata {
        name: metadata.name,
        version: metadata.version,
        description: metadata.description,
        deterministic: metadata.deterministic,
    })
}
