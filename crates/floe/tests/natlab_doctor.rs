//! `floe doctor` in the NAT lab (issue 13 §9): run from a host on the lab's public segment
//! against a working deployment and against deliberately broken ones, it must pass the working
//! one and name each breakage with its fix:
//!
//! 1. floe behind a 1:1 NAT without `--external-ip`: it hands out its private address;
//! 2. the relay port range dropped by the server's firewall;
//! 3. the signalling server minting TURN credentials with a secret the TURN server does not
//!    accept;
//! 4. TURN over TCP blocked (connections refused) while UDP works.
//!
//! floe runs with its defaults otherwise (no `--allow-peer`: the lab's public segment is global
//! unicast). Needs root, iproute2, iptables and conntrack, like the rest of the lab.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;
#[path = "natlab/mod.rs"]
mod natlab;

use natlab::{Lab, FLOE, HTTP_PORT, JWT_SECRET, PORT, SERVER_IP, SERVER_PRIVATE_IP};

/// Runs `floe doctor` for the lab's signalling server from a public host: (exit ok, output).
fn doctor(lab: &mut Lab, extra: &[&str]) -> (bool, String) {
    let host = lab.public_host("doctor");
    let token = lab.token("any", "doctor");
    let url = format!("http://{SERVER_IP}:{HTTP_PORT}");
    let mut args = vec![
        "doctor",
        url.as_str(),
        "--token",
        token.as_str(),
        "--timeout",
        "2",
    ];
    args.extend_from_slice(extra);
    let (ok, text) = lab.floe(&host.ns, &args);
    // Shown with --nocapture (docs/operations.md quotes it).
    println!("floe doctor:\n{text}");
    (ok, text)
}

/// Runs `iptables ARGS` in the server's namespace.
fn server_iptables(lab: &Lab, args: &[&str]) {
    let out = lab
        .command(&lab.server_ns.clone(), "iptables")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_working_deployment_passes_every_check() {
    let mut lab = Lab::new();
    lab.serve_peers(&[]);
    let (cert, _) = lab.cert();
    let (ok, text) = doctor(&mut lab, &["--ca-file", &cert]);
    assert!(ok, "{text}");
    assert!(text.contains("0 problems"), "{text}");
    // Every transport allocated and relayed both ways; the TLS certificate was read.
    for what in [
        format!("turn:{SERVER_IP}:{PORT} (udp): relays both ways"),
        format!("turn:{SERVER_IP}:{PORT} (tcp): relays both ways"),
        format!("turns:{SERVER_IP}:5349 (tls): relays both ways"),
        format!("turns:{SERVER_IP}:5349 (tls): certificate for {SERVER_IP} valid until"),
        format!("stun:{SERVER_IP}:{PORT} (udp): answers"),
    ] {
        assert!(text.contains(&what), "{what} missing:\n{text}");
    }
}

#[test]
fn behind_a_nat_without_external_ip_it_names_the_flag_and_the_address() {
    let mut lab = Lab::with_server_behind_nat();
    // What an operator does first on a cloud VM: listen on the private address, nothing else.
    let bind = SERVER_PRIVATE_IP.to_string();
    let mut cmd = lab.command(&lab.server_ns.clone(), FLOE);
    cmd.args([
        "serve",
        "--listen",
        &format!("{bind}:{PORT}"),
        "--http",
        &format!("{bind}:{HTTP_PORT}"),
        "--jwt-secret",
        JWT_SECRET,
        "--user",
        "doctor:pw",
    ]);
    let id = lab.spawn_logged("floe serve", cmd);
    lab.wait_for_output(
        id,
        &format!("listening on http://{bind}:{HTTP_PORT}"),
        std::time::Duration::from_secs(20),
    );
    let (ok, text) = doctor(&mut lab, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("--external-ip {SERVER_IP}"))
            && text.contains(&format!("{SERVER_PRIVATE_IP} is a private address")),
        "{text}"
    );
    // Given the public address by hand (as a client configured with `turn:11.0.0.10` would
    // be), the TURN server answers, but the relayed address it advertises is private.
    let host = lab.public_host("doctor2");
    let server = format!("turn:{SERVER_IP}:{PORT}");
    let (ok, text) = lab.floe(
        &host.ns,
        &[
            "doctor",
            "--ice-server",
            &server,
            "--ice-username",
            "doctor",
            "--ice-credential",
            "pw",
            "--timeout",
            "2",
        ],
    );
    println!("floe doctor --ice-server:\n{text}");
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("the relayed address {SERVER_PRIVATE_IP}:"))
            && text.contains(&format!("--external-ip {SERVER_IP}")),
        "{text}"
    );
}

#[test]
fn a_firewalled_relay_port_range_is_named() {
    let mut lab = Lab::new();
    lab.serve(&[]);
    // The relay range (floe's default) dropped; the listening port stays open.
    server_iptables(
        &lab,
        &[
            "-w",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "49152:65535",
            "-j",
            "DROP",
        ],
    );
    let (ok, text) = doctor(&mut lab, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("never came out of the allocation") && text.contains("--relay-ports"),
        "{text}"
    );
    assert!(
        text.contains(&format!("stun:{SERVER_IP}:{PORT} (udp): answers")),
        "{text}"
    );
}

#[test]
fn a_turn_secret_mismatch_is_named() {
    let mut lab = Lab::new();
    // The signalling server mints with one secret, the TURN server accepts another.
    lab.serve(&[
        "--auth-secret",
        "the-turn-servers-secret",
        "--turn-secret",
        "another-secret",
    ]);
    let (ok, text) = doctor(&mut lab, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("rejects the credentials /v1/ice-servers handed out")
            && text.contains("--turn-secret"),
        "{text}"
    );
}

#[test]
fn turn_over_tcp_refused_is_named() {
    let mut lab = Lab::new();
    lab.serve(&[]);
    server_iptables(
        &lab,
        &[
            "-w",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &PORT.to_string(),
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );
    let (ok, text) = doctor(&mut lab, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "turn:{SERVER_IP}:{PORT} (tcp): {SERVER_IP}:{PORT} refused"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("turn:{SERVER_IP}:{PORT} (udp): relays both ways")),
        "{text}"
    );
}
