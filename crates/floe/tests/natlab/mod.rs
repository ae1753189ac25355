//! The NAT lab (issue 5 §2): Linux network namespaces joined by veth links, with iptables NAT
//! routers, so tests can run `floe` and its clients behind real NATs on one machine.
//!
//! ```text
//!   server ns: floe serve, 11.0.0.10 + 11.0.0.11 (RFC 5780 needs two addresses)
//!        |     (or, with Lab::with_server_behind_nat: floe on 10.9.0.10 behind a router
//!        |      doing 1:1 NAT for 11.0.0.10)
//!   inet ns: bridge br0 = the public segment 11.0.0.0/24 ("the internet")
//!        |                        |                       |
//!   router ns (wan 11.0.0.100)    router ns (11.0.0.101)  public host ns (11.0.0.50)
//!        | lan bridge 192.168.1.1/24   | 10.1.0.1/24
//!   Alice's host(s) 192.168.1.10..  Bob's host(s) 10.1.0.10..
//! ```
//!
//! The public segment uses global unicast addresses (11.0.0.0/8) that floe's default peer
//! policy treats as public, so the lab runs floe with its defaults (no `--allow-peer`); the
//! segment exists only inside the lab's namespaces and has no route out. The LANs behind the
//! NATs use RFC 1918 ranges, as in real life.
//!
//! Namespace names are `fnl<pid>x<n>-<role>`, unique per test process and lab, so parallel tests
//! and concurrent test runs never clash. A [`Lab`] tears itself down when dropped (also when a
//! test panics): it kills the processes it started by PID, then any process left in its
//! namespaces, then deletes its namespaces by name, which removes their veths, bridges, iptables
//! rules and conntrack tables with them. [`Lab::new`] also removes leftovers of lab runs whose
//! process no longer exists (a test binary killed with SIGKILL cannot run its destructors).
//! No traffic leaves the lab's namespaces: nothing is attached to the root namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // test helpers panic on setup failure

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `floe` binary under test.
pub const FLOE: &str = env!("CARGO_BIN_EXE_floe");
/// The first three octets of the public segment, 11.0.0.0/24 ("the internet": global unicast
/// that floe's default peer policy treats as public, and only inside the lab).
const INTERNET: [u8; 3] = [11, 0, 0];
/// floe's primary public address (behind a 1:1 NAT: the router's public address for it).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 10);
/// floe's alternate public address (RFC 5780 `--alternate-ip`).
pub const ALT_IP: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 11);
/// floe's own address when it runs behind a 1:1 NAT router ([`Lab::with_server_behind_nat`]),
/// on the private network 10.9.0.0/24 whose router is 10.9.0.1.
pub const SERVER_PRIVATE_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
/// The server's router on that private network.
const SERVER_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// floe's STUN/TURN port (the alternate port is PORT + 1).
pub const PORT: u16 = 3478;
/// floe's TURN-over-TLS port (with [`Lab::serve_peers`]).
pub const TLS_PORT: u16 = 5349;
/// floe's HTTP port (signalling, `/floe.js`, the demo page) on SERVER_IP.
pub const HTTP_PORT: u16 = 8080;
/// The HS256 secret of the lab's signalling server (production mode: peers outside the server's
/// loopback need a token; see [`Lab::token`]).
pub const JWT_SECRET: &str = "natlab-jwt-secret";
/// The TURN REST secret of the lab's floe behind a 1:1 NAT (see [`Lab::serve_peers`]).
pub const TURN_SECRET: &str = "natlab-turn-secret";
/// Prefix of every lab namespace name, unless `$NATLAB_PREFIX` names another (so that
/// concurrent runs by different people on one machine can each keep to their own prefix).
fn prefix() -> String {
    std::env::var("NATLAB_PREFIX").unwrap_or_else(|_| "fnl".to_owned())
}

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
    /// Like `UdpBlocked`, and TCP to floe's STUN/TURN port (3478) is dropped as well: of TURN
    /// only TURN over TLS (5349) gets out; HTTP (signalling) does too. A firewall that lets
    /// through "web ports only".
    TlsOnly,
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

/// A process started in the lab, with its stdout and stderr collected.
struct LabProc {
    child: Child,
    name: String,
    /// stdout, then stderr lines as they come (each line prefixed `! ` when from stderr).
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

/// A handle on a process started with [`Lab::spawn_logged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId(usize);

/// What a finished (or stopped) lab process did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The name given at spawn.
    pub name: String,
    /// `None` when it was still running at the deadline (it was then killed).
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// stdout and stderr interleaved (stderr lines prefixed `! `).
    pub log: String,
}

impl Finished {
    /// Whether it exited with status 0.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The first stdout line starting with `prefix`, without the prefix.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.stdout.lines().find_map(|l| l.strip_prefix(prefix))
    }

    /// The selected candidate pair this peer reported (`selected pair: ...`); the last one when
    /// it printed several.
    pub fn selected_pair(&self) -> SelectedPair {
        let line = self
            .stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("selected pair: "))
            .unwrap_or_else(|| panic!("{} printed no selected pair:\n{}", self.name, self.log));
        SelectedPair::parse(line)
            .unwrap_or_else(|| panic!("{}: cannot parse `selected pair: {line}`", self.name))
    }
}

/// A `selected pair: local KIND IP:PORT <-> remote KIND IP:PORT via VIA rtt X ms` line, as
/// printed by `floe peer` and tests/natlab/browser-peer.mjs (which prints `?:PORT` for a
/// peer-reflexive remote address that Chromium does not reveal).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedPair {
    /// host, srflx, prflx or relay.
    pub local: String,
    /// The local candidate's address, as printed.
    pub local_addr: String,
    /// host, srflx, prflx or relay.
    pub remote: String,
    /// The remote candidate's address, as printed.
    pub remote_addr: String,
    /// udp, tcp, turn-udp, turn-tcp or turn-tls.
    pub via: String,
    /// The round-trip time in ms, when known.
    pub rtt_ms: Option<f64>,
}

impl SelectedPair {
    /// Parses the text after `selected pair: `.
    pub fn parse(line: &str) -> Option<SelectedPair> {
        let w: Vec<&str> = line.split_whitespace().collect();
        // local K A <-> remote K A via V [rtt X ms]
        if w.len() < 9 || w[0] != "local" || w[3] != "<->" || w[4] != "remote" || w[7] != "via" {
            return None;
        }
        let rtt_ms = match w.get(9..) {
            Some(["rtt", x, "ms", ..]) => x.parse().ok(),
            _ => None,
        };
        Some(SelectedPair {
            local: w[1].to_owned(),
            local_addr: w[2].to_owned(),
            remote: w[5].to_owned(),
            remote_addr: w[6].to_owned(),
            via: w[8].to_owned(),
            rtt_ms,
        })
    }

    /// The local address (`None` when it was not revealed).
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_addr.parse::<SocketAddr>().ok().map(|a| a.ip())
    }

    /// The remote address (`None` when it was not revealed, as for Chromium's prflx).
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.remote_addr.parse::<SocketAddr>().ok().map(|a| a.ip())
    }

    /// Whether either end of the pair is a TURN relay candidate.
    pub fn relayed(&self) -> bool {
        self.local == "relay" || self.remote == "relay"
    }
}

/// A lab: the public segment, floe's server namespace, and whatever sites a test adds.
pub struct Lab {
    prefix: String,
    /// Namespaces in creation order (deleted in reverse).
    namespaces: Vec<String>,
    /// Processes started in the lab, stopped by PID on drop.
    procs: Vec<LabProc>,
    next_public: u8,
    next_wan: u8,
    next_port: u32,
    /// The namespace of floe's server.
    pub server_ns: String,
    /// The address floe binds: SERVER_IP, or SERVER_PRIVATE_IP behind a 1:1 NAT.
    pub server_bind_ip: Ipv4Addr,
    /// The router doing 1:1 NAT for floe ([`Lab::with_server_behind_nat`]), if any.
    pub server_router: Option<String>,
    inet: String,
    /// `floe serve`, once started.
    serve_id: Option<ProcId>,
    /// Files of this lab (certificates, files to transfer, browser profiles via TMPDIR);
    /// removed on drop, after every process is stopped.
    tmp: crate::common::TempDir,
}

/// Address `.last` on the public segment.
fn internet_ip(last: u8) -> Ipv4Addr {
    let [a, b, c] = INTERNET;
    Ipv4Addr::new(a, b, c, last)
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
    let prefix = prefix();
    for ns in namespaces_with_prefix(&prefix) {
        let Some(pid) = ns[prefix.len()..]
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
    /// Builds the public segment and floe's server namespace, the server on the public segment
    /// at SERVER_IP and ALT_IP (floe is not started yet; see [`Lab::serve`]).
    pub fn new() -> Lab {
        let mut lab = Lab::empty();
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

    /// Like [`Lab::new`], but floe's namespace is a private network behind a router that does
    /// 1:1 NAT, as a cloud VM with a public IP: the router's WAN is SERVER_IP, every packet to
    /// it is sent on to SERVER_PRIVATE_IP (DNAT) and every packet from SERVER_PRIVATE_IP leaves
    /// from SERVER_IP (SNAT, ports kept). No alternate address (no RFC 5780). [`Lab::serve`]
    /// then binds SERVER_PRIVATE_IP and advertises SERVER_IP (`--external-ip`).
    pub fn with_server_behind_nat() -> Lab {
        let mut lab = Lab::empty();
        let router = format!("{}-server-router", lab.prefix);
        lab.add_namespace(&router);
        lab.plug_into_internet(&router, "wan");
        lab.ip(
            &router,
            &["addr", "add", &format!("{SERVER_IP}/24"), "dev", "wan"],
        );
        let server = lab.server_ns.clone();
        lab.add_namespace(&server);
        lab.ip(
            &router,
            &[
                "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", &server,
            ],
        );
        lab.ip(
            &router,
            &["addr", "add", &format!("{SERVER_GATEWAY}/24"), "dev", "lan"],
        );
        lab.ip(&router, &["link", "set", "lan", "up"]);
        lab.ip(
            &server,
            &[
                "addr",
                "add",
                &format!("{SERVER_PRIVATE_IP}/24"),
                "dev",
                "eth0",
            ],
        );
        lab.ip(&server, &["link", "set", "eth0", "up"]);
        lab.ip(
            &server,
            &[
                "route",
                "add",
                "default",
                "via",
                &SERVER_GATEWAY.to_string(),
            ],
        );
        lab.exec_ok(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let (public, private) = (SERVER_IP.to_string(), SERVER_PRIVATE_IP.to_string());
        for rule in [
            [
                "PREROUTING",
                "-i",
                "wan",
                "-d",
                &public,
                "-j",
                "DNAT",
                "--to-destination",
                &private,
            ],
            [
                "POSTROUTING",
                "-o",
                "wan",
                "-s",
                &private,
                "-j",
                "SNAT",
                "--to-source",
                &public,
            ],
        ] {
            let mut all = vec!["-w", "-t", "nat", "-A"];
            all.extend_from_slice(&rule);
            lab.exec_ok(&router, "iptables", &all);
        }
        lab.server_bind_ip = SERVER_PRIVATE_IP;
        lab.server_router = Some(router);
        lab
    }

    /// The public segment alone (a bridge in the "inet" namespace); no server namespace yet.
    fn empty() -> Lab {
        require_root_and_tools();
        remove_stale_labs();
        let prefix = format!(
            "{}{}x{}",
            prefix(),
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            inet: format!("{prefix}-inet"),
            server_ns: format!("{prefix}-server"),
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            tmp: crate::common::TempDir::new("natlab"),
            serve_id: None,
            server_bind_ip: SERVER_IP,
            server_router: None,
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
        let ip = internet_ip(self.next_public);
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
        let wan_ip = internet_ip(self.next_wan);
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
            Nat::TlsOnly => {
                ipt(&["-A", "FORWARD", "-p", "udp", "-j", "DROP"]);
                let port = PORT.to_string();
                ipt(&["-A", "FORWARD", "-p", "tcp", "--dport", &port, "-j", "DROP"]);
            }
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

    /// Starts a process in the lab; it is stopped (by PID) when the lab is dropped. Its output
    /// is collected (see [`Lab::spawn_logged`]) unless the command redirects it.
    pub fn spawn(&mut self, cmd: Command) -> u32 {
        let id = self.spawn_logged("process", cmd);
        self.procs[id.0].child.id()
    }

    /// Starts a process in the lab named `name` (for messages), collecting its stdout and
    /// stderr; it is stopped (by PID) when the lab is dropped.
    pub fn spawn_logged(&mut self, name: &str, mut cmd: Command) -> ProcId {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} in the lab: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, log.clone(), Some(stdout.clone()), "");
        }
        if let Some(err) = child.stderr.take() {
            collect(err, log.clone(), None, "! ");
        }
        self.procs.push(LabProc {
            child,
            name: name.to_owned(),
            log,
            stdout,
            status: None,
        });
        ProcId(self.procs.len() - 1)
    }

    /// The process's PID.
    pub fn pid(&self, id: ProcId) -> u32 {
        self.procs[id.0].child.id()
    }

    /// What the process printed so far (stdout, and stderr lines prefixed `! `).
    pub fn log(&self, id: ProcId) -> String {
        self.procs[id.0].log.lock().unwrap().clone()
    }

    /// Its stdout so far.
    pub fn stdout(&self, id: ProcId) -> String {
        self.procs[id.0].stdout.lock().unwrap().clone()
    }

    /// Whether the process has exited (reaps it).
    fn poll_exit(&mut self, id: ProcId) -> Option<ExitStatus> {
        let p = &mut self.procs[id.0];
        if p.status.is_none() {
            p.status = p.child.try_wait().unwrap();
        }
        p.status
    }

    /// Waits until every process in `ids` exited, at most `timeout`; those still running then
    /// are killed (by PID) and reported with `status: None`. Output collected after the exit
    /// is included (the pipes are drained before returning).
    pub fn wait_all(&mut self, ids: &[ProcId], timeout: Duration) -> Vec<Finished> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && ids.iter().any(|&id| self.poll_exit(id).is_none()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        ids.iter()
            .map(|&id| {
                if self.poll_exit(id).is_none() {
                    let _ = self.procs[id.0].child.kill();
                    let _ = self.procs[id.0].child.wait();
                }
                // The reader threads finish when the pipes close; give them a bounded moment.
                let until = Instant::now() + Duration::from_secs(2);
                while Arc::strong_count(&self.procs[id.0].log) > 1 && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let p = &self.procs[id.0];
                Finished {
                    name: p.name.clone(),
                    status: p.status,
                    stdout: p.stdout.lock().unwrap().clone(),
                    log: p.log.lock().unwrap().clone(),
                }
            })
            .collect()
    }

    /// Waits (bounded) until `id`'s stdout contains `needle`; panics with its log when it exits
    /// first or the time is up.
    pub fn wait_for_output(&mut self, id: ProcId, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout(id).contains(needle) {
                return;
            }
            if let Some(status) = self.poll_exit(id) {
                panic!(
                    "{} exited ({status}) before printing `{needle}`:\n{}",
                    self.procs[id.0].name,
                    self.log(id)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print `{needle}` within {timeout:?}:\n{}",
                self.procs[id.0].name,
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What `floe serve` logged so far (empty before [`Lab::serve`]).
    pub fn serve_log(&self) -> String {
        self.serve_id.map(|id| self.log(id)).unwrap_or_default()
    }

    /// floe's TURN counters (`floe_turn_*` lines of `/metrics`: allocations, permissions,
    /// error responses by code, ...), fetched with curl inside the server namespace (from
    /// 127.0.0.1, as production mode requires); for failure
    /// messages (a refused CreatePermission shows as `floe_turn_error_responses_total{code="403"}`).
    pub fn turn_metrics(&self) -> String {
        if self.serve_id.is_none() || !crate::common::has_tool("curl") {
            return String::from("(not available)\n");
        }
        let url = format!("http://{}:{HTTP_PORT}/metrics", self.server_bind_ip);
        let out = self
            .command(&self.server_ns, "curl")
            // From loopback: in production mode `/metrics` answers loopback clients only.
            .args(["-s", "--max-time", "3", "--interface", "127.0.0.1", &url])
            .output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        text.unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("floe_turn_"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// This lab's directory for files (removed on drop).
    pub fn tmp_path(&self) -> String {
        self.tmp.path()
    }

    /// [`Lab::turn_metrics`] once the relay counters have settled: floe reads the XDP
    /// program's counters into its metrics once a second, so this reads until two reads 1.5 s
    /// apart show the same `floe_turn_relayed_*` lines (at most 6 reads).
    pub fn settled_turn_metrics(&self) -> String {
        let relayed = |m: &str| -> String {
            m.lines()
                .filter(|l| l.starts_with("floe_turn_relayed") || l.starts_with("floe_turn_xdp"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut last = self.turn_metrics();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1500));
            let now = self.turn_metrics();
            if relayed(&now) == relayed(&last) {
                return now;
            }
            last = now;
        }
        last
    }

    /// Starts `floe serve` on SERVER_IP:PORT with `--alternate-ip ALT_IP`, HTTP (signalling)
    /// on SERVER_IP:HTTP_PORT in production mode (`--jwt-secret JWT_SECRET`), plus `extra`
    /// arguments, in the server namespace, and waits (bounded) until both the primary and the
    /// alternate address and port answer STUN and HTTP is bound. Behind a 1:1 NAT
    /// ([`Lab::with_server_behind_nat`]) floe listens on SERVER_PRIVATE_IP (STUN/TURN and HTTP),
    /// relays from it (`--relay-ip`) and advertises SERVER_IP (`--external-ip`), as a real
    /// deployment behind 1:1 NAT would; no alternate address.
    pub fn serve(&mut self, extra: &[&str]) -> u32 {
        let bind = self.server_bind_ip;
        let mut cmd = self.command(&self.server_ns.clone(), FLOE);
        cmd.args(["serve", "--listen", &format!("{bind}:{PORT}")]);
        let mut ready = vec![format!("{bind}:{PORT}")];
        if self.server_router.is_some() {
            cmd.args(["--relay-ip", &bind.to_string()])
                .args(["--external-ip", &SERVER_IP.to_string()]);
        } else {
            cmd.args(["--alternate-ip", &ALT_IP.to_string()]);
            ready.push(format!("{ALT_IP}:{}", PORT + 1));
        }
        cmd.args([
            "--http",
            &format!("{bind}:{HTTP_PORT}"),
            "--jwt-secret",
            JWT_SECRET,
        ])
        .args(extra);
        let id = self.spawn_logged("floe serve", cmd);
        self.serve_id = Some(id);
        let deadline = Instant::now() + Duration::from_secs(20);
        for target in ready {
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
                    "floe serve did not answer STUN at {target} in the lab:\n{}",
                    self.log(id)
                );
                if let Some(status) = self.poll_exit(id) {
                    panic!("floe serve exited early: {status}\n{}", self.log(id));
                }
            }
        }
        // Printed once the HTTP listener is bound.
        let http = format!("listening on http://{bind}:{HTTP_PORT}");
        self.wait_for_output(
            id,
            &http,
            deadline.saturating_duration_since(Instant::now()),
        );
        self.pid(id)
    }

    /// [`Lab::serve`] for connection scenarios: also TURN over TLS on port TLS_PORT with a
    /// self-signed certificate for SERVER_IP (see [`Lab::cert`]) and a realm; floe's peer policy
    /// is its default (no `--allow-peer`: the lab's public segment is global unicast). The
    /// signalling server's `welcome` then carries `stun:` and `turn:` URLs for 11.0.0.10:3478
    /// (UDP and TCP) and a `turns:` URL for 11.0.0.10:5349, with TURN credentials minted per
    /// peer. Behind a 1:1 NAT nothing more is given than `--external-ip` (see [`Lab::serve`]):
    /// the ICE server URLs floe hands out then name the external address (11.0.0.10) rather
    /// than the private one it binds, with credentials from its own secret.
    pub fn serve_peers(&mut self, extra: &[&str]) -> u32 {
        let (cert, key) = self.cert();
        let mut args = vec![
            "--tls-listen".to_owned(),
            format!("{}:{TLS_PORT}", self.server_bind_ip),
            "--tls-cert".to_owned(),
            cert,
            "--tls-key".to_owned(),
            key,
            "--realm".to_owned(),
            "natlab.test".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.serve(&args)
    }

    /// [`Lab::serve_peers`] with the XDP fast path (docs/xdp.md) in native mode on floe's
    /// interface (`eth0`; veth supports native XDP). Call it after the sites are built: it first
    /// makes every veth in the lab behave as a wire would for XDP (docs/xdp.md, "Traps"): TX
    /// checksum offload off, so every UDP datagram reaching floe carries a complete checksum
    /// (a veth would otherwise hand over a partial one, and the NAT routers keep it partial),
    /// and GRO on, so that the far end of floe's veth in the public bridge namespace accepts
    /// the frames XDP redirects into it (a veth drops them without GRO or an XDP program).
    /// floe otherwise runs with its defaults (bandwidth caps included: what XDP relays is
    /// charged to them, docs/xdp.md).
    pub fn serve_peers_xdp(&mut self) -> u32 {
        for ns in self.namespaces.clone() {
            let out = self.exec_ok(&ns, "ip", &["-o", "link", "show", "type", "veth"]);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // "7: eth0@if6: <BROADCAST,...": the name is before the '@'.
                let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
                    continue;
                };
                self.exec_ok(&ns, "ethtool", &["-K", name, "tx", "off", "gro", "on"]);
            }
        }
        self.serve_peers(&["--xdp", "native", "--xdp-interface", "eth0"])
    }

    /// A self-signed certificate (P-256, `CA:FALSE`, SAN IP:11.0.0.10, the address peers reach) and its key, made
    /// with the openssl CLI in the lab's directory once: `(cert.pem, key.pem)`. Peers trust it
    /// for `turns:` with `--ca-file cert.pem`.
    pub fn cert(&self) -> (String, String) {
        let cert = self.tmp.file("cert.pem");
        let key = self.tmp.file("key.pem");
        if !std::path::Path::new(&cert).exists() {
            crate::common::openssl_cert(
                &cert,
                &key,
                &SERVER_IP.to_string(),
                &[
                    &format!("subjectAltName=IP:{SERVER_IP}"),
                    "basicConstraints=critical,CA:FALSE",
                    "extendedKeyUsage=serverAuth",
                ],
            );
        }
        (cert, key)
    }

    /// floe's signalling URL in the lab, `http://11.0.0.10:8080` (behind a 1:1 NAT too: the
    /// router forwards it to floe's private address).
    pub fn signal_url(&self) -> String {
        format!("http://{SERVER_IP}:{HTTP_PORT}")
    }

    /// A signalling token (HS256, [`JWT_SECRET`]) for `peer` in `room`, from `floe token`.
    pub fn token(&self, room: &str, peer: &str) -> String {
        let out = sh(
            FLOE,
            &[
                "token", "--secret", JWT_SECRET, "--room", room, "--peer", peer, "--ttl", "600",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A file of `size` deterministic pseudo-random bytes named `name` in the lab's directory;
    /// returns its path.
    pub fn make_file(&self, name: &str, size: usize) -> String {
        let mut x: u32 = 0x1234_5678;
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        let path = self.tmp.file(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A command running tests/natlab/browser-peer.mjs (headless Chromium with floe.js) in
    /// `host`'s namespace, with `args` after `--signal URL`; its TMPDIR (Chromium's profile)
    /// is the lab's directory.
    pub fn browser_peer(&self, host: &Host, args: &[&str]) -> Command {
        require_browser();
        let mut cmd = self.command(&host.ns, "node");
        cmd.arg(browser_script())
            .args(["--signal", &self.signal_url()])
            .args(args)
            .env("TMPDIR", self.tmp.path());
        cmd
    }

    /// A command running `floe peer ARGS... --signal URL` in `host`'s namespace.
    pub fn floe_peer(&self, host: &Host, args: &[&str]) -> Command {
        let mut cmd = self.command(&host.ns, FLOE);
        cmd.arg("peer")
            .args(args)
            .args(["--signal", &self.signal_url()])
            .env("TMPDIR", self.tmp.path());
        cmd
    }
}

/// Which program plays a peer in a connection scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Headless Chromium with web/floe.js (tests/natlab/browser-peer.mjs).
    Browser,
    /// `floe peer`.
    Floe,
}

/// One side of a transfer: who, where, with which extra options.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// The program.
    pub kind: PeerKind,
    /// The host it runs on.
    pub host: &'a Host,
    /// Its peer id (the token's `peer` claim).
    pub name: &'a str,
    /// Options added to its command line (e.g. `--relay-only`).
    pub extra: &'a [&'a str],
}

impl<'a> Side<'a> {
    /// A side with no extra options.
    pub fn new(kind: PeerKind, host: &'a Host, name: &'a str) -> Side<'a> {
        Side {
            kind,
            host,
            name,
            extra: &[],
        }
    }

    /// This side offers relay candidates only: `--relay-only` (`floe peer`) or
    /// `iceTransportPolicy: "relay"` (the browser peer's `--relay-only`).
    pub fn relay_only(mut self) -> Side<'a> {
        self.extra = &["--relay-only"];
        self
    }

    /// [`Side::relay_only`] for scenarios where *both* sides are relay-only: `floe peer` then
    /// allocates over TURN UDP only (`--turn-transport udp`). With its UDP, TCP and TLS
    /// allocations on both sides, nine relay ↔ relay pairs work through one floe at once, and
    /// each `floe peer` names the pair its own str0m reports, which the two sides need not agree
    /// on (docs/peer.md, limits); one allocation per side makes the pair checkable on both. The
    /// browser side keeps every TURN URL (Chromium reports the nominated pair on both sides).
    pub fn relay_only_both(self) -> Side<'a> {
        match self.kind {
            PeerKind::Floe => Side {
                extra: &["--relay-only", "--turn-transport", "udp"],
                ..self
            },
            PeerKind::Browser => self.relay_only(),
        }
    }
}

/// Both peers' reports of a transfer.
pub struct Transfer {
    /// The sender's report.
    pub sender: Finished,
    /// The receiver's report.
    pub receiver: Finished,
}

impl Transfer {
    /// Both sides' selected pairs: (sender's, receiver's).
    pub fn pairs(&self) -> (SelectedPair, SelectedPair) {
        (self.sender.selected_pair(), self.receiver.selected_pair())
    }

    /// Both logs, for failure messages (and `--nocapture`).
    pub fn show(&self) -> String {
        format!(
            "--- {} ---\n{}--- {} ---\n{}",
            self.sender.name, self.sender.log, self.receiver.name, self.receiver.log
        )
    }
}

/// How long a scenario's peers may take, together (each also gets `--timeout` a bit below).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(90);

impl Lab {
    /// Runs `sender` sending a file of `size` bytes to `receiver` in `room` through the lab's
    /// floe (started with [`Lab::serve_peers`]), and checks that both exited 0, that the sender
    /// reported the receiver's confirmation (`sent NAME N bytes sha256 HEX`), that the receiver
    /// reported the same name, size and SHA-256 (`received ...`, with `verified` from
    /// `floe peer`), and that the bytes written match. Both logs are printed (`--nocapture`).
    pub fn transfer(
        &mut self,
        room: &str,
        sender: Side<'_>,
        receiver: Side<'_>,
        size: usize,
    ) -> Transfer {
        let name = format!("{room}.bin");
        let file = self.make_file(&name, size);
        let out = self.tmp.file(&format!("{room}.received"));
        let rx = self.peer_command(room, &receiver, &["receive", "--out", &out]);
        let rx = self.spawn_logged(
            &format!("{:?} {} (receive)", receiver.kind, receiver.name),
            rx,
        );
        let tx = self.peer_command(room, &sender, &["send", &file]);
        let tx = self.spawn_logged(&format!("{:?} {} (send)", sender.kind, sender.name), tx);
        let mut done = self.wait_all(&[tx, rx], TRANSFER_TIMEOUT).into_iter();
        let t = Transfer {
            sender: done.next().unwrap(),
            receiver: done.next().unwrap(),
        };
        println!("{}", t.show());
        let serve = || {
            let log = self.serve_log();
            let tail = log.len().saturating_sub(6000);
            let tail = (tail..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(log.len());
            format!(
                "--- floe serve (tail) ---\n{}--- floe serve metrics ---\n{}",
                &log[tail..],
                self.turn_metrics()
            )
        };
        assert!(t.sender.ok(), "the sender failed:\n{}{}", t.show(), serve());
        assert!(
            t.receiver.ok(),
            "the receiver failed:\n{}{}",
            t.show(),
            serve()
        );
        let bytes = std::fs::read(&file).unwrap();
        let sent = format!("{name} {size} bytes sha256 {}", sha256_hex(&bytes));
        assert_eq!(t.sender.line("sent "), Some(sent.as_str()), "{}", t.show());
        let received = t.receiver.line("received ").unwrap_or_default();
        assert!(
            received.starts_with(&sent),
            "the receiver did not get the same bytes:\n{}",
            t.show()
        );
        if receiver.kind == PeerKind::Floe {
            assert_eq!(received, format!("{sent} verified"), "{}", t.show());
        }
        assert!(
            std::fs::read(&out).unwrap() == bytes,
            "{out} differs from {file}"
        );
        for side in [&t.sender, &t.receiver] {
            // Every run of either program ends on a parseable pair.
            side.selected_pair();
        }
        t
    }

    /// The command line of one side: `mode_args` are `send FILE` or `receive --out PATH`.
    fn peer_command(&self, room: &str, side: &Side<'_>, mode_args: &[&str]) -> Command {
        let token = self.token(room, side.name);
        let (cert, _) = self.cert();
        let timeout = (TRANSFER_TIMEOUT.as_secs() - 10).to_string();
        match side.kind {
            PeerKind::Browser => {
                let mut args = vec![
                    "--room",
                    room,
                    "--peer",
                    side.name,
                    "--token",
                    &token,
                    "--ca-file",
                    &cert,
                    "--timeout",
                    &timeout,
                    "--mode",
                    mode_args[0],
                ];
                match mode_args {
                    ["send", file] => args.extend(["--file", file]),
                    ["receive", "--out", out] => args.extend(["--out", out]),
                    _ => unreachable!(),
                }
                args.extend(side.extra);
                self.browser_peer(side.host, &args)
            }
            PeerKind::Floe => {
                let mut args = mode_args.to_vec();
                args.extend([
                    "--room",
                    room,
                    "--token",
                    &token,
                    "--ca-file",
                    &cert,
                    "--wait",
                    &timeout,
                    "--timeout",
                    &timeout,
                ]);
                args.extend(side.extra);
                self.floe_peer(side.host, &args)
            }
        }
    }
}

/// The scenario checks, shared by the Chromium and `floe peer` tests: what ICE must select in
/// each topology (docs/how-peers-connect.md explains why).
pub mod expect {
    use super::{Host, SelectedPair, Site, Transfer, SERVER_IP};

    /// Cone NAT on both sides, different sites: a direct UDP path between the routers' public
    /// mappings. Each side's remote end is a reflexive candidate at the other router's WAN
    /// address; its own end is its host address (the base) or its own router's mapping.
    pub fn direct_through_cone_nats(
        t: &Transfer,
        sender: (&Site, &Host),
        receiver: (&Site, &Host),
    ) {
        let (a, b) = t.pairs();
        for (pair, (my_site, me), (other_site, _)) in
            [(&a, sender, receiver), (&b, receiver, sender)]
        {
            let ctx = || format!("{pair:?}\n{}", t.show());
            assert!(!pair.relayed(), "relayed between cone NATs: {}", ctx());
            assert_eq!(pair.via, "udp", "{}", ctx());
            remote_reflexive_at(t, pair, other_site);
            local_end_behind(t, pair, my_site, me);
        }
    }

    /// `pair`'s remote end is a reflexive candidate (srflx or prflx) at `site`'s router.
    fn remote_reflexive_at(t: &Transfer, pair: &SelectedPair, site: &Site) {
        let ctx = || format!("{pair:?}\n{}", t.show());
        assert!(
            ["srflx", "prflx"].contains(&pair.remote.as_str()),
            "the remote end is not reflexive: {}",
            ctx()
        );
        assert_eq!(pair.remote_ip(), Some(site.wan_ip.into()), "{}", ctx());
    }

    /// `pair`'s local end, on `me` behind `site`'s cone NAT, is its host address (the base) or
    /// its router's mapping.
    fn local_end_behind(t: &Transfer, pair: &SelectedPair, site: &Site, me: &Host) {
        let mine = if pair.local == "host" {
            me.ip
        } else {
            site.wan_ip
        };
        let ctx = || format!("{pair:?}\n{}", t.show());
        assert_eq!(pair.local_ip(), Some(mine.into()), "{}", ctx());
    }

    /// Symmetric NAT on both sides: no direct path; both sides' pairs go through a relay on
    /// floe, and they name the same relay address.
    pub fn relayed_through_floe(t: &Transfer) {
        let (a, b) = t.pairs();
        for pair in [&a, &b] {
            let ctx = || format!("{pair:?}\n{}", t.show());
            assert!(pair.relayed(), "not relayed: {}", ctx());
            for (kind, ip) in [
                (&pair.local, pair.local_ip()),
                (&pair.remote, pair.remote_ip()),
            ] {
                if kind == "relay" {
                    assert_eq!(ip, Some(SERVER_IP.into()), "a relay not on floe: {}", ctx());
                }
            }
            if pair.local == "relay" {
                assert!(pair.via.starts_with("turn-"), "{}", ctx());
            }
        }
        same_relay(t, &a, &b);
    }

    /// The sender can reach floe's TURN only over `via` (`turn-tcp` or `turn-tls`): its local
    /// end is a relay on floe reached that way, and the receiver's remote end is that relay.
    pub fn sender_relayed_over(t: &Transfer, via: &str) {
        let (a, b) = t.pairs();
        let ctx = || format!("{a:?} / {b:?}\n{}", t.show());
        assert_eq!(a.local, "relay", "{}", ctx());
        assert_eq!(a.via, via, "{}", ctx());
        assert_eq!(a.local_ip(), Some(SERVER_IP.into()), "{}", ctx());
        same_relay(t, &a, &b);
    }

    /// Both sides relay-only: relay ↔ relay on both sides, every relay on floe's public address
    /// (also behind a 1:1 NAT: the advertised `--external-ip`), each side's remote relay the
    /// other side's local one. Two allocations of the same server relay to each other.
    pub fn relay_to_relay(t: &Transfer) {
        let (a, b) = t.pairs();
        for pair in [&a, &b] {
            let ctx = || format!("{pair:?}\n{}", t.show());
            assert_eq!(
                (pair.local.as_str(), pair.remote.as_str()),
                ("relay", "relay"),
                "not relay ↔ relay: {}",
                ctx()
            );
            assert!(pair.via.starts_with("turn-"), "{}", ctx());
            assert_eq!(pair.local_ip(), Some(SERVER_IP.into()), "{}", ctx());
            assert_eq!(pair.remote_ip(), Some(SERVER_IP.into()), "{}", ctx());
        }
        same_relay(t, &a, &b);
    }

    /// The sender relay-only behind a cone NAT, the receiver (`receiver`, behind a cone NAT)
    /// with every candidate type: the sender's relay (over UDP) on floe ↔ the receiver's
    /// reflexive address at its router; the receiver's own end is that address (or its host
    /// address, the base), its remote end the sender's relay.
    pub fn relay_to_reflexive(t: &Transfer, receiver: (&Site, &Host)) {
        let (a, b) = t.pairs();
        let (site, host) = receiver;
        let ctx = || format!("{a:?} / {b:?}\n{}", t.show());
        assert_eq!(a.local, "relay", "{}", ctx());
        assert_eq!(a.via, "turn-udp", "{}", ctx());
        assert_eq!(a.local_ip(), Some(SERVER_IP.into()), "{}", ctx());
        remote_reflexive_at(t, &a, site);
        assert!(
            !b.local.eq("relay"),
            "the receiver used its relay: {}",
            ctx()
        );
        local_end_behind(t, &b, site, host);
        same_relay(t, &a, &b);
    }

    /// Two hosts behind the same NAT: host candidates on the shared LAN, both ways.
    pub fn host_to_host(t: &Transfer, sender: &Host, receiver: &Host) {
        let (a, b) = t.pairs();
        for (pair, me, other) in [(&a, sender, receiver), (&b, receiver, sender)] {
            let ctx = || format!("{pair:?}\n{}", t.show());
            assert_eq!(
                (pair.local.as_str(), pair.remote.as_str(), pair.via.as_str()),
                ("host", "host", "udp"),
                "{}",
                ctx()
            );
            assert_eq!(pair.local_ip(), Some(me.ip.into()), "{}", ctx());
            assert_eq!(pair.remote_ip(), Some(other.ip.into()), "{}", ctx());
        }
    }

    /// Checks that floe's XDP fast path carried the media of a relayed scenario, from floe's
    /// `metrics` after it: XDP relayed packets both ways (the file one way, the acknowledgements
    /// the other), and towards the receiver at least as many packets as the 1 MiB file needs at
    /// 1500 bytes a datagram, so most of the file went through the program (user space relays the
    /// first packets, until the peers' next hops are in the map, and whatever goes over TURN
    /// TCP/TLS allocations: docs/xdp.md). With `handover` (both sides relay-only on this floe) the
    /// packets were handed over from one allocation to the other inside the program
    /// (relay-to-relay). Prints the relay metrics.
    pub fn xdp_carried(metrics: &str, handover: bool) {
        let m = |name: &str| super::metric(metrics, name);
        let xdp: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("floe_turn_xdp") || l.starts_with("floe_turn_relayed"))
            .collect();
        println!("--- floe's relay metrics ---\n{}", xdp.join("\n"));
        let to_peer = m(r#"floe_turn_xdp_relayed_packets_total{direction="to_peer"}"#);
        let to_client = m(r#"floe_turn_xdp_relayed_packets_total{direction="to_client"}"#);
        let file_packets = (super::SCENARIO_FILE / 1500) as f64;
        assert!(
            to_peer >= file_packets && to_client > 0.0,
            "XDP relayed {to_peer} packets to peers, {to_client} to clients:\n{metrics}"
        );
        if handover {
            assert!(
                m("floe_turn_xdp_relay_to_relay_total") >= file_packets,
                "the file was not handed over relay-to-relay in XDP:\n{metrics}"
            );
        }
    }

    /// A local relay on one side is the remote relay on the other.
    fn same_relay(t: &Transfer, a: &SelectedPair, b: &SelectedPair) {
        for (x, y) in [(a, b), (b, a)] {
            if x.local == "relay" {
                assert_eq!(
                    (y.remote.as_str(), &y.remote_addr),
                    ("relay", &x.local_addr),
                    "the two sides disagree on the relay: {x:?} / {y:?}\n{}",
                    t.show()
                );
            }
        }
    }
}

/// The value of sample `name` (the metric name with its labels exactly as printed, e.g.
/// `floe_turn_xdp_relayed_packets_total{direction="to_peer"}`) in Prometheus text `metrics`;
/// 0 when absent.
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Lower-case hex SHA-256, with the openssl CLI (no extra dependency).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// tests/natlab/browser-peer.mjs of this checkout.
pub fn browser_script() -> String {
    format!(
        "{}/../../tests/natlab/browser-peer.mjs",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Fails (never skips) when the browser peer cannot run: node, chromium, and playwright-core in
/// tests/browser/node_modules (./test.sh runs `npm ci` there).
pub fn require_browser() {
    for tool in ["node", "chromium"] {
        crate::common::require(tool);
    }
    let pw = format!(
        "{}/../../tests/browser/node_modules/playwright-core",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        std::path::Path::new(&pw).exists(),
        "playwright-core is missing: run `npm ci` in tests/browser (./test.sh does)"
    );
}

/// Appends what `pipe` yields to `log` (each line prefixed) and to `stdout`, on a thread that
/// ends when the pipe closes.
fn collect(
    mut pipe: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    stdout: Option<Arc<Mutex<String>>>,
    prefix: &'static str,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut pending = String::new();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some(out) = &stdout {
                out.lock().unwrap().push_str(&text);
            }
            pending.push_str(&text);
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                log.lock().unwrap().push_str(&format!("{prefix}{line}"));
            }
        }
        if !pending.is_empty() {
            log.lock()
                .unwrap()
                .push_str(&format!("{prefix}{pending}\n"));
        }
        drop(log);
        drop(stdout);
    });
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            destroy_namespace(ns);
        }
    }
}

/// Alice's site's private network (192.168.1.0/24).
pub const ALICE_NET: [u8; 3] = [192, 168, 1];
/// Bob's site's private network (10.1.0.0/24).
pub const BOB_NET: [u8; 3] = [10, 1, 0];
/// The file every scenario sends.
pub const SCENARIO_FILE: usize = 1024 * 1024;

/// The connection scenarios of issue 5 §2 (docs/how-peers-connect.md), each with the pair it
/// must end on (the `expect` functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Alice and Bob each behind a cone NAT: direct, no relay.
    ConeCone,
    /// Both behind symmetric NATs: through floe's relay.
    SymmetricSymmetric,
    /// Alice's firewall blocks UDP, Bob behind a cone NAT: Alice relays over TURN TCP.
    UdpBlockedCone,
    /// Alice's firewall lets only TLS out: Alice relays over TURN TLS.
    TlsOnlyCone,
    /// Both on one LAN behind one NAT: host candidates.
    SameNat,
    /// Alice and Bob each behind a cone NAT, both relay-only (`iceTransportPolicy: "relay"`,
    /// `--relay-only`): relay ↔ relay, two allocations on the same floe.
    RelayOnlyBoth,
    /// Alice relay-only behind a cone NAT, Bob behind a cone NAT with every candidate type:
    /// Alice's relay ↔ Bob's reflexive address.
    RelayOnlyCone,
    /// floe behind a 1:1 NAT router (`--external-ip`), Alice and Bob each behind a cone NAT,
    /// both relay-only: relay ↔ relay on floe's public address.
    ServerBehindNat,
}

impl Scenario {
    /// Builds the scenario's lab, starts floe, has Alice (a `alice` program) send a 1 MiB file
    /// to Bob (a `bob` program) in `room`, and checks the selected pairs. Returns the transfer
    /// for further checks; the lab is torn down before returning.
    pub fn run(self, room: &str, alice: PeerKind, bob: PeerKind) -> Transfer {
        self.run_with(room, alice, bob, false).0
    }

    /// [`Scenario::run`] with floe's XDP fast path on ([`Lab::serve_peers_xdp`]). Returns the
    /// transfer and floe's metrics (Prometheus text) read after it, before the lab goes.
    pub fn run_xdp(self, room: &str, alice: PeerKind, bob: PeerKind) -> (Transfer, String) {
        self.run_with(room, alice, bob, true)
    }

    fn run_with(self, room: &str, alice: PeerKind, bob: PeerKind, xdp: bool) -> (Transfer, String) {
        let mut lab = if matches!(self, Scenario::ServerBehindNat) {
            Lab::with_server_behind_nat()
        } else {
            Lab::new()
        };
        if self == Scenario::SameNat {
            let site = lab.site("alice", ALICE_NET, Nat::Cone, 2);
            lab.serve_peers(&[]);
            let (a, b) = (&site.hosts[0], &site.hosts[1]);
            let t = lab.transfer(
                room,
                Side::new(alice, a, "alice"),
                Side::new(bob, b, "bob"),
                SCENARIO_FILE,
            );
            expect::host_to_host(&t, a, b);
            return (t, String::new());
        }
        let (alice_nat, bob_nat) = match self {
            Scenario::SymmetricSymmetric => (Nat::Symmetric, Nat::Symmetric),
            Scenario::UdpBlockedCone => (Nat::UdpBlocked, Nat::Cone),
            Scenario::TlsOnlyCone => (Nat::TlsOnly, Nat::Cone),
            _ => (Nat::Cone, Nat::Cone),
        };
        let alice_site = lab.site("alice", ALICE_NET, alice_nat, 1);
        let bob_site = lab.site("bob", BOB_NET, bob_nat, 1);
        if xdp {
            lab.serve_peers_xdp();
        } else {
            lab.serve_peers(&[]);
        }
        let (a, b) = (&alice_site.hosts[0], &bob_site.hosts[0]);
        let (mut alice_side, mut bob_side) =
            (Side::new(alice, a, "alice"), Side::new(bob, b, "bob"));
        match self {
            Scenario::RelayOnlyBoth | Scenario::ServerBehindNat => {
                alice_side = alice_side.relay_only_both();
                bob_side = bob_side.relay_only_both();
            }
            Scenario::RelayOnlyCone => alice_side = alice_side.relay_only(),
            _ => {}
        }
        let t = lab.transfer(room, alice_side, bob_side, SCENARIO_FILE);
        match self {
            Scenario::ConeCone => {
                expect::direct_through_cone_nats(&t, (&alice_site, a), (&bob_site, b))
            }
            Scenario::SymmetricSymmetric => expect::relayed_through_floe(&t),
            Scenario::UdpBlockedCone => expect::sender_relayed_over(&t, "turn-tcp"),
            Scenario::TlsOnlyCone => expect::sender_relayed_over(&t, "turn-tls"),
            Scenario::RelayOnlyBoth | Scenario::ServerBehindNat => expect::relay_to_relay(&t),
            Scenario::RelayOnlyCone => expect::relay_to_reflexive(&t, (&bob_site, b)),
            Scenario::SameNat => unreachable!("handled above"),
        }
        let metrics = if xdp {
            lab.settled_turn_metrics()
        } else {
            String::new()
        };
        (t, metrics)
    }
}
