//! The STUN server: the sans-IO [`BindingService`] on UDP and TCP listeners.
//!
//! * UDP: every listening address gets one SO_REUSEPORT socket per worker; the kernel spreads
//!   clients across them, so all cores answer without a shared lock.
//! * TCP: RFC 8489 §6.2.2 framing (a STUN message's length is in its header); a connection cap and
//!   an idle timeout bound what an idle or slow client can hold.
//! * RFC 5780: with an alternate IP, each primary address `IP:PORT` comes with `IP:PORT+1`,
//!   `ALT:PORT` and `ALT:PORT+1`; CHANGE-REQUEST answers leave from the matching socket.
//!
//! Malformed or non-STUN input is dropped without an answer and counted in
//! `floe_stun_dropped_total{transport,reason}`.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use floe_stun::{Message, ParseError};
use floe_turn::binding::{BindingConfig, BindingService, DropReason, Outcome, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::net::{self, SocketSet};

/// Largest datagram the server reads; bigger ones are truncated and then fail to parse.
const MAX_DATAGRAM: usize = 2048;
/// Output buffer size: a Binding response with the largest allowed PADDING fits.
const OUT_BUF: usize = 2048;
/// Largest STUN message accepted over TCP: a Binding request is far smaller; a client that
/// announces more is closed rather than buffered.
const MAX_TCP_FRAME: usize = 8192;

/// Configuration of the STUN server.
#[derive(Debug, Clone)]
pub struct StunConfig {
    /// Addresses to listen on, UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    /// RFC 5780: a second IP address of this host; turns NAT discovery on.
    pub alternate_ip: Option<IpAddr>,
    /// UDP sockets per address (0: one per core).
    pub workers: usize,
    /// SOFTWARE attribute, `None` to omit it.
    pub software: Option<String>,
    /// Most TCP connections held at once, over all listeners.
    pub max_tcp_connections: usize,
    /// A TCP connection silent for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Largest PADDING echoed (RFC 5780 §7.6).
    pub max_padding: usize,
}

impl Default for StunConfig {
    fn default() -> Self {
        StunConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 3478))],
            alternate_ip: None,
            workers: 0,
            software: BindingConfig::default().software,
            max_tcp_connections: 4096,
            tcp_idle_timeout: Duration::from_secs(30),
            max_padding: BindingConfig::default().max_padding,
        }
    }
}

/// Errors starting the STUN server.
pub type StunError = net::ListenError;

/// One primary address with its RFC 5780 siblings, bound for every worker.
#[derive(Debug)]
struct Group {
    service: Arc<BindingService>,
    sockets: Vec<SocketSet>,
    tcp: Vec<TcpListener>,
}

/// A bound STUN server, ready to [`run`](StunServer::run).
#[derive(Debug)]
pub struct StunServer {
    groups: Vec<Group>,
    config: StunConfig,
}

impl StunServer {
    /// Binds every socket. Port 0 picks a free port (tests); with discovery, a free pair.
    pub async fn bind(config: StunConfig) -> Result<StunServer, StunError> {
        let workers = if config.workers == 0 {
            net::default_workers()
        } else {
            config.workers
        };
        let mut groups = Vec::new();
        for &listen in &config.listen {
            let g = net::ListenGroup::bind(listen, config.alternate_ip, workers)?;
            let service = BindingService::new(BindingConfig {
                software: config.software.clone(),
                alternate: g.alternate,
                max_padding: config.max_padding,
            });
            groups.push(Group {
                service: Arc::new(service),
                sockets: g.sockets,
                tcp: g.tcp,
            });
        }
        Ok(StunServer { groups, config })
    }

    /// The primary addresses actually bound (with real ports when 0 was asked).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.groups
            .iter()
            .filter_map(|g| g.sockets.first().and_then(|s| s.first()).map(|(a, _)| *a))
            .collect()
    }

    /// Every UDP address bound (including RFC 5780 siblings), for logging.
    pub fn all_udp_addrs(&self) -> Vec<SocketAddr> {
        self.groups
            .iter()
            .filter_map(|g| g.sockets.first())
            .flat_map(|s| s.iter().map(|(a, _)| *a))
            .collect()
    }

    /// Serves until `shutdown` completes, then stops every task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        let tcp_slots = Arc::new(Semaphore::new(self.config.max_tcp_connections));
        for group in self.groups {
            for worker_sockets in &group.sockets {
                for index in 0..worker_sockets.len() {
                    tasks.spawn(udp_loop(
                        group.service.clone(),
                        worker_sockets.clone(),
                        index,
                    ));
                }
            }
            for listener in group.tcp {
                tasks.spawn(tcp_accept_loop(
                    group.service.clone(),
                    listener,
                    tcp_slots.clone(),
                    self.config.tcp_idle_timeout,
                ));
            }
        }
        shutdown.await;
        tasks.shutdown().await;
    }
}

/// A stable metrics label for a parse error.
fn parse_error_label(e: &ParseError) -> &'static str {
    match e {
        ParseError::TooShort(_) => "too_short",
        ParseError::NotStun => "not_stun",
        ParseError::BadMagicCookie => "bad_magic_cookie",
        ParseError::UnalignedLength(_) | ParseError::LengthMismatch { .. } => "bad_length",
        ParseError::AttributeOverrun { .. } => "attribute_overrun",
        ParseError::FingerprintNotLast => "fingerprint_not_last",
        _ => "malformed",
    }
}

fn count_drop(transport: &'static str, reason: &'static str) {
    metrics::counter!("floe_stun_dropped_total", "transport" => transport, "reason" => reason)
        .increment(1);
}

/// Parses `packet` and runs the Binding service; `None` (counted) when nothing is to be sent.
fn answer(
    service: &BindingService,
    packet: &[u8],
    local: SocketAddr,
    peer: SocketAddr,
    transport: Transport,
    out: &mut [u8],
) -> Option<floe_turn::binding::Reply> {
    let label = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    metrics::counter!("floe_stun_packets_total", "transport" => label).increment(1);
    let msg = match Message::parse(packet) {
        Ok(msg) => msg,
        Err(e) => {
            count_drop(label, parse_error_label(&e));
            tracing::trace!(%peer, error = %e, "dropped malformed packet");
            return None;
        }
    };
    // RFC 8489 §14.7: a FINGERPRINT that does not match means "not STUN".
    if msg.has_fingerprint() && !msg.verify_fingerprint() {
        count_drop(label, "bad_fingerprint");
        return None;
    }
    match service.handle(&msg, local, peer, transport, out) {
        Outcome::Reply(reply) => {
            let class = if out[0] & 0x01 == 0x01 {
                "error"
            } else {
                "success"
            };
            metrics::counter!("floe_stun_responses_total", "transport" => label, "class" => class)
                .increment(1);
            Some(reply)
        }
        Outcome::Drop(reason) => {
            if reason != DropReason::Indication {
                count_drop(label, reason.label());
            }
            None
        }
    }
}

async fn udp_loop(service: Arc<BindingService>, sockets: SocketSet, index: usize) {
    let (local, socket) = match sockets.get(index) {
        Some((a, s)) => (*a, s.clone()),
        None => return,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = vec![0u8; OUT_BUF];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tracing::trace!(%local, error = %e, "udp recv error");
                continue;
            }
        };
        let Some(reply) = answer(&service, &buf[..n], local, peer, Transport::Udp, &mut out) else {
            continue;
        };
        let sender = sockets
            .iter()
            .find(|(addr, _)| *addr == reply.from)
            .map(|(_, s)| s);
        if let Some(sender) = sender {
            if let Err(e) = sender.send_to(&out[..reply.len], reply.to).await {
                tracing::debug!(to = %reply.to, error = %e, "udp send failed");
                metrics::counter!("floe_stun_send_errors_total", "transport" => "udp").increment(1);
            }
        }
    }
}

async fn tcp_accept_loop(
    service: Arc<BindingService>,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%local, error = %e, "tcp accept failed");
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("floe_stun_dropped_total", "transport" => "tcp", "reason" => "connection_limit")
                .increment(1);
            drop(stream);
            continue;
        };
        let service = service.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_connection(&service, stream, local, peer, idle).await {
                tracing::trace!(%peer, error = %e, "tcp connection ended");
            }
        });
    }
}

/// Serves one TCP connection: RFC 8489 §6.2.2 framing, one response per request.
async fn tcp_connection(
    service: &BindingService,
    mut stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    idle: Duration,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_TCP_FRAME];
    let mut out = vec![0u8; OUT_BUF];
    let mut filled = 0usize;
    loop {
        if Message::frame_len(&buf[..filled]).is_some_and(|l| l > MAX_TCP_FRAME) {
            count_drop("tcp", "too_large");
            return Ok(());
        }
        // Complete frames already buffered are answered before reading more.
        while let Some(len) = Message::frame_len(&buf[..filled]).filter(|&l| l <= filled) {
            if buf[0] & 0xC0 != 0 {
                count_drop("tcp", "not_stun");
                return Ok(());
            }
            if let Some(reply) = answer(service, &buf[..len], local, peer, Transport::Tcp, &mut out)
            {
                stream.write_all(&out[..reply.len]).await?;
            }
            buf.copy_within(len..filled, 0);
            filled -= len;
        }
        if filled > 0 && buf[0] & 0xC0 != 0 {
            count_drop("tcp", "not_stun");
            return Ok(());
        }
        let n = match tokio::time::timeout(idle, stream.read(&mut buf[filled..])).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}
