//! Calls on other machines over NATS: `xcs worker` serves the calls of a
//! namespace in one queue group, and `xcs run --nats` hands a graph's
//! calls to the workers through [`NatsExecutor`]. Operator bytes travel
//! by digest through the JetStream object store; a worker verifies them
//! before compiling.
//!
//! The wire: a request on `xcs.<namespace>.call` is
//! `{"operator", "digest", "input", "limits"}` (the limits' timeout is
//! what is left of the call's deadline); the reply is `{"ok": value}` or
//! `{"error": {"kind", "message", "operator", "retryable"}}`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use xcs::graph::{Executor, RemoteCall};
use xcs::{Error, ErrorKind, Host, Limits, Operator};

/// The object store bucket of operator bytes, by digest.
const OPERATORS_BUCKET: &str = "xcs_operators";
/// The object store bucket of calls and replies too large for a message,
/// by digest (each removed once read; a leftover expires).
const PAYLOADS_BUCKET: &str = "xcs_payloads";
/// How long a payload left behind (its reader gone) is kept.
const PAYLOAD_MAX_AGE: Duration = Duration::from_secs(3600);
/// The header of a message whose body is in the payloads bucket.
const PAYLOAD_HEADER: &str = "Xcs-Payload";
/// Room kept in a message for its headers.
const HEADER_ROOM: usize = 4096;
/// The header that says what a message from a worker is: `accepted` (it
/// took the call), `alive` (still running it) or `reply`.
const KIND_HEADER: &str = "Xcs-Kind";
/// The header naming the worker that sent a reply.
const WORKER_HEADER: &str = "Xcs-Worker";
/// How often a worker says a call it runs is still running.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a coordinator waits for a worker to take a call.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence after which a worker that took a call is taken for lost (its
/// process or machine gone), and the call is sent again.
const LOST_AFTER: Duration = Duration::from_millis(2000);
/// The largest call or reply taken from the payloads bucket.
const MAX_PAYLOAD_BYTES: usize = 1 << 30;
/// The largest operator a worker fetches.
const MAX_OPERATOR_BYTES: usize = 256 << 20;
/// How long past a call's own timeout the coordinator waits for its reply
/// (the trip, and the worker's time to stop a guest at its deadline).
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// One call on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct WireCall {
    operator: String,
    digest: String,
    input: Value,
    limits: Limits,
}

/// A reply on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireReply {
    Ok(Value),
    Error(WireError),
}

/// An error on the wire: what the coordinator rebuilds an `xcs::Error`
/// from.
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    kind: String,
    message: String,
    operator: Option<String>,
    retryable: bool,
}

impl WireError {
    fn of(error: &Error) -> WireError {
        WireError {
            kind: error.kind().as_str().to_owned(),
            message: error.to_string(),
            operator: error.operator().map(str::to_owned),
            retryable: error.is_retryable(),
        }
    }

    fn into_error(self) -> Error {
        Error::Remote {
            kind: ErrorKind::from_name(&self.kind).unwrap_or(ErrorKind::Io),
            operator: self.operator,
            message: self.message,
            retryable: self.retryable,
        }
    }
}

fn subject(namespace: &str) -> String {
    format!("xcs.{namespace}.call")
}

/// Where a coordinator says a call it sent is no longer wanted (the run
/// failed fast, or its deadline passed): every worker of the namespace
/// hears it; the one running the call stops it.
fn cancel_subject(namespace: &str) -> String {
    format!("xcs.{namespace}.cancel")
}

/// The tasks publishing cancels, for a coordinator to wait for.
type Pending = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// Says, when dropped before [`done`](Self::done), that the call whose
/// replies go to `inbox` is no longer wanted.
struct CancelOnDrop {
    client: async_nats::Client,
    subject: String,
    inbox: Option<String>,
    /// Where the publishing task goes, for the coordinator to wait for
    /// before it exits.
    pending: Pending,
}

impl CancelOnDrop {
    fn done(mut self) {
        self.inbox = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        let (client, subject) = (self.client.clone(), self.subject.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(async move {
                let _ = client.publish(subject, inbox.into()).await;
                let _ = client.flush().await;
            });
            self.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(task);
        }
    }
}

/// Connection settings shared by the worker and the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct NatsArgs {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) creds: Option<PathBuf>,
    /// TLS: the CA that signed the server's certificate (TLS required).
    pub(crate) tls_ca: Option<PathBuf>,
    /// TLS: this client's certificate and key, for a server that verifies
    /// its clients.
    pub(crate) tls_client: Option<(PathBuf, PathBuf)>,
}

impl NatsArgs {
    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        if self.namespace.is_empty()
            || !self
                .namespace
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        {
            return Err(crate::io::Usage(format!(
                "--namespace {}: letters, digits, - and _ only",
                crate::io::printable(&self.namespace)
            ))
            .into());
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("xcs")
            .connection_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.tls_ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options
                .require_tls(true)
                .add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(path) = &self.creds {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
        }
        // A server that is not there, or refuses the credentials, fails
        // at once (no retrying the first connection).
        let connect = options.connect(self.url.as_str());
        let client = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {}: no answer within 10s", self.url))?
            .with_context(|| format!("connecting to {}", self.url))?;
        Ok(client)
    }
}

type ObjectStore = async_nats::jetstream::object_store::ObjectStore;

/// The object store of operator bytes (made if it is not there).
async fn operator_store(client: &async_nats::Client) -> anyhow::Result<ObjectStore> {
    store(
        client,
        OPERATORS_BUCKET,
        "xcs operator components, by sha256 digest",
        Duration::ZERO,
    )
    .await
}

/// The object store of large calls and replies (made if it is not there).
async fn payload_store(client: &async_nats::Client) -> anyhow::Result<ObjectStore> {
    store(
        client,
        PAYLOADS_BUCKET,
        "xcs calls and replies over the message size, by sha256 digest",
        PAYLOAD_MAX_AGE,
    )
    .await
}

async fn store(
    client: &async_nats::Client,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> anyhow::Result<ObjectStore> {
    let jetstream = async_nats::jetstream::new(client.clone());
    match jetstream.get_object_store(bucket).await {
        Ok(store) => Ok(store),
        Err(_) => jetstream
            .create_object_store(async_nats::jetstream::object_store::Config {
                bucket: bucket.to_owned(),
                description: Some(description.to_owned()),
                max_age,
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!("making the object store {bucket} (does the server have JetStream on?)")
            }),
    }
}

/// A message's headers and body: `body` itself when it fits in a message
/// of the server, else put in the payloads store and named by a header
/// (its digest returned, to remove it once answered).
async fn outgoing(
    payloads: &ObjectStore,
    max_payload: usize,
    body: Vec<u8>,
) -> Result<(async_nats::HeaderMap, bytes::Bytes, Option<String>), String> {
    let mut headers = async_nats::HeaderMap::new();
    if body.len() + HEADER_ROOM <= max_payload {
        return Ok((headers, bytes::Bytes::from(body), None));
    }
    // Its digest (checked by the reader) and a name of its own: two equal
    // payloads in flight are two objects.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "{}.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let name = format!("{}#{unique}", sha256_digest(&body));
    payloads
        .put(name.as_str(), &mut body.as_slice())
        .await
        .map_err(|error| format!("putting {} bytes in the object store: {error}", body.len()))?;
    headers.insert(PAYLOAD_HEADER, name.as_str());
    Ok((headers, bytes::Bytes::new(), Some(name)))
}

/// A message's body: its own, or the payload its header names (checked
/// against the digest its name starts with; removed from the store when
/// `remove`: a reply is read once, a call may be sent again).
async fn incoming(
    payloads: &ObjectStore,
    message: &async_nats::Message,
    remove: bool,
) -> Result<Vec<u8>, String> {
    let Some(name) = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(PAYLOAD_HEADER))
        .map(|value| value.as_str().to_owned())
    else {
        return Ok(message.payload.to_vec());
    };
    let digest = name.split('#').next().unwrap_or_default().to_owned();
    let mut object = payloads
        .get(name.as_str())
        .await
        .map_err(|error| format!("the payload {digest} is not in the object store: {error}"))?;
    let mut body = Vec::new();
    (&mut object)
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|error| format!("reading the payload {digest}: {error}"))?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "the payload {digest} is over {MAX_PAYLOAD_BYTES} bytes"
        ));
    }
    if sha256_digest(&body) != digest {
        return Err(format!("the payload {digest} has other bytes: refused"));
    }
    if remove {
        let _ = payloads.delete(name.as_str()).await;
    }
    Ok(body)
}

fn sha256_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct WorkerOutcome {
    worker: String,
    outcome: String,
}

type Counter = prometheus_client::metrics::counter::Counter;

/// What a coordinator's remote calls did, for `--metrics`.
pub(crate) struct RemoteStats {
    registry: prometheus_client::registry::Registry,
    /// Calls answered, by the worker that answered and the outcome (`ok`
    /// or the error's kind).
    calls: prometheus_client::metrics::family::Family<WorkerOutcome, Counter>,
    /// Calls sent again after their worker went silent.
    resent: Counter,
    /// Bytes of calls sent, and of replies received (payloads through the
    /// object store included).
    bytes_sent: Counter,
    bytes_received: Counter,
}

impl RemoteStats {
    fn new() -> RemoteStats {
        let mut registry = prometheus_client::registry::Registry::with_prefix("xcs_remote");
        let calls = prometheus_client::metrics::family::Family::default();
        registry.register(
            "calls",
            "Calls answered by workers, by worker and outcome",
            Clone::clone(&calls),
        );
        let resent = Counter::default();
        registry.register(
            "resent",
            "Calls sent again after the worker that took them went silent",
            resent.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "sent_bytes",
            "Bytes of calls sent to workers",
            bytes_sent.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "received_bytes",
            "Bytes of replies received from workers",
            bytes_received.clone(),
        );
        RemoteStats {
            registry,
            calls,
            resent,
            bytes_sent,
            bytes_received,
        }
    }

    fn answered(&self, worker: &str, outcome: &str) {
        self.calls
            .get_or_create(&WorkerOutcome {
                worker: worker.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Calls sent again so far.
    pub(crate) fn resent(&self) -> u64 {
        self.resent.get()
    }

    /// The exposition, without its `# EOF` (to follow the host's).
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned()
    }
}

/// Hands calls to the workers of a namespace.
pub(crate) struct NatsExecutor {
    client: async_nats::Client,
    subject: String,
    payloads: ObjectStore,
    /// At most this many calls in flight; one more is `overloaded`.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// What the calls did.
    stats: Arc<RemoteStats>,
    cancel_subject: String,
    /// Cancels being published.
    pending: Pending,
}

impl NatsExecutor {
    /// Connects, and puts the operator components in `files` in the
    /// object store (by the digest of their bytes) where they are not yet.
    pub(crate) async fn connect(
        args: &NatsArgs,
        files: &[PathBuf],
        max_in_flight: usize,
    ) -> anyhow::Result<NatsExecutor> {
        let client = args.connect().await?;
        let store = operator_store(&client).await?;
        let payloads = payload_store(&client).await?;
        for path in files {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|source| Error::io(path, source))?;
            let digest = sha256_digest(&bytes);
            if store.info(digest.as_str()).await.is_ok() {
                continue;
            }
            store
                .put(digest.as_str(), &mut bytes.as_slice())
                .await
                .with_context(|| format!("putting {} in the object store", path.display()))?;
        }
        Ok(NatsExecutor {
            client,
            subject: subject(&args.namespace),
            payloads,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            stats: Arc::new(RemoteStats::new()),
            cancel_subject: cancel_subject(&args.namespace),
            pending: Arc::default(),
        })
    }
}

impl NatsExecutor {
    /// What its calls did.
    pub(crate) fn stats(&self) -> Arc<RemoteStats> {
        self.stats.clone()
    }

    /// Waits (at most 5 s) until the cancels of calls no longer wanted are
    /// out: a coordinator that exits at once would leave workers running
    /// them to their deadlines.
    pub(crate) async fn settle(&self) {
        // The calls of a run that ended are dropped when their tasks are
        // next polled: first every call gone (each releases its place
        // after its cancel is queued), then every cancel out.
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.in_flight.acquire_many(all)).await;
        let pending: Vec<_> = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(pending)).await;
    }
}

impl Executor for NatsExecutor {
    fn call(&self, call: RemoteCall) -> Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>> {
        let (client, subject) = (self.client.clone(), self.subject.clone());
        let payloads = self.payloads.clone();
        let stats = self.stats.clone();
        let cancel = self.cancel_subject.clone();
        let pending = self.pending.clone();
        let permit = self.in_flight.clone().try_acquire_owned();
        // The caller's trace (`traceparent`), for the worker's spans to
        // join: nothing when spans are not exported.
        let trace = trace_context();
        let max_in_flight = self.max_in_flight;
        Box::pin(async move {
            // Bounded: beyond the bound, refused at once, not queued.
            let Ok(_permit) = permit else {
                return Err(Error::Overloaded {
                    operator: call.operator.clone(),
                    max_in_flight,
                    max_queue: 0,
                });
            };
            let unavailable = |reason: String| Error::Unavailable {
                operator: call.operator.clone(),
                reason,
            };
            let deadline = tokio::time::Instant::now() + call.timeout + REPLY_GRACE;
            let body = serde_json::to_vec(&WireCall {
                operator: call.operator.clone(),
                digest: call.digest.clone(),
                input: call.input.clone(),
                limits: call.limits.clone(),
            })
            .map_err(|error| unavailable(format!("encoding the call: {error}")))?;
            let max_payload = client.server_info().max_payload;
            let body_len = body.len() as u64;
            let (mut headers, payload, stored) = outgoing(&payloads, max_payload, body)
                .await
                .map_err(unavailable)?;
            for (name, value) in &trace {
                headers.insert(name.as_str(), value.as_str());
            }
            stats.bytes_sent.inc_by(body_len);
            let outcome = ask(
                &client,
                (&subject, &cancel, &pending),
                (headers, payload),
                deadline,
                &payloads,
                &stats,
            )
            .await
            .map_err(|outcome| match outcome {
                Asked::Failed(error) => error,
                Asked::Unavailable(reason) => unavailable(reason),
            });
            if let Some(digest) = stored {
                let _ = payloads.delete(digest.as_str()).await;
            }
            outcome
        })
    }
}

/// Why a call has no output.
enum Asked {
    /// The worker's error.
    Failed(Error),
    /// No worker answered, or the answer could not be read.
    Unavailable(String),
}

/// Sends a call until a worker answers it (a busy one says so at once,
/// and the queue group picks again; one that took it and went silent is
/// taken for lost, and the call is sent again: at least once) or
/// `deadline` passes; its output.
async fn ask(
    client: &async_nats::Client,
    (subject, cancel, pending): (&str, &str, &Pending),
    (headers, payload): (async_nats::HeaderMap, bytes::Bytes),
    deadline: tokio::time::Instant,
    payloads: &ObjectStore,
    stats: &RemoteStats,
) -> Result<Value, Asked> {
    let mut pause = Duration::from_millis(2);
    let unavailable = |error: &dyn std::fmt::Display| Asked::Unavailable(error.to_string());
    loop {
        let inbox = client.new_inbox();
        // Dropped unanswered (the run failed fast, its deadline passed),
        // even while the call is being sent: the worker is told to stop
        // (a cancel that comes before its call drops the call).
        let unwanted = CancelOnDrop {
            client: client.clone(),
            subject: cancel.to_owned(),
            inbox: Some(inbox.clone()),
            pending: pending.clone(),
        };
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| unavailable(&error))?;
        client
            .publish_with_reply_and_headers(
                subject.to_owned(),
                inbox,
                headers.clone(),
                payload.clone(),
            )
            .await
            .map_err(|error| unavailable(&error))?;
        let mut accepted = false;
        let reply = loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Asked::Unavailable("no worker answered in time".into()));
            }
            let wait = if accepted { LOST_AFTER } else { ACCEPT_TIMEOUT };
            match tokio::time::timeout_at((now + wait).min(deadline), replies.next()).await {
                Ok(Some(message)) => {
                    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                        return Err(Asked::Unavailable("no worker serves this namespace".into()));
                    }
                    let kind = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(KIND_HEADER))
                        .map(|value| value.as_str().to_owned());
                    match kind.as_deref() {
                        Some("accepted" | "alive") => accepted = true,
                        _ => break Some(message),
                    }
                }
                Ok(None) => return Err(Asked::Unavailable("the connection closed".into())),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(Asked::Unavailable("no worker answered in time".into()));
                }
                // Taken, then silence; or not taken at all (a worker that
                // stopped before reading it): sent again.
                Err(_) => break None,
            }
        };
        let _ = replies.unsubscribe().await;
        let Some(reply) = reply else {
            // Told to stop, in case the worker was only slow.
            drop(unwanted);
            // Taken, then silence: the worker is gone. Again, elsewhere.
            if accepted {
                stats.resent.inc();
            }
            tracing::warn!(target: "xcs::remote", "a worker stopped answering: the call is sent again");
            continue;
        };
        unwanted.done();
        let body = tokio::time::timeout_at(deadline, incoming(payloads, &reply, true))
            .await
            .map_err(|_| Asked::Unavailable("the reply did not arrive in time".into()))?
            .map_err(Asked::Unavailable)?;
        stats.bytes_received.inc_by(body.len() as u64);
        let worker = reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get(WORKER_HEADER))
            .map(|value| value.as_str())
            .filter(|name| {
                name.len() <= 64
                    && name
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
            })
            .unwrap_or("unknown")
            .to_owned();
        let reply: Result<WireReply, _> = serde_json::from_slice(&body);
        match &reply {
            Ok(WireReply::Ok(_)) => stats.answered(&worker, "ok"),
            Ok(WireReply::Error(error)) => {
                let kind = ErrorKind::from_name(&error.kind).map_or("unknown", ErrorKind::as_str);
                stats.answered(&worker, kind);
            }
            Err(_) => {}
        }
        match reply {
            Ok(WireReply::Ok(value)) => return Ok(value),
            Ok(WireReply::Error(error)) if error.kind == "overloaded" => {
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(Asked::Failed(error.into_error()));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Ok(WireReply::Error(error)) => return Err(Asked::Failed(error.into_error())),
            Err(error) => {
                return Err(Asked::Unavailable(format!(
                    "a reply that does not parse: {error}"
                )));
            }
        }
    }
}

/// How `xcs worker` runs.
#[derive(Debug)]
pub(crate) struct WorkerFlags {
    pub(crate) nats: NatsArgs,
    pub(crate) name: Option<String>,
    pub(crate) max_concurrency: usize,
    pub(crate) drain: Duration,
    pub(crate) grants: xcs::GrantsTable,
    /// Operators to have ready, by digest, before any call asks for them.
    pub(crate) operators: Option<PathBuf>,
    /// Where to serve `GET /metrics`.
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
}

/// A worker's operators, by digest, fetched from the object store as
/// calls need them, and its store of large calls and replies.
struct Operators {
    host: Host,
    store: ObjectStore,
    payloads: ObjectStore,
    /// Compiled operators by digest: at most [`MAX_LOADED`], the least
    /// used dropped first; concurrent first calls of one digest fetch and
    /// compile it once.
    loaded: moka::future::Cache<String, Operator>,
}

/// The most operators a worker keeps compiled (the host's disk cache
/// keeps more, and makes a reload cheap).
const MAX_LOADED: u64 = 256;

impl Operators {
    async fn get(&self, name: &str, digest: &str) -> Result<Operator, Error> {
        self.loaded
            .try_get_with(digest.to_owned(), self.fetch(name, digest))
            .await
            .map_err(|shared| Error::clone(&shared))
    }

    /// Fetches the operator of `digest` from the object store and compiles
    /// it, if its bytes have that digest.
    async fn fetch(&self, name: &str, digest: &str) -> Result<Operator, Error> {
        let refused = |reason: String| Error::InvalidComponent {
            source_name: format!("{name} ({digest})"),
            reason,
            source: None,
        };
        let mut object = self
            .store
            .get(digest)
            .await
            .map_err(|error| refused(format!("not in the object store: {error}")))?;
        let mut bytes = Vec::new();
        (&mut object)
            .take(MAX_OPERATOR_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|error| refused(format!("reading it from the object store: {error}")))?;
        if bytes.len() > MAX_OPERATOR_BYTES {
            return Err(refused(format!("over {MAX_OPERATOR_BYTES} bytes")));
        }
        // Never compiled unless they are the bytes asked for.
        let actual = sha256_digest(&bytes);
        if actual != digest {
            tracing::error!(target: "xcs::worker", digest, actual, "refused an operator whose bytes do not match its digest");
            return Err(refused(format!(
                "its bytes in the object store have the digest {actual}: refused, not compiled"
            )));
        }
        self.host.load_bytes(bytes, name).await
    }
}

/// `xcs worker`.
pub(crate) async fn worker(flags: WorkerFlags) -> anyhow::Result<()> {
    if flags.max_concurrency == 0 {
        return Err(crate::io::Usage("--max-concurrency must be at least 1".into()).into());
    }
    let client = flags.nats.connect().await?;
    let store = operator_store(&client).await?;
    let payloads = payload_store(&client).await?;
    let host = Host::builder().grants_table(&flags.grants).build()?;
    // Operators at hand: loaded now, by the digest of their bytes.
    let loaded = moka::future::Cache::new(MAX_LOADED);
    if let Some(dir) = &flags.operators {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::io(dir, source))?;
        for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
            if path.extension().is_none_or(|ext| ext != "wasm") {
                continue;
            }
            match host.load(&path).await {
                Ok(operator) => {
                    loaded.insert(operator.digest().to_owned(), operator).await;
                }
                Err(error) => {
                    tracing::warn!(target: "xcs::worker", path = %path.display(), "not loaded: {error}");
                }
            }
        }
    }
    let operators = Arc::new(Operators {
        host,
        store,
        payloads,
        loaded,
    });
    let subject = subject(&flags.nats.namespace);
    let mut calls = client
        .queue_subscribe(subject.clone(), "workers".into())
        .await
        .context("subscribing")?;
    let mut cancels = client
        .subscribe(cancel_subject(&flags.nats.namespace))
        .await
        .context("subscribing")?;
    client.flush().await.context("subscribing")?;
    // The calls running, by the inbox of their replies: what a cancel names.
    let running: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>> = Arc::default();
    let name = flags
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    errln!(
        "xcs worker {name}: ready on {subject} ({} at once)",
        flags.max_concurrency
    );
    // Taken: running (`running_places`), or waiting for a place, at most as
    // many as run; beyond, `overloaded` at once (never an unbounded queue).
    let taken = Arc::new(Semaphore::new(flags.max_concurrency.saturating_mul(2)));
    let running_places = Arc::new(Semaphore::new(flags.max_concurrency));
    let served = Arc::new(AtomicU64::new(0));
    let mut early = EarlyCancels::default();
    if let Some(address) = flags.metrics_listen {
        serve_metrics(address, &name, operators.host.clone(), served.clone()).await?;
    }
    let signal = crate::serve::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let message = tokio::select! {
            signal = &mut signal => {
                errln!("xcs worker {name}: {signal}, draining (at most {})", humantime::format_duration(flags.drain));
                break;
            }
            message = calls.next() => match message {
                Some(message) => message,
                None => break,
            },
            cancel = cancels.next() => {
                let Some(cancel) = cancel else { break };
                let inbox = String::from_utf8_lossy(&cancel.payload).into_owned();
                let stop = running
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&inbox);
                if let Some(stop) = stop {
                    let _ = stop.send(());
                    tracing::info!(target: "xcs::worker", "a call was cancelled by its coordinator");
                    errln!("xcs worker {name}: a call was cancelled by its coordinator");
                } else {
                    // Cancels and calls come on two subscriptions: a cancel
                    // may come first (or be for another worker's call).
                    early.remember(inbox);
                }
                continue;
            }
        };
        let Some(reply_to) = message.reply.clone() else {
            continue; // not a request
        };
        if early.take(reply_to.as_str()) {
            tracing::info!(target: "xcs::worker", "a call was cancelled before it started");
            errln!(
                "xcs worker {name}: a call was cancelled by its coordinator (before it started)"
            );
            continue;
        }
        let client = client.clone();
        let Ok(permit) = taken.clone().try_acquire_owned() else {
            // Busy: say so at once, so the call goes elsewhere.
            let busy = WireReply::Error(WireError {
                kind: "overloaded".into(),
                message: format!(
                    "worker {name} is at its bound of {} calls",
                    flags.max_concurrency
                ),
                operator: None,
                retryable: false,
            });
            let _ = client.publish(reply_to, encode(&busy)).await;
            continue;
        };
        let (operators, served) = (operators.clone(), served.clone());
        let running_places = running_places.clone();
        let worker_name = name.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(reply_to.to_string(), stop);
        let running = running.clone();
        let (watched_running, watched_inbox) = (running.clone(), reply_to.to_string());
        let call = tokio::spawn(async move {
            // Taken: said at once, then every HEARTBEAT while it runs, so
            // that the coordinator can tell a slow call from a lost worker.
            let mut said = async_nats::HeaderMap::new();
            said.insert(KIND_HEADER, "accepted");
            let _ = client
                .publish_with_headers(reply_to.clone(), said, bytes::Bytes::new())
                .await;
            let heartbeats = AbortOnDrop(tokio::spawn({
                let (client, reply_to) = (client.clone(), reply_to.clone());
                async move {
                    let mut every = tokio::time::interval(HEARTBEAT);
                    every.tick().await;
                    loop {
                        every.tick().await;
                        let mut alive = async_nats::HeaderMap::new();
                        alive.insert(KIND_HEADER, "alive");
                        let _ = client
                            .publish_with_headers(reply_to.clone(), alive, bytes::Bytes::new())
                            .await;
                    }
                }
            }));
            let work = async {
                // Waits for a place to run (heartbeats go on meanwhile).
                let Ok(_place) = running_places.acquire().await else {
                    return WireReply::Error(WireError {
                        kind: "cancelled".into(),
                        message: "the worker is stopping".into(),
                        operator: None,
                        retryable: false,
                    });
                };
                match incoming(&operators.payloads, &message, false).await {
                    Ok(body) => serve_call(&operators, &body).await,
                    Err(reason) => WireReply::Error(WireError {
                        kind: "validation".into(),
                        message: reason,
                        operator: None,
                        retryable: false,
                    }),
                }
            };
            // Its span joins the coordinator's trace.
            let span = joined_span(&message);
            // A cancel stops the guest: its call's future is dropped.
            let reply = tokio::select! {
                reply = work.instrument(span) => Some(reply),
                Ok(()) = stopped => None,
            };
            running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(reply_to.as_str());
            let Some(reply) = reply else {
                drop(permit);
                return;
            };
            served.fetch_add(1, Ordering::Relaxed);
            let max_payload = client.server_info().max_payload;
            let sent =
                match outgoing(&operators.payloads, max_payload, encode(&reply).to_vec()).await {
                    Ok((mut headers, body, _)) => {
                        headers.insert(KIND_HEADER, "reply");
                        headers.insert(WORKER_HEADER, worker_name.as_str());
                        client
                            .publish_with_headers(reply_to, headers, body)
                            .await
                            .map_err(|error| error.to_string())
                    }
                    Err(reason) => Err(reason),
                };
            // Alive until the reply is out (a large one goes through the
            // object store first).
            drop(heartbeats);
            if let Err(error) = sent {
                tracing::warn!(target: "xcs::worker", "replying: {error}");
            }
            drop(permit);
        });
        // A call task that panics is reported, not lost: its place is freed
        // as it unwinds, its entry removed here, and its coordinator, hearing
        // no more, sends the call elsewhere.
        tokio::spawn(async move {
            if let Err(error) = call.await
                && error.is_panic()
            {
                watched_running
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&watched_inbox);
                tracing::error!(target: "xcs::worker", "a call's task panicked: {error}");
            }
        });
    }
    // Stop taking calls; finish those in flight within the drain.
    let _ = calls.unsubscribe().await;
    let all = u32::try_from(flags.max_concurrency.saturating_mul(2)).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(flags.drain, taken.acquire_many(all)).await;
    let _ = client.flush().await;
    let served = served.load(Ordering::Relaxed);
    match drained {
        Ok(_) => {
            errln!("xcs worker {name}: served {served} calls, exiting");
            Ok(())
        }
        Err(_) => Err(Error::Cancelled {
            reason: format!(
                "the drain period of {} passed with calls still running ({served} served)",
                humantime::format_duration(flags.drain)
            ),
        }
        .into()),
    }
}

/// The current span's trace context as headers (`traceparent`), by the
/// global propagator (none unless spans are exported).
fn trace_context() -> HashMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut headers = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers);
    });
    headers
}

/// The span of a call on a worker, a child of the coordinator's span
/// whose context the message carries.
fn joined_span(message: &async_nats::Message) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let carried: HashMap<String, String> = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .filter_map(|(name, values)| {
            let value = values.first()?;
            Some((
                name.to_string().to_ascii_lowercase(),
                value.as_str().to_owned(),
            ))
        })
        .collect();
    let traceparent = carried.get("traceparent").cloned().unwrap_or_default();
    let span =
        tracing::debug_span!(target: "xcs::worker", "remote call", traceparent = %traceparent);
    if !traceparent.is_empty() {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&carried)
        });
        let _ = span.set_parent(parent);
    }
    span
}

/// Serves `GET /metrics` at `address`: the worker's host's metrics (its
/// calls, by operator and outcome) and the calls it answered.
async fn serve_metrics(
    address: std::net::SocketAddr,
    name: &str,
    host: Host,
    served: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let address = listener.local_addr().context("the metrics address")?;
    errln!("xcs worker {name}: metrics on http://{address}/metrics");
    let worker = name.to_owned();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (host, served, worker) = (host.clone(), served.clone(), worker.clone());
            async move {
                let text = host.metrics_text();
                let text = text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned();
                let served = served.load(Ordering::Relaxed);
                let escaped = worker.replace('\\', "\\\\").replace('"', "\\\"");
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    format!(
                        "{text}# HELP xcs_worker_calls Calls this worker answered.\n# TYPE xcs_worker_calls counter\nxcs_worker_calls_total{{worker=\"{escaped}\"}} {served}\n# EOF\n"
                    ),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(target: "xcs::worker", "serving metrics: {error}");
        }
    });
    Ok(())
}

/// Cancels of calls not (yet) running here: the last
/// [`EARLY_CANCELS`] of them.
#[derive(Default)]
struct EarlyCancels {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

/// How many cancels of calls not running here a worker remembers.
const EARLY_CANCELS: usize = 4096;

impl EarlyCancels {
    fn remember(&mut self, inbox: String) {
        if self.set.insert(inbox.clone()) {
            self.order.push_back(inbox);
        }
        while self.order.len() > EARLY_CANCELS {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    /// Whether the call replying to `inbox` was cancelled already.
    fn take(&mut self, inbox: &str) -> bool {
        self.set.remove(inbox)
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn encode(reply: &WireReply) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(reply).unwrap_or_else(|error| {
        format!(r#"{{"error":{{"kind":"io","message":"encoding the reply: {error}","operator":null,"retryable":false}}}}"#).into_bytes()
    }))
}

/// One call: decoded, its operator fetched, run here.
async fn serve_call(operators: &Operators, payload: &[u8]) -> WireReply {
    let call: WireCall = match serde_json::from_slice(payload) {
        Ok(call) => call,
        Err(error) => {
            return WireReply::Error(WireError {
                kind: "validation".into(),
                message: format!("a call that does not parse: {error}"),
                operator: None,
                retryable: false,
            });
        }
    };
    let outcome = match operators.get(&call.operator, &call.digest).await {
        Ok(operator) => operator.call(&call.input, &call.limits).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(value) => WireReply::Ok(value),
        Err(error) => WireReply::Error(WireError::of(&error)),
    }
}
