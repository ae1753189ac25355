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

mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use floe_signal::bus::{Bus, BusCommand, BusEvent, Member, ResumedSession};
use floe_signal::proto::LeaveReason;
use floe_signal::{ErrorCode, PeerId, RoomId, SessionId};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Script, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::wire::Wire;

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

// ---- the driver ---------------------------------------------------------------------------

struct Scripts {
    join: Script,
    leave: Script,
    send: Script,
    kick: Script,
    heartbeat: Script,
    reap: Script,
    bye: Script,
    restore: Script,
    purge: Script,
    register: Script,
    ack: Script,
    resume: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| {
            Script::new(&format!(
                "{}\n{body}",
                include_str!("redis_bus/lua/prelude.lua")
            ))
        };
        Self {
            join: with_prelude(include_str!("redis_bus/lua/join.lua")),
            leave: with_prelude(include_str!("redis_bus/lua/leave.lua")),
            send: with_prelude(include_str!("redis_bus/lua/send.lua")),
            kick: with_prelude(include_str!("redis_bus/lua/kick.lua")),
            heartbeat: with_prelude(include_str!("redis_bus/lua/heartbeat.lua")),
            reap: with_prelude(include_str!("redis_bus/lua/reap.lua")),
            bye: with_prelude(include_str!("redis_bus/lua/bye.lua")),
            restore: with_prelude(include_str!("redis_bus/lua/restore.lua")),
            purge: with_prelude(include_str!("redis_bus/lua/purge.lua")),
            register: with_prelude(include_str!("redis_bus/lua/register.lua")),
            ack: with_prelude(include_str!("redis_bus/lua/ack.lua")),
            resume: with_prelude(include_str!("redis_bus/lua/resume.lua")),
        }
    }
}

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

impl Driver {
    async fn run(mut self) {
        // Consecutive failed attempts: the first of an outage is a warning, then one a minute.
        let mut failures: u32 = 0;
        loop {
            match self.connected().await {
                End::Stop => return,
                End::Lost(e) => {
                    metrics::gauge!("floe_signal_bus_connected").set(0.0);
                    bus_error("connect");
                    failures = if self.backoff == MIN_BACKOFF {
                        1
                    } else {
                        failures + 1
                    };
                    let retry_ms = self.backoff.as_millis() as u64;
                    if failures == 1 || failures % 12 == 0 {
                        tracing::warn!(error = %e, retry_ms, failures,
                            "signalling: Redis unreachable; reconnecting");
                    } else {
                        tracing::debug!(error = %e, retry_ms, failures,
                            "signalling: Redis unreachable; reconnecting");
                    }
                }
            }
            if self.wait_backoff().await {
                return;
            }
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits one backoff interval, queueing commands and failing stale ones. `true`: stop.
    async fn wait_backoff(&mut self) -> bool {
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        let until = Instant::now() + self.backoff + jitter;
        loop {
            self.expire_stale();
            tokio::select! {
                () = tokio::time::sleep_until(until) => return false,
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.queue(cmd),
                    None => return true,
                },
                stop = self.stop.recv() => {
                    // Redis is unreachable: nothing to remove; the TTL will reap our members.
                    if let Some(done) = stop {
                        let _ = done.send(());
                    }
                    return true;
                }
            }
        }
    }

    /// One connected period: connect, register, then serve until the connection fails.
    async fn connected(&mut self) -> End {
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return End::Lost(e),
        };
        let pubsub = match self.subscribe().await {
            Ok(p) => p,
            Err(e) => return End::Lost(e),
        };
        let (_sink, mut stream) = pubsub.split();
        if let Err(e) = self.load_scripts(&mut conn).await {
            return End::Lost(e);
        }
        if let Err(e) = self.sync(&mut conn).await {
            return End::Lost(e);
        }
        metrics::gauge!("floe_signal_bus_connected").set(1.0);
        tracing::info!(node = %self.node, "signalling: connected to Redis");
        self.backoff = MIN_BACKOFF;
        let beat = self.ttl / 3;
        let mut next_beat = Instant::now() + beat;
        loop {
            if let Err(e) = self.run_pending(&mut conn).await {
                return End::Lost(e);
            }
            let reconcile_at = self.reconcile_at;
            let reconcile = async move {
                match reconcile_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            // Unbiased: a flood of events must not starve the heartbeat (or the reverse).
            tokio::select! {
                stop = self.stop.recv() => {
                    if let Err(e) = self.script_bye(&mut conn).await {
                        bus_error("bye");
                        tracing::warn!(error = %e, "signalling: could not hand this node's sessions over in Redis");
                    }
                    if let Some(done) = stop {
                        let _ = done.send(());
                    }
                    return End::Stop;
                }
                msg = stream.next() => match msg {
                    Some(m) => self.on_message(m.get_payload_bytes()),
                    None => return End::Lost(dropped("the pub/sub connection closed")),
                },
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.queue(cmd),
                    None => return End::Stop,
                },
                () = tokio::time::sleep_until(next_beat) => {
                    next_beat = Instant::now() + beat;
                    if let Err(e) = self.beat(&mut conn).await {
                        return End::Lost(e);
                    }
                }
                () = reconcile => {
                    self.reconcile_at = None;
                    if let Err(e) = self.reconcile(&mut conn).await {
                        return End::Lost(e);
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, RedisError> {
        let chan = format!("{PREFIX}node:{}:events", self.node);
        let attempt = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(chan).await?;
            Ok(pubsub)
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(timed_out("subscribing")),
        }
    }

    // ---- commands ------------------------------------------------------------------------

    /// Queues a command from the hub. A leaving session stops being ours at once (it is not
    /// restored, and its `left` event does not evict it).
    fn queue(&mut self, cmd: BusCommand) {
        if let BusCommand::Leave { session, .. } = &cmd {
            if let Some(l) = self.local.remove(session) {
                self.forget_local(&l.room);
            }
        }
        self.pending.push_back((cmd, Instant::now()));
    }

    /// Runs queued commands in order, up to [`MAX_BATCH`] per round trip (one pipeline of
    /// EVALSHA calls: Redis runs them in order, each one atomically). A connection error leaves
    /// the batch queued; a command Redis refuses fails alone.
    async fn run_pending(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        self.expire_stale();
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_BATCH);
            let batch: Vec<BusCommand> = self
                .pending
                .iter()
                .take(n)
                .map(|(c, _)| c.clone())
                .collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            let mut sent = Vec::with_capacity(n);
            for cmd in batch {
                if let Some(c) = self.build(&cmd) {
                    pipe.add_command(c);
                    sent.push(cmd);
                }
            }
            let results: Vec<redis::RedisResult<redis::Value>> = match pipe.query_async(conn).await
            {
                Ok(r) => r,
                Err(e) if is_connection_error(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "signalling: Redis refused a batch of directory commands");
                    sent.iter().map(|_| Err(e.clone())).collect()
                }
            };
            for (cmd, res) in sent.into_iter().zip(results) {
                match res {
                    Ok(_) => self.executed(&cmd),
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        // The script cache was flushed under us: load and run this one again.
                        self.load_scripts(conn).await?;
                        if let Some(c) = self.build(&cmd) {
                            match c.query_async::<redis::Value>(conn).await {
                                Ok(_) => self.executed(&cmd),
                                Err(e) if is_connection_error(&e) => return Err(e),
                                Err(_) => self.fail(cmd.clone(), op_name(&cmd)),
                            }
                        }
                    }
                    Err(e) if is_connection_error(&e) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, op = op_name(&cmd), "signalling: Redis refused a directory command");
                        self.fail(cmd.clone(), op_name(&cmd));
                    }
                }
            }
            self.pending.drain(..n);
        }
        Ok(())
    }

    /// Loads every script into Redis's cache (after connecting; EVALSHA needs them).
    async fn load_scripts(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let s = &self.scripts;
        for script in [
            &s.join,
            &s.leave,
            &s.send,
            &s.kick,
            &s.heartbeat,
            &s.reap,
            &s.bye,
            &s.restore,
            &s.purge,
            &s.register,
            &s.ack,
            &s.resume,
        ] {
            script.prepare_invoke().load_async(conn).await?;
        }
        Ok(())
    }

    /// The EVALSHA call for `cmd` (`None`: nothing to run).
    fn build(&mut self, cmd: &BusCommand) -> Option<redis::Cmd> {
        let evalsha = |script: &Script| {
            let mut c = redis::cmd("EVALSHA");
            c.arg(script.get_hash()).arg(0).arg(PREFIX);
            c
        };
        match cmd {
            BusCommand::Join {
                room,
                peer,
                session,
                subscribe,
                max_peers,
            } => {
                self.joining.insert(
                    session.clone(),
                    Joining {
                        peer: peer.clone(),
                        subscribe: *subscribe,
                        executed: false,
                    },
                );
                let mut c = evalsha(&self.scripts.join);
                c.arg(room.as_str())
                    .arg(peer.as_str())
                    .arg(session.as_str())
                    .arg(&self.node)
                    .arg(u8::from(*subscribe))
                    .arg(*max_peers);
                Some(c)
            }
            BusCommand::Leave {
                room,
                peer,
                session,
                reason,
            } => {
                let mut c = evalsha(&self.scripts.leave);
                c.arg(room.as_str())
                    .arg(peer.as_str())
                    .arg(session.as_str())
                    .arg(reason_str(*reason))
                    .arg(&self.node);
                Some(c)
            }
            BusCommand::Send {
                room,
                from,
                origin,
                to,
                signal,
                ref_seq,
            } => {
                let Ok(msg) = serde_json::to_string(signal) else {
                    bus_error("send");
                    return None;
                };
                let mut c = evalsha(&self.scripts.send);
                c.arg(room.as_str())
                    .arg(from.as_str())
                    .arg(origin.as_str())
                    .arg(to.as_ref().map_or("", PeerId::as_str))
                    .arg(msg)
                    .arg(ref_seq.map(|s| s.to_string()).unwrap_or_default())
                    .arg(&self.node);
                Some(c)
            }
            BusCommand::Kick { room, origin, peer } => {
                let mut c = evalsha(&self.scripts.kick);
                c.arg(room.as_str())
                    .arg(origin.as_str())
                    .arg(peer.as_str())
                    .arg(&self.node);
                Some(c)
            }
            BusCommand::Register(r) => {
                let mut c = evalsha(&self.scripts.register);
                c.arg(r.session.as_str())
                    .arg(r.token.as_str())
                    .arg(wire::encode_perms(r.perms))
                    .arg(r.token_exp.map(|e| e.to_string()).unwrap_or_default())
                    .arg(r.resume_ttl_ms)
                    .arg(r.mailbox_max_msgs)
                    .arg(r.mailbox_max_bytes);
                Some(c)
            }
            BusCommand::Ack { session, seq } => {
                let mut c = evalsha(&self.scripts.ack);
                c.arg(session.as_str()).arg(*seq);
                Some(c)
            }
            BusCommand::Resume {
                session,
                token,
                last_seq,
            } => {
                let mut c = evalsha(&self.scripts.resume);
                c.arg(session.as_str())
                    .arg(token.as_str())
                    .arg(*last_seq)
                    .arg(&self.node);
                Some(c)
            }
            other => {
                tracing::warn!(?other, "signalling: unknown bus command ignored");
                None
            }
        }
    }

    /// Bookkeeping after Redis ran `cmd`.
    fn executed(&mut self, cmd: &BusCommand) {
        if let BusCommand::Join { session, .. } = cmd {
            if let Some(j) = self.joining.get_mut(session) {
                j.executed = true;
            }
        }
    }

    /// Commands that waited longer than [`COMMAND_DEADLINE`] fail.
    fn expire_stale(&mut self) {
        let now = Instant::now();
        while let Some((_, at)) = self.pending.front() {
            if now.duration_since(*at) < COMMAND_DEADLINE {
                break;
            }
            if let Some((cmd, _)) = self.pending.pop_front() {
                self.fail(cmd, "expired");
            }
        }
    }

    /// A command that could not run: a join is refused, anything else is dropped (counted).
    fn fail(&mut self, cmd: BusCommand, op: &'static str) {
        bus_error(op);
        match cmd {
            BusCommand::Join { session, .. } => {
                self.joining.remove(&session);
                self.emit(BusEvent::JoinRejected {
                    session,
                    code: ErrorCode::Internal,
                    message: "the room directory is unavailable; retry shortly".into(),
                });
            }
            BusCommand::Send { .. } => {
                tracing::debug!("signalling: routed message dropped, Redis unavailable");
            }
            BusCommand::Resume { session, .. } => {
                self.emit(BusEvent::ResumeRejected { session });
            }
            // A lost leave is purged when the node reconnects; a lost kick is reported nowhere.
            _ => {}
        }
    }

    // ---- events ------------------------------------------------------------------------

    fn on_message(&mut self, payload: &[u8]) {
        let w = match wire::parse(payload) {
            Ok(w) => w,
            Err(e) => {
                bus_error("decode");
                tracing::debug!(error = %e, bytes = payload.len(), "signalling: malformed event from Redis dropped");
                return;
            }
        };
        metrics::counter!("floe_signal_bus_events_total").increment(1);
        match w {
            Wire::Accepted {
                room,
                session,
                idx,
                members,
            } => {
                let Some(j) = self.joining.remove(&session) else {
                    return;
                };
                let members: Vec<Member> = members.into_iter().map(Member::from).collect();
                // The newcomer itself enters the mirror with its `joined` event, which follows
                // and must reach the hub (other local sessions announce it).
                let mirror = self.mirror.entry(room.clone()).or_default();
                for m in &members {
                    mirror.insert(m.peer.clone(), m.clone());
                }
                self.local.insert(
                    session.clone(),
                    LocalMember {
                        room: room.clone(),
                        peer: j.peer,
                        join_index: idx,
                        subscribe: j.subscribe,
                    },
                );
                self.emit(BusEvent::JoinAccepted {
                    room,
                    session,
                    join_index: idx,
                    members,
                });
            }
            Wire::Rejected {
                session,
                peer,
                code,
                max,
            } => {
                self.joining.remove(&session);
                let message = match code {
                    ErrorCode::PeerIdTaken => {
                        format!("peer id {peer} is already in use in this room")
                    }
                    _ => format!("the room is full ({max} peers)"),
                };
                self.emit(BusEvent::JoinRejected {
                    session,
                    code,
                    message,
                });
            }
            Wire::Joined {
                room,
                peer,
                session,
                idx,
                sub,
                seqs,
            } => {
                let member = Member {
                    peer: peer.clone(),
                    session,
                    join_index: idx,
                    subscribe: sub == 1,
                };
                // Only rooms this node hosts, and only news (a restored member is announced
                // again).
                let Some(m) = self.mirror.get_mut(&room) else {
                    return;
                };
                if m.get(&peer).is_some_and(|x| x.session == member.session) {
                    return;
                }
                m.insert(peer, member.clone());
                self.emit(BusEvent::MemberJoined { room, member, seqs });
            }
            Wire::Left {
                room,
                peer,
                session,
                reason,
                seqs,
            } => self.member_left(room, peer, session, reason, seqs),
            Wire::Deliver {
                to,
                from,
                b,
                msg,
                seq,
            } => self.emit(BusEvent::Deliver {
                to,
                from,
                signal: msg,
                broadcast: b == 1,
                seq,
            }),
            Wire::Resumed(r) => self.resumed(*r),
            Wire::ResumeRejected { session } => {
                self.emit(BusEvent::ResumeRejected { session });
            }
            Wire::Undeliverable {
                origin,
                to,
                ref_seq,
            } => self.emit(BusEvent::Undeliverable {
                origin,
                to,
                ref_seq,
            }),
            Wire::Evict { session, code } => {
                if let Some(l) = self.local.remove(&session) {
                    self.forget_local(&l.room);
                }
                self.emit(BusEvent::Evict { session, code });
            }
        }
    }

    /// A session moved to this node: host it (restore, mirror) and hand it to the hub.
    fn resumed(&mut self, r: wire::WireResumed) {
        let Some(perms) = wire::decode_perms(&r.perms) else {
            bus_error("decode");
            self.emit(BusEvent::ResumeRejected { session: r.session });
            return;
        };
        let members: Vec<Member> = r.members.into_iter().map(Member::from).collect();
        let mirror = self.mirror.entry(r.room.clone()).or_default();
        for m in &members {
            mirror.insert(m.peer.clone(), m.clone());
        }
        self.local.insert(
            r.session.clone(),
            LocalMember {
                room: r.room.clone(),
                peer: r.peer.clone(),
                join_index: r.idx,
                subscribe: r.sub == 1,
            },
        );
        let missed = r.missed.into_iter().filter_map(|e| e.entry()).collect();
        self.emit(BusEvent::Resumed(Box::new(ResumedSession {
            session: r.session,
            room: r.room,
            peer: r.peer,
            join_index: r.idx,
            perms,
            token_exp: r.exp,
            received: r.rcv,
            last_seq: r.seq,
            members,
            missed,
        })));
    }

    fn member_left(
        &mut self,
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        reason: LeaveReason,
        seqs: BTreeMap<SessionId, u64>,
    ) {
        // Only members the hub knows (a member can be reported gone twice: by a reconcile, then
        // by its own node's purge).
        let known = self
            .mirror
            .get_mut(&room)
            .is_some_and(|m| match m.get(&peer) {
                Some(x) if x.session == session => m.remove(&peer).is_some(),
                _ => false,
            });
        // The directory removed a session this node still hosts (another node reaped us while
        // we could not beat): end it here too, or its peer id would be held twice.
        let evict = self.local.remove(&session).is_some();
        if known {
            self.emit(BusEvent::MemberLeft {
                room: room.clone(),
                peer: peer.clone(),
                session: session.clone(),
                reason,
                seqs,
            });
        }
        if evict {
            self.forget_local(&room);
            self.emit(BusEvent::Evict {
                session,
                code: ErrorCode::ServerShutdown,
            });
        }
    }

    /// Drops the mirror of `room` when this node no longer hosts anyone in it.
    fn forget_local(&mut self, room: &RoomId) {
        if !self.local.values().any(|l| &l.room == room) {
            self.mirror.remove(room);
        }
    }

    fn emit(&self, ev: BusEvent) {
        // The hub task is gone only during shutdown.
        let _ = self.events.send(ev);
    }

    // ---- membership upkeep -------------------------------------------------------------

    /// After (re)connecting: register, put back our members, purge ghosts, plan a reconcile.
    async fn sync(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        // Joins whose answer was lost with the old connection: refuse them (purged below).
        let lost: Vec<SessionId> = self
            .joining
            .iter()
            .filter(|(_, j)| j.executed)
            .map(|(s, _)| s.clone())
            .collect();
        for s in lost {
            self.joining.remove(&s);
            bus_error("join");
            self.emit(BusEvent::JoinRejected {
                session: s,
                code: ErrorCode::Internal,
                message: "the room directory was interrupted; retry".into(),
            });
        }
        self.heartbeat(conn).await?;
        self.restore(conn).await?;
        if !self.local.is_empty() || !self.mirror.is_empty() {
            self.reconcile_at = Some(Instant::now() + self.ttl / 3);
        }
        Ok(())
    }

    /// Puts back the members this node hosts and removes the ones it no longer does.
    async fn restore(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let mut rooms: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(format!("{PREFIX}node:{}:rooms", self.node))
            .query_async(conn)
            .await?;
        rooms.extend(self.local.values().map(|l| l.room.to_string()));
        for room in rooms {
            let mut inv = self.scripts.purge.prepare_invoke();
            inv.arg(PREFIX).arg(&room).arg(&self.node);
            for (s, l) in &self.local {
                if l.room.as_str() == room {
                    inv.arg(s.as_str());
                }
            }
            let _: i64 = inv.invoke_async(conn).await?;
        }
        let mut conflicts = Vec::new();
        for (s, l) in &self.local {
            let ok: i64 = self
                .scripts
                .restore
                .arg(PREFIX)
                .arg(l.room.as_str())
                .arg(l.peer.as_str())
                .arg(s.as_str())
                .arg(&self.node)
                .arg(l.join_index)
                .arg(u8::from(l.subscribe))
                .invoke_async(conn)
                .await?;
            if ok == 0 {
                conflicts.push(s.clone());
            }
        }
        for s in conflicts {
            // Another session took the peer id while Redis had forgotten ours.
            bus_error("sync");
            if let Some(l) = self.local.remove(&s) {
                self.forget_local(&l.room);
            }
            self.emit(BusEvent::Evict {
                session: s,
                code: ErrorCode::SessionReplaced,
            });
        }
        Ok(())
    }

    /// Compares each hosted room with Redis and tells the hub what it missed while the
    /// connection was down.
    async fn reconcile(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let rooms: Vec<RoomId> = self.mirror.keys().cloned().collect();
        for room in rooms {
            let raw: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{PREFIX}room:{room}:members"))
                .query_async(conn)
                .await?;
            let mut now: BTreeMap<PeerId, Member> = BTreeMap::new();
            for (peer, value) in &raw {
                match wire::parse_record(peer, value) {
                    Some((m, _node)) => {
                        now.insert(m.peer.clone(), m);
                    }
                    None => bus_error("decode"),
                }
            }
            let Some(before) = self.mirror.get(&room).cloned() else {
                continue;
            };
            for (peer, m) in &before {
                if now.get(peer).is_none_or(|n| n.session != m.session) {
                    self.member_left(
                        room.clone(),
                        peer.clone(),
                        m.session.clone(),
                        LeaveReason::Timeout,
                        BTreeMap::new(),
                    );
                }
            }
            let mut joined: Vec<&Member> = now
                .values()
                .filter(|n| before.get(&n.peer).is_none_or(|m| m.session != n.session))
                .collect();
            joined.sort_by_key(|m| m.join_index);
            for m in joined {
                if let Some(mirror) = self.mirror.get_mut(&room) {
                    mirror.insert(m.peer.clone(), m.clone());
                }
                self.emit(BusEvent::MemberJoined {
                    room: room.clone(),
                    member: m.clone(),
                    seqs: BTreeMap::new(),
                });
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self, conn: &mut MultiplexedConnection) -> Result<bool, RedisError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let added: i64 = self
            .scripts
            .heartbeat
            .arg(PREFIX)
            .arg(&self.node)
            .arg(ttl_ms)
            .invoke_async(conn)
            .await?;
        Ok(added == 1)
    }

    /// A heartbeat plus a sweep for crashed nodes.
    async fn beat(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let reregistered = match self.heartbeat(conn).await {
            Ok(r) => r,
            Err(e) => {
                bus_error("heartbeat");
                return Err(e);
            }
        };
        if reregistered {
            // Redis lost our registration (restart, or we were reaped): restore and reconcile.
            tracing::warn!(node = %self.node, "signalling: this node was missing from Redis; restoring its peers");
            self.restore(conn).await?;
            self.reconcile_at = Some(Instant::now() + self.ttl / 3);
        }
        match self
            .scripts
            .reap
            .arg(PREFIX)
            .invoke_async::<i64>(conn)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                nodes = n,
                "signalling: reaped the peers of unresponsive nodes"
            ),
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => {
                bus_error("reap");
                tracing::warn!(error = %e, "signalling: reaping failed");
            }
        }
        Ok(())
    }

    async fn script_bye(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let _: i64 = self
            .scripts
            .bye
            .arg(PREFIX)
            .arg(&self.node)
            .invoke_async(conn)
            .await?;
        self.local.clear();
        self.mirror.clear();
        Ok(())
    }
}

// ---- helpers --------------------------------------------------------------------------------

fn bus_error(op: &'static str) {
    metrics::counter!("floe_signal_bus_errors_total", "op" => op).increment(1);
}

fn op_name(cmd: &BusCommand) -> &'static str {
    match cmd {
        BusCommand::Join { .. } => "join",
        BusCommand::Leave { .. } => "leave",
        BusCommand::Send { .. } => "send",
        BusCommand::Kick { .. } => "kick",
        BusCommand::Register(_) => "register",
        BusCommand::Ack { .. } => "ack",
        BusCommand::Resume { .. } => "resume",
        _ => "other",
    }
}

fn reason_str(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Left => "left",
        LeaveReason::Timeout => "timeout",
        LeaveReason::Kicked => "kicked",
        LeaveReason::Expired => "expired",
        LeaveReason::Overflow => "overflow",
        LeaveReason::Shutdown => "shutdown",
        _ => "left",
    }
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

    #[test]
    fn leave_reasons_match_the_wire_names() {
        for r in [
            LeaveReason::Left,
            LeaveReason::Timeout,
            LeaveReason::Kicked,
            LeaveReason::Expired,
            LeaveReason::Overflow,
            LeaveReason::Shutdown,
        ] {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", reason_str(r)));
        }
    }
}
