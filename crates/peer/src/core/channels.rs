//! Data channels: `chat` and `file`, and the application's outbox, written into SCTP while it
//! buffers less than [`MAX_BUFFERED`].

use std::time::Instant;

use str0m::channel::{ChannelConfig, ChannelId};

use super::{Output, PeerCore};
use crate::PeerError;

/// Keep at most this much queued in SCTP before holding the application's messages back.
const MAX_BUFFERED: usize = 1 << 20;

/// The data channels of floe.js (negotiated out of band, no DCEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chan {
    /// `chat`, stream id 0: text lines.
    Chat,
    /// `file`, stream id 1: the file protocol of [`crate::transfer`].
    File,
}

impl Chan {
    fn stream_id(self) -> u16 {
        match self {
            Chan::Chat => 0,
            Chan::File => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Chan::Chat => "chat",
            Chan::File => "file",
        }
    }

    pub(super) fn config(self) -> ChannelConfig {
        ChannelConfig {
            label: self.label().to_owned(),
            negotiated: Some(self.stream_id()),
            ..ChannelConfig::default()
        }
    }
}

pub(super) struct Queued {
    chan: Chan,
    binary: bool,
    data: Vec<u8>,
    ticket: u64,
}

impl PeerCore {
    /// Queues a message; [`Output::Sent`] with the returned ticket says when SCTP took it.
    /// An error means the connection failed (as from any `handle_*`).
    pub fn send(
        &mut self,
        chan: Chan,
        binary: bool,
        data: Vec<u8>,
        now: Instant,
    ) -> Result<u64, PeerError> {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.outbox.push_back(Queued {
            chan,
            binary,
            data,
            ticket,
        });
        self.drive(now)?;
        Ok(ticket)
    }

    /// Nothing is waiting to be sent and SCTP holds no unacknowledged data.
    pub fn is_flushed(&mut self) -> bool {
        if !self.outbox.is_empty() {
            return false;
        }
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.rtc.channel(id).map(|mut c| c.buffered_amount()))
            .sum::<usize>()
            == 0
    }

    /// Fails every queued message (the connection ended).
    pub fn fail_outbox(&mut self, reason: &str) {
        for q in self.outbox.drain(..) {
            self.out
                .push_back(Output::Sent(q.ticket, Err(reason.to_owned())));
        }
    }

    pub(super) fn write_outbox(&mut self) {
        while let Some(q) = self.outbox.front() {
            let chan = q.chan;
            let Some(id) = self.channel_id(chan) else {
                break;
            };
            if !self.open.contains(&chan) {
                break;
            }
            let Some(mut ch) = self.rtc.channel(id) else {
                break;
            };
            if ch.buffered_amount() > MAX_BUFFERED {
                break;
            }
            match ch.write(q.binary, &q.data) {
                Ok(true) => {
                    if let Some(q) = self.outbox.pop_front() {
                        self.out.push_back(Output::Sent(q.ticket, Ok(())));
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    if let Some(q) = self.outbox.pop_front() {
                        self.out
                            .push_back(Output::Sent(q.ticket, Err(e.to_string())));
                    }
                }
            }
        }
    }

    fn channel_id(&self, chan: Chan) -> Option<ChannelId> {
        self.channels
            .iter()
            .find(|(_, c)| **c == chan)
            .map(|(id, _)| *id)
    }
}
