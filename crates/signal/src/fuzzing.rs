//! Checks shared by the cargo-fuzz target `signal_message` (`fuzz/`), the corpus replay and the
//! bounded property run (`tests/fuzz.rs`), so `cargo test` exercises them on stable Rust without
//! cargo-fuzz. Not part of the supported API.
//!
//! [`check_client_msg`] takes arbitrary bytes, must never panic on any input, and panics (with
//! an assertion message) only when the hub answers in a way the protocol forbids.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rand::SeedableRng;

use crate::bus::LocalBus;
use crate::hub::{Hub, HubConfig, Now, Output};
use crate::proto::{parse_client_msg, ServerMsg};

/// Feeds `data` as a client→server message everywhere the hub reads one: the parser, a frame
/// from a connection that has not joined, from one joined to a room with another peer, a
/// post-box message of a post-box session, then lets every timer fire. Checks that every
/// answer serialises, every error carries an HTTP status of 4xx/5xx, and every close is for a
/// fatal code. `t0` is the hub's start time (the crate reads no clock: the caller passes
/// `Instant::now()` once).
pub fn check_client_msg(data: &[u8], t0: Instant) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = parse_client_msg(text) {
            let status = e.code.http_status();
            assert!((400..600).contains(&status), "{e:?}: status {status}");
        }
    }
    let at = |secs: u64| Now {
        mono: t0 + Duration::from_secs(secs),
        unix: 1_700_000_000 + secs,
    };
    let mut hub = Hub::new(
        HubConfig::default(),
        LocalBus::new(),
        rand::rngs::StdRng::seed_from_u64(1),
    );
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let fresh = hub.handle_connect(lo, at(0));
    let a = hub.handle_connect(lo, at(0));
    let b = hub.handle_connect(lo, at(0));
    hub.handle_frame(a, br#"{"type":"join","v":1,"room":"f","peer":"a"}"#, at(0));
    hub.handle_frame(b, br#"{"type":"join","v":1,"room":"f","peer":"b"}"#, at(0));
    let post_box = hub.handle_connect(lo, at(0));
    hub.handle_frame(
        post_box,
        br#"{"type":"join","v":1,"room":"f","peer":"p"}"#,
        at(0),
    );
    let mut welcome = None;
    drain(&mut hub, |o| {
        if let Output::Send {
            conn,
            msg: ServerMsg::Welcome(w),
        } = o
        {
            if *conn == post_box {
                welcome = Some((w.session.clone(), w.resume_token.as_str().to_string()));
            }
        }
    });
    hub.handle_disconnect(post_box, at(0));
    hub.handle_frame(fresh, data, at(1));
    hub.handle_frame(a, data, at(1));
    hub.handle_frame(a, data, at(1)); // a repeat: duplicates, acks and rate limits
    drain(&mut hub, |_| {});
    if let Some((session, token)) = welcome {
        match hub.handle_post_box_message(&session, &token, data, at(2)) {
            Ok(replies) => replies.iter().for_each(check_server_msg),
            Err(e) => assert!((400..600).contains(&e.code.http_status()), "{e:?}"),
        }
        let _ = hub.handle_post_box_poll(&session, &token, 0, at(2));
    }
    drain(&mut hub, |_| {});
    hub.handle_timeout(at(120));
    drain(&mut hub, |_| {});
}

fn drain(hub: &mut Hub, mut also: impl FnMut(&Output)) {
    while let Some(o) = hub.poll_output() {
        match &o {
            Output::Send { msg, .. } => check_server_msg(msg),
            Output::Close { code, .. } => assert!(code.is_fatal(), "close for {code}"),
            _ => {}
        }
        also(&o);
    }
}

fn check_server_msg(msg: &ServerMsg) {
    let text = serde_json::to_string(msg).expect("a server message serialises");
    if let ServerMsg::Error(e) = msg {
        assert!((400..600).contains(&e.code.http_status()), "{text}");
    }
}

/// The committed corpus of cargo-fuzz target `target` (`fuzz/corpus/<target>/` in the source
/// tree), sorted by file name: `(name, bytes)`. For the stable replays of the signalling crates.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name.unwrap_or_default(), data)
        })
        .collect()
}

/// `seed` with `edits` applied in order, as a mutation-based fuzzer would: `(position, byte,
/// op)` replaces (op 0), inserts (op 1) or removes (op 2) the byte at `position` modulo the
/// length; the property runs draw the edits.
pub fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for &(at, byte, op) in edits {
        let i = at % (m.len() + 1);
        match op % 3 {
            0 if i < m.len() => m[i] = byte,
            2 if i < m.len() => {
                m.remove(i);
            }
            _ => m.insert(i, byte),
        }
    }
    m
}
