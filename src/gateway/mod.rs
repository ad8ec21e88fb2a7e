//! The gateway: the only code that touches sockets and HTTP.
//!
//! One hyper HTTP/1 connection per accepted socket serves `/ws` ([`upgrade`]d to a WebSocket
//! [`session`]), the HTTP [`api`], `/healthz`, `/readyz`, `/metrics` and, when configured, the
//! [`demo`] page. It sees the broker only through [`Node`]'s methods.

pub(crate) mod accept;
mod api;
mod demo;
mod keepalive;
mod session;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use accept::{AcceptBackoff, OpenSockets, Refuser, SocketSlot};

use crate::config::MIN_HEADER_BYTES;
use crate::node::Node;
use crate::protocol::ErrorCode;

pub(crate) type Body = Full<Bytes>;

/// Accepts connections until shutdown; `open_sockets` counts those not (yet) sessions.
pub(crate) async fn serve(node: Arc<Node>, listener: TcpListener, open_sockets: OpenSockets) {
    let mut backoff = AcceptBackoff::default();
    let refuser = Refuser::default();
    loop {
        let accepted = tokio::select! {
            _ = node.shutting_down() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if let Some(pause) = backoff.failed(&e, Instant::now()) {
                    tokio::select! {
                        _ = node.shutting_down() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        backoff.succeeded();
        let sessions = node.connection_count();
        let max = node.server().max_connections;
        let Some(slot) = open_sockets.take(sessions, max, &node.metrics().http_connections) else {
            node.metrics().refused_socket_limit.increment(1);
            refuser.refuse(stream, &node);
            continue;
        };
        // Frames are written in whole batches; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        node.spawn(connection(node.clone(), stream, peer, slot));
    }
}

/// Serves one socket's HTTP requests until it closes or becomes a WebSocket; `slot` counts
/// it against `server.max_connections` until then.
async fn connection(node: Arc<Node>, stream: TcpStream, peer: SocketAddr, slot: SocketSlot) {
    let server = node.server();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(server.header_timeout)
        .max_header_size(server.max_header_bytes)
        // The read buffer bounds what an unterminated head can make the broker hold.
        .max_buf_size(server.max_header_bytes.max(MIN_HEADER_BYTES));
    let service = hyper::service::service_fn(|req| handle(node.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = node.shutting_down() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    // An upgraded socket is a session now, counted by the hub.
    drop(slot);
    if let Err(e) = result {
        if e.is_timeout() {
            node.metrics().header_timeouts.increment(1);
        } else if e.is_parse_too_large() {
            node.metrics().headers_too_large.increment(1);
        }
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => upgrade::upgrade(node, req),
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        (&Method::GET, "/readyz") => ready(&node).await,
        (&Method::GET, "/metrics") => metrics_text(),
        (&Method::POST, "/api/publish") => api::publish(&node, req).await,
        (&Method::POST, "/api/send") => api::send(&node, req).await,
        (&Method::POST, "/api/history") => api::history(&node, req).await,
        (&Method::POST, "/api/presence") => api::presence(&node, req).await,
        (
            _,
            "/ws" | "/healthz" | "/readyz" | "/metrics" | "/api/publish" | "/api/send"
            | "/api/history" | "/api/presence",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest, "method not allowed"),
        _ if node.server().demo_page && demo::serves(&path) => demo::answer(req.method(), &path),
        _ => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such endpoint"),
    };
    Ok(response)
}

async fn ready(node: &Node) -> Response<Body> {
    if node.is_shutting_down() {
        return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, "shutting down");
    }
    match node.ready().await {
        Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, &why),
    }
}

fn metrics_text() -> Response<Body> {
    let text = crate::metrics::prometheus().map(|h| h.render()).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"code":…,"message":…}` with `status`.
pub(crate) fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": code.as_str(), "message": message });
    json(status, Bytes::from(body.to_string()))
}
