//! Relay socket creation: what the binder opens when the state machine allocates a relayed
//! address (RFC 8656 §7.2, RFC 6062 §5.1). Listener sockets are in [`crate::net`], which also
//! holds the one TCP socket set-up ([`crate::net::tcp_socket`]) both use.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use floe_turn::server::BindError;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

use super::shard::{lock, Ctx};
use crate::net;

/// Pause after a failed accept (e.g. out of file descriptors).
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Pending connections on a TCP relay listener.
const RELAY_BACKLOG: i32 = 128;
/// Receive buffer asked for a UDP relay socket (best effort: the kernel caps it).
const RELAY_RECV_BUFFER: usize = 1 << 20;

/// Binds a UDP relay socket on `addr` (no SO_REUSEPORT: `InUse` is how the state machine learns
/// that the port is taken), registered with the shard's runtime `rt`, whichever thread binds it.
pub(super) fn udp_relay(
    addr: SocketAddr,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<UdpSocket>, BindError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| bind_error(&e))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(|e| bind_error(&e))?;
    }
    socket.set_nonblocking(true).map_err(|e| bind_error(&e))?;
    socket.bind(&addr.into()).map_err(|e| bind_error(&e))?;
    let _ = socket.set_recv_buffer_size(RELAY_RECV_BUFFER);
    let _entered = rt.enter();
    let socket = UdpSocket::from_std(socket.into()).map_err(|e| bind_error(&e))?;
    Ok(Arc::new(socket))
}

/// Binds the listening socket of an RFC 6062 TCP relayed address, registered with the current
/// runtime. Its address is reserved in [`Ctx::tcp_relays`] until [`release_tcp_relay`].
pub(super) fn tcp_relay_listener(ctx: &Ctx, addr: SocketAddr) -> Result<TcpListener, BindError> {
    if !lock(&ctx.tcp_relays).insert(addr) {
        return Err(BindError::InUse);
    }
    tcp_relay_socket(addr)
        .and_then(|s| {
            s.listen(RELAY_BACKLOG)?;
            TcpListener::from_std(s.into())
        })
        .map_err(|e| {
            release_tcp_relay(ctx, addr);
            bind_error(&e)
        })
}

/// Frees a TCP relayed address taken by [`tcp_relay_listener`].
pub(super) fn release_tcp_relay(ctx: &Ctx, addr: SocketAddr) {
    lock(&ctx.tcp_relays).remove(&addr);
}

/// A socket for a TCP relayed address: SO_REUSEADDR and SO_REUSEPORT so RFC 6062 Connect can
/// originate from the same address as the listener. Uniqueness within this process is kept by
/// `Ctx::tcp_relays`.
pub(super) fn tcp_relay_socket(addr: SocketAddr) -> io::Result<Socket> {
    net::tcp_socket(addr)
}

fn bind_error(e: &io::Error) -> BindError {
    match e.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse,
        _ => BindError::Unavailable,
    }
}
