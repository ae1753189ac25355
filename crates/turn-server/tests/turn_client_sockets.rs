//! The sans-IO TURN client (`floe_turn::client::TurnClient`) driven over real loopback sockets
//! against the floe TURN IO shell, over UDP and over TCP: allocation with the 401 round trip,
//! data to a UDP peer and back (Send/Data indications, then ChannelData), and release.
//!
//! Every wait is bounded: the driver loop gives up after `DEADLINE`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use floe_turn::client::{StreamDecoder, TurnClient, TurnClientConfig, TurnEvent, TurnState};

/// The longest any step may take on loopback.
const DEADLINE: Duration = Duration::from_secs(5);

/// The floe TURN shell on 127.0.0.1 (UDP and TCP on one port), allowing loopback peers.
fn start() -> common::Running {
    common::start(common::config(&["127.0.0.1:0"], true))
}

/// The client's connection to the server.
enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, StreamDecoder),
}

impl Conn {
    fn local_addr(&self) -> SocketAddr {
        match self {
            Conn::Udp(s, _) => s.local_addr().unwrap(),
            Conn::Tcp(s, _) => s.local_addr().unwrap(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Udp(s, server) => {
                s.send_to(bytes, *server).unwrap();
            }
            Conn::Tcp(s, _) => s.write_all(bytes).unwrap(),
        }
    }

    /// Datagrams from the server, or complete stream frames, received within `wait`.
    fn recv(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        match self {
            Conn::Udp(s, server) => {
                s.set_read_timeout(Some(wait)).unwrap();
                match s.recv_from(&mut buf) {
                    // Only datagrams from the server are TURN traffic.
                    Ok((n, from)) if from == *server => vec![buf[..n].to_vec()],
                    Ok(_) => Vec::new(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        Vec::new()
                    }
                    Err(e) => panic!("udp: {e}"),
                }
            }
            Conn::Tcp(s, decoder) => {
                s.set_read_timeout(Some(wait)).unwrap();
                match s.read(&mut buf) {
                    Ok(0) => panic!("the server closed the TCP connection"),
                    Ok(n) => decoder.push(&buf[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("tcp: {e}"),
                }
                let mut frames = Vec::new();
                while let Some(f) = decoder.next_frame().expect("stream in sync") {
                    frames.push(f.to_vec());
                }
                frames
            }
        }
    }
}

/// Drives a `TurnClient` over a real connection with the wall clock.
struct Driver {
    conn: Conn,
    client: TurnClient,
    events: Vec<TurnEvent>,
    /// Relayed data received: (peer, payload, first byte of the frame that carried it).
    received: Vec<(SocketAddr, Vec<u8>, u8)>,
}

impl Driver {
    fn new(server: SocketAddr, stream: bool) -> Driver {
        let conn = if stream {
            Conn::Tcp(TcpStream::connect(server).unwrap(), StreamDecoder::new())
        } else {
            Conn::Udp(UdpSocket::bind("127.0.0.1:0").unwrap(), server)
        };
        let mut cfg = TurnClientConfig::new(server, "alice", "pw", rand::random());
        cfg.stream = stream;
        cfg.software = Some("floe-test-client".to_owned());
        Driver {
            conn,
            client: TurnClient::new(cfg, Instant::now()),
            events: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Runs the client (sending, receiving, timers) until `done` holds; panics after
    /// `DEADLINE`.
    fn run_until(&mut self, what: &str, done: impl Fn(&Driver) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            while let Some(bytes) = self.client.poll_transmit() {
                self.conn.send(&bytes);
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if done(self) {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; events: {:?}",
                self.events
            );
            let wait = self
                .client
                .poll_timeout()
                .map_or(Duration::from_millis(50), |t| {
                    t.saturating_duration_since(now)
                })
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            for frame in self.conn.recv(wait) {
                if let Some((peer, data)) = self.client.handle_input(&frame, Instant::now()) {
                    self.received.push((peer, data.to_vec(), frame[0]));
                }
            }
            if self.client.poll_timeout() <= Some(Instant::now()) {
                self.client.handle_timeout(Instant::now());
            }
        }
    }

    fn has_event(&self, f: impl Fn(&TurnEvent) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

fn peer_socket() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(DEADLINE)).unwrap();
    p
}

fn peer_recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the peer receives relayed data");
    (buf[..n].to_vec(), from)
}

/// Allocation, data both ways (Data indication first, ChannelData once the channel is bound),
/// release.
fn relay_round_trip(stream: bool) {
    let server = start();
    let mut d = Driver::new(server.addr(), stream);
    let peer = peer_socket();
    let peer_addr = peer.local_addr().unwrap();

    d.run_until("the allocation", |d| d.client.relayed_addr().is_some());
    let relayed = d.client.relayed_addr().unwrap();
    assert_eq!(relayed.ip(), server.addr().ip());
    assert_eq!(d.client.mapped_addr(), Some(d.conn.local_addr()));

    // First data: waits for the permission, goes out; the channel is bound meanwhile.
    d.client
        .send_to(peer_addr, b"hello peer", Instant::now())
        .unwrap();
    d.run_until("the permission and the channel", |d| {
        d.has_event(|e| matches!(e, TurnEvent::ChannelBound { .. }))
    });
    assert!(d.has_event(|e| *e == TurnEvent::PermissionCreated(peer_addr.ip())));
    assert_eq!(peer_recv(&peer), (b"hello peer".to_vec(), relayed));

    // Now both directions use the channel.
    let channel = d.client.channel(peer_addr, Instant::now()).expect("bound");
    assert!((0x4000..=0x4FFF).contains(&channel));
    peer.send_to(b"hello client", relayed).unwrap();
    d.run_until("data from the peer", |d| !d.received.is_empty());
    let (from, data, first) = &d.received[0];
    assert_eq!((*from, data.as_slice()), (peer_addr, &b"hello client"[..]));
    assert_eq!(u16::from(*first), channel >> 8, "carried as ChannelData");

    d.client
        .send_to(peer_addr, b"odd 7 b", Instant::now())
        .unwrap();
    d.run_until("the send", |_| true);
    assert_eq!(peer_recv(&peer), (b"odd 7 b".to_vec(), relayed));

    // Release: the server answers the Refresh with LIFETIME 0.
    d.client.release(Instant::now());
    d.run_until("the release", |d| d.client.state() == TurnState::Closed);
    assert_eq!(d.events.last(), Some(&TurnEvent::Released));
}

#[test]
fn turn_client_relays_over_udp() {
    relay_round_trip(false);
}

#[test]
fn turn_client_relays_over_tcp() {
    relay_round_trip(true);
}

#[test]
fn turn_client_sees_a_data_indication_before_the_channel_is_bound() {
    let server = start();
    let mut d = Driver::new(server.addr(), false);
    let peer = peer_socket();
    let peer_addr = peer.local_addr().unwrap();
    d.run_until("the allocation", |d| d.client.relayed_addr().is_some());
    let relayed = d.client.relayed_addr().unwrap();

    d.client.create_permission(peer_addr.ip(), Instant::now());
    d.run_until("the permission", |d| {
        d.has_event(|e| matches!(e, TurnEvent::PermissionCreated(_)))
    });
    peer.send_to(b"indicated", relayed).unwrap();
    d.run_until("a Data indication", |d| !d.received.is_empty());
    let (from, data, first) = &d.received[0];
    assert_eq!(
        (*from, data.as_slice(), *first),
        (peer_addr, &b"indicated"[..], 0x00)
    );
}

#[test]
fn turn_client_reports_a_wrong_password() {
    let server = start();
    let conn = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = TurnClientConfig::new(server.addr(), "alice", "wrong", rand::random());
    cfg.auto_channel = false;
    let mut d = Driver {
        conn: Conn::Udp(conn, server.addr()),
        client: TurnClient::new(cfg, Instant::now()),
        events: Vec::new(),
        received: Vec::new(),
    };
    d.run_until("the failure", |d| d.client.state() == TurnState::Closed);
    assert!(matches!(
        d.events.as_slice(),
        [TurnEvent::AllocationFailed(e)] if e.code() == Some(401)
    ));
}
