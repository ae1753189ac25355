//! `GET /v1/ice-servers`.

use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_signal::auth::IceRequest;
use floe_signal::{ErrorCode, PeerId, RoomId};
use serde::Deserialize;
use serde_json::json;

use crate::actor::{self};

use super::{bearer, refuse, AppState};

/// `?room=R&peer=P`: whom the credentials are for (validated as room and peer ids).
#[derive(Debug, Deserialize)]
pub(super) struct IceQuery {
    room: Option<RoomId>,
    peer: Option<PeerId>,
}

/// `GET /v1/ice-servers[?room=R&peer=P]`: the same list as in `welcome`. Production mode:
/// `Authorization: Bearer <JWT>` (any room); the token's claims name the TURN user, room and
/// tenant, and the query may only narrow what they leave open (a `*` room, no `peer` claim).
/// The TURN username carries them ([`floe_turn::rest::Identity`]).
pub(super) async fn ice_servers(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    query: Result<Query<IceQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let asked = match query {
        Ok(Query(q)) => IceRequest {
            room: q.room,
            peer: q.peer,
        },
        Err(e) => return refuse(ErrorCode::BadMessage, format!("bad query string: {e}")),
    };
    // Answered outside the hub task, with the clock read by the same function as for the hub.
    let now = actor::now().unix;
    let ip = state.0.client_ip(addr, &headers);
    let id = match state
        .0
        .auth
        .authorize_ice_servers(bearer(&headers), ip, now, &asked)
    {
        Ok(id) => id,
        Err(d) => return refuse(d.code, d.message),
    };
    let ice = state.0.ice.get();
    let servers = ice.servers_for_identity(&id, now);
    Json(json!({ "iceServers": servers, "ttl": ice.turn_ttl_secs })).into_response()
}
