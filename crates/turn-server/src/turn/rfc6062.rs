//! RFC 6062 (TURN extensions for TCP allocations), the shell's side: accepting peer connections
//! on a TCP relayed address (§5.3), connecting to a peer from it (§5.2), and splicing a bound
//! client data connection to its peer connection (§5.4). The state machine's side is
//! `floe_turn::server::rfc6062`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_turn::server::ConnectionId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::dispatch::{dispatch, Connect, Followups};
use super::shard::{lock, Ctx, Shard};
use super::sockets::{self, ACCEPT_BACKOFF};

/// RFC 6062 §5.2: at least 30 s to connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Output buffer for the answers these tasks produce (ConnectionAttempt, Connect responses).
const OUT: usize = 2048;

/// §5.3: accepts peer connections on a TCP relayed address; the state machine sends the client
/// a ConnectionAttempt indication for each one it takes.
pub(super) async fn relay_tcp_accept_loop(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    relay: SocketAddr,
    listener: TcpListener,
) {
    let mut out = vec![0u8; OUT];
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
        let d = dispatch(&ctx, &shard, now, &mut out, |turn, _, out| {
            let (cid, t) = turn.handle_peer_tcp_incoming(now, relay, peer, out)?;
            id = Some(cid);
            Some(t)
        });
        if let Some(id) = id {
            lock(&ctx.peer_conns).insert(id, stream);
        }
        follow_up(&ctx, &shard, d.finish(&ctx, &out).await);
    }
}

/// §5.2: opens the connection a Connect request asked for, as its own task.
pub(super) fn spawn_connect(ctx: &Arc<Ctx>, shard: &Arc<Shard>, connect: Connect) {
    tokio::spawn(connect_peer(ctx.clone(), shard.clone(), connect));
}

/// Connects from the relayed address to the peer (within [`CONNECT_TIMEOUT`]) and tells the
/// state machine how it went; it answers the Connect request.
async fn connect_peer(ctx: Arc<Ctx>, shard: Arc<Shard>, connect: Connect) {
    let Connect { id, relay, peer } = connect;
    let attempt = async {
        let socket = sockets::tcp_relay_socket(relay)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        socket.connect(peer).await
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await;
    let mut out = vec![0u8; OUT];
    let now = Instant::now();
    let d = match result {
        Ok(Ok(stream)) => {
            lock(&ctx.peer_conns).insert(id, stream);
            let d = dispatch(&ctx, &shard, now, &mut out, |turn, _, out| {
                turn.handle_peer_connected(now, id, out)
            });
            if !d.has_route() {
                lock(&ctx.peer_conns).remove(&id);
            }
            d
        }
        _ => {
            tracing::debug!(%relay, %peer, "RFC 6062 connect failed");
            dispatch(&ctx, &shard, now, &mut out, |turn, _, out| {
                turn.handle_peer_connect_failed(now, id, out)
            })
        }
    };
    follow_up(&ctx, &shard, d.finish(&ctx, &out).await);
}

/// The follow-ups of a peer-side call: such calls get no binder use (no relay socket) and bind
/// no client connection; a connect they asked for is opened all the same.
fn follow_up(ctx: &Arc<Ctx>, shard: &Arc<Shard>, followups: Followups) {
    debug_assert!(followups.relays.is_empty(), "peer input bound a relay");
    for connect in followups.connects {
        spawn_connect(ctx, shard, connect);
    }
}

/// §5.4: pipes bytes between a client data connection and its peer connection until either
/// closes; `pending` are the client's bytes read past its ConnectionBind.
pub(super) async fn splice<S>(
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
