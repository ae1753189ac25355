//! Virtual-time harness for the TURN server state machine: a fake relay binder, a test client
//! that builds real STUN messages with floe-stun, and helpers to read the answers.
//!
//! This lives under `tests/` because it takes one real `Instant` as the origin of virtual time
//! (the sans-IO grep of `./test.sh` covers `src/` only); every later instant is `origin + d`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_stun::attr::{
    ErrorCode, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, RequestedTransport, Userhash,
    Username, XorRelayedAddress,
};
use floe_stun::{integrity, Class, Message, MessageBuilder, Method, TransactionId};
use floe_turn::credentials::{CredentialStore, ExpiryPolicy, RestSecret};
use floe_turn::nonce::NonceSecret;
use floe_turn::quota::QuotaConfig;
use floe_turn::server::{
    BindError, ClientTuple, Event, PeerAddr, RelayAddr, RelayBinder, RelayTransport, Shared,
    Transmit, Transport, TurnConfig, TurnServer,
};

pub const REALM: &str = "example.org";
pub const UNIX0: u64 = 1_700_000_000;
pub const REST_SECRET: &str = "rest-secret";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Relay IPs of the test server.
pub const RELAY_V4: &str = "192.0.2.1";
pub const RELAY_V6: &str = "2001:db8::1";
/// Peers that the default policy allows (public unicast).
pub const PEER: &str = "8.8.8.8:5000";
pub const PEER2: &str = "1.1.1.1:6000";
pub const PEER_V6: &str = "[2001:4860::8888]:7000";

/// A fake IO shell binder: records bound sockets; ports can be made busy, IPs unavailable.
#[derive(Debug, Default)]
pub struct FakeBinder {
    pub bound: BTreeSet<(SocketAddr, RelayTransport)>,
    pub busy: BTreeSet<SocketAddr>,
    pub all_busy: bool,
    pub unavailable: BTreeSet<IpAddr>,
    pub binds: usize,
    pub releases: usize,
}

impl RelayBinder for FakeBinder {
    fn bind(&mut self, addr: SocketAddr, transport: RelayTransport) -> Result<(), BindError> {
        if self.unavailable.contains(&addr.ip()) {
            return Err(BindError::Unavailable);
        }
        if self.all_busy || self.busy.contains(&addr) || self.bound.iter().any(|(a, _)| *a == addr)
        {
            return Err(BindError::InUse);
        }
        self.binds += 1;
        self.bound.insert((addr, transport));
        Ok(())
    }

    fn release(&mut self, addr: SocketAddr, transport: RelayTransport) {
        self.releases += 1;
        assert!(
            self.bound.remove(&(addr, transport)),
            "released {addr} that was not bound"
        );
    }
}

pub fn store(policy: ExpiryPolicy) -> CredentialStore {
    let mut s = CredentialStore::new(REALM);
    s.add_user("alice:alice-pw".parse().expect("user"))
        .expect("alice");
    s.add_user("bob:bob-pw".parse().expect("user"))
        .expect("bob");
    s.add_rest_secret(RestSecret::new(REST_SECRET).expect("secret"));
    s.set_expiry_policy(policy);
    s
}

pub fn config() -> TurnConfig {
    config_with(ExpiryPolicy::AtNextRefresh)
}

pub fn config_with(policy: ExpiryPolicy) -> TurnConfig {
    let mut c = TurnConfig::new(
        store(policy),
        vec![ip(RELAY_V4), ip(RELAY_V6)],
        NonceSecret::from_bytes([9; 32]),
        [3; 32],
    );
    c.software = Some("floe-test".to_owned());
    c
}

/// The server, its binder, virtual time and an output buffer.
pub struct Harness {
    pub server: TurnServer,
    pub shared: Arc<Shared>,
    pub binder: FakeBinder,
    pub origin: Instant,
    pub now: Instant,
    pub unix: u64,
    pub out: Vec<u8>,
    pub events: Vec<Event>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(config(), QuotaConfig::default())
    }

    pub fn with(config: TurnConfig, quotas: QuotaConfig) -> Self {
        let shared = Arc::new(Shared::new(quotas));
        Self::sharing(config, shared)
    }

    pub fn sharing(config: TurnConfig, shared: Arc<Shared>) -> Self {
        let origin = Instant::now();
        Harness {
            server: TurnServer::new(config, shared.clone(), 42, origin),
            shared,
            binder: FakeBinder::default(),
            origin,
            now: origin,
            unix: UNIX0,
            out: vec![0; 70_000],
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
    }

    /// Takes the events collected so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    /// Advances virtual time by `d`, firing every timer due on the way, in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.server.poll_timeout() {
            if t > end {
                break;
            }
            let t = t.max(self.now);
            self.unix += (t - self.now).as_secs();
            self.now = t;
            self.server
                .handle_timeout(self.now, self.unix, &mut self.binder);
            self.drain();
        }
        self.unix += (end - self.now).as_secs();
        self.now = end;
    }

    /// Feeds a client packet; returns the transmit and its bytes.
    pub fn client(&mut self, client: ClientTuple, packet: &[u8]) -> Option<(Transmit, Vec<u8>)> {
        let t = self.server.handle_client_packet(
            self.now,
            self.unix,
            client,
            packet,
            &mut self.out,
            &mut self.binder,
        );
        self.drain();
        t.map(|t| (t, self.bytes(t)))
    }

    /// Feeds a datagram from `peer` on relay socket `relay`.
    pub fn peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> Option<(Transmit, Vec<u8>)> {
        let t = self.server.handle_peer_packet(
            self.now,
            RelayAddr(relay),
            PeerAddr(peer),
            data,
            &mut self.out,
        );
        self.drain();
        t.map(|t| (t, self.bytes(t)))
    }

    pub fn bytes(&self, t: Transmit) -> Vec<u8> {
        let len = match t {
            Transmit::ToClient { len, .. }
            | Transmit::ToPeer { len, .. }
            | Transmit::ToRelay { len, .. } => len,
        };
        self.out[..len].to_vec()
    }

    /// Sends a request from `c` and returns the response bytes (panics if none). A 438 is
    /// retried once with the new nonce when `c.retry_stale` is set, as real clients do.
    pub fn request(
        &mut self,
        c: &mut TestClient,
        method: Method,
        attrs: impl Fn(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let first = self.request_once(c, method, &attrs);
        if c.retry_stale && error_code(&first) == Some(438) {
            return self.request_once(c, method, &attrs);
        }
        first
    }

    fn request_once(
        &mut self,
        c: &mut TestClient,
        method: Method,
        attrs: &impl Fn(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let req = c.request(method, attrs);
        let (t, bytes) = self.client(c.tuple, &req).expect("a response");
        match t {
            Transmit::ToClient { client, .. } => assert_eq!(client, c.tuple),
            other => panic!("expected a response to the client, got {other:?}"),
        }
        c.learn(&bytes);
        bytes
    }

    /// The 401 round trip, then an authenticated Allocate for UDP with extra attributes.
    pub fn allocate_with(
        &mut self,
        c: &mut TestClient,
        attrs: impl Fn(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        if c.nonce.is_none() {
            let challenge = self.request(c, Method::ALLOCATE, |b| {
                b.add(&RequestedTransport(RequestedTransport::UDP))
                    .expect("rt");
            });
            assert_eq!(error_code(&challenge), Some(401));
        }
        self.request(c, Method::ALLOCATE, |b| {
            b.add(&RequestedTransport(RequestedTransport::UDP))
                .expect("rt");
            attrs(b);
        })
    }

    /// Allocates (UDP) and returns the relayed address; panics on failure.
    pub fn allocate(&mut self, c: &mut TestClient) -> SocketAddr {
        let resp = self.allocate_with(c, |_| {});
        assert_success(&resp, c);
        relayed(&resp)[0]
    }
}

/// Which username form the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident {
    Username,
    Userhash,
}

/// A TURN client that builds real STUN messages with floe-stun.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub tuple: ClientTuple,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
    /// Offer PASSWORD-ALGORITHM SHA-256 (with PASSWORD-ALGORITHMS echoed).
    pub sha256_key: bool,
    /// Protect with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    pub mi_sha256: bool,
    pub ident: Ident,
    /// Retry a 438 once with the fresh nonce (in [`Harness::request`]).
    pub retry_stale: bool,
    pub next_tid: u8,
    pub last_tid: TransactionId,
}

impl TestClient {
    pub fn new(transport: Transport, remote: &str, username: &str, password: &str) -> Self {
        let local = if transport == Transport::Udp {
            addr("192.0.2.10:3478")
        } else {
            addr("192.0.2.10:3479")
        };
        TestClient {
            tuple: ClientTuple {
                transport,
                local,
                remote: addr(remote),
            },
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: None,
            sha256_key: false,
            mi_sha256: false,
            ident: Ident::Username,
            retry_stale: true,
            next_tid: 1,
            last_tid: TransactionId::default(),
        }
    }

    pub fn udp(remote: &str) -> Self {
        Self::new(Transport::Udp, remote, "alice", "alice-pw")
    }

    /// The long-term key for the chosen algorithm.
    pub fn key(&self) -> Vec<u8> {
        if self.sha256_key {
            integrity::long_term_key_sha256(&self.username, REALM, &self.password).to_vec()
        } else {
            integrity::long_term_key_md5(&self.username, REALM, &self.password).to_vec()
        }
    }

    pub fn tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        t[0] = self.next_tid;
        t[1..5].copy_from_slice(&self.tuple.remote.port().to_be_bytes().repeat(2));
        for (i, b) in self.username.bytes().take(7).enumerate() {
            t[5 + i] = b;
        }
        self.next_tid = self.next_tid.wrapping_add(1);
        self.last_tid = TransactionId(t);
        self.last_tid
    }

    /// Builds a request; signed (USERNAME/USERHASH, REALM, NONCE, integrity) once a nonce is
    /// known; always with FINGERPRINT.
    pub fn request(
        &mut self,
        method: Method,
        attrs: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let tid = self.tid();
        self.build(method, tid, attrs)
    }

    pub fn build(
        &self,
        method: Method,
        tid: TransactionId,
        attrs: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid).expect("builder");
        attrs(&mut b);
        if let Some(nonce) = &self.nonce {
            match self.ident {
                Ident::Username => b.add(&Username(&self.username)).expect("username"),
                Ident::Userhash => {
                    let h = integrity::userhash(&self.username, REALM);
                    b.add(&Userhash(&h)).expect("userhash")
                }
            }
            b.add(&Realm(REALM)).expect("realm");
            b.add(&Nonce(nonce)).expect("nonce");
            if self.sha256_key {
                b.add(&PasswordAlgorithm {
                    algorithm: 2,
                    params: &[],
                })
                .expect("pa");
                b.add(&PasswordAlgorithms::List(&[
                    PasswordAlgorithm {
                        algorithm: 2,
                        params: &[],
                    },
                    PasswordAlgorithm {
                        algorithm: 1,
                        params: &[],
                    },
                ]))
                .expect("pas");
            }
            let key = self.key();
            if self.mi_sha256 {
                b.add_message_integrity_sha256(&key).expect("mi256");
            } else {
                b.add_message_integrity(&key).expect("mi");
            }
        }
        b.add_fingerprint().expect("fingerprint");
        let n = b.finish();
        buf.truncate(n);
        buf
    }

    /// Learns the nonce from a 401/438 answer.
    pub fn learn(&mut self, response: &[u8]) {
        let m = Message::parse(response).expect("response parses");
        if matches!(error_code(response), Some(401 | 438)) {
            if let Some(Ok(n)) = m.get::<Nonce<'_>>() {
                self.nonce = Some(n.0.to_owned());
            }
        }
    }
}

pub fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes).expect("valid STUN")
}

pub fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = parse(bytes);
    if m.class() != Class::ErrorResponse {
        return None;
    }
    m.get::<ErrorCode<'_>>()
        .map(|e| e.expect("ERROR-CODE").code)
}

/// Asserts a success response signed with the client's key (same integrity kind), with
/// SOFTWARE and a valid FINGERPRINT.
pub fn assert_success(bytes: &[u8], c: &TestClient) {
    let m = parse(bytes);
    assert_eq!(
        m.class(),
        Class::SuccessResponse,
        "expected success, got error {:?}",
        error_code(bytes)
    );
    assert_signed(bytes, c);
}

pub fn assert_signed(bytes: &[u8], c: &TestClient) {
    let m = parse(bytes);
    let key = c.key();
    if c.mi_sha256 {
        assert!(m.verify_integrity_sha256(&key), "MESSAGE-INTEGRITY-SHA256");
        assert!(!m.has_integrity(), "no SHA-1 integrity in a SHA-256 answer");
    } else {
        assert!(m.verify_integrity(&key), "MESSAGE-INTEGRITY");
    }
    assert!(m.verify_fingerprint(), "FINGERPRINT");
    assert!(m.raw(floe_stun::AttrType::SOFTWARE).is_some(), "SOFTWARE");
}

/// Asserts an error with `code`, signed with the client's key.
pub fn assert_error(bytes: &[u8], code: u16, c: &TestClient) {
    assert_eq!(error_code(bytes), Some(code));
    assert_signed(bytes, c);
}

pub fn relayed(bytes: &[u8]) -> Vec<SocketAddr> {
    parse(bytes)
        .get_all::<XorRelayedAddress>()
        .map(|a| a.expect("XOR-RELAYED-ADDRESS").0)
        .collect()
}

/// A Send indication.
pub fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048 + data.len()];
    let mut b = MessageBuilder::new(
        &mut buf,
        Class::Indication,
        Method::SEND,
        TransactionId([7; 12]),
    )
    .expect("builder");
    b.add(&floe_stun::attr::XorPeerAddress(peer)).expect("peer");
    b.add(&floe_stun::attr::Data(data)).expect("data");
    let n = b.finish();
    buf.truncate(n);
    buf
}

pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; data.len() + 8];
    let n = floe_stun::ChannelData::encode(channel, data, false, &mut buf).expect("encode");
    buf.truncate(n);
    buf
}
