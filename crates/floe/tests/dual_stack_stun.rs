//! RFC 5780 NAT discovery on IPv4 and IPv6 in one process (issue 10 §3): `--alternate-ip` once per
//! family; every listening address with an alternate of its family runs discovery, the others
//! answer plain Binding. floe runs in a network namespace this test creates, with two addresses
//! of each family on a veth pair inside it (11.0.0.10/.11 and 2000:1::10/::11: global unicast,
//! used only inside the namespace, which has no route out). The client is floe's own RFC 5780
//! client (`floe stun --nat`) for both families and coturn's `turnutils_natdiscovery` for IPv4.
//!
//! Needs root and iproute2 (CI runs as root; ./test.sh installs iproute2). Not root: the test
//! fails with a message saying so; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::process::{Output, Stdio};

use common::{require, Netns, Proc};

const FLOE: &str = env!("CARGO_BIN_EXE_floe");
const V4: &str = "11.0.0.10";
const V4_ALT: &str = "11.0.0.11";
const V6: &str = "2000:1::10";
const V6_ALT: &str = "2000:1::11";
const PORT: u16 = 3478;

/// The test's namespace with a veth pair carrying the four addresses.
fn lab(tag: &str) -> Netns {
    let ns = Netns::new(&format!("floe-ds-{tag}"));
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
        &["addr", "add", &format!("{V4}/24"), "dev", "v0"],
        &["addr", "add", &format!("{V4_ALT}/24"), "dev", "v0"],
        &[
            "-6",
            "addr",
            "add",
            &format!("{V6}/64"),
            "dev",
            "v0",
            "nodad",
        ],
        &[
            "-6",
            "addr",
            "add",
            &format!("{V6_ALT}/64"),
            "dev",
            "v0",
            "nodad",
        ],
    ] {
        ns.ip(args);
    }
    ns
}

impl Netns {
    /// Starts `floe turn` inside, waiting (bounded) until it answers plain Binding on each of
    /// `ready`.
    fn floe_turn(&self, args: &[&str], ready: &[String]) -> Proc {
        let child = self
            .command(FLOE, &["turn", "--user", "alice:pw"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start floe turn");
        let proc = Proc(child);
        for addr in ready {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            loop {
                let (ok, _) = self.floe_stun(&[addr, "--timeout", "1"]);
                if ok {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "floe did not answer at {addr}"
                );
            }
        }
        proc
    }

    /// Runs `floe stun ARGS` inside (bounded by its own timeout).
    fn floe_stun(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["stun"];
        full.extend_from_slice(args);
        text(self.command(FLOE, &full).output().expect("run floe stun"))
    }
}

fn text(out: Output) -> (bool, String) {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), t)
}

fn v4() -> String {
    format!("{V4}:{PORT}")
}

fn v6() -> String {
    format!("[{V6}]:{PORT}")
}

#[test]
fn rfc5780_discovery_on_both_families_in_one_process() {
    let ns = lab("both");
    let _floe = ns.floe_turn(
        &[
            "--listen",
            &v4(),
            "--listen",
            &v6(),
            "--alternate-ip",
            V4_ALT,
            "--alternate-ip",
            V6_ALT,
        ],
        &[v4(), v6()],
    );
    for (server, other) in [
        (v4(), format!("other address: {V4_ALT}:{}", PORT + 1)),
        (v6(), format!("other address: [{V6_ALT}]:{}", PORT + 1)),
    ] {
        let (ok, out) = ns.floe_stun(&["--nat", &server, "--timeout", "2"]);
        assert!(ok, "floe stun --nat {server} failed:\n{out}");
        assert!(out.contains(&other), "{server}: expected {other:?}:\n{out}");
        for line in ["mapping behaviour: no NAT", "filtering behaviour: no NAT"] {
            assert!(out.contains(line), "{server}: expected {line:?}:\n{out}");
        }
    }
    // coturn's client agrees on IPv4.
    require("turnutils_natdiscovery");
    let (_, out) = text(
        ns.command(
            "timeout",
            &[
                "30",
                "turnutils_natdiscovery",
                "-m",
                "-f",
                "-p",
                &PORT.to_string(),
                V4,
            ],
        )
        .output()
        .expect("run turnutils_natdiscovery"),
    );
    for want in [
        format!("Other addr: : {V4_ALT}:{}", PORT + 1),
        "NAT with Endpoint Independent Mapping!".to_owned(),
        "NAT with Endpoint Independent Filtering!".to_owned(),
    ] {
        assert!(
            out.contains(&want),
            "turnutils_natdiscovery on IPv4: expected {want:?}:\n{out}"
        );
    }
}

#[test]
fn a_family_without_an_alternate_answers_plain_binding() {
    let ns = lab("v4alt");
    let _floe = ns.floe_turn(
        &[
            "--listen",
            &v4(),
            "--listen",
            &v6(),
            "--alternate-ip",
            V4_ALT,
        ],
        &[v4(), v6()],
    );
    let (ok, out) = ns.floe_stun(&["--nat", &v4(), "--timeout", "2"]);
    assert!(ok, "IPv4 discovery failed:\n{out}");
    // IPv6 has no alternate: plain Binding works, discovery is refused clearly.
    let (ok, out) = ns.floe_stun(&[&v6(), "--timeout", "2"]);
    assert!(
        ok && out.contains(&format!("mapped address: [{V6}]:")),
        "{out}"
    );
    let (ok, out) = ns.floe_stun(&["--nat", &v6(), "--timeout", "2"]);
    assert!(!ok, "IPv6 discovery must fail without an alternate:\n{out}");
    assert!(
        !out.contains("other address"),
        "no OTHER-ADDRESS without an alternate:\n{out}"
    );
}
