//! The HTTP post box (`/v1/rest/...`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_signal::proto::ServerMsg;
use floe_signal::{ErrorCode, SessionId};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::{bearer, error_response, gone, refuse, AppState, Inner};

async fn read_body(state: &Inner, body: Body) -> Result<Vec<u8>, Response> {
    // Read a little past the limit so the hub can tell "too large" apart from a cut body.
    let limit = state.max_message_bytes.saturating_add(1);
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(_) => Err(refuse(
            ErrorCode::MessageTooLarge,
            format!("body exceeds {} bytes", state.max_message_bytes),
        )),
    }
}

/// `POST /v1/rest/join`: body is a `join` message; answers `welcome` (200) or an error.
pub(super) async fn post_box_join(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if *state.0.stop.borrow() {
        return gone();
    }
    let ip = state.0.client_ip(addr, req.headers());
    let body = match read_body(&state.0, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let answer =
        tokio::time::timeout(Duration::from_secs(10), state.0.hub.post_box_join(ip, body)).await;
    match answer {
        Ok(Ok(ServerMsg::Error(e))) => error_response(e),
        Ok(Ok(msg)) => Json(msg).into_response(),
        Ok(Err(_)) => gone(),
        Err(_) => refuse(ErrorCode::Internal, "the join was not answered in time"),
    }
}

/// The session of a post-box path and the bearer token, or the refusal.
fn post_box_target(
    session: &str,
    headers: &HeaderMap,
) -> Result<(SessionId, String), Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Err(Box::new(refuse(
            ErrorCode::AuthRequired,
            "send Authorization: Bearer <resumeToken>",
        )));
    };
    let session = SessionId::new(session).map_err(|_| {
        Box::new(refuse(
            ErrorCode::SessionNotFound,
            "unknown session or wrong bearer token",
        ))
    })?;
    Ok((session, token.to_string()))
}

/// `POST /v1/rest/sessions/{session}/messages`: one client message; answers
/// `{"replies":[...]}` (errors for asynchronous refusals, `pong`, `refreshed`).
pub(super) async fn post_box_message(
    State(state): State<AppState>,
    Path(session): Path<String>,
    req: Request,
) -> Response {
    let (session, token) = match post_box_target(&session, req.headers()) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let body = match read_body(&state.0, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match state.0.hub.post_box_message(session, token, body).await {
        Ok(Ok(replies)) => Json(json!({ "replies": replies })).into_response(),
        Ok(Err(e)) => error_response(e),
        Err(_) => gone(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PollQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

/// `GET /v1/rest/sessions/{session}/messages?after=N&wait=S`: acknowledges up to `after` and
/// answers `{"messages":[...],"lastSeq":N}`, waiting up to `wait` seconds (max
/// `max_poll_wait_secs`) for one.
///
/// Bounds: a poll that has to park needs one of `max_rest_waiters` permits (else 503
/// `server_busy`; a poll that finds messages is answered anyway), and the hub task keeps at
/// most `max_rest_waiters_per_session` parked per session, answering the oldest at once when a
/// newer one arrives.
pub(super) async fn post_box_poll(
    State(state): State<AppState>,
    Path(session): Path<String>,
    query: Result<Query<PollQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (session, token) = match post_box_target(&session, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    // axum's own rejection is plain text; every post-box error is the JSON `error`.
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return refuse(ErrorCode::BadMessage, format!("bad query string: {e}")),
    };
    let wait = Duration::from_secs(q.wait).min(state.0.poll_wait_cap);
    let hub = &state.0.hub;
    // Taken before the first poll so that the hub only parks (and supersedes older polls for)
    // a poll that will really wait.
    let permit = if wait.is_zero() {
        None
    } else {
        state.0.post_box_waiters.clone().try_acquire_owned().ok()
    };
    let (watch_tx, watch_rx) = oneshot::channel();
    let watch = permit.is_some().then_some(watch_tx);
    let first = match hub
        .post_box_poll(session.clone(), token.clone(), q.after, watch)
        .await
    {
        Ok(r) => r,
        Err(_) => return gone(),
    };
    let poll = match first {
        Ok(p) if p.messages.is_empty() && !wait.is_zero() && permit.is_none() => {
            return refuse(
                ErrorCode::ServerBusy,
                "too many long-polls are waiting on this node; retry shortly",
            );
        }
        Ok(p) if p.messages.is_empty() && !wait.is_zero() => {
            // Counted until this future ends or is dropped (the client went away).
            let parked = Parked::new(permit);
            let mut stop = state.0.stop.clone();
            tokio::select! {
                _ = tokio::time::timeout(wait, watch_rx) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            drop(parked);
            match hub.post_box_poll(session, token, q.after, None).await {
                Ok(r) => r,
                Err(_) => return gone(),
            }
        }
        other => other,
    };
    match poll {
        Ok(p) => Json(json!({ "messages": p.messages, "lastSeq": p.last_seq })).into_response(),
        Err(e) => error_response(e),
    }
}

/// A parked long-poll: holds its `max_rest_waiters` permit and counts in the
/// `floe_signal_rest_waiters` gauge while it lives.
struct Parked(Option<tokio::sync::OwnedSemaphorePermit>);

impl Parked {
    fn new(permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        metrics::gauge!("floe_signal_rest_waiters").increment(1.0);
        Self(permit)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        metrics::gauge!("floe_signal_rest_waiters").decrement(1.0);
        self.0.take();
    }
}

/// `DELETE /v1/rest/sessions/{session}`: leave the room (204).
pub(super) async fn post_box_leave(
    State(state): State<AppState>,
    Path(session): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (session, token) = match post_box_target(&session, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    match state
        .0
        .hub
        .post_box_message(session, token, br#"{"type":"leave"}"#.to_vec())
        .await
    {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error_response(e),
        Err(_) => gone(),
    }
}
