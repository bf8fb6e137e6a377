//! Operators in Python and JavaScript, and the projects `xcs new` writes,
//! built from source with each language's standard tool (componentize-py,
//! componentize-js, cargo) and run through the `xcs` command.
//!
//! The toolchains are not optional: `just test` installs componentize-py
//! and componentize-js, pinned, into `target/foreign/` (`just
//! setup-foreign`), and a missing one fails these tests with the command
//! that installs it. Builds are cached in `target/foreign/` too, keyed by
//! the sources and the tool's version, so a rerun compiles nothing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::sync::OnceLock;

use super::*;

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A language's build: the tool that must be on the PATH, how to install
/// it, and the command that builds a project's `<name>.wasm`.
#[derive(Debug, Clone, Copy)]
enum Tool {
    /// `./build.sh`, as `xcs new` writes it (componentize-py).
    Python,
    /// `npm run build` (componentize-js, a devDependency or on the PATH).
    Js,
    /// `./build.sh` (cargo, for wasm32-wasip2).
    Rust,
    /// `./build.sh` (wit-bindgen c, clang with wasi-libc, wasm-tools).
    C,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Python => "componentize-py",
            Tool::Js => "componentize-js",
            Tool::Rust => "cargo",
            Tool::C => "wit-bindgen",
        }
    }

    fn install(self) -> &'static str {
        match self {
            Tool::Python | Tool::Js | Tool::C => "just setup-foreign",
            Tool::Rust => "just setup",
        }
    }

    /// `program` with the PATH that finds the toolchains of `just
    /// setup-foreign` first.
    fn run(program: impl AsRef<std::ffi::OsStr>) -> Command {
        let foreign = workspace().join("target/foreign");
        let mut path = vec![
            foreign.join("venv/bin"),
            foreign.join("node/node_modules/.bin"),
            foreign.join("cargo/bin"),
        ];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut command = Command::new(program);
        command.env(
            "PATH",
            std::env::join_paths(path).expect("PATH entries join"),
        );
        command
    }

    /// The tool's version, part of the cache key; panics, naming the
    /// install command, if the tool is missing.
    fn version(self) -> String {
        let output = Self::run(self.program())
            .arg("--version")
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "{} is needed to build this test's operator and cannot be run ({error}): \
                     install it with `{}` (.ci/run does)",
                    self.program(),
                    self.install()
                )
            });
        assert!(
            output.status.success(),
            "`{} --version` failed: install it with `{}`",
            self.program(),
            self.install()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn command(self, project: &Path) -> Command {
        let mut command = match self {
            Tool::Python | Tool::Rust | Tool::C => Self::run(project.join("build.sh")),
            Tool::Js => {
                let mut npm = Self::run("npm");
                npm.args(["run", "--silent", "build"]);
                npm
            }
        };
        command.current_dir(project);
        if let Tool::Rust = self {
            // One target dir for every build of a Rust project: a rerun
            // with a changed template recompiles the project, not the SDK.
            command.env(
                "CARGO_TARGET_DIR",
                workspace().join("target/foreign/rust-target"),
            );
        }
        command
    }
}

/// Hashes every file under `dir` (following symbolic links: the contract
/// is linked into the examples), by relative path and content, skipping
/// build outputs.
fn hash_tree(dir: &Path, root: &Path, hasher: &mut DefaultHasher) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("the project directory can be read")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if ["node_modules", "__pycache__", "target", "gen"].contains(&name)
            || name.ends_with(".wasm")
        {
            continue;
        }
        if path.is_dir() {
            hash_tree(&path, root, hasher);
        } else {
            path.strip_prefix(root)
                .expect("under the root")
                .hash(hasher);
            std::fs::read(&path)
                .expect("a project file can be read")
                .hash(hasher);
        }
    }
}

/// Builds `project` (whose build writes `<name>.wasm` in it) with `tool`,
/// unless `target/foreign/` has the build of the same sources by the same
/// tool version; returns the component's path there. `extra` is hashed too
/// (the guest SDK, for Rust).
fn build(tool: Tool, project: &Path, name: &str, extra: Option<&Path>) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    tool.version().hash(&mut hasher);
    hash_tree(project, project, &mut hasher);
    if let Some(extra) = extra {
        hash_tree(extra, extra, &mut hasher);
    }
    let cache = workspace().join("target/foreign");
    std::fs::create_dir_all(&cache).expect("target/foreign can be made");
    let cached = cache.join(format!("{name}-{:016x}.wasm", hasher.finish()));
    if cached.is_file() {
        // Touched: the newest build of a name is the one in use (the
        // languages bench takes it).
        std::fs::File::options()
            .append(true)
            .open(&cached)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()))
            .expect("the cached component can be touched");
        return cached;
    }
    let output = tool
        .command(project)
        .output()
        .unwrap_or_else(|error| panic!("{tool:?} build of {name} cannot start: {error}"));
    assert!(
        output.status.success(),
        "{tool:?} build of {} failed:\n{}\n{}",
        project.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let built = project.join(format!("{name}.wasm"));
    // Written whole, then renamed: a concurrent reader never sees half.
    let partial = cached.with_extension(format!("{}.partial", std::process::id()));
    std::fs::copy(&built, &partial).expect("the built component can be copied");
    std::fs::rename(&partial, &cached).expect("the cached component can be renamed");
    cached
}

/// `xcs new <name> --lang <lang>` in a scratch directory, then its build:
/// the project exactly as written, with the language's standard tool.
fn new_and_build(name: &str, lang: &str, tool: Tool) -> PathBuf {
    let scratch = Scratch::new();
    let project = scratch.path().join(name);
    let project_arg = project.to_str().expect("UTF-8 temp dir");
    xcs(&["new", name, "--lang", lang, "--dir", project_arg]).assert_success();
    let sdk = matches!(tool, Tool::Rust).then(|| workspace().join("guest-sdk"));
    build(tool, &project, name, sdk.as_deref())
}

/// `xcs args...` with one compilation cache for every test here (in
/// `target/foreign/`): an 18 MB Python component compiles in seconds, once,
/// not in every command.
fn xcs_cached(args: &[&str]) -> Run {
    xcs_with_cache(args, None, &workspace().join("target/foreign/xcs-cache"))
}

/// `xcs call <operator> --input <input> [extra...]`, with the shared cache.
fn call_with(operator: &str, input: &str, extra: &[&str]) -> Run {
    call_by(xcs_cached, operator, input, extra)
}

/// `xcs inspect --json <operator>`, parsed, with the shared cache.
fn inspect_with(operator: &str) -> Value {
    inspect_json_by(xcs_cached, operator)
}

/// Each operator is built once per test process, whichever test asks first.
macro_rules! built {
    ($($name:ident => $build:expr;)+) => {$(
        fn $name() -> &'static str {
            static PATH: OnceLock<String> = OnceLock::new();
            PATH.get_or_init(|| {
                let path: PathBuf = $build;
                path.to_str().expect("UTF-8 path").to_owned()
            })
        }
    )+};
}

built! {
    new_python => new_and_build("upper-py", "python", Tool::Python);
    new_js => new_and_build("upper-js", "js", Tool::Js);
    new_rust => new_and_build("upper-rs", "rust", Tool::Rust);
    word_stats => build(Tool::Python, &workspace().join("examples/python/word-stats"), "word-stats", None);
    recase => build(Tool::Js, &workspace().join("examples/js/recase"), "recase", None);
    upper_c => build(Tool::C, &workspace().join("examples/c/upper-c"), "upper-c", None);
    spin_py => build(Tool::Python, &workspace().join("tests/foreign/spin-py"), "spin-py", None);
    spin_js => build(Tool::Js, &workspace().join("tests/foreign/spin-js"), "spin-js", None);
}

/// What every `xcs new` project does as written: its signature, a call, a
/// validation error, its operator error (exit 5), and a memory cap below
/// what its image needs (exit 8; Python's and JavaScript's engines need
/// megabytes before `invoke` runs).
fn new_project_behaves(operator: &str, name: &str) {
    let description = inspect_with(operator);
    assert_eq!(description["name"], name, "{description:#}");
    assert_eq!(
        description["params"],
        serde_json::json!([{ "name": "text", "type": "string" }])
    );
    assert_eq!(description["result"], "string");
    assert_eq!(
        description["signature"],
        "func(text: string) -> result<string, error>"
    );
    let run = call_with(operator, r#"{"text": "hello, wörld"}"#, &[]);
    run.assert_success();
    assert_eq!(run.stdout, "\"HELLO, WÖRLD\"\n", "{run:#?}");
    call_with(operator, r#"{"text": 5}"#, &[]).assert_error(
        4,
        "validation",
        &["$.text: expected string, found number 5"],
    );
    call_with(operator, r#"{"text": ""}"#, &[]).assert_error(
        5,
        "operator",
        &["operator error [empty]: the text is empty"],
    );
}

#[test]
fn a_python_project_from_xcs_new_builds_and_runs() {
    new_project_behaves(new_python(), "upper-py");
    call_with(new_python(), r#"{"text": "hi"}"#, &["--memory", "4MiB"]).assert_error(
        8,
        "memory",
        &["the limit is 4194304 bytes"],
    );
}

#[test]
fn a_javascript_project_from_xcs_new_builds_and_runs() {
    new_project_behaves(new_js(), "upper-js");
    call_with(new_js(), r#"{"text": "hi"}"#, &["--memory", "4MiB"]).assert_error(
        8,
        "memory",
        &["the limit is 4194304 bytes"],
    );
}

#[test]
fn a_rust_project_from_xcs_new_builds_and_runs() {
    new_project_behaves(new_rust(), "upper-rs");
}

/// A Python or JavaScript guest that never returns is stopped by the
/// deadline like any other: exit 6, and the next call runs.
#[test]
fn spinning_python_and_javascript_operators_time_out() {
    for operator in [spin_py(), spin_js()] {
        call_with(operator, r#"{"text": "x"}"#, &["--timeout", "300ms"]).assert_error(
            6,
            "timeout",
            &["300ms"],
        );
    }
}

/// The examples' records and enums keep their WIT names in `inspect`, and
/// the examples do what the README says.
#[test]
fn the_python_and_javascript_examples_name_their_types_and_run() {
    let stats = inspect_with(word_stats());
    assert_eq!(
        stats["signature"],
        "func(text: string) -> result<stats, error>"
    );
    assert_eq!(
        stats["types"],
        serde_json::json!([{
            "name": "stats",
            "definition": "record stats { words: u32, lines: u32, longest: string }",
        }])
    );
    let run = call_with(word_stats(), r#"{"text": "one two\nthree"}"#, &[]);
    run.assert_success();
    assert_eq!(
        run.stdout, "{\"lines\":2,\"longest\":\"three\",\"words\":3}\n",
        "{run:#?}"
    );
    call_with(word_stats(), r#"{"text": " \n "}"#, &[]).assert_error(
        5,
        "operator",
        &["[empty]: the text has no words"],
    );

    let run = xcs_cached(&["inspect", recase()]);
    run.assert_success();
    assert!(
        run.stdout.contains(
            "invoke:        func(text: string, style: style) -> result<string, error>\n\
             types:\n  enum style { upper, lower, title, kebab }\n"
        ),
        "{run:#?}"
    );
    let run = call_with(
        recase(),
        r#"{"text": "big  red dog", "style": "title"}"#,
        &[],
    );
    run.assert_success();
    assert_eq!(run.stdout, "\"Big Red Dog\"\n", "{run:#?}");
    call_with(recase(), r#"{"text": "x", "style": "shout"}"#, &[]).assert_error(
        4,
        "validation",
        &["$.style: expected one of: upper, lower, title, kebab"],
    );
}

/// The C example, built with wit-bindgen, clang and wasm-tools: its
/// signature, a call, its operator error, and no WASI import.
#[test]
fn the_c_example_builds_and_runs() {
    let description = inspect_with(upper_c());
    assert_eq!(
        description["signature"],
        "func(text: string) -> result<string, error>"
    );
    let imports = description["imports"].as_array().expect("imports");
    assert!(
        imports
            .iter()
            .all(|import| !import.as_str().unwrap_or("").starts_with("wasi:")),
        "{description:#}"
    );
    let run = call_with(upper_c(), r#"{"text": "hello, c"}"#, &[]);
    run.assert_success();
    assert_eq!(run.stdout, "\"HELLO, C\"\n", "{run:#?}");
    call_with(upper_c(), r#"{"text": ""}"#, &[]).assert_error(
        5,
        "operator",
        &["[empty]: the text is empty"],
    );
}

/// A graph of Python, JavaScript and Rust operators, each a `map` node:
/// upper-cased by Python, kebab-cased by JavaScript, counted by Python and
/// by Rust.
#[test]
fn a_graph_mixes_python_javascript_and_rust_operators() {
    let scratch = Scratch::new();
    let operators = scratch.path().join("operators");
    std::fs::create_dir_all(&operators).expect("the operators dir can be made");
    for (name, path) in [
        ("upper-py", new_python()),
        ("recase", recase()),
        ("word-stats", word_stats()),
        ("word-count", xcs_tests::WORD_COUNT),
    ] {
        std::fs::copy(path, operators.join(format!("{name}.wasm")))
            .expect("the operator can be copied");
    }
    let graph = scratch.file(
        "graph.toml",
        br#"
[[node]]
id = "loud"
operator = "upper-py"
map = "text"
args = { text = "@input.texts" }

[[node]]
id = "kebab"
operator = "recase"
map = "text"
args = { text = "@loud", style = "kebab" }

[[node]]
id = "stats"
operator = "word-stats"
map = "text"
args = { text = "@input.texts" }

[[node]]
id = "counts"
operator = "word-count"
map = "text"
args = { text = "@kebab" }

[outputs]
kebab = "@kebab"
stats = "@stats"
counts = "@counts"
"#,
    );
    let run = xcs_cached(&[
        "run",
        &graph,
        "--operators",
        operators.to_str().expect("UTF-8 temp dir"),
        "--input",
        r#"{"texts": ["Hello big World", "one"]}"#,
    ]);
    run.assert_success();
    let outputs: Value = serde_json::from_str(&run.stdout).expect("run prints JSON");
    assert_eq!(
        outputs,
        serde_json::json!({
            "kebab": ["hello-big-world", "one"],
            "stats": [
                { "words": 3, "lines": 1, "longest": "Hello" },
                { "words": 1, "lines": 1, "longest": "one" },
            ],
            "counts": [1, 1],
        }),
        "{run:#?}"
    );
}

/// `xcs new` refuses a name that no operator may have and a directory
/// that holds something, before writing anything.
#[test]
fn xcs_new_refuses_bad_names_and_full_directories() {
    let scratch = Scratch::new();
    let dir = scratch.path().join("p");
    let dir_arg = dir.to_str().expect("UTF-8 temp dir");
    xcs(&["new", "Upper_Case", "--dir", dir_arg]).assert_error(
        2,
        "usage",
        &["`Upper_Case` is not an operator name"],
    );
    assert!(!dir.exists(), "a refused name wrote {}", dir.display());
    xcs(&["new", "record", "--lang", "js", "--dir", dir_arg]).assert_error(
        2,
        "usage",
        &["`record` is a WIT keyword"],
    );
    assert!(!dir.exists(), "a refused name wrote {}", dir.display());
    std::fs::create_dir_all(&dir).expect("the dir can be made");
    std::fs::write(dir.join("keep.txt"), "mine").expect("a file can be written");
    xcs(&["new", "upper", "--lang", "python", "--dir", dir_arg]).assert_error(
        2,
        "usage",
        &["exists and is not empty"],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).expect("still there"),
        "mine"
    );
}
