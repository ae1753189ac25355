//! The TURN server's IO shell: listeners, relay sockets and RFC 6062 peer connections around the
//! sans-IO [`TurnServer`] (which also answers STUN Binding, with RFC 5780 when configured).
//!
//! # Shape
//! * The state is split into *shards*, one per worker, each a [`TurnServer`] behind its own
//!   mutex. There is no global lock on the relay path: a UDP client is served by the shard whose
//!   SO_REUSEPORT socket the kernel picked for its 4-tuple; a TCP/TLS client by the shard chosen
//!   by hashing its address; a relay socket belongs to the shard that allocated it. State common
//!   to all shards (quota counts, RFC 6062 connection ids) is in the state machine's `Shared`.
//! * Each shard has its own thread with a current-thread tokio runtime that drives the shard's
//!   UDP listener sockets, its UDP relay sockets and its timer; TCP/TLS clients run on the
//!   caller's runtime. See `ARCHITECTURE.md`, "Concurrency model".
//! * A mutex is held only for the synchronous `handle_*` call and the route lookup; sends happen
//!   after it is released. UDP sockets are drained with `recvmmsg` and datagrams to clients
//!   leave in `sendmmsg` batches (`turn/batch.rs`), through per-thread buffers, so relaying a
//!   packet allocates nothing (over TCP/TLS the outgoing frame is handed to the connection's
//!   writer as an owned buffer).
//! * The clock is read once per received batch (`Instant::now`), the unix time derived from it.
//! * RFC 6062: a TCP allocation's relayed address is a listening socket; Connect opens a TCP
//!   connection from that address; ConnectionBind turns the client's data connection into a
//!   byte pipe to the peer connection.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use floe_stun::ChannelData;
use floe_stun::Message;
use floe_turn::quota::QuotaConfig;
use floe_turn::server::{
    BindError, ClientTuple, ConnectionId, Event, RelayBinder, RelayTransport, Shared, Transmit,
    Transport, TurnConfig, TurnServer, TurnStats,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use crate::net::{self, ListenError, ListenGroup};

mod batch;
mod mmsg;

/// Output buffer: the largest relayed UDP payload plus a Data indication's header.
const OUT_BUF: usize = 65_600;
/// Largest STUN or ChannelData frame over TCP/TLS (16-bit length plus header).
const MAX_FRAME: usize = 65_535 + 20;
/// Frames queued for one TCP/TLS client before further ones are dropped.
const STREAM_QUEUE: usize = 256;
/// RFC 6062 §5.2: at least 30 s to connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// A TLS handshake that takes longer is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of the TURN IO shell.
#[derive(Debug, Clone)]
pub struct TurnShellConfig {
    /// UDP and TCP listening addresses.
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 alternate IP (STUN NAT discovery on the same ports).
    pub alternate_ip: Option<IpAddr>,
    /// TLS listening addresses (`turns:`).
    pub tls_listen: Vec<SocketAddr>,
    /// The TLS configuration, required when `tls_listen` is not empty.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Shards (0: one per core).
    pub workers: usize,
    /// The sans-IO state machine's configuration.
    pub turn: TurnConfig,
    /// Quotas shared by all shards.
    pub quotas: QuotaConfig,
    /// Most TCP and TLS client connections at once.
    pub max_tcp_connections: usize,
    /// A client TCP/TLS connection silent for this long is closed (RFC 8656 clients refresh at
    /// least every 5 minutes, so keep this above 300 s).
    pub tcp_idle_timeout: Duration,
}

/// Errors starting the TURN server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnShellError {
    /// A listening socket could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// `tls_listen` is set but no TLS configuration was given.
    #[error("TLS listening addresses need a certificate and key")]
    NoTlsConfig,
    /// A shard's thread or runtime could not be started.
    #[error("cannot start a TURN worker thread: {0}")]
    Runtime(#[source] io::Error),
}

/// One worker's state.
struct Shard {
    state: Mutex<ShardState>,
    /// The shard's own current-thread runtime: it drives the shard's UDP listener sockets, its
    /// relay sockets and its timer, all on one OS thread (see [`spawn_shard_runtime`]).
    rt: tokio::runtime::Handle,
    /// The shard's UDP listener sockets, registered with `rt`.
    listeners: Vec<(SocketAddr, Arc<UdpSocket>)>,
}

/// The route maps, looked up for every relayed packet: foldhash, seeded per map (see
/// `floe_turn::server`'s `FastMap` for why that is safe enough here).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct ShardState {
    turn: TurnServer,
    /// Relay sockets bound by this shard.
    relays: FastMap<(SocketAddr, RelayTransport), Relay>,
    /// This shard's client-facing UDP sockets by local address.
    udp: FastMap<SocketAddr, Arc<UdpSocket>>,
    /// This shard's TCP/TLS clients by (local, remote).
    streams: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
}

struct Relay {
    udp: Option<Arc<UdpSocket>>,
    task: AbortHandle,
}

/// State every task can reach.
struct Ctx {
    shards: Vec<Arc<Shard>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tcp_slots: Arc<Semaphore>,
    idle: Duration,
    hasher: std::collections::hash_map::RandomState,
    /// RFC 6062 peer connections not yet spliced to a client data connection.
    peer_conns: Mutex<HashMap<ConnectionId, TcpStream>>,
    /// Running splices, to stop them on CloseConnection.
    splices: Mutex<HashMap<ConnectionId, AbortHandle>>,
    /// TCP relay addresses in use by this process (their listeners use SO_REUSEPORT so that
    /// Connect can originate from the same address; this set keeps them unique).
    tcp_relays: Mutex<HashSet<SocketAddr>>,
    epoch: (Instant, u64),
}

/// A poisoned mutex only means another task panicked while holding it; the state machine's data
/// is still consistent between calls, so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    fn unix_secs(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn shard_for(&self, remote: SocketAddr) -> &Arc<Shard> {
        let n = self.shards.len().max(1);
        &self.shards[(self.hasher.hash_one(remote) as usize) % n]
    }
}

/// A bound TURN server, ready to [`run`](TurnService::run).
pub struct TurnService {
    ctx: Arc<Ctx>,
    groups: Vec<ListenGroup>,
    tls_listeners: Vec<TcpListener>,
    /// Dropping these stops the shards' threads (and their runtimes).
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for TurnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnService")
            .field("listen", &self.local_addrs())
            .field("tls", &self.tls_addrs())
            .finish()
    }
}

impl TurnService {
    /// Binds every listening socket. Must run inside a tokio runtime.
    pub async fn bind(config: TurnShellConfig) -> Result<TurnService, TurnShellError> {
        let workers = if config.workers == 0 {
            net::default_workers()
        } else {
            config.workers
        };
        let mut groups = config
            .listen
            .iter()
            .map(|&l| ListenGroup::bind(l, config.alternate_ip, workers))
            .collect::<Result<Vec<_>, _>>()?;
        let mut runtimes = Vec::with_capacity(workers);
        let mut stops = Vec::with_capacity(workers);
        for w in 0..workers {
            let (handle, stop) = spawn_shard_runtime(w).map_err(TurnShellError::Runtime)?;
            runtimes.push(handle);
            stops.push(stop);
        }
        // Move every worker's UDP listener sockets onto that worker's runtime.
        let mut listeners = vec![Vec::new(); workers];
        for g in &mut groups {
            for (w, set) in std::mem::take(&mut g.sockets).into_iter().enumerate() {
                let set = Arc::try_unwrap(set).unwrap_or_else(|shared| (*shared).clone());
                for (addr, socket) in set {
                    let socket =
                        reregister(socket, &runtimes[w]).map_err(|source| ListenError::Bind {
                            proto: "udp",
                            addr,
                            source,
                        })?;
                    listeners[w].push((addr, socket));
                }
            }
        }
        let mut tls_listeners = Vec::new();
        for &addr in &config.tls_listen {
            let l = net::tcp_listener(addr).map_err(|source| ListenError::Bind {
                proto: "tcp",
                addr,
                source,
            })?;
            tls_listeners.push(
                TcpListener::from_std(l).map_err(|source| ListenError::Bind {
                    proto: "tcp",
                    addr,
                    source,
                })?,
            );
        }
        let tls = match (&config.tls, tls_listeners.is_empty()) {
            (Some(c), _) => Some(tokio_rustls::TlsAcceptor::from(c.clone())),
            (None, true) => None,
            (None, false) => return Err(TurnShellError::NoTlsConfig),
        };
        let shared = Arc::new(Shared::new(config.quotas));
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut turn_config = config.turn.clone();
        // RFC 5780 through the TURN port: the Binding service learns the alternate addresses.
        turn_config.binding.alternates = groups.iter().filter_map(|g| g.alternate).collect();
        let shards = runtimes
            .into_iter()
            .zip(listeners)
            .map(|(rt, listeners)| {
                let udp = listeners.iter().cloned().collect();
                Arc::new(Shard {
                    state: Mutex::new(ShardState {
                        turn: TurnServer::new(
                            turn_config.clone(),
                            shared.clone(),
                            rand::random(),
                            now,
                        ),
                        relays: FastMap::default(),
                        udp,
                        streams: HashMap::new(),
                    }),
                    rt,
                    listeners,
                })
            })
            .collect();
        let ctx = Arc::new(Ctx {
            shards,
            tls,
            tcp_slots: Arc::new(Semaphore::new(config.max_tcp_connections)),
            idle: config.tcp_idle_timeout,
            hasher: std::collections::hash_map::RandomState::new(),
            peer_conns: Mutex::new(HashMap::new()),
            splices: Mutex::new(HashMap::new()),
            tcp_relays: Mutex::new(HashSet::new()),
            epoch: (now, unix),
        });
        Ok(TurnService {
            ctx,
            groups,
            tls_listeners,
            stops,
        })
    }

    /// The primary UDP/TCP addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.groups
            .iter()
            .filter_map(|g| g.addrs.first().copied())
            .collect()
    }

    /// Every UDP/TCP address bound, RFC 5780 siblings included.
    pub fn all_addrs(&self) -> Vec<SocketAddr> {
        self.groups
            .iter()
            .flat_map(|g| g.addrs.iter().copied())
            .collect()
    }

    /// The TLS addresses actually bound.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes; then stops every task and closes every socket.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        for shard in &self.ctx.shards {
            for (local, socket) in &shard.listeners {
                tasks.spawn_on(
                    udp_client_loop(self.ctx.clone(), shard.clone(), *local, socket.clone()),
                    &shard.rt,
                );
            }
            tasks.spawn_on(timer_loop(self.ctx.clone(), shard.clone()), &shard.rt);
            tasks.spawn_on(batch::flush_loop(udp_send_failed), &shard.rt);
        }
        for group in self.groups {
            for listener in group.tcp {
                tasks.spawn(accept_loop(self.ctx.clone(), listener, Transport::Tcp));
            }
        }
        for listener in self.tls_listeners {
            tasks.spawn(accept_loop(self.ctx.clone(), listener, Transport::Tls));
        }
        tasks.spawn(metrics_loop(self.ctx.clone()));
        shutdown.await;
        tasks.shutdown().await;
        for shard in &self.ctx.shards {
            let mut st = lock(&shard.state);
            for (_, relay) in st.relays.drain() {
                relay.task.abort();
            }
            st.streams.clear();
        }
        for (_, h) in lock(&self.ctx.splices).drain() {
            h.abort();
        }
        lock(&self.ctx.peer_conns).clear();
        drop(self.stops);
    }
}

/// Starts a shard's OS thread running a current-thread tokio runtime until the returned sender
/// is dropped. A shard's UDP sockets are registered with and driven by this runtime only, so a
/// relayed datagram is received, handled and sent on one thread: no work stealing, no
/// cross-thread wake-ups, and the shard's mutex is uncontended on the UDP path (TCP/TLS clients,
/// served by the caller's runtime, still take it).
fn spawn_shard_runtime(
    worker: usize,
) -> io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("floe-turn-{worker}"))
        .spawn(move || {
            let _ = rt.block_on(stopped);
        })?;
    Ok((handle, stop))
}

/// Moves a UDP socket registered with the current runtime onto `rt`'s IO driver.
fn reregister(socket: Arc<UdpSocket>, rt: &tokio::runtime::Handle) -> io::Result<Arc<UdpSocket>> {
    match Arc::try_unwrap(socket) {
        Ok(socket) => {
            let std_socket = socket.into_std()?;
            let _entered = rt.enter();
            Ok(Arc::new(UdpSocket::from_std(std_socket)?))
        }
        // Shared elsewhere (not expected): keep it where it is; it works from any runtime.
        Err(shared) => Ok(shared),
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch: one call into a shard's state machine, then sending what it produced
// ---------------------------------------------------------------------------------------------

/// Where `out[..len]` goes, resolved under the shard lock.
enum Route {
    Udp(Arc<UdpSocket>, SocketAddr),
    /// To a UDP client: from a client-facing socket (queued on the UDP fast path).
    UdpClient(Arc<UdpSocket>, SocketAddr),
    Stream(mpsc::Sender<Vec<u8>>),
}

struct Dispatch {
    route: Option<(Route, usize)>,
    events: Vec<Event>,
}

/// Opens and closes relay sockets for a shard; runs under the shard lock.
struct Binder<'a> {
    ctx: &'a Arc<Ctx>,
    shard: &'a Arc<Shard>,
    relays: &'a mut FastMap<(SocketAddr, RelayTransport), Relay>,
}

impl RelayBinder for Binder<'_> {
    fn bind(&mut self, addr: SocketAddr, transport: RelayTransport) -> Result<(), BindError> {
        let relay = match transport {
            RelayTransport::Udp => bind_udp_relay(self.ctx, self.shard, addr)?,
            RelayTransport::Tcp => bind_tcp_relay(self.ctx, self.shard, addr)?,
        };
        metrics::gauge!("floe_turn_relay_sockets").increment(1.0);
        self.relays.insert((addr, transport), relay);
        Ok(())
    }

    fn release(&mut self, addr: SocketAddr, transport: RelayTransport) {
        if let Some(relay) = self.relays.remove(&(addr, transport)) {
            relay.task.abort();
            metrics::gauge!("floe_turn_relay_sockets").decrement(1.0);
        }
        if transport == RelayTransport::Tcp {
            lock(&self.ctx.tcp_relays).remove(&addr);
        }
    }
}

fn bind_error(e: &io::Error) -> BindError {
    match e.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse,
        _ => BindError::Unavailable,
    }
}

fn bind_udp_relay(
    ctx: &Arc<Ctx>,
    shard: &Arc<Shard>,
    addr: SocketAddr,
) -> Result<Relay, BindError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| bind_error(&e))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(|e| bind_error(&e))?;
    }
    socket.set_nonblocking(true).map_err(|e| bind_error(&e))?;
    socket.bind(&addr.into()).map_err(|e| bind_error(&e))?;
    let _ = socket.set_recv_buffer_size(1 << 20);
    // Registered with and driven by the shard's own runtime, whichever thread allocates.
    let socket = {
        let _entered = shard.rt.enter();
        UdpSocket::from_std(socket.into()).map_err(|e| bind_error(&e))?
    };
    let socket = Arc::new(socket);
    let task = shard.rt.spawn(relay_udp_loop(
        ctx.clone(),
        shard.clone(),
        addr,
        socket.clone(),
    ));
    Ok(Relay {
        udp: Some(socket),
        task: task.abort_handle(),
    })
}

/// A socket for a TCP relayed address: SO_REUSEADDR and SO_REUSEPORT so RFC 6062 Connect can
/// originate from the same address as the listener. Uniqueness within this process is kept by
/// `Ctx::tcp_relays`.
fn tcp_relay_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn bind_tcp_relay(
    ctx: &Arc<Ctx>,
    shard: &Arc<Shard>,
    addr: SocketAddr,
) -> Result<Relay, BindError> {
    if !lock(&ctx.tcp_relays).insert(addr) {
        return Err(BindError::InUse);
    }
    let listener = tcp_relay_socket(addr)
        .and_then(|s| {
            s.listen(128)?;
            TcpListener::from_std(s.into())
        })
        .map_err(|e| {
            lock(&ctx.tcp_relays).remove(&addr);
            bind_error(&e)
        })?;
    let task = tokio::spawn(relay_tcp_accept_loop(
        ctx.clone(),
        shard.clone(),
        addr,
        listener,
    ));
    Ok(Relay {
        udp: None,
        task: task.abort_handle(),
    })
}

/// Runs `f` against the shard's state machine with a binder, resolves the route of what it
/// produced and drains its events, all under the shard lock.
fn dispatch<F>(ctx: &Arc<Ctx>, shard: &Arc<Shard>, out: &mut [u8], f: F) -> Dispatch
where
    F: FnOnce(&mut TurnServer, &mut dyn RelayBinder, &mut [u8]) -> Option<Transmit>,
{
    let mut guard = lock(&shard.state);
    let st = &mut *guard;
    let mut binder = Binder {
        ctx,
        shard,
        relays: &mut st.relays,
    };
    let transmit = f(&mut st.turn, &mut binder, out);
    let route = transmit.and_then(|t| resolve(st, t));
    let mut events = Vec::new();
    while let Some(ev) = st.turn.poll_event() {
        events.push(ev);
    }
    Dispatch { route, events }
}

fn resolve(st: &ShardState, t: Transmit) -> Option<(Route, usize)> {
    match t {
        Transmit::ToClient { client, len } => match client.transport {
            Transport::Udp => st
                .udp
                .get(&client.local)
                .map(|s| (Route::UdpClient(s.clone(), client.remote), len)),
            _ => st
                .streams
                .get(&(client.local, client.remote))
                .map(|tx| (Route::Stream(tx.clone()), len)),
        },
        Transmit::ToPeer {
            relay, peer, len, ..
        } => st
            .relays
            .get(&(relay, RelayTransport::Udp))
            .and_then(|r| r.udp.clone())
            .map(|s| (Route::Udp(s, peer), len)),
    }
}

impl Dispatch {
    /// Sends the routed bytes and acts on the events; returns the ConnectionBound event for a
    /// client data connection, if any.
    async fn finish(
        self,
        ctx: &Arc<Ctx>,
        shard: &Arc<Shard>,
        out: &[u8],
    ) -> Option<(ConnectionId, ClientTuple)> {
        if let Some((route, len)) = self.route {
            send(route, &out[..len]).await;
        }
        let mut bound = None;
        for ev in self.events {
            if let Some(b) = on_event(ctx, shard, ev) {
                bound = Some(b);
            }
        }
        bound
    }
}

impl Dispatch {
    /// The UDP fast path's [`finish`](Dispatch::finish): sends without awaiting (a datagram that
    /// meets a full socket buffer is handed, copied, to a task that waits for room) and acts on
    /// the events. A UDP client never binds an RFC 6062 data connection, so there is no result.
    fn finish_now(self, ctx: &Arc<Ctx>, shard: &Arc<Shard>, out: &[u8]) {
        if let Some((route, len)) = self.route {
            send_now(route, &out[..len]);
        }
        for ev in self.events {
            on_event(ctx, shard, ev);
        }
    }
}

async fn send(route: Route, bytes: &[u8]) {
    match route {
        Route::Udp(socket, to) | Route::UdpClient(socket, to) => {
            if let Err(e) = socket.send_to(bytes, to).await {
                udp_send_failed(to, &e);
            }
        }
        Route::Stream(tx) => send_stream(&tx, bytes),
    }
}

fn send_now(route: Route, bytes: &[u8]) {
    match route {
        Route::Udp(socket, to) => batch::send_or_defer(&socket, bytes, to, udp_send_failed),
        Route::UdpClient(socket, to) => batch::queue_send(&socket, bytes, to, udp_send_failed),
        Route::Stream(tx) => send_stream(&tx, bytes),
    }
}

fn udp_send_failed(to: SocketAddr, e: &io::Error) {
    tracing::trace!(%to, error = %e, "udp send failed");
    metrics::counter!("floe_turn_send_errors_total", "transport" => "udp").increment(1);
}

fn send_stream(tx: &mpsc::Sender<Vec<u8>>, bytes: &[u8]) {
    if tx.try_send(bytes.to_vec()).is_err() {
        metrics::counter!("floe_turn_send_errors_total", "transport" => "stream").increment(1);
    }
}

fn on_event(ctx: &Arc<Ctx>, shard: &Arc<Shard>, ev: Event) -> Option<(ConnectionId, ClientTuple)> {
    match ev {
        Event::AllocationCreated {
            client,
            username,
            transport,
            relays,
        } => {
            tracing::info!(client = %client.remote, transport = client.transport.label(), %username, relay_transport = ?transport, ?relays, "allocation created");
            None
        }
        Event::AllocationDeleted { client, reason } => {
            tracing::info!(client = %client.remote, reason = reason.label(), "allocation deleted");
            None
        }
        Event::ConnectPeer {
            connection_id,
            relay,
            peer,
        } => {
            tokio::spawn(connect_peer(
                ctx.clone(),
                shard.clone(),
                connection_id,
                relay,
                peer,
            ));
            None
        }
        Event::ConnectionBound {
            connection_id,
            client,
        } => Some((connection_id, client)),
        Event::CloseConnection { connection_id } => {
            lock(&ctx.peer_conns).remove(&connection_id);
            if let Some(h) = lock(&ctx.splices).remove(&connection_id) {
                h.abort();
            }
            None
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

/// A shard's UDP listener: drains the socket in batches, each datagram handled and its answer
/// (or relayed packet) sent before the next, without an `.await` inside a batch.
async fn udp_client_loop(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    local: SocketAddr,
    socket: Arc<UdpSocket>,
) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(%local, error = %e, "udp listener failed");
            return;
        }
        let now = Instant::now();
        let unix = ctx.unix_secs(now);
        batch::recv_batch(&socket, |remote, packet, out| {
            let client = ClientTuple {
                transport: Transport::Udp,
                local,
                remote,
            };
            let d = dispatch(&ctx, &shard, out, |turn, binder, out| {
                turn.handle_client_packet(now, unix, client, packet, out, binder)
            });
            d.finish_now(&ctx, &shard, out);
        });
    }
}

/// A UDP relay socket's receive loop (peer to client), batched like [`udp_client_loop`].
async fn relay_udp_loop(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    relay: SocketAddr,
    socket: Arc<UdpSocket>,
) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(%relay, error = %e, "relay socket failed");
            return;
        }
        let now = Instant::now();
        batch::recv_batch(&socket, |peer, data, out| {
            let d = dispatch(&ctx, &shard, out, |turn, _, out| {
                turn.handle_peer_packet(now, relay, peer, data, out)
            });
            d.finish_now(&ctx, &shard, out);
        });
    }
}

async fn timer_loop(ctx: Arc<Ctx>, shard: Arc<Shard>) {
    let mut out = vec![0u8; 2048];
    loop {
        let next = lock(&shard.state).turn.poll_timeout();
        let cap = Instant::now() + Duration::from_secs(1);
        let at = next.map_or(cap, |n| n.min(cap));
        tokio::time::sleep_until(at.into()).await;
        let now = Instant::now();
        let unix = ctx.unix_secs(now);
        let d = dispatch(&ctx, &shard, &mut out, |turn, binder, _| {
            turn.handle_timeout(now, unix, binder);
            None
        });
        d.finish(&ctx, &shard, &out).await;
    }
}

/// Publishes the shards' counters as Prometheus metrics once a second.
async fn metrics_loop(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut total = Totals::default();
        for shard in &ctx.shards {
            total.add(lock(&shard.state).turn.stats());
        }
        total.export();
    }
}

/// The shards' [`TurnStats`] summed.
#[derive(Default)]
struct Totals {
    counters: [u64; 14],
    errors: std::collections::BTreeMap<u16, u64>,
    dropped: std::collections::BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, s: &TurnStats) {
        let values = [
            s.allocations_created,
            s.allocations_deleted,
            s.allocations_active,
            s.permissions_created,
            s.permissions_active,
            s.channels_created,
            s.channels_active,
            s.packets_to_peer,
            s.bytes_to_peer,
            s.packets_to_client,
            s.bytes_to_client,
            s.requests,
            s.retransmissions,
            s.auth_failures,
        ];
        for (t, v) in self.counters.iter_mut().zip(values) {
            *t += v;
        }
        for (code, n) in s.errors.iter() {
            *self.errors.entry(code).or_default() += n;
        }
        for (reason, n) in s.dropped.iter() {
            *self.dropped.entry(reason.label()).or_default() += n;
        }
    }

    fn export(&self) {
        use metrics::{counter, gauge};
        let [alloc_created, alloc_deleted, alloc_active, perm_created, perm_active, chan_created, chan_active, pkts_peer, bytes_peer, pkts_client, bytes_client, requests, retrans, auth_failures] =
            self.counters;
        counter!("floe_turn_allocations_created_total").absolute(alloc_created);
        counter!("floe_turn_allocations_deleted_total").absolute(alloc_deleted);
        gauge!("floe_turn_allocations").set(alloc_active as f64);
        counter!("floe_turn_permissions_created_total").absolute(perm_created);
        gauge!("floe_turn_permissions").set(perm_active as f64);
        counter!("floe_turn_channels_created_total").absolute(chan_created);
        gauge!("floe_turn_channels").set(chan_active as f64);
        counter!("floe_turn_relayed_packets_total", "direction" => "to_peer").absolute(pkts_peer);
        counter!("floe_turn_relayed_bytes_total", "direction" => "to_peer").absolute(bytes_peer);
        counter!("floe_turn_relayed_packets_total", "direction" => "to_client")
            .absolute(pkts_client);
        counter!("floe_turn_relayed_bytes_total", "direction" => "to_client")
            .absolute(bytes_client);
        counter!("floe_turn_requests_total").absolute(requests);
        counter!("floe_turn_retransmissions_total").absolute(retrans);
        counter!("floe_turn_auth_failures_total").absolute(auth_failures);
        for (code, n) in &self.errors {
            counter!("floe_turn_error_responses_total", "code" => code.to_string()).absolute(*n);
        }
        for (reason, n) in &self.dropped {
            counter!("floe_turn_dropped_total", "reason" => *reason).absolute(*n);
        }
    }
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, transport: Transport) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the same error.
                tracing::debug!(%local, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = ctx.tcp_slots.clone().try_acquire_owned() else {
            metrics::counter!("floe_turn_dropped_total", "reason" => "connection_limit")
                .increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let client = ClientTuple {
                transport,
                local,
                remote,
            };
            match (transport, ctx.tls.clone()) {
                (Transport::Tls, Some(acceptor)) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => serve_stream(ctx, tls, client).await,
                        _ => {
                            metrics::counter!("floe_turn_dropped_total", "reason" => "tls_handshake")
                                .increment(1);
                        }
                    }
                }
                _ => serve_stream(ctx, stream, client).await,
            }
        });
    }
}

/// Serves one TCP or TLS client connection: RFC 8656 §12.5 framing (STUN messages and padded
/// ChannelData), replies and relayed data through a queue; RFC 6062 ConnectionBind turns the
/// connection into a byte pipe to the peer.
async fn serve_stream<S>(ctx: Arc<Ctx>, mut stream: S, client: ClientTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shard = ctx.shard_for(client.remote).clone();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    lock(&shard.state)
        .streams
        .insert((client.local, client.remote), tx);
    let mut buf = vec![0u8; MAX_FRAME + 4096];
    let mut out = vec![0u8; OUT_BUF];
    let mut filled = 0usize;
    let mut bound = None;
    // A client's first frame is a STUN request (Allocate, Binding, ConnectionBind): ChannelData
    // needs a channel bound by an earlier request. Checking this closes connections that speak
    // another protocol at once ("GET / HTTP/1.1" would otherwise read as a ChannelData header
    // announcing 21 536 bytes and hold the connection until the idle timeout).
    let mut first_frame = true;
    'conn: loop {
        if first_frame && filled > 0 && buf[0] >= 4 {
            metrics::counter!("floe_turn_dropped_total", "reason" => "bad_stream_frame")
                .increment(1);
            break 'conn;
        }
        // Handle every complete frame already buffered.
        loop {
            let Some(len) = frame_len(&buf[..filled]) else {
                if filled > 0 && !plausible_start(buf[0]) {
                    metrics::counter!("floe_turn_dropped_total", "reason" => "bad_stream_frame")
                        .increment(1);
                    break 'conn;
                }
                break;
            };
            if len > MAX_FRAME || !plausible_start(buf[0]) {
                metrics::counter!("floe_turn_dropped_total", "reason" => "bad_stream_frame")
                    .increment(1);
                break 'conn;
            }
            if len > filled {
                break;
            }
            let now = Instant::now();
            let unix = ctx.unix_secs(now);
            let frame = &buf[..len];
            let d = dispatch(&ctx, &shard, &mut out, |turn, binder, out| {
                turn.handle_client_packet(now, unix, client, frame, out, binder)
            });
            let b = d.finish(&ctx, &shard, &out).await;
            first_frame = false;
            buf.copy_within(len..filled, 0);
            filled -= len;
            if let Some((id, c)) = b {
                if c == client {
                    bound = Some(id);
                    break 'conn;
                }
            }
        }
        tokio::select! {
            r = tokio::time::timeout(ctx.idle, stream.read(&mut buf[filled..])) => {
                match r {
                    Ok(Ok(n)) if n > 0 => filled += n,
                    _ => break 'conn,
                }
            }
            Some(frame) = rx.recv() => {
                if stream.write_all(&frame).await.is_err() {
                    break 'conn;
                }
            }
        }
    }
    lock(&shard.state)
        .streams
        .remove(&(client.local, client.remote));
    if let Some(id) = bound {
        // Flush replies queued before the bind (the ConnectionBind success response).
        while let Ok(frame) = rx.try_recv() {
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
        splice(&ctx, &shard, id, stream, &buf[..filled]).await;
    } else {
        let now = Instant::now();
        let d = dispatch(&ctx, &shard, &mut out, |turn, binder, _| {
            turn.handle_client_closed(now, client, binder);
            None
        });
        d.finish(&ctx, &shard, &out).await;
        let _ = stream.shutdown().await;
    }
}

/// Whether a stream frame can start with this byte: STUN (0–3) or ChannelData (0x40–0x7F).
fn plausible_start(b: u8) -> bool {
    b < 4 || (0x40..=0x7F).contains(&b)
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    match buf.first()? {
        0..=3 => Message::frame_len(buf),
        0x40..=0x7F => ChannelData::frame_len(buf),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6062: peer TCP connections
// ---------------------------------------------------------------------------------------------

async fn relay_tcp_accept_loop(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    relay: SocketAddr,
    listener: TcpListener,
) {
    let mut out = vec![0u8; 2048];
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let now = Instant::now();
        let mut id = None;
        let d = dispatch(&ctx, &shard, &mut out, |turn, _, out| {
            let (cid, t) = turn.handle_peer_tcp_incoming(now, relay, peer, out)?;
            id = Some(cid);
            Some(t)
        });
        if let Some(id) = id {
            lock(&ctx.peer_conns).insert(id, stream);
        }
        d.finish(&ctx, &shard, &out).await;
    }
}

async fn connect_peer(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    id: ConnectionId,
    relay: SocketAddr,
    peer: SocketAddr,
) {
    let attempt = async {
        let socket = tcp_relay_socket(relay)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        socket.connect(peer).await
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await;
    let mut out = vec![0u8; 2048];
    let now = Instant::now();
    match result {
        Ok(Ok(stream)) => {
            lock(&ctx.peer_conns).insert(id, stream);
            let d = dispatch(&ctx, &shard, &mut out, |turn, _, out| {
                turn.handle_peer_connected(now, id, out)
            });
            if d.route.is_none() {
                lock(&ctx.peer_conns).remove(&id);
            }
            d.finish(&ctx, &shard, &out).await;
        }
        _ => {
            tracing::debug!(%relay, %peer, "RFC 6062 connect failed");
            let d = dispatch(&ctx, &shard, &mut out, |turn, _, out| {
                turn.handle_peer_connect_failed(now, id, out)
            });
            d.finish(&ctx, &shard, &out).await;
        }
    }
}

/// Pipes bytes between a client data connection and its peer connection until either closes.
async fn splice<S>(
    ctx: &Arc<Ctx>,
    shard: &Arc<Shard>,
    id: ConnectionId,
    mut client: S,
    pending: &[u8],
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(mut peer) = lock(&ctx.peer_conns).remove(&id) else {
        return;
    };
    let pending = pending.to_vec();
    let work = async move {
        if !pending.is_empty() {
            peer.write_all(&pending).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut peer).await
    };
    // Run the pipe as its own task so CloseConnection can stop it.
    let handle = tokio::spawn(work);
    lock(&ctx.splices).insert(id, handle.abort_handle());
    let _ = handle.await;
    lock(&ctx.splices).remove(&id);
    lock(&shard.state).turn.handle_peer_tcp_closed(id);
}
