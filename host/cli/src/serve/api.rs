//! The service's HTTP API (version 1, JSON): its routes, how a request's
//! limits are capped by the service's, and how an error becomes a status
//! and a JSON body.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tracing::Instrument as _;
use xcs::graph::{Graph, RunOptions, RunReport};
use xcs::{Error, ErrorKind, Limits};

use super::Service;
use super::catalog::Served;

/// An error as the API answers it: a status, and
/// `{"kind", "message", "operator", ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    operator: Option<String>,
    /// More fields of the body (an operator error's code, a graph's
    /// problems, a run's node reports).
    more: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            operator: None,
            more: Map::new(),
            retry_after: None,
        }
    }

    /// A request the API cannot read (400).
    pub(crate) fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid-request", message)
    }

    /// No such operator or graph (404).
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// A missing or wrong bearer token (401).
    fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required: `Authorization: Bearer <token>`",
        )
    }

    /// A body over the limit (413).
    fn too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// The service's bound on requests reached (503).
    pub(crate) fn overloaded(in_flight: usize, queued: usize) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "the service is at its bound ({in_flight} requests running and {queued} waiting)"
            ),
        );
        error.retry_after = Some(Duration::from_secs(1));
        error
    }

    /// The service is draining (503).
    fn draining() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cancelled",
            "the service is shutting down",
        );
        error.retry_after = Some(Duration::from_secs(1));
        error
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        self.more.insert(key.to_owned(), value);
        self
    }
}

/// The status of each error kind (the README's table).
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Validation
        | ErrorKind::Operator
        | ErrorKind::Graph
        | ErrorKind::Analysis
        | ErrorKind::Contract
        | ErrorKind::Capability
        | ErrorKind::InvalidComponent => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::CircuitOpen
        | ErrorKind::Overloaded
        | ErrorKind::Cancelled
        | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Config => StatusCode::BAD_REQUEST,
        // fuel, memory, stack-overflow, trap, io: the guest (or the host)
        // failed to answer.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let kind = error.kind();
        let mut api = ApiError::new(status_of(kind), kind.as_str(), error.to_string());
        api.operator = error.operator().map(str::to_owned);
        let mut inner = &error;
        while let Error::Node { node, cause, .. } = inner {
            api.more
                .entry("node")
                .or_insert_with(|| Value::from(node.as_str()));
            inner = cause;
        }
        match inner {
            Error::Operator {
                code, retryable, ..
            } => {
                api = api
                    .with("code", json!(code))
                    .with("retryable", json!(retryable));
            }
            Error::Graph { problems } => {
                let problems: Vec<Value> = problems
                    .iter()
                    .map(|problem| json!({ "node": problem.node, "message": problem.message }))
                    .collect();
                api = api.with("problems", Value::Array(problems));
            }
            Error::CircuitOpen { retry_after, .. } => {
                api.retry_after = Some(*retry_after);
            }
            Error::Overloaded { .. } => api.retry_after = Some(Duration::from_secs(1)),
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("kind".into(), json!(self.kind));
        body.insert("message".into(), json!(self.message));
        if let Some(operator) = self.operator {
            body.insert("operator".into(), json!(operator));
        }
        body.extend(self.more);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, at least one.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// The request's parameters: its query, then `x-xcs-<name>` headers.
struct Params {
    query: HashMap<String, String>,
    headers: HeaderMap,
}

impl Params {
    fn new(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        headers: HeaderMap,
    ) -> Result<Params, ApiError> {
        let Query(query) =
            query.map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
        Ok(Params { query, headers })
    }

    fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        if let Some(value) = self.query.get(name) {
            return Ok(Some(value));
        }
        match self
            .headers
            .get(format!("x-xcs-{}", name.replace('_', "-")))
        {
            None => Ok(None),
            Some(value) => value.to_str().map(Some).map_err(|_| {
                ApiError::invalid_request(format!("the header x-xcs-{name} is not text"))
            }),
        }
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        self.get(name)?
            .map(|text| {
                humantime::parse_duration(text).map_err(|error| {
                    ApiError::invalid_request(format!(
                        "{name}: `{text}` is not a duration: {error}"
                    ))
                })
            })
            .transpose()
    }

    fn size(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)?
            .map(|text| {
                xcs::parse_size(text)
                    .map_err(|error| ApiError::invalid_request(format!("{name}: {error}")))
            })
            .transpose()
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)?
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    ApiError::invalid_request(format!("{name}: `{text}` is not a whole number"))
                })
            })
            .transpose()
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name)? {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(other) => Err(ApiError::invalid_request(format!(
                "{name}: `{other}` is not true or false"
            ))),
        }
    }
}

/// The most a request may ask for: the service's limits. A request can
/// lower each of them, never raise one (a higher value is capped).
#[derive(Clone, Debug)]
pub(crate) struct Maxima {
    pub(crate) timeout: Duration,
    pub(crate) fuel: Option<u64>,
    pub(crate) memory: u64,
    pub(crate) max_input: u64,
    pub(crate) max_output: u64,
    pub(crate) seed: u64,
    pub(crate) graph_timeout: Duration,
    /// The same limits as one `Limits`: the most any call may have.
    pub(crate) most: Limits,
}

impl Maxima {
    /// The limits of a call: the service's, lowered where `params` asks.
    fn limits(&self, params: &Params) -> Result<Limits, ApiError> {
        let timeout = params
            .duration("timeout")?
            .map_or(self.timeout, |asked| asked.min(self.timeout));
        let fuel = match (params.number("fuel")?, self.fuel) {
            (Some(asked), Some(max)) => Some(asked.min(max)),
            (asked, max) => asked.or(max),
        };
        let memory = params
            .size("memory")?
            .map_or(self.memory, |asked| asked.min(self.memory));
        let max_output = params
            .size("max_output")?
            .map_or(self.max_output, |asked| asked.min(self.max_output));
        let seed = params.number("seed")?.unwrap_or(self.seed);
        Ok(Limits::default()
            .timeout(timeout)
            .fuel(fuel)
            .max_memory_bytes(memory)
            .max_input_bytes(self.max_input)
            .max_output_bytes(max_output)
            .seed(seed))
    }

    /// A graph's deadline: the service's, lowered where `params` asks.
    fn graph_timeout(&self, params: &Params) -> Result<Duration, ApiError> {
        Ok(params
            .duration("timeout")?
            .map_or(self.graph_timeout, |asked| asked.min(self.graph_timeout)))
    }
}

/// How long a client may take to send a request's body (it is read once
/// the request is admitted).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A request's body, read whole: at most `limit` bytes, within
/// [`BODY_READ_TIMEOUT`].
async fn read_body(body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let over = std::iter::successors(
                Some(&error as &(dyn std::error::Error + 'static)),
                |error| error.source(),
            )
            .any(|error| error.is::<http_body_util::LengthLimitError>());
            Err(if over {
                ApiError::too_large(limit)
            } else {
                ApiError::invalid_request(format!("reading the body: {error}"))
            })
        }
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid-request",
            format!(
                "the body did not arrive within {}",
                humantime::format_duration(BODY_READ_TIMEOUT)
            ),
        )),
    }
}

/// Bodies up to this size are parsed on the async threads; larger ones
/// on a blocking thread, so that a 64 MiB body does not stop the others.
const PARSE_INLINE_BYTES: usize = 64 << 10;

/// `work` (parsing `bytes` bytes): inline when small, else on a blocking
/// thread.
async fn parse<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if bytes <= PARSE_INLINE_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io",
            format!("parsing the body failed: {error}"),
        )
    })?
}

/// The JSON of a body for `whom` (empty: no arguments).
fn input(bytes: &[u8], whom: &str, max_text: u64) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    crate::io::parse_json(bytes, whom, max_text, "the request body").map_err(ApiError::from)
}

fn describe(name: &str, served: &Served) -> Value {
    let operator = &served.operator;
    let metadata = operator.metadata();
    json!({
        "name": name,
        "version": metadata.version,
        "description": metadata.description,
        "deterministic": metadata.deterministic,
        "composite": operator.is_composite(),
        "signature": operator.signature().to_string(),
        "digest": operator.digest(),
        "file": served.path.file_name().map(|file| file.to_string_lossy()),
    })
}

/// `GET /v1/operators`.
pub(crate) async fn list(State(service): State<Arc<Service>>) -> Json<Value> {
    let catalog = service.catalog();
    let operators: Vec<Value> = catalog
        .iter()
        .map(|(name, served)| describe(name, served))
        .collect();
    Json(json!({ "operators": operators }))
}

/// `GET /v1/operators/{name}`.
pub(crate) async fn show(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult {
    let catalog = service.catalog();
    let served = catalog
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no operator named `{name}` is served")))?;
    Ok(Json(describe(&name, served)).into_response())
}

/// `POST /v1/operators/{name}/call`: the body is the input; the answer is
/// `{"output": ...}`. A composite runs (its calls scheduled by the host).
pub(crate) async fn call(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let params = Params::new(query, headers)?;
    let limits = service.maxima.limits(&params)?;
    let _permit = service.admission.enter().await?;
    let bytes = read_body(body, service.max_body).await?;
    // One catalog for the whole request, whatever a reload does meanwhile.
    let catalog = service.catalog();
    let served = catalog
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no operator named `{name}` is served")))?;
    let max_text = service.maxima.max_input.saturating_mul(4);
    let input = parse(bytes.len(), {
        let name = name.clone();
        move || input(&bytes, &name, max_text)
    })
    .await?;
    let operator = served.operator;
    let output = if operator.is_composite() {
        let composite = catalog.composite(&name, &operator)?;
        // Its calls get the request's limits; the whole run, the graph
        // deadline.
        let options = RunOptions::default()
            .timeout(service.maxima.graph_timeout(&params)?)
            .limits(limits);
        let mut outputs = composite.run(&input, &options).await.into_result()?;
        outputs.remove("output").unwrap_or(Value::Null)
    } else {
        operator.call(&input, &limits).await?
    };
    Ok(Json(json!({ "output": output })).into_response())
}

/// A graph sent in a request: TOML text, or the same as a JSON object.
fn graph_of(value: &Value) -> Result<Graph, ApiError> {
    let graph = match value {
        Value::String(text) => Graph::from_toml(text)?,
        Value::Object(_) => {
            let text = toml::to_string(value).map_err(|error| {
                ApiError::invalid_request(format!("the graph is not a graph file's table: {error}"))
            })?;
            Graph::from_toml(&text)?
        }
        _ => {
            return Err(ApiError::invalid_request(
                "`graph` is the graph file's TOML text or its table as a JSON object",
            ));
        }
    };
    refuse_grants(&graph)?;
    if let Some(node) = graph.nodes().iter().find(|node| node.has_own_limits()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "node `{}`: a graph sent to the service cannot set limits of its own; \
                 ask for lower ones with the request's `timeout`, `fuel` or `memory`",
                node.id()
            ),
        ));
    }
    Ok(graph)
}

/// A graph may not grant: what operators reach is the service's
/// configuration, never a request's.
fn refuse_grants(graph: &Graph) -> Result<(), ApiError> {
    if graph.grants().is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "capability",
            "a graph run by the service cannot carry [grants]: grants come from the service's \
             configuration (--config, --allow-http, --dir, --env)",
        ))
    }
}

/// `POST /v1/graphs/check`: the body is a graph (TOML text, or JSON with
/// `graph`); the answer, its nodes and inputs.
pub(crate) async fn check(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let _permit = service.admission.enter().await?;
    let bytes = read_body(body, service.max_body).await?;
    let (json, max_body) = (is_json(&headers), service.max_body);
    let graph = parse(bytes.len(), move || {
        if json {
            let request = input(&bytes, "graph", max_body)?;
            graph_of(request.get("graph").unwrap_or(&request))
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| ApiError::invalid_request("the graph is not UTF-8 text"))?;
            graph_of(&Value::String(text.to_owned()))
        }
    })
    .await?;
    let catalog = service.catalog();
    let plan = graph.check(catalog.operators())?;
    let inputs: Map<String, Value> = plan
        .inputs()
        .iter()
        .map(|(name, ty)| (name.clone(), json!(ty.to_string())))
        .collect();
    Ok(Json(json!({ "nodes": plan.graph().nodes().len(), "inputs": inputs })).into_response())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

/// `POST /v1/graphs/run`: `{"graph": ..., "input": ...}`; with `dot` or
/// `timeline` set (query), the answer carries them.
pub(crate) async fn run(
    State(service): State<Arc<Service>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let params = Params::new(query, headers)?;
    let _permit = service.admission.enter().await?;
    let bytes = read_body(body, service.max_body).await?;
    let max_body = service.max_body;
    let (graph, inputs) = parse(bytes.len(), move || {
        let request = input(&bytes, "graph", max_body)?;
        let Value::Object(mut request) = request else {
            return Err(ApiError::invalid_request(
                "the body is {\"graph\": ..., \"input\": {...}}",
            ));
        };
        let graph = graph_of(
            request
                .get("graph")
                .ok_or_else(|| ApiError::invalid_request("the body has no `graph`"))?,
        )?;
        Ok((graph, request.remove("input").unwrap_or(Value::Null)))
    })
    .await?;
    run_graph(&service, graph, &inputs, &params).await
}

/// `POST /v1/graphs/{name}/run`: the graph `<name>.toml` of the service's
/// graphs directory; the body is its input.
pub(crate) async fn run_named(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let params = Params::new(query, headers)?;
    let _permit = service.admission.enter().await?;
    let bytes = read_body(body, service.max_body).await?;
    let missing = || ApiError::not_found(format!("no graph named `{name}` is served"));
    let dir = service.graphs.as_ref().ok_or_else(missing)?;
    // A name, not a path: nothing outside the directory.
    if !xcs::is_operator_name(&name) {
        return Err(missing());
    }
    let path = dir.join(format!("{name}.toml"));
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(error) => {
            tracing::warn!(target: "xcs::serve", path = %path.display(), "reading a graph: {error}");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io",
                format!("the graph `{name}` cannot be read"),
            ));
        }
    };
    let graph = Graph::from_toml(&text)?;
    refuse_grants(&graph)?;
    let max_text = service.maxima.max_input.saturating_mul(4);
    let inputs = parse(bytes.len(), {
        let name = name.clone();
        move || input(&bytes, &name, max_text)
    })
    .await?;
    run_graph(&service, graph, &inputs, &params).await
}

/// A run of `graph` (the request already admitted).
async fn run_graph(service: &Service, graph: Graph, inputs: &Value, params: &Params) -> ApiResult {
    let timeout = service.maxima.graph_timeout(params)?;
    let (dot, timeline) = (params.flag("dot")?, params.flag("timeline")?);
    let keep_going = params.flag("keep_going")?;
    let limits = service.maxima.limits(params)?;
    let plan = graph.check(service.catalog().operators())?;
    let options = RunOptions::default()
        .timeout(timeout)
        .keep_going(keep_going)
        .limits(limits);
    let report = plan.run(inputs, &options).await;
    let mut answer = Map::new();
    answer.insert("outputs".into(), Value::Object(report.outputs.clone()));
    answer.insert(
        "nodes".into(),
        serde_json::to_value(&report.nodes).unwrap_or_default(),
    );
    if dot {
        answer.insert("dot".into(), json!(plan.to_dot(Some(&report))));
    }
    if timeline {
        answer.insert("timeline".into(), report.to_timeline());
    }
    finish(report, answer)
}

/// The answer of a run: 200 with `answer`, or the run's error with
/// `answer`'s fields (the node reports, the outputs that were made).
fn finish(report: RunReport, answer: Map<String, Value>) -> ApiResult {
    match report.error {
        None => Ok(Json(Value::Object(answer)).into_response()),
        Some(error) => {
            let mut api = ApiError::from(error);
            for (key, value) in answer {
                api.more.entry(key).or_insert(value);
            }
            Err(api)
        }
    }
}

/// `GET /metrics`: the host's metrics and the service's, in the
/// Prometheus (OpenMetrics) text format.
pub(crate) async fn metrics(State(service): State<Arc<Service>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        service.metrics_text(),
    )
        .into_response()
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while requests are taken; 503 once draining.
pub(crate) async fn readyz(State(service): State<Arc<Service>>) -> Response {
    if service.ready.load(Ordering::Acquire) {
        Json(json!({ "ready": true, "operators": service.catalog().len() })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

/// Every request: refused while draining, its bearer token checked
/// (except health), its declared body length checked before a byte of
/// it is read, and counted by route and status.
pub(crate) async fn guard(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        route = %route,
        status = tracing::field::Empty,
        otel.kind = "server",
    );
    crate::telemetry::adopt_parent(&span, request.headers());
    let response = match admit(&service, &request, &route) {
        Ok(()) => next.run(request).instrument(span.clone()).await,
        Err(error) => error.into_response(),
    };
    span.record("status", response.status().as_u16());
    service.count(&route, response.status().as_u16());
    response
}

fn admit(service: &Service, request: &Request, route: &str) -> Result<(), ApiError> {
    let health = matches!(route, "/healthz" | "/readyz");
    if let Some(token) = &service.token
        && !health
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            return Err(ApiError::unauthorized());
        }
    }
    if service.token.is_none() && !health {
        from_this_machine(request)?;
    }
    if !health && !service.ready.load(Ordering::Acquire) {
        return Err(ApiError::draining());
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > service.max_body) {
        return Err(ApiError::too_large(service.max_body));
    }
    Ok(())
}

/// Without a token, only programs of this machine may call: a request
/// whose `Host` is not a loopback name, or that a browser sent from a page
/// (it has an `Origin`), is refused, so that a web page cannot drive the
/// service (cross-site requests, DNS rebinding).
fn from_this_machine(request: &Request) -> Result<(), ApiError> {
    let forbidden = |message: &str| ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
    if request.headers().contains_key(header::ORIGIN) {
        return Err(forbidden(
            "requests from web pages (with an Origin header) are refused without --token-file",
        ));
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(forbidden(
            "without --token-file the service answers requests for localhost only (the Host header)",
        ))
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != expected.len());
    for (index, byte) in expected.iter().enumerate() {
        difference |= byte ^ given.get(index).copied().unwrap_or(!byte);
    }
    difference == 0
}

/// A method a route does not take (405, JSON).
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid-request",
        "this endpoint does not take that method",
    )
}

/// Any other path (404, JSON).
pub(crate) async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint: see the README's \"Running as a service\"")
}
