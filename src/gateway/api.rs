//! The HTTP API for application servers: `POST /api/publish` and `POST /api/send`.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ops::{self, Caller, OpError};
use super::{error, json, Body};
use crate::broker::Broker;
use crate::protocol::ErrorCode;

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

/// Checks the API key and reads the body (bounded by `server.max_frame_bytes`).
async fn authorized_body(broker: &Broker, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    if !broker.api_keys.is_configured() {
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
        Some(k) if broker.api_keys.accepts(k) => {}
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
    let limit = broker.server.max_frame_bytes;
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            &format!("body over the {limit} byte limit (server.max_frame_bytes)"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            &format!("cannot read body: {e}"),
        )),
    }
}

fn bad_json(e: serde_json::Error) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        &format!("body is not the expected JSON: {e}"),
    )
}

pub async fn publish(broker: &Broker, req: Request<Incoming>) -> Response<Body> {
    let body = match authorized_body(broker, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: PublishBody<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(e),
    };
    match ops::publish(broker, Caller::Api, &parsed.channel, parsed.data).await {
        Ok(()) => json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
        Err(e) => op_error(e),
    }
}

pub async fn send(broker: &Broker, req: Request<Incoming>) -> Response<Body> {
    let body = match authorized_body(broker, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: SendBody<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(e),
    };
    match ops::send(broker, "api", None, &parsed.to, parsed.data).await {
        Ok(()) => json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
        Err(e) => op_error(e),
    }
}
