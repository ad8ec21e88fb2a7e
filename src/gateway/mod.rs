//! The gateway: the only code that touches sockets and HTTP.
//!
//! One hyper HTTP/1 connection per accepted socket serves `/ws` (upgraded to a WebSocket
//! [`session`]), the HTTP [`api`], `/healthz`, `/readyz` and `/metrics`.

pub mod accept;
pub mod api;
pub mod ops;
pub mod session;
pub mod wsframe;

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

use accept::{AcceptBackoff, Refuser, SocketSlot};

use crate::broker::Broker;
use crate::config::MIN_HEADER_BYTES;
use crate::protocol::ErrorCode;

pub type Body = Full<Bytes>;

/// Accepts connections until shutdown.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let mut backoff = AcceptBackoff::default();
    let refuser = Refuser::default();
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if let Some(pause) = backoff.failed(&e, Instant::now()) {
                    tokio::select! {
                        _ = broker.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        backoff.succeeded();
        let sessions = broker.hub.connection_count();
        let max = broker.server.max_connections;
        let Some(slot) = broker.open_sockets.take(sessions, max, &broker.metrics.http_connections)
        else {
            broker.metrics.refused_socket_limit.increment(1);
            refuser.refuse(stream, &broker.tracker);
            continue;
        };
        // Frames are written in whole batches; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let tracker = broker.tracker.clone();
        tracker.spawn(connection(broker.clone(), stream, peer, slot));
    }
}

/// Serves one socket's HTTP requests until it closes or becomes a WebSocket; `slot` counts
/// it against `server.max_connections` until then.
async fn connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, slot: SocketSlot) {
    let server = &broker.server;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(server.header_timeout)
        .max_header_size(server.max_header_bytes)
        // The read buffer bounds what an unterminated head can make the broker hold.
        .max_buf_size(server.max_header_bytes.max(MIN_HEADER_BYTES));
    let service = hyper::service::service_fn(|req| handle(broker.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = broker.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    // An upgraded socket is a session now, counted by the hub.
    drop(slot);
    if let Err(e) = result {
        if e.is_timeout() {
            broker.metrics.header_timeouts.increment(1);
        } else if e.is_parse_too_large() {
            broker.metrics.headers_too_large.increment(1);
        }
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

async fn handle(broker: Arc<Broker>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => session::upgrade(broker, req),
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        (&Method::GET, "/readyz") => ready(&broker).await,
        (&Method::GET, "/metrics") => metrics_text(),
        (&Method::POST, "/api/publish") => api::publish(&broker, req).await,
        (&Method::POST, "/api/send") => api::send(&broker, req).await,
        (_, "/ws" | "/healthz" | "/readyz" | "/metrics" | "/api/publish" | "/api/send") => {
            error(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such endpoint"),
    };
    Ok(response)
}

async fn ready(broker: &Broker) -> Response<Body> {
    if broker.shutdown.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, "shutting down");
    }
    match broker.hub.ready().await {
        Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
        Err((name, e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            &format!("backend {name}: {e}"),
        ),
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
pub fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"code":…,"message":…}` with `status`.
pub fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": code.as_str(), "message": message });
    json(status, Bytes::from(body.to_string()))
}
