//! `GET /v1/ice-servers`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::actor::{self};

use super::{bearer, refuse, AppState};

/// `GET /v1/ice-servers`: the same list as in `welcome`. Production mode: `Authorization:
/// Bearer <JWT>` (any room); the token's `peer` claim names the TURN user.
pub(super) async fn ice_servers(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Answered outside the hub task, with the clock read by the same function as for the hub.
    let now = actor::now().unix;
    let ip = state.0.client_ip(addr, &headers);
    let peer = match state
        .0
        .auth
        .authorize_ice_servers(bearer(&headers), ip, now)
    {
        Ok(p) => p,
        Err(d) => return refuse(d.code, d.message),
    };
    let ice = state.0.ice.get();
    let servers = ice.servers_for(&peer, now);
    Json(json!({ "iceServers": servers, "ttl": ice.turn_ttl_secs })).into_response()
}
