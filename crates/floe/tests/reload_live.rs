//! Reload without drops, the parts beyond credentials and certificates (issue 13 §6): the log
//! level, TURN limits and quotas, and the signalling settings, on real `floe serve` and
//! `floe signal` processes with live relayed traffic and connected WebSocket peers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::{free_tcp, http, printed_http_addr, wait_for_tcp, Proc, TempDir};

/// `POST /v1/reload`, asserting the status; the body.
fn reload(admin: SocketAddr, status: u16) -> String {
    let (got, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(got, status, "{body}");
    body
}

/// Starts `floe ARGS...` with stderr into `log` (so the test reads what it logged) and returns
/// it with the HTTP address it printed, once its operations listener `admin` answers.
fn start(args: &[&str], admin: SocketAddr, log: &str) -> (Proc, SocketAddr) {
    let stderr = std::fs::File::create(log).unwrap();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(args)
        .env_remove("FLOE_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let http = printed_http_addr(&mut child);
    let proc = Proc(child);
    wait_for_tcp(admin);
    (proc, http)
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
    let admin = free_tcp();
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    let (_floe, _http) = start(
        &[
            "signal",
            "--config",
            &file,
            "--http",
            "127.0.0.1:0",
            "--admin",
            &admin.to_string(),
        ],
        admin,
        &log,
    );
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
