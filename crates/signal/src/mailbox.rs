//! A session's outgoing mailbox: numbered messages kept until the client acknowledges them, so
//! that a client that reconnects gets every message it missed, in order.

use std::collections::VecDeque;

use crate::proto::ServerMsg;

/// An acknowledgement above the last sequence number assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("acknowledges messages that were never sent (the last is {last_seq})")]
pub struct AckBeyond {
    /// The highest sequence number assigned.
    pub last_seq: u64,
}

/// Per-session message store with sequence numbers starting at 1.
#[derive(Debug, Default)]
pub struct Mailbox {
    last_seq: u64,
    acked: u64,
    queue: VecDeque<(ServerMsg, usize)>,
    bytes: usize,
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// The highest sequence number assigned so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// An empty mailbox whose messages up to `last_seq` were acknowledged elsewhere (a session
    /// taken over from another node).
    pub fn starting_after(last_seq: u64) -> Self {
        Self {
            last_seq,
            acked: last_seq,
            ..Self::default()
        }
    }

    /// Appends `msg`, accounting `size` bytes. Its `seq` must be above [`Mailbox::last_seq`]:
    /// usually `self.next_seq()`, higher when another node numbered it (a shared mailbox whose
    /// earlier messages were acknowledged there).
    pub fn push(&mut self, msg: ServerMsg, size: usize) {
        debug_assert!(msg.seq() > Some(self.last_seq));
        self.last_seq = msg.seq().unwrap_or(self.last_seq + 1);
        self.bytes += size;
        self.queue.push_back((msg, size));
    }

    /// Drops every message with `seq <= upto`. Returns whether the acknowledged point moved, or
    /// [`AckBeyond`] (and changes nothing) when `upto` is above [`Mailbox::last_seq`]: a client
    /// acknowledging what it was never sent, so that a reader that never reads cannot empty its
    /// mailbox by guessing numbers.
    pub fn ack(&mut self, upto: u64) -> Result<bool, AckBeyond> {
        if upto > self.last_seq {
            return Err(AckBeyond {
                last_seq: self.last_seq,
            });
        }
        if upto <= self.acked {
            return Ok(false);
        }
        self.acked = upto;
        while let Some((m, size)) = self.queue.front() {
            if m.seq().is_some_and(|s| s <= upto) {
                self.bytes -= *size;
                self.queue.pop_front();
            } else {
                break;
            }
        }
        if self.queue.is_empty() {
            // An idle session acknowledges everything: give the buffer back.
            self.queue = VecDeque::new();
        }
        Ok(true)
    }

    /// The unacknowledged messages with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> impl Iterator<Item = &ServerMsg> {
        self.queue
            .iter()
            .map(|(m, _)| m)
            .filter(move |m| m.seq().is_some_and(|s| s > after))
    }

    /// Number of unacknowledged messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether every message has been acknowledged.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Accounted bytes of unacknowledged messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong_like(seq: u64) -> ServerMsg {
        ServerMsg::EndOfCandidates {
            seq,
            from: crate::ids::PeerId::new("a").unwrap(),
        }
    }

    #[test]
    fn acknowledging_everything_frees_the_buffer() {
        let mut mb = Mailbox::new();
        for _ in 0..5 {
            let s = mb.next_seq();
            mb.push(pong_like(s), 10);
        }
        assert_eq!(mb.ack(4), Ok(true));
        assert!(mb.queue.capacity() > 0);
        assert_eq!(mb.ack(5), Ok(true));
        assert_eq!((mb.len(), mb.bytes(), mb.queue.capacity()), (0, 0, 0));
        assert_eq!(mb.next_seq(), 6);
    }

    #[test]
    fn ack_and_since() {
        let mut mb = Mailbox::new();
        for _ in 0..5 {
            let s = mb.next_seq();
            mb.push(pong_like(s), 10);
        }
        assert_eq!(mb.bytes(), 50);
        assert_eq!(mb.ack(2), Ok(true));
        assert_eq!(mb.len(), 3);
        assert_eq!(
            mb.since(3).filter_map(ServerMsg::seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(mb.ack(1), Ok(false)); // stale ack is a no-op
        assert_eq!(mb.len(), 3);
        // Beyond what was numbered (before issue 12: clamped and everything dropped).
        assert_eq!(mb.ack(99), Err(AckBeyond { last_seq: 5 }));
        assert_eq!(mb.ack(u64::MAX), Err(AckBeyond { last_seq: 5 }));
        assert_eq!((mb.len(), mb.bytes()), (3, 30));
        assert_eq!(mb.ack(5), Ok(true));
        assert!(mb.is_empty());
        assert_eq!(mb.bytes(), 0);
        assert_eq!(mb.next_seq(), 6);
    }

    #[test]
    fn numbers_from_another_node_continue_the_sequence() {
        let mut mb = Mailbox::starting_after(7);
        assert_eq!((mb.last_seq(), mb.next_seq()), (7, 8));
        mb.push(pong_like(9), 10); // numbered by the shared directory
        assert_eq!(mb.last_seq(), 9);
        assert_eq!(mb.ack(7), Ok(false));
        assert_eq!(mb.ack(9), Ok(true));
        assert!(mb.is_empty());
    }
}
