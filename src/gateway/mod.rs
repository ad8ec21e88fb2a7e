//! The gateway: the only code that touches sockets and HTTP.
//!
//! One hyper HTTP/1 connection per accepted socket serves `/ws` (upgraded to a WebSocket
//! [`session`]), the HTTP [`api`], `/healthz`, `/readyz` and `/metrics`.

pub mod api;
pub mod ops;
pub mod session;
pub mod wsframe;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::protocol::ErrorCode;

pub type Body = Full<Bytes>;

/// Accepts connections until shutdown.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Frames are written in whole batches; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let tracker = broker.tracker.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(|req| handle(broker.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection ended with an error");
                    }
                }
                _ = broker.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
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
