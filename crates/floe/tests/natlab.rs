//! The NAT lab (issue 5 §2), first part: each NAT kind, built with network namespaces and
//! iptables (see `natlab/mod.rs` and docs/natlab.md), verified empirically with floe's own
//! RFC 5780 client (`floe stun --nat`) against `floe serve --alternate-ip`, and cross-checked with
//! coturn's `turnutils_natdiscovery`.
//!
//! Needs root, iproute2, iptables and conntrack (CI runs as root; ./test.sh installs them). Not
//! root: the tests fail with a message saying so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;
#[path = "natlab/mod.rs"]
mod natlab;

use natlab::{Host, Lab, Nat, ALICE_NET, ALT_IP, BOB_NET, PORT, SERVER_IP};

/// What `floe stun --nat` printed, parsed.
struct NatReport {
    text: String,
    local_port: u16,
    mapped: std::net::SocketAddr,
    mapping: String,
    filtering: String,
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("`{name}` missing from floe stun --nat output:\n{text}"))
        .trim()
}

/// Runs `floe stun --nat` against floe's primary address from `host`.
fn floe_stun_nat(lab: &Lab, host: &Host) -> NatReport {
    let server = format!("{SERVER_IP}:{PORT}");
    let (ok, text) = lab.floe(&host.ns, &["stun", "--nat", &server, "--timeout", "2"]);
    // Shown with --nocapture (docs/natlab.md quotes it).
    println!("floe stun --nat from {} ({}):\n{text}", host.ip, host.ns);
    assert!(ok, "floe stun --nat failed from {}:\n{text}", host.ip);
    let local: std::net::SocketAddr = field(&text, "local address:").parse().unwrap();
    NatReport {
        local_port: local.port(),
        mapped: field(&text, "mapped address:").parse().unwrap(),
        mapping: field(&text, "mapping behaviour:").to_owned(),
        filtering: field(&text, "filtering behaviour:").to_owned(),
        text,
    }
    .checked()
}

impl NatReport {
    fn checked(self) -> NatReport {
        assert!(
            self.text
                .contains(&format!("other address: {ALT_IP}:{}", PORT + 1)),
            "OTHER-ADDRESS is not the alternate IP and port:\n{}",
            self.text
        );
        self
    }
}

/// Runs coturn's `turnutils_natdiscovery -m -f` against floe from `host` (bounded: 30 s).
fn coturn_natdiscovery(lab: &Lab, host: &Host) -> String {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v turnutils_natdiscovery"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "turnutils_natdiscovery is not installed: run ./test.sh, which installs coturn"
    );
    let out = lab
        .command(&host.ns, "timeout")
        .args([
            "30",
            "turnutils_natdiscovery",
            "-m",
            "-f",
            "-p",
            &PORT.to_string(),
            &SERVER_IP.to_string(),
        ])
        .output()
        .expect("run turnutils_natdiscovery");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("turnutils_natdiscovery -m -f from {}:\n{text}", host.ip);
    text
}

#[test]
fn cone_nat_is_endpoint_independent_mapping_and_port_restricted_filtering() {
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    lab.serve(&[]);
    let r = floe_stun_nat(&lab, &alice.hosts[0]);
    assert_eq!(r.mapping, "endpoint-independent", "{}", r.text);
    assert_eq!(r.filtering, "address-and-port-dependent", "{}", r.text);
    assert_eq!(r.mapped.ip(), alice.wan_ip, "{}", r.text);
    // MASQUERADE keeps the source port when it is free, and nothing else uses it here.
    assert_eq!(r.mapped.port(), r.local_port, "{}", r.text);
}

#[test]
fn coturn_natdiscovery_agrees_on_the_cone_nat() {
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    lab.serve(&[]);
    let text = coturn_natdiscovery(&lab, &alice.hosts[0]);
    assert!(
        text.contains(&format!("UDP reflexive addr: {}:", alice.wan_ip)),
        "coturn saw no reflexive address on the router's WAN:\n{text}"
    );
    assert!(
        text.contains("NAT with Endpoint Independent Mapping!"),
        "coturn disagrees on the mapping:\n{text}"
    );
    assert!(
        text.contains("NAT with Address and Port Dependent Filtering!"),
        "coturn disagrees on the filtering:\n{text}"
    );
}

#[test]
fn symmetric_nat_is_address_and_port_dependent_mapping() {
    let mut lab = Lab::new();
    let bob = lab.site("bob", BOB_NET, Nat::Symmetric, 1);
    lab.serve(&[]);
    let r = floe_stun_nat(&lab, &bob.hosts[0]);
    assert_eq!(r.mapping, "address-and-port-dependent", "{}", r.text);
    assert_eq!(r.filtering, "address-and-port-dependent", "{}", r.text);
    assert_eq!(r.mapped.ip(), bob.wan_ip, "{}", r.text);
}

#[test]
fn coturn_natdiscovery_agrees_on_the_symmetric_nat() {
    let mut lab = Lab::new();
    let bob = lab.site("bob", BOB_NET, Nat::Symmetric, 1);
    lab.serve(&[]);
    let text = coturn_natdiscovery(&lab, &bob.hosts[0]);
    assert!(
        text.contains("NAT with Address and Port Dependent Mapping!"),
        "coturn disagrees on the mapping:\n{text}"
    );
    assert!(
        text.contains("NAT with Address and Port Dependent Filtering!"),
        "coturn disagrees on the filtering:\n{text}"
    );
}

#[test]
fn snat_per_destination_address_is_address_dependent_mapping() {
    let mut lab = Lab::new();
    let bob = lab.site("bob", BOB_NET, Nat::AddressDependent, 1);
    lab.serve(&[]);
    let r = floe_stun_nat(&lab, &bob.hosts[0]);
    assert_eq!(r.mapping, "address-dependent", "{}", r.text);
    assert_eq!(r.filtering, "address-and-port-dependent", "{}", r.text);
    assert_eq!(r.mapped.ip(), bob.wan_ip, "{}", r.text);
    assert!((20000..30000).contains(&r.mapped.port()), "{}", r.text);
}

#[test]
fn full_cone_nat_is_endpoint_independent_both_ways() {
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::FullCone, 1);
    lab.serve(&[]);
    let r = floe_stun_nat(&lab, &alice.hosts[0]);
    assert_eq!(r.mapping, "endpoint-independent", "{}", r.text);
    assert_eq!(r.filtering, "endpoint-independent", "{}", r.text);
    assert_eq!(r.mapped.ip(), alice.wan_ip, "{}", r.text);
    assert_eq!(r.mapped.port(), r.local_port, "{}", r.text);
}

#[test]
fn host_on_the_public_segment_sees_no_nat() {
    let mut lab = Lab::new();
    let host = lab.public_host("public");
    lab.serve(&[]);
    let r = floe_stun_nat(&lab, &host);
    assert!(r.mapping.starts_with("no NAT"), "{}", r.text);
    assert!(r.filtering.starts_with("no NAT"), "{}", r.text);
    assert_eq!(
        r.mapped,
        std::net::SocketAddr::from((host.ip, r.local_port)),
        "{}",
        r.text
    );
}

#[test]
fn udp_blocked_times_out_over_udp_and_gets_out_over_tcp() {
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::UdpBlocked, 1);
    lab.serve(&[]);
    let host = &alice.hosts[0];
    let server = format!("{SERVER_IP}:{PORT}");
    let (ok, text) = lab.floe(&host.ns, &["stun", "--nat", &server, "--timeout", "2"]);
    // Shown with --nocapture (docs/natlab.md quotes both).
    println!("$ floe stun --nat {server} --timeout 2\n{text}");
    assert!(!ok, "UDP got through the blocking router:\n{text}");
    assert!(
        text.contains(&format!("no response from {server} within the timeout")),
        "{text}"
    );
    let (ok, text) = lab.floe(&host.ns, &["stun", "--tcp", &server, "--timeout", "2"]);
    println!("$ floe stun --tcp {server} --timeout 2\n{text}");
    assert!(
        ok,
        "floe stun --tcp failed through the UDP-blocking router:\n{text}"
    );
    assert!(
        text.contains(&format!("mapped address: {}:", alice.wan_ip)),
        "{text}"
    );
}

#[test]
fn changing_a_routers_rules_changes_its_behaviour() {
    // Both sites on one lab, and the same router switched from cone to symmetric: set_nat
    // flushes conntrack, so the old mapping does not keep the old behaviour.
    let mut lab = Lab::new();
    let mut alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    let bob = lab.site("bob", BOB_NET, Nat::FullCone, 1);
    lab.serve(&[]);
    let r = floe_stun_nat(&lab, &bob.hosts[0]);
    assert_eq!(r.filtering, "endpoint-independent", "{}", r.text);
    assert_eq!(r.mapped.ip(), bob.wan_ip, "{}", r.text);
    lab.set_nat(&mut alice, Nat::Symmetric);
    let r = floe_stun_nat(&lab, &alice.hosts[0]);
    assert_eq!(r.mapping, "address-and-port-dependent", "{}", r.text);
    assert_eq!(r.mapped.ip(), alice.wan_ip, "{}", r.text);
}

#[test]
fn a_failing_test_leaves_no_namespace_behind() {
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let mut lab = Lab::new();
        lab.site("alice", ALICE_NET, Nat::Cone, 2);
        let pid = lab.serve(&[]);
        *prefix.lock().unwrap() = format!("{}-{pid}", lab.prefix());
        panic!("a test failing in the middle of its lab");
    });
    assert!(result.is_err());
    let recorded = prefix.into_inner().unwrap();
    let (prefix, pid) = recorded.rsplit_once('-').expect("the lab was built");
    let prefix = format!("{prefix}-");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "floe serve (PID {pid}) still runs"
    );
    let left = natlab::namespaces_with_prefix(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
}
