//! `GET /ws`: checks the handshake, the page's origin, the token and capacity, switches
//! protocols, and hands the raw socket to a [`session`](super::session) once hyper lets go
//! of it.

use std::sync::Arc;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{error, Body};
use crate::auth::{Identity, TokenError};
use crate::node::Node;
use crate::protocol::{wire, ErrorCode};

/// What the upgrade request asked for.
pub(super) struct Params {
    pub(super) identity: Identity,
    pub(super) batch: bool,
    pub(super) channels: Vec<String>,
    /// `?since=channel:offset:epoch,…`: positions to recover from.
    pub(super) since: Vec<String>,
}

/// The query string's parts (`token` may also come in an `Authorization` header).
#[derive(Default)]
struct Query {
    token: Option<String>,
    batch: bool,
    channels: Vec<String>,
    since: Vec<String>,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "token" => q.token = Some(v.into_owned()),
                "batch" => q.batch = v == "1" || v == "true",
                "channel" => {
                    q.channels.extend(v.split(',').filter(|c| !c.is_empty()).map(str::to_string))
                }
                "since" => {
                    q.since.extend(v.split(',').filter(|c| !c.is_empty()).map(str::to_string))
                }
                _ => {}
            }
        }
        q
    }
}

/// Answers `GET /ws`.
pub(super) fn upgrade(node: Arc<Node>, mut req: Request<Incoming>) -> Response<Body> {
    let key = match handshake_key(&req) {
        Ok(key) => key,
        Err(bad) => return bad.response(),
    };
    if let Some(refusal) = foreign_origin(&node, req.headers()) {
        return refusal;
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let token = query.token.or_else(|| bearer(req.headers()));
    let identity = match node.authenticate(token.as_deref()) {
        Ok(identity) => identity,
        Err(e) => return unauthorized(&node, &e),
    };
    if let Some(refusal) = no_room(&node) {
        return refusal;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let params =
        Params { identity, batch: query.batch, channels: query.channels, since: query.since };
    node.spawn(hand_over(node.clone(), on_upgrade, params));
    switching_protocols(&key)
}

/// Why an upgrade request is not one this server takes.
enum BadHandshake {
    NotUpgrade,
    MissingKey,
    BadKey,
    Version,
}

impl BadHandshake {
    fn response(self) -> Response<Body> {
        let bad = |message: &str| error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message);
        match self {
            BadHandshake::NotUpgrade => bad("expected a WebSocket upgrade request"),
            BadHandshake::MissingKey => bad("missing Sec-WebSocket-Key"),
            BadHandshake::BadKey => bad("Sec-WebSocket-Key must be the base64 of 16 bytes"),
            BadHandshake::Version => {
                let mut r = error(
                    StatusCode::UPGRADE_REQUIRED,
                    ErrorCode::BadRequest,
                    "only WebSocket version 13 is supported",
                );
                let thirteen = HeaderValue::from_static("13");
                r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, thirteen);
                r
            }
        }
    }
}

/// The `Sec-WebSocket-Key` of a well-formed version 13 upgrade request.
fn handshake_key(req: &Request<Incoming>) -> Result<HeaderValue, BadHandshake> {
    if !hyper_tungstenite::is_upgrade_request(req) {
        return Err(BadHandshake::NotUpgrade);
    }
    let headers = req.headers();
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(BadHandshake::MissingKey)?;
    if !wire::valid_key(key.as_bytes()) {
        return Err(BadHandshake::BadKey);
    }
    if !version_ok {
        return Err(BadHandshake::Version);
    }
    Ok(key.clone())
}

/// The refusal of a browser page whose origin `server.allowed_origins` does not allow, before
/// anything else about the request is looked at (docs/config.md says why).
fn foreign_origin(node: &Node, headers: &HeaderMap) -> Option<Response<Body>> {
    // Browsers always send Origin on a WebSocket handshake; a client without one is not a
    // browser, so there is no user's ambient credentials for a foreign page to abuse.
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if origin.to_str().is_ok_and(|o| node.server().allowed_origins.allows(o, host)) {
        return None;
    }
    node.metrics().refused_origin.increment(1);
    let shown: String = String::from_utf8_lossy(origin.as_bytes()).chars().take(100).collect();
    tracing::info!(origin = %shown, "websocket upgrade refused: 403, origin not allowed");
    Some(error(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        &format!(
            "origin {shown:?} is not allowed to open WebSockets here (server.allowed_origins)"
        ),
    ))
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// The refusal while shutting down or at `server.max_connections`.
fn no_room(node: &Node) -> Option<Response<Body>> {
    let unavailable =
        |message: &str| error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message);
    if node.is_shutting_down() {
        return Some(unavailable("broker shutting down"));
    }
    if node.connection_count() >= node.server().max_connections {
        node.metrics().refused_capacity.increment(1);
        return Some(unavailable("connection limit reached"));
    }
    None
}

fn unauthorized(node: &Node, e: &TokenError) -> Response<Body> {
    node.metrics().refused_auth.increment(1);
    // Info, not warn: a refused token is the client's problem, but whoever runs the client
    // asks the operator why, and the answer is here.
    tracing::info!(reason = %e, "websocket upgrade refused: 401");
    error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, &e.to_string())
}

fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    r
}

/// Waits for hyper to finish the switch, then runs the session on the raw socket.
async fn hand_over(node: Arc<Node>, on_upgrade: OnUpgrade, params: Params) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream");
            return;
        }
    };
    // Copy what hyper read past the request, then let go of hyper's whole read buffer (it is
    // several KiB that would otherwise live as long as the connection).
    let read_buf = BytesMut::from(&parts.read_buf[..]);
    drop(parts.read_buf);
    super::session::run(node, parts.io.into_inner(), read_buf, params).await;
}
