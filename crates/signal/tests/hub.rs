//! The room hub on virtual time: joins, presence, roles, routing, held candidates, resume,
//! heartbeats, limits, auth, REST and shutdown. No sockets, no clock, no sleeps.
#![allow(clippy::unwrap_used)] // Test harness helpers: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use floe_signal::auth::{mint_hs256, Auth, Claims, JwtVerifier};
use floe_signal::bus::LocalBus;
use floe_signal::proto::{LeaveReason, Permission, ServerMsg};
use floe_signal::{ConnId, ErrorCode, Hub, HubConfig, Now, Output, SessionId};
use rand::SeedableRng;
use serde_json::{json, Value};

const UNIX0: u64 = 1_700_000_000;

fn lo() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A hub plus a virtual clock and per-connection inboxes.
struct H {
    hub: Hub,
    t0: Instant,
    elapsed: Duration,
    inbox: HashMap<ConnId, Vec<ServerMsg>>,
    closed: HashMap<ConnId, ErrorCode>,
    rejected: Vec<ErrorCode>,
    wakes: Vec<SessionId>,
}

impl H {
    fn new(config: HubConfig) -> Self {
        Self::seeded(config, 7)
    }
    fn seeded(config: HubConfig, seed: u64) -> Self {
        let hub = Hub::new(
            config,
            LocalBus::new(),
            rand::rngs::StdRng::seed_from_u64(seed),
        );
        Self {
            hub,
            t0: Instant::now(),
            elapsed: Duration::ZERO,
            inbox: HashMap::new(),
            closed: HashMap::new(),
            rejected: Vec::new(),
            wakes: Vec::new(),
        }
    }
    fn now(&self) -> Now {
        Now {
            mono: self.t0 + self.elapsed,
            unix: UNIX0 + self.elapsed.as_secs(),
        }
    }
    fn drain(&mut self) {
        while let Some(o) = self.hub.poll_output() {
            match o {
                Output::Send { conn, msg } => {
                    assert!(
                        !self.closed.contains_key(&conn),
                        "send after close on {conn}"
                    );
                    self.inbox.entry(conn).or_default().push(msg)
                }
                Output::Close { conn, code } => {
                    self.closed.insert(conn, code);
                }
                Output::Rejected { code } => self.rejected.push(code),
                Output::Wake { session } => self.wakes.push(session),
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
    fn connect_from(&mut self, ip: IpAddr) -> ConnId {
        let now = self.now();
        let c = self.hub.handle_connect(ip, now);
        self.drain();
        c
    }
    fn connect(&mut self) -> ConnId {
        self.connect_from(lo())
    }
    fn raw(&mut self, c: ConnId, frame: &[u8]) {
        let now = self.now();
        self.hub.handle_frame(c, frame, now);
        self.drain();
    }
    fn send(&mut self, c: ConnId, v: Value) {
        self.raw(c, v.to_string().as_bytes());
    }
    fn disconnect(&mut self, c: ConnId) {
        let now = self.now();
        self.hub.handle_disconnect(c, now);
        self.drain();
    }
    /// Jumps virtual time forward by `d`, firing every timer on the way at its own deadline.
    fn advance(&mut self, d: Duration) {
        let end = self.elapsed + d;
        for _ in 0..100_000 {
            match self.hub.poll_timeout() {
                Some(t) if t <= self.t0 + end => {
                    self.elapsed = self.elapsed.max(t - self.t0);
                    let now = self.now();
                    self.hub.handle_timeout(now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.elapsed = end;
    }
    /// Like `advance`, but `alive` connections ping every 5 s (their pongs are discarded).
    fn advance_pinging(&mut self, d: Duration, alive: &[ConnId]) {
        let step = Duration::from_secs(5);
        let mut left = d;
        while !left.is_zero() {
            let s = left.min(step);
            self.advance(s);
            left -= s;
            for &c in alive {
                if !self.closed.contains_key(&c) {
                    self.send(c, json!({"type":"ping"}));
                    if let Some(v) = self.inbox.get_mut(&c) {
                        v.retain(|m| !matches!(m, ServerMsg::Pong { .. }));
                    }
                }
            }
        }
    }
    fn take(&mut self, c: ConnId) -> Vec<ServerMsg> {
        self.inbox.remove(&c).unwrap_or_default()
    }
    fn join(&mut self, room: &str, peer: &str) -> (ConnId, Welcome) {
        let c = self.connect();
        self.send(c, json!({"type":"join","v":1,"room":room,"peer":peer}));
        let msgs = self.take(c);
        match msgs.as_slice() {
            [ServerMsg::Welcome(w)] => (c, (**w).clone()),
            other => panic!("expected welcome, got {other:?}"),
        }
    }
    /// A post-box join in `room` (a short-lived virtual connection): its welcome and its bearer
    /// token.
    fn rest_join(&mut self, room: &str, peer: &str) -> (Welcome, String) {
        let (v, w) = self.join(room, peer);
        self.disconnect(v);
        let tok = w.resume_token.as_str().to_string();
        (w, tok)
    }
    fn error_of(&mut self, c: ConnId) -> ErrorCode {
        let msgs = self.take(c);
        match msgs.as_slice() {
            [ServerMsg::Error(e)] => e.code,
            other => panic!("expected one error, got {other:?}"),
        }
    }
}

type Welcome = floe_signal::proto::Welcome;

fn data_payloads(msgs: &[ServerMsg]) -> Vec<Value> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::Data { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn join_gives_welcome_presence_and_server_assigned_roles() {
    let mut h = H::new(HubConfig::default());
    let (a, wa) = h.join("room1", "alice");
    assert!(wa.peers.is_empty());
    assert_eq!(wa.resume_ttl_ms, 30_000);
    assert_eq!(wa.max_message_bytes, 65_536);
    let (_b, wb) = h.join("room1", "bob");
    // The newcomer offers and is impolite; the earlier peer is polite and waits.
    assert_eq!(wb.peers.len(), 1);
    assert_eq!(wb.peers[0].peer.as_str(), "alice");
    assert!(wb.peers[0].offerer && !wb.peers[0].polite);
    let got = h.take(a);
    let [ServerMsg::PeerJoined { seq: 1, info }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(info.peer.as_str(), "bob");
    assert!(info.polite && !info.offerer);
    assert_ne!(wa.session, wb.session);
}

#[test]
fn server_assigns_peer_ids_deterministically_from_the_seed() {
    let ids = |seed| {
        let mut h = H::seeded(HubConfig::default(), seed);
        let c = h.connect();
        h.send(c, json!({"type":"join","v":1,"room":"r"}));
        let ServerMsg::Welcome(w) = &h.take(c)[0] else {
            panic!()
        };
        (
            w.peer.clone(),
            w.session.clone(),
            w.resume_token.as_str().to_string(),
        )
    };
    assert_eq!(ids(1), ids(1));
    assert_ne!(ids(1), ids(2));
    assert!(ids(1).0.as_str().starts_with("p-"));
}

#[test]
fn directed_messages_are_routed_with_sender_and_sequence() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    let (c, _) = h.join("r", "carol");
    h.take(a);
    h.take(b);
    h.send(b, json!({"type":"offer","to":"alice","sdp":"v=0 offer"}));
    h.send(a, json!({"type":"answer","to":"bob","sdp":"v=0 answer"}));
    let got = h.take(a);
    let [ServerMsg::Offer { from, sdp, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!((from.as_str(), sdp.as_str()), ("bob", "v=0 offer"));
    let got = h.take(b);
    assert!(matches!(got.as_slice(), [ServerMsg::Answer { from, .. }] if from.as_str() == "alice"));
    assert!(
        h.take(c).is_empty(),
        "carol sees nothing of a directed exchange"
    );
    // Broadcast data reaches everyone but the sender.
    h.send(c, json!({"type":"data","data":{"hello":1}}));
    for x in [a, b] {
        let got = h.take(x);
        assert!(
            matches!(got.as_slice(), [ServerMsg::Data { broadcast: true, from, .. }] if from.as_str() == "carol")
        );
    }
    assert!(h.take(c).is_empty());
}

#[test]
fn candidates_before_the_offer_are_held_then_released_in_order() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    for i in 0..3 {
        h.send(b, json!({"type":"candidate","to":"alice","candidate":format!("candidate:{i}"),"sdpMid":"0","sdpMLineIndex":0}));
    }
    h.send(b, json!({"type":"end_of_candidates","to":"alice"}));
    assert!(h.take(a).is_empty(), "candidates must wait for the offer");
    assert!(h.take(b).is_empty(), "and the sender gets no error");
    h.send(b, json!({"type":"offer","to":"alice","sdp":"o"}));
    let got = h.take(a);
    assert_eq!(got.len(), 5);
    assert!(matches!(&got[0], ServerMsg::Offer { .. }));
    for (i, m) in got[1..4].iter().enumerate() {
        let ServerMsg::Candidate {
            candidate,
            sdp_mline_index,
            ..
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!(candidate, &format!("candidate:{i}"));
        assert_eq!(*sdp_mline_index, Some(0));
    }
    assert!(matches!(&got[4], ServerMsg::EndOfCandidates { .. }));
    let seqs: Vec<u64> = got.iter().filter_map(ServerMsg::seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    // After the offer, candidates flow straight through.
    h.send(
        b,
        json!({"type":"candidate","to":"alice","candidate":"candidate:9"}),
    );
    assert_eq!(h.take(a).len(), 1);
}

#[test]
fn held_candidates_are_bounded() {
    let mut h = H::new(HubConfig {
        max_held_candidates: 2,
        ..HubConfig::default()
    });
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    h.send(b, json!({"type":"candidate","to":"alice","candidate":"1"}));
    h.send(b, json!({"type":"candidate","to":"alice","candidate":"2"}));
    h.send(
        b,
        json!({"type":"candidate","to":"alice","candidate":"3","seq":5}),
    );
    let got = h.take(b);
    let [ServerMsg::Error(e)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(
        (e.code, e.ref_seq, e.fatal),
        (ErrorCode::CandidateBufferFull, Some(5), false)
    );
}

#[test]
fn resume_within_ttl_replays_every_missed_message_in_order() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, wb) = h.join("r", "bob");
    h.take(a);
    h.send(a, json!({"type":"data","to":"bob","data":0}));
    let first = h.take(b);
    assert_eq!(first[0].seq(), Some(1));
    h.disconnect(b);
    for i in 1..=3 {
        h.send(a, json!({"type":"data","to":"bob","data":i}));
    }
    h.advance(Duration::from_secs(20));
    assert!(h.take(a).is_empty(), "no peer_left while within the TTL");
    let b2 = h.connect();
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token,"lastSeq":1}),
    );
    let got = h.take(b2);
    let ServerMsg::Resumed(r) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(r.last_seq, 4);
    assert_eq!(r.peers.len(), 1);
    assert!(r.peers[0].offerer, "bob joined later, so bob still offers");
    assert_eq!(data_payloads(&got[1..]), vec![json!(1), json!(2), json!(3)]);
    assert_eq!(
        got[1..]
            .iter()
            .filter_map(ServerMsg::seq)
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    // The resumed connection is live.
    h.send(a, json!({"type":"data","to":"bob","data":4}));
    assert_eq!(h.take(b2)[0].seq(), Some(5));
}

#[test]
fn acknowledged_messages_are_not_replayed() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, wb) = h.join("r", "bob");
    h.take(a);
    for i in 1..=4 {
        h.send(a, json!({"type":"data","to":"bob","data":i}));
    }
    h.send(b, json!({"type":"ack","seq":3}));
    h.disconnect(b);
    let b2 = h.connect();
    // Even a client that claims less than it acknowledged gets only what is still kept.
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token,"lastSeq":0}),
    );
    let got = h.take(b2);
    assert_eq!(data_payloads(&got), vec![json!(4)]);
}

#[test]
fn an_ack_beyond_what_was_sent_is_bad_ack_and_drops_nothing() {
    // Issue 12 finding 2: before, `ack` 2^64-1 was clamped and emptied the mailbox unread.
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, wb) = h.join("r", "bob");
    h.take(a);
    h.take(b);
    for i in 1..=3 {
        h.send(a, json!({"type":"data","to":"bob","data":i}));
    }
    h.take(b);
    for bad in [
        json!({"type":"ack","seq":u64::MAX}),
        json!({"type":"ping","ack":4}),
    ] {
        h.send(b, bad);
        let got = h.take(b);
        assert!(
            got.iter().any(
                |m| matches!(m, ServerMsg::Error(e) if e.code == ErrorCode::BadAck && !e.fatal)
            ),
            "{got:?}"
        );
    }
    assert_eq!(
        h.rejected
            .iter()
            .filter(|c| **c == ErrorCode::BadAck)
            .count(),
        2
    );
    assert!(!h.closed.contains_key(&b));
    // Nothing was dropped: a resume replays all three; an exact ack still works.
    h.disconnect(b);
    let b2 = h.connect();
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token,"lastSeq":0}),
    );
    assert_eq!(
        data_payloads(&h.take(b2)),
        vec![json!(1), json!(2), json!(3)]
    );
    h.send(b2, json!({"type":"ack","seq":3}));
    assert!(h.take(b2).is_empty());
}

#[test]
fn a_post_box_poll_after_beyond_what_was_sent_is_bad_ack() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (w, tok) = h.rest_join("r", "rest");
    h.take(a);
    h.send(a, json!({"type":"data","to":"rest","data":1}));
    let now = h.now();
    let err = h
        .hub
        .handle_post_box_poll(&w.session, &tok, u64::MAX, now)
        .unwrap_err();
    assert_eq!((err.code, err.fatal), (ErrorCode::BadAck, false));
    let poll = h
        .hub
        .handle_post_box_poll(&w.session, &tok, 0, now)
        .unwrap();
    assert_eq!(poll.messages.len(), 1);
}

#[test]
fn resent_client_messages_after_resume_are_deduplicated() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, wb) = h.join("r", "bob");
    h.take(a);
    h.send(b, json!({"type":"data","to":"alice","data":"x","seq":1}));
    h.send(b, json!({"type":"data","to":"alice","data":"y","seq":2}));
    h.disconnect(b);
    let b2 = h.connect();
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token,"lastSeq":0}),
    );
    let ServerMsg::Resumed(r) = &h.take(b2)[0] else {
        panic!()
    };
    assert_eq!(r.received, 2);
    // A client unsure whether 2 arrived resends it; the server drops the duplicate.
    h.send(b2, json!({"type":"data","to":"alice","data":"y","seq":2}));
    h.send(b2, json!({"type":"data","to":"alice","data":"z","seq":3}));
    assert_eq!(
        data_payloads(&h.take(a)),
        vec![json!("x"), json!("y"), json!("z")]
    );
    h.send(b2, json!({"type":"ping"}));
    assert_eq!(h.take(b2), vec![ServerMsg::Pong { ack: 3 }]);
}

#[test]
fn session_expires_after_ttl_and_peers_see_timeout() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, wb) = h.join("r", "bob");
    h.take(a);
    h.disconnect(b);
    h.advance_pinging(Duration::from_secs(29), &[a]);
    assert!(h.take(a).is_empty());
    h.advance_pinging(Duration::from_secs(2), &[a]);
    let got = h.take(a);
    assert!(
        matches!(got.as_slice(), [ServerMsg::PeerLeft { reason: LeaveReason::Timeout, peer, .. }] if peer.as_str() == "bob")
    );
    let b2 = h.connect();
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token}),
    );
    assert_eq!(h.error_of(b2), ErrorCode::ResumeFailed);
    // The peer id is free again.
    h.join("r", "bob");
}

#[test]
fn wrong_resume_token_fails_without_revealing_the_session() {
    let mut h = H::new(HubConfig::default());
    let (b, wb) = h.join("r", "bob");
    h.disconnect(b);
    let c = h.connect();
    h.send(
        c,
        json!({"type":"resume","session":wb.session,"resumeToken":"00"}),
    );
    assert_eq!(h.error_of(c), ErrorCode::ResumeFailed);
    h.send(
        c,
        json!({"type":"resume","session":"ffffffff","resumeToken":wb.resume_token}),
    );
    assert_eq!(h.error_of(c), ErrorCode::ResumeFailed);
}

#[test]
fn resume_on_a_second_connection_replaces_the_first() {
    let mut h = H::new(HubConfig::default());
    let (b, wb) = h.join("r", "bob");
    let b2 = h.connect();
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token}),
    );
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::SessionReplaced));
    assert!(matches!(h.take(b2)[0], ServerMsg::Resumed(_)));
}

#[test]
fn silent_connection_is_closed_after_three_heartbeats_and_its_session_resumable() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, wb) = h.join("r", "bob");
    h.take(a);
    // Alice pings; bob is silent.
    for _ in 0..3 {
        h.advance(Duration::from_secs(9));
        h.send(a, json!({"type":"ping"}));
    }
    h.advance(Duration::from_secs(4));
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::HeartbeatTimeout));
    assert!(!h.closed.contains_key(&a));
    let got = h.take(b);
    assert!(
        matches!(got.as_slice(), [ServerMsg::Error(e)] if e.fatal && e.code == ErrorCode::HeartbeatTimeout)
    );
    let b2 = h.connect();
    h.send(
        b2,
        json!({"type":"resume","session":wb.session,"resumeToken":wb.resume_token}),
    );
    assert!(matches!(h.take(b2)[0], ServerMsg::Resumed(_)));
}

#[test]
fn connection_that_never_joins_is_closed() {
    let mut h = H::new(HubConfig::default());
    let c = h.connect();
    h.send(c, json!({"type":"ping"}));
    assert_eq!(h.take(c), vec![ServerMsg::Pong { ack: 0 }]);
    h.advance(Duration::from_secs(11));
    assert_eq!(h.closed.get(&c), Some(&ErrorCode::JoinTimeout));
}

#[test]
fn malformed_input_gets_errors_and_never_disturbs_other_peers() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    let cases: Vec<(&[u8], ErrorCode)> = vec![
        (b"{not json", ErrorCode::BadJson),
        (b"\xff\xfe", ErrorCode::BadJson),
        (b"42", ErrorCode::BadMessage),
        (br#"{"type":"warp"}"#, ErrorCode::UnknownType),
        (br#"{"type":"offer","to":"alice"}"#, ErrorCode::BadMessage),
        (
            br#"{"type":"offer","to":"al ice","sdp":"x"}"#,
            ErrorCode::BadMessage,
        ),
        (
            br#"{"type":"offer","to":"ghost","sdp":"x"}"#,
            ErrorCode::PeerNotFound,
        ),
        (
            br#"{"type":"data","to":"ghost","data":1}"#,
            ErrorCode::PeerNotFound,
        ),
        (
            br#"{"type":"offer","to":"bob","sdp":"x"}"#,
            ErrorCode::BadMessage,
        ),
        (
            br#"{"type":"join","v":1,"room":"r2"}"#,
            ErrorCode::AlreadyJoined,
        ),
        (br#"{"type":"kick","peer":"alice"}"#, ErrorCode::Forbidden),
    ];
    for (frame, code) in cases {
        h.raw(b, frame);
        assert_eq!(
            h.error_of(b),
            code,
            "frame {:?}",
            String::from_utf8_lossy(frame)
        );
    }
    assert!(h.closed.is_empty());
    assert!(h.take(a).is_empty(), "alice saw nothing");
    h.send(b, json!({"type":"data","to":"alice","data":"still fine"}));
    assert_eq!(data_payloads(&h.take(a)), vec![json!("still fine")]);
    assert!(h.rejected.contains(&ErrorCode::UnknownType));
}

#[test]
fn messages_before_join_are_refused() {
    let mut h = H::new(HubConfig::default());
    let c = h.connect();
    h.send(c, json!({"type":"offer","to":"x","sdp":"y","seq":4}));
    let got = h.take(c);
    let [ServerMsg::Error(e)] = got.as_slice() else {
        panic!()
    };
    assert_eq!((e.code, e.ref_seq), (ErrorCode::NotJoined, Some(4)));
    h.send(c, json!({"type":"join","v":2,"room":"r"}));
    assert_eq!(h.error_of(c), ErrorCode::UnsupportedVersion);
}

#[test]
fn oversized_frame_is_fatal_for_that_connection_only() {
    let mut h = H::new(HubConfig {
        max_message_bytes: 1000,
        ..HubConfig::default()
    });
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    let big = json!({"type":"data","to":"alice","data":"x".repeat(1001)}).to_string();
    h.raw(b, big.as_bytes());
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::MessageTooLarge));
    assert!(h.take(a).is_empty());
    h.send(a, json!({"type":"ping"}));
    assert_eq!(h.take(a), vec![ServerMsg::Pong { ack: 0 }]);
}

#[test]
fn message_rate_is_limited_then_fatal_when_sustained() {
    let mut h = H::new(HubConfig {
        msgs_per_sec: 10,
        msg_burst: 5,
        max_rate_violations: 3,
        ..HubConfig::default()
    });
    let (a, _) = h.join("r", "alice"); // the join used one token
    for _ in 0..4 {
        h.send(a, json!({"type":"ping"}));
    }
    assert_eq!(h.take(a).len(), 4);
    h.send(a, json!({"type":"ping"}));
    assert_eq!(h.error_of(a), ErrorCode::RateLimited);
    h.advance(Duration::from_millis(100));
    h.send(a, json!({"type":"ping"}));
    assert_eq!(
        h.take(a),
        vec![ServerMsg::Pong { ack: 0 }],
        "tokens refill at the rate"
    );
    for _ in 0..4 {
        h.send(a, json!({"type":"ping"}));
    }
    assert_eq!(h.closed.get(&a), Some(&ErrorCode::RateLimited));
}

#[test]
fn joins_per_minute_are_limited_per_ip() {
    let mut h = H::new(HubConfig {
        joins_per_min_per_ip: 2,
        ..HubConfig::default()
    });
    h.join("r", "a");
    h.join("r", "b");
    let c = h.connect();
    h.send(c, json!({"type":"join","v":1,"room":"r","peer":"c"}));
    assert_eq!(h.error_of(c), ErrorCode::JoinRateLimited);
    // Another loopback address has its own budget.
    let d = h.connect_from("127.0.0.2".parse().unwrap());
    h.send(d, json!({"type":"join","v":1,"room":"r","peer":"d"}));
    assert!(matches!(h.take(d)[0], ServerMsg::Welcome(_)));
    h.advance(Duration::from_secs(31));
    assert_eq!(h.closed.get(&c), Some(&ErrorCode::JoinTimeout));
    let c = h.connect();
    h.send(c, json!({"type":"join","v":1,"room":"r","peer":"c"}));
    let got = h.take(c);
    assert!(matches!(got.last(), Some(ServerMsg::Welcome(_))), "{got:?}");
}

#[test]
fn room_capacity_room_count_and_peer_ids_are_enforced() {
    let mut h = H::new(HubConfig {
        max_peers_per_room: 2,
        max_rooms: 2,
        ..HubConfig::default()
    });
    h.join("r1", "a");
    h.join("r1", "b");
    let c = h.connect();
    h.send(c, json!({"type":"join","v":1,"room":"r1","peer":"c"}));
    assert_eq!(h.error_of(c), ErrorCode::RoomFull);
    h.send(c, json!({"type":"join","v":1,"room":"r2","peer":"a"}));
    assert!(matches!(h.take(c)[0], ServerMsg::Welcome(_)));
    let d = h.connect();
    h.send(d, json!({"type":"join","v":1,"room":"r3","peer":"d"}));
    assert_eq!(h.error_of(d), ErrorCode::TooManyRooms);
    h.send(d, json!({"type":"join","v":1,"room":"r2","peer":"a"}));
    assert_eq!(h.error_of(d), ErrorCode::PeerIdTaken);
    assert_eq!(h.hub.stats().rooms, 2);
}

#[test]
fn leave_tells_peers_and_frees_the_connection_for_another_join() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    h.send(b, json!({"type":"leave"}));
    let got = h.take(a);
    assert!(matches!(
        got.as_slice(),
        [ServerMsg::PeerLeft {
            reason: LeaveReason::Left,
            ..
        }]
    ));
    h.send(b, json!({"type":"join","v":1,"room":"r","peer":"bob"}));
    assert!(matches!(h.take(b)[0], ServerMsg::Welcome(_)));
}

#[test]
fn mailbox_of_a_detached_session_is_bounded() {
    let mut h = H::new(HubConfig {
        mailbox_max_msgs: 3,
        msg_burst: 100,
        ..HubConfig::default()
    });
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    h.disconnect(b);
    for i in 0..4 {
        h.send(a, json!({"type":"data","to":"bob","data":i}));
    }
    let got = h.take(a);
    assert!(
        matches!(
            got.as_slice(),
            [ServerMsg::PeerLeft {
                reason: LeaveReason::Overflow,
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(h.rejected.contains(&ErrorCode::MailboxOverflow));
}

#[test]
fn live_client_that_never_acks_overflows_fatally() {
    let mut h = H::new(HubConfig {
        mailbox_max_msgs: 2,
        ..HubConfig::default()
    });
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    for i in 0..3 {
        h.send(a, json!({"type":"data","to":"bob","data":i}));
    }
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::MailboxOverflow));
}

fn jwt_hub(secret: &[u8]) -> H {
    H::new(HubConfig {
        auth: Auth::Jwt(JwtVerifier::hs256(secret).unwrap()),
        ..HubConfig::default()
    })
}

fn token(
    secret: &[u8],
    room: &str,
    peer: Option<&str>,
    exp_in: u64,
    perms: Option<Vec<Permission>>,
) -> String {
    mint_hs256(
        secret,
        &Claims {
            room: room.into(),
            peer: peer.map(Into::into),
            perms,
            exp: UNIX0 + exp_in,
            nbf: None,
            iat: None,
            tenant: None,
        },
    )
    .unwrap()
}

#[test]
fn production_mode_requires_valid_tokens() {
    let mut h = jwt_hub(b"k");
    let c = h.connect();
    h.send(c, json!({"type":"join","v":1,"room":"r"}));
    assert_eq!(h.error_of(c), ErrorCode::AuthRequired);
    h.send(c, json!({"type":"join","v":1,"room":"r","token":"x.y.z"}));
    assert_eq!(h.error_of(c), ErrorCode::InvalidToken);
    h.send(
        c,
        json!({"type":"join","v":1,"room":"other","token":token(b"k","r",None,60,None)}),
    );
    assert_eq!(h.error_of(c), ErrorCode::Forbidden);
    h.send(c, json!({"type":"join","v":1,"room":"r","peer":"mallory","token":token(b"k","r",Some("bob"),60,None)}));
    assert_eq!(h.error_of(c), ErrorCode::Forbidden);
    h.send(
        c,
        json!({"type":"join","v":1,"room":"r","token":token(b"k","r",Some("bob"),60,None)}),
    );
    let got = h.take(c);
    let [ServerMsg::Welcome(w)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(w.peer.as_str(), "bob");
    assert_eq!(w.token_exp, Some(UNIX0 + 60));
}

#[test]
fn development_mode_refuses_remote_anonymous_joins() {
    let mut h = H::new(HubConfig::default());
    let c = h.connect_from("192.0.2.7".parse().unwrap());
    h.send(c, json!({"type":"join","v":1,"room":"r"}));
    assert_eq!(h.error_of(c), ErrorCode::AuthRequired);
}

#[test]
fn token_expiry_ends_the_session_unless_refreshed() {
    let mut h = jwt_hub(b"k");
    let a = h.connect();
    h.send(
        a,
        json!({"type":"join","v":1,"room":"r","token":token(b"k","r",Some("a"),100,None)}),
    );
    let b = h.connect();
    h.send(
        b,
        json!({"type":"join","v":1,"room":"r","token":token(b"k","r",Some("b"),25,None)}),
    );
    h.take(a);
    h.take(b);
    h.advance_pinging(Duration::from_secs(20), &[a, b]);
    h.send(
        b,
        json!({"type":"refresh","token":token(b"k","r",Some("b"),60,None)}),
    );
    assert_eq!(
        h.take(b),
        vec![ServerMsg::Refreshed {
            exp: Some(UNIX0 + 60)
        }]
    );
    h.send(
        b,
        json!({"type":"refresh","token":token(b"k","r",Some("a"),90,None)}),
    );
    assert_eq!(h.error_of(b), ErrorCode::Forbidden);
    h.advance_pinging(Duration::from_secs(10), &[a, b]); // past the first token's exp
    assert!(
        !h.closed.contains_key(&b),
        "the refreshed token keeps the session"
    );
    h.take(a);
    h.advance_pinging(Duration::from_secs(31), &[a, b]); // past the refreshed exp at +60
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::TokenExpired));
    let got = h.take(a);
    assert!(
        got.iter().any(|m| matches!(
            m,
            ServerMsg::PeerLeft {
                reason: LeaveReason::Expired,
                ..
            }
        )),
        "{got:?}"
    );
}

#[test]
fn permissions_gate_publish_data_subscribe_and_kick() {
    let mut h = jwt_hub(b"k");
    let admin = h.connect();
    h.send(admin, json!({"type":"join","v":1,"room":"r","token":token(b"k","r",Some("admin"),600,Some(vec![Permission::Admin, Permission::Data]))}));
    let viewer = h.connect();
    h.send(viewer, json!({"type":"join","v":1,"room":"r","token":token(b"k","r",Some("viewer"),600,Some(vec![Permission::Subscribe]))}));
    let deaf = h.connect();
    h.send(deaf, json!({"type":"join","v":1,"room":"r","token":token(b"k","r",Some("deaf"),600,Some(vec![Permission::Publish]))}));
    for c in [admin, viewer, deaf] {
        h.take(c);
    }
    h.send(viewer, json!({"type":"offer","to":"admin","sdp":"x"}));
    assert_eq!(h.error_of(viewer), ErrorCode::Forbidden);
    h.send(viewer, json!({"type":"data","data":1}));
    assert_eq!(h.error_of(viewer), ErrorCode::Forbidden);
    h.send(viewer, json!({"type":"kick","peer":"deaf"}));
    assert_eq!(h.error_of(viewer), ErrorCode::Forbidden);
    // A peer without subscribe cannot be addressed.
    h.send(admin, json!({"type":"data","to":"deaf","data":1}));
    assert_eq!(h.error_of(admin), ErrorCode::PeerNotFound);
    h.send(admin, json!({"type":"kick","peer":"viewer"}));
    assert_eq!(h.closed.get(&viewer), Some(&ErrorCode::Kicked));
    let got = h.take(deaf);
    assert!(
        matches!(
            got.as_slice(),
            [ServerMsg::PeerLeft {
                reason: LeaveReason::Kicked,
                ..
            }]
        ),
        "{got:?}"
    );
}

#[test]
fn shutdown_tells_every_client_to_go_away() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let b = h.connect();
    let now = h.now();
    h.hub.handle_shutdown(1500, now);
    h.drain();
    for c in [a, b] {
        let got = h.take(c);
        assert!(
            matches!(
                got.last(),
                Some(ServerMsg::GoAway {
                    reconnect_ms: 1500,
                    ..
                })
            ),
            "{got:?}"
        );
        assert_eq!(h.closed.get(&c), Some(&ErrorCode::ServerShutdown));
    }
}

#[test]
fn rest_sessions_post_poll_and_wake() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    // A REST join is a short-lived virtual connection.
    let (w, tok) = h.rest_join("r", "rest");
    h.take(a);
    let now = h.now();
    let replies = h
        .hub
        .handle_post_box_message(
            &w.session,
            &tok,
            br#"{"type":"offer","to":"alice","sdp":"s"}"#,
            now,
        )
        .unwrap();
    assert!(replies.is_empty());
    h.drain();
    assert!(matches!(h.take(a).as_slice(), [ServerMsg::Offer { .. }]));
    let replies = h
        .hub
        .handle_post_box_message(
            &w.session,
            &tok,
            br#"{"type":"data","to":"ghost","data":1,"seq":9}"#,
            now,
        )
        .unwrap();
    assert!(
        matches!(replies.as_slice(), [ServerMsg::Error(e)] if e.code == ErrorCode::PeerNotFound && e.ref_seq == Some(9))
    );
    let err = h
        .hub
        .handle_post_box_message(&w.session, "wrong", b"{}", now)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::SessionNotFound);
    let err = h
        .hub
        .handle_post_box_message(&w.session, &tok, b"{", now)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadJson);
    h.drain();
    h.send(a, json!({"type":"answer","to":"rest","sdp":"a"}));
    assert_eq!(h.wakes, vec![w.session.clone()]);
    let poll = h
        .hub
        .handle_post_box_poll(&w.session, &tok, 0, now)
        .unwrap();
    assert_eq!(poll.messages.len(), 1);
    assert_eq!(poll.last_seq, 1);
    // Polling keeps the session alive past the resume TTL.
    for _ in 0..3 {
        h.advance(Duration::from_secs(20));
        h.send(a, json!({"type":"ping"}));
        let now = h.now();
        assert!(h
            .hub
            .handle_post_box_poll(&w.session, &tok, 1, now)
            .unwrap()
            .messages
            .is_empty());
    }
    h.advance(Duration::from_secs(31));
    let now = h.now();
    assert_eq!(
        h.hub
            .handle_post_box_poll(&w.session, &tok, 1, now)
            .unwrap_err()
            .code,
        ErrorCode::SessionNotFound
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Connect,
        Join(usize, u8),
        Send(usize, u8, u8),
        Garbage(usize, Vec<u8>),
        Ack(usize, u8),
        Disconnect(usize),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Connect),
            (0..6usize, 0..4u8).prop_map(|(c, p)| Op::Join(c, p)),
            (0..6usize, 0..4u8, 0..6u8).prop_map(|(c, p, k)| Op::Send(c, p, k)),
            (0..6usize, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(c, b)| Op::Garbage(c, b)),
            (0..6usize, 0..20u8).prop_map(|(c, s)| Op::Ack(c, s)),
            (0..6usize).prop_map(Op::Disconnect),
            (0..40_000u16).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Whatever clients do, the hub does not panic, never sends after a close, and every
        /// connection sees strictly increasing mailbox sequence numbers.
        #[test]
        fn random_traffic_keeps_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let mut h = H::new(HubConfig { max_peers_per_room: 3, mailbox_max_msgs: 8, ..HubConfig::default() });
            let mut conns: Vec<ConnId> = Vec::new();
            for op in ops {
                let pick = |i: usize| conns.get(i % conns.len().max(1)).copied();
                match op {
                    Op::Connect => conns.push(h.connect()),
                    Op::Join(c, p) => if let Some(c) = pick(c) { h.send(c, json!({"type":"join","v":1,"room":"r","peer":format!("p{p}")})) },
                    Op::Send(c, p, k) => if let Some(c) = pick(c) {
                        let to = format!("p{p}");
                        let m = match k {
                            0 => json!({"type":"offer","to":to,"sdp":"o"}),
                            1 => json!({"type":"candidate","to":to,"candidate":"c"}),
                            2 => json!({"type":"data","data":k}),
                            3 => json!({"type":"bye","to":to}),
                            4 => json!({"type":"leave"}),
                            _ => json!({"type":"ping","ack":1}),
                        };
                        h.send(c, m)
                    },
                    Op::Garbage(c, b) => if let Some(c) = pick(c) { h.raw(c, &b) },
                    Op::Ack(c, s) => if let Some(c) = pick(c) { h.send(c, json!({"type":"ack","seq":s})) },
                    Op::Disconnect(c) => if let Some(c) = pick(c) { h.disconnect(c) },
                    Op::Advance(ms) => h.advance(Duration::from_millis(u64::from(ms))),
                }
            }
            for msgs in h.inbox.values() {
                let mut last = 0;
                for m in msgs {
                    match m {
                        ServerMsg::Welcome(_) | ServerMsg::Resumed(_) => last = 0,
                        _ => if let Some(s) = m.seq() { prop_assert!(s > last, "seq {} after {}", s, last); last = s; }
                    }
                }
            }
            h.advance(Duration::from_secs(120));
            prop_assert_eq!(h.hub.stats().sessions, 0, "every session ends once all are silent");
        }
    }
}

#[test]
fn short_heartbeat_is_enforced_even_before_the_join_timeout() {
    let mut h = H::new(HubConfig {
        heartbeat: Duration::from_secs(1),
        ..HubConfig::default()
    });
    let (a, _) = h.join("r", "alice");
    h.advance(Duration::from_millis(2900));
    assert!(!h.closed.contains_key(&a));
    h.advance(Duration::from_millis(200));
    assert_eq!(h.closed.get(&a), Some(&ErrorCode::HeartbeatTimeout));
}

#[test]
fn admin_lists_sessions_and_ends_a_peers_session() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let (b, _) = h.join("r", "bob");
    h.take(a);
    let now = h.now();
    let list = h.hub.sessions(now);
    assert_eq!(
        list.iter()
            .map(|s| (s.room.as_str(), s.peer.as_str(), s.connected))
            .collect::<Vec<_>>(),
        [("r", "alice", true), ("r", "bob", true)]
    );

    let ended = h
        .hub
        .handle_admin_end(&floe_signal::hub::SessionFilter::Peer("bob".into()), now);
    h.drain();

    assert_eq!(ended, 1);
    assert_eq!(h.error_of(b), ErrorCode::Kicked);
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::Kicked));
    let got = h.take(a);
    assert!(
        got.iter().any(|m| matches!(
            m,
            ServerMsg::PeerLeft { peer, reason: LeaveReason::Kicked, .. } if peer.as_str() == "bob"
        )),
        "{got:?}"
    );
    assert_eq!(h.hub.sessions(now).len(), 1);
}

#[test]
fn drain_refuses_joins_and_tells_connected_peers_go_away_once() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let now = h.now();

    h.hub.handle_drain(700, now);
    h.hub.handle_drain(700, now);
    h.drain();

    let got = h.take(a);
    assert!(
        matches!(
            got.as_slice(),
            [ServerMsg::GoAway { reconnect_ms: 700, reason }] if reason == "draining"
        ),
        "{got:?}"
    );
    assert!(!h.closed.contains_key(&a), "the connection stays open");
    let c = h.connect();
    h.send(c, json!({"type":"join","v":1,"room":"r","peer":"carol"}));
    assert_eq!(h.error_of(c), ErrorCode::ServerBusy);
    // The existing session goes on.
    h.send(a, json!({"type":"ping"}));
    assert!(matches!(h.take(a).as_slice(), [ServerMsg::Pong { .. }]));
}

#[test]
fn a_reload_that_removes_a_key_ends_the_sessions_it_admitted_and_new_limits_apply() {
    let mut h = jwt_hub(b"old");
    let join = |h: &mut H, secret: &[u8], peer: &str| {
        let c = h.connect();
        let t = token(secret, "r", Some(peer), 600, None);
        h.send(c, json!({"type":"join","v":1,"room":"r","token":t}));
        c
    };
    let a = join(&mut h, b"old", "alice");
    let b = join(&mut h, b"old", "bob");
    h.take(a);
    h.take(b);
    let now = h.now();
    // The same key (another setting of the verifier changed): every token still verifies.
    let same = HubConfig {
        auth: Auth::Jwt(JwtVerifier::hs256(b"old").unwrap().with_leeway(1)),
        ..HubConfig::default()
    };
    assert_eq!(h.hub.handle_reconfigure(same, now), 0);
    let ended = h.hub.handle_reconfigure(
        HubConfig {
            auth: Auth::Jwt(JwtVerifier::hs256(b"new").unwrap()),
            max_peers_per_room: 2,
            ..HubConfig::default()
        },
        now,
    );
    h.drain();

    assert_eq!(ended, 2);
    assert_eq!(h.closed.get(&a), Some(&ErrorCode::InvalidToken));
    assert_eq!(h.closed.get(&b), Some(&ErrorCode::InvalidToken));
    // A join with the removed key is refused; one with the new key is admitted, and the new
    // room size then holds.
    let late = join(&mut h, b"old", "carol");
    assert_eq!(h.error_of(late), ErrorCode::InvalidToken);
    let carol = join(&mut h, b"new", "carol");
    assert!(matches!(h.take(carol).first(), Some(ServerMsg::Welcome(_))));
    let dave = join(&mut h, b"new", "dave");
    h.take(dave);
    let eve = join(&mut h, b"new", "eve");
    assert_eq!(h.error_of(eve), ErrorCode::RoomFull);
}

#[test]
fn a_reload_to_production_mode_ends_anonymous_sessions() {
    let mut h = H::new(HubConfig::default());
    let (a, _) = h.join("r", "alice");
    let now = h.now();
    assert_eq!(h.hub.handle_reconfigure(HubConfig::default(), now), 0);
    let ended = h.hub.handle_reconfigure(
        HubConfig {
            auth: Auth::Jwt(JwtVerifier::hs256(b"k").unwrap()),
            ..HubConfig::default()
        },
        now,
    );
    h.drain();
    assert_eq!(ended, 1);
    assert_eq!(h.closed.get(&a), Some(&ErrorCode::InvalidToken));
}
