//! Two TURN allocations relaying to each other through a running server (relay to relay inside
//! it: floe's default peer policy allows that), shared by the reload tests.
// Each test file uses its own subset of these helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_stun::attr::{Data, XorPeerAddress};
use floe_stun::{Class, Message, Method};

use crate::client::{send_indication, Client};

/// Whether `data` sent from `a` to `b_relay` reaches `b` (a Data indication) within a second.
pub fn relays(a: &mut Client, b: &mut Client, b_relay: SocketAddr, data: &[u8], n: u32) -> bool {
    a.send_raw(&send_indication(b_relay, data, n));
    let socket = b.udp.as_ref().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(len) = socket.recv(&mut buf) {
            if let Ok(m) = Message::parse(&buf[..len]) {
                if m.get::<Data<'_>>().and_then(Result::ok).map(|d| d.0) == Some(data) {
                    return true;
                }
            }
        }
    }
    false
}

/// Two allocations of alice, each permitted towards the other's relayed address.
pub fn relaying_pair(turn: SocketAddr) -> (Client, SocketAddr, Client, SocketAddr) {
    let mut a = Client::udp(turn);
    let a_relay = a.allocate();
    let mut b = Client::udp(turn);
    let b_relay = b.allocate();
    for (c, peer) in [(&mut a, b_relay), (&mut b, a_relay)] {
        let resp = c.request(Method::CREATE_PERMISSION, |m| {
            m.add(&XorPeerAddress(peer)).unwrap()
        });
        Client::expect_class(&resp, Class::SuccessResponse);
    }
    (a, a_relay, b, b_relay)
}
