//! The UDP fast path's socket calls: batched receives (`recvmmsg`, through `quinn-udp`, so floe
//! itself needs no `unsafe`) into a buffer owned by the shard's thread, and sends that go straight
//! to the kernel.
//!
//! # Why
//! On loopback (and mostly on a real host) a relay's cost is its syscalls, not its parsing (see
//! `docs/benchmarks.md`). A plain tokio receive loop makes one `recvfrom` per datagram plus one
//! more that fails with EAGAIN before the task sleeps. `recvmmsg` returns every queued datagram
//! (up to [`BATCH`]) in one call; when it returns fewer than it could, the queue was empty, so the
//! socket's readiness is cleared without the extra failing call. That is safe because tokio
//! registers sockets edge-triggered: a datagram that arrives after the queue was drained raises a
//! new readiness event, which wakes the task again.
//!
//! # Buffers
//! Every socket of a shard is driven by that shard's single thread, and a batch is received,
//! handled and sent without an `.await` in between, so one receive buffer per thread serves all
//! of the shard's sockets (the listeners and every relay socket), and so does the output buffer
//! the state machine writes into. An allocation therefore costs no buffer of its own.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::mmsg;

/// Datagrams received per `recvmmsg` call.
pub(super) const BATCH: usize = BATCH_SIZE;
/// Room for the largest UDP datagram.
const SLOT: usize = 65_536;
/// Output buffer: the largest relayed UDP payload plus a Data indication's header.
pub(super) const OUT_BUF: usize = 65_600;

/// One thread's buffers: `BATCH` receive slots of `SLOT` bytes and one output buffer for the
/// state machine (allocated zeroed, so pages a small datagram never touches are never faulted
/// in).
struct RecvBuffers {
    data: Vec<u8>,
    meta: [RecvMeta; BATCH],
    out: Vec<u8>,
}

impl RecvBuffers {
    fn new() -> Box<RecvBuffers> {
        Box::new(RecvBuffers {
            data: vec![0u8; SLOT * BATCH],
            meta: [RecvMeta::default(); BATCH],
            out: vec![0u8; OUT_BUF],
        })
    }
}

thread_local! {
    static BUFFERS: RefCell<Option<Box<RecvBuffers>>> = const { RefCell::new(None) };
}

/// `quinn-udp`'s receive state. On the platforms it batches on, `recv` uses only the socket it is
/// given; the state matters for its send path (GSO, ECN), which floe does not use. One state is
/// therefore made once, from a throwaway socket, instead of letting `UdpSocketState::new` set its
/// QUIC socket options (GRO, DF with PMTU probing, ECN and PKTINFO control messages) on every
/// relay socket: a relay must keep the kernel's default fragmentation behaviour, and the options
/// would cost setsockopt calls per allocation and control-message parsing per datagram.
fn recv_state() -> Option<&'static UdpSocketState> {
    static STATE: OnceLock<Option<UdpSocketState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0")
                .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
                .ok()?;
            UdpSocketState::new(UdpSockRef::from(&probe)).ok()
        })
        .as_ref()
}

/// Outcome of one [`recv_batch`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    /// The batch was full: more datagrams may be queued, call again.
    More,
    /// The queue is drained (or the socket failed); the task should wait for readiness.
    Drained,
}

/// A UDP socket's receive loop (a shard's listener or relay socket): waits for readiness, then
/// hands every queued datagram to `handle(now, from, datagram, out)` with [`recv_batch`], the
/// clock read once per batch. Runs until the socket fails; returns that error.
pub(super) async fn serve(
    socket: &UdpSocket,
    mut handle: impl FnMut(Instant, SocketAddr, &[u8], &mut [u8]),
) -> io::Error {
    loop {
        if let Err(e) = socket.readable().await {
            return e;
        }
        let now = Instant::now();
        recv_batch(socket, |from, datagram, out| {
            handle(now, from, datagram, out)
        });
    }
}

/// Receives every queued datagram (up to [`BATCH`]) from `socket` and calls `handle(from,
/// datagram, out)` for each, in arrival order, `out` being a scratch output buffer of
/// `OUT_BUF` bytes. Call it after `socket.readable().await`. When the queue
/// is drained, readiness is cleared, so the next `readable().await` sleeps until a new datagram.
pub(super) fn recv_batch(
    socket: &UdpSocket,
    mut handle: impl FnMut(SocketAddr, &[u8], &mut [u8]),
) -> Batch {
    let Some(state) = recv_state() else {
        return recv_one(socket, handle);
    };
    BUFFERS.with(|cell| {
        // A re-entrant call (not expected: `handle` never receives) gets its own buffers.
        let mut guard = cell.try_borrow_mut().ok();
        let mut local = None;
        let bufs: &mut RecvBuffers = match guard.as_deref_mut() {
            Some(slot) => slot.get_or_insert_with(RecvBuffers::new),
            None => local.get_or_insert_with(RecvBuffers::new),
        };
        let RecvBuffers { data, meta, out } = bufs;
        let mut chunks = data.chunks_exact_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let received = socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(socket), &mut iovs, meta)
        });
        let n = match received {
            Ok(n) => n,
            // WouldBlock: `try_io` has cleared readiness already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Batch::Drained,
            Err(e) => {
                tracing::trace!(error = %e, "udp recv error");
                // ICMP errors and the like: try again on the next readiness.
                return Batch::More;
            }
        };
        for (iov, m) in iovs.iter().zip(meta.iter()).take(n) {
            let len = m.len.min(iov.len());
            // Without UDP_GRO the stride is the datagram; split defensively all the same.
            let stride = if m.stride == 0 { len } else { m.stride };
            for datagram in iov[..len].chunks(stride.max(1)) {
                handle(m.addr, datagram, out);
            }
        }
        if n < BATCH {
            clear_readable(socket);
            Batch::Drained
        } else {
            Batch::More
        }
    })
}

/// Fallback where `quinn-udp` could not set up: one `recv_from` per call.
fn recv_one(socket: &UdpSocket, mut handle: impl FnMut(SocketAddr, &[u8], &mut [u8])) -> Batch {
    let mut buf = vec![0u8; SLOT];
    let mut out = vec![0u8; OUT_BUF];
    match socket.try_recv_from(&mut buf) {
        Ok((n, from)) => {
            handle(from, &buf[..n], &mut out);
            Batch::More
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Batch::Drained,
        Err(_) => Batch::More,
    }
}

/// Marks `socket` not readable without a syscall (see the module docs for why this is safe).
fn clear_readable(socket: &UdpSocket) {
    let _ = socket.try_io(Interest::READABLE, || {
        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
    });
}

/// Sends `bytes` to `to` with one `sendto`, bypassing tokio's readiness bookkeeping. Returns the
/// error (WouldBlock when the socket's send buffer is full).
pub(super) fn send_now(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
    socket2::SockRef::from(socket)
        .send_to(bytes, &to.into())
        .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Batched sends to clients
// ---------------------------------------------------------------------------------------------

/// Datagrams to clients waiting to leave one socket, sent together with one `sendmmsg` when the
/// shard's thread has run every task that was ready (relay sockets woken by the same `epoll_wait`
/// each add their datagram) or when the queue is full. Sending k datagrams in one call saves k-1
/// syscalls and, on loopback, k-1 preemptions by the woken receiver.
struct SendQueue {
    /// Set on a shard's thread by [`flush_loop`]; elsewhere nothing is queued.
    flush: Option<Arc<Notify>>,
    socket: Option<Arc<UdpSocket>>,
    data: Vec<u8>,
    /// (destination, start, end) in `data`.
    msgs: Vec<(SocketAddr, usize, usize)>,
}

thread_local! {
    static SEND_QUEUE: RefCell<SendQueue> = const {
        RefCell::new(SendQueue { flush: None, socket: None, data: Vec::new(), msgs: Vec::new() })
    };
}

/// Larger datagrams are sent at once (after what is queued).
const QUEUE_MAX_DATAGRAM: usize = 4096;
/// Bytes queued before a flush.
const QUEUE_MAX_BYTES: usize = 64 * 1024;

/// Sends `bytes` to `to` from `socket`, queued behind the other datagrams of this shard's current
/// round when called on a shard's thread. Errors are reported through `failed` (WouldBlock never:
/// a datagram that meets a full send buffer is handed to a task that waits for room).
pub(super) fn queue_send(
    socket: &Arc<UdpSocket>,
    bytes: &[u8],
    to: SocketAddr,
    failed: fn(SocketAddr, &io::Error),
) {
    let queued = SEND_QUEUE.with(|cell| {
        let Ok(mut q) = cell.try_borrow_mut() else {
            return false;
        };
        let Some(flush) = q.flush.clone() else {
            return false;
        };
        let same = q.socket.as_ref().is_none_or(|s| Arc::ptr_eq(s, socket));
        if !same
            || q.msgs.len() >= mmsg::MAX
            || q.data.len() + bytes.len() > QUEUE_MAX_BYTES
            || bytes.len() > QUEUE_MAX_DATAGRAM
        {
            q.flush_now(failed);
        }
        if bytes.len() > QUEUE_MAX_DATAGRAM {
            return false;
        }
        if q.msgs.is_empty() {
            q.socket = Some(socket.clone());
            flush.notify_one();
        }
        let start = q.data.len();
        q.data.extend_from_slice(bytes);
        let end = q.data.len();
        q.msgs.push((to, start, end));
        true
    });
    if !queued {
        send_or_defer(socket, bytes, to, failed);
    }
}

/// Sends at once; a full send buffer hands a copy to a task that waits for room.
pub(super) fn send_or_defer(
    socket: &Arc<UdpSocket>,
    bytes: &[u8],
    to: SocketAddr,
    failed: fn(SocketAddr, &io::Error),
) {
    match send_now(socket, bytes, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let socket = socket.clone();
            let bytes = bytes.to_vec();
            tokio::spawn(async move {
                if let Err(e) = socket.send_to(&bytes, to).await {
                    failed(to, &e);
                }
            });
        }
        Err(e) => failed(to, &e),
    }
}

impl SendQueue {
    fn flush_now(&mut self, failed: fn(SocketAddr, &io::Error)) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let mut msgs: [(SocketAddr, &[u8]); mmsg::MAX] =
            [(SocketAddr::from(([0, 0, 0, 0], 0)), &[]); mmsg::MAX];
        let n = self.msgs.len().min(mmsg::MAX);
        for (slot, &(to, start, end)) in msgs.iter_mut().zip(self.msgs.iter()) {
            *slot = (to, &self.data[start..end]);
        }
        let mut done = 0;
        while done < n {
            match mmsg::send_many(&*socket, &msgs[done..n]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => break,
                Err(e) => {
                    // This datagram failed; carry on with the next.
                    failed(msgs[done].0, &e);
                    done += 1;
                }
            }
        }
        // Whatever is left (full send buffer, or no sendmmsg here): one at a time.
        for &(to, bytes) in &msgs[done..n] {
            send_or_defer(&socket, bytes, to, failed);
        }
        self.msgs.clear();
        self.data.clear();
    }
}

/// A shard's flusher: runs on the shard's thread, makes it the thread's send queue owner, and
/// sends what was queued whenever woken (after the tasks that were ready when the first datagram
/// was queued).
pub(super) async fn flush_loop(failed: fn(SocketAddr, &io::Error)) {
    let notify = Arc::new(Notify::new());
    SEND_QUEUE.with(|cell| cell.borrow_mut().flush = Some(notify.clone()));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SEND_QUEUE.with(|cell| {
                if let Ok(mut q) = cell.try_borrow_mut() {
                    q.flush = None;
                    q.socket = None;
                    q.msgs.clear();
                    q.data.clear();
                }
            });
        }
    }
    let _reset = Reset;
    loop {
        notify.notified().await;
        SEND_QUEUE.with(|cell| {
            if let Ok(mut q) = cell.try_borrow_mut() {
                q.flush_now(failed);
            }
        });
    }
}
