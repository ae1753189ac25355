//! The operations listener's routes. `/healthz` and `/readyz` are open; `/metrics` and the
//! admin API (`/v1/...`) need `Authorization: Bearer TOKEN` when a token is configured (compared
//! in constant time), and answer loopback clients only when none is.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use floe_signal_server::admin::{SessionFilter, SessionInfo};
use floe_turn::server::{AllocationFilter, AllocationInfo, RelayTransport};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq as _;

use super::ops::Ops;

/// The routes.
pub fn router(ops: Ops) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/allocations", get(allocations))
        .route(
            "/v1/allocations/{id}",
            get(allocation).delete(end_allocation),
        )
        .route("/v1/usage", get(super::usage::usage))
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/{id}", delete(end_session))
        .route("/v1/users/{user}", delete(end_user))
        .route("/v1/revocations", post(revoke))
        .route("/v1/drain", post(drain))
        .route("/v1/reload", post(reload))
        .layer(axum::middleware::from_fn_with_state(ops.clone(), guard));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(ops)
}

/// A JSON error answer: `{"error": "..."}`, counted in `floe_admin_errors_total{status}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    metrics::counter!("floe_admin_errors_total", "status" => status.as_u16().to_string())
        .increment(1);
    (status, Json(json!({ "error": message }))).into_response()
}

pub(super) fn unavailable(what: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{what} is not running in this process"),
    )
}

/// Token check, or loopback only without a token.
async fn guard(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match &ops.config().token {
        Some(token) => {
            if !bearer_matches(req.headers(), token) {
                metrics::counter!("floe_admin_refused_total", "reason" => "token").increment(1);
                let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
        }
        None => {
            if !peer.ip().to_canonical().is_loopback() {
                metrics::counter!("floe_admin_refused_total", "reason" => "not_loopback")
                    .increment(1);
                return error(
                    StatusCode::FORBIDDEN,
                    "no admin token is configured: the admin API answers loopback clients only",
                );
            }
        }
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    // The token is in a header, never in what is logged here.
    tracing::debug!(%method, %path, status = response.status().as_u16(), %peer, "admin request");
    response
}

/// Constant-time comparison of the bearer token (the lengths may leak, not the bytes).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let r = ops.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.render_metrics(),
    )
        .into_response()
}

async fn status(State(ops): State<Ops>) -> Response {
    let mut body = json!({
        "draining": ops.is_draining(),
        "turn": ops.turn().is_some(),
        "signal": ops.signal().is_some(),
    });
    if let Some(turn) = ops.turn() {
        if let Ok(l) = turn.load().await {
            body["allocations"] = json!(l.allocations);
            body["relay_ports"] = json!(l.relay_ports);
            body["tcp_connections"] = json!(l.stream_connections);
            body["bytes_relayed"] = json!(l.bytes_relayed);
        }
    }
    if let Some(signal) = ops.signal() {
        if let Ok(s) = signal.sessions().await {
            body["sessions"] = json!(s.len());
        }
    }
    Json(body).into_response()
}

#[derive(Deserialize)]
struct UserQuery {
    user: Option<String>,
}

async fn allocations(State(ops): State<Ops>, Query(q): Query<UserQuery>) -> Response {
    let Some(turn) = ops.turn() else {
        return unavailable("TURN");
    };
    match turn.allocations().await {
        Ok(list) => {
            let list: Vec<Value> = list
                .iter()
                .filter(|a| {
                    q.user
                        .as_deref()
                        .is_none_or(|u| floe_turn::rest::user_of(&a.username) == u)
                })
                .map(allocation_json)
                .collect();
            Json(json!({ "allocations": list })).into_response()
        }
        Err(_) => unavailable("TURN"),
    }
}

/// An allocation in the API: `id` is `WORKER-ID`; `peer`, `room` and `tenant` are what a
/// floe-minted TURN REST username carries ([`floe_turn::rest::Identity`]; null otherwise).
pub fn allocation_json(a: &AllocationInfo) -> Value {
    let relay_transport = match a.transport {
        RelayTransport::Udp => "udp",
        RelayTransport::Tcp => "tcp",
    };
    let id = floe_turn::rest::Identity::parse(&a.username);
    json!({
        "id": format!("{}-{}", a.worker, a.id),
        "username": a.username,
        "user": floe_turn::rest::user_of(&a.username),
        "peer": id.map(|i| i.user),
        "room": id.and_then(|i| i.room),
        "tenant": id.and_then(|i| i.tenant),
        "client": a.client.remote.to_string(),
        "transport": a.client.transport.label(),
        "server": a.client.local.to_string(),
        "relay_transport": relay_transport,
        "relayed": a.relayed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "permissions": a.permissions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "channels": a.channels.iter().map(|(n, p)| json!({"number": n, "peer": p.to_string()})).collect::<Vec<_>>(),
        "bytes_to_peer": a.bytes_to_peer,
        "bytes_to_client": a.bytes_to_client,
        "packets_to_peer": a.packets_to_peer,
        "packets_to_client": a.packets_to_client,
        "age_secs": a.age.as_secs(),
        "expires_in_secs": a.expires_in.as_secs(),
    })
}

/// `WORKER-N` → (worker, allocation number).
fn parse_allocation_id(id: &str) -> Option<(u32, u64)> {
    id.split_once('-')
        .and_then(|(w, i)| Some((w.parse::<u32>().ok()?, i.parse::<u64>().ok()?)))
}

fn bad_allocation_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "an allocation id is WORKER-N, e.g. 0-17",
    )
}

async fn allocation(State(ops): State<Ops>, Path(id): Path<String>) -> Response {
    let Some(turn) = ops.turn() else {
        return unavailable("TURN");
    };
    let Some((worker, alloc)) = parse_allocation_id(&id) else {
        return bad_allocation_id();
    };
    match turn.allocations().await {
        Ok(list) => match list.iter().find(|a| a.worker == worker && a.id == alloc) {
            Some(a) => Json(allocation_json(a)).into_response(),
            None => error(StatusCode::NOT_FOUND, "no such allocation"),
        },
        Err(_) => unavailable("TURN"),
    }
}

async fn end_allocation(State(ops): State<Ops>, Path(id): Path<String>) -> Response {
    let Some(turn) = ops.turn() else {
        return unavailable("TURN");
    };
    let Some((worker, alloc)) = parse_allocation_id(&id) else {
        return bad_allocation_id();
    };
    match turn.end(AllocationFilter::Id(worker, alloc)).await {
        Ok(0) => error(StatusCode::NOT_FOUND, "no such allocation"),
        Ok(n) => Json(json!({ "allocations_ended": n })).into_response(),
        Err(_) => unavailable("TURN"),
    }
}

async fn sessions(State(ops): State<Ops>) -> Response {
    let Some(signal) = ops.signal() else {
        return unavailable("signalling");
    };
    match signal.sessions().await {
        Ok(list) => {
            let node = node_name();
            let list: Vec<Value> = list.iter().map(|s| session_json(s, &node)).collect();
            Json(json!({ "sessions": list })).into_response()
        }
        Err(_) => unavailable("signalling"),
    }
}

/// A session in the API.
fn session_json(s: &SessionInfo, node: &str) -> Value {
    json!({
        "session": s.session,
        "room": s.room,
        "peer": s.peer,
        "node": node,
        "state": if s.connected { "connected" } else { "resuming" },
        "detached_secs": s.detached_for.map(|d| d.as_secs()),
    })
}

/// This node's name in session listings: the host name.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

async fn end_session(State(ops): State<Ops>, Path(id): Path<String>) -> Response {
    let Some(signal) = ops.signal() else {
        return unavailable("signalling");
    };
    match signal.end(SessionFilter::Session(id)).await {
        Ok(0) => error(StatusCode::NOT_FOUND, "no such session on this node"),
        Ok(n) => Json(json!({ "sessions_ended": n })).into_response(),
        Err(_) => unavailable("signalling"),
    }
}

/// Ends everything of `user`: TURN allocations whose username is `user` or `EXPIRY:user`, and
/// signalling sessions whose peer id is `user`.
async fn end_user(State(ops): State<Ops>, Path(user): Path<String>) -> Response {
    let mut allocations = 0;
    let mut sessions = 0;
    if let Some(turn) = ops.turn() {
        allocations = turn
            .end(AllocationFilter::User(user.clone()))
            .await
            .unwrap_or(0);
    }
    if let Some(signal) = ops.signal() {
        sessions = signal
            .end(SessionFilter::Peer(user.clone()))
            .await
            .unwrap_or(0);
    }
    tracing::info!(%user, allocations, sessions, "admin: ended a user's allocations and sessions");
    Json(json!({
        "user": user,
        "allocations_ended": allocations,
        "sessions_ended": sessions,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RevokeBody {
    username: String,
    /// Until when (unix seconds); default: the TURN REST username's expiry.
    until: Option<u64>,
}

async fn revoke(State(ops): State<Ops>, body: Option<Json<RevokeBody>>) -> Response {
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"username\": \"EXPIRY:USER\"}",
        );
    };
    let Some(turn) = ops.turn() else {
        return unavailable("TURN");
    };
    let Some(until) = body.until.or(floe_turn::rest::expiry_of(&body.username)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "not a TURN REST username (EXPIRY:USER); give \"until\" (unix seconds)",
        );
    };
    match turn.revoke(&body.username, until).await {
        Ok(n) => {
            tracing::info!(username = %body.username, until, allocations = n, "admin: TURN username revoked");
            Json(json!({
                "username": body.username,
                "until": until,
                "allocations_ended": n,
            }))
            .into_response()
        }
        Err(_) => unavailable("TURN"),
    }
}

async fn drain(State(ops): State<Ops>) -> Response {
    ops.request_drain().await;
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "draining": true,
            "timeout_secs": ops.config().drain_timeout.as_secs(),
        })),
    )
        .into_response()
}

/// `POST /v1/reload`: re-reads the configuration file (see [`super::reload`]).
async fn reload(State(ops): State<Ops>) -> Response {
    match ops.reload().await {
        Ok(summary) => Json(json!({ "reloaded": true, "summary": summary })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
    }
}
