//! `xcs serve`, as a process on a random loopback port, spoken to over
//! real TCP: calls, graphs, errors and their statuses, the bounds on
//! bodies and limits, the token, metrics, hot reload and the drain.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Scratch, xcs_command};

/// A running `xcs serve`; killed when dropped.
struct Server {
    child: Child,
    address: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// `xcs serve --listen 127.0.0.1:0 --operators <dir> args...`, once it
    /// listens.
    fn start(scratch: &Scratch, operators: &Path, args: &[&str]) -> Server {
        let mut command = xcs_command(&scratch.path().join("cache"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--operators"])
            .arg(operators)
            .args(args);
        Server::spawn(command)
    }

    /// `command` (an `xcs serve` on port 0), once it listens.
    fn spawn(mut command: std::process::Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xcs serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (listening, address) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = listening.send(address.to_owned());
                }
                log.lock()
                    .expect("the log lock")
                    .push_str(&format!("{line}\n"));
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let log = stderr.lock().map(|log| log.clone()).unwrap_or_default();
                panic!("xcs serve did not listen: {log}")
            });
        Server {
            child,
            address,
            stderr,
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(&self.address, method, path, headers, body)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// A call of `fetch` on the mock server at `origin` that answers after
    /// `ms` milliseconds, made from another thread.
    fn slow_fetch(&self, origin: &str, ms: u64) -> std::thread::JoinHandle<Reply> {
        let address = self.address.clone();
        let slow = json!({ "url": format!("{origin}/slow/{ms}") }).to_string();
        std::thread::spawn(move || {
            request(
                &address,
                "POST",
                "/v1/operators/fetch/call",
                &[],
                slow.as_bytes(),
            )
        })
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Its exit code, within `limit`.
    fn wait(mut self, limit: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the child is waited for") {
                return status.code().expect("exited, not killed");
            }
            assert!(
                started.elapsed() < limit,
                "xcs serve did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("the log lock").clone()
    }

    /// Polls `path` until `done` holds of its reply (a reload is
    /// debounced and asynchronous).
    fn until(&self, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let started = Instant::now();
        loop {
            let reply = self.get(path);
            if done(&reply) {
                return reply;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{path} never changed: {reply:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Asserts an error reply: its status and kind.
    fn assert_error(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert_eq!(body["kind"], kind, "{self:?}");
        assert!(body["message"].is_string(), "{self:?}");
        body
    }
}

/// One HTTP/1.1 request on a new connection (closed after it).
fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    request_to(address, address, method, path, headers, body)
}

/// [`request`] with `host` as its `Host` header.
fn request_to(
    address: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(address).expect("the server accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    if !headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    }) {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .expect("the request is sent");
    // A server may answer (413) before taking the whole body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("the response is read");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {text}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    body
}

/// A directory of the given operators (copies, so a test may replace
/// them).
fn operators(scratch: &Scratch, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = scratch.path().join("operators");
    std::fs::create_dir_all(&dir).expect("the operators directory");
    for (name, from) in files {
        std::fs::copy(from, dir.join(name)).expect("the operator is copied");
    }
    dir
}

/// Replaces `path` at once (write beside it, rename over it), as a deploy
/// would.
fn replace(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes).expect("written");
    std::fs::rename(&temporary, path).expect("renamed");
}

/// The value of the Prometheus sample `name{labels}` (labels as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[test]
fn serve_answers_calls_graphs_and_errors() {
    let scratch = Scratch::new();
    let dir = operators(
        &scratch,
        &[
            ("upper.wasm", xcs_tests::UPPER),
            ("word-count.wasm", xcs_tests::WORD_COUNT),
        ],
    );
    let server = Server::start(&scratch, &dir, &[]);

    let listed = server.get("/v1/operators");
    assert_eq!(listed.status, 200, "{listed:?}");
    let names: Vec<Value> = listed.json()["operators"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|operator| operator["name"].clone())
        .collect();
    assert_eq!(names, [json!("upper"), json!("word-count")]);
    let upper = server.get("/v1/operators/upper").json();
    assert_eq!(
        upper["signature"],
        "func(text: string) -> result<string, error>"
    );
    assert!(
        upper["digest"]
            .as_str()
            .is_some_and(|digest| digest.starts_with("sha256:"))
    );

    let called = server.post("/v1/operators/upper/call", &json!({ "text": "hi" }));
    assert_eq!(
        (called.status, called.json()),
        (200, json!({ "output": "HI" }))
    );

    // A body past 64 KiB is parsed off the async threads: same answer.
    let long = "x".repeat(100_000);
    let called = server.post("/v1/operators/upper/call", &json!({ "text": long }));
    assert_eq!(called.json()["output"], long.to_uppercase());

    // Errors: a JSON body with the kind, and the status of the table.
    server
        .post("/v1/operators/upper/call", &json!({ "text": 7 }))
        .assert_error(422, "validation");
    let error = server
        .request("POST", "/v1/operators/upper/call", &[], b"{not json")
        .assert_error(422, "validation");
    assert_eq!(error["operator"], "upper");
    server
        .post("/v1/operators/nothing/call", &json!({}))
        .assert_error(404, "not-found");
    server.get("/v2/elsewhere").assert_error(404, "not-found");
    server
        .request("POST", "/v1/operators/upper/call?timeout=soon", &[], b"{}")
        .assert_error(400, "invalid-request");

    // Graphs: checked, run, drawn; a graph may not grant.
    let graph = r#"
[[node]]
id = "shout"
operator = "upper"
args = { text = "@input.text" }

[[node]]
id = "count"
operator = "word-count"
args = { text = "@shout" }

[outputs]
words = "@count"
"#;
    let checked = server.request("POST", "/v1/graphs/check", &[], graph.as_bytes());
    assert_eq!(checked.status, 200, "{checked:?}");
    assert_eq!(checked.json()["nodes"], 2);
    let run = server.post(
        "/v1/graphs/run?dot=true&timeline=true",
        &json!({ "graph": graph, "input": { "text": "a b c" } }),
    );
    assert_eq!(run.status, 200, "{run:?}");
    let run = run.json();
    assert_eq!(run["outputs"]["words"], 3, "{run}");
    assert!(
        run["dot"]
            .as_str()
            .is_some_and(|dot| dot.starts_with("digraph")),
        "{run}"
    );
    assert!(run["timeline"]["traceEvents"].is_array(), "{run}");
    let broken = graph.replace("word-count", "nothing");
    let error = server
        .request("POST", "/v1/graphs/check", &[], broken.as_bytes())
        .assert_error(422, "graph");
    assert!(
        error["problems"]
            .as_array()
            .is_some_and(|problems| !problems.is_empty())
    );
    let granting = format!("{graph}\n[grants.default]\nenv = [\"HOME\"]\n");
    server
        .post(
            "/v1/graphs/run",
            &json!({ "graph": granting, "input": { "text": "a" } }),
        )
        .assert_error(403, "capability");

    // 1,000 calls, 64 at a time, all correct; the metrics count them.
    let address = server.address.clone();
    let workers: Vec<_> = (0..64)
        .map(|worker| {
            let address = address.clone();
            std::thread::spawn(move || {
                for index in 0..(1000 / 64 + usize::from(worker < 1000 % 64)) {
                    let text = format!("w{worker}-{index}");
                    let reply = request(
                        &address,
                        "POST",
                        "/v1/operators/upper/call",
                        &[],
                        json!({ "text": text }).to_string().as_bytes(),
                    );
                    assert_eq!(reply.status, 200, "{reply:?}");
                    assert_eq!(reply.json()["output"], text.to_uppercase());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker thread");
    }
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("application/openmetrics-text")),
        "{metrics:?}"
    );
    let text = &metrics.body;
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    let served = sample(
        text,
        r#"xcs_serve_requests_total{route="/v1/operators/{name}/call",status="200"}"#,
    );
    assert_eq!(served, Some(1002.0), "{text}");
    let failed = sample(
        text,
        r#"xcs_serve_requests_total{route="/v1/operators/{name}/call",status="422"}"#,
    );
    assert_eq!(failed, Some(2.0), "{text}");
    assert_eq!(sample(text, "xcs_serve_operators"), Some(2.0), "{text}");
    // Every line is a comment or `name{labels} value`.
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").json()["ready"], true);
}

/// A spinning guest is stopped at the service's deadline (504, `timeout`)
/// while other requests are served; a request cannot raise the deadline.
#[test]
fn serve_times_out_a_spinning_guest_and_caps_limits() {
    let scratch = Scratch::new();
    let dir = operators(
        &scratch,
        &[
            ("upper.wasm", xcs_tests::UPPER),
            ("spin.wasm", xcs_tests::SPIN),
        ],
    );
    let server = Server::start(&scratch, &dir, &["--timeout", "1500ms"]);
    let address = server.address.clone();
    let spinning = std::thread::spawn(move || {
        request(
            &address,
            "POST",
            "/v1/operators/spin/call?timeout=1h",
            &[],
            b"{}",
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..10 {
        let reply = server.post("/v1/operators/upper/call", &json!({ "text": "x" }));
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let reply = spinning.join().expect("the spinning request");
    let error = reply.assert_error(504, "timeout");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("1.5s")),
        "capped at the service's 1.5s: {error}"
    );
    // Lower is allowed.
    let error = server
        .request("POST", "/v1/operators/spin/call?timeout=100ms", &[], b"{}")
        .assert_error(504, "timeout");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("100ms"))
    );

    // A graph's nodes get the service's limits too (not the host's
    // defaults), and a posted graph cannot give its nodes more.
    let graph = "[[node]]\nid = \"loop\"\noperator = \"spin\"\n\n[outputs]\nout = \"@loop\"\n";
    let error = server
        .post("/v1/graphs/run", &json!({ "graph": graph }))
        .assert_error(504, "timeout");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("1.5s")),
        "the node stopped at the service's --timeout: {error}"
    );
    assert_eq!(error["node"], "loop", "{error}");
    let greedy = graph.replace(
        "operator = \"spin\"",
        "operator = \"spin\"\ntimeout = \"1h\"",
    );
    server
        .post("/v1/graphs/run", &json!({ "graph": greedy }))
        .assert_error(403, "forbidden");

    // Without a token, only this machine's programs: no web page (an
    // Origin), no other host name (DNS rebinding).
    server
        .request(
            "POST",
            "/v1/operators/upper/call",
            &[("origin", "https://evil.example")],
            br#"{"text": "x"}"#,
        )
        .assert_error(403, "forbidden");
    let rebound = request_to(
        &server.address,
        "evil.example",
        "POST",
        "/v1/operators/upper/call",
        &[],
        br#"{"text": "x"}"#,
    );
    rebound.assert_error(403, "forbidden");
    // A method a route does not take: JSON too.
    server
        .request("DELETE", "/v1/operators/upper/call", &[], b"")
        .assert_error(405, "invalid-request");
}

/// A body over `--max-body` is refused (413) from its declared length,
/// before it is read; the token guards everything but health.
#[test]
fn serve_refuses_large_bodies_and_missing_tokens() {
    let scratch = Scratch::new();
    let dir = operators(&scratch, &[("upper.wasm", xcs_tests::UPPER)]);
    let token = scratch.file("token", b"s3cret-token\n");
    let server = Server::start(
        &scratch,
        &dir,
        &["--max-body", "1KiB", "--token-file", &token],
    );
    let bearer = ("authorization", "Bearer s3cret-token");
    server
        .post("/v1/operators/upper/call", &json!({ "text": "x" }))
        .assert_error(401, "unauthorized");
    server
        .request("GET", "/metrics", &[("authorization", "Bearer wrong")], b"")
        .assert_error(401, "unauthorized");
    assert_eq!(server.get("/healthz").status, 200);
    let called = server.request(
        "POST",
        "/v1/operators/upper/call",
        &[bearer],
        br#"{"text": "x"}"#,
    );
    assert_eq!(called.status, 200, "{called:?}");

    // A gigabyte announced, a few bytes sent: refused at once.
    let started = Instant::now();
    server
        .request(
            "POST",
            "/v1/operators/upper/call",
            &[bearer, ("content-length", "1073741824")],
            b"{\"text\": ",
        )
        .assert_error(413, "too-large");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Chunked, with no length announced: cut off at the limit.
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(4096));
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    server
        .request(
            "POST",
            "/v1/operators/upper/call",
            &[bearer, ("transfer-encoding", "chunked")],
            chunked.as_bytes(),
        )
        .assert_error(413, "too-large");

    // Beyond loopback, no token: refused before binding.
    let run = super::xcs(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--operators",
        dir.to_str().unwrap(),
    ]);
    run.assert_error(2, "usage", &["--token-file"]);
}

/// A replaced file is served in its new version; a corrupt one leaves the
/// old serving (and is counted); a removed one stops being served, while a
/// call in flight on it finishes.
#[test]
fn serve_reloads_operators_when_their_files_change() {
    let scratch = Scratch::new();
    let dir = operators(
        &scratch,
        &[
            ("upper.wasm", xcs_tests::UPPER),
            ("fetch.wasm", xcs_tests::FETCH),
        ],
    );
    let background =
        xcs_tests::mock_http::BackgroundServer::start("key").expect("the mock server starts");
    let origin = background.server().origin();
    let server = Server::start(&scratch, &dir, &["--allow-http", &origin]);
    let digest = |reply: &Reply| {
        reply.json()["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let first = digest(&server.get("/v1/operators/upper"));

    // Another build of `upper`, under the same name.
    replace(
        &dir.join("upper.wasm"),
        &std::fs::read(xcs_tests::UPPER_WASIP2).unwrap(),
    );
    let second = server.until("/v1/operators/upper", |reply| digest(reply) != first);
    assert_ne!(digest(&second), first);
    let called = server.post("/v1/operators/upper/call", &json!({ "text": "new" }));
    assert_eq!(called.json()["output"], "NEW");

    // Corrupt: the second keeps serving, the failure is counted.
    replace(&dir.join("upper.wasm"), b"\0asm not really");
    server.until("/metrics", |reply| {
        sample(&reply.body, "xcs_serve_operator_load_failures_total").unwrap_or(0.0) >= 1.0
    });
    assert_eq!(digest(&server.get("/v1/operators/upper")), digest(&second));
    let called = server.post("/v1/operators/upper/call", &json!({ "text": "still" }));
    assert_eq!(called.json()["output"], "STILL");

    // Removed while a call on it is in flight: the call finishes.
    let in_flight = server.slow_fetch(&origin, 1500);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(dir.join("fetch.wasm")).unwrap();
    server.until("/v1/operators/fetch", |reply| reply.status == 404);
    let reply = in_flight.join().expect("the in-flight call");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["output"]["text"], "slow");
}

/// SIGTERM during a slow call: the call completes, the process exits 0;
/// past `--drain`, it exits with `cancelled` (13).
#[test]
fn serve_drains_on_sigterm() {
    let background =
        xcs_tests::mock_http::BackgroundServer::start("key").expect("the mock server starts");
    let origin = background.server().origin();
    for (drain, slow_ms, code) in [("30s", 1000, 0), ("200ms", 5000, 13)] {
        let scratch = Scratch::new();
        let dir = operators(&scratch, &[("fetch.wasm", xcs_tests::FETCH)]);
        let server = Server::start(&scratch, &dir, &["--allow-http", &origin, "--drain", drain]);
        let address = server.address.clone();
        let slow = json!({ "url": format!("{origin}/slow/{slow_ms}") }).to_string();
        let in_flight = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&address).expect("the server accepts");
            let head = format!(
                "POST /v1/operators/fetch/call HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{slow}",
                slow.len()
            );
            stream.write_all(head.as_bytes()).expect("sent");
            let mut raw = Vec::new();
            let _ = stream.read_to_end(&mut raw);
            raw
        });
        std::thread::sleep(Duration::from_millis(300));
        server.signal("TERM");
        let exit = server.wait(Duration::from_secs(30));
        let raw = in_flight.join().expect("the in-flight call");
        assert_eq!(exit, code, "drain {drain}");
        if code == 0 {
            let reply = parse(&raw);
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(reply.json()["output"]["text"], "slow");
        }
    }
}

/// Past `--max-concurrency` running and `--max-queue` waiting, a request
/// is refused at once (503, `overloaded`, `Retry-After`); a named graph of
/// `--graphs` runs with the body as its input, and only a name is looked
/// up there.
#[test]
fn serve_bounds_its_work_and_runs_named_graphs() {
    let background =
        xcs_tests::mock_http::BackgroundServer::start("key").expect("the mock server starts");
    let origin = background.server().origin();
    let scratch = Scratch::new();
    let dir = operators(
        &scratch,
        &[
            ("upper.wasm", xcs_tests::UPPER),
            ("fetch.wasm", xcs_tests::FETCH),
            ("refine.wasm", xcs_tests::REFINE),
            ("word-count.wasm", xcs_tests::WORD_COUNT),
        ],
    );
    let graphs = scratch.path().join("graphs");
    std::fs::create_dir_all(&graphs).expect("the graphs directory");
    std::fs::write(
        graphs.join("shout.toml"),
        "[[node]]\nid = \"loud\"\noperator = \"upper\"\nargs = { text = \"@input.text\" }\n\n[outputs]\nloud = \"@loud\"\n",
    )
    .expect("the graph is written");
    let server = Server::start(
        &scratch,
        &dir,
        &[
            "--allow-http",
            &origin,
            "--max-concurrency",
            "1",
            "--max-queue",
            "0",
            "--graphs",
            graphs.to_str().expect("UTF-8"),
        ],
    );
    let in_flight = server.slow_fetch(&origin, 1500);
    std::thread::sleep(Duration::from_millis(300));
    let refused = server.post("/v1/operators/upper/call", &json!({ "text": "x" }));
    refused.assert_error(503, "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    // Reading is not work: listing and metrics still answer.
    assert_eq!(server.get("/v1/operators").status, 200);
    assert_eq!(server.get("/metrics").status, 200);
    assert_eq!(in_flight.join().expect("the slow call").status, 200);

    // A composite runs, calling the served operators (staged: it forces
    // a value), twice with the same catalog.
    for text in ["one two three", "a b c d"] {
        let shouted = server.post(
            "/v1/operators/refine/call",
            &json!({ "text": text, "threshold": 2 }),
        );
        assert_eq!(shouted.status, 200, "{shouted:?}");
        assert_eq!(shouted.json()["output"], text.to_uppercase());
    }

    let run = server.post("/v1/graphs/shout/run", &json!({ "text": "named" }));
    assert_eq!(run.status, 200, "{run:?}");
    assert_eq!(run.json()["outputs"]["loud"], "NAMED");
    server
        .post("/v1/graphs/nothing/run", &json!({}))
        .assert_error(404, "not-found");
    server
        .post("/v1/graphs/..%2Fgraphs%2Fshout/run", &json!({}))
        .assert_error(404, "not-found");
}

/// A collector of OTLP/HTTP exports on 127.0.0.1: the bodies of what was
/// posted to `/v1/traces`.
pub(super) struct Collector {
    pub(super) address: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    pub(super) fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = listener.local_addr().expect("its address").to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let received = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let received = received.clone();
                std::thread::spawn(move || {
                    while let Some((path, body)) = read_request(&mut stream) {
                        if path == "/v1/traces" {
                            received.lock().expect("the bodies lock").push(body);
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Collector { address, bodies }
    }

    /// Everything exported so far, as one byte string.
    pub(super) fn exported(&self) -> Vec<u8> {
        self.bodies.lock().expect("the bodies lock").concat()
    }
}

/// One request of a keep-alive connection: its path and body.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((path, body))
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans of a request (its
/// HTTP request, the call, the attempt) reach the collector, under the
/// trace of the request's `traceparent`.
#[test]
fn serve_exports_spans_over_otlp() {
    let collector = Collector::start();
    let scratch = Scratch::new();
    let dir = operators(&scratch, &[("upper.wasm", xcs_tests::UPPER)]);
    let mut command = xcs_command(&scratch.path().join("cache"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--operators"])
        .arg(&dir)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.address),
        );
    let server = Server::spawn(command);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = server.request(
        "POST",
        "/v1/operators/upper/call",
        &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
        br#"{"text": "traced"}"#,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    // Draining flushes what is left.
    server.signal("TERM");
    let log = server.log();
    assert_eq!(server.wait(Duration::from_secs(30)), 0, "{log}");
    let exported = collector.exported();
    assert!(!exported.is_empty(), "nothing was exported");
    for name in [
        &b"request"[..],
        b"call",
        b"attempt",
        b"upper",
        b"/v1/operators/{name}/call",
    ] {
        assert!(
            contains(&exported, name),
            "{} was not exported",
            String::from_utf8_lossy(name)
        );
    }
    let trace_bytes: Vec<u8> = (0..16)
        .map(|index| u8::from_str_radix(&trace_id[index * 2..index * 2 + 2], 16).unwrap_or(0))
        .collect();
    assert!(
        contains(&exported, &trace_bytes),
        "the spans are not in the traceparent's trace"
    );
}
