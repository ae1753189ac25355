//! The queue from the hub task to one WebSocket's writer: bounded, and nothing allocated while
//! it is empty.
//!
//! A tokio `mpsc` channel costs about 1.3 KiB per connection before its first message (a
//! cache-padded channel and a first block of 32 slots). An idle signalling connection has no
//! queued frames most of its life, so the [`Outbox`] is a small `VecDeque` behind a mutex that
//! gives its buffer back once drained, and a [`Notify`] that wakes the writer.
//!
//! The queue is bounded in frames and in bytes (`ws_outbound_queue`, `ws_outbound_max_bytes`):
//! a client that does not read is cut off ([`Outbox::cut_off`]) once either bound is reached,
//! and what was queued for it is freed at once. Every queue's bytes add up in
//! the `floe_signal_ws_queued_bytes` gauge.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::actor::Outbound;

/// Bytes queued towards every WebSocket of this process.
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);

fn account_add(c: usize) {
    let now = QUEUED_BYTES.fetch_add(c, Ordering::Relaxed) + c;
    metrics::gauge!("floe_signal_ws_queued_bytes").set(now as f64);
}

fn account_sub(c: usize) {
    let now = QUEUED_BYTES.fetch_sub(c, Ordering::Relaxed) - c;
    metrics::gauge!("floe_signal_ws_queued_bytes").set(now as f64);
}

/// The bytes a frame is accounted for: its text plus the queue slot.
fn cost(frame: &Outbound) -> usize {
    std::mem::size_of::<Outbound>()
        + match frame {
            Outbound::Text(t) => t.len(),
            Outbound::Close(_) => 0,
        }
}

/// Creates a queue of at most `cap` frames and `max_bytes` bytes: the hub task's end and the
/// writer's end.
pub(crate) fn outbox(cap: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            bytes: 0,
            cap: cap.max(1),
            max_bytes: max_bytes.max(1),
            tx_alive: true,
            rx_alive: true,
            cut: false,
        }),
        notify: Notify::new(),
        cut: Notify::new(),
    });
    (Outbox(shared.clone()), OutboxRx(shared))
}

/// Why [`Outbox::try_send`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `cap` frames or `max_bytes` bytes are waiting: the client reads too slowly.
    Full,
    /// The writer stopped: the connection is closing.
    Closed,
}

/// The hub task's end: queue frames without waiting.
#[derive(Debug)]
pub(crate) struct Outbox(Arc<Shared>);

/// The writer's end.
#[derive(Debug)]
pub(crate) struct OutboxRx(Arc<Shared>);

/// The connection task's view of a queue: whether the hub cut the client off.
#[derive(Debug, Clone)]
pub(crate) struct CutOff(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
    /// Woken once when the queue is cut off.
    cut: Notify,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outbound>,
    /// Accounted bytes of `queue` ([`cost`]).
    bytes: usize,
    cap: usize,
    max_bytes: usize,
    tx_alive: bool,
    rx_alive: bool,
    /// Cut off as a slow consumer: nothing more is queued.
    cut: bool,
}

impl State {
    fn pop(&mut self) -> Option<Outbound> {
        let frame = self.queue.pop_front()?;
        let c = cost(&frame);
        self.bytes -= c;
        account_sub(c);
        Some(frame)
    }

    /// [`State::pop`], giving a large buffer back once the queue is empty.
    fn pop_and_shrink(&mut self) -> Option<Outbound> {
        let frame = self.pop()?;
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue = VecDeque::new();
        }
        Some(frame)
    }

    /// Drops every queued frame and gives its memory back.
    fn clear(&mut self) {
        account_sub(self.bytes);
        self.bytes = 0;
        self.queue = VecDeque::new();
    }
}

/// A drained queue keeps a buffer of at most this many slots (busy connections reuse it, idle
/// ones hold next to nothing).
const KEEP_SLOTS: usize = 4;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Outbox {
    /// Queues `frame` for the writer, or says why not.
    pub(crate) fn try_send(&self, frame: Outbound) -> Result<(), Refused> {
        let mut s = self.0.lock();
        if !s.rx_alive || s.cut {
            return Err(Refused::Closed);
        }
        let c = cost(&frame);
        if s.queue.len() >= s.cap || s.bytes + c > s.max_bytes {
            return Err(Refused::Full);
        }
        s.bytes += c;
        account_add(c);
        s.queue.push_back(frame);
        drop(s);
        self.0.notify.notify_one();
        Ok(())
    }

    /// Cuts a slow consumer off: drops what is queued (its memory is returned now, not when
    /// the client finally reads), queues `last` (the error and the close) in its place whatever
    /// the bounds, refuses anything later, and wakes the connection task, which gives the writer
    /// a short grace to send them and then drops the socket.
    pub(crate) fn cut_off(&self, last: impl IntoIterator<Item = Outbound>) {
        let mut s = self.0.lock();
        s.clear();
        for frame in last {
            let c = cost(&frame);
            s.bytes += c;
            account_add(c);
            s.queue.push_back(frame);
        }
        s.cut = true;
        drop(s);
        self.0.notify.notify_one();
        self.0.cut.notify_one();
    }
}

impl CutOff {
    /// Completes once the hub cut this connection off as a slow consumer.
    pub(crate) async fn cut(&self) {
        loop {
            let notified = self.0.cut.notified();
            if self.0.lock().cut {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.0.lock().tx_alive = false;
        self.0.notify.notify_one();
    }
}

impl OutboxRx {
    /// The next frame; `None` once the hub task dropped its end and every frame was taken.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        loop {
            {
                let mut s = self.0.lock();
                if let Some(frame) = s.pop_and_shrink() {
                    return Some(frame);
                }
                if !s.tx_alive {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a frame queued between the
            // check above and this await is not missed.
            self.0.notify.notified().await;
        }
    }
}

impl OutboxRx {
    /// The next frame if one is queued now (the writer batches what is queued; tests drive the
    /// hub task without a writer).
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.0.lock().pop_and_shrink()
    }

    /// The connection task's handle to learn of a cut-off.
    pub(crate) fn cut_off_signal(&self) -> CutOff {
        CutOff(self.0.clone())
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.rx_alive = false;
        s.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    fn text(s: &str) -> Outbound {
        Outbound::Text(s.into())
    }

    #[tokio::test]
    async fn frames_arrive_in_order_then_none_after_the_sender_is_gone() {
        let (tx, mut rx) = outbox(4, 1 << 20);
        tx.try_send(text("a")).unwrap();
        tx.try_send(text("b")).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(Outbound::Text(t)) = rx.recv().await {
            got.push(t);
        }
        assert_eq!(got, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_full_queue_and_a_closed_one_are_told_apart() {
        let (tx, rx) = outbox(2, 1 << 20);
        tx.try_send(text("a")).unwrap();
        tx.try_send(text("b")).unwrap();
        assert_eq!(tx.try_send(text("c")), Err(Refused::Full));
        drop(rx);
        assert_eq!(tx.try_send(text("d")), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn the_byte_bound_holds_and_a_cut_off_returns_the_memory_at_once() {
        // Issue 12 finding 2: before, only frames were counted (1024 of up to 256 KiB each).
        let big = "x".repeat(1000);
        let one = cost(&text(&big));
        let (tx, rx) = outbox(1024, 3 * one);
        let cut = rx.cut_off_signal();
        for _ in 0..3 {
            tx.try_send(text(&big)).unwrap();
        }
        assert_eq!(tx.try_send(text(&big)), Err(Refused::Full));
        assert_eq!(rx.0.lock().bytes, 3 * one);
        tx.cut_off([
            text("bye"),
            Outbound::Close(floe_signal::ErrorCode::SlowConsumer),
        ]);
        assert_eq!(
            rx.0.lock().bytes,
            cost(&text("bye")) + cost(&Outbound::Close(floe_signal::ErrorCode::SlowConsumer))
        );
        assert_eq!(tx.try_send(text("late")), Err(Refused::Closed));
        tokio::time::timeout(std::time::Duration::from_secs(1), cut.cut())
            .await
            .unwrap();
        drop(rx);
        drop(cut);
        // Every queue of this test is gone: nothing of theirs stays accounted.
        let (_tx2, rx2) = outbox(4, 1 << 20);
        assert_eq!(rx2.0.lock().bytes, 0);
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_and_a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = outbox(1024, 1 << 20);
        let writer = tokio::spawn(async move {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            (n, rx.0.lock().queue.capacity())
        });
        for i in 0..100 {
            tx.try_send(text(&i.to_string())).unwrap();
        }
        drop(tx);
        let (n, capacity) = writer.await.unwrap();
        assert_eq!(n, 100);
        assert!(capacity <= KEEP_SLOTS, "{capacity}");
    }
}
