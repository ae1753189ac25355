//! Socket helpers shared by the listeners.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking UDP socket with SO_REUSEPORT (so several workers can share the address,
/// the kernel spreading flows across them by 4-tuple hash) and large buffers.
pub fn udp_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds a non-blocking TCP listener with SO_REUSEADDR and SO_REUSEPORT.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The one TCP socket set-up of the shell, for client listeners and RFC 6062 relay sockets
/// alike: a non-blocking socket bound to `addr` with TCP_NODELAY, SO_REUSEADDR and SO_REUSEPORT
/// (so that an RFC 6062 Connect can originate from the address its relay listener is bound
/// to), IPv6-only for an IPv6 address. The caller listens on it or connects it.
pub(crate) fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
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

/// Number of worker sockets to open per UDP address: one per available core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One worker's sockets of a [`ListenGroup`]: (local address, socket), the primary address first.
pub type SocketSet = std::sync::Arc<Vec<(SocketAddr, std::sync::Arc<tokio::net::UdpSocket>)>>;

/// Errors binding a listen group.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A socket could not be bound.
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The alternate IP's family differs from a listen address's family.
    #[error("alternate IP {alternate} and listen address {listen} are of different families")]
    FamilyMismatch {
        /// The alternate IP.
        alternate: std::net::IpAddr,
        /// The listen address.
        listen: SocketAddr,
    },
    /// A listen address with port 65535 leaves no room for the alternate port.
    #[error("listen port {0} has no alternate port (port + 1)")]
    NoAlternatePort(u16),
}

/// A primary listening address with its RFC 5780 siblings (when an alternate IP is configured),
/// bound for UDP once per worker (SO_REUSEPORT) and once for TCP.
#[derive(Debug)]
pub struct ListenGroup {
    /// The addresses: the primary first, then (with discovery) IP:PORT+1, ALT:PORT, ALT:PORT+1.
    pub addrs: Vec<SocketAddr>,
    /// RFC 5780 addresses, when discovery is on.
    pub alternate: Option<floe_turn::binding::AlternateAddress>,
    /// `sockets[worker]`: that worker's UDP sockets, one per address.
    pub sockets: Vec<SocketSet>,
    /// TCP listeners, one per address.
    pub tcp: Vec<tokio::net::TcpListener>,
}

impl ListenGroup {
    /// Binds `listen` (port 0 picks a port free for UDP *and* TCP, with discovery a free pair,
    /// retrying: the port the kernel picks for UDP may be in use for TCP) for `workers` workers.
    /// Must run inside a tokio runtime.
    pub fn bind(
        listen: SocketAddr,
        alternate_ip: Option<std::net::IpAddr>,
        workers: usize,
    ) -> Result<ListenGroup, ListenError> {
        let attempts = if listen.port() == 0 { 32 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            match Self::try_bind(listen, alternate_ip, workers.max(1)) {
                Ok(group) => return Ok(group),
                Err(e @ ListenError::Bind { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ListenError::NoAlternatePort(listen.port())))
    }

    fn try_bind(
        listen: SocketAddr,
        alternate_ip: Option<std::net::IpAddr>,
        workers: usize,
    ) -> Result<ListenGroup, ListenError> {
        use std::sync::Arc;
        let bind_err = |proto: &'static str, addr: SocketAddr| {
            move |source: io::Error| ListenError::Bind {
                proto,
                addr,
                source,
            }
        };
        // The first socket fixes the port when 0 was asked.
        let first = udp_reuseport(listen).map_err(bind_err("udp", listen))?;
        let primary = first.local_addr().map_err(bind_err("udp", listen))?;
        let mut addrs = vec![primary];
        let mut alternate = None;
        if let Some(alt_ip) = alternate_ip {
            if alt_ip.is_ipv4() != primary.is_ipv4() {
                return Err(ListenError::FamilyMismatch {
                    alternate: alt_ip,
                    listen,
                });
            }
            let alt_port = primary
                .port()
                .checked_add(1)
                .ok_or(ListenError::NoAlternatePort(primary.port()))?;
            let quad = floe_turn::binding::AlternateAddress {
                primary_ip: primary.ip(),
                alternate_ip: alt_ip,
                primary_port: primary.port(),
                alternate_port: alt_port,
            };
            addrs = quad.listen_addresses().to_vec();
            alternate = Some(quad);
        }
        let mut first = Some(first);
        let mut sockets = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut set = Vec::with_capacity(addrs.len());
            for &addr in &addrs {
                let std_socket = match first.take() {
                    Some(s) => s,
                    None => udp_reuseport(addr).map_err(bind_err("udp", addr))?,
                };
                let socket =
                    tokio::net::UdpSocket::from_std(std_socket).map_err(bind_err("udp", addr))?;
                set.push((addr, Arc::new(socket)));
            }
            sockets.push(Arc::new(set));
        }
        let mut tcp = Vec::with_capacity(addrs.len());
        for &addr in &addrs {
            let l = tcp_listener(addr).map_err(bind_err("tcp", addr))?;
            tcp.push(tokio::net::TcpListener::from_std(l).map_err(bind_err("tcp", addr))?);
        }
        Ok(ListenGroup {
            addrs,
            alternate,
            sockets,
            tcp,
        })
    }
}
