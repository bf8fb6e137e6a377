//! The `xcs` command: inspect and call WebAssembly operators, check and
//! run graphs, trace and run composites.

#[macro_use]
mod io;
mod graphs;
mod new;
mod remote;
mod serve;
mod telemetry;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;
use xcs::policy::{Policy, Retry};
use xcs::{Error, ErrorKind, Host, Limits};

use crate::io::{read_input, write_metrics};

/// Run untrusted WebAssembly operators in a sandbox.
#[derive(Debug, Parser)]
#[command(name = "xcs", version, about, long_about = None)]
struct Cli {
    /// More logs on stderr (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// JSON for scripts: an error is one object on stderr
    /// (`{"kind", "message", "causes", "exit_code", ...}`); `inspect` and
    /// `trace` print JSON too.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show an operator's metadata, `invoke` signature, imports, the
    /// capabilities it asks for (and what is granted) and its digest.
    Inspect {
        /// The operator component (.wasm).
        operator: PathBuf,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Call an operator once and print its result as JSON.
    Call {
        /// The operator component (.wasm).
        operator: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        grants: GrantArgs,
        /// Write the metrics in the Prometheus text format.
        #[arg(long, value_name = "FILE")]
        metrics: Option<PathBuf>,
    },
    /// Check a graph file (or trace a composite) and run it; print its
    /// outputs as JSON.
    Run {
        /// The graph (.toml), or a composite operator (.wasm).
        graph: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        graph_args: GraphArgs,
        #[command(flatten)]
        grants: GrantArgs,
        /// At most this many guests at once (default: available parallelism).
        #[arg(long)]
        max_concurrency: Option<usize>,
        /// Graph deadline, e.g. 30s, 5m.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        timeout: Duration,
        /// Run every node that does not depend on a failed one.
        #[arg(long)]
        keep_going: bool,
        /// A composite that cannot be traced completely is an `analysis`
        /// error, instead of a staged run.
        #[arg(long)]
        strict: bool,
        /// Write the graph, coloured by outcome, as Graphviz DOT.
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
        /// Write a Chrome trace-event timeline (Perfetto, chrome://tracing).
        #[arg(long, value_name = "FILE")]
        timeline: Option<PathBuf>,
        /// Write every node's outcome and timings as JSON.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write the metrics in the Prometheus text format.
        #[arg(long, value_name = "FILE")]
        metrics: Option<PathBuf>,
        /// With --nats, the graph's calls go to the workers of that NATS
        /// server (`xcs worker`) instead of running here.
        #[command(flatten)]
        nats: NatsFlags,
        /// At most this many calls in flight to the workers (with
        /// --nats); one more is `overloaded`.
        #[arg(long, default_value_t = 256, value_name = "N")]
        nats_max_in_flight: usize,
    },
    /// Trace a composite operator: print the graph it builds, without
    /// running any operator it calls (or where and why the trace stopped).
    Trace {
        /// The composite (.wasm).
        composite: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        graph_args: GraphArgs,
        /// What the composite's own code may read while it is traced (as
        /// for `xcs run`, so that the trace is the run's).
        #[command(flatten)]
        grants: GrantArgs,
        /// Write the traced graph as Graphviz DOT.
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
        /// Print the graph in the graph-file format, for `xcs run` (with
        /// `--json`: JSON with the nodes, their arguments and types, the
        /// output, and where the trace stopped).
        #[arg(long)]
        toml: bool,
    },
    /// Print the operator contract (the `xcs:operator@0.1.0` WIT package)
    /// that operators in any language build against, or write it to a
    /// directory to vendor it (e.g. `--out wit/deps/xcs`).
    Wit {
        /// Write `operator.wit` into this directory (made if missing)
        /// instead of printing it.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write a new operator project (Rust, Python or JavaScript) that
    /// builds with the language's standard tool and loads as it is.
    New {
        /// The operator's name, kebab-case (`word-count`).
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
        /// Where to write it (default: ./<name>); must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The guest SDK for a Rust project (the guest-sdk directory of an
        /// xcs checkout; default: the one this xcs was built from).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// Serve the operators of a directory over HTTP until SIGTERM or
    /// SIGINT: calls, graph runs, Prometheus metrics, health; operators
    /// reloaded when their files change.
    Serve {
        /// Serve every `.wasm` here, by the name in its metadata; reloaded
        /// when a file is added, replaced or removed.
        #[arg(long, value_name = "DIR", default_value = "target/operators")]
        operators: PathBuf,
        /// Graph files `<name>.toml` served as `/v1/graphs/<name>/run`.
        #[arg(long, value_name = "DIR")]
        graphs: Option<PathBuf>,
        /// Address to listen on; any but a loopback one needs --token-file.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A file holding the bearer token every request but /healthz and
        /// /readyz must carry (`Authorization: Bearer <token>`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Calls and graph runs at once.
        #[arg(long, default_value_t = 64, value_name = "N")]
        max_concurrency: usize,
        /// Calls and graph runs waiting for one of those places; beyond, a
        /// request is refused at once (503, `overloaded`).
        #[arg(long, default_value_t = 1024, value_name = "N")]
        max_queue: usize,
        /// On SIGTERM or SIGINT, how long in-flight requests may take to
        /// finish.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        drain: Duration,
        /// The largest request body.
        #[arg(long, value_parser = xcs::parse_size, default_value = "64MiB")]
        max_body: u64,
        /// Connections open at once; one more is closed as it comes.
        #[arg(long, default_value_t = 1024, value_name = "N")]
        max_connections: usize,
        /// The longest graph run (a request may ask for less).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        graph_timeout: Duration,
        /// The most any call may have (a request may ask for less).
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Serve calls to the coordinators of a NATS namespace (`xcs run
    /// --nats`) until SIGTERM or SIGINT; operators come by digest from the
    /// server's object store.
    Worker {
        #[command(flatten)]
        nats: NatsFlags,
        /// This worker's name in logs (default: worker-<pid>).
        #[arg(long)]
        name: Option<String>,
        /// Calls at once; one more is refused at once (the coordinator
        /// sends it elsewhere).
        #[arg(long, default_value_t = 16, value_name = "N")]
        max_concurrency: usize,
        /// On SIGTERM or SIGINT, how long in-flight calls may take.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        drain: Duration,
        /// Operators to load at start (by digest; others come from the
        /// object store as calls need them).
        #[arg(long, value_name = "DIR")]
        operators: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// What the operators may reach: the worker's own configuration,
        /// never a request's.
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Print a shell's completion script for xcs (e.g. `xcs completions
    /// bash > /etc/bash_completion.d/xcs`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Check a graph file without running anything.
    Check {
        /// The graph (.toml).
        graph: PathBuf,
        #[command(flatten)]
        graph_args: GraphArgs,
        /// Write the graph as Graphviz DOT.
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
    },
}

/// A NATS server and namespace.
#[derive(Debug, Args)]
struct NatsFlags {
    /// The NATS server, e.g. nats://127.0.0.1:4222 (JetStream on);
    /// `xcs worker` needs it.
    #[arg(long = "nats", value_name = "URL")]
    url: Option<String>,
    /// Workers and coordinators of one namespace see each other's calls
    /// only.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// A NATS credentials file (user JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFlags,
}

/// TLS to the NATS server.
#[derive(Debug, Args)]
struct TlsFlags {
    /// Require TLS, trusting the CA certificate(s) in FILE (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that verifies its
    /// clients (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsFlags {
    fn client(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.clone().zip(self.tls_key.clone())
    }
}

impl NatsFlags {
    fn args(&self) -> Option<remote::NatsArgs> {
        self.url.as_ref().map(|url| remote::NatsArgs {
            url: url.clone(),
            namespace: self.namespace.clone(),
            creds: self.creds.clone(),
            tls_ca: self.tls.tls_ca.clone(),
            tls_client: self.tls.client(),
        })
    }
}

/// What the operators may reach beyond their sandbox (nothing unless
/// granted here).
#[derive(Debug, Args)]
struct GrantArgs {
    /// The grants file (`[grants.default]`, `[grants.<operator>]`: `http`,
    /// `dirs`, `env`, ...); default: `xcs.toml` in the working directory,
    /// if there is one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Let the operators send HTTP requests to the origins URLPATTERN
    /// matches: `scheme://host[:port]`, `*.` for subdomains, `:*` for any
    /// port (e.g. `--allow-http https://api.example.com`); repeatable.
    #[arg(long = "allow-http", value_name = "URLPATTERN")]
    allow_http: Vec<String>,
    /// Let the operators read the host directory HOST at the absolute
    /// guest path GUEST, read-only (e.g. `--dir ./prompts::/prompts`);
    /// repeatable.
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    dirs: Vec<String>,
    /// Give the operators the environment variable NAME, with the value it
    /// has here (e.g. an API key); repeatable. Others are never passed.
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
}

impl GrantArgs {
    /// The grants file's (given, or `xcs.toml` here) with the flags' added
    /// to its default ones.
    fn grants(&self) -> anyhow::Result<xcs::GrantsTable> {
        let file = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from("xcs.toml")).filter(|path| path.is_file()),
        };
        let mut table = xcs::GrantsTable::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::io(&path, source))?;
            let base = path.parent().unwrap_or(Path::new(""));
            table = xcs::GrantsTable::from_toml(&text, base)
                .with_context(|| format!("in {}", path.display()))?;
        }
        let mut grants = xcs::Grants::new();
        for dir in &self.dirs {
            let Some((host, guest)) = dir.rsplit_once("::") else {
                return Err(io::Usage(format!(
                    "--dir {}: expected HOST::GUEST, e.g. ./data::/data",
                    io::printable(dir)
                ))
                .into());
            };
            grants = grants.read_dir(host, guest);
        }
        for name in &self.env {
            grants = grants.env(name.clone());
        }
        for pattern in &self.allow_http {
            grants = grants.allow_http(pattern);
        }
        Ok(table.and_default(&grants))
    }
}

/// Retries for the called operator. (A bulkhead, breaker or result cache
/// cannot change the outcome of the one call a process makes: graphs set
/// them in `[policy.<operator>]`.)
#[derive(Debug, Args)]
struct PolicyArgs {
    /// Attempts in all (retry on retryable errors); 1 means no retry.
    #[arg(long, default_value_t = 1, value_name = "N")]
    attempts: u32,
    /// Delay before the first retry (with --attempts > 1); it doubles each
    /// time, with jitter.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    retry_delay: Duration,
    /// Bound on each attempt, within --timeout (with --attempts > 1).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    attempt_timeout: Option<Duration>,
    /// Also retry attempts that timed out (with --attempts > 1; needs
    /// --attempt-timeout to leave time for another attempt).
    #[arg(long)]
    retry_on_timeout: bool,
    /// Also retry calls that trapped (with --attempts > 1).
    #[arg(long)]
    retry_on_trap: bool,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        let mut policy = Policy::new();
        if self.attempts > 1 {
            let mut retry = Retry::default()
                .max_attempts(self.attempts)
                .base_delay(self.retry_delay)
                .on_timeout(self.retry_on_timeout)
                .on_trap(self.retry_on_trap);
            if let Some(timeout) = self.attempt_timeout {
                retry = retry.attempt_timeout(timeout);
            }
            policy = policy.retry(retry);
        }
        policy
    }
}

#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// Where operators named in the graph are found, as `<name>.wasm` (and
    /// the operators a composite may call: every `.wasm` there).
    #[arg(long, value_name = "DIR", default_value = "target/operators")]
    operators: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// The input as JSON: an object keyed by parameter name, or an array of
    /// arguments in order. Without --input or --input-file, stdin is read
    /// (when it is not a terminal; otherwise there are no arguments).
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input JSON from a file.
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Wall-clock deadline for the call, e.g. 200ms, 2s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Fuel (instruction) budget; unbounded when absent.
    #[arg(long)]
    fuel: Option<u64>,
    /// Linear-memory cap, e.g. 32MiB.
    #[arg(long, value_parser = xcs::parse_size, default_value = "64MiB")]
    memory: u64,
    /// Input size cap (canonical size; the JSON text may be at most 4x this).
    #[arg(long, value_parser = xcs::parse_size, default_value = "64MiB")]
    max_input: u64,
    /// Output size cap.
    #[arg(long, value_parser = xcs::parse_size, default_value = "16MiB")]
    max_output: u64,
    /// Seed of the sandbox's randomness and clocks.
    #[arg(long, default_value_t = xcs::DEFAULT_SEED)]
    seed: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits::default()
            .timeout(self.timeout)
            .fuel(self.fuel)
            .max_memory_bytes(self.memory)
            .max_input_bytes(self.max_input)
            .max_output_bytes(self.max_output)
            .seed(self.seed)
    }
}

/// The exit code for each error kind (the README lists them).
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Config => 2,
        ErrorKind::InvalidComponent | ErrorKind::Contract | ErrorKind::Capability => 3,
        ErrorKind::Validation => 4,
        ErrorKind::Operator => 5,
        ErrorKind::Timeout => 6,
        ErrorKind::Fuel => 7,
        ErrorKind::Memory => 8,
        ErrorKind::StackOverflow | ErrorKind::Trap => 9,
        ErrorKind::CircuitOpen | ErrorKind::Overloaded => 10,
        ErrorKind::Graph => 11,
        ErrorKind::Analysis => 12,
        ErrorKind::Cancelled => 13,
        ErrorKind::Unavailable => 14,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version: not errors.
            return match out!("{error}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Err(error) => {
            let rendered = error.render().to_string();
            let message = rendered.strip_prefix("error: ").unwrap_or(&rendered);
            // The flags did not parse: whether --json was among them is
            // read off the words.
            if std::env::args_os().any(|arg| arg == "--json") {
                let first = message.lines().next().unwrap_or_default();
                print_json_error(&json!({ "kind": "usage", "message": first, "exit_code": 2 }));
            } else {
                err!("error[usage]: {message}");
            }
            return ExitCode::from(2);
        }
    };
    let as_json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("error[io]: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The span exporter, when there is one, is a task of the runtime.
    let telemetry = {
        let _entered = runtime.enter();
        telemetry::init(cli.verbose)
    };
    let outcome = run(cli, &runtime);
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away: stop quietly, as a Unix tool killed by
        // SIGPIPE would (128 + 13).
        Err(error) if error.is::<io::StdoutClosed>() => ExitCode::from(141),
        Err(error) => {
            let (kind, code) = match error.downcast_ref::<Error>() {
                Some(xcs_error) => (xcs_error.kind().as_str(), exit_code(xcs_error.kind())),
                None if error.is::<io::Usage>() => ("usage", 2),
                None => ("io", 1),
            };
            if as_json {
                let mut object = serde_json::Map::new();
                object.insert("kind".into(), json!(kind));
                object.insert("message".into(), json!(error.to_string()));
                let causes: Vec<String> = error.chain().skip(1).map(ToString::to_string).collect();
                object.insert("causes".into(), json!(causes));
                if let Some(xcs_error) = error.downcast_ref::<Error>() {
                    if let Some(operator) = xcs_error.operator() {
                        object.insert("operator".into(), json!(operator));
                    }
                    if let Error::Operator {
                        code: operator_code,
                        retryable,
                        ..
                    } = xcs_error
                    {
                        object.insert("code".into(), json!(operator_code));
                        object.insert("retryable".into(), json!(retryable));
                    }
                }
                object.insert("exit_code".into(), json!(code));
                print_json_error(&serde_json::Value::Object(object));
                return ExitCode::from(code);
            }
            // One line with the kind, then the causes; what a guest wrote
            // (a message, a panic) cannot pass for a line of ours.
            let mut chain = error.chain();
            if let Some(head) = chain.next() {
                errln!("error[{kind}]: {}", io::printable(&head.to_string()));
            }
            for cause in chain {
                errln!("  caused by: {}", io::printable(&cause.to_string()));
            }
            ExitCode::from(code)
        }
    }
}

/// An error as one line of JSON on stderr (JSON escapes what a guest
/// wrote: it cannot pass for a line of ours).
fn print_json_error(error: &serde_json::Value) {
    errln!("{error}");
}

fn run(cli: Cli, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let json = cli.json;
    runtime.block_on(async move {
        match cli.command {
            Command::Inspect { operator, grants } => inspect(&operator, json, &grants).await,
            Command::Wit { out } => wit(out.as_deref()),
            Command::Worker {
                nats,
                name,
                max_concurrency,
                drain,
                operators,
                metrics_listen,
                grants,
            } => {
                let Some(nats) = nats.args() else {
                    return Err(io::Usage("--nats URL is required".into()).into());
                };
                remote::worker(remote::WorkerFlags {
                    nats,
                    name,
                    max_concurrency,
                    drain,
                    grants: grants.grants()?,
                    operators,
                    metrics_listen,
                })
                .await
            }
            Command::Completions { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "xcs", &mut script);
                io::write_out(format_args!("{}", String::from_utf8_lossy(&script)), false)
            }
            Command::New {
                name,
                lang,
                dir,
                sdk,
            } => new::new(&name, lang, dir.as_deref(), sdk.as_deref()),
            Command::Call {
                operator,
                input,
                limits,
                policy,
                grants,
                metrics,
            } => {
                let host = Host::builder()
                    .default_policy(policy.policy())
                    .grants_table(&grants.grants()?)
                    .build()?;
                call(
                    &host,
                    &operator,
                    &input,
                    &limits.limits(),
                    limits.max_input.saturating_mul(4),
                    metrics.as_deref(),
                )
                .await
            }
            Command::Serve {
                operators,
                graphs,
                listen,
                token_file,
                max_concurrency,
                max_queue,
                drain,
                max_body,
                max_connections,
                graph_timeout,
                limits,
                grants,
            } => {
                serve::serve(serve::ServeFlags {
                    operators,
                    graphs,
                    listen,
                    grants: grants.grants()?,
                    token_file,
                    max_concurrency,
                    max_queue,
                    drain,
                    max_body,
                    max_connections,
                    maxima: serve::Maxima {
                        timeout: limits.timeout,
                        fuel: limits.fuel,
                        memory: limits.memory,
                        max_input: limits.max_input,
                        max_output: limits.max_output,
                        seed: limits.seed,
                        graph_timeout,
                        most: limits.limits(),
                    },
                })
                .await
            }
            Command::Check {
                graph,
                graph_args,
                dot,
            } => graphs::check(&graph, &graph_args, dot.as_deref()).await,
            Command::Trace {
                composite,
                input,
                graph_args,
                grants,
                dot,
                toml,
            } => {
                if json && toml {
                    return Err(io::Usage("--json and --toml: choose one".into()).into());
                }
                let flags = graphs::TraceFlags {
                    grants: grants.grants()?,
                    dot,
                    json,
                    toml,
                };
                graphs::trace(&composite, &input, &graph_args, &flags).await
            }
            Command::Run {
                graph,
                input,
                graph_args,
                grants,
                max_concurrency,
                timeout,
                keep_going,
                strict,
                dot,
                timeline,
                report,
                metrics,
                nats,
                nats_max_in_flight,
            } => {
                let nats = nats.args();
                let flags = graphs::RunFlags {
                    grants: grants.grants()?,
                    max_concurrency,
                    timeout,
                    keep_going,
                    strict,
                    dot,
                    timeline,
                    report,
                    metrics,
                    nats,
                    nats_max_in_flight,
                };
                if graph.extension().is_some_and(|ext| ext == "wasm") {
                    graphs::run_composite(&graph, &input, &graph_args, &flags).await
                } else {
                    graphs::run_graph(&graph, &input, &graph_args, &flags).await
                }
            }
        }
    })
}

/// `xcs wit`: the contract, as this build of xcs implements it, printed
/// or written into `out`.
fn wit(out: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = out else {
        return io::write_out(format_args!("{}", new::OPERATOR_WIT), false);
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))?;
    let path = dir.join("operator.wit");
    io::write_file(&path, new::OPERATOR_WIT.as_bytes())?;
    errln!("wrote {}", path.display());
    Ok(())
}

/// What an operator's imports ask of the host, and what is granted.
fn capabilities(operator: &xcs::Operator) -> Vec<(&'static str, String, String)> {
    let grants = operator.grants();
    let imports = |prefix: &str| {
        operator
            .imports()
            .iter()
            .any(|import| import.starts_with(prefix))
    };
    let list = |items: Vec<String>, none: &str| {
        if items.is_empty() {
            none.to_owned()
        } else {
            items.join(", ")
        }
    };
    let mut found = Vec::new();
    if imports("wasi:http/outgoing-handler") {
        let patterns = grants.http_grant().patterns().map(str::to_owned).collect();
        found.push((
            "http",
            "wasi:http/outgoing-handler".to_owned(),
            list(
                patterns,
                "nothing (calls refuse it: --allow-http URLPATTERN, or `http` in a grants file)",
            ),
        ));
    }
    if imports("wasi:filesystem/preopens") {
        let dirs = grants
            .dirs()
            .map(|(host, guest)| format!("{}::{guest}", host.display()))
            .collect();
        found.push((
            "dirs",
            "wasi:filesystem/preopens".to_owned(),
            list(
                dirs,
                "nothing (--dir HOST::GUEST, or `dirs` in a grants file)",
            ),
        ));
    }
    if imports("wasi:cli/environment") {
        let names = grants.env_names().map(str::to_owned).collect();
        found.push((
            "env",
            "wasi:cli/environment".to_owned(),
            list(names, "nothing (--env NAME, or `env` in a grants file)"),
        ));
    }
    found
}

async fn inspect(path: &Path, as_json: bool, grants: &GrantArgs) -> anyhow::Result<()> {
    // Any operator can be described: one that needs HTTP not granted here
    // loads (its requests would be denied) and says so.
    let host = Host::builder()
        .grants_table(&grants.grants()?)
        .refuse_ungranted_http(false)
        .build()?;
    let operator = io::load(&host, path).await?;
    let metadata = operator.metadata();
    let signature = operator.signature();
    let capabilities = capabilities(&operator);
    if as_json {
        let description = json!({
            "name": metadata.name,
            "version": metadata.version,
            "description": metadata.description,
            "deterministic": metadata.deterministic,
            "composite": operator.is_composite(),
            "params": signature.params,
            "result": signature.result_wit,
            "types": signature.types,
            "signature": signature.to_string(),
            "imports": operator.imports(),
            "capabilities": capabilities
                .iter()
                .map(|(name, import, _)| {
                    let grants = operator.grants();
                    let granted: Vec<String> = match *name {
                        "http" => grants.http_grant().patterns().map(str::to_owned).collect(),
                        "dirs" => grants
                            .dirs()
                            .map(|(host, guest)| format!("{}::{guest}", host.display()))
                            .collect(),
                        _ => grants.env_names().map(str::to_owned).collect(),
                    };
                    (name.to_string(), json!({ "import": import, "granted": granted }))
                })
                .collect::<serde_json::Map<_, _>>(),
            "digest": operator.digest(),
        });
        outln!("{}", serde_json::to_string_pretty(&description)?)?;
    } else {
        // Guest-controlled text: printable.
        outln!("name:          {}", io::printable(&metadata.name))?;
        outln!("version:       {}", io::printable(&metadata.version))?;
        outln!("description:   {}", io::printable(&metadata.description))?;
        outln!(
            "deterministic: {}",
            if metadata.deterministic { "yes" } else { "no" }
        )?;
        // A guest names its types: printable.
        outln!("invoke:        {}", io::printable(&signature.to_string()))?;
        if !signature.types.is_empty() {
            outln!("types:")?;
            for ty in &signature.types {
                outln!("  {}", io::printable(&ty.definition))?;
            }
        }
        if operator.is_composite() {
            // What it calls depends on its input: `xcs trace` shows it.
            outln!("composite:     yes (calls operators by name; `xcs trace` shows which)")?;
        }
        if !operator.imports().is_empty() {
            outln!("imports:")?;
            for import in operator.imports() {
                outln!("  {}", io::printable(import))?;
            }
        }
        if !capabilities.is_empty() {
            outln!("capabilities:")?;
            for (name, import, granted) in &capabilities {
                outln!("  {name:<5} {import}: granted {}", io::printable(granted))?;
            }
        }
        outln!("digest:        {}", operator.digest())?;
    }
    Ok(())
}

async fn call(
    host: &Host,
    path: &Path,
    input: &InputArgs,
    limits: &Limits,
    max_input_text: u64,
    metrics: Option<&Path>,
) -> anyhow::Result<()> {
    let operator = io::load(host, path).await?;
    let input = read_input(input, operator.name(), max_input_text)?;
    let output = operator.call(&input, limits).await;
    if let Ok(value) = &output {
        outln!("{}", serde_json::to_string(value)?)?;
    }
    write_metrics(host, metrics, output.is_ok())?;
    output.map(drop).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(xcs::parse_size("32MiB").ok(), Some(32 << 20));
        assert_eq!(xcs::parse_size("4096").ok(), Some(4096));
        assert_eq!(xcs::parse_size("10MB").ok(), Some(10_000_000));
        assert!(xcs::parse_size("ten").is_err());
        assert!(xcs::parse_size("1XB").is_err());
        assert!(xcs::parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn exit_codes_match_the_readme() {
        assert_eq!(exit_code(ErrorKind::Validation), 4);
        assert_eq!(exit_code(ErrorKind::Timeout), 6);
        assert_eq!(exit_code(ErrorKind::StackOverflow), 9);
        assert_eq!(exit_code(ErrorKind::Io), 1);
    }
}
