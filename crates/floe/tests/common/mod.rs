//! Helpers shared by the end-to-end test files of this crate: child processes stopped by PID,
//! tool checks that fail (never skip), bounded readiness waits, temporary directories.

// Each test file uses its own subset of these helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A child process stopped (by its PID) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `tool` is on the PATH.
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Fails the test when `tool` is missing: `./test.sh` installs every tool the suite needs.
pub fn require(tool: &str) {
    assert!(
        has_tool(tool),
        "{tool} is not installed: run ./test.sh, which installs coturn and openssl"
    );
}

/// Runs a command to completion; returns its output and stdout+stderr as text.
pub fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("run command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Waits (bounded) until a STUN server answers a Binding request at `addr`.
pub fn wait_for_stun(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local).unwrap();
    while Instant::now() < deadline {
        if floe_turn_server::stun_client::binding_udp(
            &socket,
            addr,
            None,
            Duration::from_millis(300),
        )
        .is_ok()
        {
            return;
        }
    }
    panic!("no STUN server answered at {addr}");
}

/// A temporary directory removed on drop (no extra dependency needed).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new, empty directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        let path = std::env::temp_dir().join(format!(
            "floe-{prefix}-{}-{:x}",
            std::process::id(),
            h.finish()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory's path.
    pub fn path(&self) -> String {
        self.0.display().to_string()
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free for UDP and TCP on `ip`, with the next port free too (for RFC 5780 alternates).
pub fn free_port_pair(ip: IpAddr) -> u16 {
    for _ in 0..200 {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        let p = s.local_addr().unwrap().port();
        drop(s);
        if !(1024..65000).contains(&p) {
            continue;
        }
        let free = |port: u16| {
            UdpSocket::bind((ip, port)).is_ok() && TcpListener::bind((ip, port)).is_ok()
        };
        if free(p) && free(p + 1) {
            return p;
        }
    }
    panic!("no free port pair on {ip}");
}

/// Waits (bounded) until something accepts TCP connections at `addr`.
pub fn wait_for_tcp(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            return;
        }
        // Refused at once: try again until the deadline (bounded by the loop).
        std::thread::yield_now();
    }
    panic!("nothing accepts TCP connections at {addr}");
}

/// A self-signed P-256 certificate for 127.0.0.1, ::1 and localhost: (cert path, key path).
pub fn self_signed_cert(dir: &TempDir) -> (String, String) {
    let (cert, key) = (dir.file("cert.pem"), dir.file("key.pem"));
    openssl_cert(
        &cert,
        &key,
        "localhost",
        &["subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"],
    );
    (cert, key)
}

/// Writes a self-signed P-256 certificate with subject `CN=cn` and the given `-addext`
/// extensions, and its key, with the openssl CLI.
pub fn openssl_cert(cert: &str, key: &str, cn: &str, extensions: &[&str]) {
    require("openssl");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ])
    .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")]);
    for e in extensions {
        cmd.args(["-addext", e]);
    }
    let (out, text) = run(cmd.args(["-keyout", key, "-out", cert]));
    assert!(out.status.success(), "openssl req failed:\n{text}");
}

/// Starts `floe` with `args` (output discarded) and waits until it answers STUN at `ready`.
pub fn spawn_floe(args: &[String], ready: SocketAddr) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start floe");
    let proc = Proc(child);
    wait_for_stun(ready);
    proc
}

/// `floe signal` on an ephemeral loopback port with `args`, run through `wrapper` (a command and
/// its arguments that exec the rest, such as `prlimit --nofile=512:512 --`; empty for none).
/// Returns once it printed its address.
pub fn start_signal(wrapper: &[&str], args: &[&str]) -> (Proc, SocketAddr) {
    use std::io::BufRead as _;
    let floe = env!("CARGO_BIN_EXE_floe");
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(floe);
            c
        }
        None => Command::new(floe),
    };
    let mut child = cmd
        .args(["signal", "--http", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start floe signal");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.strip_prefix("floe signal: listening on http://") {
                let _ = tx.send(a.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("floe signal prints its address")
        .parse()
        .unwrap();
    (proc, addr)
}

/// coturn's `turnserver` with `args` plus the flags every test wants (no TLS/DTLS/CLI, log to a
/// drained pipe, pid file in `dir`); returns once it answers STUN at `ready`.
pub fn start_turnserver(dir: &TempDir, args: &[String], ready: SocketAddr) -> Proc {
    use std::io::{BufRead, BufReader};
    require("turnserver");
    let child = Command::new("turnserver")
        .arg("-n")
        .args(args)
        .args([
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
            "--simple-log",
        ])
        .arg(format!("--pidfile={}/turnserver.pid", dir.path()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start turnserver");
    let mut proc = Proc(child);
    // Drain coturn's log so it never blocks on a full pipe.
    if let Some(out) = proc.0.stdout.take() {
        std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    }
    wait_for_stun(ready);
    proc
}

/// Whether the tests run as root (network namespaces need it; CI runs as root).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A network namespace this test created (no route out), deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    /// Creates `NAME-PID` with loopback up. Fails (never skips) without root or iproute2.
    pub fn new(name: &str) -> Netns {
        require("ip");
        assert!(
            is_root(),
            "this test needs root (network namespaces): run it as root, as CI does"
        );
        let ns = Netns(format!("{name}-{}", std::process::id()));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        ip(&["netns", "add", &ns.0]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS...`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.0];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// `ip netns exec NS PROGRAM ARGS...`
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]).args(args);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// `ip ARGS...`, asserting success.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Takes `child`'s stdout and waits (bounded) for the HTTP address `floe serve` or `floe signal`
/// prints; a thread keeps draining the rest so floe never blocks on a full pipe.
pub fn printed_http_addr(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("floe did not print its HTTP address");
        if let Some(addr) = line.strip_prefix("floe signal: listening on http://") {
            return addr.trim().parse().expect("HTTP address");
        }
    }
}

/// GET /metrics (HTTP/1.0, from loopback, bounded by timeouts).
pub fn get_metrics(http: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The figures of coturn's `turnutils_uclient` summary.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
}

/// Parses `start_mclient: tot_send_msgs=S, tot_recv_msgs=R` (the final line, without `msz=`)
/// and `Total lost packets L (...)`.
pub fn summary(text: &str) -> Option<Summary> {
    let mut counts = None;
    let mut lost = None;
    for line in text.lines() {
        if let Some(rest) = line.split("start_mclient: tot_send_msgs=").nth(1) {
            let (s, r) = rest.split_once(", tot_recv_msgs=")?;
            counts = Some((s.trim().parse().ok()?, r.trim().parse().ok()?));
        }
        if let Some(rest) = line.split("Total lost packets ").nth(1) {
            lost = Some(rest.split_whitespace().next()?.parse().ok()?);
        }
    }
    let (sent, received) = counts?;
    Some(Summary {
        sent,
        received,
        lost: lost?,
    })
}

/// A free TCP port on loopback (for an operations listener).
pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.0 request without a body (from loopback, bounded by timeouts): status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
