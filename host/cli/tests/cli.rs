//! End-to-end tests of the `xcs` command against the real operator components
//! that the `xcs-tests` crate builds: output, input forms and the exit code of
//! every error kind.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

#[path = "cli/languages.rs"]
mod languages;
#[path = "cli/nats.rs"]
mod nats;
#[path = "cli/serve.rs"]
mod serve;

/// A scratch directory, unique per test, removed on drop. The compilation
/// cache (`XCS_CACHE_DIR`) and any input files live in it.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xcs-cli-test-{}-{index}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch directory can be created");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the scratch directory; returns its path.
    fn file(&self, name: &str, contents: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("the scratch file can be written");
        path.to_str()
            .expect("the temp dir path is UTF-8")
            .to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run of `xcs` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn first_stderr_line(&self) -> &str {
        self.stderr.lines().next().unwrap_or_default()
    }

    #[track_caller]
    fn assert_success(&self) -> &Self {
        assert_eq!(self.code, 0, "xcs failed: {self:#?}");
        self
    }

    /// Asserts the exit code, that the first stderr line is
    /// `error[<kind>]: ...`, that stdout is empty, and that stderr contains
    /// each of `needles`.
    #[track_caller]
    fn assert_error(&self, code: i32, kind: &str, needles: &[&str]) {
        assert_eq!(self.code, code, "wrong exit code: {self:#?}");
        assert!(
            self.first_stderr_line()
                .starts_with(&format!("error[{kind}]: ")),
            "the first stderr line is not `error[{kind}]: ...`: {self:#?}"
        );
        assert!(
            self.stdout.is_empty(),
            "an error printed on stdout: {self:#?}"
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}: {self:#?}"
            );
        }
    }
}

/// Runs `xcs args...` with a private cache directory, with `stdin` piped in
/// (or an empty, closed stdin when `None`).
fn xcs_with_stdin(args: &[&str], stdin: Option<&str>, scratch: &Scratch) -> Run {
    xcs_with_cache(args, stdin, &scratch.path().join("cache"))
}

/// The `xcs` command with `XCS_CACHE_DIR=cache_dir`, the cache's key in
/// `<cache_dir>.key` and no `RUST_LOG`: nothing of the user's environment
/// or home.
fn xcs_command(cache_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xcs"));
    command
        .env("XCS_CACHE_DIR", cache_dir)
        .env("XCS_CACHE_KEY_FILE", cache_dir.with_extension("key"))
        .env_remove("RUST_LOG");
    command
}

/// Runs `xcs args...` with `XCS_CACHE_DIR=cache_dir` and the cache's key
/// in `<cache_dir>.key`.
fn xcs_with_cache(args: &[&str], stdin: Option<&str>, cache_dir: &Path) -> Run {
    let mut child = xcs_command(cache_dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the xcs binary can be started");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .expect("stdin can be written");
        // Dropping the pipe closes it: xcs sees end of input.
    }
    let output = child.wait_with_output().expect("xcs runs to completion");
    Run {
        code: output
            .status
            .code()
            .expect("xcs exited rather than being killed by a signal"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Runs `xcs args...` in a fresh scratch directory, stdin closed.
fn xcs(args: &[&str]) -> Run {
    xcs_with_stdin(args, None, &Scratch::new())
}

/// `xcs call <operator> --input <input>`.
fn call(operator: &str, input: &str, extra: &[&str]) -> Run {
    call_by(xcs, operator, input, extra)
}

/// `xcs call <operator> --input <input> [extra...]`, run by `runner`.
fn call_by(runner: fn(&[&str]) -> Run, operator: &str, input: &str, extra: &[&str]) -> Run {
    let mut args = vec!["call", operator, "--input", input];
    args.extend_from_slice(extra);
    runner(&args)
}

/// `inspect --json` output, parsed.
fn inspect_json(operator: &str) -> Value {
    inspect_json_by(xcs, operator)
}

/// `inspect --json` output, parsed, run by `runner`.
fn inspect_json_by(runner: fn(&[&str]) -> Run, operator: &str) -> Value {
    let run = runner(&["inspect", operator, "--json"]);
    run.assert_success();
    serde_json::from_str(&run.stdout).expect("inspect --json prints JSON")
}

/// `name: call <operator> --input <input> [flags] => stdout` — succeeds and
/// prints exactly that JSON line.
macro_rules! prints {
    ($($name:ident: $operator:expr, $input:expr $(, [$($flag:expr),* $(,)?])? => $stdout:expr;)+) => {$(
        #[test]
        fn $name() {
            let run = call($operator, $input, &[$($($flag),*)?]);
            run.assert_success();
            assert_eq!(run.stdout, concat!($stdout, "\n"), "{run:#?}");
            assert!(run.stderr.is_empty(), "a successful call wrote on stderr: {run:#?}");
        }
    )+};
}

/// `name: [args...] => exit code, kind, [stderr needles...]` — fails with
/// that exit code and `error[<kind>]: ...` first on stderr.
macro_rules! fails {
    ($($name:ident: [$($arg:expr),+ $(,)?] => $code:literal, $kind:literal $(, [$($needle:expr),* $(,)?])?;)+) => {$(
        #[test]
        fn $name() {
            xcs(&[$($arg),+]).assert_error($code, $kind, &[$($($needle),*)?]);
        }
    )+};
}

// --- inspect ---------------------------------------------------------------

#[test]
fn inspect_prints_name_and_invoke_signature() {
    let run = xcs(&["inspect", xcs_tests::UPPER]);
    run.assert_success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"name:          upper"), "{run:#?}");
    assert!(lines.contains(&"version:       0.1.0"), "{run:#?}");
    assert!(lines.contains(&"deterministic: yes"), "{run:#?}");
    assert!(
        lines.contains(&"invoke:        func(text: string) -> result<string, error>"),
        "{run:#?}"
    );
    assert!(lines.contains(&"  xcs:operator/types@0.1.0"), "{run:#?}");
    let digest = lines
        .iter()
        .find_map(|line| line.strip_prefix("digest:        "))
        .expect("a digest line");
    assert!(digest.starts_with("sha256:"), "{run:#?}");
}

#[test]
fn inspect_says_an_operator_is_a_composite() {
    let run = xcs(&["inspect", xcs_tests::PIPELINE]);
    run.assert_success();
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("composite:     yes")),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("  xcs:operator/compose@0.1.0"),
        "{run:#?}"
    );
    assert_eq!(inspect_json(xcs_tests::PIPELINE)["composite"], true);
    assert_eq!(inspect_json(xcs_tests::UPPER)["composite"], false);
    let plain = xcs(&["inspect", xcs_tests::UPPER]);
    assert!(!plain.stdout.contains("composite:"), "{plain:#?}");
}

#[test]
fn inspect_json_describes_params_result_imports_and_digest() {
    let description = inspect_json(xcs_tests::STATS);
    assert_eq!(description["name"], "stats");
    assert_eq!(description["version"], "0.1.0");
    assert_eq!(description["deterministic"], true);
    assert_eq!(
        description["params"],
        serde_json::json!([{ "name": "xs", "type": "list<f64>" }])
    );
    // Named types keep their WIT names, defined once.
    assert_eq!(description["result"], "stats");
    assert_eq!(
        description["types"],
        serde_json::json!([{
            "name": "stats",
            "definition": "record stats { count: u32, mean: f64, min: f64, max: f64 }",
        }])
    );
    assert_eq!(
        description["signature"],
        "func(xs: list<f64>) -> result<stats, error>"
    );
    let imports = description["imports"]
        .as_array()
        .expect("imports is a list");
    assert!(
        imports.contains(&Value::from("xcs:operator/types@0.1.0")),
        "{description:#}"
    );
    assert!(imports.iter().all(Value::is_string), "{description:#}");
    let digest = description["digest"].as_str().expect("digest is a string");
    assert!(digest.starts_with("sha256:"), "{description:#}");
    assert_eq!(digest.len(), "sha256:".len() + 64, "{description:#}");
}

#[test]
fn inspect_json_lists_params_in_order_in_wit_syntax() {
    let description = inspect_json(xcs_tests::FLAKY);
    assert_eq!(
        description["params"],
        serde_json::json!([
            { "name": "key", "type": "u64" },
            { "name": "failure-percent", "type": "u8" },
        ])
    );
    assert_eq!(description["result"], "u64");
    assert_eq!(description["deterministic"], false);
}

#[test]
fn inspect_json_of_the_same_operator_has_the_same_digest() {
    assert_eq!(
        inspect_json(xcs_tests::UPPER)["digest"],
        inspect_json(xcs_tests::UPPER)["digest"]
    );
    assert_ne!(
        inspect_json(xcs_tests::UPPER)["digest"],
        inspect_json(xcs_tests::SORT)["digest"]
    );
}

// --- call: input forms and output ------------------------------------------

prints! {
    call_with_input_object_prints_the_result: xcs_tests::UPPER, r#"{"text":"hello"}"# => r#""HELLO""#;
    call_with_input_array_prints_the_result: xcs_tests::UPPER, r#"["hello"]"# => r#""HELLO""#;
    call_word_count_prints_a_number: xcs_tests::WORD_COUNT, r#"{"text":"one two  three"}"# => "3";
    call_sort_prints_a_list: xcs_tests::SORT, r#"[["b","c","a"]]"# => r#"["a","b","c"]"#;
    call_stats_prints_a_record_with_kebab_case_fields: xcs_tests::STATS, r#"{"xs":[1,2,3]}"#
        => r#"{"count":3,"max":3.0,"mean":2.0,"min":1.0}"#;
    call_noop_prints_null: xcs_tests::NOOP, "[]" => "null";
    call_with_limits_within_bounds_succeeds: xcs_tests::FACTORIAL, r#"{"n":10}"#,
        ["--timeout", "5s", "--fuel", "100000000", "--memory", "32MiB", "--max-input", "1KiB", "--max-output", "1KiB"]
        => "3628800";
}

#[test]
fn call_with_input_file_reads_the_file() {
    let scratch = Scratch::new();
    let input = scratch.file("input.json", br#"{"text":"from a file"}"#);
    let run = xcs_with_stdin(
        &["call", xcs_tests::UPPER, "--input-file", &input],
        None,
        &scratch,
    );
    run.assert_success();
    assert_eq!(run.stdout, "\"FROM A FILE\"\n", "{run:#?}");
}

#[test]
fn call_reads_piped_stdin() {
    let run = xcs_with_stdin(
        &["call", xcs_tests::UPPER],
        Some("{\"text\": \"piped\"}\n"),
        &Scratch::new(),
    );
    run.assert_success();
    assert_eq!(run.stdout, "\"PIPED\"\n", "{run:#?}");
}

#[test]
fn call_entropy_twice_prints_identical_output() {
    let first = call(xcs_tests::ENTROPY, "[]", &[]);
    let second = call(xcs_tests::ENTROPY, "[]", &[]);
    first.assert_success();
    second.assert_success();
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn call_entropy_with_another_seed_prints_other_random_bytes() {
    let random = |run: &Run| -> Value {
        run.assert_success();
        let output: Value = serde_json::from_str(&run.stdout).expect("entropy prints JSON");
        let bytes = output["random"].clone();
        assert_eq!(bytes.as_array().map(Vec::len), Some(16), "{run:#?}");
        bytes
    };
    let default = random(&call(xcs_tests::ENTROPY, "[]", &[]));
    let seven = random(&call(xcs_tests::ENTROPY, "[]", &["--seed", "7"]));
    let seven_again = random(&call(xcs_tests::ENTROPY, "[]", &["--seed", "7"]));
    assert_ne!(default, seven);
    assert_eq!(seven, seven_again);
}

// --- errors: one exit code per kind ----------------------------------------

#[test]
fn call_not_wasm_exits_3_invalid_component() {
    let scratch = Scratch::new();
    let path = scratch.file("not.wasm", b"hello, not wasm\n");
    for args in [
        vec!["inspect", path.as_str()],
        vec!["call", path.as_str(), "--input", "[]"],
    ] {
        xcs_with_stdin(&args, None, &scratch).assert_error(3, "invalid-component", &["not.wasm"]);
    }
}

fails! {
    call_invalid_json_exits_4_validation: ["call", xcs_tests::UPPER, "--input", "{text:"]
        => 4, "validation", ["invalid JSON"];
    call_wrong_type_exits_4_with_the_path: ["call", xcs_tests::SUM, "--input", r#"{"xs":[1,"a"]}"#]
        => 4, "validation", ["$.xs[1]", "s64"];
    call_wrong_type_in_array_form_exits_4_with_the_path: ["call", xcs_tests::UPPER, "--input", "[1]"]
        => 4, "validation", ["$[0]"];
    call_unknown_parameter_exits_4: ["call", xcs_tests::UPPER, "--input", r#"{"txt":"a"}"#]
        => 4, "validation", ["$.txt"];
    call_too_many_arguments_exits_4: ["call", xcs_tests::UPPER, "--input", r#"["a","b"]"#]
        => 4, "validation";
    call_input_over_max_input_exits_4: ["call", xcs_tests::UPPER, "--input", r#"["hello"]"#, "--max-input", "2"]
        => 4, "validation";
    call_sum_overflow_exits_5_operator: ["call", xcs_tests::SUM, "--input", r#"{"xs":[9223372036854775807,1]}"#]
        => 5, "operator", ["overflows"];
    call_stats_of_empty_list_exits_5_operator: ["call", xcs_tests::STATS, "--input", r#"{"xs":[]}"#]
        => 5, "operator", ["empty list"];
    call_spin_with_timeout_exits_6: ["call", xcs_tests::SPIN, "--input", "[]", "--timeout", "200ms"]
        => 6, "timeout";
    call_spin_with_fuel_exits_7: ["call", xcs_tests::SPIN, "--input", "[]", "--fuel", "1000000"]
        => 7, "fuel";
    call_hog_with_memory_cap_exits_8: ["call", xcs_tests::HOG, "--input", "[]", "--memory", "16MiB"]
        => 8, "memory";
    call_output_over_max_output_exits_8: ["call", xcs_tests::UPPER, "--input", r#"["hello world"]"#, "--max-output", "4"]
        => 8, "memory";
    call_deep_exits_9_stack_overflow: ["call", xcs_tests::DEEP, "--input", "[]"]
        => 9, "stack-overflow";
    call_panic_exits_9_with_the_panic_message: ["call", xcs_tests::PANIC, "--input", "[]"]
        => 9, "trap", ["panic fixture: this operator always panics"];
    call_missing_file_exits_1_io: ["call", "/nonexistent/xcs-cli-test/missing.wasm", "--input", "[]"]
        => 1, "io", ["missing.wasm"];
    inspect_missing_file_exits_1_io: ["inspect", "/nonexistent/xcs-cli-test/missing.wasm"]
        => 1, "io", ["missing.wasm"];
    call_missing_input_file_exits_1_io: ["call", xcs_tests::NOOP, "--input-file", "/nonexistent/xcs-cli-test/input.json"]
        => 1, "io", ["input.json"];
    call_ungranted_capability_exits_3: ["call", xcs_tests::WAIT, "--input", r#"{"ms":1}"#]
        => 3, "capability", ["xcs:examples/latency"];
    inspect_ungranted_capability_exits_3: ["inspect", xcs_tests::WAIT]
        => 3, "capability";
}

/// An unusable cache directory is not a failure of every command: the
/// call compiles without it and says so on stderr.
#[test]
fn call_with_unusable_cache_dir_warns_and_succeeds() {
    let scratch = Scratch::new();
    let file = scratch.file("a-file", b"");
    let not_a_dir = Path::new(&file).join("cache");
    let run = xcs_with_cache(
        &["call", xcs_tests::NOOP, "--input", "[]"],
        None,
        &not_a_dir,
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.contains("not using the compilation cache"),
        "{run:#?}"
    );
}

/// The issue's attack: another operator's cache entry under upper's name
/// made `inspect upper.wasm` report the other operator. The entry is
/// refused, upper is compiled, and stderr says why.
#[test]
fn inspect_with_a_swapped_cache_entry_reports_the_right_operator() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    for operator in [xcs_tests::UPPER, xcs_tests::NOOP] {
        xcs_with_cache(&["inspect", operator], None, &cache).assert_success();
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .expect("the cache was made")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let contents = entries
        .iter()
        .map(|path| std::fs::read(path).expect("readable"))
        .collect::<Vec<_>>();
    // Swap the two entries' contents.
    entries.reverse();
    for (path, bytes) in entries.iter().zip(&contents) {
        std::fs::write(path, bytes).expect("writable");
    }
    let run = xcs_with_cache(&["inspect", xcs_tests::UPPER, "--json"], None, &cache);
    run.assert_success();
    let description: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(description["name"], "upper", "{run:#?}");
    assert!(
        run.stderr.contains("its cache entry is not used")
            && run.stderr.contains("holds the code of other bytes"),
        "{run:#?}"
    );
}

/// Flags clap rejects exit 2. (clap prints `error: ...`, not
/// `error[usage]: ...`; see `usage_errors_print_the_error_kind`.)
#[test]
fn call_with_bad_flag_exits_2() {
    for args in [
        vec!["call", xcs_tests::NOOP, "--bogus"],
        vec!["call", xcs_tests::NOOP, "--memory", "12XB"],
        vec!["call", xcs_tests::NOOP, "--timeout", "soon"],
        vec![
            "call",
            xcs_tests::NOOP,
            "--input",
            "[]",
            "--input-file",
            "x.json",
        ],
        vec!["frobnicate"],
    ] {
        let run = xcs(&args);
        assert_eq!(run.code, 2, "{run:#?}");
        assert!(
            run.first_stderr_line().starts_with("error[usage]: "),
            "{run:#?}"
        );
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
}

// --- regressions ---------------------------------------------------------------

/// DESIGN.md: every error is one line `error[<kind>]: <message>`.
#[test]
fn usage_errors_print_the_error_kind() {
    xcs(&["call", xcs_tests::NOOP, "--bogus"]).assert_error(2, "usage", &["--bogus"]);
}

/// `Error::Io`'s message already embeds its source, which is printed again as
/// a cause.
#[test]
fn io_errors_print_their_cause_once() {
    let run = xcs(&["inspect", "/nonexistent/xcs-cli-test/missing.wasm"]);
    run.assert_error(1, "io", &[]);
    assert_eq!(
        run.stderr.matches("No such file or directory").count(),
        1,
        "{run:#?}"
    );
}

/// With stdin not a terminal but empty (`< /dev/null`, cron, CI), a call of
/// a parameterless operator fails with "invalid JSON: EOF".
#[test]
fn call_with_empty_stdin_means_no_arguments() {
    let run = xcs_with_stdin(&["call", xcs_tests::NOOP], Some(""), &Scratch::new());
    run.assert_success();
    assert_eq!(run.stdout, "null\n", "{run:#?}");
}

// --- graphs: check and run -----------------------------------------------------

/// The example graph and its input.
const PIPELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pipeline.toml");
const DOCUMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/documents.json");

/// The operators `examples/pipeline.toml` names, with their components.
const PIPELINE_OPERATORS: &[(&str, &str)] = &[
    ("word-count", xcs_tests::WORD_COUNT),
    ("stats", xcs_tests::STATS),
    ("upper", xcs_tests::UPPER),
    ("factorial", xcs_tests::FACTORIAL),
];

/// A graph of three problems: an unknown operator, a type mismatch (string
/// into u64) and a cycle (`b` ↔ `c`).
const BAD_GRAPH: &str = r#"
[[node]]
id = "a"
operator = "nonexistent"

[[node]]
id = "b"
operator = "upper"
args = { text = "@c" }

[[node]]
id = "c"
operator = "upper"
args = { text = "@b" }

[[node]]
id = "d"
operator = "factorial"
args = { n = "@b" }
"#;

impl Scratch {
    /// The path of `name` in the scratch directory (not created).
    fn join(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("the temp dir path is UTF-8")
            .to_owned()
    }

    /// Makes an operators directory holding each `(name, component)` as
    /// `<name>.wasm`; returns its path.
    fn operators(&self, operators: &[(&str, &str)]) -> String {
        let dir = self.join("operators");
        std::fs::create_dir_all(&dir).expect("the operators directory can be created");
        for (name, component) in operators {
            std::fs::copy(component, Path::new(&dir).join(format!("{name}.wasm")))
                .expect("the operator component can be copied");
        }
        dir
    }
}

/// Reads a file `xcs` wrote.
#[track_caller]
fn written(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path} was not written: {error}"))
}

/// `xcs run examples/pipeline.toml --input-file examples/documents.json`
/// with its operators, plus `extra` flags.
fn run_pipeline(scratch: &Scratch, extra: &[&str]) -> Run {
    let operators = scratch.operators(PIPELINE_OPERATORS);
    let mut args = vec![
        "run",
        PIPELINE,
        "--input-file",
        DOCUMENTS,
        "--operators",
        &operators,
    ];
    args.extend_from_slice(extra);
    xcs_with_stdin(&args, None, scratch)
}

#[test]
fn check_ok_prints_nodes_and_inputs_and_writes_dot() {
    let scratch = Scratch::new();
    let operators = scratch.operators(PIPELINE_OPERATORS);
    let dot = scratch.join("graph.dot");
    let run = xcs_with_stdin(
        &["check", PIPELINE, "--operators", &operators, "--dot", &dot],
        None,
        &scratch,
    );
    run.assert_success();
    assert_eq!(
        run.stdout, "ok: 5 node(s); inputs: documents: list<string>\n",
        "{run:#?}"
    );
    assert!(run.stderr.is_empty(), "{run:#?}");
    let dot = written(&dot);
    assert!(dot.contains("digraph"), "{dot}");
    for node in ["counts", "summary", "titles", "too-big", "after-too-big"] {
        assert!(
            dot.contains(&format!("\"{node}\"")),
            "{node} is missing: {dot}"
        );
    }
}

#[test]
fn check_without_inputs_says_none() {
    let scratch = Scratch::new();
    let operators = scratch.operators(&[("noop", xcs_tests::NOOP)]);
    let graph = scratch.file("graph.toml", b"[[node]]\nid = \"n\"\noperator = \"noop\"\n");
    let run = xcs_with_stdin(
        &["check", &graph, "--operators", &operators],
        None,
        &scratch,
    );
    run.assert_success();
    assert_eq!(run.stdout, "ok: 1 node(s); inputs: none\n", "{run:#?}");
}

/// Operators that fail to load are problems like any other: `check`
/// reports them all, with the graph's other problems (it stopped at the
/// first); a single one keeps its own error and exit code.
#[test]
fn check_reports_every_operator_that_does_not_load() {
    let scratch = Scratch::new();
    let operators = scratch.operators(&[("noop", xcs_tests::NOOP), ("wait", xcs_tests::WAIT)]);
    std::fs::write(Path::new(&operators).join("broken.wasm"), b"\0asm garbage").expect("writable");
    let graph = scratch.file(
        "graph.toml",
        b"[[node]]\nid = \"a\"\noperator = \"broken\"\n\n\
          [[node]]\nid = \"b\"\noperator = \"wait\"\n\n\
          [[node]]\nid = \"c\"\noperator = \"nonexistent\"\n\n\
          [[node]]\nid = \"d\"\noperator = \"noop\"\n",
    );
    let run = xcs_with_stdin(
        &["check", &graph, "--operators", &operators],
        None,
        &scratch,
    );
    run.assert_error(
        11,
        "graph",
        &[
            "the graph has 3 problems",
            "  - node `a`: operator `broken` does not load: error[invalid-component]: ",
            "  - node `b`: operator `wait` does not load: error[capability]: ",
            "  - node `c`: unknown operator `nonexistent`",
        ],
    );
    assert!(
        !run.stderr.contains("unknown operator `broken`")
            && !run.stderr.contains("unknown operator `wait`"),
        "{run:#?}"
    );

    let one = scratch.file("one.toml", b"[[node]]\nid = \"b\"\noperator = \"wait\"\n");
    let run = xcs_with_stdin(&["check", &one, "--operators", &operators], None, &scratch);
    run.assert_error(3, "capability", &["xcs:examples/latency"]);
}

#[test]
fn check_lists_every_problem_and_exits_11() {
    let scratch = Scratch::new();
    let operators = scratch.operators(PIPELINE_OPERATORS);
    let graph = scratch.file("bad.toml", BAD_GRAPH.as_bytes());
    let run = xcs_with_stdin(
        &["check", &graph, "--operators", &operators],
        None,
        &scratch,
    );
    run.assert_error(
        11,
        "graph",
        &[
            "  - node `a`: unknown operator `nonexistent`",
            "  - node `d`: parameter `n`: `@b` is string, which cannot feed u64",
        ],
    );
    assert_eq!(
        run.first_stderr_line(),
        "error[graph]: the graph has 3 problems",
        "{run:#?}"
    );
    let cycle = run
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("  - cycle: "))
        .unwrap_or_else(|| panic!("no cycle line: {run:#?}"));
    assert!(
        cycle.contains("b → c") || cycle.contains("c → b"),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr
            .lines()
            .filter(|line| line.starts_with("  - "))
            .count(),
        3,
        "{run:#?}"
    );
}

/// `run` checks the graph first: the same problems, the same exit code, and
/// nothing runs.
#[test]
fn run_of_a_graph_with_problems_exits_11() {
    let scratch = Scratch::new();
    let operators = scratch.operators(PIPELINE_OPERATORS);
    let graph = scratch.file("bad.toml", BAD_GRAPH.as_bytes());
    xcs_with_stdin(
        &["run", &graph, "--operators", &operators, "--input", "{}"],
        None,
        &scratch,
    )
    .assert_error(11, "graph", &["the graph has 3 problems", "cycle: "]);
}

#[test]
fn check_toml_syntax_error_exits_11() {
    let scratch = Scratch::new();
    let graph = scratch.file("syntax.toml", b"[[node]\nid = \"a\"\n");
    let operators = scratch.operators(&[]);
    xcs_with_stdin(
        &["check", &graph, "--operators", &operators],
        None,
        &scratch,
    )
    .assert_error(
        11,
        "graph",
        &["the graph has 1 problem", "invalid graph file", "line 1"],
    );
}

fails! {
    check_missing_graph_file_exits_1_io: ["check", "/nonexistent/xcs-cli-test/graph.toml"]
        => 1, "io", ["graph.toml"];
    run_missing_graph_file_exits_1_io: ["run", "/nonexistent/xcs-cli-test/graph.toml", "--input", "{}"]
        => 1, "io", ["graph.toml"];
}

#[test]
fn run_pipeline_without_keep_going_exits_5_with_nothing_on_stdout() {
    let scratch = Scratch::new();
    let run = run_pipeline(&scratch, &[]);
    run.assert_error(5, "operator", &["25! overflows"]);
    assert!(
        run.first_stderr_line()
            .starts_with("error[operator]: node `too-big`: "),
        "{run:#?}"
    );
}

#[test]
fn run_pipeline_with_keep_going_prints_the_outputs_and_the_failures() {
    let scratch = Scratch::new();
    let run = run_pipeline(&scratch, &["--keep-going"]);
    assert_eq!(run.code, 5, "{run:#?}");
    let outputs: Value = serde_json::from_str(&run.stdout).expect("run prints its outputs as JSON");
    assert_eq!(
        outputs["counts"],
        serde_json::json!([9, 5, 6, 8, 7]),
        "{run:#?}"
    );
    assert_eq!(outputs["mean_words"], 7.0, "{run:#?}");
    assert_eq!(
        outputs["shouted"][0], "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "{run:#?}"
    );
    assert_eq!(
        outputs.as_object().map(serde_json::Map::len),
        Some(3),
        "{run:#?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("node `too-big` failed [operator]: ")),
        "{run:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("node `after-too-big` skipped")),
        "{run:#?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|line| line.starts_with("error[operator]: node `too-big`: ")),
        "the last stderr line is not the error: {run:#?}"
    );
}

/// The pictures and the report are most useful when the run failed.
#[test]
fn run_writes_dot_timeline_and_report_even_when_it_fails() {
    for keep_going in [false, true] {
        let scratch = Scratch::new();
        let (dot, timeline, report) = (
            scratch.join("run.dot"),
            scratch.join("timeline.json"),
            scratch.join("report.json"),
        );
        let mut args = vec![
            "--dot",
            dot.as_str(),
            "--timeline",
            timeline.as_str(),
            "--report",
            report.as_str(),
        ];
        if keep_going {
            args.push("--keep-going");
        }
        let run = run_pipeline(&scratch, &args);
        assert_eq!(run.code, 5, "{run:#?}");

        let dot = written(&dot);
        assert!(dot.contains("digraph"), "{dot}");
        assert!(dot.contains("\"too-big\""), "{dot}");

        let timeline: Value =
            serde_json::from_str(&written(&timeline)).expect("the timeline is JSON");
        let events = timeline["traceEvents"]
            .as_array()
            .unwrap_or_else(|| panic!("no traceEvents: {timeline:#}"));
        let calls: Vec<&Value> = events.iter().filter(|event| event["ph"] == "X").collect();
        assert!(!calls.is_empty(), "no `X` events: {timeline:#}");
        assert!(
            calls.iter().all(|event| event["dur"].is_number()
                && event["ts"].is_number()
                && event["name"].is_string()),
            "{timeline:#}"
        );
        assert!(
            calls.iter().any(|event| event["args"]["node"] == "too-big"),
            "the failed call is not on the timeline: {timeline:#}"
        );

        let report: Value = serde_json::from_str(&written(&report)).expect("the report is JSON");
        let nodes = report.as_array().expect("the report lists the nodes");
        assert_eq!(nodes.len(), 5, "{report:#}");
        let too_big = nodes
            .iter()
            .find(|node| node["id"] == "too-big")
            .expect("the report has `too-big`");
        assert_eq!(too_big["status"], "failed", "{report:#}");
        if keep_going {
            let after = nodes
                .iter()
                .find(|node| node["id"] == "after-too-big")
                .expect("the report has `after-too-big`");
            assert_eq!(after["status"], "skipped", "{report:#}");
        }
    }
}

#[test]
fn run_graph_deadline_exits_6() {
    let scratch = Scratch::new();
    let operators = scratch.operators(&[("spin", xcs_tests::SPIN)]);
    let graph = scratch.file(
        "spin.toml",
        b"[[node]]\nid = \"forever\"\noperator = \"spin\"\n\n[outputs]\nx = \"@forever\"\n",
    );
    let started = std::time::Instant::now();
    let run = xcs_with_stdin(
        &[
            "run",
            &graph,
            "--operators",
            &operators,
            "--timeout",
            "300ms",
        ],
        None,
        &scratch,
    );
    run.assert_error(
        6,
        "timeout",
        &["graph timed out after 300ms", "still running: forever"],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the deadline did not stop the run: {:?}",
        started.elapsed()
    );
}

/// An operator given as a path ending in `.wasm` is found relative to the
/// graph file, not to the working directory or `--operators`.
#[test]
fn run_operator_as_a_relative_wasm_path() {
    let scratch = Scratch::new();
    let components = scratch.join("components");
    std::fs::create_dir_all(&components).expect("the directory can be created");
    std::fs::copy(xcs_tests::UPPER, Path::new(&components).join("shout.wasm"))
        .expect("the component can be copied");
    let graph = scratch.file(
        "graph.toml",
        b"[[node]]\nid = \"loud\"\noperator = \"components/shout.wasm\"\nargs = { text = \"@input.text\" }\n\n[outputs]\nloud = \"@loud\"\n",
    );
    let empty = scratch.operators(&[]);
    let run = xcs_with_stdin(
        &[
            "run",
            &graph,
            "--operators",
            &empty,
            "--input",
            r#"{"text":"hi"}"#,
        ],
        None,
        &scratch,
    );
    run.assert_success();
    assert_eq!(run.stdout, "{\"loud\":\"HI\"}\n", "{run:#?}");
}

#[test]
fn run_without_a_graph_input_exits_4() {
    let scratch = Scratch::new();
    let operators = scratch.operators(PIPELINE_OPERATORS);
    xcs_with_stdin(
        &["run", PIPELINE, "--operators", &operators, "--input", "{}"],
        None,
        &scratch,
    )
    .assert_error(
        4,
        "validation",
        &["$.documents", "list<string>", "missing graph input"],
    );
}

#[test]
fn run_with_a_mistyped_graph_input_exits_4_with_the_path() {
    let scratch = Scratch::new();
    let operators = scratch.operators(PIPELINE_OPERATORS);
    xcs_with_stdin(
        &[
            "run",
            PIPELINE,
            "--operators",
            &operators,
            "--input",
            r#"{"documents":["a",2]}"#,
        ],
        None,
        &scratch,
    )
    .assert_error(4, "validation", &["$.documents[1]"]);
}

/// Without a terminal on stderr there is no progress bar: a successful run
/// prints its outputs and nothing else. Input from piped stdin.
#[test]
fn run_success_prints_nothing_on_stderr() {
    let scratch = Scratch::new();
    let operators = scratch.operators(&[
        ("word-count", xcs_tests::WORD_COUNT),
        ("stats", xcs_tests::STATS),
    ]);
    let graph = scratch.file(
        "graph.toml",
        br#"
[[node]]
id = "counts"
operator = "word-count"
map = "text"
args = { text = "@input.documents" }

[[node]]
id = "summary"
operator = "stats"
args = { xs = "@counts" }

[outputs]
counts = "@counts"
max = "@summary.max"
"#,
    );
    let run = xcs_with_stdin(
        &[
            "run",
            &graph,
            "--operators",
            &operators,
            "--max-concurrency",
            "2",
        ],
        Some(r#"{"documents":["one","one two","one two three"]}"#),
        &scratch,
    );
    run.assert_success();
    assert_eq!(run.stdout, "{\"counts\":[1,2,3],\"max\":3.0}\n", "{run:#?}");
    assert!(
        run.stderr.is_empty(),
        "a successful run wrote on stderr: {run:#?}"
    );
}

// --- policies and metrics ------------------------------------------------------

#[test]
fn call_retries_with_attempts_and_writes_metrics() {
    let scratch = Scratch::new();
    let metrics = scratch.join("metrics.prom");
    let run = call(
        xcs_tests::FLAKY,
        r#"{"key": 1, "failure-percent": 100}"#,
        &[
            "--attempts",
            "3",
            "--retry-delay",
            "1ms",
            "--metrics",
            &metrics,
        ],
    );
    run.assert_error(5, "operator", &["(retryable)"]);
    let text = written(&metrics);
    assert!(
        text.contains(r#"xcs_retries_total{operator="flaky"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"xcs_outcomes_total{operator="flaky",outcome="operator"} 1"#),
        "{text}"
    );
}

#[test]
fn call_retries_timed_out_attempts_within_an_attempt_timeout() {
    let scratch = Scratch::new();
    let metrics = scratch.join("metrics.prom");
    let run = call(
        xcs_tests::SPIN,
        "null",
        &[
            "--timeout",
            "2s",
            "--attempts",
            "3",
            "--retry-delay",
            "1ms",
            "--attempt-timeout",
            "50ms",
            "--retry-on-timeout",
            "--metrics",
            &metrics,
        ],
    );
    run.assert_error(6, "timeout", &["timed out after 50ms"]);
    let text = written(&metrics);
    assert!(
        text.contains(r#"xcs_retries_total{operator="spin"} 2"#),
        "{text}"
    );
}

#[test]
fn call_metrics_on_success() {
    let scratch = Scratch::new();
    let metrics = scratch.join("metrics.prom");
    let run = call(xcs_tests::UPPER, r#"["hi"]"#, &["--metrics", &metrics]);
    run.assert_success();
    assert_eq!(run.stdout, "\"HI\"\n");
    let text = written(&metrics);
    assert!(
        text.contains(r#"xcs_calls_total{operator="upper"} 1"#),
        "{text}"
    );
    assert!(text.contains("xcs_call_duration_seconds_bucket"), "{text}");
}

#[test]
fn run_writes_metrics() {
    let scratch = Scratch::new();
    let metrics = scratch.join("metrics.prom");
    let run = run_pipeline(&scratch, &["--keep-going", "--metrics", &metrics]);
    assert_eq!(run.code, 5, "{run:#?}");
    let text = written(&metrics);
    assert!(
        text.contains(r#"xcs_calls_total{operator="word-count"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"xcs_outcomes_total{operator="factorial",outcome="operator"} 1"#),
        "{text}"
    );
}

/// The operators the composites `pipeline` and `refine` call, and the
/// composites, in a scratch operators directory.
fn composite_operators(scratch: &Scratch) -> String {
    scratch.operators(&[
        ("sort", xcs_tests::SORT),
        ("word-count", xcs_tests::WORD_COUNT),
        ("stats", xcs_tests::STATS),
        ("upper", xcs_tests::UPPER),
        ("most-common", xcs_tests::MOST_COMMON),
        ("pipeline", xcs_tests::PIPELINE),
        ("refine", xcs_tests::REFINE),
        ("recurse", xcs_tests::RECURSE),
    ])
}

/// `xcs trace --toml` writes the traced graph as a graph file; `xcs run`
/// on it gives the outputs `xcs run` on the composite gives.
#[test]
fn a_traced_graph_runs_as_the_composite_does() {
    let scratch = Scratch::new();
    let operators = composite_operators(&scratch);
    let input = r#"{"documents": ["b c d", "a"]}"#;
    let args = |command: &'static str, target: &str| -> Vec<String> {
        [
            command,
            target,
            "--operators",
            operators.as_str(),
            "--input",
            input,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let args = |command: &'static str, target: &str, extra: &[&str]| -> Vec<String> {
        let mut all = args(command, target);
        all.extend(extra.iter().map(|flag| (*flag).to_owned()));
        all
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        xcs_with_stdin(&args, None, &scratch)
    };
    let pipeline = Path::new(&operators).join("pipeline.wasm");
    let pipeline = pipeline.to_str().expect("UTF-8");
    let traced = run(args("trace", pipeline, &["--toml"]));
    traced.assert_success();
    assert!(traced.stdout.contains("[[node]]"), "{traced:#?}");
    let graph = scratch.file("traced.toml", traced.stdout.as_bytes());
    let from_file = run(args("run", &graph, &[]));
    from_file.assert_success();
    let from_composite = run(args("run", pipeline, &[]));
    from_composite.assert_success();
    assert_eq!(from_file.stdout, from_composite.stdout);
    let outputs: Value = serde_json::from_str(&from_composite.stdout).expect("JSON");
    assert_eq!(outputs["output"]["count"], 2, "{outputs}");

    let text = run(args("trace", pipeline, &[]));
    text.assert_success();
    assert!(
        text.stdout
            .starts_with("complete: 3 call(s), 0 merged, 3 node(s)"),
        "{text:#?}"
    );
    let json = run(args("trace", pipeline, &["--json"]));
    json.assert_success();
    let json: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json["complete"], true);
    assert_eq!(json["nodes"][1]["type"], "list<u32>", "{json:#}");
    assert_eq!(json["nodes"][1]["map"], "text", "{json:#}");
}

/// A composite that forces a value: `trace` says where (exit 0), `run`
/// runs it staged with a warning, `run --strict` is an `analysis` error.
#[test]
fn a_forcing_composite_traces_partly_and_runs_staged_unless_strict() {
    let scratch = Scratch::new();
    let operators = composite_operators(&scratch);
    let refine = Path::new(&operators).join("refine.wasm");
    let refine = refine.to_str().expect("UTF-8");
    let input = r#"{"text": "one two three", "threshold": 2}"#;
    let base = ["--operators", operators.as_str(), "--input", input];
    let trace = xcs_with_stdin(&[&["trace", refine][..], &base].concat(), None, &scratch);
    trace.assert_success();
    assert!(
        trace
            .stdout
            .starts_with("stopped: `refine` forced the value of `word-count#1` after 1 call(s)"),
        "{trace:#?}"
    );
    let dot = scratch.join("refine.dot");
    let run = xcs_with_stdin(
        &[&["run", refine, "--dot", &dot][..], &base].concat(),
        None,
        &scratch,
    );
    run.assert_success();
    assert_eq!(run.stdout.trim(), r#"{"output":"ONE TWO THREE"}"#);
    assert!(run.stderr.contains("run staged"), "{run:#?}");
    assert!(
        written(&dot).contains("refine/upper#2"),
        "the recorded calls are drawn"
    );
    let strict = xcs_with_stdin(
        &[&["run", refine, "--strict"][..], &base].concat(),
        None,
        &scratch,
    );
    strict.assert_error(12, "analysis", &["forced the value of `word-count#1`"]);
}

/// Recursion past `max_depth` is an `analysis` error (exit 12).
#[test]
fn a_composite_recursing_too_deep_exits_12() {
    let scratch = Scratch::new();
    let operators = composite_operators(&scratch);
    let recurse = Path::new(&operators).join("recurse.wasm");
    let run = xcs_with_stdin(
        &[
            "run",
            recurse.to_str().expect("UTF-8"),
            "--operators",
            &operators,
            "--input",
            "[50]",
        ],
        None,
        &scratch,
    );
    run.assert_error(12, "analysis", &["max_depth (16)", "recurse → recurse"]);
}

// --- output: closed pipes, full disks, guest-controlled text -----------

/// A reader that goes away (`xcs call ... | head -c1`) stops xcs quietly
/// with 141 (as SIGPIPE would), no panic (101), nothing on stderr.
#[test]
fn a_closed_stdout_stops_quietly() {
    let scratch = Scratch::new();
    let input = format!("[\"{}\"]", "x".repeat(1 << 20));
    let input_file = scratch.file("big.json", input.as_bytes());
    let mut child = xcs_command(&scratch.path().join("cache"))
        .args(["call", xcs_tests::UPPER, "--input-file", &input_file])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xcs starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("a first byte");
    drop(stdout);
    let output = child.wait_with_output().expect("xcs ends");
    assert_eq!(output.status.code(), Some(141), "{output:?}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A full disk on stdout is an `io` error (exit 1); on stderr, the exit
/// code still tells (a trap: 9), never a panic (101).
#[test]
fn full_disks_are_io_errors_not_panics() {
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(dev_full) = full() else {
        return; // no /dev/full on this system
    };
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let output = xcs_command(&cache)
        .args(["call", xcs_tests::UPPER, "--input", r#"["hi"]"#])
        .stdin(Stdio::null())
        .stdout(dev_full)
        .stderr(Stdio::piped())
        .output()
        .expect("xcs runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).starts_with("error[io]: I/O error on <stdout>"),
        "{output:?}"
    );
    let output = xcs_command(&cache)
        .args(["call", xcs_tests::PANIC, "--input", "[]"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full().expect("/dev/full"))
        .output()
        .expect("xcs runs");
    assert_eq!(output.status.code(), Some(9), "{output:?}");
}

/// An operator's error message is the guest's text: an escape sequence in
/// it is printed escaped, and a line it forges is indented, never a line
/// that starts `error[...]` of its own.
#[test]
fn guest_text_cannot_forge_or_colour_the_error_line() {
    let wat = format!(
        r#"(component {types}
  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 16) "fixture")
    (data (i32.const 32) "0.1.0")
    (data (i32.const 48) "a fixture")
    (data (i32.const 512) "bad")
    (data (i32.const 600) "\1b[31mred\0aerror[timeout]: forged")
    (func (export "metadata") (result i32)
      (i32.store (i32.const 64) (i32.const 16)) (i32.store (i32.const 68) (i32.const 7))
      (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
      (i32.store (i32.const 80) (i32.const 48)) (i32.store (i32.const 84) (i32.const 9))
      (i32.store8 (i32.const 88) (i32.const 0))
      (i32.const 64))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
    (func (export "invoke") (result i32)
      (i32.store8 (i32.const 128) (i32.const 1))
      (i32.store (i32.const 132) (i32.const 512)) (i32.store (i32.const 136) (i32.const 3))
      (i32.store (i32.const 140) (i32.const 600)) (i32.store (i32.const 144) (i32.const 31))
      (i32.store8 (i32.const 148) (i32.const 0))
      (i32.const 128)))
  (core instance $i (instantiate $m))
  (func (export "metadata") (result $metadata)
    (canon lift (core func $i "metadata") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "invoke") (result (result (error $error)))
    (canon lift (core func $i "invoke") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))"#,
        types = xcs::__doc_fixture::TYPES_IMPORT
    );
    let scratch = Scratch::new();
    let bytes = wat::parse_str(&wat).expect("the fixture parses");
    let operator = scratch.join("forger.wasm");
    std::fs::write(&operator, bytes).expect("written");
    let run = xcs_with_stdin(&["call", &operator, "--input", "[]"], None, &scratch);
    run.assert_error(5, "operator", &["\\u{1b}[31mred"]);
    assert!(!run.stderr.contains('\u{1b}'), "a raw escape: {run:#?}");
    assert!(
        run.stderr
            .lines()
            .filter(|line| line.starts_with("error["))
            .count()
            == 1,
        "a forged line: {run:#?}"
    );
}

/// Input JSON is bounded while it is parsed, not after: 4,000 bytes of
/// `[0,0,...]` are within `--max-input 1KiB`'s text bound (4 KiB) but
/// would take 64 KB as values: refused (exit 4) before it is all built.
/// A file that is not UTF-8 is input that is not JSON (exit 4), not `io`.
#[test]
fn input_is_bounded_while_it_is_parsed_and_must_be_utf8() {
    let scratch = Scratch::new();
    let zeros = format!("[[{}0]]", "0,".repeat(1_990));
    let file = scratch.file("zeros.json", zeros.as_bytes());
    let run = xcs_with_stdin(
        &[
            "call",
            xcs_tests::SUM,
            "--input-file",
            &file,
            "--max-input",
            "1KiB",
        ],
        None,
        &scratch,
    );
    run.assert_error(4, "validation", &["over the limit of 4096 bytes"]);
    let small = xcs_with_stdin(
        &[
            "call",
            xcs_tests::SUM,
            "--input",
            "[[1,2,3]]",
            "--max-input",
            "1KiB",
        ],
        None,
        &scratch,
    );
    small.assert_success();
    assert_eq!(small.stdout.trim(), "6");
    let latin1 = scratch.file("latin1.json", b"[\"caf\xe9\"]");
    let run = xcs_with_stdin(
        &["call", xcs_tests::UPPER, "--input-file", &latin1],
        None,
        &scratch,
    );
    run.assert_error(4, "validation", &["not UTF-8"]);
}

/// `xcs wit` prints the contract this build implements, byte for byte the
/// repository's `wit/operator.wit`; `--out DIR` writes it there to vendor,
/// making the directory; a directory that cannot be made is an `io` error.
#[test]
fn wit_prints_and_writes_the_contract() {
    let contract = include_str!("../../../wit/operator.wit");
    let printed = xcs(&["wit"]);
    assert_eq!(printed.code, 0, "{}", printed.stderr);
    assert_eq!(printed.stdout, contract);
    assert!(printed.stdout.contains("package xcs:operator@0.1.0;"));

    let scratch = Scratch::new();
    let dir = scratch.path().join("wit").join("deps").join("xcs");
    let written = xcs_with_stdin(&["wit", "--out", &dir.to_string_lossy()], None, &scratch);
    assert_eq!(written.code, 0, "{}", written.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("operator.wit")).expect("written"),
        contract
    );

    let blocked = scratch.file("a-file", b"not a directory");
    let refused = xcs(&["wit", "--out", &format!("{blocked}/deps")]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.first_stderr_line().starts_with("error[io]"),
        "{}",
        refused.stderr
    );
}

// --- grants ----------------------------------------------------------------

/// `--dir HOST::GUEST` lets the operator read HOST at GUEST (only that,
/// read-only); `--env NAME` passes one variable; ungrantable ones are
/// usage or config errors (exit 2).
#[test]
fn dir_and_env_flags_grant_what_they_name() {
    let scratch = Scratch::new();
    scratch.file("note.txt", b"granted text");
    let dir = format!("{}::/data", scratch.path().display());
    let ask = |request: &str, extra: &[&str]| {
        call(
            xcs_tests::READER,
            &format!(r#"{{"request": "{request}"}}"#),
            extra,
        )
    };
    let run = ask("read:/data/note.txt", &["--dir", &dir]);
    run.assert_success();
    assert_eq!(run.stdout, "\"granted text\"\n", "{run:#?}");
    ask("write:/data/note.txt", &["--dir", &dir]).assert_error(5, "operator", &["[io]"]);
    ask("read:/data/note.txt", &[]).assert_error(5, "operator", &["[io]"]);
    let run = ask("env:PATH", &["--env", "PATH"]);
    run.assert_success();
    assert_eq!(
        run.stdout,
        format!(
            "{}\n",
            serde_json::to_string(&std::env::var("PATH").expect("a PATH")).expect("JSON")
        ),
        "{run:#?}"
    );
    ask("env:HOME", &["--env", "PATH"]).assert_error(5, "operator", &["[unset]"]);
    ask("env:X", &["--dir", "no-separator"]).assert_error(2, "usage", &["expected HOST::GUEST"]);
    ask("env:X", &["--dir", "/surely/missing/dir::/data"]).assert_error(
        2,
        "config",
        &["/surely/missing/dir is not a directory"],
    );
    ask("env:X", &["--env", "XCS_SURELY_UNSET_VARIABLE"]).assert_error(
        2,
        "config",
        &["`XCS_SURELY_UNSET_VARIABLE`"],
    );
}

/// `--config FILE` grants what the file says (host paths relative to it);
/// a malformed file is a `config` error naming its line.
#[test]
fn a_grants_file_is_read_with_config() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path().join("data")).expect("a dir");
    scratch.file("data/note.txt", b"from the grants file");
    let config = scratch.file(
        "grants.toml",
        b"[grants.reader]\ndirs = [\"data::/data\"]\n",
    );
    let run = call(
        xcs_tests::READER,
        r#"{"request": "read:/data/note.txt"}"#,
        &["--config", &config],
    );
    run.assert_success();
    assert_eq!(run.stdout, "\"from the grants file\"\n", "{run:#?}");
    let bad = scratch.file("bad.toml", b"[grants.reader]\nnetwork = true\n");
    call(
        xcs_tests::READER,
        r#"{"request": "env:X"}"#,
        &["--config", &bad],
    )
    .assert_error(2, "config", &["line 2", "unknown field `network`"]);
}

/// A graph file's `[grants]` grant its operators what they say, host
/// paths relative to the graph file.
#[test]
fn a_graph_files_grants_apply_to_its_run() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path().join("data")).expect("a dir");
    scratch.file("data/f.txt", b"granted by the graph");
    let operators = scratch.path().join("operators");
    std::fs::create_dir_all(&operators).expect("a dir");
    std::fs::copy(xcs_tests::READER, operators.join("reader.wasm")).expect("a copy");
    let graph = scratch.file(
        "graph.toml",
        br#"
[[node]]
id = "read"
operator = "reader"
args = { request = "read:/data/f.txt" }

[outputs]
text = "@read"

[grants.reader]
dirs = ["data::/data"]
"#,
    );
    let operators = operators.to_str().expect("UTF-8").to_owned();
    let run = xcs(&["run", &graph, "--operators", &operators]);
    run.assert_success();
    assert_eq!(
        run.stdout.trim(),
        r#"{"text":"granted by the graph"}"#,
        "{run:#?}"
    );
}

/// `--allow-http` grants outgoing HTTP to the origins it names; an
/// operator importing HTTP without it is refused at load (exit 3) with the
/// flag named; a request elsewhere fails in the guest (exit 5); a bad
/// pattern is a `config` error (exit 2); `inspect` shows what `fetch`
/// asks for and what is granted; the grants file's `http` key does the
/// same as the flag; and the API key of a model call comes from `--env`.
#[test]
fn allow_http_grants_the_origins_it_names() {
    let background =
        xcs_tests::mock_http::BackgroundServer::start("sk-cli").expect("the mock server starts");
    let server = background.server();
    let origin = server.origin();
    let hello = format!(r#"{{"url": "{origin}/hello"}}"#);
    call(xcs_tests::FETCH, &hello, &[]).assert_error(
        3,
        "capability",
        &[
            "wasi:http/outgoing-handler",
            "--allow-http",
            "[grants.fetch]",
        ],
    );
    let run = call(xcs_tests::FETCH, &hello, &["--allow-http", &origin]);
    run.assert_success();
    let output: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(output["text"], "hello from the mock server", "{run:#?}");
    let elsewhere = format!(r#"{{"url": "http://localhost:{}/hello"}}"#, server.port());
    call(xcs_tests::FETCH, &elsewhere, &["--allow-http", &origin]).assert_error(
        5,
        "operator",
        &["[denied]", "HttpRequestDenied"],
    );
    call(xcs_tests::FETCH, &hello, &["--allow-http", "https://*"]).assert_error(
        2,
        "config",
        &["`https://*` is not an HTTP origin pattern"],
    );
    assert_eq!(server.requests(), 1);

    let run = xcs(&["inspect", xcs_tests::FETCH]);
    run.assert_success();
    assert!(
        run.stdout.contains("capabilities:")
            && run
                .stdout
                .contains("http  wasi:http/outgoing-handler: granted nothing"),
        "{run:#?}"
    );
    let run = xcs(&[
        "inspect",
        "--json",
        "--allow-http",
        &origin,
        xcs_tests::FETCH,
    ]);
    run.assert_success();
    let description: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        description["capabilities"]["http"]["granted"],
        serde_json::json!([origin])
    );

    let scratch = Scratch::new();
    scratch.file(
        "xcs.toml",
        format!("[grants.fetch]\nhttp = [\"{origin}\"]\nenv = [\"MODEL_KEY\"]\n").as_bytes(),
    );
    let config = scratch.path().join("xcs.toml");
    let chat = format!(
        r#"{{"url": "{origin}/v1/chat/completions", "method": "POST", "bearer-env": "MODEL_KEY",
            "body": "{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"}}"#
    );
    let output = xcs_command(&scratch.path().join("cache"))
        .args(["call", xcs_tests::FETCH, "--config"])
        .arg(&config)
        .args(["--input", &chat])
        .env("MODEL_KEY", "sk-cli")
        .output()
        .expect("xcs runs");
    assert!(output.status.success(), "{output:?}");
    let output: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(output["status"], 200, "{output}");
    assert!(
        output["text"]
            .as_str()
            .is_some_and(|text| text.contains("echo: hi")),
        "{output}"
    );
}

/// `--json` (any subcommand) prints an error as one JSON object on stderr
/// with the kind, message, causes, operator and exit code; usage errors
/// too; `xcs completions` prints a shell's completion script.
#[test]
fn json_errors_and_completions() {
    let run = call(xcs_tests::UPPER, r#"{"text": 7}"#, &["--json"]);
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    let error: Value = serde_json::from_str(run.stderr.trim()).expect("one JSON object");
    assert_eq!(error["kind"], "validation");
    assert_eq!(error["operator"], "upper");
    assert_eq!(error["exit_code"], 4);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected string"))
    );

    let run = call(xcs_tests::FACTORIAL, r#"{"n": 25}"#, &["--json"]);
    let error: Value = serde_json::from_str(run.stderr.trim()).expect("one JSON object");
    assert_eq!(
        (error["kind"].clone(), error["exit_code"].clone()),
        (json!("operator"), json!(5))
    );
    assert!(error["code"].is_string(), "{error}");
    assert_eq!(error["retryable"], false);

    let run = xcs(&["call", "--json", "--no-such-flag", xcs_tests::UPPER]);
    assert_eq!(run.code, 2);
    let error: Value = serde_json::from_str(run.stderr.trim()).expect("one JSON object");
    assert_eq!(error["kind"], "usage");
    // Without --json, the one line of text.
    xcs(&["call", "/no/such/file.wasm"]).assert_error(1, "io", &["/no/such/file.wasm"]);

    for shell in ["bash", "zsh", "fish"] {
        let run = xcs(&["completions", shell]);
        run.assert_success();
        assert!(
            run.stdout.contains("serve") && run.stdout.contains("--allow-http"),
            "{shell}"
        );
    }
    xcs(&["completions", "cmd.exe"]).assert_error(2, "usage", &["cmd.exe"]);
}
