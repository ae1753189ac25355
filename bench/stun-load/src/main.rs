//! Bounded STUN Binding load generator (std only).
//!
//! `stun-load SERVER:PORT [--count N] [--sockets S] [--window W] [--seconds T]`
//!
//! Sends at most N RFC 8489 Binding requests from S local UDP sockets (127.0.0.1 only), keeping
//! at most W requests in flight per socket, and stops after N requests or T seconds, whichever
//! comes first. Prints `sent=… received=… ok=… seconds=…` (ok: success responses whose
//! transaction id matches one we sent on that socket).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: u32 = 0x2112_A442;

fn usage() -> ! {
    eprintln!("usage: stun-load SERVER:PORT [--count N] [--sockets S] [--window W] [--seconds T]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut server: Option<SocketAddr> = None;
    let mut count: u64 = 200_000;
    let mut sockets: usize = 16;
    let mut window: u64 = 16;
    let mut seconds: f64 = 30.0;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--count" => count = val().parse().unwrap_or_else(|_| usage()),
            "--sockets" => sockets = val().parse().unwrap_or_else(|_| usage()),
            "--window" => window = val().parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = val().parse().unwrap_or_else(|_| usage()),
            s if server.is_none() => server = Some(s.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let server = server.unwrap_or_else(|| usage());
    // Loopback only: this tool must never load anything but the local machine.
    if !server.ip().is_loopback() {
        eprintln!("stun-load: refusing non-loopback server {server}");
        std::process::exit(2);
    }
    if sockets == 0 || window == 0 || count > 100_000_000 || seconds > 600.0 {
        usage();
    }

    struct Flow {
        sock: UdpSocket,
        next_id: u64,
        pending: HashMap<u64, ()>,
    }
    let mut flows: Vec<Flow> = (0..sockets)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.connect(server).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            Flow {
                sock: s,
                next_id: 1,
                pending: HashMap::new(),
            }
        })
        .collect();

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let (mut sent, mut received, mut ok) = (0u64, 0u64, 0u64);
    let mut req = [0u8; 20];
    req[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    req[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    let mut buf = [0u8; 1500];
    let mut last_progress = Instant::now();
    // A request unanswered for this long is given up (counted as lost) so its slot is reused.
    let stale = Duration::from_millis(200);
    while Instant::now() < deadline {
        let mut progress = false;
        for f in flows.iter_mut() {
            while (f.pending.len() as u64) < window && sent < count {
                let id = f.next_id;
                f.next_id += 1;
                req[8..16].copy_from_slice(&id.to_be_bytes());
                req[16..20].copy_from_slice(&0u32.to_be_bytes());
                match f.sock.send(&req) {
                    Ok(_) => {
                        f.pending.insert(id, ());
                        sent += 1;
                        progress = true;
                    }
                    Err(_) => break,
                }
            }
            while let Ok(n) = f.sock.recv(&mut buf) {
                received += 1;
                progress = true;
                if n >= 20 && buf[0..2] == [0x01, 0x01] && buf[4..8] == MAGIC.to_be_bytes() {
                    let id = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    if f.pending.remove(&id).is_some() {
                        ok += 1;
                    }
                }
            }
        }
        if progress {
            last_progress = Instant::now();
        } else {
            if sent >= count && flows.iter().all(|f| f.pending.is_empty()) {
                break;
            }
            if last_progress.elapsed() > stale {
                // Everything in flight is lost; free the windows.
                for f in flows.iter_mut() {
                    f.pending.clear();
                }
                if sent >= count {
                    break;
                }
                last_progress = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent={sent} received={received} ok={ok} seconds={secs:.3}");
}
