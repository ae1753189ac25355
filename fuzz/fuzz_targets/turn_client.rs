//! cargo fuzz run turn_client --sanitizer none
//!
//! floe's sans-IO TURN client (`floe_turn::client`) fed arbitrary server input: the first byte
//! picks UDP or stream mode; the rest is split into "datagrams" at 0xFF bytes (UDP) or pushed
//! through `StreamDecoder` in chunks (stream). Between inputs the clock advances so refresh and
//! retransmission timers run. Nothing may panic; every transmit must be a well-formed STUN
//! message or ChannelData frame.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_turn::client::{StreamDecoder, TurnClient, TurnClientConfig};
use libfuzzer_sys::fuzz_target;

fn check_transmits(c: &mut TurnClient) {
    while let Some(out) = c.poll_transmit() {
        let ok = floe_stun::Message::parse(&out).is_ok()
            || floe_stun::ChannelData::parse(&out).is_ok();
        assert!(ok, "client sent a malformed frame: {out:02x?}");
    }
    while c.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let server: SocketAddr = "203.0.113.10:3478".parse().unwrap();
    let peer: SocketAddr = "198.51.100.7:9000".parse().unwrap();
    let mut now = Instant::now();
    let mut cfg = TurnClientConfig::new(server, "alice", "secret", [mode; 32]);
    cfg.stream = mode & 1 == 1;
    let mut c = TurnClient::new(cfg, now);
    check_transmits(&mut c);
    let mut decoder = StreamDecoder::new();
    for (i, chunk) in rest.split(|b| *b == 0xFF).enumerate() {
        if mode & 1 == 1 {
            decoder.push(chunk);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        let frame = frame.to_vec();
                        let _ = c.handle_input(&frame, now);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        } else {
            let _ = c.handle_input(chunk, now);
        }
        if i % 3 == 2 {
            let _ = c.send_to(peer, chunk, now);
        }
        now += Duration::from_millis(u64::from(chunk.first().copied().unwrap_or(0)) * 997);
        c.handle_timeout(now);
        check_transmits(&mut c);
    }
});
