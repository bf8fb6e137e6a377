//! Outgoing HTTP of one call (`wasi:http/outgoing-handler`): each request
//! is admitted against the operator's [`HttpGrant`] (its allow-list and
//! per-call cap), resolved and checked address by address, then sent over
//! a connection to exactly the addresses checked, within the grant's
//! timeout and what is left of the call's deadline, with its response body
//! capped. Every refusal fails inside the guest with a WASI HTTP error
//! code, and is counted and logged with the operator and the destination.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types as http_types};
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;
use wasmtime_wasi_http::{
    Error as WasiHttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use super::StoreState;
use crate::grants::http::{Destination, Host, Scheme, is_public};
use crate::grants::{DEFAULT_MAX_REQUESTS, Grants, HttpGrant};
use crate::metrics::HttpCounters;

/// The function a traced composite must not reach.
const HANDLE: &str = "wasi:http/outgoing-handler#handle";
/// The instance `handle` is linked in.
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.12";
/// The instance `http-error-code` is linked in.
const TYPES: &str = "wasi:http/types@0.2.12";

/// The HTTP side of one call's store, made at the guest's first
/// `wasi:http` call.
pub(crate) struct HttpState {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl HttpState {
    pub(crate) fn new(
        grants: Option<Arc<Grants>>,
        operator: Arc<str>,
        deadline: Instant,
        counters: HttpCounters,
    ) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                grants,
                operator,
                deadline,
                counters,
                attempts: 0,
            },
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (grants, operator) = (&self.grants, &self.log.operator);
        let (deadline, counters) = (self.deadline, &self.http_counters);
        let state = self.http.get_or_insert_with(|| {
            HttpState::new(grants.clone(), operator.clone(), deadline, counters.clone())
        });
        WasiHttpCtxView {
            ctx: &mut state.ctx,
            table: &mut self.table,
            hooks: &mut state.hooks,
        }
    }
}

/// Links `wasi:http/types` and `wasi:http/outgoing-handler` (0.2); a
/// request from a composite being traced stops the trace instead of being
/// sent.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<StoreState>,
) -> wasmtime::Result<()> {
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    http_types::add_to_linker::<StoreState, wasmtime_wasi_http::WasiHttp>(
        linker,
        &options.into(),
        StoreState::http,
    )?;
    // wasmtime-wasi-http 48 finds the code of a response-body error only
    // if it is a p2 `error-code`, and bodies fail with its own `Error`:
    // this one finds both, so a body over the cap is
    // `http-response-body-size` in the guest, not an anonymous I/O error.
    linker.allow_shadowing(true);
    let shadowed = linker.instance(TYPES)?.func_wrap(
        "http-error-code",
        |store: wasmtime::StoreContextMut<'_, StoreState>,
         (error,): (Resource<http_types::IoError>,)| {
            let error = store.data().table.get(&error)?;
            Ok((error_code(error),))
        },
    );
    linker.allow_shadowing(false);
    shadowed?;
    // Not the generated `add_to_linker`: `handle` asks the composite first.
    // The version is the one wasmtime-wasi-http's WIT has; guests' 0.2.x
    // imports link to it (semver).
    let mut instance = linker.instance(OUTGOING_HANDLER)?;
    instance.func_wrap(
        "handle",
        |mut store: wasmtime::StoreContextMut<'_, StoreState>,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<RequestOptions>>,
        )| {
            let state = store.data_mut();
            state.before_capability(HANDLE)?;
            match outgoing_handler::Host::handle(&mut state.http(), request, options) {
                Ok(future) => Ok((Ok::<_, http_types::ErrorCode>(future),)),
                Err(error) => Ok((Err(error.downcast()?),)),
            }
        },
    )
}

/// The WASI HTTP error code of a stream's I/O error, if it is an HTTP one.
fn error_code(error: &wasmtime::Error) -> Option<http_types::ErrorCode> {
    use http_types::ErrorCode;
    if let Some(code) = error.downcast_ref::<ErrorCode>() {
        return Some(code.clone());
    }
    // What a response body of ours fails with (see `CappedBody`).
    Some(match error.downcast_ref::<WasiHttpError>()? {
        WasiHttpError::HttpResponseBodySize(size) => ErrorCode::HttpResponseBodySize(*size),
        WasiHttpError::ConnectionReadTimeout => ErrorCode::ConnectionReadTimeout,
        WasiHttpError::HttpResponseIncomplete => ErrorCode::HttpResponseIncomplete,
        WasiHttpError::ConnectionTerminated => ErrorCode::ConnectionTerminated,
        WasiHttpError::Hyper(error) if error.is_incomplete_message() => {
            ErrorCode::HttpResponseIncomplete
        }
        WasiHttpError::Hyper(error) if error.is_timeout() => ErrorCode::HttpResponseTimeout,
        WasiHttpError::Hyper(_) => ErrorCode::HttpProtocolError,
        other => ErrorCode::InternalError(Some(other.to_string())),
    })
}

/// What one call's requests are checked against, and what they used.
struct Hooks {
    grants: Option<Arc<Grants>>,
    operator: Arc<str>,
    deadline: Instant,
    counters: HttpCounters,
    /// Requests the guest made, let through or not.
    attempts: u32,
}

/// A request let through, and how it may go.
struct Admitted {
    destination: Destination,
    /// For the logs: scheme and authority as the guest wrote them.
    origin: String,
    operator: Arc<str>,
    counters: HttpCounters,
    timeout: Duration,
    /// The call's deadline: no step of the request waits past it.
    deadline: tokio::time::Instant,
    max_response_bytes: u64,
    private_addresses: bool,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), WasiHttpError>> + Send>,
    ),
    WasiHttpError,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), WasiHttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        match self.admit(&request) {
            Ok(admitted) => Box::new(send(request, options, admitted)),
            Err(error) => Box::new(std::future::ready(Err(error))),
        }
    }
}

impl Hooks {
    fn grant(&self) -> Option<&HttpGrant> {
        self.grants
            .as_deref()
            .map(Grants::http_grant)
            .filter(|grant| grant.is_granted())
    }

    /// Lets `request` through, or says why not (counted and logged).
    fn admit(&mut self, request: &http::Request<WasiBody>) -> Result<Admitted, WasiHttpError> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or_default();
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        // User information (`user:password@`) never reaches a log.
        let shown = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let origin = format!("{scheme}://{shown}");
        let cap = self
            .grant()
            .map_or(DEFAULT_MAX_REQUESTS, HttpGrant::requests_cap);
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts > cap {
            self.counters.denied();
            // Once per call: a guest looping on refusals does not flood
            // the log.
            if self.attempts == cap.saturating_add(1) {
                denied(
                    &self.operator,
                    &origin,
                    &format!("past the cap of {cap} requests per call (later ones not logged)"),
                );
            }
            return Err(WasiHttpError::ConnectionLimitReached);
        }
        let destination = match Destination::of(scheme, authority) {
            Ok(destination) => destination,
            Err(why) => {
                self.counters.denied();
                denied(&self.operator, &origin, &format!("no destination: {why}"));
                return Err(WasiHttpError::HttpRequestUriInvalid);
            }
        };
        let Some(grant) = self
            .grant()
            .filter(|grant| grant.matching(&destination).is_some())
        else {
            self.counters.denied();
            denied(&self.operator, &origin, "not on the allow-list");
            return Err(WasiHttpError::HttpRequestDenied);
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        let admitted = Admitted {
            timeout: grant.request_timeout().min(left),
            deadline: tokio::time::Instant::from_std(self.deadline),
            max_response_bytes: grant.response_bytes_cap(),
            private_addresses: grant.allows_private_addresses(),
            destination,
            origin,
            operator: self.operator.clone(),
            counters: self.counters.clone(),
        };
        self.counters.request();
        Ok(admitted)
    }
}

/// Logs a refused request.
fn denied(operator: &str, origin: &str, why: &str) {
    tracing::warn!(
        target: "xcs::http",
        operator,
        destination = origin,
        "outgoing HTTP request denied: {why}"
    );
}

/// The guest's timeout for one step, within the grant's.
fn step_timeout(granted: Duration, guest: Option<Duration>) -> Duration {
    guest.map_or(granted, |guest| guest.min(granted))
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// Sends an admitted request; what `default_send_request` does, but to the
/// checked addresses only, and with the body capped.
async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    admitted: Admitted,
) -> SendResult {
    let options = options.unwrap_or_default();
    let connect_timeout = step_timeout(admitted.timeout, options.connect_timeout);
    let first_byte_timeout = step_timeout(admitted.timeout, options.first_byte_timeout);
    let between_bytes_timeout = step_timeout(admitted.timeout, options.between_bytes_timeout);
    // Each step within its own timeout and, all of them, within the
    // call's deadline.
    let deadline = admitted.deadline;
    let by = move |timeout: Duration| (tokio::time::Instant::now() + timeout).min(deadline);
    let connect_by = by(connect_timeout);

    let addresses = addresses(&admitted, connect_by).await?;
    let stream = tokio::time::timeout_at(connect_by, connect(&addresses))
        .await
        .map_err(|_| WasiHttpError::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = match admitted.destination.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => {
            let name = match &admitted.destination.host {
                Host::Ip(ip) => rustls::pki_types::ServerName::from(*ip),
                Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| WasiHttpError::HttpRequestUriInvalid)?,
            };
            let tls = tokio_rustls::TlsConnector::from(tls_config()).connect(name, stream);
            let tls = tokio::time::timeout_at(connect_by, tls)
                .await
                .map_err(|_| WasiHttpError::ConnectionTimeout)?
                .map_err(WasiHttpError::Tls)?;
            Box::new(tls)
        }
    };
    let (mut sender, connection) = tokio::time::timeout_at(
        connect_by,
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| WasiHttpError::ConnectionTimeout)??;

    // A response to HEAD says the length of a body it does not carry.
    let head = request.method() == http::Method::HEAD;
    // The request line carries the path only: scheme and authority are
    // for proxies (the `host` header says the authority).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    *request.uri_mut() =
        http::Uri::try_from(path).map_err(|_| WasiHttpError::HttpRequestUriInvalid)?;

    // The connection's I/O is driven while the response is awaited.
    let mut connection = Some(connection);
    let mut response = std::pin::pin!(tokio::time::timeout_at(
        by(first_byte_timeout),
        sender.send_request(request)
    ));
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = response.as_mut().poll(cx) {
            return Poll::Ready(response);
        }
        if let Some(io) = connection.as_mut() {
            let ended = ready!(Pin::new(io).poll(cx));
            connection = None;
            if let Err(error) = ended {
                return Poll::Ready(Ok(Err(error)));
            }
            return response.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
    .map_err(|_| WasiHttpError::ConnectionReadTimeout)??;

    let cap = admitted.max_response_bytes;
    let bodiless = head
        || response.status() == http::StatusCode::NO_CONTENT
        || response.status() == http::StatusCode::NOT_MODIFIED;
    if !bodiless
        && let Some(length) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        && length > cap
    {
        too_large(&admitted, length);
        return Err(WasiHttpError::HttpResponseBodySize(Some(length)));
    }
    tracing::debug!(
        target: "xcs::http",
        operator = &*admitted.operator,
        destination = admitted.origin,
        status = response.status().as_u16(),
        "outgoing HTTP request"
    );
    let response = response.map(|incoming| {
        CappedBody {
            incoming,
            read: 0,
            cap,
            between_bytes_timeout,
            idle: Box::pin(tokio::time::sleep_until(by(between_bytes_timeout))),
            admitted,
        }
        .boxed_unsync()
    });
    let rest = async move {
        match connection {
            Some(connection) => connection.await.map_err(WasiHttpError::from),
            None => Ok(()),
        }
    };
    Ok((response, Box::new(rest)))
}

/// Where to connect: the IP literal as written, or the name's addresses
/// that may be reached (public ones, unless private ones are allowed).
async fn addresses(
    admitted: &Admitted,
    by: tokio::time::Instant,
) -> Result<Vec<SocketAddr>, WasiHttpError> {
    let port = admitted.destination.port;
    let name = match &admitted.destination.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(name) => name,
    };
    let resolved = tokio::time::timeout_at(by, resolve(name.clone(), port))
        .await
        .map_err(|_| WasiHttpError::DnsTimeout)??;
    let usable: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|address| admitted.private_addresses || is_public(address.ip()))
        .collect();
    if usable.is_empty() {
        if resolved.is_empty() {
            return Err(WasiHttpError::DestinationNotFound);
        }
        admitted.counters.denied();
        let shown: Vec<String> = resolved
            .iter()
            .map(|address| address.ip().to_string())
            .collect();
        denied(
            &admitted.operator,
            &admitted.origin,
            &format!(
                "{name} resolves to non-public addresses only ({}); \
                 `http-private-addresses = true` allows them",
                shown.join(", ")
            ),
        );
        return Err(WasiHttpError::DestinationIpProhibited);
    }
    Ok(usable)
}

/// Name lookups at once, in the whole process: each is `getaddrinfo` on a
/// blocking thread, which a timeout cannot stop, so that a guest allowed
/// a slow domain cannot fill the blocking pool (that WASI file access
/// uses too) with lookups that outlive its call.
const MAX_LOOKUPS: usize = 32;

/// The addresses of `name`, looked up on a blocking thread that holds one
/// of [`MAX_LOOKUPS`] places until the lookup returns, timed out or not.
async fn resolve(name: String, port: u16) -> Result<Vec<SocketAddr>, WasiHttpError> {
    static LOOKUPS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
        std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)));
    let place = LOOKUPS
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| WasiHttpError::DnsTimeout)?;
    let lookup = tokio::task::spawn_blocking(move || {
        let _place = place;
        std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
            .map(Iterator::collect::<Vec<SocketAddr>>)
    });
    match lookup.await {
        Ok(Ok(addresses)) => Ok(addresses),
        Ok(Err(error)) => Err(WasiHttpError::DnsError {
            rcode: Some(error.to_string()),
            info_code: None,
        }),
        Err(_) => Err(WasiHttpError::DnsError {
            rcode: Some("the lookup failed".into()),
            info_code: None,
        }),
    }
}

/// A connection to the first of `addresses` that answers.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, WasiHttpError> {
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(match last {
        Some(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            WasiHttpError::ConnectionRefused
        }
        Some(error) => WasiHttpError::Connect(error),
        None => WasiHttpError::DestinationNotFound,
    })
}

/// The TLS client configuration: the Mozilla root certificates of
/// `webpki-roots`, no client certificate.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                // The ring provider supports the default versions.
                .unwrap_or_else(|_| rustls::ClientConfig::builder())
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        })
        .clone()
}

fn too_large(admitted: &Admitted, bytes: u64) {
    tracing::warn!(
        target: "xcs::http",
        operator = &*admitted.operator,
        destination = admitted.origin,
        "outgoing HTTP response refused: its body of {bytes} bytes or more is over the cap of {} bytes",
        admitted.max_response_bytes
    );
}

/// A response body that fails once more than `cap` bytes came, or when
/// the next piece is later than `between_bytes_timeout`.
struct CappedBody {
    incoming: hyper::body::Incoming,
    read: u64,
    cap: u64,
    between_bytes_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    admitted: Admitted,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = WasiHttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, WasiHttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(WasiHttpError::from(error)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read = this.read.saturating_add(data.len() as u64);
                    if this.read > this.cap {
                        too_large(&this.admitted, this.read);
                        return Poll::Ready(Some(Err(WasiHttpError::HttpResponseBodySize(Some(
                            this.read,
                        )))));
                    }
                }
                let next = (tokio::time::Instant::now() + this.between_bytes_timeout)
                    .min(this.admitted.deadline);
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(WasiHttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
