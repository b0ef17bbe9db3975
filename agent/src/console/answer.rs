//! What every operation answers with: JSON, or a refusal (`{"error": "..."}` and its status);
//! and what they share: the token check, asking the engine loop, the blocking pool, bounded
//! text arguments.

use super::auth::{Denied, Need};
use super::{Api, Query};
use crate::server::{Response, respond};
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::time::Duration;

/// Longest wait for the engine loop's answer (it answers between two inputs).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `q`, `rule`, `key` or `by` argument.
const MAX_ARG: usize = 256;

pub(super) type Answer = Result<Response, Refusal>;

/// A request refused: its status and why, answered as `{"error": "..."}`.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    pub(super) fn into_response(self) -> Response {
        let mut r = reply(self.status, &json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

pub(super) fn reply(status: StatusCode, body: &Value) -> Response {
    respond(status.as_u16(), "application/json", body.to_string())
}

/// 200 with `body` serialized as it is (no intermediate JSON values).
pub(super) fn json_answer(body: &impl serde::Serialize) -> Response {
    respond(200, "application/json", serde_json::to_string(body).unwrap_or_default())
}

pub(super) fn ok(body: &Value) -> Answer {
    Ok(reply(StatusCode::OK, body))
}

pub(super) fn fail(status: StatusCode, message: impl std::fmt::Display) -> Refusal {
    Refusal { status, message: message.to_string() }
}

pub(super) fn bad(message: impl std::fmt::Display) -> Refusal {
    fail(StatusCode::BAD_REQUEST, message)
}

/// The request's token may do what `need` says.
pub(super) fn allowed(api: &Api, headers: &HeaderMap, need: Need) -> Result<(), Refusal> {
    let auth = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    api.tokens.check(auth, need).map_err(|denied: Denied| {
        fail(StatusCode::from_u16(denied.status()).unwrap_or(StatusCode::UNAUTHORIZED), denied)
    })
}

/// Asks the engine loop; 503 when it is stopping or does not answer in time.
pub(super) async fn ask<T>(
    api: &Api,
    make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query,
) -> Result<T, Refusal> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let asked = async {
        if !(api.ask)(make(tx)).await {
            return None;
        }
        rx.await.ok()
    };
    match tokio::time::timeout(ASK_TIMEOUT, asked).await {
        Ok(Some(answer)) => Ok(answer),
        _ => Err(fail(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping or too busy to answer; try again")),
    }
}

/// Answers on the blocking pool (reading files, running a backtest). One type of closure for
/// every caller: a task type of its own per caller would cost code for nothing.
pub(super) async fn blocking(f: Box<dyn FnOnce() -> Answer + Send>) -> Answer {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| fail(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping; try again"))?
}

/// A text argument: at most [`MAX_ARG`] bytes.
pub(super) fn arg<'a>(name: &str, value: Option<&'a str>) -> Result<Option<&'a str>, Refusal> {
    match value {
        Some(v) if v.len() > MAX_ARG => Err(bad(format!("`{name}` is longer than {MAX_ARG} bytes"))),
        v => Ok(v),
    }
}
