//! The WebSocket upgrade and the connection task (reader and writer).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use floe_signal::ErrorCode;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use crate::actor::Outbound;
use crate::origin::Verdict;
use crate::outbox::{outbox, OutboxRx};

use super::{gone, refuse, AppState};

pub(super) async fn ws_upgrade(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if *state.0.stop.borrow() {
        return gone();
    }
    // Development mode: a page from a non-local origin must not use a developer's localhost
    // server (a malicious site could otherwise join rooms through the visitor's browser).
    if state.0.origins.check(&headers) == Verdict::Refused {
        return refuse(ErrorCode::Forbidden, state.0.origins.refusal());
    }
    let ip = state.0.client_ip(addr, &headers);
    let Ok(permit) = state.0.conn_limit.clone().try_acquire_owned() else {
        return refuse(
            ErrorCode::ServerBusy,
            "connection limit reached; try another node",
        );
    };
    // Frames up to 4x the message limit are read and refused politely by the hub; larger ones
    // break the connection at the transport (and are counted as message_too_large too).
    let hard_cap = state.0.max_message_bytes.saturating_mul(4).max(4096);
    // Buffers sized to signalling traffic, not to tungstenite's defaults (a 128 KiB read buffer
    // per connection, zero-filled before every read): see `READ_BUFFER`.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // tungstenite requires more than the write buffer (it panics otherwise).
        .max_write_buffer_size(hard_cap.saturating_mul(2).saturating_add(WRITE_BUFFER))
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_upgrade(move |socket| async move {
            connection(socket, ip, state).await;
            drop(permit);
        })
}

/// The read buffer of one WebSocket, allocated when it opens. Heartbeats, acks and candidates
/// (tens to hundreds of bytes) fit in one read; a larger frame (an SDP of a few KiB, up to the
/// message limit) grows the buffer to the frame's size as its header is read, so this bounds only
/// the idle cost, not the message size.
const READ_BUFFER: usize = 1024;

/// The connection task. Its future is stored in the task for the connection's whole life, sized
/// to the largest state it can be in: the awaits that run once or only on the way out (connect,
/// disconnect, the refusals, the close grace timeouts, the close frame) are boxed so that an idle
/// connection does not pay for them (the task went from about 2.8 KB to 2.0 KB per connection,
/// docs/benchmarks.md).
async fn connection(socket: WebSocket, ip: IpAddr, state: AppState) {
    let hub = state.0.hub.clone();
    let (tx, mut rx) = outbox(state.0.outbound_queue, state.0.outbound_max_bytes);
    let cut_off = rx.cut_off_signal();
    let Ok(conn) = Box::pin(hub.connect(ip, tx)).await else {
        return;
    };
    let (mut sink, mut stream) = socket.split();
    // The writer owns the receiver: once it stops, the hub task finds the channel closed (a
    // hang-up), never full (a slow consumer).
    let writer = async move {
        loop {
            let first = rx.recv().await;
            if let Some(end) = write_batch(&mut sink, first, &mut rx).await {
                return end;
            }
        }
    };
    let reader = async {
        while let Some(msg) = stream.next().await {
            let handled = match msg {
                Ok(Message::Text(t)) => hub.frame(conn, t.as_str().as_bytes()),
                Ok(Message::Binary(b)) => hub.frame(conn, &b),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => break,
                Err(e) => match transport_error(e) {
                    TransportError::Capacity => {
                        Box::pin(hub.oversized(conn)).await;
                        return ReadEnd::Refused;
                    }
                    // tungstenite checks text frames itself and its stream ends after the
                    // error: answer `bad_json` (fatal) before the close.
                    TransportError::Utf8 => {
                        Box::pin(hub.invalid_text(conn)).await;
                        return ReadEnd::Refused;
                    }
                    TransportError::Other => break,
                },
            };
            if handled.is_err() {
                break;
            }
        }
        ReadEnd::Done
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        () = cut_off.cut() => {
            // A slow consumer: the hub freed its queue and left the error and the close in it.
            // A client that reads nothing would keep the writer blocked on a full socket
            // forever: give it the grace, then drop the socket (and what tungstenite and the
            // kernel still buffer for it).
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut writer)).await;
        }
        end = &mut reader => {
            if end == ReadEnd::Refused {
                // Let the writer send the error and the close frame.
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut writer)).await;
            }
        }
        end = &mut writer => {
            if end == WriteEnd::Failed {
                // The client hung up while we wrote to it. What it sent before (its `leave`
                // above all) still reaches the hub, ahead of the disconnect below: read what
                // the socket holds until the stream ends (bounded).
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, &mut reader)).await;
            }
        }
    }
    Box::pin(hub.disconnect(conn)).await;
}

/// Frames written before one flush: the writer puts what the hub has queued for it (up to this
/// many frames) into tungstenite's write buffer and hands them to the kernel in one write.
const WRITE_BATCH: usize = 32;

/// tungstenite writes to the socket once its write buffer holds more than this, and at every
/// flush: the frames of one batch share a write syscall. The buffer keeps the capacity of the
/// largest batch it held (tungstenite cannot shrink it); an idle peer's stays the size of its
/// `welcome`.
const WRITE_BUFFER: usize = 8 * 1024;

/// Writes `first` and what else is queued now, flushing after every [`WRITE_BATCH`] frames and
/// at the end. `Some` once writing is over.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Option<Outbound>,
    rx: &mut OutboxRx,
) -> Option<WriteEnd> {
    let mut next = first;
    let mut fed = 0;
    while let Some(out) = next.take() {
        match out {
            Outbound::Text(text) => {
                if sink.feed(Message::Text(text.into())).await.is_err() {
                    return Some(WriteEnd::Failed);
                }
            }
            Outbound::Close(code) => {
                let frame = CloseFrame {
                    code: close_code(code),
                    reason: code.as_str().into(),
                };
                let _ = Box::pin(sink.send(Message::Close(Some(frame)))).await;
                return Some(WriteEnd::Done);
            }
        }
        fed += 1;
        next = rx.try_recv();
        if (next.is_none() || fed % WRITE_BATCH == 0) && sink.flush().await.is_err() {
            return Some(WriteEnd::Failed);
        }
    }
    // `first` was `None`: the hub task dropped its end and every frame was written.
    (fed == 0).then_some(WriteEnd::Done)
}

/// How a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// The hub closed the connection (a fatal error or shutdown; the close frame was sent) or
    /// dropped it (a slow consumer): it ignores anything the client sends from now on.
    Done,
    /// Writing failed: the client is gone.
    Failed,
}

/// How a connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// End of stream, a close frame, a transport error, or the hub is gone.
    Done,
    /// A frame the transport cannot read past (over the hard cap, or a text frame that is not
    /// UTF-8); the hub was told and answers with a fatal error.
    Refused,
}

/// How long a connection task waits, once one direction stopped, for the other to finish: the
/// reader to hand over frames a client sent before it hung up, or the writer to send a fatal
/// error's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The transport errors the hub answers.
enum TransportError {
    /// A frame or message over the hard cap.
    Capacity,
    /// A text frame that is not valid UTF-8.
    Utf8,
    /// Anything else (a reset, a protocol violation): the connection just ends.
    Other,
}

fn transport_error(e: axum::Error) -> TransportError {
    use tokio_tungstenite::tungstenite::Error;
    match e.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(_)) => TransportError::Capacity,
        Ok(Error::Utf8(_)) => TransportError::Utf8,
        _ => TransportError::Other,
    }
}

/// The WebSocket close code for a fatal error.
fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::MessageTooLarge => 1009,
        ErrorCode::BadJson => 1007, // invalid frame payload data (RFC 6455 §7.4.1)
        ErrorCode::ServerShutdown => 1012, // service restart: reconnect
        ErrorCode::Internal => 1011,
        _ => 1008, // policy violation
    }
}
