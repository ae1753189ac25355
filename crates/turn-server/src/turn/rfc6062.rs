//! RFC 6062 (TURN extensions for TCP allocations), the shell's side: accepting peer connections
//! on a TCP relayed address (§5.3), connecting to a peer from it (§5.2), and splicing a bound
//! client data connection to its peer connection (§5.4). The state machine's side is
//! `floe_turn::server::rfc6062`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_turn::server::{ConnectionGrant, ConnectionId, RelayDirection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

/// Bytes a splice reads from one side before relaying them.
const SPLICE_BUF: usize = 16 * 1024;

/// §5.4: pipes bytes between a client data connection and its peer connection until either
/// closes; `pending` are the client's bytes read past its ConnectionBind. Every byte is charged
/// to the allocation's and the user's bandwidth quotas on the worker that owns the allocation
/// ([`TurnServer::charge_connection`](floe_turn::server::TurnServer::charge_connection)); over
/// quota, the splice waits and reads nothing more, so TCP flow control slows the sender to the
/// quota (TCP cannot drop bytes the way the UDP path does).
pub(super) async fn splice<S>(
    ctx: &Arc<Ctx>,
    shard: &Arc<Shard>,
    id: ConnectionId,
    client: S,
    pending: &[u8],
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(peer) = lock(&ctx.peer_conns).remove(&id) else {
        return;
    };
    let Some(owner) = lock(&shard.state).turn.connection_owner(id) else {
        return;
    };
    let pacer = Pacer {
        ctx: ctx.clone(),
        owner,
        id,
    };
    let pending = pending.to_vec();
    let work = async move {
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let (mut peer_rd, mut peer_wr) = peer.into_split();
        pacer
            .write(RelayDirection::ToPeer, &pending, &mut peer_wr)
            .await?;
        tokio::try_join!(
            pacer.pipe(RelayDirection::ToPeer, &mut client_rd, &mut peer_wr),
            pacer.pipe(RelayDirection::ToClient, &mut peer_rd, &mut client_wr),
        )
    };
    // Run the pipe as its own task so CloseConnection can stop it.
    let handle = tokio::spawn(work);
    lock(&ctx.splices).insert(id, handle.abort_handle());
    let _ = handle.await;
    lock(&ctx.splices).remove(&id);
    lock(&shard.state).turn.handle_peer_tcp_closed(id);
}

/// Asks the state machine of the allocation's worker for the right to relay each chunk.
struct Pacer {
    ctx: Arc<Ctx>,
    owner: u32,
    id: ConnectionId,
}

impl Pacer {
    /// Copies `from` to `to` until `from` ends (then shuts `to` down for writing), at most
    /// [`SPLICE_BUF`] unrelayed bytes held at a time.
    async fn pipe<R, W>(&self, dir: RelayDirection, from: &mut R, to: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = vec![0u8; SPLICE_BUF];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return to.shutdown().await;
            }
            self.write(dir, &buf[..n], to).await?;
        }
    }

    /// Writes `data` as fast as the bandwidth quotas grant it.
    async fn write<W>(&self, dir: RelayDirection, mut data: &[u8], to: &mut W) -> io::Result<()>
    where
        W: AsyncWrite + Unpin,
    {
        while !data.is_empty() {
            let grant = match self.ctx.shard_of_worker(self.owner) {
                Some(owner) => lock(&owner.state).turn.charge_connection(
                    Instant::now(),
                    self.id,
                    dir,
                    data.len(),
                ),
                None => ConnectionGrant::Closed,
            };
            match grant {
                ConnectionGrant::Pass(n) => {
                    let (now, rest) = data.split_at(n.min(data.len()));
                    to.write_all(now).await?;
                    data = rest;
                }
                ConnectionGrant::RetryAt(at) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                }
                ConnectionGrant::Closed => return Err(io::ErrorKind::ConnectionAborted.into()),
            }
        }
        Ok(())
    }
}
