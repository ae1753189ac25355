//! The data path: sending to a peer (ChannelData or Send indication, or the queue while the
//! permission is pending, RFC 8656 §11, §12) and receiving relayed data.

use core::net::SocketAddr;
use std::time::Instant;

use floe_stun::attr::{Data, Family, XorPeerAddress};
use floe_stun::{BuildError, ChannelData, Class, Message, MessageBuilder, Method};

use super::peers::{Lease, Permission};
use super::{canonical, Error, State, TurnClient, MAX_PAYLOAD};

/// Where data to a peer goes now.
pub(super) enum Route {
    Channel(u16),
    Indication,
    Wait,
    Drop(Error),
}

impl TurnClient {
    /// Sends `data` to `peer` through the relay: ChannelData when a channel is bound to the peer
    /// (RFC 8656 §12.6), a Send indication otherwise (§11.1). Asks for the permission (and, with
    /// `auto_channel`, a channel) on first use and keeps them alive while used; until the
    /// permission is confirmed the data waits in a bounded queue (see the module docs).
    ///
    /// Errors: [`Error::NotAllocated`] before [`TurnEvent::Allocated`] or after the end,
    /// [`Error::InvalidPeer`]/[`Error::PeerFamilyMismatch`]/[`Error::TooLarge`] for bad
    /// arguments, [`Error::QueueFull`], or the error that failed the peer's permission within
    /// the last 30 s (e.g. 403).
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8], now: Instant) -> Result<(), Error> {
        let peer = self.check_peer(peer)?;
        if data.len() > MAX_PAYLOAD {
            return Err(Error::TooLarge(data.len()));
        }
        self.use_permission(peer, now)?;
        if self.cfg.auto_channel {
            self.use_channel(peer, now);
        }
        match self.route(peer, now) {
            Route::Channel(n) => self.push_channel_data(n, data),
            Route::Indication => self.push_send_indication(peer, data),
            Route::Wait => self.queue.push(peer, data),
            Route::Drop(e) => Err(e),
        }
    }

    /// The canonical peer, checked against the allocation (RFC 8656 §9: same family as the
    /// relayed address; §18.3: port 0 is invalid).
    pub(super) fn check_peer(&self, peer: SocketAddr) -> Result<SocketAddr, Error> {
        let State::Allocated(a) = &self.state else {
            return Err(Error::NotAllocated);
        };
        let peer = canonical(peer);
        if peer.port() == 0 {
            return Err(Error::InvalidPeer(peer));
        }
        if Family::of(&peer) != Family::of(&a.relayed) {
            return Err(Error::PeerFamilyMismatch(peer));
        }
        Ok(peer)
    }

    /// How data to `peer` goes out now.
    fn route(&self, peer: SocketAddr, now: Instant) -> Route {
        if let Some(c) = self.channels.get(&peer) {
            if let (Some(n), true) = (c.number, c.lease.is_active(now)) {
                return Route::Channel(n);
            }
        }
        match self.permissions.get(&peer.ip()) {
            Some(p) if p.lease.is_active(now) => Route::Indication,
            Some(Permission {
                lease:
                    Lease {
                        failed: Some((e, _)),
                        ..
                    },
                ..
            }) => Route::Drop(e.clone()),
            Some(_) => Route::Wait,
            None => Route::Drop(Error::NotAllocated),
        }
    }

    /// Sends what waited for a permission or channel and can go now, in order.
    pub(super) fn flush_queue(&mut self, now: Instant) {
        if self.queue.is_empty() {
            return;
        }
        for (peer, data) in self.queue.take() {
            let _ = match self.route(peer, now) {
                Route::Channel(n) => self.push_channel_data(n, &data),
                Route::Indication => self.push_send_indication(peer, &data),
                Route::Wait => self.queue.push(peer, &data),
                Route::Drop(_) => Ok(()),
            };
        }
    }

    /// RFC 8656 §12.4: ChannelData, padded to 4 bytes over TCP/TLS (§12.5).
    fn push_channel_data(&mut self, channel: u16, data: &[u8]) -> Result<(), Error> {
        let mut out = vec![0u8; (floe_stun::channel_data::HEADER_LEN + data.len() + 3) & !3];
        let n =
            ChannelData::encode(channel, data, self.cfg.stream, &mut out).map_err(Error::Encode)?;
        out.truncate(n);
        self.transmits.push_back(out);
        Ok(())
    }

    /// RFC 8656 §11.1: a Send indication with XOR-PEER-ADDRESS and DATA.
    fn push_send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), Error> {
        let tid = self.new_tid();
        let mut out = vec![0u8; floe_stun::HEADER_LEN + 24 + 4 + ((data.len() + 3) & !3)];
        let n = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(&mut out, Class::Indication, Method::SEND, tid)?;
            b.add(&XorPeerAddress(peer))?;
            b.add(&Data(data))?;
            Ok(b.finish())
        })()
        .map_err(Error::Encode)?;
        out.truncate(n);
        self.transmits.push_back(out);
        Ok(())
    }

    /// RFC 8656 §12.7: ChannelData on a channel the client bound; others are discarded.
    pub(super) fn channel_data<'a>(
        &mut self,
        data: &'a [u8],
        now: Instant,
    ) -> Option<(SocketAddr, &'a [u8])> {
        let cd = ChannelData::parse(data).ok()?;
        let peer = *self.by_number.get(&cd.channel)?;
        self.note_activity(peer, now);
        Some((peer, cd.data))
    }

    /// RFC 8656 §11.6: a Data indication needs XOR-PEER-ADDRESS and DATA, from an IP with a
    /// permission; others are discarded.
    pub(super) fn data_indication<'a>(
        &mut self,
        msg: &Message<'a>,
        now: Instant,
    ) -> Option<(SocketAddr, &'a [u8])> {
        if !matches!(self.state, State::Allocated(_)) {
            return None;
        }
        let peer = canonical(msg.get::<XorPeerAddress>()?.ok()?.0);
        let Data(data) = msg.get::<Data<'a>>()?.ok()?;
        if !self.permissions.contains_key(&peer.ip()) {
            return None;
        }
        self.note_activity(peer, now);
        Some((peer, data))
    }
}
