//! TCP and TLS clients: accepting them (with a connection cap and a TLS handshake timeout) and
//! serving each one — RFC 8656 §12.5 framing through floe-stun's [`StreamDecoder`], answers and
//! relayed data through a queue, and RFC 6062 ConnectionBind turning the connection into a byte
//! pipe to a peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_stun::{FramingError, StreamDecoder};
use floe_turn::server::{ClientTuple, ConnectionId, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::batch::OUT_BUF;
use super::dispatch::dispatch;
use super::relay;
use super::rfc6062;
use super::shard::{lock, Ctx, Shard};
use super::sockets::ACCEPT_BACKOFF;

/// Frames queued for one TCP/TLS client before further ones are dropped.
const STREAM_QUEUE: usize = 256;
/// A TLS handshake that takes longer is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a client at once (a frame is at most `floe_stun::stream::MAX_FRAME_LEN`).
const READ_BUF: usize = 65_536;

/// Accepts TCP (or TLS) clients on one listener, each served by its own task.
pub(super) async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, transport: Transport) {
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
        let client = ClientTuple {
            transport,
            local,
            remote,
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match (transport, ctx.tls.clone()) {
                (Transport::Tls, Some(acceptor)) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
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

/// Serves one TCP or TLS client connection until it closes, goes idle or is spliced to a peer
/// (RFC 6062 ConnectionBind).
async fn serve_stream<S>(ctx: Arc<Ctx>, mut stream: S, client: ClientTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shard = ctx.shard_for(client.remote).clone();
    let key = (client.local, client.remote);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    lock(&shard.state).streams.insert(key, tx);
    let mut conn = Conn {
        ctx: &ctx,
        shard: &shard,
        client,
        decoder: StreamDecoder::stun_first(),
        out: vec![0u8; OUT_BUF],
    };
    let bound = conn.serve(&mut stream, &mut rx).await;
    lock(&shard.state).streams.remove(&key);
    match bound {
        Some(id) => {
            // Flush replies queued before the bind (the ConnectionBind success response).
            while let Ok(frame) = rx.try_recv() {
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
            }
            rfc6062::splice(&ctx, &shard, id, stream, conn.decoder.remaining()).await;
        }
        None => {
            conn.closed().await;
            let _ = stream.shutdown().await;
        }
    }
}

/// One stream client's state while it is framed.
struct Conn<'a> {
    ctx: &'a Arc<Ctx>,
    shard: &'a Arc<Shard>,
    client: ClientTuple,
    /// The client's first frame must be STUN: a connection that speaks another protocol (an
    /// HTTP request) is closed at once.
    decoder: StreamDecoder,
    out: Vec<u8>,
}

impl Conn<'_> {
    /// Hands every frame read to the shard and writes what the shard queued for the client,
    /// until the connection ends (`None`) or a ConnectionBind binds it to a peer connection.
    async fn serve<S>(
        &mut self,
        stream: &mut S,
        rx: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Option<ConnectionId>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut read = vec![0u8; READ_BUF];
        loop {
            match self.handle_frames().await {
                Ok(None) => {}
                Ok(Some(id)) => return Some(id),
                Err(_) => {
                    metrics::counter!("floe_turn_dropped_total", "reason" => "bad_stream_frame")
                        .increment(1);
                    return None;
                }
            }
            tokio::select! {
                r = tokio::time::timeout(self.ctx.idle, stream.read(&mut read)) => {
                    match r {
                        Ok(Ok(n)) if n > 0 => self.decoder.push(&read[..n]),
                        _ => return None,
                    }
                }
                Some(frame) = rx.recv() => {
                    if stream.write_all(&frame).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Handles every complete frame buffered. Returns the peer connection a ConnectionBind from
    /// this client bound (its remaining bytes are the peer's), or the framing error that ends
    /// the connection.
    async fn handle_frames(&mut self) -> Result<Option<ConnectionId>, FramingError> {
        let Conn {
            ctx,
            shard,
            client,
            decoder,
            out,
        } = self;
        let client = *client;
        while let Some(frame) = decoder.next_frame()? {
            let now = Instant::now();
            let unix = ctx.unix_secs(now);
            let d = dispatch(ctx, shard, now, out, |turn, binder, out| {
                turn.handle_client_packet(now, unix, client, frame, out, binder)
            });
            let followups = d.finish(ctx, out).await;
            match relay::start(ctx, shard, followups) {
                Some((id, c)) if c == client => return Ok(Some(id)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// RFC 8656 §3.1: the client's connection closed, so its allocation ends.
    async fn closed(&mut self) {
        let now = Instant::now();
        let client = self.client;
        let d = dispatch(
            self.ctx,
            self.shard,
            now,
            &mut self.out,
            |turn, binder, _| {
                turn.handle_client_closed(now, client, binder);
                None
            },
        );
        let _ = relay::start(self.ctx, self.shard, d.finish(self.ctx, &self.out).await);
    }
}
