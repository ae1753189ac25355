//! Reload without drops (issue 13 §6) on a real `floe turn`: two allocations relay to each other
//! while the configuration file is reloaded (SIGHUP, then `POST /v1/reload`). A valid reload
//! keeps them relaying; an invalid file changes nothing and says why; a tightened deny list
//! removes the permissions it now refuses at once; a changed password ends the allocations made
//! with the old one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

#[path = "../../turn-server/tests/common/client.rs"]
mod client;
mod common;
#[path = "common/turn_pair.rs"]
mod turn_pair;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::REALM;
use common::{free_port_pair, free_tcp, http, wait_for_stun, Proc, TempDir};
use turn_pair::{relaying_pair, relays};

/// The `[turn]` section of the test's file: the realm the test client uses, and `extra`.
fn write_config(path: &str, turn: SocketAddr, extra: &str) {
    let text = format!("listen = [\"{turn}\"]\n[turn]\nrealm = \"{REALM}\"\n{extra}\n");
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_reload_keeps_live_allocations_and_applies_credentials_and_policy() {
    let dir = TempDir::new("floe-reload");
    let file = dir.file("floe.toml");
    let turn = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let admin = free_tcp();
    write_config(&file, turn, "users = [\"alice:pw\"]");
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["turn", "-c", &file, "--admin", &admin.to_string()])
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let floe = Proc(child);
    wait_for_stun(turn);

    // Two allocations of alice relaying to each other (relay to relay inside the server).
    let (mut a, _, mut b, b_relay) = relaying_pair(turn);
    assert!(relays(&mut a, &mut b, b_relay, b"before", 1));

    // 1. SIGHUP with another user added: live allocations keep relaying.
    write_config(&file, turn, "users = [\"alice:pw\", \"carol:pw2\"]");
    let pid = floe.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http(admin, "GET", "/metrics");
        if metrics.contains("floe_reloads_total{result=\"ok\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload after SIGHUP:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(relays(&mut a, &mut b, b_relay, b"after sighup", 2));

    // 2. An invalid file changes nothing and says why (the password change in it included).
    write_config(
        &file,
        turn,
        "users = [\"alice:other\"]\nrelay_ports = \"9000-10\"",
    );
    let (status, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("relay ports"), "{body}");
    // `floe admin reload` says the same and fails.
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["admin", "--url", &format!("http://{admin}"), "reload"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("relay ports"));
    assert!(relays(&mut a, &mut b, b_relay, b"after a bad file", 3));

    // 3. A deny range over the relay's own address: the permissions it refuses go at once.
    write_config(
        &file,
        turn,
        "users = [\"alice:pw\"]\ndeny_peers = [\"127.0.0.1/32\"]",
    );
    let (status, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("2 permission(s)"), "{body}");
    assert!(!relays(&mut a, &mut b, b_relay, b"denied", 4));

    // 4. alice's password changed: her allocations end; a listed key changed but not
    // reloadable is named.
    write_config(
        &file,
        turn,
        "users = [\"alice:changed\"]\nexternal_ips = [\"127.0.0.2\"]",
    );
    let (status, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("2 allocation(s) ended"), "{body}");
    assert!(body.contains("turn.external_ips"), "{body}");
    let (_, list) = http(admin, "GET", "/v1/allocations");
    assert!(!list.contains("alice"), "{list}");
}

/// The subject CN of the certificate a TLS listener presents (openssl s_client).
fn presented_cn(addr: SocketAddr) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "timeout 10 openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
            ),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_reload_swaps_the_tls_certificate_for_new_connections() {
    let dir = TempDir::new("floe-reload-tls");
    let file = dir.file("floe.toml");
    let (cert1, key1) = (dir.file("one.pem"), dir.file("one.key"));
    let (cert2, key2) = (dir.file("two.pem"), dir.file("two.key"));
    common::openssl_cert(&cert1, &key1, "first", &["subjectAltName=IP:127.0.0.1"]);
    common::openssl_cert(&cert2, &key2, "second", &["subjectAltName=IP:127.0.0.1"]);
    let turn = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let tls = free_tcp();
    let admin = free_tcp();
    let config = |cert: &str, key: &str| {
        format!(
            "users = [\"alice:pw\"]\ntls_listen = [\"{tls}\"]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\""
        )
    };
    write_config(&file, turn, &config(&cert1, &key1));
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["turn", "-c", &file, "--admin", &admin.to_string()])
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _floe = Proc(child);
    wait_for_stun(turn);
    assert!(presented_cn(tls).contains("first"), "{}", presented_cn(tls));
    // A TLS client connected before the reload stays connected.
    let kept = TcpStream::connect(tls).unwrap();
    write_config(&file, turn, &config(&cert2, &key2));
    let (status, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        presented_cn(tls).contains("second"),
        "{}",
        presented_cn(tls)
    );
    // A key that does not match its certificate: refused, the second certificate stays.
    write_config(&file, turn, &config(&cert1, &key2));
    let (status, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        presented_cn(tls).contains("second"),
        "{}",
        presented_cn(tls)
    );
    drop(kept);
}
