//! `GET /v1/usage?by=room|tenant|user[&ended=MINUTES]`: the live allocations' relayed bytes and
//! packets summed by the room, tenant or user their TURN usernames carry
//! ([`floe_turn::rest::Identity`]), with those of the allocations that ended in the last
//! `MINUTES` (at most 10) when asked.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_turn::server::{AllocationInfo, AllocationUsage};
use floe_turn_server::turn::RECENT;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{error, unavailable};
use super::ops::Ops;

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    by: Option<String>,
    /// Minutes: also the allocations that ended this recently.
    ended: Option<u64>,
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

    /// The group of a username: `None` when it carries no room (tenant).
    fn key(self, username: &str) -> Option<String> {
        let id = floe_turn::rest::Identity::parse(username);
        match self {
            By::Room => id.and_then(|i| i.room).map(str::to_owned),
            By::Tenant => id.and_then(|i| i.tenant).map(str::to_owned),
            By::User => Some(floe_turn::rest::user_of(username).to_owned()),
        }
    }
}

/// One group's sums.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    allocations: u64,
    ended_allocations: u64,
    bytes_to_peer: u64,
    bytes_to_client: u64,
    packets_to_peer: u64,
    packets_to_client: u64,
}

impl Sums {
    fn add(&mut self, u: AllocationUsage) {
        self.bytes_to_peer += u.bytes_to_peer;
        self.bytes_to_client += u.bytes_to_client;
        self.packets_to_peer += u.packets_to_peer;
        self.packets_to_client += u.packets_to_client;
    }
}

/// The groups of the live allocations `list` and the `ended` ones (username, usage) by `by`,
/// the most bytes first (`null` key: no room or tenant).
fn summarize(
    list: &[AllocationInfo],
    ended: &[(&str, AllocationUsage)],
    by: By,
) -> Vec<(Option<String>, Sums)> {
    let mut groups: std::collections::BTreeMap<Option<String>, Sums> = Default::default();
    for a in list {
        let s = groups.entry(by.key(&a.username)).or_default();
        s.allocations += 1;
        s.add(AllocationUsage {
            bytes_to_peer: a.bytes_to_peer,
            bytes_to_client: a.bytes_to_client,
            packets_to_peer: a.packets_to_peer,
            packets_to_client: a.packets_to_client,
        });
    }
    for &(username, usage) in ended {
        let s = groups.entry(by.key(username)).or_default();
        s.ended_allocations += 1;
        s.add(usage);
    }
    let mut out: Vec<_> = groups.into_iter().collect();
    out.sort_by_key(|(_, s)| std::cmp::Reverse(s.bytes_to_peer + s.bytes_to_client));
    out
}

/// `GET /v1/usage?by=room|tenant|user&ended=MINUTES` (default `room`, live only).
pub(super) async fn usage(State(ops): State<Ops>, Query(q): Query<UsageQuery>) -> Response {
    let Some(by) = By::parse(q.by.as_deref()) else {
        return error(StatusCode::BAD_REQUEST, "by is room, tenant or user");
    };
    let max_minutes = RECENT.as_secs() / 60;
    let ended_within = match q.ended {
        None => None,
        Some(m) if m <= max_minutes => Some(std::time::Duration::from_secs(m * 60)),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("ended is at most {max_minutes} (minutes)"),
            )
        }
    };
    let Some(turn) = ops.turn() else {
        return unavailable("TURN");
    };
    let Ok(list) = turn.allocations().await else {
        return unavailable("TURN");
    };
    let ended = ended_within.map_or_else(Vec::new, |w| turn.recently_ended(w));
    let ended: Vec<(&str, AllocationUsage)> =
        ended.iter().map(|e| (&*e.username, e.usage)).collect();
    let groups: Vec<Value> = summarize(&list, &ended, by)
        .into_iter()
        .map(|(key, s)| {
            json!({
                by.label(): key,
                "allocations": s.allocations,
                "ended_allocations": s.ended_allocations,
                "bytes_to_peer": s.bytes_to_peer,
                "bytes_to_client": s.bytes_to_client,
                "packets_to_peer": s.packets_to_peer,
                "packets_to_client": s.packets_to_client,
            })
        })
        .collect();
    Json(json!({
        "by": by.label(),
        "allocations": list.len(),
        "ended_allocations": ended.len(),
        "usage": groups,
    }))
    .into_response()
}
