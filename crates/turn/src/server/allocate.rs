//! Allocate (RFC 8656 §7.2; RFC 6062 §5.1 for TCP relaying): request validation, relay address
//! selection with EVEN-PORT / RESERVATION-TOKEN and dual-stack ADDITIONAL-ADDRESS-FAMILY.

use super::FastMap;
use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floe_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, DontFragment, ErrorCode, EvenPort, Family, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorMappedAddress,
    XorRelayedAddress,
};
use floe_stun::{Attr, AttrError, Message, MessageBuilder};

use crate::credentials::ExpiryPolicy;

use super::allocation::{family_index, AllocId, Allocation, Relay};
use super::auth::Authed;
use super::reply::Reject;
use super::shared::Reservation;
use super::types::{BindError, ClientTuple, Event, RelayBinder, RelayTransport};
use super::{Handled, Timer, TurnServer};

/// How many random ports are tried before answering 508 (RFC 8656 §7.2).
const BIND_ATTEMPTS: usize = 32;
/// RFC 8656 §7.2: a port reserved by EVEN-PORT's R bit is kept about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A validated Allocate request.
#[derive(Debug, Clone, Copy)]
struct AllocateRequest {
    transport: RelayTransport,
    dont_fragment: bool,
    token: Option<[u8; 8]>,
    /// EVEN-PORT, with its R bit.
    even: Option<bool>,
    family: Family,
    additional: Option<Family>,
    lifetime: Option<u32>,
}

/// Decodes an optional attribute; a malformed one is 400 (RFC 8489 §6.3.1).
pub(crate) fn optional<'a, A: Attr<'a>>(msg: &Message<'a>) -> Result<Option<A>, Reject> {
    msg.get::<A>()
        .transpose()
        .map_err(|_| Reject::new(ErrorCode::BAD_REQUEST))
}

fn bad() -> Reject {
    Reject::new(ErrorCode::BAD_REQUEST)
}

/// RFC 8656 §7.2 (and RFC 6062 §5.1) validation, in the RFC's order.
fn parse_request(msg: &Message<'_>, client: ClientTuple) -> Result<AllocateRequest, Reject> {
    let transport = match optional::<RequestedTransport>(msg)? {
        None => return Err(bad()),
        Some(RequestedTransport(RequestedTransport::UDP)) => RelayTransport::Udp,
        Some(RequestedTransport(RequestedTransport::TCP)) => RelayTransport::Tcp,
        Some(_) => return Err(Reject::new(ErrorCode::UNSUPPORTED_TRANSPORT)),
    };
    let dont_fragment = optional::<DontFragment>(msg)?.is_some();
    let token = optional::<ReservationToken>(msg)?.map(|t| t.0);
    let even = optional::<EvenPort>(msg)?.map(|e| e.reserve_next);
    let family = match msg.get::<RequestedAddressFamily>() {
        None => None,
        Some(Ok(f)) => Some(f.0),
        // RFC 8656 §7.2: a family this server does not know is "not supported".
        Some(Err(AttrError::UnknownFamily { .. })) => {
            return Err(Reject::new(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
        }
        Some(Err(_)) => return Err(bad()),
    };
    let additional = optional::<AdditionalAddressFamily>(msg)?.map(|f| f.0);
    let lifetime = optional::<Lifetime>(msg)?.map(|l| l.0);
    if transport == RelayTransport::Tcp {
        // RFC 6062 §5.1: TCP relaying only for TCP/TLS clients, without DONT-FRAGMENT,
        // EVEN-PORT or RESERVATION-TOKEN.
        if !client.transport.is_stream() || dont_fragment || token.is_some() || even.is_some() {
            return Err(bad());
        }
    }
    // RFC 8656 §7.2: RESERVATION-TOKEN excludes EVEN-PORT and both family attributes.
    if token.is_some() && (even.is_some() || family.is_some() || additional.is_some()) {
        return Err(bad());
    }
    // RFC 8656 §7.2: REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY are exclusive, and
    // ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6.
    if family.is_some() && additional.is_some() {
        return Err(bad());
    }
    if additional == Some(Family::V4) {
        return Err(bad());
    }
    // RFC 8656 §7.2: EVEN-PORT with the R bit cannot be combined with a dual allocation.
    if even == Some(true) && additional.is_some() {
        return Err(bad());
    }
    Ok(AllocateRequest {
        transport,
        dont_fragment,
        token,
        even,
        family: family.unwrap_or(Family::V4),
        additional,
        lifetime,
    })
}

/// The relay addresses obtained for a request.
struct Bound {
    relays: [Option<Relay>; 2],
    token: Option<[u8; 8]>,
    /// RFC 8656 §7.2: the additional family could not be allocated.
    address_error: Option<(Family, u16)>,
}

impl TurnServer {
    /// RFC 8656 §7.2: Allocate.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn allocate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        authed: &Authed,
        b: &mut MessageBuilder<'_>,
        binder: &mut dyn RelayBinder,
    ) -> Result<Handled, Reject> {
        // RFC 8656 §7.2: the 5-tuple is in use. A retransmission is normally answered from the
        // transaction cache; if it was evicted, the success response is rebuilt from the
        // allocation when the transaction id is the one that created it.
        if let Some(id) = self.by_client.get(&client) {
            let a = self.allocations.get(id).ok_or(Reject::new(500))?;
            if a.created_by != msg.transaction_id() || a.user != authed.user {
                return Err(Reject::new(ErrorCode::ALLOCATION_MISMATCH));
            }
            let bound = Bound {
                relays: a.relays,
                token: None,
                address_error: None,
            };
            let granted = a.deadline().saturating_duration_since(now);
            write_success(b, &bound, granted, client).map_err(|_| Reject::new(500))?;
            return Ok(Handled::Respond);
        }
        if let Some(refusal) = self.drain_refusal(client) {
            return Err(refusal);
        }
        let req = parse_request(msg, client)?;
        if req.token.is_none() && self.relay_ip(req.family).is_none() {
            return Err(Reject::new(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED));
        }
        let quota = self
            .shared
            .quota()
            .try_allocate(&authed.quota_user, now)
            .map_err(|e| Reject::new(e.error_code()))?;
        let bound = match self.bind_relays(now, &req, binder) {
            Ok(b) => b,
            Err(code) => {
                self.shared.quota().release(quota);
                return Err(Reject::new(code));
            }
        };
        let lifetime = self.config.lifetimes.negotiate(req.lifetime);
        let strict = self.config.credentials.expiry_policy() == ExpiryPolicy::Immediately;
        let hard_deadline = authed
            .expires_at
            .filter(|_| strict)
            .map(|e| now + Duration::from_secs(e.saturating_sub(unix_secs)));
        let id = self.next_alloc;
        self.next_alloc += 1;
        let alloc = Allocation {
            client,
            user: authed.user.clone(),
            key: authed.key.clone(),
            transport: req.transport,
            relays: bound.relays,
            expires: now + lifetime,
            hard_deadline,
            dont_fragment: req.dont_fragment,
            permissions: FastMap::default(),
            channels: FastMap::default(),
            channel_by_peer: FastMap::default(),
            quota: Some(quota),
            credit: 0,
            throttled_until: None,
            connections: Vec::new(),
            created_by: msg.transaction_id(),
            created: now,
            bytes_to_peer: 0,
            bytes_to_client: 0,
            packets_to_peer: 0,
            packets_to_client: 0,
            usage_reported: None,
            fast_path_held: false,
        };
        let granted = alloc.deadline().saturating_duration_since(now);
        self.install(id, alloc);
        write_success(b, &bound, granted, client).map_err(|_| Reject::new(500))?;
        Ok(Handled::Respond)
    }

    fn install(&mut self, id: AllocId, alloc: Allocation) {
        for relay in alloc.relays.iter().flatten() {
            self.by_relay.insert(relay.local, id);
            if alloc.transport == RelayTransport::Udp {
                self.shared.add_udp_relay(relay.local, self.worker);
            }
        }
        self.by_client.insert(alloc.client, id);
        self.timers
            .insert((alloc.deadline(), Timer::Allocation(id)));
        self.events.push_back(Event::AllocationCreated {
            client: alloc.client,
            username: alloc.user.clone(),
            transport: alloc.transport,
            relays: alloc.relay_list(),
        });
        self.allocations.insert(id, alloc);
        self.stats.allocations_created += 1;
        self.stats.allocations_active += 1;
    }

    /// The local relay IP of a family (the first configured).
    pub(crate) fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        self.config
            .relay_ips
            .iter()
            .copied()
            .find(|ip| Family::of(&SocketAddr::new(*ip, 0)) == family)
    }

    /// The advertised address of a relay socket: the external IP of its family, if configured.
    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        let family = Family::of(&local);
        let ip = self
            .config
            .external_ips
            .iter()
            .copied()
            .find(|ip| Family::of(&SocketAddr::new(*ip, 0)) == family)
            .unwrap_or(local.ip());
        SocketAddr::new(ip, local.port())
    }

    fn bind_relays(
        &mut self,
        now: Instant,
        req: &AllocateRequest,
        binder: &mut dyn RelayBinder,
    ) -> Result<Bound, u16> {
        let mut relays = [None, None];
        if let Some(token) = req.token {
            let relay = self.redeem(now, token, req.transport, binder)?;
            relays[family_index(Family::of(&relay.local))] = Some(relay);
            return Ok(Bound {
                relays,
                token: None,
                address_error: None,
            });
        }
        let (primary, token) = self.bind_one(now, req.family, req.transport, req.even, binder)?;
        relays[family_index(req.family)] = Some(primary);
        let mut address_error = None;
        if let Some(extra) = req.additional {
            match self.bind_one(now, extra, req.transport, None, binder) {
                Ok((relay, _)) => relays[family_index(extra)] = Some(relay),
                Err(code) => address_error = Some((extra, code)),
            }
        }
        Ok(Bound {
            relays,
            token,
            address_error,
        })
    }

    /// Binds one relay socket of `family` on a random port of the range (even when EVEN-PORT is
    /// present; with its R bit the next port is reserved and a token returned). Errors are the
    /// code to answer: 440 without a relay IP of that family, 508 when nothing could be bound.
    fn bind_one(
        &mut self,
        now: Instant,
        family: Family,
        transport: RelayTransport,
        even: Option<bool>,
        binder: &mut dyn RelayBinder,
    ) -> Result<(Relay, Option<[u8; 8]>), u16> {
        let ip = self
            .relay_ip(family)
            .ok_or(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED)?;
        let (lo, hi) = (
            (*self.config.relay_ports.start()).max(1),
            *self.config.relay_ports.end(),
        );
        if lo > hi {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        // Random placement first (RFC 8656 §7.2 recommends it; RFC 6056 explains why), then a
        // deterministic sweep of the whole range from a random start, so that Allocate fails
        // with 508 only when no port of the range can be bound.
        let start = self.pick_port(lo, hi, even);
        let random = (0..BIND_ATTEMPTS).map(|_| None::<u16>);
        let sweep = PortSweep::new(lo, hi, even, start).map(Some);
        for candidate in random.chain(sweep) {
            let port = match candidate {
                Some(port) => port,
                None => match self.pick_port(lo, hi, even) {
                    Some(port) => port,
                    None => continue,
                },
            };
            let addr = SocketAddr::new(ip, port);
            if self.is_reserved(addr) || self.by_relay.contains_key(&addr) {
                continue;
            }
            match binder.bind(addr, transport) {
                Ok(()) => {}
                Err(BindError::InUse) => continue,
                Err(_) => return Err(ErrorCode::INSUFFICIENT_CAPACITY),
            }
            let relay = Relay {
                local: addr,
                advertised: self.advertised(addr),
            };
            if even != Some(true) {
                return Ok((relay, None));
            }
            match self.reserve_next(now, addr, transport, binder) {
                Some(token) => return Ok((relay, Some(token))),
                None => binder.release(addr, transport),
            }
        }
        Err(ErrorCode::INSUFFICIENT_CAPACITY)
    }

    /// A random port in `lo..=hi`; even when `even` is set, and with room for the next port when
    /// the R bit is set.
    fn pick_port(&mut self, lo: u16, hi: u16, even: Option<bool>) -> Option<u16> {
        let span = u64::from(hi - lo) + 1;
        let port = lo + u16::try_from(self.rng.below(span)).ok()?;
        match even {
            None => Some(port),
            Some(reserve) => {
                let p = port & !1;
                let p = if p < lo { p.checked_add(2)? } else { p };
                let last = if reserve { p.checked_add(1)? } else { p };
                (last <= hi).then_some(p)
            }
        }
    }

    fn is_reserved(&self, addr: SocketAddr) -> bool {
        self.shared.registry().reserved_addrs.contains_key(&addr)
    }

    /// RFC 8656 §7.2, EVEN-PORT R bit: checks that the port after `addr` is free (by binding and
    /// releasing it) and reserves it in the shared registry for 30 s under a new token.
    fn reserve_next(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        transport: RelayTransport,
        binder: &mut dyn RelayBinder,
    ) -> Option<[u8; 8]> {
        let next = SocketAddr::new(addr.ip(), addr.port().checked_add(1)?);
        if self.is_reserved(next) || binder.bind(next, transport).is_err() {
            return None;
        }
        binder.release(next, transport);
        let mut token = [0u8; 8];
        let expires = now + RESERVATION_LIFETIME;
        {
            let mut reg = self.shared.registry();
            loop {
                self.rng.fill(&mut token);
                if !reg.reservations.contains_key(&token) {
                    break;
                }
            }
            reg.reservations.insert(
                token,
                Reservation {
                    addr: next,
                    expires,
                },
            );
            reg.reserved_addrs.insert(next, token);
        }
        self.timers.insert((expires, Timer::Reservation(token)));
        Some(token)
    }

    /// RFC 8656 §7.2: RESERVATION-TOKEN names a reserved port; an unknown or expired token, or a
    /// port that cannot be bound any more, is 508.
    fn redeem(
        &mut self,
        now: Instant,
        token: [u8; 8],
        transport: RelayTransport,
        binder: &mut dyn RelayBinder,
    ) -> Result<Relay, u16> {
        let reservation = {
            let mut reg = self.shared.registry();
            let r = reg.reservations.remove(&token);
            if let Some(r) = &r {
                reg.reserved_addrs.remove(&r.addr);
            }
            r
        };
        let r = reservation
            .filter(|r| r.expires > now)
            .ok_or(ErrorCode::INSUFFICIENT_CAPACITY)?;
        binder
            .bind(r.addr, transport)
            .map_err(|_| ErrorCode::INSUFFICIENT_CAPACITY)?;
        Ok(Relay {
            local: r.addr,
            advertised: self.advertised(r.addr),
        })
    }

    /// Timer: forgets an unused reservation.
    pub(crate) fn expire_reservation(&mut self, now: Instant, token: [u8; 8]) {
        let mut reg = self.shared.registry();
        if let Some(r) = reg.reservations.get(&token).copied() {
            if r.expires <= now {
                reg.reservations.remove(&token);
                reg.reserved_addrs.remove(&r.addr);
            }
        }
    }
}

/// Every candidate port of `lo..=hi` once, in order from `start` and wrapping around: all ports,
/// or with EVEN-PORT only even ones (and, with its R bit, only those whose successor is in the
/// range too). The fallback after random placement has failed [`BIND_ATTEMPTS`] times.
#[derive(Debug, Clone)]
struct PortSweep {
    lo: u32,
    /// Number of candidates.
    count: u32,
    step: u32,
    /// Index of the first candidate visited.
    first: u32,
    taken: u32,
}

impl PortSweep {
    fn new(lo: u16, hi: u16, even: Option<bool>, start: Option<u16>) -> PortSweep {
        let (lo, hi) = (u32::from(lo), u32::from(hi));
        let (first_port, step, last_port) = match even {
            None => (lo, 1, hi),
            Some(reserve) => (
                lo + (lo & 1),
                2,
                if reserve { hi.saturating_sub(1) } else { hi },
            ),
        };
        let count = if first_port > last_port || first_port > hi {
            0
        } else {
            (last_port - first_port) / step + 1
        };
        let first = start
            .map(|p| (u32::from(p).saturating_sub(first_port) / step).min(count.saturating_sub(1)))
            .unwrap_or(0);
        PortSweep {
            lo: first_port,
            count,
            step,
            first,
            taken: 0,
        }
    }
}

impl Iterator for PortSweep {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.taken >= self.count {
            return None;
        }
        let index = (self.first + self.taken) % self.count;
        self.taken += 1;
        u16::try_from(self.lo + index * self.step).ok()
    }
}

/// RFC 8656 §7.2: the success response: XOR-RELAYED-ADDRESS (one per family), ADDRESS-ERROR-CODE
/// when the additional family failed, LIFETIME, RESERVATION-TOKEN, XOR-MAPPED-ADDRESS.
fn write_success(
    b: &mut MessageBuilder<'_>,
    bound: &Bound,
    granted: Duration,
    client: ClientTuple,
) -> Result<(), floe_stun::BuildError> {
    for relay in bound.relays.iter().flatten() {
        b.add(&XorRelayedAddress(relay.advertised))?;
    }
    if let Some((family, code)) = bound.address_error {
        b.add(&AddressErrorCode {
            family,
            code,
            reason: ErrorCode::default_reason(code),
        })?;
    }
    b.add(&Lifetime(
        u32::try_from(granted.as_secs()).unwrap_or(u32::MAX),
    ))?;
    if let Some(token) = bound.token {
        b.add(&ReservationToken(token))?;
    }
    b.add(&XorMappedAddress(client.remote))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PortSweep;

    fn sweep(lo: u16, hi: u16, even: Option<bool>, start: Option<u16>) -> Vec<u16> {
        PortSweep::new(lo, hi, even, start).collect()
    }

    #[test]
    fn sweep_visits_every_port_once_from_the_start() {
        assert_eq!(sweep(10, 14, None, Some(12)), vec![12, 13, 14, 10, 11]);
        assert_eq!(sweep(10, 14, None, None), vec![10, 11, 12, 13, 14]);
        assert_eq!(sweep(7, 7, None, Some(7)), vec![7]);
    }

    #[test]
    fn sweep_even_ports_and_room_for_the_reserved_successor() {
        assert_eq!(sweep(9, 14, Some(false), Some(12)), vec![12, 14, 10]);
        // R bit: 14 has no successor inside the range.
        assert_eq!(sweep(9, 14, Some(true), Some(13)), vec![12, 10]);
        assert_eq!(sweep(9, 9, Some(false), None), Vec::<u16>::new());
        assert_eq!(sweep(10, 10, Some(true), None), Vec::<u16>::new());
    }

    #[test]
    fn sweep_covers_the_whole_u16_range_without_overflow() {
        let all = sweep(1, u16::MAX, None, Some(u16::MAX));
        assert_eq!(all.len(), usize::from(u16::MAX));
        assert_eq!(all[0], u16::MAX);
        assert_eq!(
            sweep(u16::MAX - 1, u16::MAX, Some(true), None),
            vec![u16::MAX - 1]
        );
    }
}
