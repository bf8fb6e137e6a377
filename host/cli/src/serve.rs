//! `xcs serve`: a long-running operator service. One host (engine,
//! compiled operators, caches, metrics) serves every request over HTTP;
//! the operators of a directory are reloaded when it changes; SIGTERM or
//! SIGINT drains it.

mod api;
mod catalog;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use xcs::{Error, Host};

use self::api::ApiError;
pub(crate) use self::api::Maxima;
use self::catalog::Catalog;
use crate::io::Usage;

/// How long the operators directory must be quiet before a reload: a
/// file being copied in is read once, whole.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a reload waits for the directory to be quiet.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// How `xcs serve` runs.
#[derive(Debug)]
pub(crate) struct ServeFlags {
    pub(crate) operators: PathBuf,
    pub(crate) graphs: Option<PathBuf>,
    pub(crate) listen: SocketAddr,
    pub(crate) grants: xcs::GrantsTable,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) max_concurrency: usize,
    pub(crate) max_queue: usize,
    pub(crate) drain: Duration,
    pub(crate) max_body: u64,
    pub(crate) max_connections: usize,
    pub(crate) maxima: Maxima,
}

/// What every request shares.
pub(crate) struct Service {
    host: Host,
    catalog: RwLock<Arc<Catalog>>,
    operators_dir: PathBuf,
    graphs: Option<PathBuf>,
    token: Option<String>,
    /// False before the first scan and once draining.
    ready: AtomicBool,
    admission: Admission,
    maxima: Maxima,
    max_body: u64,
    stats: Stats,
}

impl Service {
    /// The operators served now (a request keeps the ones it started
    /// with while a reload puts others in place).
    fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(catalog) => catalog.clone(),
            // A panic elsewhere while holding the lock cannot leave a
            // half-written `Arc`: the value is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_catalog(&self, catalog: Catalog) {
        self.stats.operators.set(catalog.len() as i64);
        let catalog = Arc::new(catalog);
        match self.catalog.write() {
            Ok(mut slot) => *slot = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
    }

    /// Scans the operators directory again and serves what it holds; a
    /// file that does not load leaves its previous version serving.
    async fn reload(&self) {
        let previous = self.catalog();
        let (catalog, failures) = catalog::scan(&self.host, &self.operators_dir, &previous).await;
        for failure in &failures {
            self.stats.load_failures.inc();
            let kept = failure.kept.as_deref().map_or_else(
                || "nothing from it is served".to_owned(),
                |name| format!("its previous version keeps serving `{name}`"),
            );
            tracing::warn!(
                target: "xcs::serve",
                path = %failure.path.display(),
                "operator not loaded ({kept}): {:#}",
                failure.error
            );
        }
        let changed = changes(&previous, &catalog);
        if !changed.is_empty() {
            tracing::info!(target: "xcs::serve", "operators reloaded: {}", changed.join(", "));
        }
        self.set_catalog(catalog);
        self.stats.reloads.inc();
    }

    fn count(&self, route: &str, status: u16) {
        self.stats
            .requests
            .get_or_create(&RequestLabel {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The host's metrics, then the service's, one exposition.
    fn metrics_text(&self) -> String {
        let host = self.host.metrics_text();
        let mut text = host.strip_suffix("# EOF\n").unwrap_or(&host).to_owned();
        self.stats.in_flight.set(self.admission.in_flight() as i64);
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.stats.registry);
        text
    }
}

/// What changed between two catalogs, for the log.
fn changes(before: &Catalog, after: &Catalog) -> Vec<String> {
    let mut changed = Vec::new();
    for (name, served) in after.iter() {
        match before.get(name) {
            None => changed.push(format!("+{name}")),
            Some(old) if old.operator.digest() != served.operator.digest() => {
                changed.push(format!("~{name}"));
            }
            Some(_) => {}
        }
    }
    for (name, _) in before.iter() {
        if after.get(name).is_none() {
            changed.push(format!("-{name}"));
        }
    }
    changed
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    route: String,
    status: u16,
}

/// The service's own metrics.
struct Stats {
    registry: Registry,
    requests: Family<RequestLabel, Counter>,
    reloads: Counter,
    load_failures: Counter,
    operators: Gauge,
    in_flight: Gauge,
}

impl Stats {
    fn new() -> Stats {
        let mut registry = Registry::with_prefix("xcs_serve");
        let requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let reloads = Counter::default();
        registry.register(
            "reloads",
            "Scans of the operators directory",
            reloads.clone(),
        );
        let load_failures = Counter::default();
        registry.register(
            "operator_load_failures",
            "Operator files that did not load at a scan (their previous version, if any, kept serving)",
            load_failures.clone(),
        );
        let operators = Gauge::default();
        registry.register("operators", "Operators served", operators.clone());
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Calls and graph runs running or waiting now",
            in_flight.clone(),
        );
        Stats {
            registry,
            requests,
            reloads,
            load_failures,
            operators,
            in_flight,
        }
    }
}

/// The bound on work: `max_concurrency` calls and runs at once, at most
/// `max_queue` more waiting; beyond, `overloaded` at once.
struct Admission {
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    max_queue: usize,
    /// Running and waiting.
    entered: Arc<AtomicUsize>,
}

/// A place taken in the [`Admission`]; freed when dropped.
struct Entered {
    _permit: OwnedSemaphorePermit,
    _count: Counted,
}

/// One in `entered`, taken back when dropped (a request whose client
/// went away while it waited included).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    fn new(max_concurrency: usize, max_queue: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max_concurrency)),
            max_concurrency,
            max_queue,
            entered: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn in_flight(&self) -> usize {
        self.entered.load(Ordering::Acquire)
    }

    async fn enter(&self) -> Result<Entered, ApiError> {
        let bound = self.max_concurrency.saturating_add(self.max_queue);
        let before = self.entered.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(self.entered.clone());
        if before >= bound {
            return Err(ApiError::overloaded(self.max_concurrency, self.max_queue));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::overloaded(self.max_concurrency, self.max_queue))?;
        Ok(Entered {
            _permit: permit,
            _count: counted,
        })
    }
}

/// The routes, behind the guard (token, drain, body length, counting).
fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/operators", get(api::list))
        .route("/v1/operators/{name}", get(api::show))
        .route("/v1/operators/{name}/call", post(api::call))
        .route("/v1/graphs/check", post(api::check))
        .route("/v1/graphs/run", post(api::run))
        .route("/v1/graphs/{name}/run", post(api::run_named))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(api::fallback)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            api::guard,
        ))
        .with_state(service)
}

/// `xcs serve`.
pub(crate) async fn serve(flags: ServeFlags) -> anyhow::Result<()> {
    let token = match &flags.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
            let token = text.trim().to_owned();
            if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Usage(format!(
                    "--token-file {}: the token is one line of printable text without spaces",
                    path.display()
                ))
                .into());
            }
            Some(token)
        }
        None => None,
    };
    if !flags.listen.ip().is_loopback() && token.is_none() {
        return Err(Usage(format!(
            "--listen {}: a service reachable from other machines runs their code: \
             it needs --token-file (clients send `Authorization: Bearer <token>`)",
            flags.listen
        ))
        .into());
    }
    if flags.max_concurrency == 0 {
        return Err(Usage("--max-concurrency must be at least 1".into()).into());
    }
    if !flags.operators.is_dir() {
        return Err(Usage(format!(
            "--operators {}: not a directory",
            flags.operators.display()
        ))
        .into());
    }
    // Graph nodes and a composite's calls without limits of their own get
    // the service's.
    let host = Host::builder()
        .grants_table(&flags.grants)
        .max_concurrency(flags.max_concurrency)
        .default_limits(flags.maxima.most.clone())
        .build()?;
    let service = Arc::new(Service {
        host,
        catalog: RwLock::new(Arc::new(Catalog::default())),
        operators_dir: flags.operators.clone(),
        graphs: flags.graphs.clone(),
        token,
        ready: AtomicBool::new(false),
        admission: Admission::new(flags.max_concurrency, flags.max_queue),
        maxima: flags.maxima.clone(),
        max_body: flags.max_body,
        stats: Stats::new(),
    });
    // Watch first, then scan: a change during the first scan is not lost.
    let (_watcher, changes) = watch(&flags.operators)?;
    service.reload().await;
    tokio::spawn(reload_on_change(service.clone(), changes));

    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("binding {}", flags.listen))?;
    let address = listener.local_addr().context("the listening address")?;
    service.ready.store(true, Ordering::Release);
    errln!(
        "xcs serve: listening on http://{address} ({} operators from {})",
        service.catalog().len(),
        flags.operators.display()
    );

    let drain = flags.drain;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = accept(
        listener,
        router(service.clone()),
        flags.max_connections,
        &graceful,
    )
    .await;
    // Readiness goes first, so a balancer stops sending.
    service.ready.store(false, Ordering::Release);
    tracing::info!(target: "xcs::serve", "{signal}: draining");
    errln!(
        "xcs serve: {signal}, draining (at most {})",
        humantime::format_duration(drain)
    );
    tokio::select! {
        () = graceful.shutdown() => {
            errln!("xcs serve: drained, exiting");
            Ok(())
        }
        () = tokio::time::sleep(drain) => {
            let running = service.admission.in_flight();
            if running == 0 {
                // What is left are connections with no request running
                // (idle, or a request still being sent): nothing is lost.
                errln!("xcs serve: drained (idle connections closed), exiting");
                return Ok(());
            }
            Err(Error::Cancelled {
                reason: format!(
                    "the drain period of {} passed with {running} calls still running",
                    humantime::format_duration(drain),
                ),
            }
            .into())
        }
        () = async {
            // A second signal: stop now.
            shutdown_signal().await;
        } => Err(Error::Cancelled {
            reason: "a second signal: stopped without draining".into(),
        }
        .into()),
    }
}

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves connections from `listener` with `app` until SIGTERM or SIGINT
/// (at most `max_connections` open at once; one more is closed at once);
/// the signal's name.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) -> &'static str {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper has no header read timeout: a client that
    // never ends its head would hold its connection for good.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (stream, _) = tokio::select! {
            name = &mut signal => return name,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: wait a little, go on.
                    tracing::warn!(target: "xcs::serve", "accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away is not the service's error.
            let _ = watched.await;
            drop(permit);
        });
    }
}

/// Waits for SIGTERM or SIGINT; names the one that came.
pub(crate) async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// A watcher of `dir` (kept alive by the caller) and the channel its
/// changes arrive on: any number of changes is one message waiting.
fn watch(
    dir: &std::path::Path,
) -> anyhow::Result<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::Watcher;
    let (changed, changes) = tokio::sync::mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if event.kind.is_access() => {}
            // A full channel already says "changed"; an error of the
            // watcher is met with a scan too.
            _ => {
                let _ = changed.try_send(());
            }
        }
    })
    .context("watching the operators directory")?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok((watcher, changes))
}

/// Reloads after each burst of changes, once the directory is quiet.
async fn reload_on_change(service: Arc<Service>, mut changes: tokio::sync::mpsc::Receiver<()>) {
    while changes.recv().await.is_some() {
        // Quiet for DEBOUNCE, or at most MAX_DEBOUNCE after the first
        // change: a directory written to without pause is still reloaded.
        let latest = tokio::time::Instant::now() + MAX_DEBOUNCE;
        loop {
            let quiet_by = (tokio::time::Instant::now() + DEBOUNCE).min(latest);
            match tokio::time::timeout_at(quiet_by, changes.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < latest => {}
                Ok(Some(())) => break,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        service.reload().await;
    }
}
