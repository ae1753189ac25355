//! Reload without drops, the parts beyond credentials and certificates (issue 13 §6): the log
//! level, TURN limits and quotas, and the signalling settings, on real `floe serve` and
//! `floe signal` processes with live relayed traffic and connected WebSocket peers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

#[path = "../../turn-server/tests/common/client.rs"]
mod client;
mod common;
#[path = "common/turn_pair.rs"]
mod turn_pair;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};

use client::{Client, REALM};
use turn_pair::{relaying_pair, relays};

use common::{
    free_port_pair, free_tcp, http, printed_http_addr, wait_for_stun, wait_for_tcp, Proc, TempDir,
};

/// `POST /v1/reload`, asserting the status; the body.
fn reload(admin: SocketAddr, status: u16) -> String {
    let (got, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(got, status, "{body}");
    body
}

/// Starts `floe SUBCOMMAND --config FILE` with HTTP on a free port and stderr into `log` (so
/// the test reads what it logged); returns it with its HTTP and operations addresses once both
/// answer.
fn start(subcommand: &str, file: &str, log: &str) -> (Proc, SocketAddr, SocketAddr) {
    let admin = free_tcp();
    let stderr = std::fs::File::create(log).unwrap();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([subcommand, "--config", file, "--http", "127.0.0.1:0"])
        .args(["--admin", &admin.to_string()])
        .env_remove("FLOE_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let http = printed_http_addr(&mut child);
    let proc = Proc(child);
    wait_for_tcp(admin);
    (proc, http, admin)
}

/// How many `admin request` debug lines `log` holds.
fn debug_lines(log: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches("admin request")
        .count()
}

#[test]
fn a_reload_changes_the_log_level_of_floe_signal() {
    let dir = TempDir::new("floe-reload-log");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    let (_floe, _http, admin) = start("signal", &file, &log);
    // At `warn`, an admin request logs nothing.
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert_eq!(debug_lines(&log), 0);

    // Raised to debug for floe's own modules: the request is logged (before its answer is sent).
    std::fs::write(&file, "log = \"warn,floe=debug\"\n").unwrap();
    let body = reload(admin, 200);
    assert!(body.contains("log filter"), "{body}");
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    let raised = debug_lines(&log);
    assert!(raised >= 1, "{}", std::fs::read_to_string(&log).unwrap());

    // An invalid filter keeps the old one (400, the reason given).
    std::fs::write(&file, "log = \"floe=loud\"\n").unwrap();
    let body = reload(admin, 400);
    assert!(body.contains("log filter"), "{body}");
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert!(debug_lines(&log) > raised);

    // Lowered again: no more debug lines.
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    reload(admin, 200);
    let lowered = debug_lines(&log);
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert_eq!(debug_lines(&log), lowered);
}

/// `floe serve`'s file: TURN on `turn` with alice (realm of the test client), `turn_extra` in
/// `[turn]`, `signal` as the `[signal]` section, `top` before the sections.
fn serve_config(path: &str, turn: SocketAddr, top: &str, turn_extra: &str, signal: &str) {
    let text = format!(
        "{top}\nlisten = [\"{turn}\"]\n[turn]\nrealm = \"{REALM}\"\nusers = [\"alice:pw\"]\n{turn_extra}\n[signal]\n{signal}\n"
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn floe_serve_reloads_limits_with_live_allocations_relaying() {
    let dir = TempDir::new("floe-reload-serve");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    let turn = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let write = |top: &str, turn_extra: &str| serve_config(&file, turn, top, turn_extra, "");
    write("log = \"warn\"", "max_allocations_per_user = 10");
    let (_floe, _http, admin) = start("serve", &file, &log);
    wait_for_stun(turn);
    let (mut a, a_relay, mut b, b_relay) = relaying_pair(turn);
    assert!(relays(&mut a, &mut b, b_relay, b"before", 1));
    assert!(relays(&mut b, &mut a, a_relay, b"before back", 2));

    // (a) alice's allocation quota lowered to the two she holds: a third Allocate is refused
    // with 486 (RFC 8656 §7.2), the live two keep relaying both ways.
    write("log = \"warn\"", "max_allocations_per_user = 2");
    let body = reload(admin, 200);
    assert!(!body.contains("turn.max_allocations_per_user"), "{body}");
    assert_eq!(Client::udp(turn).try_allocate(), Err(486));
    assert!(relays(&mut a, &mut b, b_relay, b"after", 3));
    assert!(relays(&mut b, &mut a, a_relay, b"after back", 4));

    // Raised again: a third allocation is granted.
    write("log = \"warn\"", "max_allocations_per_user = 3");
    reload(admin, 200);
    assert!(Client::udp(turn).try_allocate().is_ok());

    // (c) An invalid file changes nothing: 400 with the reason, the old limit still in force.
    write("log = \"warn\"", "max_allocations_per_user = \"lots\"");
    let body = reload(admin, 400);
    assert!(body.contains("max_allocations_per_user"), "{body}");
    assert_eq!(Client::udp(turn).try_allocate(), Err(486));
    assert!(relays(&mut a, &mut b, b_relay, b"after a bad file", 5));

    // (d) The log level, in the same process.
    write("log = \"warn,floe=debug\"", "max_allocations_per_user = 3");
    reload(admin, 200);
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert!(debug_lines(&log) >= 1);
    assert!(relays(&mut a, &mut b, b_relay, b"at the end", 6));
}
