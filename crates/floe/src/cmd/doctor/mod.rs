//! `floe doctor [URL]`: checks a floe deployment from wherever it runs, the way a client would
//! use it, and explains each failure in one sentence with the fix.
//!
//! From the signalling server's `/v1/ice-servers` (or ICE servers given as flags) it checks:
//! the signalling server answers and hands out ICE servers; every STUN server answers Binding
//! over UDP; every TURN URL (UDP, TCP, TLS) accepts a connection, presents a valid certificate
//! (TLS: name, issuer, expiry), accepts the credentials and allocates; the relayed address is one
//! peers can reach (the classic failure: a server behind a 1:1 NAT without `--external-ip`
//! advertises its private address); and the allocation relays a test packet both ways between
//! this machine and the relayed address, which needs the relay port range open.

mod probe;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use floe_peer::ice_servers::{parse_ice_servers, parse_url, IceServer, TurnTransport};
use floe_turn::client::TurnEvent;
use floe_turn::policy::default_deny;

use self::probe::{Conn, ConnectError, Probe};
use crate::http_client::{self, BaseUrl, Request};

/// Arguments of `floe doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The signalling server's base URL (`http://host:8080`, `https://signal.example`): its
    /// `/v1/ice-servers` gives the STUN/TURN servers and credentials to check.
    pub url: Option<String>,
    /// JWT for `/v1/ice-servers` in production mode (any room; `floe token` mints one).
    #[arg(long, env = "FLOE_TOKEN")]
    pub token: Option<String>,
    /// An ICE server to check as well (or instead): `stun:HOST:PORT`,
    /// `turn:HOST:PORT?transport=udp|tcp`, `turns:HOST:PORT`. Repeatable.
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<String>,
    /// Username for the `--ice-server` TURN URLs.
    #[arg(long)]
    pub ice_username: Option<String>,
    /// Password for the `--ice-server` TURN URLs.
    #[arg(long)]
    pub ice_credential: Option<String>,
    /// Extra trusted CA (or pinned self-signed certificate), PEM, for `turns:` and `https:`.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for each answer, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Warn,
    Fail,
}

/// The checks so far, printed as they are made.
#[derive(Debug, Default)]
struct Report {
    failures: usize,
    warnings: usize,
}

impl Report {
    fn say(&mut self, outcome: Outcome, what: &str, detail: &str) {
        let tag = match outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => {
                self.warnings += 1;
                "warn"
            }
            Outcome::Fail => {
                self.failures += 1;
                "FAIL"
            }
        };
        println!("  {tag}  {what}: {detail}");
    }
}

/// What the checks share.
#[derive(Debug)]
struct Ctx {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    /// The signalling server's address, when checked: the public address clients reach.
    signal_ip: Option<IpAddr>,
    /// Whether the ICE servers came from `/v1/ice-servers` (so credentials were minted there).
    minted: bool,
}

/// Runs `floe doctor`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.url.is_none() && args.ice_servers.is_empty() {
        anyhow::bail!("give the signalling server's URL, or --ice-server URLs to check");
    }
    let tls = Arc::new(
        floe_peer::tls::client_config(args.ca_file.as_deref()).context("TLS configuration")?,
    );
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout: a positive number of seconds")?;
    let mut ctx = Ctx {
        tls,
        timeout,
        signal_ip: None,
        minted: false,
    };
    let mut report = Report::default();
    let mut servers = Vec::new();
    if let Some(url) = &args.url {
        println!("floe doctor: checking {url}");
        let base = BaseUrl::parse(url)?;
        ctx.signal_ip = base.resolve().ok().map(|a| a.ip());
        ctx.minted = true;
        servers.extend(ice_servers_from(
            &base,
            args.token.as_deref(),
            &ctx,
            &mut report,
        ));
    }
    for url in &args.ice_servers {
        match parse_url(
            url,
            args.ice_username.as_deref(),
            args.ice_credential.as_deref(),
        ) {
            Ok(s) => servers.push(s),
            Err(e) => report.say(Outcome::Fail, url, &e.to_string()),
        }
    }
    for server in &servers {
        match server {
            IceServer::Stun { host, port } => check_stun(host, *port, &ctx, &mut report),
            IceServer::Turn { .. } => check_turn(server, &ctx, &mut report),
        }
    }
    println!(
        "floe doctor: {} problem{}, {} warning{}",
        report.failures,
        plural(report.failures),
        report.warnings,
        plural(report.warnings)
    );
    Ok(if report.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `GET /v1/ice-servers`, explained.
fn ice_servers_from(
    base: &BaseUrl,
    token: Option<&str>,
    ctx: &Ctx,
    report: &mut Report,
) -> Vec<IceServer> {
    let what = "signalling /v1/ice-servers";
    let request = Request {
        method: "GET",
        path: "/v1/ice-servers",
        token,
        body: None,
        connect_timeout: ctx.timeout,
        io_timeout: ctx.timeout,
    };
    let (code, body) = match http_client::request(base, &request, Some(&ctx.tls)) {
        Ok(r) => r,
        Err(e) => {
            report.say(
                Outcome::Fail,
                what,
                &format!(
                    "{e:#}. Is floe serve (or floe signal) running with --http on that address, and does the firewall or proxy let this machine reach it?"
                ),
            );
            return Vec::new();
        }
    };
    let error_code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    match code {
        200 => {}
        401 if token.is_none() => {
            report.say(Outcome::Fail, what, "the server wants a token (production mode): pass --token with a JWT signed by its --jwt-secret (floe token --secret S --room any mints one)");
            return Vec::new();
        }
        401 => {
            report.say(Outcome::Fail, what, &format!("the server refused the token ({error_code}): sign it with the server's --jwt-secret (or the key of --jwt-public-key), and check it has not expired"));
            return Vec::new();
        }
        _ => {
            report.say(
                Outcome::Fail,
                what,
                &format!("answered HTTP {code} {error_code}"),
            );
            return Vec::new();
        }
    }
    let json: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            report.say(
                Outcome::Fail,
                what,
                &format!("the answer is not JSON ({e}): is this a floe signalling server?"),
            );
            return Vec::new();
        }
    };
    let (servers, bad) = parse_ice_servers(json.get("iceServers").unwrap_or(&json));
    for e in bad {
        report.say(Outcome::Warn, what, &format!("unusable entry: {e}"));
    }
    if servers.is_empty() {
        report.say(Outcome::Fail, what, "hands out no STUN or TURN server: run floe serve (which lists its own), or give floe signal --stun-url/--turn-url and --turn-secret");
    } else {
        report.say(
            Outcome::Ok,
            what,
            &format!("answered with {} ICE server URLs", servers.len()),
        );
    }
    servers
}

/// Resolves `host:port` (first address).
fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

/// Whether `ip` is an address peers on the internet can reach (not on RFC 8656 §21.2.2's
/// special-purpose list: private, loopback, link-local, ...).
fn is_public(ip: IpAddr) -> bool {
    default_deny(ip).is_none()
}

/// The advice for a server address that does not answer: when the ICE server names a private
/// address while the signalling server was reached on a public one, the server is behind a NAT
/// and advertises the wrong address.
fn unreachable_advice(server: SocketAddr, ctx: &Ctx, proto: &str) -> String {
    match ctx.signal_ip {
        Some(public) if !is_public(server.ip()) && is_public(public) => format!(
            "{} is a private address, which clients on the internet cannot reach, while the signalling server answers on {public}: the server is behind a 1:1 NAT and advertises its private address. Start floe with --external-ip {public} (floe serve then hands out that address)",
            server.ip()
        ),
        _ => format!(
            "open {proto} port {} to {} in the server's firewall (and the cloud provider's security group), and check floe listens there (--listen, --tls-listen)",
            server.port(),
            server.ip()
        ),
    }
}

fn check_stun(host: &str, port: u16, ctx: &Ctx, report: &mut Report) {
    let what = format!("stun:{host}:{port} (udp)");
    let Some(server) = resolve(host, port) else {
        report.say(
            Outcome::Fail,
            &what,
            &format!("{host} does not resolve: fix the DNS name or the URL"),
        );
        return;
    };
    let local = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let result = UdpSocket::bind(local)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            floe_turn_server::stun_client::binding_udp(&s, server, None, ctx.timeout)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(b) => report.say(
            Outcome::Ok,
            &what,
            &format!("answers; this machine appears as {} from there", b.mapped),
        ),
        Err(e) => report.say(
            Outcome::Fail,
            &what,
            &format!("{e}: {}", unreachable_advice(server, ctx, "UDP")),
        ),
    }
}

fn check_turn(server: &IceServer, ctx: &Ctx, report: &mut Report) {
    let IceServer::Turn {
        host,
        port,
        transport,
        username,
        credential,
    } = server
    else {
        return;
    };
    let scheme = if *transport == TurnTransport::Tls {
        "turns"
    } else {
        "turn"
    };
    let what = format!("{scheme}:{host}:{port} ({transport})");
    let Some(addr) = resolve(host, *port) else {
        report.say(
            Outcome::Fail,
            &what,
            &format!("{host} does not resolve: fix the DNS name or the URL"),
        );
        return;
    };
    let proto = if *transport == TurnTransport::Udp {
        "UDP"
    } else {
        "TCP"
    };
    let conn = match Conn::connect(addr, *transport, host, &ctx.tls, ctx.timeout) {
        Ok(c) => c,
        Err(e) => {
            report.say(Outcome::Fail, &what, &connect_advice(&e, addr, ctx, proto));
            return;
        }
    };
    if *transport == TurnTransport::Tls {
        certificate_report(&conn, host, &what, report);
    }
    let mut probe = Probe::new(conn, addr, username, credential);
    let allocated = |p: &Probe| {
        p.events.iter().find_map(|e| match e {
            TurnEvent::Allocated {
                relayed, mapped, ..
            } => Some(Ok((*relayed, *mapped))),
            TurnEvent::AllocationFailed(err) => Some(Err(err.clone())),
            _ => None,
        })
    };
    let done = probe.run_until(ctx.timeout * 2, |p| allocated(p).is_some());
    let result = match done {
        Err(e) => {
            report.say(Outcome::Fail, &what, &io_advice(&e, addr, ctx, proto));
            return;
        }
        Ok(_) => allocated(&probe),
    };
    let (relayed, mapped) = match result {
        None => {
            report.say(
                Outcome::Fail,
                &what,
                &format!(
                    "no answer to Allocate within {:?}: {}",
                    ctx.timeout * 2,
                    unreachable_advice(addr, ctx, proto)
                ),
            );
            return;
        }
        Some(Err(e)) => {
            report.say(Outcome::Fail, &what, &allocate_advice(&e, ctx));
            return;
        }
        Some(Ok(a)) => a,
    };
    report.say(
        Outcome::Ok,
        &what,
        &format!("allocated {relayed} (this machine appears as {mapped})"),
    );
    if !is_public(relayed.ip()) && is_public(addr.ip()) {
        report.say(
            Outcome::Fail,
            &what,
            &format!(
                "the relayed address {relayed} is a private address that peers on the internet cannot reach, although this machine reached the server at {}: the server is behind a 1:1 NAT; start floe with --external-ip {} so that it advertises the public address",
                addr.ip(),
                addr.ip()
            ),
        );
    } else if mapped.ip() == relayed.ip() || mapped.ip() == addr.ip() {
        // This machine is the server: its own addresses are never relay peers (a client must
        // not relay back into the server), so the test cannot run from here.
        report.say(
            Outcome::Warn,
            &what,
            "relay test skipped: floe doctor runs on the server itself, whose own addresses are never relay peers; run it from another machine to test the relay ports",
        );
    } else {
        relay_check(&mut probe, relayed, mapped, &what, ctx, report);
    }
    probe.release();
}

fn connect_advice(e: &ConnectError, addr: SocketAddr, ctx: &Ctx, proto: &str) -> String {
    match e {
        ConnectError::Refused => format!(
            "{addr} refused the TCP connection: nothing listens there. floe takes TURN over TCP on each --listen port and TLS on --tls-listen; check the URL's port"
        ),
        ConnectError::TimedOut => format!(
            "no answer from {addr} over TCP: {}",
            unreachable_advice(addr, ctx, proto)
        ),
        ConnectError::Tls(e) => tls_advice(e),
        ConnectError::Io(e) => io_advice(e, addr, ctx, proto),
    }
}

/// A socket error talking to `addr`, explained.
fn io_advice(e: &std::io::Error, addr: SocketAddr, ctx: &Ctx, proto: &str) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NetworkUnreachable | K::HostUnreachable => format!(
            "{addr} is unreachable from this machine ({e}): {}",
            unreachable_advice(addr, ctx, proto)
        ),
        // Over UDP: an ICMP port unreachable came back.
        K::ConnectionRefused => format!(
            "{addr} answered that nothing listens on {proto} port {}: check floe's --listen and the URL's port",
            addr.port()
        ),
        K::UnexpectedEof | K::ConnectionReset => format!(
            "{addr} closed the connection during Allocate: see the server's log (a TCP connection limit, or not a TURN server on that port)"
        ),
        _ => format!("talking to {addr} failed: {e}"),
    }
}

fn tls_advice(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => "the TLS certificate does not name the host of the turns: URL: use a certificate whose subjectAltName holds that name (or IP), or fix the URL (floe serve --turn-url)".to_owned(),
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => "the TLS certificate has expired: renew it and restart floe (--tls-cert, --tls-key)".to_owned(),
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "the TLS certificate is not signed by a CA this machine trusts: browsers refuse it too; use a certificate from a public CA (or pass --ca-file to test a private CA)".to_owned(),
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// Names and expiry of the leaf certificate.
fn certificate_report(conn: &Conn, host: &str, what: &str, report: &mut Report) {
    let Some(der) = conn.peer_certificates().into_iter().next() else {
        return;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        report.say(Outcome::Warn, what, "the certificate could not be parsed");
        return;
    };
    let not_after = cert.validity().not_after;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let days = (not_after.timestamp() - now) / 86_400;
    let detail = format!("certificate for {host} valid until {not_after} ({days} days left)");
    if days < 14 {
        report.say(
            Outcome::Warn,
            what,
            &format!("{detail}: renew it soon (clients refuse it once it expires)"),
        );
    } else {
        report.say(Outcome::Ok, what, &detail);
    }
}

fn allocate_advice(e: &floe_turn::client::Error, ctx: &Ctx) -> String {
    match e.code() {
        Some(401) if ctx.minted => "the TURN server rejects the credentials /v1/ice-servers handed out (401): the signalling server mints them with a secret the TURN server does not accept. Give both the same secret (floe signal --turn-secret = floe turn --auth-secret; floe serve shares it itself)".to_owned(),
        Some(401) => "the TURN server rejects the credentials (401): wrong username or password, or an expired REST credential".to_owned(),
        Some(403) => "the TURN server refused the allocation (403 Forbidden)".to_owned(),
        Some(486) => "the user's allocation quota is reached (486): raise max_allocations_per_user, or end stale allocations".to_owned(),
        Some(508) => "the server has no capacity left (508): the relay port range or the allocation limit is exhausted".to_owned(),
        Some(300) => "the server redirects to another server (300 Try Alternate): it is draining; use the address in ALTERNATE-SERVER".to_owned(),
        _ => format!("Allocate failed: {e}"),
    }
}

/// A packet from this machine to the relayed address must come out of the allocation, and the
/// answer must come back: the relay port range is open both ways.
fn relay_check(
    probe: &mut Probe,
    relayed: SocketAddr,
    mapped: SocketAddr,
    what: &str,
    ctx: &Ctx,
    report: &mut Report,
) {
    let local = if relayed.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let Ok(peer) = UdpSocket::bind(local) else {
        report.say(
            Outcome::Warn,
            what,
            "no local UDP socket for the relay test",
        );
        return;
    };
    // This machine, as the relay sees it, is the peer.
    probe
        .client
        .create_permission(mapped.ip(), std::time::Instant::now());
    let permitted = |p: &Probe| {
        p.events.iter().find_map(|e| match e {
            TurnEvent::PermissionCreated(ip) if *ip == mapped.ip() => Some(Ok(())),
            TurnEvent::PermissionFailed { peer, error } if *peer == mapped.ip() => {
                Some(Err(error.clone()))
            }
            _ => None,
        })
    };
    let _ = probe.run_until(ctx.timeout, |p| permitted(p).is_some());
    match permitted(probe) {
        Some(Ok(())) => {}
        Some(Err(e)) if e.code() == Some(403) && !is_public(mapped.ip()) => {
            report.say(Outcome::Warn, what, &format!(
                "relay test skipped: the relay will not relay to this machine ({}, a private or local address its peer policy refuses, as it should); run floe doctor from a machine on the internet to test the relay ports",
                mapped.ip()
            ));
            return;
        }
        Some(Err(e)) => {
            report.say(Outcome::Fail, what, &format!(
                "CreatePermission for this machine ({}) failed: {e}; a public peer refused means a --deny-peer range covers it",
                mapped.ip()
            ));
            return;
        }
        None => {
            report.say(
                Outcome::Fail,
                what,
                "no answer to CreatePermission: the server stopped answering",
            );
            return;
        }
    }
    let ping = format!("floe-doctor-{:016x}", rand::random::<u64>()).into_bytes();
    if let Err(e) = peer.send_to(&ping, relayed) {
        report.say(
            Outcome::Fail,
            what,
            &format!("cannot send to the relayed address {relayed}: {e}"),
        );
        return;
    }
    let got = probe.run_until(ctx.timeout, |p| p.received.iter().any(|(_, d)| *d == ping));
    let Some(from) = probe
        .received
        .iter()
        .find(|(_, d)| *d == ping)
        .map(|(f, _)| *f)
    else {
        let _ = got;
        report.say(Outcome::Fail, what, &format!(
            "a packet sent to the relayed address {relayed} never came out of the allocation: UDP port {} is blocked on the way to the relay. Open the relay port range (--relay-ports, 49152-65535 by default) for UDP in the server's firewall and security group",
            relayed.port()
        ));
        return;
    };
    let pong = [ping.as_slice(), b"-back"].concat();
    if let Err(e) = probe.client.send_to(from, &pong, std::time::Instant::now()) {
        report.say(
            Outcome::Fail,
            what,
            &format!("the client could not send the answer: {e}"),
        );
        return;
    }
    let _ = probe.run_until(Duration::from_millis(200), |_| false);
    let mut buf = [0u8; 2048];
    let _ = peer.set_read_timeout(Some(ctx.timeout));
    let back = loop {
        match peer.recv_from(&mut buf) {
            Ok((n, src)) if src == relayed && buf[..n] == pong[..] => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    if back {
        report.say(
            Outcome::Ok,
            what,
            &format!("relays both ways between {relayed} and this machine ({from})"),
        );
    } else {
        report.say(Outcome::Fail, what, &format!(
            "the relay received the test packet but its answer from {relayed} never arrived: outgoing UDP from the relay ports is blocked"
        ));
    }
}
