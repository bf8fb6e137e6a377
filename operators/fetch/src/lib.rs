//! Example operator `fetch`: one HTTP request through
//! `wasi:http/outgoing-handler`, which the host lets through only to the
//! origins granted to it (`--allow-http`, or `http = [...]` in a grants
//! file).
//!
//! The pattern of a model-calling operator: the API key comes from a
//! granted environment variable (`bearer-env`), never from the input.

use sha2::{Digest, Sha256};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;
use xcs_guest::Error;

/// The most redirects followed, whatever `follow` says.
const MAX_REDIRECTS: u32 = 10;
/// The most of a body returned as `text`.
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Requests `url` (`method`, default `GET`, with `body` if given, sent as
/// JSON; with `Authorization: Bearer <value of the variable bearer-env>`
/// if given), following up to `follow` redirects (default 0, at most 10),
/// each of them a request the host checks again. Returns the last
/// response's status, its body's size and SHA-256, its body as `text`
/// when it is UTF-8 and at most 64 KiB, and the redirects followed.
///
/// Errors: `denied` when the host refused a destination
/// (`http-request-denied`, `destination-ip-prohibited`,
/// `connection-limit-reached`), `http` for any other WASI HTTP error code
/// (its name in the message), `invalid-input` for a URL it cannot send.
#[xcs_guest::operator(
    types = "record fetched { status: u16, bytes: u64, sha256: string, text: option<string>, redirects: u32 }"
)]
fn fetch(
    url: String,
    method: Option<String>,
    body: Option<String>,
    bearer_env: Option<String>,
    follow: Option<u32>,
) -> Result<Fetched, Error> {
    let bearer = match bearer_env {
        Some(name) => Some(std::env::var(&name).map_err(|_| {
            Error::invalid_input(format!("the environment variable `{name}` is not granted"))
        })?),
        None => None,
    };
    let method = method.unwrap_or_else(|| "GET".into());
    let mut url = url;
    let mut redirects = 0;
    loop {
        let response = request(&url, &method, body.as_deref(), bearer.as_deref())?;
        let follow_it = matches!(response.status, 301 | 302 | 303 | 307 | 308)
            && redirects < follow.unwrap_or(0).min(MAX_REDIRECTS);
        match response.location {
            Some(location) if follow_it => {
                url = resolve(&url, &location)?;
                redirects += 1;
            }
            _ => {
                let bytes = response.body.len() as u64;
                let sha256 = Sha256::digest(&response.body)
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                let text = (response.body.len() <= MAX_TEXT_BYTES)
                    .then(|| String::from_utf8(response.body).ok())
                    .flatten();
                return Ok(Fetched {
                    status: response.status,
                    bytes,
                    sha256,
                    text,
                    redirects,
                });
            }
        }
    }
}

struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// `scheme`, `authority` and `path?query` of an absolute http(s) URL.
fn split(url: &str) -> Result<(Scheme, &str, &str), Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::invalid_input(format!("`{url}` is not an absolute URL")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    Ok((scheme, authority, path))
}

/// `location` made absolute against `base`.
fn resolve(base: &str, location: &str) -> Result<String, Error> {
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let (scheme, authority, _) = split(base)?;
    let scheme = match scheme {
        Scheme::Http => "http",
        _ => "https",
    };
    if let Some(path) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{path}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    Err(Error::invalid_input(format!(
        "a relative redirect `{location}` is not supported"
    )))
}

fn http_error(url: &str, code: &ErrorCode) -> Error {
    let kind = match code {
        ErrorCode::HttpRequestDenied
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::ConnectionLimitReached => "denied",
        _ => "http",
    };
    Error::new(kind, format!("{url}: {code:?}"))
}

fn request(
    url: &str,
    method: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> Result<Response, Error> {
    let (scheme, authority, path) = split(url)?;
    let headers = Fields::new();
    let bad_header = |_| Error::invalid_input("a header the host refuses");
    if let Some(token) = bearer {
        headers
            .append("authorization", format!("Bearer {token}").as_bytes())
            .map_err(bad_header)?;
    }
    if let Some(body) = body {
        headers
            .append("content-type", b"application/json")
            .map_err(bad_header)?;
        // A known length rather than a chunked body: what every server
        // (and the tests' mock) reads.
        headers
            .append("content-length", body.len().to_string().as_bytes())
            .map_err(bad_header)?;
    }
    let request = OutgoingRequest::new(headers);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| Error::invalid_input(format!("{url}: not a valid {what}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let outgoing = request
        .body()
        .map_err(|()| Error::new("http", "the request body was taken"))?;
    let future = outgoing_handler::handle(request, None).map_err(|code| http_error(url, &code))?;
    {
        let stream = outgoing
            .write()
            .map_err(|()| Error::new("http", "the request body stream was taken"))?;
        for chunk in body.unwrap_or_default().as_bytes().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| stream_error(url, error))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|code| http_error(url, &code))?;

    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => return Err(http_error(url, &code)),
            Some(Err(())) => return Err(Error::new("http", "the response was taken twice")),
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .into_iter()
        .next()
        .and_then(|value| String::from_utf8(value).ok());
    let incoming = response
        .consume()
        .map_err(|()| Error::new("http", "the response body was taken"))?;
    let body = read_body(url, &incoming)?;
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        location,
        body,
    })
}

fn read_body(url: &str, incoming: &IncomingBody) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .map_err(|()| Error::new("http", "the response body stream was taken"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(error) => return Err(stream_error(url, error)),
        }
    }
}

fn stream_error(url: &str, error: StreamError) -> Error {
    match error {
        StreamError::LastOperationFailed(error) => {
            match wasi::http::types::http_error_code(&error) {
                Some(code) => http_error(url, &code),
                None => Error::new("http", format!("{url}: {}", error.to_debug_string())),
            }
        }
        StreamError::Closed => Error::new("http", format!("{url}: the stream closed")),
    }
}
