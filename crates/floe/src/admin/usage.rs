//! `GET /v1/usage?by=room|tenant|user`: the live allocations' relayed bytes and packets summed
//! by the room, tenant or user their TURN usernames carry ([`floe_turn::rest::Identity`]).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_turn::server::AllocationInfo;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{error, unavailable};
use super::ops::Ops;

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    by: Option<String>,
}

/// What the summary groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Room,
    Tenant,
    User,
}

impl By {
    fn parse(s: Option<&str>) -> Option<By> {
        match s.unwrap_or("room") {
            "room" => Some(By::Room),
            "tenant" => Some(By::Tenant),
            "user" => Some(By::User),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            By::Room => "room",
            By::Tenant => "tenant",
            By::User => "user",
        }
    }

    /// The group of an allocation: `None` when its username carries no room (tenant).
    fn key(self, a: &AllocationInfo) -> Option<String> {
        let id = floe_turn::rest::Identity::parse(&a.username);
        match self {
            By::Room => id.and_then(|i| i.room).map(str::to_owned),
            By::Tenant => id.and_then(|i| i.tenant).map(str::to_owned),
            By::User => Some(floe_turn::rest::user_of(&a.username).to_owned()),
        }
    }
}

/// One group's sums.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    allocations: u64,
    bytes_to_peer: u64,
    bytes_to_client: u64,
    packets_to_peer: u64,
    packets_to_client: u64,
}

/// The groups of `list` by `by`, the most bytes first (`null` key: no room or tenant).
fn summarize(list: &[AllocationInfo], by: By) -> Vec<(Option<String>, Sums)> {
    let mut groups: std::collections::BTreeMap<Option<String>, Sums> = Default::default();
    for a in list {
        let s = groups.entry(by.key(a)).or_default();
        s.allocations += 1;
        s.bytes_to_peer += a.bytes_to_peer;
        s.bytes_to_client += a.bytes_to_client;
        s.packets_to_peer += a.packets_to_peer;
        s.packets_to_client += a.packets_to_client;
    }
    let mut out: Vec<_> = groups.into_iter().collect();
    out.sort_by_key(|(_, s)| std::cmp::Reverse(s.bytes_to_peer + s.bytes_to_client));
    out
}

/// `GET /v1/usage?by=room|tenant|user` (default `room`).
pub(super) async fn usage(State(ops): State<Ops>, Query(q): Query<UsageQuery>) -> Response {
    let Some(by) = By::parse(q.by.as_deref()) else {
        return error(StatusCode::BAD_REQUEST, "by is room, tenant or user");
    };
    let Some(turn) = ops.turn() else {
        return unavailable("TURN");
    };
    let Ok(list) = turn.allocations().await else {
        return unavailable("TURN");
    };
    let groups: Vec<Value> = summarize(&list, by)
        .into_iter()
        .map(|(key, s)| {
            json!({
                by.label(): key,
                "allocations": s.allocations,
                "bytes_to_peer": s.bytes_to_peer,
                "bytes_to_client": s.bytes_to_client,
                "packets_to_peer": s.packets_to_peer,
                "packets_to_client": s.packets_to_client,
            })
        })
        .collect();
    Json(json!({ "by": by.label(), "allocations": list.len(), "usage": groups })).into_response()
}
