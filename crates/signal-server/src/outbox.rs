//! The queue from the hub task to one WebSocket's writer: bounded, and nothing allocated while
//! it is empty.
//!
//! A tokio `mpsc` channel costs about 1.3 KiB per connection before its first message (a
//! cache-padded channel and a first block of 32 slots). An idle signalling connection has no
//! queued frames most of its life, so the [`Outbox`] is a small `VecDeque` behind a mutex that
//! gives its buffer back once drained, and a [`Notify`] that wakes the writer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::actor::Outbound;

/// Creates a queue of at most `cap` frames: the hub task's end and the writer's end.
pub(crate) fn outbox(cap: usize) -> (Outbox, OutboxRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            cap: cap.max(1),
            tx_alive: true,
            rx_alive: true,
        }),
        notify: Notify::new(),
    });
    (Outbox(shared.clone()), OutboxRx(shared))
}

/// Why [`Outbox::try_send`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `cap` frames are waiting: the client reads too slowly.
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

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outbound>,
    cap: usize,
    tx_alive: bool,
    rx_alive: bool,
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
        if !s.rx_alive {
            return Err(Refused::Closed);
        }
        if s.queue.len() >= s.cap {
            return Err(Refused::Full);
        }
        s.queue.push_back(frame);
        drop(s);
        self.0.notify.notify_one();
        Ok(())
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
                if let Some(frame) = s.queue.pop_front() {
                    if s.queue.is_empty() && s.queue.capacity() > KEEP_SLOTS {
                        s.queue = VecDeque::new();
                    }
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

impl Drop for OutboxRx {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.rx_alive = false;
        s.queue = VecDeque::new();
    }
}

#[cfg(test)]
impl OutboxRx {
    /// The next frame if one is queued (tests drive the hub task without a writer).
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.0.lock().queue.pop_front()
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
        let (tx, mut rx) = outbox(4);
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
        let (tx, rx) = outbox(2);
        tx.try_send(text("a")).unwrap();
        tx.try_send(text("b")).unwrap();
        assert_eq!(tx.try_send(text("c")), Err(Refused::Full));
        drop(rx);
        assert_eq!(tx.try_send(text("d")), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_and_a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = outbox(1024);
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
