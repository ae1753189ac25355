//! The relay path: Send indications (RFC 8656 §11.2), Data indications (§11.3) and
//! ChannelData both ways (§12.4–§12.7). No heap allocation: hash lookups, then one copy into the
//! caller's buffer.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_stun::attr::{Data, DontFragment, Family, XorPeerAddress};
use floe_stun::{ChannelData, Class, Message, MessageBuilder, Method, TransactionId};

use super::allocation::Allocation;
use super::own_relay::OwnTarget;
use super::shared::{Shared, BANDWIDTH_LEASE};
use super::stats::DropReason;
use super::types::{ClientTuple, PeerAddr, PeerRequest, RelayAddr, RelayTransport, Transmit};
use super::TurnServer;

/// After a bandwidth refusal, packets are dropped without asking the shared buckets again for
/// this long (keeps a throttled flow off the shared lock).
const THROTTLE_BACKOFF: Duration = Duration::from_millis(10);

/// Charges `n` relayed bytes to the allocation and its user (RFC 8656 §7.2 leaves quotas to the
/// server). Bytes are drawn from the shared buckets in leases of [`BANDWIDTH_LEASE`], so the
/// shared lock is taken once per lease, not per packet.
fn charge(shared: &Shared, a: &mut Allocation, n: usize, now: Instant) -> bool {
    if a.credit >= n {
        a.credit -= n;
        return true;
    }
    if !shared.bandwidth_limited() {
        return true;
    }
    if a.throttled_until.is_some_and(|t| t > now) {
        return false;
    }
    let Some(quota) = a.quota.as_mut() else {
        return false;
    };
    let mut tracker = shared.quota();
    let lease = BANDWIDTH_LEASE.max(n);
    let granted = if tracker.allow_relay(quota, lease, now) {
        lease
    } else if tracker.allow_relay(quota, n, now) {
        n
    } else {
        a.throttled_until = Some(now + THROTTLE_BACKOFF);
        return false;
    };
    a.credit += granted - n;
    true
}

impl TurnServer {
    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer, if the channel
    /// is bound and the peer still has a permission.
    pub(crate) fn client_channel_data(
        &mut self,
        now: Instant,
        client: ClientTuple,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let Ok(cd) = ChannelData::parse(packet) else {
            self.stats.dropped.add(DropReason::Malformed);
            return None;
        };
        let Some(a) = self
            .by_client
            .get(&client)
            .and_then(|id| self.allocations.get_mut(id))
        else {
            self.stats.dropped.add(DropReason::NoAllocation);
            return None;
        };
        let peer = match a.channels.get(&cd.channel) {
            Some(c) if c.expires > now => c.peer,
            _ => {
                self.stats.dropped.add(DropReason::NoChannel);
                return None;
            }
        };
        self.relay_to_peer(now, client, peer, cd.data, false, out)
    }

    /// RFC 8656 §11.2: a Send indication: XOR-PEER-ADDRESS and DATA are required, the peer
    /// needs a permission; anything wrong is silently dropped (indications get no answer).
    pub(crate) fn send_indication(
        &mut self,
        now: Instant,
        client: ClientTuple,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let peer = msg.get::<XorPeerAddress>().and_then(Result::ok);
        let data = msg.get::<Data<'_>>().and_then(Result::ok);
        let (Some(XorPeerAddress(peer)), Some(Data(data))) = (peer, data) else {
            self.stats.dropped.add(DropReason::BadIndication);
            return None;
        };
        let df = msg.get::<DontFragment>().is_some();
        self.relay_to_peer(now, client, peer, data, df, out)
    }

    /// Relays `data` from the client's allocation to `peer` (common to Send and ChannelData).
    fn relay_to_peer(
        &mut self,
        now: Instant,
        client: ClientTuple,
        peer: SocketAddr,
        data: &[u8],
        dont_fragment: bool,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let Some(a) = self
            .by_client
            .get(&client)
            .and_then(|id| self.allocations.get_mut(id))
        else {
            self.stats.dropped.add(DropReason::NoAllocation);
            return None;
        };
        let Some(relay) = a.relay(Family::of(&peer)).copied() else {
            self.stats.dropped.add(DropReason::BadIndication);
            return None;
        };
        if a.transport != RelayTransport::Udp {
            // RFC 6062 §5: TCP allocations carry data on data connections only.
            self.stats.dropped.add(DropReason::BadIndication);
            return None;
        }
        // Permissions are per IP (RFC 8656 §9) and only installed for IPs the peer policy
        // allows; port 0 is never a valid destination (RFC 8656 §18.3).
        if peer.port() == 0 || !a.permitted(peer.ip(), now) {
            self.stats.dropped.add(DropReason::NoPermission);
            self.refuse_peer(now, client, PeerRequest::Send, peer, "no_permission");
            return None;
        }
        let Some(dst) = out.get_mut(..data.len()) else {
            self.stats.dropped.add(DropReason::BufferTooSmall);
            return None;
        };
        if !charge(&self.shared, a, data.len(), now) {
            self.stats.dropped.add(DropReason::Bandwidth);
            return None;
        }
        dst.copy_from_slice(data);
        a.bytes_to_peer += data.len() as u64;
        a.packets_to_peer += 1;
        let dont_fragment = dont_fragment || a.dont_fragment;
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        let t = self.stats.by_transport.get_mut(a.client.transport);
        t.packets_to_peer += 1;
        t.bytes_to_peer += data.len() as u64;
        // Both peers relay through this server: hand the data over inside the process (see
        // `own_relay.rs`); it never reaches the host's network stack.
        match self.own_target(peer) {
            None => {}
            Some(OwnTarget::Relay { relay: to, worker }) => {
                return Some(Transmit::ToRelay {
                    relay: RelayAddr(to),
                    worker,
                    from: PeerAddr(relay.advertised),
                    len: data.len(),
                })
            }
            Some(OwnTarget::Nothing) => {
                self.stats.dropped.add(DropReason::NoSuchRelay);
                return None;
            }
        }
        Some(Transmit::ToPeer {
            relay: RelayAddr(relay.local),
            peer: PeerAddr(peer),
            len: data.len(),
            dont_fragment,
        })
    }

    /// RFC 8656 §11.3: a datagram from a peer on a relay socket: ChannelData when a channel is
    /// bound to the peer (padded over TCP/TLS, §12.5), else a Data indication; dropped without
    /// a permission for the peer's IP (§9).
    pub(crate) fn peer_datagram(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Some(a) = self
            .by_relay
            .get(&relay)
            .and_then(|id| self.allocations.get_mut(id))
        else {
            self.stats.dropped.add(DropReason::UnknownRelay);
            return None;
        };
        if !a.permitted(peer.ip(), now) {
            self.stats.dropped.add(DropReason::NoPermission);
            return None;
        }
        if !charge(&self.shared, a, data.len(), now) {
            self.stats.dropped.add(DropReason::Bandwidth);
            return None;
        }
        let client = a.client;
        a.bytes_to_client += data.len() as u64;
        a.packets_to_client += 1;
        let written = match a.channel_for(&peer, now) {
            Some(ch) => ChannelData::encode(ch, data, client.transport.is_stream(), out).ok(),
            None => {
                let mut tid = [0u8; 12];
                self.rng.fill(&mut tid);
                data_indication(out, TransactionId(tid), peer, data)
            }
        };
        let Some(len) = written else {
            self.stats.dropped.add(DropReason::BufferTooSmall);
            return None;
        };
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += data.len() as u64;
        let t = self.stats.by_transport.get_mut(client.transport);
        t.packets_to_client += 1;
        t.bytes_to_client += data.len() as u64;
        Some(Transmit::ToClient { client, len })
    }
}

/// RFC 8656 §11.3: a Data indication with XOR-PEER-ADDRESS and DATA.
fn data_indication(
    out: &mut [u8],
    tid: TransactionId,
    peer: SocketAddr,
    data: &[u8],
) -> Option<usize> {
    let mut b = MessageBuilder::new(out, Class::Indication, Method::DATA, tid).ok()?;
    b.add(&XorPeerAddress(peer)).ok()?;
    b.add(&Data(data)).ok()?;
    Some(b.finish())
}
