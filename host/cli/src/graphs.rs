//! `xcs check`, `xcs run` (a graph file or a composite) and `xcs trace`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use xcs::graph::{
    ComposeOptions, Composite, Graph, GraphProblem, NodeStatus, Operators, Plan, RunOptions,
    RunReport, Trace,
};
use xcs::{Error, Host};

use crate::io::{printable, read_input, write_file};
use crate::{GraphArgs, InputArgs};

/// The most JSON text read as graph inputs: four times `xcs call`'s
/// default `--max-input` (the canonical size of a value is at most its
/// JSON text's, and JSON may be padded with white space).
const MAX_GRAPH_INPUT_TEXT: u64 = 4 * (64 << 20);

/// How `xcs run` runs, and what it writes.
#[derive(Debug)]
pub(crate) struct RunFlags {
    pub(crate) grants: xcs::GrantsTable,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) timeout: Duration,
    pub(crate) keep_going: bool,
    pub(crate) strict: bool,
    pub(crate) dot: Option<PathBuf>,
    pub(crate) timeline: Option<PathBuf>,
    pub(crate) report: Option<PathBuf>,
    pub(crate) metrics: Option<PathBuf>,
    /// Calls handed to NATS workers.
    pub(crate) nats: Option<crate::remote::NatsArgs>,
    /// At most this many of them in flight.
    pub(crate) nats_max_in_flight: usize,
}

/// Reads, parses, loads the operators of, and checks a graph file.
pub(crate) async fn plan(
    path: &Path,
    args: &GraphArgs,
    grants: &xcs::GrantsTable,
    remote: bool,
) -> anyhow::Result<(Plan, Host)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
    let graph = Graph::from_toml(&text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    // The graph's own grants (host paths relative to it), and the
    // command's.
    // Run remotely, the operators' calls get the workers' grants: one that
    // imports HTTP loads here without one of its own.
    let host = Host::builder()
        .grants_table(&graph.grants().clone().relative_to(base))
        .grants_table(grants)
        .refuse_ungranted_http(!remote)
        .build()?;
    let (operators, failed) = load_operators(&host, &graph, &args.operators, base).await?;
    let checked = graph.check(&operators);
    if failed.is_empty() {
        return Ok((checked?, host));
    }
    // The graph's other problems, without the "unknown operator" of the
    // operators that failed to load (their own errors say more).
    let mut others: Vec<GraphProblem> = match checked {
        Ok(_) => Vec::new(),
        Err(Error::Graph { problems }) => problems,
        Err(other) => return Err(other.into()),
    };
    let of_failed = |node: &str| {
        graph.nodes().iter().any(|candidate| {
            candidate.id() == node && failed.iter().any(|(key, _)| candidate.operator() == key)
        })
    };
    others.retain(|problem| {
        !(problem.node.as_deref().is_some_and(of_failed)
            && problem.message.starts_with("unknown operator"))
    });
    let mut failed = failed;
    if failed.len() == 1 && others.is_empty() {
        // One problem: its own error, with its own exit code.
        let (_, error) = failed.remove(0);
        return Err(error.into());
    }
    let mut problems: Vec<GraphProblem> = failed
        .into_iter()
        .map(|(key, error)| GraphProblem {
            node: graph
                .nodes()
                .iter()
                .find(|node| node.operator() == key)
                .map(|node| node.id().to_owned()),
            message: format!(
                "operator `{key}` does not load: error[{}]: {error}",
                error.kind()
            ),
        })
        .collect();
    problems.extend(others);
    Err(Error::Graph { problems }.into())
}

/// Loads the operators `graph` names: a key ending in `.wasm` is a path
/// relative to `base` (the graph file's directory); any other key is looked
/// up as `<dir>/<key>.wasm`. A key with no file is left out: the check
/// reports it as an unknown operator, with the others it finds. One that
/// does not load is returned with its error, so that every problem is
/// reported at once. The operators of composite nodes (they call by name)
/// come from `dir`.
async fn load_operators(
    host: &Host,
    graph: &Graph,
    dir: &Path,
    base: &Path,
) -> anyhow::Result<(Operators, Vec<(String, Error)>)> {
    let mut operators = Operators::new();
    let mut failed: Vec<(String, Error)> = Vec::new();
    for node in graph.nodes() {
        let key = node.operator();
        if operators.get(key).is_some() || failed.iter().any(|(failed, _)| failed == key) {
            continue;
        }
        let path = if key.ends_with(".wasm") {
            base.join(key)
        } else {
            dir.join(format!("{key}.wasm"))
        };
        if path.is_file() {
            match crate::io::load(host, &path).await {
                Ok(operator) => operators.insert(key, operator),
                Err(error) => failed.push((key.to_owned(), error)),
            }
        }
    }
    let has_composites = graph.nodes().iter().any(|node| {
        operators
            .get(node.operator())
            .is_some_and(xcs::Operator::is_composite)
    });
    if has_composites {
        for (key, operator) in load_dir(host, dir).await? {
            if operators.get(&key).is_none() {
                operators.insert(key, operator);
            }
        }
    }
    Ok((operators, failed))
}

/// The `.wasm` files of `dir`, sorted.
fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io(dir, source))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Every operator in `dir` (`*.wasm`), by metadata name. One that does not
/// load (it needs a capability the CLI cannot grant, say) is left out with
/// a warning: a composite that calls it fails with an unknown operator.
async fn load_dir(host: &Host, dir: &Path) -> anyhow::Result<Vec<(String, xcs::Operator)>> {
    let paths = wasm_files(dir)?;
    let mut operators = Vec::new();
    let mut left_out = Vec::new();
    for path in paths {
        match crate::io::load(host, &path).await {
            Ok(operator) => operators.push((operator.name().to_owned(), operator)),
            Err(error) => {
                tracing::info!(path = %path.display(), %error, "left out of the operators");
                let name = path.file_stem().map_or_else(
                    || path.display().to_string(),
                    |stem| stem.to_string_lossy().into_owned(),
                );
                left_out.push(format!("{name} [{}]", error.kind()));
            }
        }
    }
    if !left_out.is_empty() {
        errln!(
            "note: {} of {} do not load here and are left out: {} (-v says why)",
            left_out.len(),
            dir.display(),
            left_out.join(", ")
        );
    }
    Ok(operators)
}

pub(crate) async fn check(
    graph: &Path,
    args: &GraphArgs,
    dot: Option<&Path>,
) -> anyhow::Result<()> {
    let (plan, _host) = plan(graph, args, &xcs::GrantsTable::default(), false).await?;
    if let Some(dot_path) = dot {
        write_file(dot_path, plan.to_dot(None).as_bytes())?;
    }
    let inputs: Vec<String> = plan
        .inputs()
        .iter()
        .map(|(name, ty)| format!("{name}: {ty}"))
        .collect();
    outln!(
        "ok: {} node(s); inputs: {}",
        plan.graph().nodes().len(),
        if inputs.is_empty() {
            "none".into()
        } else {
            inputs.join(", ")
        }
    )?;
    Ok(())
}

fn options(flags: &RunFlags, nodes: usize) -> (RunOptions, Option<indicatif::ProgressBar>) {
    let mut options = RunOptions::default()
        .timeout(flags.timeout)
        .keep_going(flags.keep_going);
    if let Some(max) = flags.max_concurrency {
        options = options.max_concurrency(max);
    }
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(nodes as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} nodes {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    if let Some(bar) = &progress {
        let bar = bar.clone();
        options = options.on_progress(move |done, total| {
            // A composite's graph grows as it runs.
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
    }
    (options, progress)
}

/// `xcs run <graph.toml>`.
pub(crate) async fn run_graph(
    path: &Path,
    input: &InputArgs,
    args: &GraphArgs,
    flags: &RunFlags,
) -> anyhow::Result<()> {
    let (plan, host) = plan(path, args, &flags.grants, flags.nats.is_some()).await?;
    let inputs = read_input(input, "graph", MAX_GRAPH_INPUT_TEXT)?;
    let (mut options, progress) = options(flags, plan.graph().nodes().len());
    let mut remote = None;
    let mut settle = None;
    if let Some(nats) = &flags.nats {
        // The components the nodes call, and, when a composite is among
        // them, every one it may call (those of --operators).
        let base = path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = plan
            .graph()
            .nodes()
            .iter()
            .map(|node| {
                let key = node.operator();
                if key.ends_with(".wasm") {
                    base.join(key)
                } else {
                    args.operators.join(format!("{key}.wasm"))
                }
            })
            .collect();
        if plan
            .node_operators()
            .iter()
            .any(xcs::Operator::is_composite)
        {
            files.extend(wasm_files(&args.operators)?);
        }
        files.sort();
        files.dedup();
        let executor =
            crate::remote::NatsExecutor::connect(nats, &files, flags.nats_max_in_flight).await?;
        remote = Some(executor.stats());
        let executor = std::sync::Arc::new(executor);
        settle = Some(executor.clone());
        options = options.executor(executor);
    }
    let report = plan.run(&inputs, &options).await;
    if let Some(executor) = settle {
        executor.settle().await;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let (resent, more_metrics) = match &remote {
        Some(stats) => (stats.resent(), stats.text()),
        None => (0, String::new()),
    };
    if resent > 0 {
        errln!(
            "note: {resent} calls were sent again after the worker that took them stopped answering"
        );
    }
    finish_run(&host, Some(plan), report, flags, &more_metrics)
}

/// `xcs run <composite.wasm>`.
pub(crate) async fn run_composite(
    path: &Path,
    input: &InputArgs,
    args: &GraphArgs,
    flags: &RunFlags,
) -> anyhow::Result<()> {
    let host = Host::builder()
        .grants_table(&flags.grants)
        .refuse_ungranted_http(flags.nats.is_none())
        .build()?;
    let (composite, operators) = composite(&host, path, args, flags.strict).await?;
    let inputs = read_input(input, composite.operator().name(), MAX_GRAPH_INPUT_TEXT)?;
    let (mut options, progress) = options(flags, 1);
    let mut remote = None;
    let mut settle = None;
    if let Some(nats) = &flags.nats {
        // The composite's own code runs here; the calls it makes, on the
        // workers: every operator it may call goes to the object store.
        let mut files = wasm_files(&args.operators)?;
        files.push(path.to_owned());
        let executor =
            crate::remote::NatsExecutor::connect(nats, &files, flags.nats_max_in_flight).await?;
        remote = Some(executor.stats());
        let executor = std::sync::Arc::new(executor);
        settle = Some(executor.clone());
        options = options.executor(executor);
    }
    let report = composite.run(&inputs, &options).await;
    if let Some(executor) = settle {
        executor.settle().await;
    }
    let more_metrics = remote.map(|stats| stats.text()).unwrap_or_default();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(trace) = &report.trace
        && !trace.complete
        && let Some(stopped) = &trace.stopped
    {
        errln!(
            "warning: not traced completely, run staged: {}",
            printable(&stopped.to_string())
        );
    }
    // The graph that ran, drawn with the report: the composite's own node
    // (a staged run) is checked against the composite itself.
    let mut drawable = operators.clone();
    drawable.insert(composite.operator().name(), composite.operator().clone());
    let plan = match (&report.graph, &flags.dot) {
        (Some(graph), Some(_)) => match graph.check(&drawable) {
            Ok(plan) => Some(plan),
            Err(error) => {
                errln!("warning: the graph that ran cannot be drawn: {error}");
                None
            }
        },
        _ => None,
    };
    finish_run(&host, plan, report, flags, &more_metrics)
}

/// The composite at `path`, with the operators of `--operators`.
async fn composite(
    host: &Host,
    path: &Path,
    args: &GraphArgs,
    strict: bool,
) -> anyhow::Result<(Composite, Operators)> {
    let operator = crate::io::load(host, path).await?;
    let mut operators = Operators::new();
    for (key, loaded) in load_dir(host, &args.operators).await? {
        operators.insert(key, loaded);
    }
    let options = ComposeOptions::default().strict(strict);
    let composite = Composite::with_options(operator, operators.clone(), options)?;
    Ok((composite, operators))
}

/// Prints a run's outputs and failures, writes its pictures and metrics;
/// the run's error, if any.
fn finish_run(
    host: &Host,
    plan: Option<Plan>,
    run: RunReport,
    flags: &RunFlags,
    more_metrics: &str,
) -> anyhow::Result<()> {
    if run.error.is_none() || flags.keep_going {
        outln!("{}", serde_json::to_string(&run.outputs)?)?;
    }
    // The pictures are written even when the run failed; failing to write
    // one is reported, but never hides the run's own outcome.
    let mut written = Ok(());
    if let Some(path) = &flags.dot {
        let dot = plan.as_ref().map_or_else(
            || "digraph xcs {\n}\n".to_owned(),
            |plan| plan.to_dot(Some(&run)),
        );
        written = written.and(write_file(path, dot.as_bytes()));
    }
    if let Some(path) = &flags.timeline {
        written = written.and(write_file(
            path,
            serde_json::to_string(&run.to_timeline())?.as_bytes(),
        ));
    }
    if let Some(path) = &flags.report {
        let report = match &run.trace {
            None => serde_json::to_string_pretty(&run.nodes)?,
            Some(trace) => {
                serde_json::to_string_pretty(&json!({ "nodes": run.nodes, "trace": trace }))?
            }
        };
        written = written.and(write_file(path, report.as_bytes()));
    }
    if run.error.is_none() {
        written?;
    } else if let Err(error) = written {
        errln!("warning: {error:#}");
    }
    crate::io::write_metrics_with(
        host,
        more_metrics,
        flags.metrics.as_deref(),
        run.error.is_none(),
    )?;
    let unsuccessful: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| matches!(node.status, NodeStatus::Failed | NodeStatus::Skipped))
        .collect();
    if unsuccessful.len() > 1 {
        // Every node that did not succeed; the error line below names the first.
        for node in unsuccessful {
            if let Some(error) = &node.error {
                let message = printable(&error.message);
                errln!("node `{}` failed [{}]: {message}", node.id, error.kind);
            } else if let Some(why) = &node.stopped {
                errln!("node `{}` skipped: {why}", node.id);
            }
        }
    }
    run.into_result().map(drop).map_err(Into::into)
}

/// What `xcs trace` prints.
#[derive(Debug)]
pub(crate) struct TraceFlags {
    pub(crate) grants: xcs::GrantsTable,
    pub(crate) dot: Option<PathBuf>,
    pub(crate) json: bool,
    pub(crate) toml: bool,
}

/// `xcs trace <composite.wasm>`: the graph, without running any callee.
pub(crate) async fn trace(
    path: &Path,
    input: &InputArgs,
    args: &GraphArgs,
    flags: &TraceFlags,
) -> anyhow::Result<()> {
    let host = Host::builder().grants_table(&flags.grants).build()?;
    let (composite, operators) = composite(&host, path, args, false).await?;
    let inputs = read_input(input, composite.operator().name(), MAX_GRAPH_INPUT_TEXT)?;
    let trace = composite.trace(&inputs).await?;
    if let Some(dot) = &flags.dot {
        let plan = trace
            .graph
            .check(&operators)
            .context("checking the traced graph")?;
        write_file(dot, plan.to_dot(None).as_bytes())?;
    }
    if flags.toml {
        if let Some(stop) = &trace.stopped {
            // A partial graph, without the composite's output.
            // Its backtrace names the guest's functions: guest text, one
            // line in a TOML comment.
            let stop = stop.to_string();
            errln!(
                "warning: the trace is incomplete; the graph stops where it did: {}",
                printable(&stop)
            );
            outln!("# An incomplete trace: {}", stop.escape_debug())?;
        }
        out!("{}", trace.graph.to_toml()?)?;
    } else if flags.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&trace_json(&trace, &operators))?
        )?;
    } else {
        print_trace(&trace, &operators)?;
    }
    Ok(())
}

/// The WIT type node `id` of `trace` outputs, when its operator is known.
fn output_type(operators: &Operators, node: &xcs::graph::Node) -> Option<String> {
    let result = operators.get(node.operator())?.signature().result.clone()?;
    Some(match node.map_param() {
        Some(_) => format!("list<{result}>"),
        None => result.to_string(),
    })
}

fn trace_json(trace: &Trace, operators: &Operators) -> Value {
    let nodes: Vec<Value> = trace
        .graph
        .nodes()
        .iter()
        .map(|node| {
            let args: serde_json::Map<String, Value> = node
                .args()
                .iter()
                .map(|(name, source)| (name.clone(), Value::String(source.to_string())))
                .collect();
            json!({
                "id": node.id(),
                "operator": node.operator(),
                "map": node.map_param(),
                "args": args,
                "type": output_type(operators, node),
            })
        })
        .collect();
    json!({
        "complete": trace.is_complete(),
        "stopped": trace.stopped,
        "calls": trace.calls,
        "merged": trace.merged,
        "nodes": nodes,
        "output": trace.graph.outputs().first().map(|(_, source)| source.to_string()),
    })
}

fn print_trace(trace: &Trace, operators: &Operators) -> anyhow::Result<()> {
    match &trace.stopped {
        None => outln!(
            "complete: {} call(s), {} merged, {} node(s)",
            trace.calls,
            trace.merged,
            trace.graph.nodes().len()
        )?,
        Some(stop) => outln!("stopped: {}", printable(&stop.to_string()))?,
    }
    for node in trace.graph.nodes() {
        let args: Vec<String> = node
            .args()
            .iter()
            .map(|(name, source)| format!("{name} = {source}"))
            .collect();
        let map = node
            .map_param()
            .map(|param| format!(", map over {param}"))
            .unwrap_or_default();
        let ty = output_type(operators, node).unwrap_or_else(|| "?".into());
        outln!(
            "  {}: {}({}) -> {ty}{map}",
            node.id(),
            node.operator(),
            args.join(", ")
        )?;
    }
    if let Some((_, output)) = trace.graph.outputs().first() {
        outln!("output: {output}")?;
    }
    Ok(())
}
