//! The layers of `host/src` point one way (DESIGN.md, "Layers"): every
//! `crate::` path in a module names a module of its own layer or of one
//! below, and the modules of one layer import each other without a circle.
//!
//! The table below is the rule; changing it is a design decision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first, with their top-level modules of `host/src`.
const LAYERS: &[(&str, &[&str])] = &[
    ("vocabulary", &["__doc_fixture", "error", "limits", "types"]),
    ("mechanisms", &["codec", "metrics", "policy", "slots"]),
    ("store", &["store"]),
    ("capability", &["capability"]),
    ("runtime", &["runtime"]),
    ("sandbox", &["sandbox"]),
    ("operator", &["operator"]),
    ("call", &["call"]),
    ("graph", &["graph"]),
    ("facade", &["host"]),
];

/// A module's layer, as an index into [`LAYERS`].
fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// `text` without comments and string literals (doc links and messages may
/// name any module; only code imports).
fn code_only(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for next in chars.by_ref() {
                    match next {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                code.push_str("\"\"");
            }
            other => code.push(other),
        }
    }
    code
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segments of every `crate::` path in `code`: `crate::a::b` and
/// `crate::{a, b::c}` name `a` (and `b`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `xcs_crate::`, say: not this crate
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start_of_item = true;
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start_of_item = true,
                    c if c.is_whitespace() => {}
                    _ if start_of_item && depth == 0 => {
                        start_of_item = false;
                        names.insert(identifier(&group[index..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(identifier(rest).to_owned());
        }
    }
    names
}

/// Items `lib.rs` re-exports at the crate root, by the module they come
/// from: `pub use limits::{Limits, MAX_DURATION};` maps both to `limits`.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    for statement in code_only(lib).split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = identifier(path).to_owned();
        let items = path[module.len()..].trim_start_matches("::");
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim().rsplit("::").next().unwrap_or_default();
            if !item.is_empty() {
                exports.insert(item.to_owned(), module.clone());
            }
        }
    }
    exports
}

/// The top-level module a file of `src` belongs to: `graph/run/node.rs`
/// and `graph.rs` are `graph`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let first = relative
        .components()
        .next()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// Every module → the modules it imports, for files given as
/// (module, text); `crate::Item` re-exported by `lib.rs` counts as its
/// module.
fn imports(
    files: &[(String, String)],
    exports: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in files {
        let targets = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code_only(text)) {
            let target = exports.get(&name).cloned().unwrap_or(name);
            if &target != module {
                targets.insert(target);
            }
        }
    }
    graph
}

/// Every way `graph` breaks the rule, in words.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (module, targets) in graph {
        let Some(own) = layer_of(module) else {
            found.push(format!("`{module}` is in no layer of the table"));
            continue;
        };
        for target in targets {
            match layer_of(target) {
                None => found.push(format!(
                    "`{module}` uses `crate::{target}`, which is in no layer of the table"
                )),
                Some(layer) if layer > own => found.push(format!(
                    "`{module}` ({}) imports `{target}` ({}), a layer above it",
                    LAYERS[own].0, LAYERS[layer].0
                )),
                Some(_) => {}
            }
        }
    }
    // A circle among modules (of one layer: the rule above forbids the rest).
    if let Some(circle) = find_circle(graph) {
        found.push(format!("import circle: {}", circle.join(" → ")));
    }
    found
}

/// A circle of imports, as a path that ends where it starts.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<&str>> {
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|on_path| *on_path == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module);
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module);
        for target in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(target, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module);
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn host_modules_import_only_their_layer_and_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = Vec::new();
    let mut lib = String::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("a source file");
        if path.file_name().is_some_and(|name| name == "lib.rs") {
            lib = text;
        } else {
            files.push((module_of(&src, path), text));
        }
    }
    assert!(
        files.len() > 20,
        "found only {} files in {}",
        files.len(),
        src.display()
    );
    let graph = imports(&files, &root_exports(&lib));
    for module in graph.keys() {
        assert!(
            layer_of(module).is_some(),
            "`{module}` is in no layer: add it to LAYERS"
        );
    }
    let found = violations(&graph);
    assert!(
        found.is_empty(),
        "layering broken:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_check_sees_upward_imports_groups_reexports_and_circles() {
    let exports = root_exports("pub use graph::{Graph, Plan};\npub use host::Host;\n");
    let files = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(module, text)| ((*module).to_owned(), (*text).to_owned()))
            .collect()
    };

    let upward = files(&[("store", "use crate::{error::Error, graph::Plan};")]);
    let found = violations(&imports(&upward, &exports));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("`store` (store) imports `graph` (graph)"),
        "{found:?}"
    );

    let via_root = files(&[("sandbox", "fn f() -> crate::Host { todo!() }")]);
    assert_eq!(violations(&imports(&via_root, &exports)).len(), 1);

    let in_comments = files(&[(
        "store",
        "// crate::graph\n/// [`crate::host`]\nlet s = \"crate::graph\";",
    )]);
    assert!(violations(&imports(&in_comments, &exports)).is_empty());

    let circle = files(&[
        ("codec", "use crate::metrics;"),
        ("metrics", "use crate::codec::X;"),
    ]);
    let found = violations(&imports(&circle, &exports));
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with("import circle")),
        "{found:?}"
    );

    let downward = files(&[(
        "graph",
        "use crate::call::{self, Called};\nuse crate::error::Error;",
    )]);
    assert!(violations(&imports(&downward, &exports)).is_empty());
}
