//! The one HTTP client of the test suites: hyper's HTTP/1.1 client on a fresh connection per
//! request. It needs nothing of switchyard, so the load generator's tests include this file
//! too (`#[path]`).
//!
//! Tests that must send what a real client would not (slowloris, malformed requests, raw
//! upgrades) write their bytes by hand instead; this is for the well-formed requests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long one request may take before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One request on a fresh connection: (status, body). Panics after 10 s or on any error,
/// naming the request.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    tokio::time::timeout(REQUEST_TIMEOUT, try_http(addr, method, path, headers, body))
        .await
        .unwrap_or_else(|_| panic!("timed out: {method} {path}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`http`] without the timeout and the panics, for polling a server that may not be up yet.
pub async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), Error> {
    let (status, _, body) = try_http_response(addr, method, path, headers, body).await?;
    Ok((status, body))
}

/// [`http`] with the response headers: (status, headers, body).
pub async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HeaderMap, String) {
    tokio::time::timeout(REQUEST_TIMEOUT, try_http_response(addr, method, path, headers, body))
        .await
        .unwrap_or_else(|_| panic!("timed out: {method} {path}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn try_http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, HeaderMap, String), Error> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task drives the socket until the response is read; its own error, if
    // any, surfaces through `send_request` or the body.
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path);
    // A test may name its own Host (origin checks compare against it).
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        req = req.header(HOST, addr.to_string());
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}
