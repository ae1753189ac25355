//! The hub: the sans-IO [`Hub`] behind a mutex, with a tokio task that fires its timers, takes
//! the Redis bus's events and runs the less frequent commands (connect, disconnect, the post
//! box, admin). A WebSocket frame is handled inline by the connection task that read it, under
//! the same lock ([`HubHandle::frame`]): no hop through a channel and a second task per message,
//! and both cores handle frames (the hub's own work is still one at a time). Everything talks
//! to it through [`HubHandle`]. [`now`] is where the signalling server reads the clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use floe_signal::bus::{Bus, BusCommand, BusEvent, LocalBus};
use floe_signal::hub::{SessionFilter, SessionInfo};
use floe_signal::proto::{ErrorBody, ServerMsg};
use floe_signal::{
    ConnId, ErrorCode, Hub, HubConfig, HubStats, Now, Output, PostBoxPoll, SessionId,
};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::outbox::{Outbox, Refused};
use crate::redis_bus::RedisBus;

/// The room directory of this node: in memory, or shared with other nodes through Redis.
#[derive(Debug)]
pub(crate) enum NodeBus {
    /// Single node.
    Local(LocalBus),
    /// Multi-node; events come back through the receiver given to [`spawn`].
    Redis(RedisBus),
}

impl Bus for NodeBus {
    fn send(&mut self, cmd: BusCommand) {
        match self {
            NodeBus::Local(b) => b.send(cmd),
            NodeBus::Redis(b) => b.send(cmd),
        }
    }

    fn poll_event(&mut self) -> Option<BusEvent> {
        match self {
            NodeBus::Local(b) => b.poll_event(),
            NodeBus::Redis(b) => b.poll_event(),
        }
    }

    fn shares_sessions(&self) -> bool {
        match self {
            NodeBus::Local(b) => b.shares_sessions(),
            NodeBus::Redis(b) => b.shares_sessions(),
        }
    }
}

/// What a connection task writes.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A serialized server message.
    Text(String),
    /// Close with this code.
    Close(ErrorCode),
}

enum Sink {
    Ws(Outbox),
    /// A post-box join: the first message answers it.
    PostBoxJoin(Option<oneshot::Sender<ServerMsg>>),
}

enum Cmd {
    Connect {
        ip: IpAddr,
        tx: Outbox,
        reply: oneshot::Sender<ConnId>,
    },
    Oversized {
        conn: ConnId,
    },
    InvalidText {
        conn: ConnId,
    },
    Disconnect {
        conn: ConnId,
    },
    PostBoxJoin {
        ip: IpAddr,
        body: Vec<u8>,
        reply: oneshot::Sender<ServerMsg>,
    },
    PostBoxMessage {
        session: SessionId,
        token: String,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<ServerMsg>, ErrorBody>>,
    },
    PostBoxPoll {
        session: SessionId,
        token: String,
        after: u64,
        watch: Option<oneshot::Sender<()>>,
        reply: oneshot::Sender<Result<PostBoxPoll, ErrorBody>>,
    },
    Shutdown {
        reconnect_ms: u64,
        reply: oneshot::Sender<()>,
    },
    /// Admin API: this node's sessions.
    Sessions {
        reply: oneshot::Sender<Vec<SessionInfo>>,
    },
    /// Admin API: end sessions.
    EndSessions {
        filter: SessionFilter,
        reply: oneshot::Sender<usize>,
    },
    /// Admin API: drain.
    Drain {
        reconnect_ms: u64,
        reply: oneshot::Sender<()>,
    },
    /// Configuration reload: the hub's new settings; answers how many sessions ended.
    Reconfigure {
        config: Box<HubConfig>,
        reply: oneshot::Sender<usize>,
    },
}

/// A cheap, cloneable handle to the hub.
#[derive(Clone)]
pub(crate) struct HubHandle {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

/// The hub state, shared by the hub task and the connection tasks.
struct Shared {
    actor: Mutex<Actor>,
    /// Wakes the hub task when an inline frame made its next deadline earlier than the one it
    /// sleeps on.
    kick: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Actor> {
        // Nothing in the hub panics by design; a poisoned lock still holds a usable hub (the
        // same choice as the outbox).
        self.actor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the hub, then routes its outputs, as the hub task does for a command. Never
    /// awaits while holding the lock.
    fn run(&self, f: impl FnOnce(&mut Actor)) {
        let earlier = {
            let mut a = self.lock();
            let before = a.hub.poll_timeout();
            f(&mut a);
            a.drain();
            a.delivering = None;
            a.gauges();
            match (before, a.hub.poll_timeout()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(n)) => n < b,
            }
        };
        if earlier {
            self.kick.notify_one();
        }
    }
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubHandle")
    }
}

/// The hub task stopped (only during shutdown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubGone;

impl HubHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    pub(crate) async fn connect(&self, ip: IpAddr, tx: Outbox) -> Result<ConnId, HubGone> {
        self.call(|reply| Cmd::Connect { ip, tx, reply }).await
    }

    /// Handles one frame of `conn` on the caller's task. The connection's earlier commands
    /// (its connect) were answered and its later ones (its disconnect) are sent after this
    /// returns, so its inputs reach the hub in order.
    /// The frame is borrowed from the transport's buffer: nothing is copied or queued.
    pub(crate) fn frame(&self, conn: ConnId, data: &[u8]) -> Result<(), HubGone> {
        if self.tx.is_closed() {
            return Err(HubGone);
        }
        let at = std::time::Instant::now();
        self.shared.run(|a| a.frame(conn, data, at));
        Ok(())
    }

    pub(crate) async fn oversized(&self, conn: ConnId) {
        let _ = self.tx.send(Cmd::Oversized { conn }).await;
    }

    pub(crate) async fn invalid_text(&self, conn: ConnId) {
        let _ = self.tx.send(Cmd::InvalidText { conn }).await;
    }

    pub(crate) async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(Cmd::Disconnect { conn }).await;
    }

    pub(crate) async fn post_box_join(
        &self,
        ip: IpAddr,
        body: Vec<u8>,
    ) -> Result<ServerMsg, HubGone> {
        self.call(|reply| Cmd::PostBoxJoin { ip, body, reply })
            .await
    }

    pub(crate) async fn post_box_message(
        &self,
        session: SessionId,
        token: String,
        body: Vec<u8>,
    ) -> Result<Result<Vec<ServerMsg>, ErrorBody>, HubGone> {
        self.call(|reply| Cmd::PostBoxMessage {
            session,
            token,
            body,
            reply,
        })
        .await
    }

    pub(crate) async fn post_box_poll(
        &self,
        session: SessionId,
        token: String,
        after: u64,
        watch: Option<oneshot::Sender<()>>,
    ) -> Result<Result<PostBoxPoll, ErrorBody>, HubGone> {
        self.call(|reply| Cmd::PostBoxPoll {
            session,
            token,
            after,
            watch,
            reply,
        })
        .await
    }

    pub(crate) async fn sessions(&self) -> Result<Vec<SessionInfo>, HubGone> {
        self.call(|reply| Cmd::Sessions { reply }).await
    }

    pub(crate) async fn end_sessions(&self, filter: SessionFilter) -> Result<usize, HubGone> {
        self.call(|reply| Cmd::EndSessions { filter, reply }).await
    }

    pub(crate) async fn drain(&self, reconnect_ms: u64) -> Result<(), HubGone> {
        self.call(|reply| Cmd::Drain {
            reconnect_ms,
            reply,
        })
        .await
    }

    /// A configuration reload (see [`floe_signal::Hub::handle_reconfigure`]).
    pub(crate) async fn reconfigure(&self, config: HubConfig) -> Result<usize, HubGone> {
        let config = Box::new(config);
        self.call(|reply| Cmd::Reconfigure { config, reply }).await
    }

    pub(crate) async fn shutdown(&self, reconnect_ms: u64) {
        let _ = self
            .call(|reply| Cmd::Shutdown {
                reconnect_ms,
                reply,
            })
            .await;
    }
}

/// Reads the clock: the one place in the signalling server that does for the hub and its rules.
/// The hub task calls it for every input; `GET /v1/ice-servers`, answered outside the hub task,
/// calls it for token and TURN credential expiry. (The Redis driver task runs its own tokio
/// timers, reconnect backoff and heartbeats, which never reach the hub.)
pub(crate) fn now() -> Now {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now {
        mono: std::time::Instant::now(),
        unix,
    }
}

/// Spawns the hub task. `bus_events` carries the events of a remote bus (Redis).
/// `waiters_per_session` bounds the post-box long-polls parked per session (the oldest is answered
/// when a newer one would exceed it).
pub(crate) fn spawn(
    config: HubConfig,
    bus: NodeBus,
    bus_events: Option<mpsc::UnboundedReceiver<BusEvent>>,
    waiters_per_session: usize,
) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let rng = rand::rngs::StdRng::from_entropy();
    let shared = Arc::new(Shared {
        actor: Mutex::new(Actor::new(config, bus, rng, waiters_per_session)),
        kick: Notify::new(),
    });
    let task = tokio::spawn(run(shared.clone(), rx, bus_events));
    (HubHandle { tx, shared }, task)
}

/// The last frames of a connection cut off as a slow consumer: the fatal error and the close.
fn slow_consumer_frames() -> Vec<Outbound> {
    let body = ErrorBody {
        code: ErrorCode::SlowConsumer,
        message: "the connection does not read what it is sent; resume to continue".into(),
        fatal: true,
        ref_seq: None,
    };
    let mut frames = Vec::with_capacity(2);
    if let Ok(text) = serde_json::to_string(&ServerMsg::Error(body)) {
        frames.push(Outbound::Text(text));
    }
    frames.push(Outbound::Close(ErrorCode::SlowConsumer));
    frames
}

/// The hub task's per-message metrics, looked up once: `metrics::counter!` with labels hashes
/// and compares the key against the registry on every call (a few per cent of the server's CPU
/// per directed message in the profile of docs/benchmarks.md, "Signalling"). The process's
/// recorder is installed before the server starts (`floe` does it first thing; tests before
/// `SignalServer::run`), so handles taken at spawn are the live ones.
struct Meters {
    messages_in: metrics::Counter,
    messages_out: metrics::Counter,
    connections: metrics::Gauge,
    sessions: metrics::Gauge,
    rooms: metrics::Gauge,
    /// The counts last written to the gauges: they are set only when one changes.
    last: Option<HubStats>,
}

impl Meters {
    fn new() -> Self {
        Meters {
            messages_in: metrics::counter!("floe_signal_messages_total", "direction" => "in"),
            messages_out: metrics::counter!("floe_signal_messages_total", "direction" => "out"),
            connections: metrics::gauge!("floe_signal_connections"),
            sessions: metrics::gauge!("floe_signal_sessions"),
            rooms: metrics::gauge!("floe_signal_rooms"),
            last: None,
        }
    }
}

/// The hub task: timers, the Redis bus's events and the commands sent through the channel.
async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Cmd>,
    mut bus_events: Option<mpsc::UnboundedReceiver<BusEvent>>,
) {
    loop {
        // An inline frame that moves the deadline earlier after this read kicks: `notify_one`
        // keeps the permit for the `notified` below.
        let deadline = shared.lock().hub.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let bus_event = async {
            match bus_events.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => shared.run(|a| a.handle(cmd)),
                None => break,
            },
            ev = bus_event => match ev {
                Some(ev) => shared.run(|a| a.hub.handle_bus_event(ev, now())),
                // The Redis driver stopped (shutdown): no more events.
                None => bus_events = None,
            },
            () = sleep => shared.run(|a| a.hub.handle_timeout(now())),
            () = shared.kick.notified() => {}
        }
    }
}

struct Actor {
    hub: Hub<NodeBus>,
    meters: Meters,
    sinks: HashMap<ConnId, Sink>,
    /// Parked post-box long-polls per session, oldest first.
    waiters: HashMap<SessionId, VecDeque<oneshot::Sender<()>>>,
    waiters_per_session: usize,
    /// Sweep sessions whose every waiter is gone once the map grows past this.
    prune_waiters_at: usize,
    /// The input being handled: the connection it came from (none for the post box) and when
    /// the hub received it. Directed messages it produces for other connections are timed in
    /// `floe_signal_delivery_seconds` (a resume's replay goes back to its own connection and
    /// is not).
    delivering: Option<(Option<ConnId>, std::time::Instant)>,
}

/// The smallest waiter map that is swept for finished polls.
const PRUNE_WAITERS_MIN: usize = 1024;

impl Actor {
    fn new(
        config: HubConfig,
        bus: NodeBus,
        rng: rand::rngs::StdRng,
        waiters_per_session: usize,
    ) -> Self {
        Actor {
            hub: Hub::new(config, bus, rng),
            meters: Meters::new(),
            sinks: HashMap::new(),
            waiters: HashMap::new(),
            waiters_per_session: waiters_per_session.max(1),
            prune_waiters_at: PRUNE_WAITERS_MIN,
            delivering: None,
        }
    }

    /// One WebSocket frame of `conn`, handed over by its connection at `at` (the start of
    /// `floe_signal_delivery_seconds` for the messages it sends on).
    fn frame(&mut self, conn: ConnId, data: &[u8], at: std::time::Instant) {
        self.meters.messages_in.increment(1);
        self.delivering = Some((Some(conn), at));
        self.hub.handle_frame(conn, data, now());
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connect { ip, tx, reply } => {
                let conn = self.hub.handle_connect(ip, now());
                self.sinks.insert(conn, Sink::Ws(tx));
                if reply.send(conn).is_err() {
                    self.sinks.remove(&conn);
                    self.hub.handle_disconnect(conn, now());
                }
            }
            Cmd::Oversized { conn } => self.hub.handle_oversized(conn, now()),
            Cmd::InvalidText { conn } => self.hub.handle_invalid_text(conn, now()),
            Cmd::Disconnect { conn } => {
                self.sinks.remove(&conn);
                self.hub.handle_disconnect(conn, now());
            }
            Cmd::PostBoxJoin { ip, body, reply } => {
                let t = now();
                let conn = self.hub.handle_connect(ip, t);
                self.sinks.insert(conn, Sink::PostBoxJoin(Some(reply)));
                self.hub.handle_frame(conn, &body, t);
            }
            Cmd::PostBoxMessage {
                session,
                token,
                body,
                reply,
            } => {
                self.meters.messages_in.increment(1);
                self.delivering = Some((None, std::time::Instant::now()));
                let _ =
                    reply.send(
                        self.hub
                            .handle_post_box_message(&session, &token, &body, now()),
                    );
            }
            Cmd::PostBoxPoll {
                session,
                token,
                after,
                watch,
                reply,
            } => {
                let res = self
                    .hub
                    .handle_post_box_poll(&session, &token, after, now());
                if let (Ok(p), Some(w)) = (&res, watch) {
                    if p.messages.is_empty() {
                        self.park(session, w);
                    }
                }
                let _ = reply.send(res);
            }
            Cmd::Shutdown {
                reconnect_ms,
                reply,
            } => {
                self.hub.handle_shutdown(reconnect_ms, now());
                self.drain();
                self.waiters.clear();
                let _ = reply.send(());
            }
            Cmd::Sessions { reply } => {
                let _ = reply.send(self.hub.sessions(now()));
            }
            Cmd::EndSessions { filter, reply } => {
                let _ = reply.send(self.hub.handle_admin_end(&filter, now()));
            }
            Cmd::Drain {
                reconnect_ms,
                reply,
            } => {
                self.hub.handle_drain(reconnect_ms, now());
                let _ = reply.send(());
            }
            Cmd::Reconfigure { config, reply } => {
                let _ = reply.send(self.hub.handle_reconfigure(*config, now()));
            }
        }
    }

    /// Parks a post-box long-poll of `session`. Beyond `waiters_per_session` the oldest is answered
    /// now (with what the mailbox holds, usually nothing): a client that lost track of its
    /// earlier poll (a reloaded page, a dropped connection the server has not noticed) is never
    /// locked out by it, and one session cannot pile up waiters.
    fn park(&mut self, session: SessionId, waiter: oneshot::Sender<()>) {
        let list = self.waiters.entry(session).or_default();
        list.retain(|w| !w.is_closed());
        while list.len() >= self.waiters_per_session {
            if let Some(old) = list.pop_front() {
                metrics::counter!("floe_signal_rest_polls_superseded_total").increment(1);
                let _ = old.send(());
            }
        }
        list.push_back(waiter);
        if self.waiters.len() > self.prune_waiters_at {
            // Sessions that ended or stopped polling leave entries whose polls all finished.
            self.waiters.retain(|_, l| {
                l.retain(|w| !w.is_closed());
                !l.is_empty()
            });
            self.prune_waiters_at = (self.waiters.len() * 2).max(PRUNE_WAITERS_MIN);
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            match out {
                Output::Send { conn, msg } => self.send(conn, msg),
                Output::Close { conn, code } => self.close(conn, code),
                Output::Wake { session } => {
                    for w in self.waiters.remove(&session).unwrap_or_default() {
                        let _ = w.send(());
                    }
                }
                Output::Rejected { code } => {
                    metrics::counter!("floe_signal_errors_total", "code" => code.as_str())
                        .increment(1);
                }
                other => tracing::warn!(?other, "unhandled hub output"),
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        match self.sinks.get_mut(&conn) {
            Some(Sink::Ws(tx)) => {
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialize a server message");
                        return;
                    }
                };
                self.meters.messages_out.increment(1);
                match tx.try_send(Outbound::Text(text)) {
                    Ok(()) => match self.delivering {
                        Some((from, at)) if from != Some(conn) && msg.is_directed() => {
                            crate::histograms::DELIVERY.observe(at.elapsed());
                        }
                        _ => {}
                    },
                    Err(Refused::Full) => {
                        // A slow consumer: its queue is freed and replaced by `slow_consumer`
                        // and the close; the session stays resumable (the message is in its
                        // mailbox).
                        tracing::debug!(%conn, "slow WebSocket consumer cut off");
                        metrics::counter!("floe_signal_slow_consumers_total").increment(1);
                        metrics::counter!(
                            "floe_signal_errors_total",
                            "code" => ErrorCode::SlowConsumer.as_str()
                        )
                        .increment(1);
                        tx.cut_off(slow_consumer_frames());
                        self.sinks.remove(&conn);
                        self.hub.handle_disconnect(conn, now());
                    }
                    Err(Refused::Closed) => {
                        // An ordinary hang-up: the connection task stopped writing. Frames it
                        // read before (a `leave` above all) are still queued to this task, with
                        // its `Disconnect` after them: leave the hub's connection alone so they
                        // are handled in order; only stop writing to it.
                        self.sinks.remove(&conn);
                    }
                }
            }
            Some(Sink::PostBoxJoin(reply)) => {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(msg);
                }
                // The post-box join's virtual connection ends with its answer.
                self.sinks.remove(&conn);
                self.hub.handle_disconnect(conn, now());
            }
            None => {}
        }
    }

    fn close(&mut self, conn: ConnId, code: ErrorCode) {
        if let Some(Sink::Ws(tx)) = self.sinks.remove(&conn) {
            let _ = tx.try_send(Outbound::Close(code));
        }
    }

    fn gauges(&mut self) {
        let s = self.hub.stats();
        if self.meters.last == Some(s) {
            return;
        }
        self.meters.last = Some(s);
        self.meters.connections.set(s.connections as f64);
        self.meters.sessions.set(s.sessions as f64);
        self.meters.rooms.set(s.rooms as f64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;
    use crate::outbox::{outbox, OutboxRx};
    use serde_json::{json, Value};

    fn actor() -> Actor {
        let bus = NodeBus::Local(LocalBus::new());
        Actor::new(
            HubConfig::default(),
            bus,
            rand::rngs::StdRng::seed_from_u64(1),
            2,
        )
    }

    /// What the hub task's loop does with one command.
    fn feed(a: &mut Actor, cmd: Cmd) {
        a.handle(cmd);
        a.drain();
    }

    /// A WebSocket connection whose outbound queue holds `queue` frames.
    fn connect(a: &mut Actor, queue: usize) -> (ConnId, OutboxRx) {
        let (tx, rx) = outbox(queue, 1 << 20);
        let (reply, mut conn) = oneshot::channel();
        let ip = "127.0.0.1".parse().unwrap();
        feed(a, Cmd::Connect { ip, tx, reply });
        (conn.try_recv().unwrap(), rx)
    }

    fn frame(a: &mut Actor, conn: ConnId, v: &Value) {
        a.frame(conn, v.to_string().as_bytes(), std::time::Instant::now());
        a.drain();
    }

    fn join(a: &mut Actor, conn: ConnId, peer: &str) {
        frame(
            a,
            conn,
            &json!({"type":"join","v":1,"room":"r","peer":peer}),
        );
    }

    /// The messages queued for a connection so far.
    fn take(rx: &mut OutboxRx) -> Vec<Value> {
        let mut v = Vec::new();
        while let Some(out) = rx.try_recv() {
            if let Outbound::Text(t) = out {
                v.push(serde_json::from_str(&t).unwrap());
            }
        }
        v
    }

    fn left(msgs: &[Value]) -> Vec<(String, String)> {
        msgs.iter()
            .filter(|m| m["type"] == "peer_left")
            .map(|m| (m["peer"].to_string(), m["reason"].to_string()))
            .collect()
    }

    #[test]
    fn a_leave_read_before_the_hang_up_is_handled_though_the_channel_closed_first() {
        // Arrange: a, b and c in one room.
        let mut a = actor();
        let (ca, _ra) = connect(&mut a, 16);
        let (cb, rb) = connect(&mut a, 16);
        let (cc, mut rc) = connect(&mut a, 16);
        join(&mut a, ca, "a");
        join(&mut a, cb, "b");
        join(&mut a, cc, "c");
        take(&mut rc);

        // Act: a and b send `leave` and hang up together. b's connection task has stopped
        // writing (its queue is closed) before the hub task reaches a's `leave`, which sends
        // b a `peer_left`; b's own `leave` and disconnect are still queued behind it.
        drop(rb);
        frame(&mut a, ca, &json!({"type":"leave"}));
        frame(&mut a, cb, &json!({"type":"leave"}));
        feed(&mut a, Cmd::Disconnect { conn: ca });
        feed(&mut a, Cmd::Disconnect { conn: cb });

        // Assert: c saw both leave; only c's session remains; b's id is free at once.
        let q = |s: &str| format!("\"{s}\"");
        let want = vec![(q("a"), q("left")), (q("b"), q("left"))];
        assert_eq!(left(&take(&mut rc)), want);
        assert_eq!(a.hub.stats().sessions, 1);
        let (cb2, mut rb2) = connect(&mut a, 16);
        join(&mut a, cb2, "b");
        assert_eq!(take(&mut rb2)[0]["type"], "welcome");
    }

    #[test]
    fn only_a_full_queue_counts_as_a_slow_consumer() {
        // Arrange: b's queue holds one frame (its `welcome`) and b never reads it.
        let mut a = actor();
        let (ca, _ra) = connect(&mut a, 16);
        let (cb, _rb) = connect(&mut a, 1);
        join(&mut a, ca, "a");
        join(&mut a, cb, "b");
        assert_eq!(a.hub.stats().connections, 2);

        // Act: c joins; b's `peer_joined` finds the queue full.
        let (cc, _rc) = connect(&mut a, 16);
        join(&mut a, cc, "c");

        // Assert: b's connection is dropped, its session stays resumable.
        let s = a.hub.stats();
        assert_eq!((s.connections, s.sessions), (2, 3));
    }
}
