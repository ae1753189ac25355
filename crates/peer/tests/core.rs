//! Two `PeerCore`s (str0m ICE/DTLS/SCTP plus floe's negotiation and file protocol) connected in
//! memory, in virtual time: no sockets, no sleeps, deterministic network behaviour. A simulated
//! signalling server swaps their messages the way floe's does (adds `from`); a simulated network
//! delivers datagrams after a latency, optionally dropping some. Real-socket and NAT versions of
//! these scenarios are in crates/floe/tests (peer.rs, natlab_peers.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_peer::signal::{parse_incoming, RemotePeer};
use floe_peer::transfer::{self, Control, Receiving, FILE_CHUNK};
use floe_peer::{Chan, CoreConfig, Output, PeerCore, PeerEvent};
use serde_json::Value;

const LATENCY: Duration = Duration::from_millis(5);

struct Side {
    name: &'static str,
    core: PeerCore,
    addr: SocketAddr,
    events: Vec<PeerEvent>,
    sent: Vec<(u64, Result<(), String>)>,
}

struct Net {
    now: Instant,
    sides: [Side; 2],
    /// (deliver at, to side, from, datagram)
    wire: VecDeque<(Instant, usize, SocketAddr, Vec<u8>)>,
    /// Drop every n-th datagram (0: none).
    drop_every: usize,
    datagrams: usize,
    dropped: usize,
}

fn side(name: &'static str, addr: &str, remote: &str, offerer: bool, now: Instant) -> Side {
    let addr: SocketAddr = addr.parse().unwrap();
    let remote = RemotePeer {
        peer: remote.into(),
        offerer,
        polite: !offerer,
    };
    let seed = [u8::from(offerer); 32];
    let core = PeerCore::new(
        CoreConfig::default(),
        remote,
        vec![addr],
        Vec::new(),
        seed,
        now,
    )
    .unwrap();
    Side {
        name,
        core,
        addr,
        events: Vec::new(),
        sent: Vec::new(),
    }
}

impl Net {
    /// Alice joined first (Bob offers, as floe's roles say for the later joiner).
    fn new(drop_every: usize) -> Net {
        let now = Instant::now();
        let alice = side("alice", "192.0.2.10:5000", "bob", false, now);
        let bob = side("bob", "198.51.100.20:6000", "alice", true, now);
        Net {
            now,
            sides: [alice, bob],
            wire: VecDeque::new(),
            drop_every,
            datagrams: 0,
            dropped: 0,
        }
    }

    /// Carries out both cores' outputs (signalling is instant; datagrams take LATENCY).
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..2 {
                while let Some(o) = self.sides[i].core.poll_output() {
                    progressed = true;
                    match o {
                        Output::Udp { from, to, data } => {
                            let Some(j) = self.sides.iter().position(|s| s.addr == to) else {
                                continue; // e.g. STUN to a server this test has none of
                            };
                            self.datagrams += 1;
                            if self.drop_every > 0 && self.datagrams % self.drop_every == 0 {
                                self.dropped += 1;
                                continue;
                            }
                            self.wire.push_back((self.now + LATENCY, j, from, data));
                        }
                        Output::Signal(mut v) => {
                            // The signalling server replaces `to` by `from`.
                            let obj = v.as_object_mut().unwrap();
                            obj.remove("to");
                            obj.insert("from".into(), Value::from(self.sides[i].name));
                            if let Some(m) = parse_incoming(&v) {
                                let now = self.now;
                                self.sides[1 - i].core.handle_signal(m, now).unwrap();
                            }
                        }
                        Output::Event(e) => self.sides[i].events.push(e),
                        Output::Sent(t, r) => self.sides[i].sent.push((t, r)),
                        Output::OpenTurn { .. } | Output::Turn { .. } => {
                            panic!("no TURN servers configured")
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Advances virtual time to the next event and handles it.
    fn step(&mut self) {
        self.flush();
        let next_packet = self.wire.iter().map(|w| w.0).min();
        let next_timer = self
            .sides
            .iter()
            .map(|s| s.core.poll_timeout())
            .min()
            .unwrap();
        let next = next_packet.map_or(next_timer, |p| p.min(next_timer));
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(pos) = self.wire.iter().position(|w| w.0 <= now) {
            let (_, j, from, data) = self.wire.remove(pos).unwrap();
            let to = self.sides[j].addr;
            self.sides[j].core.handle_udp(to, from, &data, now).unwrap();
        }
        for s in &mut self.sides {
            if s.core.poll_timeout() <= now {
                s.core.handle_timeout(now).unwrap();
            }
        }
        self.flush();
    }

    /// Steps until `done` holds, at most `limit` of virtual time.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
        let end = self.now + limit;
        for _ in 0..2_000_000 {
            if done(self) {
                return;
            }
            assert!(self.now < end, "not done within {limit:?} of virtual time");
            self.step();
        }
        panic!("not done within the step budget");
    }

    fn has(&self, i: usize, f: impl Fn(&PeerEvent) -> bool) -> bool {
        self.sides[i].events.iter().any(f)
    }

    fn open(&self, i: usize, chan: Chan) -> bool {
        self.has(i, |e| matches!(e, PeerEvent::ChannelOpen(c) if *c == chan))
    }
}

/// Connects, then sends `data` from Bob to Alice with the file protocol; returns Alice's result.
fn transfer_over(drop_every: usize, data: &[u8]) -> (Net, transfer::Received) {
    let mut net = Net::new(drop_every);
    net.run_until(Duration::from_secs(30), |n| {
        n.open(0, Chan::File) && n.open(1, Chan::File)
    });
    let header = transfer::header_for("letter.bin", data);
    let now = net.now;
    net.sides[1]
        .core
        .send(Chan::File, false, serde_json::to_vec(&header).unwrap(), now)
        .unwrap();
    let mut chunks = data.chunks(FILE_CHUNK);
    let mut receiving: Option<Receiving> = None;
    let mut seen = 0;
    let mut issued = 1usize; // the header
    let mut result = None;
    let end = net.now + Duration::from_secs(120);
    while result.is_none() {
        assert!(net.now < end, "transfer did not finish in virtual time");
        // Keep at most 8 messages waiting for SCTP (as an application awaiting `send` does).
        while issued - net.sides[1].sent.len() < 8 {
            let Some(c) = chunks.next() else { break };
            let now = net.now;
            net.sides[1]
                .core
                .send(Chan::File, true, c.to_vec(), now)
                .unwrap();
            issued += 1;
        }
        net.step();
        let events: Vec<PeerEvent> = net.sides[0].events[seen..].to_vec();
        seen = net.sides[0].events.len();
        for e in events {
            if let PeerEvent::Message {
                chan: Chan::File,
                binary,
                data: m,
            } = e
            {
                if binary {
                    let r = receiving.as_mut().expect("data before header");
                    r.push(&m).unwrap();
                    if r.is_complete() {
                        let (ack, got) = receiving.take().unwrap().finish();
                        assert!(ack.ok);
                        result = Some(got.unwrap());
                    }
                } else {
                    match transfer::parse_control(std::str::from_utf8(&m).unwrap()).unwrap() {
                        Control::Header(h) => receiving = Some(Receiving::new(h)),
                        Control::Ack(_) => panic!("alice got an ack"),
                    }
                }
            }
        }
    }
    assert!(net.sides[1].sent.iter().all(|(_, r)| r.is_ok()));
    // The selected pair is reported with the first stats after connecting.
    net.run_until(Duration::from_secs(5), |n| {
        (0..2).all(|i| n.has(i, |e| matches!(e, PeerEvent::Selected(_))))
    });
    (net, result.unwrap())
}

fn letter(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn two_cores_connect_over_host_candidates_and_move_a_file() {
    let data = letter(300_000);
    let (net, got) = transfer_over(0, &data);
    assert!(got.verified);
    assert_eq!(got.sha256, transfer::sha256_hex(&data));
    for i in 0..2 {
        let pair = net.sides[i]
            .events
            .iter()
            .find_map(|e| match e {
                PeerEvent::Selected(p) => Some(*p),
                _ => None,
            })
            .expect("a selected pair");
        let s = pair.to_string();
        assert!(s.starts_with("local host "), "{s}");
        assert!(s.contains(" <-> remote host "), "{s}");
        assert!(s.contains(" via udp rtt "), "{s}");
    }
    // Each side learned the other's host candidate through (simulated) signalling.
    assert!(net.has(
        0,
        |e| matches!(e, PeerEvent::RemoteCandidate(_, a) if a.to_string() == "198.51.100.20:6000")
    ));
    assert!(net.has(
        1,
        |e| matches!(e, PeerEvent::RemoteCandidate(_, a) if a.to_string() == "192.0.2.10:5000")
    ));
}

#[test]
fn a_file_survives_ten_percent_packet_loss() {
    let data = letter(200_000);
    let (net, got) = transfer_over(10, &data);
    assert!(got.verified, "checksum verified");
    assert!(
        net.dropped > 10,
        "the network dropped {} datagrams",
        net.dropped
    );
}

#[test]
fn bye_ends_the_other_side() {
    let mut net = Net::new(0);
    net.run_until(Duration::from_secs(30), |n| {
        n.open(0, Chan::Chat) && n.open(1, Chan::Chat)
    });
    let now = net.now;
    net.sides[1].core.close("test", now);
    // The bye travels through signalling; Alice's core ends with an error saying so.
    let mut alice_err = None;
    while let Some(o) = net.sides[1].core.poll_output() {
        if let Output::Signal(mut v) = o {
            let obj = v.as_object_mut().unwrap();
            obj.remove("to");
            obj.insert("from".into(), Value::from("bob"));
            if let Some(m) = parse_incoming(&v) {
                if let Err(e) = net.sides[0].core.handle_signal(m, now) {
                    alice_err = Some(e.to_string());
                }
            }
        }
    }
    assert_eq!(
        alice_err.as_deref(),
        Some("connection closed: bob said bye")
    );
}

#[test]
fn garbage_from_the_remote_peer_is_an_error_not_a_panic() {
    let now = Instant::now();
    let mut alice = side("alice", "192.0.2.10:5000", "bob", false, now);
    let bad_offer = floe_peer::signal::Incoming::Sdp {
        from: "bob".into(),
        kind: "offer".into(),
        sdp: "v=0\r\nthis is not sdp".into(),
    };
    let err = alice.core.handle_signal(bad_offer, now).unwrap_err();
    assert!(err.to_string().contains("bad offer"), "{err}");
    // Candidates that cannot be parsed (mDNS names, garbage) are ignored.
    for c in [
        "candidate:garbage",
        "candidate:1 1 udp 1 abc.local 5 typ host",
        "",
    ] {
        let m = floe_peer::signal::Incoming::Candidate {
            from: "bob".into(),
            candidate: c.into(),
        };
        alice.core.handle_signal(m, now).unwrap();
    }
    // Messages from other peers are not ours to act on.
    let other = floe_peer::signal::Incoming::Bye {
        from: "mallory".into(),
    };
    alice.core.handle_signal(other, now).unwrap();
}

/// The datagrams a fresh core sends to a STUN server and a UDP TURN server.
fn first_server_datagrams(seed: [u8; 32]) -> Vec<(SocketAddr, Vec<u8>)> {
    use floe_peer::ice_servers::{IceServer, TurnTransport};
    let now = Instant::now();
    let remote = RemotePeer {
        peer: "b".into(),
        offerer: false,
        polite: true,
    };
    let stun = IceServer::Stun {
        host: "192.0.2.1".into(),
        port: 3478,
    };
    let turn = IceServer::Turn {
        host: "192.0.2.2".into(),
        port: 3478,
        transport: TurnTransport::Udp,
        username: "u".into(),
        credential: "p".into(),
    };
    let servers = vec![
        ("192.0.2.1:3478".parse().unwrap(), stun),
        ("192.0.2.2:3478".parse().unwrap(), turn),
    ];
    let host = "10.0.0.1:5000".parse().unwrap();
    let mut core = PeerCore::new(
        CoreConfig::default(),
        remote,
        vec![host],
        servers,
        seed,
        now,
    )
    .unwrap();
    let mut sent = Vec::new();
    while let Some(o) = core.poll_output() {
        match o {
            Output::Udp { to, data, .. } => sent.push((to, data)),
            Output::Turn { data, .. } => sent.push(("192.0.2.2:3478".parse().unwrap(), data)),
            _ => {}
        }
    }
    sent
}

#[test]
fn randomness_is_injected_the_seed_fixes_transaction_ids() {
    let a = first_server_datagrams([1; 32]);
    assert_eq!(a.len(), 2, "one Binding request, one Allocate: {a:?}");
    assert_eq!(a, first_server_datagrams([1; 32]));
    assert_ne!(a, first_server_datagrams([2; 32]));
}
