//! The transaction cache: a retransmitted request gets the identical answer (RFC 8489 §6.3.1
//! over UDP, RFC 8656 §7.2 for Allocate), e.g. a retransmitted Allocate gets its success response instead of 437.
//!
//! Keyed by 5-tuple and transaction id; bounded (oldest evicted first) and time-limited (40 s,
//! RFC 8489 §6.2.1: Rc * RTO covers 39.5 s). Only answers to authenticated requests are kept, so
//! unauthenticated traffic adds nothing here.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use floe_stun::TransactionId;

use super::types::ClientTuple;

/// RFC 8489 §6.2.1: how long a UDP client may retransmit (39.5 s), rounded up.
pub(crate) const TRANSACTION_TTL: Duration = Duration::from_secs(40);

type Key = (ClientTuple, TransactionId);

#[derive(Debug)]
pub(crate) struct TransactionCache {
    entries: HashMap<Key, Vec<u8>>,
    order: VecDeque<(Key, Instant)>,
    capacity: usize,
}

impl TransactionCache {
    pub(crate) fn new(capacity: usize) -> Self {
        TransactionCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The cached answer to (`client`, `tid`), if still fresh.
    pub(crate) fn get(&self, client: ClientTuple, tid: TransactionId) -> Option<&[u8]> {
        self.entries.get(&(client, tid)).map(Vec::as_slice)
    }

    pub(crate) fn insert(
        &mut self,
        client: ClientTuple,
        tid: TransactionId,
        response: &[u8],
        now: Instant,
    ) {
        if self.capacity == 0 {
            return;
        }
        self.expire(now);
        while self.entries.len() >= self.capacity {
            let Some((key, _)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&key);
        }
        let key = (client, tid);
        if self.entries.insert(key, response.to_vec()).is_none() {
            self.order.push_back((key, now + TRANSACTION_TTL));
        }
    }

    /// Forgets entries older than [`TRANSACTION_TTL`].
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(key, deadline)) = self.order.front() {
            if deadline > now {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
