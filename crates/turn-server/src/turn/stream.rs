//! TCP and TLS clients: accepting them (with a connection cap and a TLS handshake timeout) and
//! serving each one — RFC 8656 §12.5 framing through floe-stun's [`StreamDecoder`], answers and
//! relayed data through a queue, and RFC 6062 ConnectionBind turning the connection into a byte
//! pipe to a peer.

use std::sync::Arc;
use std::time::Instant;

use floe_stun::{FramingError, StreamDecoder};
use floe_turn::server::{ClientTuple, ConnectionId, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::batch::OUT_BUF;
use super::dispatch::dispatch;
use super::histograms;
use super::relay;
use super::rfc6062;
use super::shard::{lock, stream_queue, Ctx, IpSlot, Shard, StreamRx};
use super::sockets::ACCEPT_BACKOFF;

/// Frames queued for one TCP/TLS client before further ones are dropped (the queue is also
/// bounded in bytes: [`StreamLimits::queue_bytes`](super::config::StreamLimits::queue_bytes)).
const STREAM_QUEUE: usize = 256;
/// Bytes read from a client at once (a frame is at most `floe_stun::stream::MAX_FRAME_LEN`;
/// the decoder keeps a partial one).
const READ_BUF: usize = 16 * 1024;

/// Why a TCP/TLS client connection was closed: the `reason` of `floe_turn_tcp_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The client closed it (or reset it).
    Client,
    /// No complete STUN message or ChannelData frame for
    /// [`StreamLimits::idle_timeout`](super::config::StreamLimits::idle_timeout).
    Idle,
    /// No allocation for [`StreamLimits::unallocated_timeout`](super::config::StreamLimits::unallocated_timeout).
    Unallocated,
    /// A write made no progress for [`StreamLimits::write_timeout`](super::config::StreamLimits::write_timeout).
    WriteTimeout,
    /// The bytes are not STUN/ChannelData framing (or the first frame is not STUN).
    BadFrame,
    /// A write failed.
    WriteError,
}

impl Close {
    fn label(self) -> &'static str {
        match self {
            Close::Client => "client",
            Close::Idle => "idle",
            Close::Unallocated => "unallocated",
            Close::WriteTimeout => "write_timeout",
            Close::BadFrame => "bad_frame",
            Close::WriteError => "write_error",
        }
    }
}

/// Counts a closed connection by reason.
fn closed(reason: &'static str) {
    metrics::counter!("floe_turn_tcp_closed_total", "reason" => reason).increment(1);
}

/// Counts a connection refused at accept by reason.
fn refused(reason: &'static str) {
    metrics::counter!("floe_turn_tcp_refused_total", "reason" => reason).increment(1);
}

/// Accepts TCP (or TLS) clients on one listener, each served by its own task. A client beyond
/// the per-IP or the global connection cap is closed at once.
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
                refused("accept_error");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(ip_slot) = IpSlot::take(&ctx, remote.ip()) else {
            refused("ip_limit");
            continue;
        };
        ctx.collect_tcp_owed();
        let Ok(permit) = ctx.tcp_slots.clone().try_acquire_owned() else {
            refused("connection_limit");
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
            let _slots = (permit, ip_slot);
            // Read per connection: a reload swaps the certificate for new handshakes.
            let tls = ctx
                .tls
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            match (transport, tls) {
                (Transport::Tls, Some(acceptor)) => {
                    let handshake = acceptor.accept(stream);
                    let deadline = ctx.limits().tls_handshake_timeout;
                    match tokio::time::timeout(deadline, handshake).await {
                        Ok(Ok(tls)) => serve_stream(ctx, tls, client).await,
                        Ok(Err(_)) => closed("tls_error"),
                        Err(_) => closed("tls_handshake_timeout"),
                    }
                }
                _ => serve_stream(ctx, stream, client).await,
            }
        });
    }
}

/// Serves one TCP or TLS client connection until it closes, is closed by a deadline or is
/// spliced to a peer (RFC 6062 ConnectionBind).
async fn serve_stream<S>(ctx: Arc<Ctx>, mut stream: S, client: ClientTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shard = ctx.shard_for(client.remote).clone();
    let key = (client.local, client.remote);
    let (tx, mut rx) = stream_queue(
        STREAM_QUEUE,
        ctx.limits().queue_bytes,
        ctx.queued_bytes.clone(),
    );
    lock(&shard.state).streams.insert(key, tx);
    let mut conn = Conn {
        ctx: &ctx,
        shard: &shard,
        client,
        decoder: StreamDecoder::stun_first(),
        // Sized at the first complete frame: a connection that never completes one (an idle or
        // dripping client) holds no output buffer.
        out: Vec::new(),
    };
    let result = conn.serve(&mut stream, &mut rx).await;
    lock(&shard.state).streams.remove(&key);
    match result {
        Ok(id) => {
            // Flush replies queued before the bind (the ConnectionBind success response).
            while let Some(frame) = rx.try_recv() {
                let sent = write_frame(&ctx, &mut stream, &frame).await;
                rx.written(&frame);
                if let Err(reason) = sent {
                    closed(reason.label());
                    return;
                }
            }
            drop(rx);
            rfc6062::splice(&ctx, &shard, id, stream, conn.decoder.remaining()).await;
        }
        Err(reason) => {
            closed(reason.label());
            drop(rx);
            conn.closed().await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Writes one frame within the write deadline.
async fn write_frame<S>(ctx: &Ctx, stream: &mut S, frame: &[u8]) -> Result<(), Close>
where
    S: AsyncWrite + Unpin,
{
    match tokio::time::timeout(ctx.limits().write_timeout, stream.write_all(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Close::WriteError),
        Err(_) => Err(Close::WriteTimeout),
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

/// The connection's two deadlines: the idle one, moved by every complete frame, and the one
/// for a connection without an allocation.
struct Deadlines {
    idle: tokio::time::Instant,
    /// When the connection was last seen without an allocation, counted from its accept (or
    /// from the first frame after its allocation ended); `None` while it holds one.
    unallocated_since: Option<tokio::time::Instant>,
}

impl Deadlines {
    /// The earliest deadline and what closes the connection there.
    fn next(&self, limits: &super::config::StreamLimits) -> (tokio::time::Instant, Close) {
        match self.unallocated_since {
            Some(t) if t + limits.unallocated_timeout < self.idle => {
                (t + limits.unallocated_timeout, Close::Unallocated)
            }
            _ => (self.idle, Close::Idle),
        }
    }
}

impl Conn<'_> {
    /// Hands every frame read to the shard and writes what the shard queued for the client,
    /// until the connection ends (with why) or a ConnectionBind binds it to a peer connection.
    /// Only a complete frame moves the idle deadline: bytes that do not complete one do not.
    async fn serve<S>(&mut self, stream: &mut S, rx: &mut StreamRx) -> Result<ConnectionId, Close>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = self.ctx.limits();
        let accepted = tokio::time::Instant::now();
        let mut deadlines = Deadlines {
            idle: accepted + limits.idle_timeout,
            unallocated_since: Some(accepted),
        };
        let mut read = vec![0u8; READ_BUF];
        loop {
            match self.handle_frames().await {
                Ok((_, Some(id))) => return Ok(id),
                Ok((0, None)) => {}
                Ok((_, None)) => self.progress(&mut deadlines),
                Err(_) => return Err(Close::BadFrame),
            }
            let (deadline, reason) = deadlines.next(&limits);
            tokio::select! {
                r = stream.read(&mut read) => match r {
                    Ok(n) if n > 0 => self.decoder.push(&read[..n]),
                    _ => return Err(Close::Client),
                },
                Some(frame) = rx.recv() => {
                    let sent = write_frame(self.ctx, stream, &frame).await;
                    rx.written(&frame);
                    sent?;
                }
                () = tokio::time::sleep_until(deadline) => return Err(reason),
            }
        }
    }

    /// Complete frames arrived: the idle deadline moves, and the allocation deadline starts or
    /// stops with the allocation.
    fn progress(&self, deadlines: &mut Deadlines) {
        let now = tokio::time::Instant::now();
        deadlines.idle = now + self.ctx.limits().idle_timeout;
        let allocated = lock(&self.shard.state).turn.has_allocation(self.client);
        deadlines.unallocated_since = match (allocated, deadlines.unallocated_since) {
            (true, _) => None,
            (false, None) => Some(now),
            (false, since) => since,
        };
    }

    /// Handles every complete frame buffered. Returns how many there were and the peer
    /// connection a ConnectionBind from this client bound (its remaining bytes are the peer's),
    /// or the framing error that ends the connection.
    async fn handle_frames(&mut self) -> Result<(usize, Option<ConnectionId>), FramingError> {
        let Conn {
            ctx,
            shard,
            client,
            decoder,
            out,
        } = self;
        let client = *client;
        let mut frames = 0;
        while let Some(frame) = decoder.next_frame()? {
            frames += 1;
            if out.len() < OUT_BUF {
                out.resize(OUT_BUF, 0);
            }
            let now = Instant::now();
            let unix = ctx.unix_secs(now);
            let d = dispatch(ctx, shard, now, out, |turn, binder, out| {
                turn.handle_client_packet(now, unix, client, frame, out, binder)
            });
            let followups = d.finish(ctx, out).await;
            let bound = relay::start(ctx, shard, followups);
            histograms::observe_if_allocate(frame, now);
            match bound {
                Some((id, c)) if c == client => return Ok((frames, Some(id))),
                _ => {}
            }
        }
        Ok((frames, None))
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
