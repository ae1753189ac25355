//! The Redis room directory: several `floe signal`/`floe serve` nodes share rooms through one
//! Redis server.
//!
//! The hub stays sans-IO: it talks to a [`RedisBus`], whose [`Bus::send`] only queues the
//! command for the driver task spawned by [`spawn`]. The driver runs each command as one Lua
//! script (atomic: peer-id uniqueness and room capacity hold across nodes) and turns what the
//! scripts publish on this node's channel back into [`BusEvent`]s for the hub task. Commands
//! queued while a round trip is in flight are pipelined together (in order) in the next one.
//!
//! Layout (prefix `floe:`; see `redis_bus/lua/prelude.lua`):
//!
//! | key / channel | what |
//! |---|---|
//! | `floe:room:<room>:members` | hash peer → `{"s":session,"n":node,"i":join index,"b":0/1}` |
//! | `floe:room:<room>:seq` | join-index counter (deleted with the last member) |
//! | `floe:nodes` | set of registered node ids |
//! | `floe:node:<id>:alive` | heartbeat, expires after the node TTL |
//! | `floe:node:<id>:rooms` | rooms where the node has members |
//! | `floe:sess:<s>` / `floe:sess:<s>:mb` | a session's shared record / its mailbox stream |
//! | `floe:orphans` | sessions of crashed or drained nodes, by resume deadline |
//! | channel `floe:node:<id>:events` | every event for the node, in script order |
//!
//! Sessions are shared: Redis numbers every message to a session and keeps it in the session's
//! stream until acknowledged, so `resume.lua` can move a session to any node (see
//! docs/signalling.md §12, "Resume on any node").
//!
//! Failure behaviour: a node beats every TTL/3 and orphans the sessions of nodes whose heartbeat
//! expired; a node that shuts down gracefully orphans its own. Orphans stay resumable for their
//! resume TTL, then the sweep removes them (`timeout`, or `shutdown` for a drained node). When
//! Redis is unreachable the driver reconnects with exponential backoff
//! (100 ms to 5 s, jittered); commands wait up to [`COMMAND_DEADLINE`], then a join is refused
//! with `internal` and a routed message is dropped (counted). After reconnecting it registers
//! again, restores the members it hosts (Redis may have lost them), purges members whose leave
//! was lost, and one beat later reconciles each room it hosts (peers that vanished meanwhile
//! leave with `timeout`, new ones are announced).
//!
//! Metrics: `floe_signal_bus_errors_total{op}` (`connect`, `join`, `leave`, `send`, `kick`,
//! `heartbeat`, `reap`, `sync`, `decode`, `expired`, `bye`, `register`, `ack`, `resume`),
//! `floe_signal_bus_events_total`, gauge
//! `floe_signal_bus_connected`.
//!
//! Files: `mod.rs` (the bus, settings, spawn, the driver's state) · `driver.rs` (the loop: connect,
//! subscribe, reconnect with backoff) · `scripts.rs` (the Lua scripts, loading them) ·
//! `commands.rs` (hub commands as pipelined EVALSHA calls, deadlines) · `events.rs` (pub/sub events
//! to `BusEvent`s, the room mirror, resumed sessions) · `restore.rs` (after reconnecting: restore,
//! purge, reconcile) · `heartbeat.rs` (beat, reap, bye) · `wire.rs` (event and record formats).

mod commands;
mod driver;
mod events;
mod heartbeat;
mod restore;
mod scripts;
mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use floe_signal::bus::{Bus, BusCommand, BusEvent, Member};
use floe_signal::{PeerId, RoomId, SessionId};
use redis::{Client, RedisError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::scripts::Scripts;

/// Key and channel prefix.
const PREFIX: &str = "floe:";
/// Connection attempts and single operations time out after this.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most commands sent in one pipeline.
const MAX_BATCH: usize = 256;
/// How long a command waits for Redis before it fails.
pub(crate) const COMMAND_DEADLINE: Duration = Duration::from_secs(5);

/// Settings of the Redis directory.
#[derive(Clone)]
pub(crate) struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub(crate) url: String,
    /// A node whose heartbeat is older than this is reaped.
    pub(crate) node_ttl: Duration,
}

/// The hub's side of the Redis directory: commands go to the driver task.
#[derive(Debug)]
pub(crate) struct RedisBus {
    tx: mpsc::UnboundedSender<BusCommand>,
}

impl Bus for RedisBus {
    fn send(&mut self, cmd: BusCommand) {
        if self.tx.send(cmd).is_err() {
            metrics::counter!("floe_signal_bus_errors_total", "op" => "closed").increment(1);
        }
    }

    fn poll_event(&mut self) -> Option<BusEvent> {
        // Events arrive asynchronously through the receiver returned by `spawn`.
        None
    }

    fn shares_sessions(&self) -> bool {
        true
    }
}

/// Stops the driver: orphans this node's sessions in Redis (resumable on other nodes for their
/// resume TTL, then removed with reason `shutdown`).
#[derive(Debug)]
pub(crate) struct DriverHandle {
    stop: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl DriverHandle {
    /// Orphans this node's sessions and waits (bounded) until that is done.
    pub(crate) async fn shutdown(&self, bound: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.stop.send(tx).is_ok() {
            let _ = tokio::time::timeout(bound, rx).await;
        }
    }
}

/// A `redis_url` that cannot be used (the message never contains the URL: it may hold a
/// password).
#[derive(Debug)]
pub(crate) struct BadRedisUrl(pub(crate) String);

/// Validates `url` and returns the address to log (host, port and database; no credentials).
pub(crate) fn describe(url: &str) -> Result<String, BadRedisUrl> {
    let client = Client::open(url)
        .map_err(|e| BadRedisUrl(format!("not a usable redis:// URL ({:?})", e.kind())))?;
    let info = client.get_connection_info();
    Ok(format!("{}/{}", info.addr(), info.redis_settings().db()))
}

/// Starts the driver task. Returns the hub's bus, the event stream for the hub task and a handle
/// for shutdown.
pub(crate) fn spawn(
    settings: RedisSettings,
) -> Result<(RedisBus, mpsc::UnboundedReceiver<BusEvent>, DriverHandle), BadRedisUrl> {
    let where_ = describe(&settings.url)?;
    let client = Client::open(settings.url.as_str())
        .map_err(|e| BadRedisUrl(format!("not a usable redis:// URL ({:?})", e.kind())))?;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let node = format!("{:016x}", rand::random::<u64>());
    tracing::info!(redis = %where_, %node, node_ttl_ms = settings.node_ttl.as_millis() as u64,
        "signalling: multi-node mode, rooms shared through Redis");
    let driver = Driver {
        client,
        node,
        ttl: settings.node_ttl,
        scripts: Scripts::new(),
        cmds: cmd_rx,
        stop: stop_rx,
        events: ev_tx,
        pending: VecDeque::new(),
        joining: HashMap::new(),
        local: HashMap::new(),
        mirror: BTreeMap::new(),
        backoff: MIN_BACKOFF,
        reconcile_at: None,
    };
    tokio::spawn(driver.run());
    Ok((
        RedisBus { tx: cmd_tx },
        ev_rx,
        DriverHandle { stop: stop_tx },
    ))
}

// ---- the driver's state ------------------------------------------------------------------

/// A member this node hosts (needed to restore it after Redis lost its data).
#[derive(Debug, Clone)]
struct LocalMember {
    room: RoomId,
    peer: PeerId,
    join_index: u64,
    subscribe: bool,
}

/// A join sent to Redis whose answer has not arrived.
#[derive(Debug, Clone)]
struct Joining {
    peer: PeerId,
    subscribe: bool,
    /// The script ran (its `accepted`/`rejected` event is on the way).
    executed: bool,
}

struct Driver {
    client: Client,
    node: String,
    ttl: Duration,
    scripts: Scripts,
    cmds: mpsc::UnboundedReceiver<BusCommand>,
    stop: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    events: mpsc::UnboundedSender<BusEvent>,
    /// Commands not yet run, with when they arrived; run in order.
    pending: VecDeque<(BusCommand, Instant)>,
    joining: HashMap<SessionId, Joining>,
    local: HashMap<SessionId, LocalMember>,
    /// The members of each room where this node has sessions, as told to the hub.
    mirror: BTreeMap<RoomId, BTreeMap<PeerId, Member>>,
    backoff: Duration,
    reconcile_at: Option<Instant>,
}

/// Why a connected period ended.
enum End {
    /// Shutdown was requested (and done) or the hub is gone.
    Stop,
    /// The connection failed; reconnect.
    Lost(RedisError),
}

// ---- helpers --------------------------------------------------------------------------------

fn bus_error(op: &'static str) {
    metrics::counter!("floe_signal_bus_errors_total", "op" => op).increment(1);
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn dropped(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        what,
    ))
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_described_without_credentials() {
        let d = describe("redis://user:hunter2@127.0.0.1:6390/3").unwrap_or_default();
        assert!(
            d.contains("127.0.0.1") && d.contains("6390") && d.ends_with("/3"),
            "{d}"
        );
        assert!(!d.contains("hunter2"));
        let e = describe("http://nope")
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains("nope"), "{e}");
    }
}
