//! The sans-IO TURN client (`floe_turn::client`) against the sans-IO TURN server, in memory and
//! in virtual time: a [`Pair`] moves bytes between them (through `StreamDecoder`s in stream
//! mode), can lose packets either way, and jumps to the next deadline of either side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use floe_stun::attr::{
    ErrorCode, Lifetime, Nonce, PasswordAlgorithm, Realm, XorMappedAddress, XorRelayedAddress,
};
use floe_stun::{
    integrity, AttrType, ChannelData, Class, Message, MessageBuilder, Method, TransactionId,
};
use floe_turn::client::{Error, StreamDecoder, TurnClient, TurnClientConfig, TurnEvent, TurnState};
use floe_turn::quota::QuotaConfig;
use floe_turn::server::{ClientTuple, DeleteReason, Event, Transmit, Transport, TurnConfig};
use proptest::prelude::*;

const SERVER: &str = "192.0.2.10:3478";
const CLIENT: &str = "203.0.113.7:40000";
const S: fn(u64) -> Duration = Duration::from_secs;

fn cfg(password: &str) -> TurnClientConfig {
    let mut c = TurnClientConfig::new(addr(SERVER), "alice", password, [5; 32]);
    c.software = Some("floe-client-test".to_owned());
    c
}

/// The client, the server harness and the network between them.
struct Pair {
    h: Harness,
    client: TurnClient,
    tuple: ClientTuple,
    stream: bool,
    /// Client → server stream framing (stream mode).
    up: StreamDecoder,
    /// Server → client stream framing (stream mode; fed 3 bytes at a time).
    down: StreamDecoder,
    /// Lose every client → server packet while set.
    lose_up: bool,
    /// Indices (in `replies`) of server → client packets to lose.
    lose_down: Vec<usize>,
    /// Client → server packets, with the virtual time they were sent at.
    sent: Vec<(Duration, Vec<u8>)>,
    /// Server → client packets (before any loss).
    replies: Vec<Vec<u8>>,
    /// Relayed to peers: (relay, peer, data).
    to_peer: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Peer data the client returned from `handle_input`.
    received: Vec<(SocketAddr, Vec<u8>)>,
    /// Client events, with the virtual time they were seen at.
    events: Vec<(Duration, TurnEvent)>,
}

impl Pair {
    fn new(cfg: TurnClientConfig, server: TurnConfig, quotas: QuotaConfig) -> Pair {
        let h = Harness::with(server, quotas);
        let transport = if cfg.stream {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let stream = cfg.stream;
        let client = TurnClient::new(cfg, h.now);
        Pair {
            tuple: ClientTuple {
                transport,
                local: addr(SERVER),
                remote: addr(CLIENT),
            },
            h,
            client,
            stream,
            up: StreamDecoder::new(),
            down: StreamDecoder::new(),
            lose_up: false,
            lose_down: Vec::new(),
            sent: Vec::new(),
            replies: Vec::new(),
            to_peer: Vec::new(),
            received: Vec::new(),
            events: Vec::new(),
        }
    }

    fn with(cfg: TurnClientConfig) -> Pair {
        Pair::new(cfg, config(), QuotaConfig::default())
    }

    /// A client with an allocation (asserted).
    fn allocated(cfg: TurnClientConfig) -> Pair {
        let mut p = Pair::with(cfg);
        p.pump();
        assert_eq!(p.client.state(), TurnState::Allocated, "{:?}", p.events);
        p
    }

    fn now(&self) -> Instant {
        self.h.now
    }

    fn elapsed(&self) -> Duration {
        self.h.now - self.h.origin
    }

    fn relayed(&self) -> SocketAddr {
        self.client.relayed_addr().expect("allocated")
    }

    /// Moves packets until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_transmit() {
                moved = true;
                self.sent.push((self.elapsed(), bytes.clone()));
                if self.lose_up {
                    continue;
                }
                if self.stream {
                    self.up.push(&bytes);
                    while let Some(frame) =
                        self.up.next_frame().expect("in sync").map(<[u8]>::to_vec)
                    {
                        self.deliver_to_server(&frame);
                    }
                } else {
                    self.deliver_to_server(&bytes);
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push((self.elapsed(), e));
            }
            if !moved {
                break;
            }
        }
    }

    fn deliver_to_server(&mut self, frame: &[u8]) {
        if let Some((t, bytes)) = self.h.client(self.tuple, frame) {
            self.deliver(t, bytes);
        }
    }

    fn deliver(&mut self, t: Transmit, bytes: Vec<u8>) {
        match t {
            Transmit::ToClient { client, .. } => {
                assert_eq!(client, self.tuple);
                self.deliver_to_client(bytes);
            }
            Transmit::ToPeer { relay, peer, .. } => self.to_peer.push((relay.0, peer.0, bytes)),
            Transmit::ToRelay { .. } => panic!("these tests name no relayed address as a peer"),
        }
    }

    fn deliver_to_client(&mut self, bytes: Vec<u8>) {
        let index = self.replies.len();
        self.replies.push(bytes.clone());
        if self.lose_down.contains(&index) {
            return;
        }
        if !self.stream {
            self.input(&bytes);
            return;
        }
        for chunk in bytes.chunks(3) {
            self.down.push(chunk);
            while let Some(frame) = self.down.next_frame().expect("in sync").map(<[u8]>::to_vec) {
                self.input(&frame);
            }
        }
    }

    fn input(&mut self, frame: &[u8]) {
        if let Some((peer, data)) = self.client.handle_input(frame, self.h.now) {
            self.received.push((peer, data.to_vec()));
        }
    }

    /// A datagram from `peer` to the relayed address.
    fn peer_sends(&mut self, peer: SocketAddr, data: &[u8]) {
        let relay = self.relayed();
        if let Some((t, bytes)) = self.h.peer(relay, peer, data) {
            self.deliver(t, bytes);
        }
        self.pump();
    }

    fn send(&mut self, peer: &str, data: &[u8]) -> Result<(), Error> {
        let r = self.client.send_to(addr(peer), data, self.now());
        self.pump();
        r
    }

    fn set_time(&mut self, t: Instant) {
        self.h.now = t;
        self.h.unix = UNIX0 + (t - self.h.origin).as_secs();
    }

    /// Advances virtual time by `d`, running both sides' timers in order.
    fn advance(&mut self, d: Duration) {
        let end = self.h.now + d;
        for _ in 0..100_000 {
            self.pump();
            let next = [self.client.poll_timeout(), self.h.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next.filter(|t| *t <= end) else {
                self.set_time(end);
                self.pump();
                return;
            };
            self.set_time(t.max(self.h.now));
            let (now, unix) = (self.h.now, self.h.unix);
            self.h.server.handle_timeout(now, unix, &mut self.h.binder);
            while let Some(e) = self.h.server.poll_event() {
                self.h.events.push(e);
            }
            self.client.handle_timeout(now);
        }
        panic!("timers do not settle");
    }

    fn events(&self) -> Vec<TurnEvent> {
        self.events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Client → server packets that are requests of `method`.
    fn requests(&self, method: Method) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|(_, b)| {
                Message::parse(b).is_ok_and(|m| m.class() == Class::Request && m.method() == method)
            })
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Server → client responses to `method`: `None` for a success, `Some(code)` for an error.
    fn answers(&self, method: Method) -> Vec<Option<u16>> {
        self.replies
            .iter()
            .filter_map(|b| Message::parse(b).ok())
            .filter(|m| m.method() == method && m.class() != Class::Indication)
            .map(|m| {
                m.get::<ErrorCode<'_>>()
                    .map(|e| e.expect("ERROR-CODE").code)
            })
            .collect()
    }
}

fn is_server_error(e: &Error, code: u16) -> bool {
    e.code() == Some(code)
}

// ---------------------------------------------------------------------------------------------
// Allocation and authentication
// ---------------------------------------------------------------------------------------------

#[test]
fn allocates_after_a_401_challenge_and_reports_relayed_and_mapped_addresses() {
    let mut p = Pair::with(cfg("alice-pw"));
    assert_eq!(p.client.state(), TurnState::Allocating);
    p.pump();

    assert_eq!(p.answers(Method::ALLOCATE), [Some(401), None]);
    let allocates = p.requests(Method::ALLOCATE);
    assert_eq!(allocates.len(), 2);
    let first = parse(&allocates[0]);
    assert!(
        !first.has_integrity(),
        "the first Allocate carries no credentials"
    );
    assert!(first.verify_fingerprint());
    let second = parse(&allocates[1]);
    let key = integrity::long_term_key_md5("alice", REALM, "alice-pw");
    assert!(
        second.verify_integrity(&key),
        "signed with the MD5 long-term key"
    );
    assert_ne!(first.transaction_id(), second.transaction_id());

    let [(
        _,
        TurnEvent::Allocated {
            relayed,
            mapped,
            lifetime,
        },
    )] = p.events.as_slice()
    else {
        panic!("{:?}", p.events);
    };
    assert_eq!(relayed.ip(), ip(RELAY_V4));
    assert_eq!(*mapped, addr(CLIENT));
    assert_eq!(*lifetime, S(600));
    assert_eq!(p.client.relayed_addr(), Some(*relayed));
    assert_eq!(p.client.mapped_addr(), Some(addr(CLIENT)));
    assert_eq!(p.h.server.allocation_count(), 1);
    assert!(p.h.binder.bound.iter().any(|(a, _)| a == relayed));
}

#[test]
fn a_wrong_password_fails_the_allocation_with_401() {
    let mut p = Pair::with(cfg("not-the-password"));
    p.pump();

    assert_eq!(p.answers(Method::ALLOCATE), [Some(401), Some(401)]);
    match p.events().as_slice() {
        [TurnEvent::AllocationFailed(e)] => assert!(is_server_error(e, 401), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.client.state(), TurnState::Closed);
    assert_eq!(p.client.poll_timeout(), None, "nothing left to do");
    assert_eq!(
        p.client.send_to(addr(PEER), b"x", p.now()),
        Err(Error::NotAllocated)
    );
    assert_eq!(p.h.server.allocation_count(), 0);
}

#[test]
fn sha256_keys_are_used_when_preferred_and_offered() {
    let mut c = cfg("alice-pw");
    c.prefer_sha256 = true;
    let p = Pair::allocated(c);
    let signed = p.requests(Method::ALLOCATE).pop().expect("signed Allocate");
    let m = parse(&signed);
    let key = integrity::long_term_key_sha256("alice", REALM, "alice-pw");
    assert!(m.verify_integrity_sha256(&key));
    assert!(!m.has_integrity());
    let pa = m.get::<PasswordAlgorithm<'_>>().expect("PA").expect("PA");
    assert_eq!(pa.algorithm, integrity::ALGORITHM_SHA256);
    assert!(m.raw(AttrType::PASSWORD_ALGORITHMS).is_some());
}

#[test]
fn quota_errors_are_events() {
    let mut quotas = QuotaConfig::default();
    quotas.max_allocations_per_user = 0;
    let mut p = Pair::new(cfg("alice-pw"), config(), quotas);
    p.pump();
    match p.events().as_slice() {
        [TurnEvent::AllocationFailed(e)] => assert!(is_server_error(e, 486), "{e:?}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

#[test]
fn a_send_indication_reaches_the_peer_and_a_data_indication_comes_back() {
    let mut c = cfg("alice-pw");
    c.auto_channel = false;
    let mut p = Pair::allocated(c);
    let relay = p.relayed();

    p.send(PEER, b"hello peer").expect("send");

    assert_eq!(
        p.to_peer,
        [(relay, addr(PEER), b"hello peer".to_vec())],
        "the data waited for the permission, then went out"
    );
    assert!(p
        .events()
        .contains(&TurnEvent::PermissionCreated(ip("8.8.8.8"))));
    let (_, last) = p.sent.last().expect("sent");
    let m = parse(last);
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::SEND));
    assert!(p.requests(Method::CHANNEL_BIND).is_empty());

    p.peer_sends(addr(PEER), b"hello client");
    let m = parse(p.replies.last().expect("reply"));
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(p.received, [(addr(PEER), b"hello client".to_vec())]);

    // From an IP without a permission the server relays nothing, and a forged Data
    // indication is discarded by the client (RFC 8656 §11.6).
    p.peer_sends(addr(PEER2), b"stranger");
    let forged = data_indication(addr(PEER2), b"forged");
    assert_eq!(p.client.handle_input(&forged, p.now()), None);
    assert_eq!(p.received.len(), 1);
}

#[test]
fn peer_data_comes_as_data_indications_then_as_channel_data_once_bound() {
    let mut c = cfg("alice-pw");
    c.auto_channel = false;
    let mut p = Pair::allocated(c);
    let relay = p.relayed();
    p.client.create_permission(ip("8.8.8.8"), p.now());
    p.pump();
    assert_eq!(
        p.events().last(),
        Some(&TurnEvent::PermissionCreated(ip("8.8.8.8")))
    );

    p.peer_sends(addr(PEER), b"before");
    assert_eq!(parse(p.replies.last().unwrap()).method(), Method::DATA);

    p.client.bind_channel(addr(PEER), p.now()).expect("bind");
    p.pump();
    assert_eq!(
        p.events().last(),
        Some(&TurnEvent::ChannelBound {
            peer: addr(PEER),
            channel: 0x4000
        })
    );
    assert_eq!(p.client.channel(addr(PEER), p.now()), Some(0x4000));

    p.peer_sends(addr(PEER), b"after");
    let cd = ChannelData::parse(p.replies.last().unwrap()).expect("ChannelData");
    assert_eq!(cd.channel, 0x4000);
    assert_eq!(
        p.received,
        [
            (addr(PEER), b"before".to_vec()),
            (addr(PEER), b"after".to_vec())
        ]
    );

    p.send(PEER, b"on the channel").expect("send");
    let (_, last) = p.sent.last().unwrap();
    assert_eq!(
        ChannelData::parse(last).expect("ChannelData").channel,
        0x4000
    );
    assert_eq!(last.len(), 4 + 14, "no padding over UDP");
    assert_eq!(
        p.to_peer.last(),
        Some(&(relay, addr(PEER), b"on the channel".to_vec()))
    );

    // ChannelData on a channel the client never bound is discarded (RFC 8656 §12.7).
    assert_eq!(
        p.client.handle_input(&channel_data(0x4001, b"x"), p.now()),
        None
    );
}

#[test]
fn the_first_send_binds_a_channel_and_queued_data_keeps_its_order() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    let now = p.now();
    p.client.send_to(addr(PEER), b"one", now).expect("one");
    p.client.send_to(addr(PEER), b"two", now).expect("two");
    // Nothing relayed yet: only the CreatePermission and the ChannelBind are queued.
    let queued: Vec<Vec<u8>> = std::iter::from_fn(|| p.client.poll_transmit()).collect();
    let methods: Vec<Method> = queued.iter().map(|b| parse(b).method()).collect();
    assert_eq!(methods, [Method::CREATE_PERMISSION, Method::CHANNEL_BIND]);
    for b in &queued {
        p.deliver_to_server(b);
    }
    p.pump();

    let data: Vec<&[u8]> = p.to_peer.iter().map(|(_, _, d)| d.as_slice()).collect();
    assert_eq!(data, [&b"one"[..], b"two"]);
    let events = p.events();
    assert!(events.contains(&TurnEvent::PermissionCreated(ip("8.8.8.8"))));
    assert!(events.contains(&TurnEvent::ChannelBound {
        peer: addr(PEER),
        channel: 0x4000
    }));

    p.send(PEER, b"three").expect("three");
    assert!(ChannelData::parse(&p.sent.last().unwrap().1).is_ok());
    assert_eq!(p.to_peer.last().unwrap().2, b"three");
}

#[test]
fn a_denied_peer_gets_403_as_events_and_sends_to_it_fail() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    let denied = "127.0.0.1:9";

    assert_eq!(
        p.send(denied, b"x"),
        Ok(()),
        "queued while the permission is asked for"
    );

    let events = p.events();
    assert!(events.iter().any(|e| matches!(e,
        TurnEvent::PermissionFailed { peer, error } if *peer == ip("127.0.0.1") && is_server_error(error, 403))));
    assert!(events.iter().any(|e| matches!(e,
        TurnEvent::ChannelBindFailed { peer, error } if *peer == addr(denied) && is_server_error(error, 403))));
    assert!(p.to_peer.is_empty(), "the queued data was dropped");
    match p.send(denied, b"y") {
        Err(e) => assert!(is_server_error(&e, 403), "{e:?}"),
        Ok(()) => panic!("sending to a refused peer must fail"),
    }
    assert_eq!(p.client.state(), TurnState::Allocated);

    // Other peers are unaffected; after the back-off the permission is asked for again.
    p.send(PEER, b"fine").expect("allowed peer");
    assert_eq!(p.to_peer.len(), 1);
    p.advance(S(31));
    let before = p.requests(Method::CREATE_PERMISSION).len();
    assert_eq!(p.send(denied, b"z"), Ok(()));
    assert_eq!(p.requests(Method::CREATE_PERMISSION).len(), before + 1);
}

#[test]
fn without_channel_quota_data_keeps_flowing_as_indications() {
    let mut quotas = QuotaConfig::default();
    quotas.max_channels_per_allocation = 0;
    let mut p = Pair::new(cfg("alice-pw"), config(), quotas);
    p.pump();
    p.send(PEER, b"a").expect("a");
    assert!(p.events().iter().any(|e| matches!(e,
        TurnEvent::ChannelBindFailed { error, .. } if is_server_error(error, 508))));
    p.send(PEER, b"b").expect("b");
    let data: Vec<&[u8]> = p.to_peer.iter().map(|(_, _, d)| d.as_slice()).collect();
    assert_eq!(data, [&b"a"[..], b"b"]);
    assert_eq!(
        parse(&p.sent.last().unwrap().1).method(),
        Method::SEND,
        "a Send indication"
    );
}

// ---------------------------------------------------------------------------------------------
// Time: refreshes, stale nonces, expiry, retransmissions
// ---------------------------------------------------------------------------------------------

#[test]
fn refreshes_keep_the_allocation_permission_and_channel_alive_for_25_minutes() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    p.send(PEER, b"start").expect("start");
    // Data flows at 7 s past each minute, so refreshes due to data are told apart from timers.
    p.advance(S(7));

    for minute in 1..=25u32 {
        p.advance(S(60));
        let out = format!("to peer {minute}");
        p.send(PEER, out.as_bytes()).expect("send");
        assert_eq!(
            p.to_peer.last().unwrap().2,
            out.as_bytes(),
            "minute {minute}"
        );
        let back = format!("to client {minute}");
        p.peer_sends(addr(PEER), back.as_bytes());
        assert_eq!(
            p.received.last().unwrap().1,
            back.as_bytes(),
            "minute {minute}"
        );
    }

    let events = p.events();
    let refreshed = events
        .iter()
        .filter(|e| matches!(e, TurnEvent::Refreshed { lifetime } if *lifetime == S(600)))
        .count();
    assert!(refreshed >= 2, "{events:?}");
    assert!(!events.iter().any(|e| matches!(
        e,
        TurnEvent::Expired | TurnEvent::AllocationLost(_) | TurnEvent::RefreshFailed(_)
    )));
    assert_eq!(p.h.server.allocation_count(), 1);
    assert!(!p
        .h
        .events
        .iter()
        .any(|e| matches!(e, Event::AllocationDeleted { .. })));
    // The server's nonces last 600 s: some request met a 438 and was retried.
    let stale = [
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ]
    .iter()
    .flat_map(|m| p.answers(*m))
    .filter(|a| *a == Some(438))
    .count();
    assert!(stale >= 1);
    // Each refresh went out on its timer: permissions every 4 minutes, channels every 9, the
    // allocation 60 s before its 600 s lifetime ends (a 438 retry goes out at the same instant).
    let times = |m: Method| {
        let mut t: Vec<u64> = p
            .sent
            .iter()
            .filter(|(_, b)| {
                Message::parse(b).is_ok_and(|x| x.method() == m && x.class() == Class::Request)
            })
            .map(|(t, _)| t.as_secs())
            .collect();
        t.dedup();
        t
    };
    assert_eq!(
        times(Method::CREATE_PERMISSION),
        [0, 240, 480, 720, 960, 1200, 1440]
    );
    assert_eq!(times(Method::CHANNEL_BIND), [0, 540, 1080]);
    assert_eq!(times(Method::REFRESH), [540, 1080]);
    // The channel is still bound: data goes as ChannelData both ways.
    assert_eq!(p.client.channel(addr(PEER), p.now()), Some(0x4000));
    assert!(ChannelData::parse(p.replies.last().unwrap()).is_ok());
}

#[test]
fn idle_permissions_and_channels_lapse_while_pinned_permissions_are_kept() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    p.client.create_permission(ip("1.1.1.1"), p.now());
    p.send(PEER, b"once").expect("send");

    p.advance(S(20 * 60));

    let permission_times = |peer_ip: IpAddr| -> Vec<u64> {
        let mut t: Vec<u64> = p
            .sent
            .iter()
            .filter(|(_, b)| {
                Message::parse(b).is_ok_and(|m| {
                    m.class() == Class::Request
                        && m.method() == Method::CREATE_PERMISSION
                        && m.get::<floe_stun::attr::XorPeerAddress>()
                            .is_some_and(|a| a.is_ok_and(|a| a.0.ip() == peer_ip))
                })
            })
            .map(|(t, _)| t.as_secs())
            .collect();
        t.dedup();
        t
    };
    assert_eq!(permission_times(ip("8.8.8.8")), [0], "idle: not refreshed");
    assert_eq!(
        permission_times(ip("1.1.1.1")),
        [0, 240, 480, 720, 960, 1200],
        "pinned: refreshed until the end"
    );
    assert_eq!(p.requests(Method::CHANNEL_BIND).len(), 1);
    assert_eq!(p.client.channel(addr(PEER), p.now()), None);
    assert_eq!(p.client.state(), TurnState::Allocated);

    // The lapsed peer is relayed nothing; a new send asks again, with a fresh channel number
    // (0x4000 cools down for 5 minutes, RFC 8656 §12).
    p.peer_sends(addr(PEER), b"dropped by the server");
    assert!(p.received.is_empty());
    p.send(PEER, b"again").expect("send");
    assert_eq!(p.to_peer.last().unwrap().2, b"again");
    assert!(p.events().contains(&TurnEvent::ChannelBound {
        peer: addr(PEER),
        channel: 0x4001
    }));
}

#[test]
fn a_stale_nonce_is_recovered_transparently() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    // The Refresh at 540 s still uses the first nonce; at 660 s it is stale.
    p.advance(S(660));
    assert_eq!(p.answers(Method::REFRESH), [None]);

    p.client.create_permission(ip("8.8.8.8"), p.now());
    p.pump();

    assert_eq!(p.answers(Method::CREATE_PERMISSION), [Some(438), None]);
    let requests = p.requests(Method::CREATE_PERMISSION);
    let nonce = |b: &[u8]| parse(b).get::<Nonce<'_>>().unwrap().unwrap().0.to_owned();
    assert_ne!(
        nonce(&requests[0]),
        nonce(&requests[1]),
        "retried with the new nonce"
    );
    assert_eq!(
        p.events().last(),
        Some(&TurnEvent::PermissionCreated(ip("8.8.8.8")))
    );
}

#[test]
fn without_answers_the_allocation_expires() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    p.lose_up = true;
    p.advance(S(11 * 60));

    let events = p.events();
    assert!(
        events.contains(&TurnEvent::RefreshFailed(Error::Timeout)),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&TurnEvent::Expired));
    let (at, _) = p.events.last().unwrap();
    assert_eq!(*at, S(600), "at the end of the granted lifetime");
    assert_eq!(p.client.state(), TurnState::Closed);
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn a_437_to_a_refresh_reports_the_allocation_lost() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    let (now, tuple) = (p.now(), p.tuple);
    p.h.server.handle_client_closed(now, tuple, &mut p.h.binder);
    assert_eq!(p.h.server.allocation_count(), 0);

    p.client.refresh(p.now());
    p.pump();

    match p.events().last() {
        Some(TurnEvent::AllocationLost(e)) => assert!(is_server_error(e, 437), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.client.state(), TurnState::Closed);
}

#[test]
fn udp_requests_follow_the_rfc8489_retransmission_schedule() {
    let mut p = Pair::with(cfg("alice-pw"));
    p.lose_up = true;
    p.advance(S(60));

    let times: Vec<u128> = p.sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert!(
        p.sent.windows(2).all(|w| w[0].1 == w[1].1),
        "identical bytes"
    );
    assert_eq!(
        p.events,
        [(
            Duration::from_millis(39_500),
            TurnEvent::AllocationFailed(Error::Timeout)
        )]
    );
}

#[test]
fn stream_requests_are_sent_once_and_time_out_after_39_5_s() {
    let mut c = cfg("alice-pw");
    c.stream = true;
    let mut p = Pair::with(c);
    p.lose_up = true;
    p.advance(S(60));

    assert_eq!(p.sent.len(), 1);
    assert_eq!(
        p.events,
        [(
            Duration::from_millis(39_500),
            TurnEvent::AllocationFailed(Error::Timeout)
        )]
    );
}

#[test]
fn a_lost_response_is_recovered_by_a_retransmission() {
    let mut p = Pair::with(cfg("alice-pw"));
    p.lose_down = vec![1]; // the Allocate success
    p.pump();
    assert_eq!(p.client.state(), TurnState::Allocating);
    p.advance(S(1));

    let allocates = p.requests(Method::ALLOCATE);
    assert_eq!(allocates.len(), 3);
    assert_eq!(allocates[1], allocates[2], "retransmitted unchanged");
    assert!(matches!(
        p.events().as_slice(),
        [TurnEvent::Allocated { .. }]
    ));
    assert_eq!(p.h.server.allocation_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Release and stream transports
// ---------------------------------------------------------------------------------------------

#[test]
fn release_deletes_the_allocation_on_the_server() {
    let mut p = Pair::allocated(cfg("alice-pw"));
    p.send(PEER, b"x").expect("send");

    p.client.release(p.now());
    p.pump();

    let refresh = p.requests(Method::REFRESH).pop().expect("Refresh");
    assert_eq!(parse(&refresh).get::<Lifetime>().unwrap().unwrap().0, 0);
    assert_eq!(p.events().last(), Some(&TurnEvent::Released));
    assert_eq!(p.h.server.allocation_count(), 0);
    assert!(p.h.events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Refresh,
            ..
        }
    )));
    assert_eq!(p.client.state(), TurnState::Closed);
    assert_eq!(
        p.client.send_to(addr(PEER), b"y", p.now()),
        Err(Error::NotAllocated)
    );
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn stream_mode_pads_channel_data_and_reassembles_split_frames() {
    let mut c = cfg("alice-pw");
    c.stream = true;
    let mut p = Pair::allocated(c);
    assert_eq!(p.requests(Method::ALLOCATE).len(), 2, "no retransmission");

    p.send(PEER, b"first").expect("first");
    p.send(PEER, b"fghij").expect("second");
    let (_, frame) = p.sent.last().unwrap();
    assert_eq!(
        frame.len(),
        12,
        "4 + 5 bytes padded to a multiple of 4 (RFC 8656 §12.5)"
    );
    assert_eq!(&frame[9..], &[0, 0, 0]);
    let data: Vec<&[u8]> = p.to_peer.iter().map(|(_, _, d)| d.as_slice()).collect();
    assert_eq!(data, [&b"first"[..], b"fghij"]);

    p.peer_sends(addr(PEER), b"1234567");
    assert_eq!(p.replies.last().unwrap().len(), 12, "the server pads too");
    assert_eq!(p.received, [(addr(PEER), b"1234567".to_vec())]);
    assert_eq!(p.down.buffered(), 0);
}

// ---------------------------------------------------------------------------------------------
// Integrity of responses, without a server
// ---------------------------------------------------------------------------------------------

fn response(
    class: Class,
    tid: TransactionId,
    key: Option<&[u8]>,
    add: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut b = MessageBuilder::new(&mut buf, class, Method::ALLOCATE, tid).unwrap();
    add(&mut b);
    if let Some(key) = key {
        b.add_message_integrity(key).unwrap();
    }
    b.add_fingerprint().unwrap();
    let n = b.finish();
    buf.truncate(n);
    buf
}

fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut b = MessageBuilder::new(
        &mut buf,
        Class::Indication,
        Method::DATA,
        TransactionId([1; 12]),
    )
    .unwrap();
    b.add(&floe_stun::attr::XorPeerAddress(peer)).unwrap();
    b.add(&floe_stun::attr::Data(data)).unwrap();
    let n = b.finish();
    buf.truncate(n);
    buf
}

/// A client that learned realm "r" and nonce "n" and sent its signed Allocate.
fn challenged_client() -> (TurnClient, TransactionId, Instant) {
    let t0 = Instant::now();
    let mut client = TurnClient::new(cfg("alice-pw"), t0);
    let first = client.poll_transmit().expect("Allocate");
    let tid = parse(&first).transaction_id();
    let challenge = response(Class::ErrorResponse, tid, None, |b| {
        b.add(&ErrorCode::new(401)).unwrap();
        b.add(&Realm("r")).unwrap();
        b.add(&Nonce("n")).unwrap();
    });
    assert_eq!(client.handle_input(&challenge, t0), None);
    let signed = client.poll_transmit().expect("signed Allocate");
    let m = parse(&signed);
    assert!(m.verify_integrity(&integrity::long_term_key_md5("alice", "r", "alice-pw")));
    (client, m.transaction_id(), t0)
}

#[test]
fn responses_with_bad_integrity_or_unknown_ids_are_dropped() {
    let (mut client, tid, t0) = challenged_client();
    let key = integrity::long_term_key_md5("alice", "r", "alice-pw");
    let success = |tid, key: &[u8]| {
        response(Class::SuccessResponse, tid, Some(key), |b| {
            b.add(&XorRelayedAddress(addr("192.0.2.1:50000"))).unwrap();
            b.add(&Lifetime(600)).unwrap();
            b.add(&XorMappedAddress(addr(CLIENT))).unwrap();
        })
    };

    // Wrong key, unsigned error, unknown transaction id: all discarded.
    client.handle_input(&success(tid, b"wrong key"), t0);
    let unsigned_error = response(Class::ErrorResponse, tid, None, |b| {
        b.add(&ErrorCode::new(486)).unwrap();
    });
    client.handle_input(&unsigned_error, t0);
    client.handle_input(&success(TransactionId([9; 12]), &key), t0);
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.state(), TurnState::Allocating);

    client.handle_input(&success(tid, &key), t0);
    assert_eq!(
        client.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: addr("192.0.2.1:50000"),
            mapped: addr(CLIENT),
            lifetime: S(600)
        })
    );
    // A duplicate answer (to a retransmission) is ignored.
    client.handle_input(&success(tid, &key), t0);
    assert_eq!(client.poll_event(), None);
}

#[test]
fn a_signed_error_fails_the_allocation_with_its_code() {
    let (mut client, tid, t0) = challenged_client();
    let key = integrity::long_term_key_md5("alice", "r", "alice-pw");
    let error = response(Class::ErrorResponse, tid, Some(&key), |b| {
        b.add(&ErrorCode::new(508)).unwrap();
    });
    client.handle_input(&error, t0);
    match client.poll_event() {
        Some(TurnEvent::AllocationFailed(Error::Server { code: 508, .. })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bid_down_challenge_without_password_algorithms_is_ignored() {
    let t0 = Instant::now();
    let mut client = TurnClient::new(cfg("alice-pw"), t0);
    let tid = parse(&client.poll_transmit().unwrap()).transaction_id();
    // RFC 8489 §9.2.5: the nonce cookie announces password algorithms (bit 0), but the
    // PASSWORD-ALGORITHMS attribute was stripped.
    let challenge = response(Class::ErrorResponse, tid, None, |b| {
        b.add(&ErrorCode::new(401)).unwrap();
        b.add(&Realm("r")).unwrap();
        b.add(&Nonce("obMatJos2AAABxyz")).unwrap();
    });
    client.handle_input(&challenge, t0);
    assert_eq!(client.poll_transmit(), None, "no signed retry");
    assert_eq!(client.state(), TurnState::Allocating);
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// An allocated client with a permission and a bound channel for PEER.
fn busy_pair() -> Pair {
    let mut p = Pair::allocated(cfg("alice-pw"));
    p.send(PEER, b"x").expect("send");
    p.send(PEER, b"y").expect("send");
    p
}

/// A STUN message with arbitrary class, method and attributes; optionally with the transaction
/// id of a pending request and valid integrity under `key`.
fn forged(
    class: u8,
    method: u16,
    tid: TransactionId,
    attrs: &[(u16, Vec<u8>)],
    key: Option<&[u8]>,
) -> Vec<u8> {
    let class = [
        Class::Request,
        Class::Indication,
        Class::SuccessResponse,
        Class::ErrorResponse,
    ][usize::from(class % 4)];
    let method = [
        Method::ALLOCATE,
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
        Method::DATA,
        Method::SEND,
    ][usize::from(method % 6)];
    let mut buf = vec![0u8; 8192];
    let mut b = MessageBuilder::new(&mut buf, class, method, tid).unwrap();
    for (t, v) in attrs {
        let _ = b.add_raw(AttrType(*t), v);
    }
    if let Some(key) = key {
        let _ = b.add_message_integrity(key);
    }
    let _ = b.add_fingerprint();
    let n = b.finish();
    buf.truncate(n);
    buf
}

fn attr_strategy() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let types = prop_oneof![
        Just(0x0009u16), // ERROR-CODE
        Just(0x000C),    // CHANNEL-NUMBER
        Just(0x000D),    // LIFETIME
        Just(0x0012),    // XOR-PEER-ADDRESS
        Just(0x0013),    // DATA
        Just(0x0014),    // REALM
        Just(0x0015),    // NONCE
        Just(0x0016),    // XOR-RELAYED-ADDRESS
        Just(0x0020),    // XOR-MAPPED-ADDRESS
        Just(0x8002),    // PASSWORD-ALGORITHMS
        any::<u16>(),
    ];
    (types, proptest::collection::vec(any::<u8>(), 0..40))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_into_handle_input_never_panic(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..16),
        first_bytes in proptest::collection::vec(any::<u8>(), 16),
    ) {
        let mut p = busy_pair();
        for (i, mut bytes) in inputs.into_iter().enumerate() {
            // Steer some inputs into the STUN and ChannelData branches.
            if let Some(b) = bytes.first_mut() {
                *b = first_bytes[i % first_bytes.len()] % 0x80;
            }
            let _ = p.client.handle_input(&bytes, p.now());
            p.advance(Duration::from_millis(700));
        }
        prop_assert!(p.client.state() != TurnState::Allocating);
    }

    #[test]
    fn forged_responses_to_pending_requests_never_panic(
        messages in proptest::collection::vec(
            (any::<u8>(), any::<u16>(), proptest::collection::vec(attr_strategy(), 0..6), any::<bool>()),
            1..12,
        )
    ) {
        let (mut client, mut pending, t0) = challenged_client();
        let key = integrity::long_term_key_md5("alice", "r", "alice-pw");
        let mut now = t0;
        for (class, method, attrs, signed) in messages {
            // Answer the newest request, as the server would.
            if let Some(tid) = std::iter::from_fn(|| client.poll_transmit())
                .filter_map(|b| Message::parse(&b).ok().map(|m| m.transaction_id()))
                .last()
            {
                pending = tid;
            }
            let msg = forged(class, method, pending, &attrs, signed.then_some(&key[..]));
            let _ = client.handle_input(&msg, now);
            while client.poll_event().is_some() {}
            let _ = client.send_to(addr(PEER), b"data", now);
            client.create_permission(IpAddr::from([8, 8, 4, 4]), now);
            now += Duration::from_millis(300);
            client.handle_timeout(now);
        }
        if client.state() != TurnState::Closed {
            prop_assert!(client.poll_timeout().is_some(), "a live client always has a timer");
        }
    }

    #[test]
    fn the_stream_decoder_reassembles_any_chunking(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..10),
        cuts in proptest::collection::vec(1usize..17, 1..50),
    ) {
        let mut stream = Vec::new();
        let mut frames = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            let frame = if i % 2 == 0 {
                let mut out = vec![0u8; payload.len() + 8];
                let n = ChannelData::encode(0x4000 + i as u16, payload, true, &mut out).unwrap();
                out.truncate(n);
                out
            } else {
                forged(2, 0, TransactionId([i as u8; 12]), &[(0x0013, payload.clone())], None)
            };
            stream.extend_from_slice(&frame);
            frames.push(frame);
        }
        let mut d = StreamDecoder::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(d.buffered(), 0);
    }
}
