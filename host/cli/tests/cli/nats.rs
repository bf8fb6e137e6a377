//! `xcs worker` and `xcs run --nats` against a real `nats-server` (with
//! JetStream) on a random loopback port: a graph run by three worker
//! processes gives what it gives here, the workers drain on SIGTERM, no
//! worker is `unavailable`, a guest's timeout crosses with its kind, a
//! tampered operator is refused, and a wrong password is a clear error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Run, Scratch, xcs_command};

/// The `nats-server` binary: on the PATH, or where Debian puts it (a PATH
/// without `/usr/sbin`).
fn nats_server() -> &'static str {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    });
    if on_path {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}

/// A `nats-server` with JetStream on 127.0.0.1; stopped when dropped.
struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    fn start(scratch: &Scratch, extra: &[&str]) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let store = scratch.path().join("jetstream");
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (`just setup-nats` installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `xcs worker`; killed when dropped.
struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Worker {
    /// `xcs worker --nats <url> args...`, once it is ready.
    fn start(scratch: &Scratch, url: &str, args: &[&str]) -> Worker {
        Worker::spawn(xcs_command(&scratch.path().join("cache")), url, args)
    }

    /// `command worker --nats <url> args...` (`command` an `xcs`), once
    /// it is ready.
    fn spawn(mut command: Command, url: &str, args: &[&str]) -> Worker {
        let mut child = command
            .args(["worker", "--nats", url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xcs worker starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, is_ready) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains(": ready on ") {
                    let _ = ready.send(());
                }
                lines
                    .lock()
                    .expect("the log lock")
                    .push_str(&format!("{line}\n"));
            }
        });
        if is_ready.recv_timeout(Duration::from_secs(120)).is_err() {
            let log = log.lock().map(|log| log.clone()).unwrap_or_default();
            panic!("xcs worker was not ready: {log}");
        }
        Worker { child, log }
    }

    /// SIGTERM; its exit code and log once it has drained.
    fn stop(mut self) -> (i32, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let started = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("waited for") {
                break status.code().expect("exited, not killed");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the worker did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The log thread reads to the end of the pipe.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().map(|log| log.clone()).unwrap_or_default();
        (code, log)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with the operators the tests' graphs name.
fn operators(scratch: &Scratch) -> PathBuf {
    let dir = scratch.path().join("operators");
    std::fs::create_dir_all(&dir).expect("the operators directory");
    for (name, from) in [
        ("upper", xcs_tests::UPPER),
        ("word-count", xcs_tests::WORD_COUNT),
        ("spin", xcs_tests::SPIN),
    ] {
        std::fs::copy(from, dir.join(format!("{name}.wasm"))).expect("copied");
    }
    dir
}

/// `xcs run <graph> --operators <dir> --input <input> extra...`.
fn run(scratch: &Scratch, graph: &Path, dir: &Path, input: &str, extra: &[&str]) -> Run {
    let output = xcs_command(&scratch.path().join("cache"))
        .arg("run")
        .arg(graph)
        .arg("--operators")
        .arg(dir)
        .args(["--input", input])
        .args(extra)
        .output()
        .expect("xcs runs");
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8"),
    }
}

const MAPS: &str = r#"
[[node]]
id = "titles"
operator = "upper"
map = "text"
args = { text = "@input.documents" }

[[node]]
id = "counts"
operator = "word-count"
map = "text"
args = { text = "@input.documents" }

[outputs]
shouted = "@titles"
counts = "@counts"
"#;

/// `GET /metrics` of `address`.
fn scrape(address: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("the metrics endpoint");
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(_, body)| body.to_owned())
}

/// The served count a worker's last line says.
fn served(log: &str) -> u64 {
    log.lines()
        .filter_map(|line| line.split(": served ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no `served` line: {log}"))
}

#[test]
fn three_workers_run_a_graph_as_it_runs_here_and_drain() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    let graph = scratch.path().join("maps.toml");
    std::fs::write(&graph, MAPS).expect("the graph");
    let documents: Vec<String> = (0..1000)
        .map(|index| format!("doc {index} has words"))
        .collect();
    let input = serde_json::json!({ "documents": documents }).to_string();

    let here = run(&scratch, &graph, &dir, &input, &[]);
    here.assert_success();
    // w0 has the operators at hand and serves its metrics.
    let dir_text = dir.to_str().expect("UTF-8");
    let workers: Vec<Worker> = (0..3)
        .map(|index| {
            let name = format!("w{index}");
            let mut args = vec!["--name", name.as_str()];
            if index == 0 {
                args.extend(["--operators", dir_text, "--metrics-listen", "127.0.0.1:0"]);
            }
            Worker::start(&scratch, &server.url(), &args)
        })
        .collect();
    let metrics = scratch.path().join("metrics.txt");
    let remote = run(
        &scratch,
        &graph,
        &dir,
        &input,
        &[
            "--nats",
            &server.url(),
            "--metrics",
            metrics.to_str().expect("UTF-8"),
        ],
    );
    remote.assert_success();
    // The coordinator's metrics: every call answered, by which worker.
    let metrics = std::fs::read_to_string(&metrics).expect("the metrics file");
    let mut answered = 0.0;
    for worker in ["w0", "w1", "w2"] {
        let series = format!(r#"xcs_remote_calls_total{{worker="{worker}",outcome="ok"}} "#);
        let count: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("no calls answered by {worker}: {metrics}"));
        answered += count;
    }
    assert_eq!(answered, 2000.0, "{metrics}");
    assert!(
        metrics.contains("xcs_remote_sent_bytes_total "),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let (here, remote): (Value, Value) = (
        serde_json::from_str(&here.stdout).expect("JSON"),
        serde_json::from_str(&remote.stdout).expect("JSON"),
    );
    assert_eq!(here, remote);
    assert_eq!(remote["counts"][7], 4);

    // 300 nodes: 150 shouts, each counted.
    let mut nodes = String::new();
    for index in 0..150 {
        nodes.push_str(&format!(
            "[[node]]\nid = \"shout{index}\"\noperator = \"upper\"\nargs = {{ text = \"@input.t{}\" }}\n\n[[node]]\nid = \"count{index}\"\noperator = \"word-count\"\nargs = {{ text = \"@shout{index}\" }}\n\n",
            index % 3
        ));
    }
    let counted: Vec<String> = (0..150).map(|index| format!("\"@count{index}\"")).collect();
    nodes.push_str(&format!(
        "[outputs]\ncounts = [{}]\nloud = \"@shout7\"\n",
        counted.join(", ")
    ));
    let wide = scratch.path().join("wide.toml");
    std::fs::write(&wide, nodes).expect("the graph");
    let input = r#"{"t0": "a", "t1": "b c", "t2": "d e f"}"#;
    let here = run(&scratch, &wide, &dir, input, &[]);
    let remote = run(&scratch, &wide, &dir, input, &["--nats", &server.url()]);
    remote.assert_success();
    assert_eq!(here.stdout, remote.stdout);
    assert!(
        remote.stdout.contains(r#""loud":"B C""#),
        "{}",
        remote.stdout
    );

    // w0's own metrics, scraped: its host's calls and its answered count.
    let log = workers[0]
        .log
        .lock()
        .map(|log| log.clone())
        .unwrap_or_default();
    let address = log
        .lines()
        .find_map(|line| line.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address: {log}"))
        .to_owned();
    let scraped = scrape(&address);
    assert!(
        scraped.contains(r#"xcs_calls_total{operator="upper""#),
        "{scraped}"
    );
    assert!(
        scraped.contains(r#"xcs_worker_calls_total{worker="w0"} "#),
        "{scraped}"
    );
    assert!(scraped.ends_with("# EOF\n"), "{scraped}");

    let mut total = 0;
    for worker in workers {
        let (code, log) = worker.stop();
        assert_eq!(code, 0, "{log}");
        assert!(log.contains("SIGTERM, draining"), "{log}");
        let served = served(&log);
        assert!(served > 0, "a worker served nothing: {log}");
        total += served;
    }
    // The maps' 600 distinct calls, and the wide graph's distinct ones
    // (identical calls of a deterministic operator are made once, on the
    // coordinator's side of the wire).
    assert!((2006..=2300).contains(&total), "{total}");
}

#[test]
fn without_workers_a_call_is_unavailable_and_a_timeout_crosses_with_its_kind() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    let graph = scratch.path().join("maps.toml");
    std::fs::write(&graph, MAPS).expect("the graph");
    let started = Instant::now();
    run(
        &scratch,
        &graph,
        &dir,
        r#"{"documents": ["a"]}"#,
        &["--nats", &server.url()],
    )
    .assert_error(14, "unavailable", &["no worker serves this namespace"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "at once, not a timeout"
    );

    // A worker of another namespace does not count.
    let _other = Worker::start(&scratch, &server.url(), &["--namespace", "other"]);
    run(
        &scratch,
        &graph,
        &dir,
        r#"{"documents": ["a"]}"#,
        &["--nats", &server.url()],
    )
    .assert_error(14, "unavailable", &[]);

    let _worker = Worker::start(&scratch, &server.url(), &[]);
    let spin = scratch.path().join("spin.toml");
    std::fs::write(
        &spin,
        "[[node]]\nid = \"loop\"\noperator = \"spin\"\ntimeout = \"300ms\"\n\n[outputs]\nout = \"@loop\"\n",
    )
    .expect("the graph");
    run(&scratch, &spin, &dir, "{}", &["--nats", &server.url()]).assert_error(
        6,
        "timeout",
        &["spin: timed out after 300ms"],
    );
}

/// Bytes in the object store under a digest that is not theirs are
/// refused by the worker, never compiled.
#[test]
fn a_tampered_operator_is_refused_not_compiled() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    let digest = {
        let run = super::xcs(&["inspect", "--json", xcs_tests::UPPER]);
        let description: Value = serde_json::from_str(&run.stdout).expect("JSON");
        description["digest"].as_str().expect("a digest").to_owned()
    };
    let url = server.url();
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let client = async_nats::connect(url.as_str()).await.expect("connects");
            let jetstream = async_nats::jetstream::new(client);
            let store = jetstream
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: "xcs_operators".into(),
                    ..Default::default()
                })
                .await
                .expect("the bucket");
            store
                .put(digest.as_str(), &mut &b"\0asm not upper"[..])
                .await
                .expect("put");
        });
    let _worker = Worker::start(&scratch, &server.url(), &[]);
    let graph = scratch.path().join("maps.toml");
    std::fs::write(&graph, MAPS).expect("the graph");
    run(
        &scratch,
        &graph,
        &dir,
        r#"{"documents": ["a"]}"#,
        &["--nats", &server.url()],
    )
    .assert_error(3, "invalid-component", &["refused, not compiled"]);
}

#[test]
fn a_wrong_password_is_a_clear_error() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &["--user", "xcs", "--pass", "right"]);
    let wrong = format!("nats://xcs:wrong@127.0.0.1:{}", server.port);
    let output = xcs_command(&scratch.path().join("cache"))
        .args(["worker", "--nats", &wrong])
        .output()
        .expect("xcs runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[io]: connecting to"), "{stderr}");
    assert!(stderr.to_lowercase().contains("authoriz"), "{stderr}");
}

/// A 20 MiB input, and a 12 MiB output, cross through the object store
/// (a message holds 1 MiB), whole.
#[test]
fn a_large_input_and_output_cross_through_the_object_store() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    let _worker = Worker::start(&scratch, &server.url(), &[]);
    let graph = scratch.path().join("shout.toml");
    std::fs::write(
        &graph,
        "[[node]]\nid = \"loud\"\noperator = \"upper\"\nargs = { text = \"@input.text\" }\n\n[[node]]\nid = \"count\"\noperator = \"word-count\"\nargs = { text = \"@input.big\" }\n\n[outputs]\nloud = \"@loud\"\nwords = \"@count\"\n",
    )
    .expect("the graph");
    let text: String = "abcdefghij".repeat(12 << 17);
    let big: String = "word ".repeat(4 << 20);
    let input = scratch.path().join("input.json");
    std::fs::write(
        &input,
        serde_json::json!({ "text": text, "big": big }).to_string(),
    )
    .expect("the input");
    let output = xcs_command(&scratch.path().join("cache"))
        .arg("run")
        .arg(&graph)
        .arg("--operators")
        .arg(&dir)
        .arg("--input-file")
        .arg(&input)
        .args(["--nats", &server.url()])
        .output()
        .expect("xcs runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outputs: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let loud = outputs["loud"].as_str().expect("a text");
    assert_eq!(loud.len(), text.len());
    assert!(loud.starts_with("ABCDEFGHIJABC") && loud.ends_with("HIJ"));
    assert_eq!(outputs["words"], 4 << 20);
}

/// A mock HTTP server, a NATS server, and the operators with `fetch`.
fn with_fetch() -> (
    xcs_tests::mock_http::BackgroundServer,
    Scratch,
    NatsServer,
    PathBuf,
) {
    let background =
        xcs_tests::mock_http::BackgroundServer::start("key").expect("the mock server starts");
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    std::fs::copy(xcs_tests::FETCH, dir.join("fetch.wasm")).expect("copied");
    (background, scratch, server, dir)
}

/// Past `--nats-max-in-flight`, a call is refused at the coordinator
/// (`overloaded`), not queued.
#[test]
fn the_coordinator_bounds_its_calls_in_flight() {
    let (background, scratch, server, dir) = with_fetch();
    let origin = background.server().origin();
    let _worker = Worker::start(&scratch, &server.url(), &["--allow-http", &origin]);
    let graph = scratch.path().join("slow.toml");
    std::fs::write(
        &graph,
        "[[node]]\nid = \"get\"\noperator = \"fetch\"\nmap = \"url\"\nmax_concurrency = 2\nargs = { url = \"@input.urls\" }\n\n[outputs]\ngot = \"@get\"\n",
    )
    .expect("the graph");
    let slow = format!("{origin}/slow/500");
    let input = serde_json::json!({ "urls": [slow, slow] }).to_string();
    let bounded = [
        "--nats",
        &server.url(),
        "--nats-max-in-flight",
        "1",
        "--max-concurrency",
        "2",
    ];
    run(&scratch, &graph, &dir, &input, &bounded).assert_error(10, "overloaded", &["fetch"]);
    let roomy = ["--nats", &server.url(), "--max-concurrency", "2"];
    run(&scratch, &graph, &dir, &input, &roomy).assert_success();
}

/// A worker killed while it runs calls: the coordinator notices its
/// silence, sends those calls again to the other worker, and the graph
/// completes with every output; it says how many it sent again.
#[test]
fn a_lost_worker_s_calls_are_sent_again_elsewhere() {
    let (background, scratch, server, dir) = with_fetch();
    let origin = background.server().origin();
    // Eight calls, and each worker takes at most four (two running, two
    // waiting; a full one sends the call back to the queue group): each
    // takes four.
    let places = ["--allow-http", &origin, "--max-concurrency", "2"];
    let survivor = Worker::start(&scratch, &server.url(), &places);
    let doomed = Worker::start(&scratch, &server.url(), &places);
    let graph = scratch.path().join("slow.toml");
    std::fs::write(
        &graph,
        "[[node]]\nid = \"get\"\noperator = \"fetch\"\nmap = \"url\"\nmax_concurrency = 8\nargs = { url = \"@input.urls\" }\n\n[outputs]\ngot = \"@get\"\n",
    )
    .expect("the graph");
    let urls: Vec<String> = (0..8).map(|_| format!("{origin}/slow/1500")).collect();
    let input = serde_json::json!({ "urls": urls }).to_string();
    let coordinator = {
        let mut command = xcs_command(&scratch.path().join("cache"));
        command
            .arg("run")
            .arg(&graph)
            .arg("--operators")
            .arg(&dir)
            .args([
                "--input",
                &input,
                "--nats",
                &server.url(),
                "--max-concurrency",
                "8",
                "--metrics",
            ])
            .arg(scratch.path().join("metrics.txt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("xcs runs")
    };
    // Both workers have taken four calls; then one dies without a word.
    std::thread::sleep(Duration::from_millis(500));
    let mut doomed = doomed;
    doomed.child.kill().expect("killed");
    let output = coordinator.wait_with_output().expect("xcs runs to its end");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let outputs: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let got = outputs["got"].as_array().expect("a list");
    assert_eq!(got.len(), 8);
    assert!(
        got.iter().all(|fetched| fetched["text"] == "slow"),
        "{outputs}"
    );
    assert!(
        stderr.contains("calls were sent again after the worker that took them stopped answering"),
        "{stderr}"
    );
    // The metrics count them: the doomed worker's four.
    let metrics = std::fs::read_to_string(scratch.path().join("metrics.txt")).expect("metrics");
    assert!(metrics.contains("xcs_remote_resent_total 4\n"), "{metrics}");
    let (code, log) = survivor.stop();
    assert_eq!(code, 0, "{log}");
}

/// A run that fails fast tells the workers to stop the calls it no longer
/// wants: a spinning guest is stopped at once, not at its deadline.
#[test]
fn a_failed_run_cancels_its_calls_on_the_workers() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    std::fs::copy(xcs_tests::FACTORIAL, dir.join("factorial.wasm")).expect("copied");
    let worker = Worker::start(&scratch, &server.url(), &[]);
    let graph = scratch.path().join("fail.toml");
    std::fs::write(
        &graph,
        "[[node]]\nid = \"loop\"\noperator = \"spin\"\ntimeout = \"60s\"\n\n[[node]]\nid = \"too-big\"\noperator = \"factorial\"\nargs = { n = 25 }\n\n[outputs]\nout = \"@loop\"\nbig = \"@too-big\"\n",
    )
    .expect("the graph");
    // The factorial fails after the spin has started.
    run(
        &scratch,
        &graph,
        &dir,
        "{}",
        &["--nats", &server.url(), "--max-concurrency", "2"],
    )
    .assert_error(5, "operator", &["too-big"]);
    // Drained at once: the spin (a 60 s deadline, past the 30 s drain)
    // is not running any more.
    let (code, log) = worker.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("a call was cancelled by its coordinator"),
        "{log}"
    );
}

/// With TLS: a worker that trusts the server's CA connects; one that does
/// not is a clear error.
#[test]
fn tls_to_the_server() {
    let scratch = Scratch::new();
    let dir = scratch.path();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=xcs test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("written");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let server = NatsServer::start(
        &scratch,
        &[
            "--tls",
            "--tlscert",
            dir.join("server.pem").to_str().expect("UTF-8"),
            "--tlskey",
            dir.join("server.key").to_str().expect("UTF-8"),
        ],
    );
    let ca = dir.join("ca.pem");
    let worker = Worker::start(
        &scratch,
        &server.url(),
        &["--tls-ca", ca.to_str().expect("UTF-8")],
    );
    let (code, log) = worker.stop();
    assert_eq!(code, 0, "{log}");
    let output = xcs_command(&scratch.path().join("cache"))
        .args(["worker", "--nats", &server.url()])
        .output()
        .expect("xcs runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[io]: connecting to"), "{stderr}");
}

/// With spans exported, a call's span on the worker is in the trace of
/// the coordinator's call (`traceparent` crosses in the message headers).
#[test]
fn a_worker_s_spans_join_the_coordinator_s_trace() {
    use super::serve::{Collector, contains};
    let (coordinator_spans, worker_spans) = (Collector::start(), Collector::start());
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    let worker = {
        let mut command = xcs_command(&scratch.path().join("cache"));
        command.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", worker_spans.address),
        );
        Worker::spawn(command, &server.url(), &[])
    };
    let graph = scratch.path().join("shout.toml");
    std::fs::write(
        &graph,
        "[[node]]\nid = \"loud\"\noperator = \"upper\"\nargs = { text = \"@input.text\" }\n\n[outputs]\nloud = \"@loud\"\n",
    )
    .expect("the graph");
    let output = xcs_command(&scratch.path().join("cache"))
        .arg("run")
        .arg(&graph)
        .arg("--operators")
        .arg(&dir)
        .args(["--input", r#"{"text": "traced"}"#, "--nats", &server.url()])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", coordinator_spans.address),
        )
        .output()
        .expect("xcs runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The worker flushes its spans as it stops.
    let (code, log) = worker.stop();
    assert_eq!(code, 0, "{log}");
    let on_worker = worker_spans.exported();
    let on_worker_text = String::from_utf8_lossy(&on_worker);
    let traceparent = on_worker_text
        .split("00-")
        .skip(1)
        .find_map(|rest| {
            let id = rest.get(..32)?;
            id.bytes()
                .all(|byte| byte.is_ascii_hexdigit())
                .then(|| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no traceparent on the worker's span: {on_worker_text}"));
    let trace_id: Vec<u8> = (0..16)
        .map(|index| u8::from_str_radix(&traceparent[index * 2..index * 2 + 2], 16).unwrap_or(0))
        .collect();
    assert!(contains(&on_worker, b"remote call"));
    assert!(
        contains(&on_worker, &trace_id),
        "the worker's span is in that trace"
    );
    assert!(
        contains(&coordinator_spans.exported(), &trace_id),
        "the trace is the coordinator's"
    );
}

/// A composite run with `--nats`: its own code here, the calls it makes on
/// the workers (staged: it forces a value), the same output as here.
#[test]
fn a_composite_s_calls_run_on_the_workers() {
    let scratch = Scratch::new();
    let server = NatsServer::start(&scratch, &[]);
    let dir = operators(&scratch);
    std::fs::copy(xcs_tests::MOST_COMMON, dir.join("most-common.wasm")).expect("copied");
    let worker = Worker::start(&scratch, &server.url(), &[]);
    let refine = Path::new(xcs_tests::REFINE);
    let input = r#"{"text": "to be or not to be", "threshold": 10}"#;
    let here = run(&scratch, refine, &dir, input, &[]);
    here.assert_success();
    let remote = run(&scratch, refine, &dir, input, &["--nats", &server.url()]);
    remote.assert_success();
    assert_eq!(here.stdout, remote.stdout);
    assert!(
        remote.stdout.contains("\"to\"") || remote.stdout.contains("\"be\""),
        "{}",
        remote.stdout
    );
    let (code, log) = worker.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        served(&log) >= 2,
        "word-count and most-common ran there: {log}"
    );
}
