//! A small HTTP/1.1 server on 127.0.0.1 (a random port), for the tests
//! of granted HTTP: a real server over real TCP, with routes for what the
//! tests need (a slow answer, a large body, a redirect) and an
//! OpenAI-compatible chat endpoint that checks its bearer token.
//!
//! Routes (every response closes its connection):
//! - `GET /hello`: `hello from the mock server`;
//! - `GET /bytes/N`: N bytes of `x`, with a `content-length`; `HEAD
//!   /bytes/N`: the same head, no body;
//! - `GET /chunked/N`: N bytes of `x`, chunked (no length known ahead);
//! - `GET /slow/MS`: `slow`, after MS milliseconds;
//! - `GET /redirect?to=URL`: a 302 to URL;
//! - `POST /v1/chat/completions`: a chat completion whose content is
//!   `echo: ` and the last message's, if `authorization` is
//!   `Bearer <key>` (else 401);
//! - anything else: 404; what is not HTTP at all (a TLS handshake): 400.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running mock server; stopped when dropped.
#[derive(Debug)]
pub struct MockServer {
    address: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts a server on 127.0.0.1 at a free port; the chat endpoint
    /// accepts `key`. Call from within a tokio runtime.
    pub async fn start(key: &str) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let key: Arc<str> = Arc::from(key);
        let task = tokio::spawn({
            let requests = requests.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (requests, key) = (requests.clone(), key.clone());
                    tokio::spawn(async move {
                        requests.fetch_add(1, Ordering::Relaxed);
                        // A client that goes away is not the server's error.
                        let _ = serve(stream, &key).await;
                    });
                }
            }
        });
        Ok(MockServer {
            address,
            requests,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Connections it has accepted (one per request).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most of a request the server reads.
const MAX_REQUEST: usize = 1 << 20;

async fn serve(mut stream: TcpStream, key: &str) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 || buffer.len() > MAX_REQUEST {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        // What is not HTTP (a TLS client hello) gets a 400, as from a
        // real server, rather than a wait for a head that never comes.
        if !buffer[0].is_ascii_uppercase() {
            return respond(&mut stream, 400, &[], b"not HTTP").await;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    let mut authorization = String::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length.min(MAX_REQUEST) {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    match (method.as_str(), path) {
        ("GET", "/hello") => respond(&mut stream, 200, &[], b"hello from the mock server").await,
        ("GET", _) if number("/bytes/").is_some() => {
            let size = number("/bytes/").unwrap_or(0) as usize;
            respond(&mut stream, 200, &[], &vec![b'x'; size]).await
        }
        ("HEAD", _) if number("/bytes/").is_some() => {
            let size = number("/bytes/").unwrap_or(0);
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.shutdown().await
        }
        ("GET", _) if number("/chunked/").is_some() => {
            let mut left = number("/chunked/").unwrap_or(0) as usize;
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await?;
            let piece = vec![b'x'; 16 * 1024];
            while left > 0 {
                let size = left.min(piece.len());
                stream.write_all(format!("{size:x}\r\n").as_bytes()).await?;
                stream.write_all(&piece[..size]).await?;
                stream.write_all(b"\r\n").await?;
                left -= size;
            }
            stream.write_all(b"0\r\n\r\n").await
        }
        ("GET", _) if number("/slow/").is_some() => {
            tokio::time::sleep(Duration::from_millis(number("/slow/").unwrap_or(0))).await;
            respond(&mut stream, 200, &[], b"slow").await
        }
        ("GET", "/redirect") => {
            let to = query.strip_prefix("to=").unwrap_or_default();
            respond(&mut stream, 302, &[("location", to)], b"").await
        }
        ("POST", "/v1/chat/completions") => {
            if authorization != format!("Bearer {key}") {
                return respond(&mut stream, 401, &[], br#"{"error":"bad key"}"#).await;
            }
            let request: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let last = request["messages"]
                .as_array()
                .and_then(|messages| messages.last())
                .and_then(|message| message["content"].as_str())
                .unwrap_or_default();
            let answer = serde_json::json!({
                "object": "chat.completion",
                "model": request["model"],
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": format!("echo: {last}") },
                    "finish_reason": "stop",
                }],
            });
            respond(
                &mut stream,
                200,
                &[("content-type", "application/json")],
                answer.to_string().as_bytes(),
            )
            .await
        }
        _ => respond(&mut stream, 404, &[], b"not found").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A [`MockServer`] on a runtime of its own, for tests that are not
/// async (the CLI's); stopped when dropped.
#[derive(Debug)]
pub struct BackgroundServer {
    server: Option<MockServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BackgroundServer {
    /// Starts a server (see [`MockServer::start`]) on its own thread.
    pub fn start(key: &str) -> std::io::Result<BackgroundServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let server = runtime.block_on(MockServer::start(key))?;
        Ok(BackgroundServer {
            server: Some(server),
            runtime: Some(runtime),
        })
    }

    /// The server.
    pub fn server(&self) -> &MockServer {
        self.server.as_ref().expect("running until dropped")
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        // The server's task is aborted inside its runtime, then the
        // runtime stops.
        if let Some(runtime) = self.runtime.take() {
            let guard = runtime.enter();
            drop(self.server.take());
            drop(guard);
            runtime.shutdown_background();
        }
    }
}
