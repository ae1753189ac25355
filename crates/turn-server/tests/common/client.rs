//! A minimal TURN client on floe-stun over UDP or TCP, with long-term credentials (user
//! `alice`, password `pw`, realm [`REALM`]): the socket tests of this crate and floe's end-to-end
//! limit tests (`crates/floe/tests/turn_limits.rs` includes this file) drive the server with it.

// Each test file uses its own subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use floe_stun::attr::{
    Data, ErrorCode, Lifetime, Nonce, Realm, RequestedTransport, Username, XorPeerAddress,
    XorRelayedAddress,
};
use floe_stun::integrity::long_term_key_md5;
use floe_stun::{ChannelData, Class, Message, MessageBuilder, Method, TransactionId};

/// A Send indication carrying `data` to `peer` (RFC 8656 §11.1), transaction id from `n`.
pub fn send_indication(peer: SocketAddr, data: &[u8], n: u32) -> Vec<u8> {
    let mut buf = vec![0u8; data.len() + 100];
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&n.to_be_bytes());
    let mut b = MessageBuilder::new(
        &mut buf,
        Class::Indication,
        Method::SEND,
        TransactionId(tid),
    )
    .unwrap();
    b.add(&XorPeerAddress(peer)).unwrap();
    b.add(&Data(data)).unwrap();
    let len = b.finish();
    buf.truncate(len);
    buf
}

/// Realm of the test server.
pub const REALM: &str = "test.floe";

/// How long a client waits for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// A TURN client over UDP or TCP with long-term credentials.
pub struct Client {
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpStream>,
    pub server: SocketAddr,
    pub key: [u8; 16],
    pub nonce: String,
    pub next: u8,
}

impl Client {
    pub fn udp(server: SocketAddr) -> Client {
        Client::udp_from(server, "127.0.0.1")
    }

    /// A UDP client on `ip` (a loopback address): the server's 401 answers are rate-limited per
    /// source IP.
    pub fn udp_from(server: SocketAddr, ip: &str) -> Client {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client::new(Some(s), None, server)
    }

    pub fn tcp(server: SocketAddr) -> Client {
        Client::tcp_from(server, "127.0.0.1")
    }

    /// A TCP client whose connection comes from `ip` (a loopback address).
    pub fn tcp_from(server: SocketAddr, ip: &str) -> Client {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let from: SocketAddr = format!("{ip}:0").parse().unwrap();
        s.bind(&from.into()).unwrap();
        s.connect(&server.into()).unwrap();
        let s = TcpStream::from(s);
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client::new(None, Some(s), server)
    }

    /// Sends a Binding request without waiting for its answer (ignoring a write error).
    pub fn send_binding_request(&mut self) {
        let tid = self.tid();
        let mut buf = [0u8; 64];
        let b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, tid).unwrap();
        let n = b.finish();
        let _ = self.tcp.as_mut().unwrap().write_all(&buf[..n]);
    }

    /// A Binding request and its success response (the connection is served).
    pub fn binding(&mut self) {
        let nonce = std::mem::take(&mut self.nonce);
        let resp = self.request(Method::BINDING, |_| {});
        self.nonce = nonce;
        Client::expect_class(&resp, Class::SuccessResponse);
    }

    /// Whether the server has closed this TCP connection: waits up to `wait` for end of stream
    /// (or a reset), discarding whatever the server still sends.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let t = self.tcp.as_mut().unwrap();
        let until = std::time::Instant::now() + wait;
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < until {
            t.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            match t.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {}
            }
        }
        t.set_read_timeout(Some(TIMEOUT)).unwrap();
        false
    }

    pub fn new(udp: Option<UdpSocket>, tcp: Option<TcpStream>, server: SocketAddr) -> Client {
        Client {
            udp,
            tcp,
            server,
            key: long_term_key_md5("alice", REALM, "pw"),
            nonce: String::new(),
            next: 1,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        match (&self.udp, &mut self.tcp) {
            (Some(u), _) => {
                u.send_to(bytes, self.server).unwrap();
            }
            (_, Some(t)) => t.write_all(bytes).unwrap(),
            _ => unreachable!(),
        }
    }

    /// Receives one datagram (UDP) or one framed STUN/ChannelData message (TCP).
    pub fn recv_raw(&mut self) -> Vec<u8> {
        match (&self.udp, &mut self.tcp) {
            (Some(u), _) => {
                let mut buf = vec![0u8; 2048];
                let (n, _) = u.recv_from(&mut buf).unwrap();
                buf.truncate(n);
                buf
            }
            (_, Some(t)) => {
                let mut head = [0u8; 4];
                t.read_exact(&mut head).unwrap();
                let len = if head[0] < 4 {
                    Message::frame_len(&head).unwrap()
                } else {
                    ChannelData::frame_len(&head).unwrap()
                };
                let mut frame = vec![0u8; len];
                frame[..4].copy_from_slice(&head);
                t.read_exact(&mut frame[4..]).unwrap();
                frame
            }
            _ => unreachable!(),
        }
    }

    pub fn tid(&mut self) -> TransactionId {
        self.next += 1;
        TransactionId([self.next; 12])
    }

    /// Sends a request (authenticated once a nonce is known) and returns the response bytes.
    pub fn request(&mut self, method: Method, add: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let tid = self.tid();
        let mut buf = vec![0u8; 1024];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid).unwrap();
        add(&mut b);
        if !self.nonce.is_empty() {
            b.add(&Username("alice")).unwrap();
            b.add(&Realm(REALM)).unwrap();
            b.add(&Nonce(&self.nonce)).unwrap();
            b.add_message_integrity(&self.key).unwrap();
        }
        b.add_fingerprint().unwrap();
        let n = b.finish();
        self.send_raw(&buf[..n]);
        loop {
            let resp = self.recv_raw();
            let msg = Message::parse(&resp).unwrap();
            if msg.transaction_id() == tid {
                return resp;
            }
        }
    }

    /// Allocate with the 401 round trip; the relayed address or the error code.
    pub fn try_allocate(&mut self) -> Result<SocketAddr, u16> {
        self.allocate_with(None)
    }

    /// Allocate with the 401 round trip (RFC 8656 §7.1), asking for a 600 s lifetime; the
    /// success response must be signed.
    pub fn allocate(&mut self) -> SocketAddr {
        match self.allocate_with(Some(600)) {
            Ok(relay) => relay,
            Err(code) => panic!("Allocate answered {code}"),
        }
    }

    fn allocate_with(&mut self, lifetime: Option<u32>) -> Result<SocketAddr, u16> {
        let add = |b: &mut MessageBuilder<'_>| {
            b.add(&RequestedTransport(RequestedTransport::UDP)).unwrap();
            if let Some(secs) = lifetime {
                b.add(&Lifetime(secs)).unwrap();
            }
        };
        let resp = self.request(Method::ALLOCATE, add);
        let msg = Message::parse(&resp).unwrap();
        assert_eq!(msg.get::<ErrorCode<'_>>().unwrap().unwrap().code, 401);
        self.nonce = msg.get::<Nonce<'_>>().unwrap().unwrap().0.to_owned();
        let resp = self.request(Method::ALLOCATE, add);
        let msg = Message::parse(&resp).unwrap();
        match msg.class() {
            Class::SuccessResponse => {
                assert!(msg.verify_integrity(&self.key));
                Ok(msg.get::<XorRelayedAddress>().unwrap().unwrap().0)
            }
            _ => Err(msg.get::<ErrorCode<'_>>().unwrap().unwrap().code),
        }
    }

    pub fn expect_class(resp: &[u8], class: Class) -> Message<'_> {
        let msg = Message::parse(resp).unwrap();
        assert_eq!(msg.class(), class, "{:?}", msg.get::<ErrorCode<'_>>());
        msg
    }
}

/// A UDP peer on 127.0.0.1.
pub fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(TIMEOUT)).unwrap();
    p
}
