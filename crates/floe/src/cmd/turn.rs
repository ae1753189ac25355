//! `floe turn`: the TURN relay (which also answers STUN Binding) alone; its flags are shared with
//! `floe serve`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use floe_turn::credentials::{CredentialStore, ExpiryPolicy, RestSecret, StaticUser};
use floe_turn::nonce::NonceSecret;
use floe_turn::policy::{Cidr, PeerPolicy};
use floe_turn::quota::{Bandwidth, QuotaConfig};
use floe_turn::server::TurnConfig;
use floe_turn_server::turn::{TurnService, TurnShellConfig};
use serde::Deserialize;

use crate::config::FileConfig;

/// Default realm (RFC 8489 §14.9).
pub const DEFAULT_REALM: &str = "floe";

/// TURN flags, shared by `floe turn` and `floe serve`. Each has a `[turn]` config-file key.
#[derive(Debug, Default, clap::Args)]
pub struct TurnArgs {
    /// TURN over TLS listening address (repeatable); needs --tls-cert and --tls-key.
    #[arg(long = "tls-listen", value_name = "ADDR:PORT")]
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Relay address to allocate from (repeatable, at most one per family). Default: the IP of
    /// the first listening address.
    #[arg(long = "relay-ip", value_name = "IP")]
    pub relay_ip: Vec<IpAddr>,
    /// Advertised relay IP for a server behind 1:1 NAT (repeatable, one per family).
    #[arg(long = "external-ip", value_name = "IP")]
    pub external_ip: Vec<IpAddr>,
    /// Realm for long-term credentials.
    #[arg(long, value_name = "NAME")]
    pub realm: Option<String>,
    /// Static user (repeatable).
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub user: Vec<String>,
    /// TURN REST API shared secret (repeatable: every one is accepted, for rotation).
    #[arg(long = "auth-secret", value_name = "SECRET")]
    pub auth_secret: Vec<String>,
    /// Open a peer range that the default policy denies (repeatable).
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peer: Vec<Cidr>,
    /// Deny a peer range (repeatable; wins over --allow-peer).
    #[arg(long = "deny-peer", value_name = "CIDR")]
    pub deny_peer: Vec<Cidr>,
    /// Relay port range.
    #[arg(long, value_name = "MIN-MAX")]
    pub relay_ports: Option<String>,
    /// End an allocation as soon as its REST credential expires (default: at its next Refresh).
    #[arg(long)]
    pub strict_expiry: bool,
    /// Relayed bytes per second per allocation, both directions (0 = unlimited). Default
    /// 2500000 (20 Mbit/s); packets beyond are dropped.
    #[arg(long, value_name = "BYTES")]
    pub max_bps: Option<u64>,
    /// Relayed bytes per second per user over all its allocations (0 = unlimited). Default
    /// 6250000 (50 Mbit/s).
    #[arg(long, value_name = "BYTES")]
    pub user_max_bps: Option<u64>,
    /// Answers to unauthenticated UDP requests (401 challenges) per second per source address.
    /// Default 10.
    #[arg(long, value_name = "N")]
    pub auth_rate: Option<u32>,
    /// Burst of such answers per source address. Default 40.
    #[arg(long, value_name = "N")]
    pub auth_burst: Option<u32>,
}

/// `[turn]` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    /// `--tls-listen`.
    #[serde(default)]
    pub tls_listen: Vec<SocketAddr>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--relay-ip`.
    #[serde(default)]
    pub relay_ips: Vec<IpAddr>,
    /// `--external-ip`.
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    /// `--realm`.
    pub realm: Option<String>,
    /// `--user`, as `NAME:PASSWORD` strings.
    #[serde(default)]
    pub users: Vec<String>,
    /// `--auth-secret`.
    #[serde(default)]
    pub auth_secrets: Vec<String>,
    /// `--allow-peer`.
    #[serde(default)]
    pub allow_peers: Vec<String>,
    /// `--deny-peer`.
    #[serde(default)]
    pub deny_peers: Vec<String>,
    /// `--relay-ports`, `"MIN-MAX"`.
    pub relay_ports: Option<String>,
    /// `--strict-expiry`.
    pub strict_expiry: Option<bool>,
    /// Allocations in total (486 beyond).
    pub max_allocations: Option<u32>,
    /// Allocations per user (486 beyond).
    pub max_allocations_per_user: Option<u32>,
    /// `--max-bps`.
    pub max_bps: Option<u64>,
    /// `--user-max-bps`.
    pub user_max_bps: Option<u64>,
    /// `--auth-rate`.
    pub auth_rate: Option<u32>,
    /// `--auth-burst`.
    pub auth_burst: Option<u32>,
    /// Unauthenticated UDP answers per second over all sources (default 2000).
    pub auth_rate_total: Option<u32>,
    /// Their burst over all sources (default 4000).
    pub auth_burst_total: Option<u32>,
    /// Permissions per allocation (508 beyond).
    pub max_permissions_per_allocation: Option<u32>,
    /// Channels per allocation (508 beyond).
    pub max_channels_per_allocation: Option<u32>,
    /// Default allocation lifetime, seconds.
    pub default_lifetime_secs: Option<u64>,
    /// Largest allocation lifetime, seconds.
    pub max_lifetime_secs: Option<u64>,
    /// TCP/TLS client connections at once.
    pub max_tcp_connections: Option<usize>,
    /// Idle TCP/TLS client connections are closed after this many seconds.
    pub tcp_idle_timeout_secs: Option<u64>,
}

/// Listening flags and the config file, shared by `floe turn` and `floe serve`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// TOML configuration file; flags override its keys.
    #[arg(long, short = 'c', env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    /// STUN/TURN listening address, UDP and TCP (repeatable). Default 127.0.0.1:3478.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Second IP address of this host: turns on RFC 5780 NAT discovery on the same ports
    /// (alternate port = primary port + 1).
    #[arg(long, value_name = "IP")]
    pub alternate_ip: Option<IpAddr>,
    /// UDP sockets (shards) per address (0 = one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

impl ListenArgs {
    /// The config file, or an empty one.
    pub fn file(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    /// Listening addresses from the flags, the file, or the default 127.0.0.1:3478.
    pub fn listen(&self, file: &FileConfig) -> Vec<SocketAddr> {
        if !self.listen.is_empty() {
            self.listen.clone()
        } else if !file.listen.is_empty() {
            file.listen.clone()
        } else {
            vec![SocketAddr::from(([127, 0, 0, 1], 3478))]
        }
    }

    /// Builds the TURN plan from these flags, `turn` and the file.
    pub fn plan(
        &self,
        turn: &TurnArgs,
        file: &FileConfig,
        generate_secret: bool,
    ) -> anyhow::Result<TurnPlan> {
        plan(
            self.listen(file),
            self.alternate_ip.or(file.alternate_ip),
            self.workers.or(file.workers).unwrap_or(0),
            turn,
            file,
            generate_secret,
        )
    }
}

/// Arguments of `floe turn`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listening options.
    #[command(flatten)]
    pub net: ListenArgs,
    /// TURN options.
    #[command(flatten)]
    pub turn: TurnArgs,
}

/// What a TURN start-up needs besides the state machine config, for printing.
#[derive(Debug)]
pub struct TurnPlan {
    /// The shell configuration.
    pub shell: TurnShellConfig,
    /// Whether a random REST secret was generated (no credentials were configured).
    pub generated_secret: Option<String>,
}

fn parse_ports(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("relay ports {s:?}: expected MIN-MAX"))?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("relay ports {s:?}: need 1 <= MIN <= MAX");
    }
    Ok(a..=b)
}

/// Builds the TURN configuration from flags and file. With `generate_secret` and no
/// credentials, a random REST secret is made (for `floe serve`, whose signalling server mints
/// credentials with it).
pub fn plan(
    listen: Vec<SocketAddr>,
    alternate_ip: Option<IpAddr>,
    workers: usize,
    args: &TurnArgs,
    file: &FileConfig,
    generate_secret: bool,
) -> anyhow::Result<TurnPlan> {
    let t = &file.turn;
    let realm = args
        .realm
        .clone()
        .or_else(|| t.realm.clone())
        .unwrap_or_else(|| DEFAULT_REALM.to_owned());
    let mut store = CredentialStore::new(realm);
    for u in args.user.iter().chain(&t.users) {
        let user: StaticUser = u
            .parse()
            .map_err(|e| anyhow::anyhow!("--user NAME:PASSWORD: {e}"))?;
        store
            .add_user(user)
            .map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    }
    let mut secrets: Vec<String> = args
        .auth_secret
        .iter()
        .chain(&t.auth_secrets)
        .cloned()
        .collect();
    let mut generated_secret = None;
    if secrets.is_empty() {
        if generate_secret {
            // `floe serve`: its signalling server mints REST credentials with this secret.
            let s: String = (0..32)
                .map(|_| {
                    let i = rand::random::<u8>() % 36;
                    char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(i)])
                })
                .collect();
            secrets.push(s.clone());
            generated_secret = Some(s);
        } else if args.user.is_empty() && t.users.is_empty() {
            bail!("no TURN credentials: give --user NAME:PASSWORD or --auth-secret SECRET");
        }
    }
    for s in &secrets {
        store.add_rest_secret(
            RestSecret::new(s.as_bytes()).map_err(|e| anyhow::anyhow!("--auth-secret: {e}"))?,
        );
    }
    if args.strict_expiry || t.strict_expiry.unwrap_or(false) {
        store.set_expiry_policy(ExpiryPolicy::Immediately);
    }
    let mut relay_ips: Vec<IpAddr> = args.relay_ip.iter().chain(&t.relay_ips).copied().collect();
    if relay_ips.is_empty() {
        match listen.first() {
            Some(l) if !l.ip().is_unspecified() => relay_ips.push(l.ip()),
            _ => bail!("listening on an unspecified address: give --relay-ip"),
        }
    }
    // The server's own addresses (listening, alternate, advertised) are never peers: a client
    // must not relay back into the server (hairpin).
    let own: Vec<IpAddr> = listen
        .iter()
        .map(|l| l.ip())
        .chain(alternate_ip)
        .chain(args.external_ip.iter().chain(&t.external_ips).copied())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let mut allow = args.allow_peer.clone();
    for c in &t.allow_peers {
        allow.push(
            c.parse()
                .map_err(|e| anyhow::anyhow!("allow_peers {c:?}: {e}"))?,
        );
    }
    let mut deny = args.deny_peer.clone();
    for c in &t.deny_peers {
        deny.push(
            c.parse()
                .map_err(|e| anyhow::anyhow!("deny_peers {c:?}: {e}"))?,
        );
    }
    let policy = PeerPolicy::new()
        .with_own_addresses(relay_ips.iter().copied().chain(own))
        .with_allow(allow)
        .with_deny(deny);
    let mut config = TurnConfig::new(
        store,
        relay_ips,
        NonceSecret::from_bytes(rand::random()),
        rand::random(),
    );
    config.policy = policy;
    let rl = &mut config.rate_limit;
    for (name, value, field) in [
        (
            "auth_rate",
            args.auth_rate.or(t.auth_rate),
            &mut rl.per_source_per_sec,
        ),
        (
            "auth_burst",
            args.auth_burst.or(t.auth_burst),
            &mut rl.per_source_burst,
        ),
        ("auth_rate_total", t.auth_rate_total, &mut rl.global_per_sec),
        ("auth_burst_total", t.auth_burst_total, &mut rl.global_burst),
    ] {
        if let Some(v) = value {
            anyhow::ensure!(
                v > 0,
                "{name} must be at least 1 (0 would refuse every login over UDP)"
            );
            *field = v;
        }
    }
    config.external_ips = args
        .external_ip
        .iter()
        .chain(&t.external_ips)
        .copied()
        .collect();
    if let Some(p) = args.relay_ports.as_deref().or(t.relay_ports.as_deref()) {
        config.relay_ports = parse_ports(p)?;
    }
    if let Some(s) = t.default_lifetime_secs {
        config.lifetimes.default = Duration::from_secs(s);
    }
    if let Some(s) = t.max_lifetime_secs {
        config.lifetimes.max = Duration::from_secs(s);
    }
    let mut quotas = QuotaConfig::default();
    if let Some(n) = t.max_allocations {
        quotas.max_allocations_total = n;
    }
    if let Some(n) = t.max_allocations_per_user {
        quotas.max_allocations_per_user = n;
    }
    if let Some(n) = t.max_permissions_per_allocation {
        quotas.max_permissions_per_allocation = n;
    }
    if let Some(n) = t.max_channels_per_allocation {
        quotas.max_channels_per_allocation = n;
    }
    if let Some(bps) = args.max_bps.or(t.max_bps) {
        quotas.allocation_bandwidth = bandwidth(bps);
    }
    if let Some(bps) = args.user_max_bps.or(t.user_max_bps) {
        quotas.user_bandwidth = bandwidth(bps);
    }
    let tls_listen: Vec<SocketAddr> = args
        .tls_listen
        .iter()
        .chain(&t.tls_listen)
        .copied()
        .collect();
    let tls = if tls_listen.is_empty() {
        None
    } else {
        let cert = args
            .tls_cert
            .clone()
            .or_else(|| t.tls_cert.clone())
            .context("--tls-listen needs --tls-cert")?;
        let key = args
            .tls_key
            .clone()
            .or_else(|| t.tls_key.clone())
            .context("--tls-listen needs --tls-key")?;
        Some(floe_turn_server::tls::server_config(&cert, &key)?)
    };
    let shell = TurnShellConfig {
        listen,
        alternate_ip,
        tls_listen,
        tls,
        workers,
        turn: config,
        quotas,
        max_tcp_connections: t.max_tcp_connections.unwrap_or(4096),
        tcp_idle_timeout: Duration::from_secs(t.tcp_idle_timeout_secs.unwrap_or(600)),
    };
    Ok(TurnPlan {
        shell,
        generated_secret,
    })
}

/// Binds the TURN service and prints what it started.
pub async fn start(plan: &TurnPlan) -> anyhow::Result<TurnService> {
    let service = TurnService::bind(plan.shell.clone())
        .await
        .context("starting the TURN server")?;
    for addr in service.all_addrs() {
        println!("floe: TURN listening on udp://{addr} and tcp://{addr} (STUN Binding too)");
    }
    for addr in service.tls_addrs() {
        println!("floe: TURN over TLS listening on tls://{addr}");
    }
    let ips: Vec<String> = plan
        .shell
        .turn
        .relay_ips
        .iter()
        .map(|i| i.to_string())
        .collect();
    println!(
        "floe: relaying from {} (ports {}-{}), realm {:?}",
        ips.join(", "),
        plan.shell.turn.relay_ports.start(),
        plan.shell.turn.relay_ports.end(),
        plan.shell.turn.realm()
    );
    if let Some(ip) = plan.shell.alternate_ip {
        println!("floe: RFC 5780 NAT discovery on (alternate IP {ip})");
    }
    Ok(service)
}

/// Runs `floe turn`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.net.file()?;
    let plan = args.net.plan(&args.turn, &file, false)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let service = start(&plan).await?;
        service.run(super::serve::shutdown_signal()).await;
        println!("floe: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// A bytes-per-second limit with a one-second burst; 0 means unlimited.
fn bandwidth(bytes_per_sec: u64) -> Option<Bandwidth> {
    (bytes_per_sec > 0).then(|| Bandwidth::per_sec(bytes_per_sec))
}
