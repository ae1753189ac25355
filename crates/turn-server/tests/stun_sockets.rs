//! STUN Binding through floe's TURN service (what `floe serve` and `floe turn` run) on real
//! loopback sockets: UDP and TCP, IPv4 and IPv6, RFC 5780, bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::start;
use floe_stun::attr::{ErrorCode, Software, XorMappedAddress};
use floe_stun::{AttrType, Class, Message, MessageBuilder, Method, TransactionId};
use floe_turn_server::stun_client::{self, Behaviour, ClientError};
use floe_turn_server::turn::TurnShellConfig;

const TIMEOUT: Duration = Duration::from_secs(3);

fn config(listen: &[&str]) -> TurnShellConfig {
    common::config(listen, false)
}

fn request(tid: TransactionId, extra: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, tid).unwrap();
    extra(&mut b);
    let n = b.finish();
    buf.truncate(n);
    buf
}

#[test]
fn udp_ipv4_binding_answers_with_mapped_address_software_fingerprint() {
    let server = start(config(&["127.0.0.1:0"]));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let tid = TransactionId([1; 12]);
    socket
        .send_to(&request(tid, |_| {}), server.addr())
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(from, server.addr());
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.transaction_id(), tid);
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(socket.local_addr().unwrap())))
    );
    assert!(msg
        .get::<Software<'_>>()
        .unwrap()
        .unwrap()
        .0
        .starts_with("floe"));
    assert!(msg.verify_fingerprint());
}

#[test]
fn udp_and_tcp_over_ipv6() {
    let server = start(config(&["[::1]:0"]));
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    let r = stun_client::binding_udp(&socket, server.addr(), None, TIMEOUT).unwrap();
    assert_eq!(r.mapped, socket.local_addr().unwrap());
    let r = stun_client::binding_tcp(server.addr(), TIMEOUT).unwrap();
    assert!(r.mapped.is_ipv6());
    assert!(r.mapped.ip().is_loopback());
}

#[test]
fn tcp_answers_pipelined_requests_split_across_writes() {
    let server = start(config(&["127.0.0.1:0"]));
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let a = request(TransactionId([0xa; 12]), |_| {});
    let b = request(TransactionId([0xb; 12]), |_| {});
    let mut both = a.clone();
    both.extend_from_slice(&b);
    // Write the two requests in three pieces that cut through a header.
    stream.write_all(&both[..7]).unwrap();
    stream.flush().unwrap();
    stream.write_all(&both[7..30]).unwrap();
    stream.write_all(&both[30..]).unwrap();
    for tid in [[0xa; 12], [0xb; 12]] {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).unwrap();
        let len = Message::frame_len(&header).unwrap();
        let mut msg = vec![0u8; len];
        msg[..20].copy_from_slice(&header);
        stream.read_exact(&mut msg[20..]).unwrap();
        let msg = Message::parse(&msg).unwrap();
        assert_eq!(msg.transaction_id(), TransactionId(tid));
        assert_eq!(
            msg.get::<XorMappedAddress>(),
            Some(Ok(XorMappedAddress(stream.local_addr().unwrap())))
        );
    }
}

#[test]
fn tcp_non_stun_input_closes_the_connection() {
    let server = start(config(&["127.0.0.1:0"]));
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    // The server's idle timeout is 30 s: a connection not closed at once is still open when
    // this read gives up ("GET " reads like a ChannelData header announcing 21 536 bytes).
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    // EOF (0) or reset: either way nothing is answered.
    match stream.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "connection left open"
        ),
    }
}

#[test]
fn malformed_and_non_stun_datagrams_get_no_answer() {
    let server = start(config(&["127.0.0.1:0"]));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut bad_fingerprint = request(TransactionId([3; 12]), |b| b.add_fingerprint().unwrap());
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 1;
    let mut truncated = request(TransactionId([4; 12]), |b| b.add(&Software("x")).unwrap());
    truncated.truncate(truncated.len() - 4);
    let garbage: [&[u8]; 5] = [
        b"hello world",
        &[0u8; 3],
        &bad_fingerprint,
        &truncated,
        &[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], // ChannelData: not for a STUN server
    ];
    for g in garbage {
        socket.send_to(g, server.addr()).unwrap();
    }
    // Then a valid request: its answer must be the first and only datagram back.
    let tid = TransactionId([9; 12]);
    socket
        .send_to(&request(tid, |_| {}), server.addr())
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(Message::parse(&buf[..n]).unwrap().transaction_id(), tid);
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "a bad packet was answered"
    );
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let server = start(config(&["127.0.0.1:0"]));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let tid = TransactionId([5; 12]);
    socket
        .send_to(
            &request(tid, |b| b.add_raw(AttrType(0x7777), &[1, 2, 3, 4]).unwrap()),
            server.addr(),
        )
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.class(), Class::ErrorResponse);
    assert_eq!(msg.get::<ErrorCode<'_>>().unwrap().unwrap().code, 420);
}

#[test]
fn rfc5780_discovery_on_two_loopback_addresses() {
    let mut cfg = config(&["127.0.0.1:0"]);
    cfg.alternate_ips = vec!["127.0.0.2".parse().unwrap()];
    let server = start(cfg);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let report = stun_client::discover_nat(&socket, server.addr(), TIMEOUT).unwrap();
    assert_eq!(report.mapped, socket.local_addr().unwrap());
    assert_eq!(
        report.other,
        SocketAddr::new("127.0.0.2".parse().unwrap(), server.addr().port() + 1)
    );
    assert_eq!(report.mapping, Behaviour::NoNat);
    assert_eq!(report.filtering, Behaviour::NoNat);
}

#[test]
fn discovery_against_a_server_without_alternate_fails_clearly() {
    let server = start(config(&["127.0.0.1:0"]));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = stun_client::discover_nat(&socket, server.addr(), TIMEOUT).unwrap_err();
    assert!(matches!(err, ClientError::NoDiscoverySupport), "{err}");
}
