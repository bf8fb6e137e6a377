//! The layers of `host/src` point one way (DESIGN.md, "Layers"): every
//! `crate::` path in a module names a module of its own layer or of one
//! below, and the modules of one layer import each other without a circle.
//!
//! The table below is the rule; changing it is a design decision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first, with their top-level modules of `host/src`.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &["__doc_fixture", "error", "grants", "limits", "types"],
    ),
    (
        "mechanisms",
        &["codec", "disk_cache", "metrics", "policy", "slots", "turns"],
    ),
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

/// `text` without comments (line and block), string literals (plain and
/// raw) and character literals: doc links and messages may name any
/// module; only code imports.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut at = 0;
    let starts = |at: usize, pattern: &str| {
        pattern
            .chars()
            .enumerate()
            .all(|(offset, c)| chars.get(at + offset) == Some(&c))
    };
    while at < chars.len() {
        let c = chars[at];
        if starts(at, "//") {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if starts(at, "/*") {
            let mut depth = 0usize;
            loop {
                if at >= chars.len() {
                    break;
                } else if starts(at, "/*") {
                    depth += 1;
                    at += 2;
                } else if starts(at, "*/") {
                    depth -= 1;
                    at += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    at += 1;
                }
            }
            code.push(' ');
        } else if c == 'r'
            && (chars.get(at + 1) == Some(&'"') || chars.get(at + 1) == Some(&'#'))
            && !chars[..at]
                .last()
                .is_some_and(|before| before.is_ascii_alphanumeric() || *before == '_')
        {
            // r"..." or r#"..."#: ends at the quote and as many hashes.
            let mut hashes = 0;
            let mut next = at + 1;
            while chars.get(next) == Some(&'#') {
                hashes += 1;
                next += 1;
            }
            if chars.get(next) != Some(&'"') {
                code.push(c); // `r#ident`, a raw identifier
                at += 1;
                continue;
            }
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            at = next + 1;
            while at < chars.len() && !starts(at, &closing) {
                at += 1;
            }
            at += closing.len();
            code.push_str("\"\"");
        } else if c == '"' {
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                at += if chars[at] == '\\' { 2 } else { 1 };
            }
            at += 1;
            code.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            let end = if chars.get(at + 1) == Some(&'\\') {
                (at + 2..chars.len()).find(|&index| chars[index] == '\'')
            } else if chars.get(at + 2) == Some(&'\'') {
                Some(at + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    at = end + 1;
                    code.push_str("' '");
                }
                None => {
                    code.push(c);
                    at += 1;
                }
            }
        } else {
            code.push(c);
            at += 1;
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

/// The first segments of every path from the crate root in `code`:
/// `crate::a::b` and `crate::{a, b::c}` name `a` (and `b`); so does
/// `super::a` when its `super`s reach the root: from a file `depth`
/// modules deep (1 for `store.rs`, 2 for `store/compose.rs`), inside as
/// many inline `mod name { .. }` blocks as it is in.
fn crate_paths(code: &str, depth: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut braces = 0usize;
    // The brace depth inside each inline module open here.
    let mut inline_modules: Vec<usize> = Vec::new();
    let mut pending_module = false;
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts_word = at == 0 || {
            let before = bytes[at - 1];
            !(before.is_ascii_alphanumeric() || before == b'_' || before == b':')
        };
        match bytes[at] {
            b'{' => {
                braces += 1;
                if pending_module {
                    inline_modules.push(braces);
                    pending_module = false;
                }
            }
            b'}' => {
                if inline_modules.last() == Some(&braces) {
                    inline_modules.pop();
                }
                braces = braces.saturating_sub(1);
            }
            b';' => pending_module = false, // `mod name;`: a file
            _ if starts_word && rest.starts_with("mod ") => pending_module = true,
            _ if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) => {
                let mut path = rest;
                let mut supers = 0;
                while let Some(after) = path.strip_prefix("super::") {
                    supers += 1;
                    path = after;
                }
                if supers == 0 {
                    path = path.strip_prefix("crate::").unwrap_or(path);
                }
                if supers == 0 || supers >= depth + inline_modules.len() {
                    match path.strip_prefix('{') {
                        Some(group) => names.extend(group_items(group)),
                        None => {
                            names.insert(identifier(path).to_owned());
                        }
                    }
                }
                // Past the prefix (always at least `crate::` or `super::`).
                at += rest.len() - path.len();
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    names.remove("");
    names
}

/// The first names of the items of a `{a, b::c, d::{e}}` group.
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
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
                items.push(identifier(&group[index..]).to_owned());
            }
            _ => {}
        }
    }
    items
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

/// The top-level module a file of `src` belongs to (`graph/run/node.rs`
/// and `graph.rs` are `graph`), and how deep its module is (1 and 3).
fn module_of(src: &Path, file: &Path) -> (String, usize) {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let first = relative
        .components()
        .next()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let depth = relative.components().count();
    (first.trim_end_matches(".rs").to_owned(), depth)
}

/// Every module → the modules it imports, for files given as
/// ((module, depth), text); `crate::Item` re-exported by `lib.rs` counts
/// as its module.
fn imports(
    files: &[((String, usize), String)],
    exports: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((module, depth), text) in files {
        let targets = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code_only(text), *depth) {
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
    let files = |pairs: &[(&str, &str)]| -> Vec<((String, usize), String)> {
        pairs
            .iter()
            .map(|(module, text)| (((*module).to_owned(), 1), (*text).to_owned()))
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
