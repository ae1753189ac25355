//! Shards: the state each worker owns (a [`TurnServer`] and the routes to its sockets), the
//! state every task shares ([`Ctx`]), and the shard threads with their current-thread runtimes.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use floe_turn::server::{ConnectionId, RelayTransport, TurnServer};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

use super::config::StreamLimits;

/// One worker's state.
pub(super) struct Shard {
    pub(super) state: Mutex<ShardState>,
    /// The shard's own current-thread runtime: it drives the shard's UDP listener sockets, its
    /// relay sockets and its timer, all on one OS thread (see [`spawn_shard_runtime`]).
    pub(super) rt: tokio::runtime::Handle,
    /// The shard's UDP listener sockets, registered with `rt`.
    pub(super) listeners: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Its state machine's [`TurnServer::worker_index`](floe_turn::server::TurnServer::worker_index).
    pub(super) worker: u32,
}

/// The route maps, looked up for every relayed packet: foldhash, seeded per map (see
/// `floe_turn::server`'s `FastMap` for why that is safe enough here).
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What a shard's mutex guards.
pub(super) struct ShardState {
    pub(super) turn: TurnServer,
    /// Relay sockets bound by this shard.
    pub(super) relays: FastMap<(SocketAddr, RelayTransport), Relay>,
    /// Names the next relay bound, so that a receive task started after the lock was released
    /// finds its own relay and not a later one on the same address ([`Shard::attach`]).
    pub(super) next_serial: u64,
    /// This shard's client-facing UDP sockets by local address.
    pub(super) udp: FastMap<SocketAddr, Arc<UdpSocket>>,
    /// This shard's TCP/TLS clients by (local, remote).
    pub(super) streams: HashMap<(SocketAddr, SocketAddr), StreamTx>,
}

impl ShardState {
    /// A shard with no relays and no stream clients yet.
    pub(super) fn new(turn: TurnServer, udp: FastMap<SocketAddr, Arc<UdpSocket>>) -> Self {
        ShardState {
            turn,
            relays: FastMap::default(),
            next_serial: 0,
            udp,
            streams: HashMap::new(),
        }
    }
}

/// A bound relay socket.
pub(super) struct Relay {
    /// The socket, for a UDP relay (packets to peers leave from it).
    pub(super) udp: Option<Arc<UdpSocket>>,
    /// Its receive task (UDP) or accept task (TCP), once the dispatch's caller started it.
    pub(super) task: Option<AbortHandle>,
    /// Which bind this is ([`ShardState::next_serial`]).
    pub(super) serial: u64,
}

impl Relay {
    /// Stops the relay's task, if it has one.
    pub(super) fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Shard {
    /// Gives the relay bound as `serial` its task. A relay released before its task started
    /// (another task's call into the shard came in between) has no use for it: the task stops.
    pub(super) fn attach(&self, key: (SocketAddr, RelayTransport), serial: u64, task: AbortHandle) {
        match lock(&self.state).relays.get_mut(&key) {
            Some(relay) if relay.serial == serial && relay.task.is_none() => {
                relay.task = Some(task)
            }
            _ => task.abort(),
        }
    }
}

/// State every task can reach.
pub(super) struct Ctx {
    pub(super) shards: Vec<Arc<Shard>>,
    pub(super) tls: std::sync::RwLock<Option<tokio_rustls::TlsAcceptor>>,
    /// [`StreamLimits::max_connections`] permits (see [`Ctx::set_stream_limits`]).
    pub(super) tcp_slots: Arc<Semaphore>,
    /// The TCP/TLS limits in force; read them with [`Ctx::limits`].
    pub(super) stream: Mutex<StreamState>,
    /// TCP/TLS client connections per source ([`ip_key`]), for [`StreamLimits::max_per_ip`].
    pub(super) per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Bytes queued for TCP/TLS clients over every connection (`floe_turn_tcp_queued_bytes`).
    pub(super) queued_bytes: Arc<AtomicUsize>,
    pub(super) hasher: std::collections::hash_map::RandomState,
    /// RFC 6062 peer connections not yet spliced to a client data connection.
    pub(super) peer_conns: Mutex<HashMap<ConnectionId, TcpStream>>,
    /// Running splices, to stop them on CloseConnection.
    pub(super) splices: Mutex<HashMap<ConnectionId, AbortHandle>>,
    /// TCP relay addresses in use by this process (their listeners use SO_REUSEPORT so that
    /// Connect can originate from the same address; this set keeps them unique).
    pub(super) tcp_relays: Mutex<HashSet<SocketAddr>>,
    /// A monotonic instant and the unix time (seconds) it stood for.
    pub(super) epoch: (Instant, u64),
    /// The XDP fast path, when attached: channels are mirrored into it under the shard lock.
    pub(super) xdp: Option<super::xdp::XdpShell>,
    /// Usage metrics by room or tenant (off by default).
    pub(super) usage: super::config::UsageMetrics,
    /// The allocations that ended recently, for the admin API's usage summary.
    pub(super) ended: Mutex<super::usage::RecentlyEnded>,
}

/// A poisoned mutex only means another task panicked while holding it; the state machine's data
/// is still consistent between calls, so keep serving.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The TCP/TLS limits in force and what a lowered connection cap still has to take back.
#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) limits: StreamLimits,
    /// Permits of [`Ctx::tcp_slots`] to take away once their connections end (the cap was
    /// lowered below what was open; no connection is cut for it).
    pub(super) owed: usize,
}

impl Ctx {
    /// The TCP/TLS limits in force (a reload replaces them for new connections).
    pub(super) fn limits(&self) -> StreamLimits {
        lock(&self.stream).limits
    }

    /// New TCP/TLS limits from a configuration reload, for connections accepted from now on
    /// (open ones keep their deadlines, queue and write timeout; above a lowered cap they stay
    /// open). `max_connections` is cut to the open-files budget as at start.
    pub(super) fn set_stream_limits(&self, mut new: StreamLimits) {
        new.max_connections = super::rlimit::connection_budget(
            new.max_connections,
            super::rlimit::open_files_limit(),
        );
        let mut st = lock(&self.stream);
        let old = st.limits.max_connections;
        if new.max_connections >= old {
            let more = new.max_connections - old;
            let cancel = more.min(st.owed);
            st.owed -= cancel;
            self.tcp_slots.add_permits(more - cancel);
        } else {
            st.owed += old - new.max_connections;
        }
        st.limits = new;
        self.collect_owed(&mut st);
    }

    /// Takes away the permits a lowered cap still owes, as far as they are free now (called at
    /// every accept, so the cap holds as soon as enough connections ended).
    pub(super) fn collect_tcp_owed(&self) {
        let mut st = lock(&self.stream);
        self.collect_owed(&mut st);
    }

    fn collect_owed(&self, st: &mut StreamState) {
        if st.owed > 0 {
            st.owed -= self.tcp_slots.forget_permits(st.owed);
        }
    }

    /// TCP and TLS client connections open.
    pub(super) fn tcp_connections(&self) -> usize {
        let st = lock(&self.stream);
        (st.limits.max_connections + st.owed).saturating_sub(self.tcp_slots.available_permits())
    }

    /// The shard whose state machine is worker `worker` (see `Transmit::ToRelay`).
    pub(super) fn shard_of_worker(&self, worker: u32) -> Option<&Shard> {
        let at = usize::try_from(worker).ok()?;
        match self.shards.get(at) {
            Some(s) if s.worker == worker => Some(s),
            _ => self
                .shards
                .iter()
                .find(|s| s.worker == worker)
                .map(|s| &**s),
        }
    }

    /// The unix time at `now`, derived from the epoch (the clock is read once per batch).
    pub(super) fn unix_secs(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    /// The shard serving a TCP/TLS client: a hash of its address.
    pub(super) fn shard_for(&self, remote: SocketAddr) -> &Arc<Shard> {
        let n = self.shards.len().max(1);
        &self.shards[(self.hasher.hash_one(remote) as usize) % n]
    }

    /// RFC 6062 §5.3/§5.4: forgets the peer connection `id` and stops its splice, if any.
    pub(super) fn close_connection(&self, id: ConnectionId) {
        lock(&self.peer_conns).remove(&id);
        if let Some(h) = lock(&self.splices).remove(&id) {
            h.abort();
        }
    }

    /// At shutdown: stops every relay task and splice and drops every connection.
    pub(super) fn stop_all(&self) {
        for shard in &self.shards {
            let mut st = lock(&shard.state);
            for (_, relay) in st.relays.drain() {
                relay.stop();
            }
            st.streams.clear();
        }
        for (_, h) in lock(&self.splices).drain() {
            h.abort();
        }
        lock(&self.peer_conns).clear();
    }
}

/// The key a source is counted under for [`StreamLimits::max_per_ip`]: the IPv4 address (also
/// when IPv4-mapped), or the /64 of an IPv6 address (one subscriber, as the 401 limiter counts).
pub(super) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(a) & (u128::MAX << 64)).into()),
        },
    }
}

/// One TCP/TLS connection counted against its source's [`StreamLimits::max_per_ip`]; the count
/// drops when this does.
pub(super) struct IpSlot {
    ctx: Arc<Ctx>,
    key: IpAddr,
}

impl IpSlot {
    /// Counts a connection from `ip`, or `None` when its source is at the cap.
    pub(super) fn take(ctx: &Arc<Ctx>, ip: IpAddr) -> Option<IpSlot> {
        let key = ip_key(ip);
        let mut map = lock(&ctx.per_ip);
        let n = map.entry(key).or_insert(0);
        if *n >= ctx.limits().max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ctx: ctx.clone(),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.ctx.per_ip);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The sending side of a TCP/TLS client's outbound queue, bounded in frames and in bytes
/// ([`StreamLimits::queue_bytes`]). A frame that does not fit is dropped, as a full UDP socket
/// buffer would drop a datagram; the caller counts it.
#[derive(Clone)]
pub(super) struct StreamTx {
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes in this connection's queue.
    queued: Arc<AtomicUsize>,
    /// Bytes in every connection's queue.
    total: Arc<AtomicUsize>,
    limit: usize,
}

/// The receiving side of [`StreamTx`]; on drop, the frames still queued are freed and
/// uncounted.
pub(super) struct StreamRx {
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

/// A queue of at most `frames` frames and `bytes` bytes, counted into `total`.
pub(super) fn stream_queue(
    frames: usize,
    bytes: usize,
    total: Arc<AtomicUsize>,
) -> (StreamTx, StreamRx) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let tx = StreamTx {
        tx,
        queued: queued.clone(),
        total: total.clone(),
        limit: bytes,
    };
    (tx, StreamRx { rx, queued, total })
}

impl StreamTx {
    /// Queues a copy of `bytes`; `false` (nothing queued) when the queue is full or closed.
    pub(super) fn try_send(&self, bytes: &[u8]) -> bool {
        let len = bytes.len();
        // Counted before it is sent: once sent, the receiver may write it and uncount it at
        // once, which must never run before the count (the totals would wrap below zero).
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > self.limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        self.total.fetch_add(len, Ordering::AcqRel);
        if self.tx.try_send(bytes.to_vec()).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.total.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl StreamRx {
    /// The next queued frame; call [`StreamRx::written`] once it is written.
    pub(super) async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// The next queued frame, if one is ready.
    pub(super) fn try_recv(&mut self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }

    /// Uncounts a frame taken from the queue (written or given up).
    pub(super) fn written(&self, frame: &[u8]) {
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        self.total.fetch_sub(frame.len(), Ordering::AcqRel);
    }
}

impl Drop for StreamRx {
    fn drop(&mut self) {
        // Closed first, so a send racing with this drop fails (and uncounts itself) instead of
        // leaving a counted frame behind.
        self.rx.close();
        while let Ok(frame) = self.rx.try_recv() {
            self.written(&frame);
        }
    }
}

/// Starts a shard's OS thread running a current-thread tokio runtime until the returned sender
/// is dropped. A shard's UDP sockets are registered with and driven by this runtime only, so a
/// relayed datagram is received, handled and sent on one thread: no work stealing, no
/// cross-thread wake-ups, and the shard's mutex is uncontended on the UDP path (TCP/TLS clients,
/// served by the caller's runtime, still take it).
pub(super) fn spawn_shard_runtime(
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
pub(super) fn reregister(
    socket: Arc<UdpSocket>,
    rt: &tokio::runtime::Handle,
) -> io::Result<Arc<UdpSocket>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_queue_is_bounded_in_bytes_and_gives_its_count_back() {
        let total = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = stream_queue(8, 100, total.clone());
        // A second connection's queue counts into the same total.
        let other = stream_queue(8, 100, total.clone());

        assert!(tx.try_send(&[1; 60]));
        assert!(!tx.try_send(&[2; 60]), "over the byte bound");
        assert!(tx.try_send(&[3; 40]));
        assert!(other.0.try_send(&[4; 10]));
        assert_eq!(total.load(Ordering::Relaxed), 110);

        let frame = rx.try_recv().expect("queued");
        rx.written(&frame);
        assert!(tx.try_send(&[5; 60]), "room again once written");
        drop(rx);
        assert!(!tx.try_send(&[6; 1]), "closed");
        drop(other);
        assert_eq!(total.load(Ordering::Relaxed), 0, "every count given back");
    }
}
