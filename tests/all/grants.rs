//! Grants: read-only directories and named environment variables, given
//! to every operator or to one by name, and nothing else.

use std::path::PathBuf;

use serde_json::{Value, json};
use xcs::{Error, ErrorKind, Grants, Host, Limits, Operator};

use crate::util::{assert_healthy, load};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xcs-grants-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the scratch dir can be made");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn ask(reader: &Operator, request: &str) -> Result<Value, Error> {
    reader
        .call(&json!({ "request": request }), &Limits::default())
        .await
}

/// The operator error code of a failed request.
fn code(outcome: Result<Value, Error>) -> String {
    match outcome {
        Err(Error::Operator { code, .. }) => code,
        other => panic!("expected an operator error, got {other:?}"),
    }
}

/// A granted directory is readable at its guest path, and nothing else of
/// the filesystem is there: writes fail, `..` stays inside, a symbolic
/// link out of it fails, and the host's file is unchanged.
#[tokio::test]
async fn a_granted_directory_is_readable_and_nothing_else() {
    let scratch = Scratch::new("dir");
    let data = scratch.0.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("note.txt"), "hello from the host").unwrap();
    std::fs::write(data.join("sub/deep.txt"), "deep").unwrap();
    std::fs::write(scratch.0.join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(scratch.0.join("secret.txt"), data.join("escape")).unwrap();
    let host = Host::builder()
        .grants(Grants::new().read_dir(&data, "/data"))
        .build()
        .unwrap();
    let reader = load(&host, xcs_tests::READER).await;
    assert_eq!(reader.grants().dirs().count(), 1);
    assert_eq!(
        ask(&reader, "read:/data/note.txt").await.unwrap(),
        json!("hello from the host")
    );
    assert_eq!(
        ask(&reader, "read:/data/sub/deep.txt").await.unwrap(),
        json!("deep")
    );
    assert_eq!(
        ask(&reader, "list:/data").await.unwrap(),
        json!("escape,note.txt,sub")
    );
    for refused in [
        "write:/data/note.txt",
        "write:/data/new.txt",
        "read:/data/../secret.txt",
        "read:/data/sub/../../secret.txt",
        "read:/data/escape",
        "read:/etc/hostname",
        "list:/",
    ] {
        assert_eq!(code(ask(&reader, refused).await), "io", "{refused}");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("note.txt")).unwrap(),
        "hello from the host"
    );
    assert!(!data.join("new.txt").exists());
    assert_healthy(&host).await;
}

/// Only the granted variables are in the guest's environment, with the
/// values they had when granted; grants by name or digest add to the
/// default ones, for that operator only.
#[tokio::test]
async fn only_granted_environment_variables_are_seen() {
    let host = Host::builder()
        .grants(Grants::new().env_value("GREETING", "hi"))
        .grants_for("noop", Grants::new().env_value("NOOP_ONLY", "x"))
        .build()
        .unwrap();
    let reader = load(&host, xcs_tests::READER).await;
    assert_eq!(ask(&reader, "env:GREETING").await.unwrap(), json!("hi"));
    assert_eq!(code(ask(&reader, "env:HOME").await), "unset");
    assert_eq!(code(ask(&reader, "env:PATH").await), "unset");
    assert_eq!(code(ask(&reader, "env:NOOP_ONLY").await), "unset");
    let digest = reader.digest().to_owned();
    let own = Host::builder()
        .grants(Grants::new().env_value("GREETING", "hi"))
        .grants_for(
            "reader",
            Grants::new()
                .env_value("OTHER", "x")
                .env_value("BOTH", "name"),
        )
        .grants_for(
            digest,
            Grants::new()
                .env_value("BY_DIGEST", "d")
                .env_value("BOTH", "digest"),
        )
        .build()
        .unwrap();
    let reader = load(&own, xcs_tests::READER).await;
    assert_eq!(ask(&reader, "env:GREETING").await.unwrap(), json!("hi"));
    assert_eq!(ask(&reader, "env:OTHER").await.unwrap(), json!("x"));
    assert_eq!(ask(&reader, "env:BY_DIGEST").await.unwrap(), json!("d"));
    assert_eq!(
        ask(&reader, "env:BOTH").await.unwrap(),
        json!("digest"),
        "the digest's grants come last"
    );
    // Values stay out of debug output.
    let grants = format!("{:?}", reader.grants());
    assert!(
        grants.contains("BY_DIGEST") && !grants.contains("\"d\""),
        "{grants}"
    );
    // `env` reads this process's value when the host is built.
    let path = std::env::var("PATH").expect("tests run with a PATH");
    let from_process = Host::builder()
        .grants(Grants::new().env("PATH"))
        .build()
        .unwrap();
    let reader = load(&from_process, xcs_tests::READER).await;
    assert_eq!(ask(&reader, "env:PATH").await.unwrap(), json!(path));
}

/// Grants the host cannot honour are `config` errors when it is built.
#[test]
fn bad_grants_are_config_errors() {
    let scratch = Scratch::new("bad");
    let file = scratch.0.join("file");
    std::fs::write(&file, "").unwrap();
    for (grants, needle) in [
        (
            Grants::new().read_dir(scratch.0.join("missing"), "/data"),
            "is not a directory",
        ),
        (Grants::new().read_dir(&file, "/data"), "is not a directory"),
        (
            Grants::new().read_dir(&scratch.0, "data"),
            "is not an absolute path without `..`",
        ),
        (
            Grants::new().read_dir(&scratch.0, "/a/../b"),
            "is not an absolute path without `..`",
        ),
        (
            Grants::new()
                .read_dir(&scratch.0, "/data")
                .read_dir(&scratch.0, "/data"),
            "granted twice",
        ),
        (
            Grants::new()
                .read_dir(&scratch.0, "/data")
                .read_dir(&scratch.0, "/./data/"),
            "granted twice",
        ),
        (
            Grants::new().env_value("A=B", "x"),
            "is not an environment variable name",
        ),
    ] {
        let error = Host::builder().grants(grants).build().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(error.to_string().contains(needle), "{error}");
    }
    let error = Host::builder()
        .grants(Grants::new().env("XCS_TEST_SURELY_UNSET_VARIABLE"))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(
        error
            .to_string()
            .contains("`XCS_TEST_SURELY_UNSET_VARIABLE`"),
        "{error}"
    );
}

/// A grants file: `[grants.default]` and per-operator tables of `dirs`
/// (HOST::GUEST, HOST relative to the file) and `env`; anything else is a
/// `config` error naming its line.
#[tokio::test]
async fn a_grants_file_grants_what_it_says() {
    let scratch = Scratch::new("file");
    std::fs::create_dir_all(scratch.0.join("data")).unwrap();
    std::fs::write(scratch.0.join("data/f.txt"), "from the file").unwrap();
    let table = xcs::GrantsTable::from_toml(
        r#"
[grants.default]
env = ["PATH"]

[grants.reader]
dirs = ["data::/data"]
"#,
        &scratch.0,
    )
    .unwrap();
    let host = Host::builder().grants_table(&table).build().unwrap();
    let reader = load(&host, xcs_tests::READER).await;
    assert_eq!(
        ask(&reader, "read:/data/f.txt").await.unwrap(),
        json!("from the file")
    );
    assert_eq!(
        ask(&reader, "env:PATH").await.unwrap(),
        json!(std::env::var("PATH").unwrap())
    );
    for (text, needle) in [
        ("[grants.default]\nnetwork = true\n", "line 2"),
        (
            "[grants.default]\ndirs = [\"nope\"]\n",
            "is not HOST::GUEST",
        ),
        ("[other]\n", "line 1"),
    ] {
        let error = xcs::GrantsTable::from_toml(text, &scratch.0).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(error.to_string().contains(needle), "{text}: {error}");
    }
    // A variable is read when the host is built, not when the file is.
    let unset = xcs::GrantsTable::from_toml(
        "[grants.default]\nenv = [\"XCS_SURELY_UNSET_VARIABLE\"]\n",
        &scratch.0,
    )
    .expect("the file is fine");
    let error = Host::builder().grants_table(&unset).build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(
        error
            .to_string()
            .contains("`XCS_SURELY_UNSET_VARIABLE` is not set"),
        "{error}"
    );
}

/// An operator with grants is never answered from the result cache: the
/// file it reads may change between calls.
#[tokio::test]
async fn granted_calls_are_not_cached() {
    let scratch = Scratch::new("cache");
    std::fs::write(scratch.0.join("value"), "one").unwrap();
    let host = Host::builder()
        .grants_for("upper", Grants::new().read_dir(&scratch.0, "/data"))
        .build()
        .unwrap();
    let upper = load(&host, xcs_tests::UPPER).await;
    assert!(upper.metadata().deterministic);
    for _ in 0..3 {
        upper
            .call(&json!({ "text": "a" }), &Limits::default())
            .await
            .unwrap();
    }
    let snapshot = host.metrics();
    let metrics = &snapshot.operators["upper"];
    assert_eq!(
        (metrics.cache_hits, metrics.cache_misses),
        (0, 0),
        "the result cache is not consulted: {metrics:?}"
    );
    // An empty grant is no grant: the cache answers again.
    let empty = Host::builder()
        .grants_for("upper", Grants::new())
        .build()
        .unwrap();
    let upper = load(&empty, xcs_tests::UPPER).await;
    for _ in 0..2 {
        upper
            .call(&json!({ "text": "a" }), &Limits::default())
            .await
            .unwrap();
    }
    assert_eq!(empty.metrics().operators["upper"].cache_hits, 1);
}

/// A graph file's `[grants]` are read with the graph (host paths as
/// written, for the caller to place) and written back by `to_toml`.
#[test]
fn a_graph_file_carries_its_grants() {
    let text = r#"
[[node]]
id = "read"
operator = "reader"
args = { request = "read:/data/f.txt" }

[outputs]
text = "@read"

[grants.default]
env = ["PATH"]

[grants.reader]
dirs = ["data::/data"]
"#;
    let graph = xcs::graph::Graph::from_toml(text).unwrap();
    let reader = graph
        .grants()
        .operators()
        .find(|(key, _)| *key == "reader")
        .map(|(_, grants)| grants.clone())
        .expect("reader's grants");
    assert_eq!(
        reader.dirs().collect::<Vec<_>>(),
        [(std::path::Path::new("data"), "/data")]
    );
    let placed = graph
        .grants()
        .clone()
        .relative_to(std::path::Path::new("/srv"));
    let (_, placed_reader) = placed.operators().next().unwrap();
    assert_eq!(
        placed_reader.dirs().next().unwrap().0,
        std::path::Path::new("/srv/data")
    );
    assert_eq!(
        graph
            .grants()
            .default_grants()
            .env_names()
            .collect::<Vec<_>>(),
        ["PATH"]
    );
    let again = xcs::graph::Graph::from_toml(&graph.to_toml().unwrap()).unwrap();
    assert_eq!(again, graph);
    let error = xcs::graph::Graph::from_toml("[grants.reader]\ndirs = [\"nope\"]\n").unwrap_err();
    assert!(error.to_string().contains("is not HOST::GUEST"), "{error}");
}
