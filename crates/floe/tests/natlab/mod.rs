//! The NAT lab (issue 5 §2): Linux network namespaces joined by veth links, with iptables NAT
//! routers, so tests can run `floe` and its clients behind real NATs on one machine.
//!
//! ```text
//!   server ns: floe serve, 203.0.113.10 + 203.0.113.11 (RFC 5780 needs two addresses)
//!        |
//!   inet ns: bridge br0 = the public segment 203.0.113.0/24 ("the internet")
//!        |                         |                          |
//!   router ns (wan 203.0.113.100)  router ns (203.0.113.101)  public host ns (203.0.113.50)
//!        | lan bridge 192.0.2.1/24      | 198.51.100.1/24
//!   Alice's host(s) 192.0.2.10..     Bob's host(s) 198.51.100.10..
//! ```
//!
//! Namespace names are `fnl<pid>x<n>-<role>`, unique per test process and lab, so parallel tests
//! and concurrent test runs never clash. A [`Lab`] tears itself down when dropped (also when a
//! test panics): it kills the processes it started by PID, then any process left in its
//! namespaces, then deletes its namespaces by name, which removes their veths, bridges, iptables
//! rules and conntrack tables with them. [`Lab::new`] also removes leftovers of lab runs whose
//! process no longer exists (a test binary killed with SIGKILL cannot run its destructors).
//! No traffic leaves the lab's namespaces: nothing is attached to the root namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // test helpers panic on setup failure

use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `floe` binary under test.
pub const FLOE: &str = env!("CARGO_BIN_EXE_floe");
/// floe's primary public address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// floe's alternate public address (RFC 5780 `--alternate-ip`).
pub const ALT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// floe's STUN/TURN port (the alternate port is PORT + 1).
pub const PORT: u16 = 3478;
/// Prefix of every lab namespace name.
const PREFIX: &str = "fnl";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// How a site's router treats traffic (RFC 4787 terms; see docs/natlab.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `MASQUERADE`: endpoint-independent mapping, address-and-port-dependent filtering
    /// (a "port-restricted cone").
    Cone,
    /// `MASQUERADE --random-fully`: address-and-port-dependent mapping ("symmetric").
    Symmetric,
    /// One `SNAT --to-source WAN:RANGE` per destination address (floe's two addresses; other
    /// destinations get `MASQUERADE`): address-dependent mapping.
    AddressDependent,
    /// `MASQUERADE` plus a `DNAT` of all inbound UDP to the first host: endpoint-independent
    /// mapping and filtering ("full cone").
    FullCone,
    /// `MASQUERADE` plus `FORWARD -p udp -j DROP`: no UDP gets out, TCP does.
    UdpBlocked,
}

/// A namespace with one address, where programs can run.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace name (for `ip netns exec`).
    pub ns: String,
    /// The host's address.
    pub ip: Ipv4Addr,
}

/// A private network behind its own NAT router.
#[derive(Debug, Clone)]
pub struct Site {
    /// The router's namespace.
    pub router: String,
    /// The router's public (WAN) address.
    pub wan_ip: Ipv4Addr,
    /// The router's address on the private network (the hosts' default gateway).
    pub lan_ip: Ipv4Addr,
    /// The hosts on the private network.
    pub hosts: Vec<Host>,
    /// The router's current behaviour.
    pub nat: Nat,
}

/// A lab: the public segment, floe's server namespace, and whatever sites a test adds.
pub struct Lab {
    prefix: String,
    /// Namespaces in creation order (deleted in reverse).
    namespaces: Vec<String>,
    /// Processes started in the lab, stopped by PID on drop.
    procs: Vec<Child>,
    next_public: u8,
    next_wan: u8,
    next_port: u32,
    /// The namespace of floe's server.
    pub server_ns: String,
    inet: String,
}

/// Runs a command, panicking with its output when it fails.
fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails (never skips) when the lab cannot run here.
fn require_root_and_tools() {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the NAT lab needs root (network namespaces, veth, iptables): run the tests as root, \
         as CI does (./test.sh)"
    );
    for tool in ["ip", "iptables", "conntrack"] {
        assert!(
            crate::common::has_tool(tool),
            "{tool} is not installed: the NAT lab needs iproute2, iptables and conntrack \
             (./test.sh installs them)"
        );
    }
}

/// The names of all network namespaces.
fn netns_list() -> Vec<String> {
    let out = sh("ip", &["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The lab namespaces currently present whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    netns_list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Kills every process left in namespace `ns` (by PID) and deletes the namespace.
fn destroy_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid.parse::<u32>().is_ok() {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// Removes the namespaces of earlier lab runs whose test process is gone.
fn remove_stale_labs() {
    for ns in namespaces_with_prefix(PREFIX) {
        let Some(pid) = ns[PREFIX.len()..]
            .split('x')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            destroy_namespace(&ns);
        }
    }
}

impl Lab {
    /// Builds the public segment and floe's server namespace (floe is not started yet; see
    /// [`Lab::serve`]).
    pub fn new() -> Lab {
        require_root_and_tools();
        remove_stale_labs();
        let prefix = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            inet: format!("{prefix}-inet"),
            server_ns: format!("{prefix}-server"),
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            next_public: 50,
            next_wan: 100,
            next_port: 0,
        };
        let inet = lab.inet.clone();
        lab.add_namespace(&inet);
        lab.ip(
            &inet,
            &["link", "add", "br0", "type", "bridge", "forward_delay", "0"],
        );
        lab.ip(&inet, &["link", "set", "br0", "up"]);
        let server = lab.server_ns.clone();
        lab.add_namespace(&server);
        lab.plug_into_internet(&server, "eth0");
        for ip in [SERVER_IP, ALT_IP] {
            lab.ip(
                &server,
                &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            );
        }
        lab
    }

    /// This lab's namespace name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `ip -n NS ARGS...`.
    fn ip(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    /// Runs `PROGRAM ARGS...` in namespace `ns` and checks it succeeded.
    fn exec_ok(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    fn add_namespace(&mut self, ns: &str) {
        sh("ip", &["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        self.ip(ns, &["link", "set", "lo", "up"]);
    }

    /// A veth from the public bridge to `ns`, named `ifname` there, up (no address yet).
    fn plug_into_internet(&mut self, ns: &str, ifname: &str) {
        let port = format!("p{}", self.next_port);
        self.next_port += 1;
        let inet = self.inet.clone();
        self.ip(
            &inet,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", ns,
            ],
        );
        self.ip(&inet, &["link", "set", &port, "master", "br0", "up"]);
        self.ip(ns, &["link", "set", ifname, "up"]);
    }

    /// A host directly on the public segment (no NAT), named `name`.
    pub fn public_host(&mut self, name: &str) -> Host {
        let ns = format!("{}-{name}", self.prefix);
        self.add_namespace(&ns);
        self.plug_into_internet(&ns, "eth0");
        let ip = Ipv4Addr::new(203, 0, 113, self.next_public);
        self.next_public += 1;
        self.ip(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        Host { ns, ip }
    }

    /// A site named `name`: `hosts` hosts on the private network `subnet`.0/24 (addresses .10,
    /// .11, ...) behind a router at `subnet`.1 whose WAN is on the public segment, with `nat`.
    pub fn site(&mut self, name: &str, subnet: [u8; 3], nat: Nat, hosts: usize) -> Site {
        assert!(hosts >= 1, "a site needs a host");
        let [a, b, c] = subnet;
        let router = format!("{}-{name}-router", self.prefix);
        self.add_namespace(&router);
        self.plug_into_internet(&router, "wan");
        let wan_ip = Ipv4Addr::new(203, 0, 113, self.next_wan);
        self.next_wan += 1;
        self.ip(
            &router,
            &["addr", "add", &format!("{wan_ip}/24"), "dev", "wan"],
        );
        let lan_ip = Ipv4Addr::new(a, b, c, 1);
        self.ip(
            &router,
            &["link", "add", "lan", "type", "bridge", "forward_delay", "0"],
        );
        self.ip(
            &router,
            &["addr", "add", &format!("{lan_ip}/24"), "dev", "lan"],
        );
        self.ip(&router, &["link", "set", "lan", "up"]);
        self.exec_ok(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let mut site_hosts = Vec::new();
        for i in 0..hosts {
            let ns = format!("{}-{name}{i}", self.prefix);
            self.add_namespace(&ns);
            let port = format!("h{i}");
            self.ip(
                &router,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            self.ip(&router, &["link", "set", &port, "master", "lan", "up"]);
            let ip = Ipv4Addr::new(a, b, c, 10 + u8::try_from(i).unwrap());
            self.ip(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            self.ip(&ns, &["link", "set", "eth0", "up"]);
            self.ip(
                &ns,
                &["route", "add", "default", "via", &lan_ip.to_string()],
            );
            site_hosts.push(Host { ns, ip });
        }
        let mut site = Site {
            router,
            wan_ip,
            lan_ip,
            hosts: site_hosts,
            nat,
        };
        self.set_nat(&mut site, nat);
        site
    }

    /// Replaces the router's rules with those of `nat` and flushes its conntrack table (old
    /// mappings would keep the old behaviour).
    pub fn set_nat(&self, site: &mut Site, nat: Nat) {
        let r = site.router.clone();
        let ipt = |args: &[&str]| {
            let mut all = vec!["-w"];
            all.extend_from_slice(args);
            self.exec_ok(&r, "iptables", &all);
        };
        ipt(&["-F"]);
        ipt(&["-t", "nat", "-F"]);
        if nat == Nat::AddressDependent {
            // Linux reuses an existing mapping of the same source only when it lies in the
            // rule's range, so disjoint ranges per destination address give a new mapping per
            // address and the same one for every port of that address.
            for (dst, range) in [(SERVER_IP, "20000-29999"), (ALT_IP, "30000-39999")] {
                let to = format!("{}:{range}", site.wan_ip);
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-p",
                    "udp",
                    "-d",
                    &dst.to_string(),
                    "-j",
                    "SNAT",
                    "--to-source",
                    &to,
                ]);
            }
        }
        let masquerade = [
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if nat == Nat::Symmetric {
            let mut rule = masquerade.to_vec();
            rule.push("--random-fully");
            ipt(&rule);
        } else {
            ipt(&masquerade);
        }
        // Unsolicited UDP to the router itself is dropped, not answered (docs/natlab.md: a
        // router's own conntrack entry would otherwise clash with a host's later mapping).
        ipt(&[
            "-A",
            "INPUT",
            "-i",
            "wan",
            "-p",
            "udp",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ]);
        match nat {
            Nat::Cone | Nat::Symmetric | Nat::AddressDependent => {}
            Nat::FullCone => {
                let to = site.hosts[0].ip.to_string();
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-i",
                    "wan",
                    "-p",
                    "udp",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &to,
                ]);
            }
            Nat::UdpBlocked => ipt(&["-A", "FORWARD", "-p", "udp", "-j", "DROP"]),
        }
        // `conntrack -F` exits 0 and prints to stderr; an empty table is fine too.
        self.exec_ok(&r, "conntrack", &["-F"]);
        site.nat = nat;
    }

    /// A command that runs `program` in namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `floe ARGS...` in `ns` and returns its exit status and stdout+stderr.
    pub fn floe(&self, ns: &str, args: &[&str]) -> (bool, String) {
        let out = self
            .command(ns, FLOE)
            .args(args)
            .output()
            .expect("run floe");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Starts a process in the lab; it is stopped (by PID) when the lab is dropped.
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = cmd.spawn().expect("start a lab process");
        let pid = child.id();
        self.procs.push(child);
        pid
    }

    /// Starts `floe serve` on SERVER_IP:PORT with `--alternate-ip ALT_IP` (plus `extra`
    /// arguments) in the server namespace and waits (bounded) until both the primary and the
    /// alternate address and port answer STUN.
    pub fn serve(&mut self, extra: &[&str]) -> u32 {
        let mut cmd = self.command(&self.server_ns.clone(), FLOE);
        cmd.args([
            "serve",
            "--listen",
            &format!("{SERVER_IP}:{PORT}"),
            "--alternate-ip",
            &ALT_IP.to_string(),
            "--http",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let pid = self.spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        for target in [
            format!("{SERVER_IP}:{PORT}"),
            format!("{ALT_IP}:{}", PORT + 1),
        ] {
            loop {
                let (ok, _) = self.floe(
                    &self.server_ns,
                    &["stun", "--timeout", "0.3", target.as_str()],
                );
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "floe serve did not answer STUN at {target} in the lab"
                );
                if let Some(status) = self.procs.last_mut().unwrap().try_wait().unwrap() {
                    panic!("floe serve exited early: {status}");
                }
            }
        }
        pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            destroy_namespace(ns);
        }
    }
}
