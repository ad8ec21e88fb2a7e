//! The HTTP API for application servers: `POST /api/publish` and `POST /api/send`.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{error, json, Body};
use crate::node::ops::{self, Caller, OpError};
use crate::node::Node;
use crate::protocol::presence as presence_frames;
use crate::protocol::{position, ErrorCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody<'a> {
    #[serde(borrow)]
    to: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::InvalidChannel | ErrorCode::NoRoute => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn op_error(e: OpError) -> Response<Body> {
    error(status_of(e.code), e.code, &e.message)
}

/// Checks the API key and reads the body.
async fn authorized_body(node: &Node, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    if !node.api_keys().is_configured() {
        return Err(error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the HTTP API is disabled: set auth.api_keys_env in the config",
        ));
    }
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match key {
        Some(k) if node.api_keys().accepts(k) => {}
        Some(_) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "API key not accepted",
            ))
        }
        None => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "missing `Authorization: Bearer <API key>`",
            ))
        }
    }
    read_body(node, req).await
}

/// Reads the body within `server.body_timeout` and `server.max_frame_bytes`. The byte limit
/// is checked as the body arrives (and against a declared Content-Length before any of it),
/// so an oversized body is refused without being held.
async fn read_body(node: &Node, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limit = node.server().max_frame_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            &format!("body over the {limit} byte limit (server.max_frame_bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(closing(too_large()));
    }
    let timeout = node.server().body_timeout;
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(closing(too_large()))
        }
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            &format!("cannot read body: {e}"),
        )),
        Err(_) => {
            node.metrics().body_timeouts.increment(1);
            Err(closing(error(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BadRequest,
                &format!(
                    "body not received within {} ms (server.body_timeout_ms)",
                    timeout.as_millis()
                ),
            )))
        }
    }
}

/// Marks `r` as the connection's last response: the rest of the unread body must not be
/// taken for the next request.
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn bad_json(e: serde_json::Error) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        &format!("body is not the expected JSON: {e}"),
    )
}

pub(super) async fn publish(node: &Node, req: Request<Incoming>) -> Response<Body> {
    let body = match authorized_body(node, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: PublishBody<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(e),
    };
    match ops::publish(node, Caller::Api, &parsed.channel, parsed.data).await {
        Ok(None) => json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
        Ok(Some(position)) => json(StatusCode::OK, position::api_ok_at(&position)),
        Err(e) => op_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    limit: usize,
    #[serde(default)]
    since: Option<u64>,
}

/// `POST /api/history {"channel":C,"limit":L[,"since":N]}`: the same object a WebSocket
/// client's `history` gets.
pub(super) async fn history(node: &Node, req: Request<Incoming>) -> Response<Body> {
    let body = match authorized_body(node, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: HistoryBody<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(e),
    };
    match ops::history(node, Caller::Api, &parsed.channel, parsed.limit, parsed.since).await {
        Ok((name, page)) => json(StatusCode::OK, position::history(None, name.as_str(), &page)),
        Err(e) => op_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default, borrow)]
    cursor: Option<std::borrow::Cow<'a, str>>,
    #[serde(default = "yes")]
    members: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/presence {"channel":C[,"limit":L][,"cursor":X][,"members":false]}`: the same
/// object a WebSocket client's `presence` gets.
pub(super) async fn presence(node: &Node, req: Request<Incoming>) -> Response<Body> {
    let body = match authorized_body(node, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: PresenceBody<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(e),
    };
    let limit = match presence_frames::page_limit(parsed.limit) {
        Ok(limit) if parsed.members => limit,
        Ok(_) => 0,
        Err(m) => return op_error(OpError::new(ErrorCode::BadRequest, m)),
    };
    let cursor = parsed.cursor.as_deref();
    match ops::presence(node, Caller::Api, &parsed.channel, cursor, limit).await {
        Ok((name, roster)) => {
            let answer = presence_frames::answer(None, name.as_str(), &roster, !parsed.members);
            json(StatusCode::OK, answer)
        }
        Err(e) => op_error(e),
    }
}

pub(super) async fn send(node: &Node, req: Request<Incoming>) -> Response<Body> {
    let body = match authorized_body(node, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: SendBody<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(e),
    };
    match ops::send(node, "api", None, &parsed.to, parsed.data).await {
        Ok(()) => json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
        Err(e) => op_error(e),
    }
}
