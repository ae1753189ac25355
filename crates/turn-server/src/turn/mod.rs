//! The TURN server's IO shell: listeners, relay sockets and RFC 6062 peer connections around the
//! sans-IO [`TurnServer`](floe_turn::server::TurnServer) (which also answers STUN Binding, with
//! RFC 5780 when configured).
//!
//! # Shape
//! * The state is split into *shards*, one per worker, each a `TurnServer` behind its own
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
//!
//! # Files
//! Each file imports only files listed before it (so none imports its caller); this one, the
//! start-up ([`TurnService`]), imports them all.
//! * `histograms.rs`: the allocation lifetime and Allocate handling time histograms.
//! * `mmsg.rs`, `batch.rs`: batched UDP socket calls (`sendmmsg`, `recvmmsg`).
//! * `config.rs`: [`TurnShellConfig`], [`TurnShellError`].
//! * `usage.rs`: the opt-in usage metric by room or tenant and its label cap; the allocations
//!   that ended recently, for the admin API's usage summary.
//! * `shard.rs`: shard state, the state shared by every task, shard threads and runtimes.
//! * `sockets.rs`: relay socket creation.
//! * `dispatch.rs`: one call into a shard's state machine, its route and send; it starts no
//!   task but returns its follow-ups (new relay sockets, RFC 6062 connects and binds).
//! * `rfc6062.rs`: peer connect, relay TCP accept, splice.
//! * `relay.rs`: starts a dispatch's follow-ups; the UDP relay receive loop.
//! * `udp.rs`, `timer.rs`, `stream.rs`: the UDP listener loop, the shard timer, TCP/TLS
//!   clients (accept and framing).
//! * `metrics.rs`: the shards' counters as Prometheus metrics.
//! * `rlimit.rs`: the open-files limit, which caps the TCP/TLS connections.
//! * `admin.rs`: [`TurnAdmin`], the operator's command channel to each shard (list, end and
//!   revoke allocations, drain, load).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use floe_turn::server::{Shared, Transport, TurnConfig, TurnServer};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::net::{self, ListenError, ListenGroup};

mod admin;
mod batch;
mod config;
mod dispatch;
mod histograms;
mod metrics;
mod mmsg;
mod relay;
mod rfc6062;
mod rlimit;
mod shard;
mod sockets;
mod stream;
mod timer;
mod udp;
mod usage;
mod xdp;

pub use admin::{TurnAdmin, TurnLoad, TurnStopped};
pub use config::{
    StreamLimits, TurnShellConfig, TurnShellError, UsageBy, UsageMetrics, XdpConfig,
    DEFAULT_USAGE_MAX_LABELS,
};
pub use histograms::render_histograms;
pub use usage::{EndedAllocation, RECENT, RECENT_MAX};

use shard::{Ctx, Shard, ShardState};

/// A shard's UDP listener sockets: (local address, socket).
type Listeners = Vec<(SocketAddr, Arc<UdpSocket>)>;

/// A bound TURN server, ready to [`run`](TurnService::run).
pub struct TurnService {
    ctx: Arc<Ctx>,
    groups: Vec<ListenGroup>,
    tls_listeners: Vec<TcpListener>,
    /// Dropping these stops the shards' threads (and their runtimes).
    stops: Vec<oneshot::Sender<()>>,
    /// The admin handle and each shard's command receiver (served from [`TurnService::run`]).
    admin: TurnAdmin,
    admin_rx: Vec<tokio::sync::mpsc::Receiver<admin::ShardCmd>>,
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
        let workers = match config.workers {
            0 => net::default_workers(),
            n => n,
        };
        let mut groups = config
            .listen
            .iter()
            .map(|&l| ListenGroup::bind(l, alternate_of_family(&config.alternate_ips, l), workers))
            .collect::<Result<Vec<_>, _>>()?;
        let (runtimes, stops) = start_shard_threads(workers)?;
        let listeners = move_listeners(&mut groups, &runtimes)?;
        let tls_listeners = bind_tls(&config.tls_listen)?;
        let tls = match (&config.tls, tls_listeners.is_empty()) {
            (Some(c), _) => Some(tokio_rustls::TlsAcceptor::from(c.clone())),
            (None, true) => None,
            (None, false) => return Err(TurnShellError::NoTlsConfig),
        };
        let mut turn_config = config.turn.clone();
        let xdp = xdp::XdpShell::start(&config.xdp, &config.listen)?;
        turn_config.fast_path_events = xdp.is_some();
        // RFC 5780 through the TURN port: the Binding service learns the alternate addresses.
        turn_config.binding.alternates = groups.iter().filter_map(|g| g.alternate).collect();
        let now = Instant::now();
        let shards = make_shards(&config, &turn_config, runtimes, listeners, now);
        let mut limits = config.stream;
        limits.max_connections =
            rlimit::connection_budget(limits.max_connections, rlimit::open_files_limit());
        if limits.max_connections < config.stream.max_connections {
            tracing::warn!(
                configured = config.stream.max_connections,
                accepted = limits.max_connections,
                "TCP/TLS connection cap lowered to half the open-files limit (raise ulimit -n)"
            );
        }
        let ctx = Arc::new(Ctx {
            shards,
            tls: std::sync::RwLock::new(tls),
            tcp_slots: Arc::new(Semaphore::new(limits.max_connections)),
            stream: Mutex::new(shard::StreamState { limits, owed: 0 }),
            per_ip: Mutex::default(),
            queued_bytes: Arc::default(),
            hasher: std::collections::hash_map::RandomState::new(),
            peer_conns: Mutex::default(),
            splices: Mutex::default(),
            tcp_relays: Mutex::default(),
            epoch: (now, unix_now()),
            xdp,
            usage: config.usage,
            ended: Mutex::default(),
        });
        let (admin_tx, admin_rx) = (0..ctx.shards.len())
            .map(|_| tokio::sync::mpsc::channel(admin::QUEUE))
            .unzip();
        let admin = TurnAdmin {
            ctx: ctx.clone(),
            shards: admin_tx,
            limits: TurnLoad {
                max_allocations: config.quotas.max_allocations_total as usize,
                relay_ports_total: relay_ports_total(&config),
                max_stream_connections: limits.max_connections,
                ..TurnLoad::default()
            },
        };
        Ok(TurnService {
            ctx,
            groups,
            tls_listeners,
            stops,
            admin,
            admin_rx,
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

    /// The operator's handle: list, end and revoke allocations, drain, load. It answers while
    /// [`TurnService::run`] runs.
    pub fn admin(&self) -> TurnAdmin {
        self.admin.clone()
    }

    /// Serves until `shutdown` completes; then stops every task and closes every socket.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        for (shard, rx) in self.ctx.shards.iter().zip(self.admin_rx) {
            tasks.spawn_on(
                admin::admin_loop(self.ctx.clone(), shard.clone(), rx),
                &shard.rt,
            );
        }
        for shard in &self.ctx.shards {
            for (local, socket) in &shard.listeners {
                let task =
                    udp::udp_client_loop(self.ctx.clone(), shard.clone(), *local, socket.clone());
                tasks.spawn_on(task, &shard.rt);
            }
            tasks.spawn_on(
                timer::timer_loop(self.ctx.clone(), shard.clone()),
                &shard.rt,
            );
            tasks.spawn_on(batch::flush_loop(dispatch::udp_send_failed), &shard.rt);
        }
        for group in self.groups {
            for listener in group.tcp {
                tasks.spawn(stream::accept_loop(
                    self.ctx.clone(),
                    listener,
                    Transport::Tcp,
                ));
            }
        }
        for listener in self.tls_listeners {
            tasks.spawn(stream::accept_loop(
                self.ctx.clone(),
                listener,
                Transport::Tls,
            ));
        }
        tasks.spawn(metrics::metrics_loop(self.ctx.clone()));
        tasks.spawn(xdp::next_hop_loop(self.ctx.clone()));
        tasks.spawn(xdp::usage_loop(self.ctx.clone()));
        shutdown.await;
        tasks.shutdown().await;
        self.ctx.stop_all();
        drop(self.stops);
    }
}

/// Starts one shard thread per worker; returns their runtimes and the senders that stop them.
fn start_shard_threads(
    workers: usize,
) -> Result<(Vec<tokio::runtime::Handle>, Vec<oneshot::Sender<()>>), TurnShellError> {
    (0..workers)
        .map(|w| shard::spawn_shard_runtime(w).map_err(TurnShellError::Runtime))
        .collect::<Result<Vec<_>, _>>()
        .map(|started| started.into_iter().unzip())
}

/// Moves every worker's UDP listener sockets onto that worker's runtime.
fn move_listeners(
    groups: &mut [ListenGroup],
    runtimes: &[tokio::runtime::Handle],
) -> Result<Vec<Listeners>, ListenError> {
    let mut listeners = vec![Vec::new(); runtimes.len()];
    for g in groups {
        for (w, set) in std::mem::take(&mut g.sockets).into_iter().enumerate() {
            let set = Arc::try_unwrap(set).unwrap_or_else(|shared| (*shared).clone());
            for (addr, socket) in set {
                let socket = shard::reregister(socket, &runtimes[w]).map_err(|source| {
                    ListenError::Bind {
                        proto: "udp",
                        addr,
                        source,
                    }
                })?;
                listeners[w].push((addr, socket));
            }
        }
    }
    Ok(listeners)
}

/// Binds the TLS (`turns:`) listeners.
fn bind_tls(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ListenError> {
    addrs
        .iter()
        .map(|&addr| {
            let bind_error = |source| ListenError::Bind {
                proto: "tcp",
                addr,
                source,
            };
            let l = net::tcp_listener(addr).map_err(bind_error)?;
            TcpListener::from_std(l).map_err(bind_error)
        })
        .collect()
}

/// One shard per runtime, each with its own state machine (sharing `Shared`: quotas, EVEN-PORT
/// reservations, RFC 6062 connection ids) and its listener sockets.
fn make_shards(
    config: &TurnShellConfig,
    turn_config: &TurnConfig,
    runtimes: Vec<tokio::runtime::Handle>,
    listeners: Vec<Listeners>,
    now: Instant,
) -> Vec<Arc<Shard>> {
    let shared = Arc::new(Shared::new(config.quotas));
    runtimes
        .into_iter()
        .zip(listeners)
        .map(|(rt, listeners)| {
            let mut turn =
                TurnServer::new(turn_config.clone(), shared.clone(), rand::random(), now);
            turn.set_usage_tracking(config.usage.by != UsageBy::Off);
            let worker = turn.worker_index();
            let udp = listeners.iter().cloned().collect();
            Arc::new(Shard {
                state: Mutex::new(ShardState::new(turn, udp)),
                rt,
                listeners,
                worker,
            })
        })
        .collect()
}

/// Relay ports available: the port range for each relay IP.
fn relay_ports_total(config: &TurnShellConfig) -> usize {
    let ports = &config.turn.relay_ports;
    let per_ip = usize::from(ports.end().saturating_sub(*ports.start())) + 1;
    per_ip * config.turn.relay_ips.len().max(1)
}

/// The alternate IP (RFC 5780) of `listen`'s family, if one is configured.
fn alternate_of_family(alternates: &[IpAddr], listen: SocketAddr) -> Option<IpAddr> {
    alternates
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == listen.is_ipv4())
}

/// The unix time in seconds (0 if the clock is before 1970).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
