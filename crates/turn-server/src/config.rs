//! Configuration: the STUN/TURN part of a floe config file and the matching command-line flags,
//! in the same recipe as `floe_signal_server::config`:
//!
//! | flags (clap) | file keys (serde, unknown keys are errors) |
//! |---|---|
//! | [`ListenArgs`] | [`ListenConfig`]: top level (`listen`, `alternate_ip`, `workers`) |
//! | [`StunArgs`] (`floe serve` only) | [`StunSection`]: `[stun]` |
//! | [`TurnArgs`] | [`TurnSection`]: `[turn]` |
//!
//! Each `*Args::apply` lays the flags that were given over the file's values: a single-valued
//! flag replaces its key, a repeatable TURN flag adds its values before the key's. Then
//! [`TurnSection::shell_config`] checks the settings and builds the [`TurnShellConfig`] that
//! [`crate::turn::TurnService::bind`] takes. A new option is one field in the `Args` struct, one
//! in the section, and one line in `apply` (plus its row in docs/turn.md).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::ParseIntError;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use floe_turn::credentials::{
    CredentialError, CredentialStore, ExpiryPolicy, RestSecret, StaticUser,
};
use floe_turn::nonce::NonceSecret;
use floe_turn::policy::{Cidr, CidrError, PeerPolicy};
use floe_turn::quota::{Bandwidth, QuotaConfig};
use floe_turn::server::TurnConfig;
use serde::{Deserialize, Serialize};

use crate::host_ips::{self, HostAddress, IpFamily, RelayChoice};
use crate::tls::TlsError;
use crate::turn::{
    StreamLimits, TurnShellConfig, UsageBy, UsageMetrics, XdpConfig, DEFAULT_USAGE_MAX_LABELS,
};
use floe_xdp::XdpMode;

/// Default realm (RFC 8489 §14.9).
pub const DEFAULT_REALM: &str = "floe";

/// Default STUN/TURN listening address (UDP and TCP).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 3478);

/// Listening flags, shared by `floe turn` and `floe serve`. Each has a top-level key of the same
/// name in the config file ([`ListenConfig`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListenArgs {
    /// STUN/TURN listening address, UDP and TCP (repeatable). Default 127.0.0.1:3478.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Second IP address of this host: turns on RFC 5780 NAT discovery on the same ports
    /// (alternate port = primary port + 1) for the listening addresses of its family
    /// (repeatable, at most once per family: one IPv4 and one IPv6 alternate).
    #[arg(long, value_name = "IP")]
    pub alternate_ip: Vec<IpAddr>,
    /// UDP sockets (shards) per address (0 = one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// The listening keys at the top level of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// STUN/TURN listening addresses (UDP and TCP on each); empty: [`DEFAULT_LISTEN`].
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 alternate IPs, at most one per family: `"192.0.2.2"` or a list
    /// `["192.0.2.2", "2001:db8::2"]`.
    #[serde(deserialize_with = "one_or_many")]
    pub alternate_ip: Vec<IpAddr>,
    /// UDP sockets per address (default 0 = one per core).
    pub workers: Option<usize>,
}

impl ListenArgs {
    /// Applies the flags that were given on top of `config` (usually from the file).
    pub fn apply(self, config: &mut ListenConfig) {
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        if !self.alternate_ip.is_empty() {
            config.alternate_ip = self.alternate_ip;
        }
        if self.workers.is_some() {
            config.workers = self.workers;
        }
    }
}

impl ListenConfig {
    /// The listening addresses, or [`DEFAULT_LISTEN`].
    pub fn addrs(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty() {
            vec![DEFAULT_LISTEN]
        } else {
            self.listen.clone()
        }
    }
}

/// STUN flags (`floe serve`). Each has a `[stun]` config-file key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StunArgs {
    /// SOFTWARE attribute in STUN/TURN responses ("" to omit).
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,
}

/// `[stun]` section of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StunSection {
    /// SOFTWARE attribute; empty string omits it. Flag: `--software`.
    pub software: Option<String>,
    /// Largest PADDING echoed in RFC 5780 responses, bytes.
    pub max_padding: Option<usize>,
}

impl StunArgs {
    /// Applies the flags that were given on top of `section`.
    pub fn apply(self, section: &mut StunSection) {
        if self.software.is_some() {
            section.software = self.software;
        }
    }
}

impl StunSection {
    /// Sets what this section sets in the state machine's configuration (STUN Binding is
    /// answered by the TURN state machine); unset keys keep floe-turn's defaults.
    pub fn apply_to(&self, config: &mut TurnConfig) {
        if let Some(s) = &self.software {
            let s = if s.is_empty() { None } else { Some(s.clone()) };
            config.software = s.clone();
            config.binding.software = s;
        }
        if let Some(p) = self.max_padding {
            config.binding.max_padding = p;
        }
    }
}

/// TURN flags, shared by `floe turn` and `floe serve`. Each has a `[turn]` config-file key
/// ([`TurnSection`]).
#[derive(Debug, Clone, Default, clap::Args)]
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
    /// TCP and TLS client connections at once. Default 4096; never more than half the
    /// open-files limit (ulimit -n).
    #[arg(long, value_name = "N")]
    pub max_tcp_connections: Option<usize>,
    /// TCP and TLS client connections at once from one IP address (IPv6: one /64). Default 64.
    #[arg(long, value_name = "N")]
    pub max_tcp_connections_per_ip: Option<usize>,
    /// Seconds a TLS handshake may take. Default 10.
    #[arg(long, value_name = "SECS")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Seconds a TCP/TLS client may go without sending a complete STUN message or ChannelData
    /// frame (bytes that do not complete one do not count). Default 600.
    #[arg(long, value_name = "SECS")]
    pub tcp_idle_timeout_secs: Option<u64>,
    /// Seconds a TCP/TLS client connection may live without an allocation. Default 60.
    #[arg(long, value_name = "SECS")]
    pub tcp_unallocated_timeout_secs: Option<u64>,
    /// Seconds a write to a TCP/TLS client may make no progress before the connection is
    /// closed. Default 30.
    #[arg(long, value_name = "SECS")]
    pub tcp_write_timeout_secs: Option<u64>,
    /// Bytes queued for one TCP/TLS client; newer frames beyond are dropped. Default 131072.
    #[arg(long, value_name = "BYTES")]
    pub tcp_queue_bytes: Option<usize>,
    /// Kernel fast path for UDP allocations over UDP, IPv4: ChannelData, Send/Data indications,
    /// relay-to-relay (docs/xdp.md): off, auto, native or generic. Default off. Needs root (CAP_BPF, CAP_NET_ADMIN), --xdp-interface, and
    /// --max-bps 0 --user-max-bps 0 (the kernel path does not enforce bandwidth caps yet).
    #[arg(long, value_name = "MODE")]
    pub xdp: Option<String>,
    /// Interface to attach the XDP fast path to (repeatable, at most 8).
    #[arg(long = "xdp-interface", value_name = "IF")]
    pub xdp_interface: Vec<String>,
    /// Relayed-bytes metric per identity (docs/operations.md §7): off, room or tenant, from
    /// the TURN usernames floe's signalling server mints. Default off (no per-identity label).
    #[arg(long, value_name = "off|room|tenant")]
    pub usage_metrics: Option<String>,
    /// Distinct room or tenant labels in the usage metric; the rest are counted under
    /// `_other`. Default 1000.
    #[arg(long, value_name = "N")]
    pub usage_metrics_max_labels: Option<usize>,
}

/// `[turn]` section of the config file. Unset keys keep floe-turn's defaults (docs/turn.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
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
    /// `--allow-peer`, as CIDR strings (checked by [`TurnSection::shell_config`]).
    #[serde(default)]
    pub allow_peers: Vec<String>,
    /// `--deny-peer`, as CIDR strings.
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
    /// `--max-tcp-connections`.
    pub max_tcp_connections: Option<usize>,
    /// `--max-tcp-connections-per-ip`.
    pub max_tcp_connections_per_ip: Option<usize>,
    /// `--tls-handshake-timeout-secs`.
    pub tls_handshake_timeout_secs: Option<u64>,
    /// `--tcp-idle-timeout-secs`.
    pub tcp_idle_timeout_secs: Option<u64>,
    /// `--tcp-unallocated-timeout-secs`.
    pub tcp_unallocated_timeout_secs: Option<u64>,
    /// `--tcp-write-timeout-secs`.
    pub tcp_write_timeout_secs: Option<u64>,
    /// `--tcp-queue-bytes`.
    pub tcp_queue_bytes: Option<usize>,
    /// `--xdp`: `"off"` (default), `"auto"`, `"native"` or `"generic"`.
    pub xdp: Option<String>,
    /// `--xdp-interface`.
    #[serde(default)]
    pub xdp_interfaces: Vec<String>,
    /// `--usage-metrics`: `"off"` (default), `"room"` or `"tenant"`.
    pub usage_metrics: Option<String>,
    /// `--usage-metrics-max-labels`.
    pub usage_metrics_max_labels: Option<usize>,
}

impl TurnArgs {
    /// Applies the flags that were given on top of `section` (usually from the file): a
    /// single-valued flag replaces its key; a repeatable flag's values come before the key's.
    pub fn apply(self, section: &mut TurnSection) {
        fn set<T>(dst: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *dst = v;
            }
        }
        fn prepend<T>(dst: &mut Vec<T>, v: impl IntoIterator<Item = T>) {
            dst.splice(0..0, v);
        }
        prepend(&mut section.tls_listen, self.tls_listen);
        set(&mut section.tls_cert, self.tls_cert);
        set(&mut section.tls_key, self.tls_key);
        prepend(&mut section.relay_ips, self.relay_ip);
        prepend(&mut section.external_ips, self.external_ip);
        set(&mut section.realm, self.realm);
        prepend(&mut section.users, self.user);
        prepend(&mut section.auth_secrets, self.auth_secret);
        prepend(
            &mut section.allow_peers,
            self.allow_peer.iter().map(Cidr::to_string),
        );
        prepend(
            &mut section.deny_peers,
            self.deny_peer.iter().map(Cidr::to_string),
        );
        set(&mut section.relay_ports, self.relay_ports);
        if self.strict_expiry {
            section.strict_expiry = Some(true);
        }
        set(&mut section.max_bps, self.max_bps);
        set(&mut section.user_max_bps, self.user_max_bps);
        set(&mut section.auth_rate, self.auth_rate);
        set(&mut section.auth_burst, self.auth_burst);
        set(&mut section.max_tcp_connections, self.max_tcp_connections);
        set(
            &mut section.max_tcp_connections_per_ip,
            self.max_tcp_connections_per_ip,
        );
        set(
            &mut section.tls_handshake_timeout_secs,
            self.tls_handshake_timeout_secs,
        );
        set(
            &mut section.tcp_idle_timeout_secs,
            self.tcp_idle_timeout_secs,
        );
        set(
            &mut section.tcp_unallocated_timeout_secs,
            self.tcp_unallocated_timeout_secs,
        );
        set(
            &mut section.tcp_write_timeout_secs,
            self.tcp_write_timeout_secs,
        );
        set(&mut section.tcp_queue_bytes, self.tcp_queue_bytes);
        set(&mut section.xdp, self.xdp);
        prepend(&mut section.xdp_interfaces, self.xdp_interface);
        set(&mut section.usage_metrics, self.usage_metrics);
        set(
            &mut section.usage_metrics_max_labels,
            self.usage_metrics_max_labels,
        );
    }
}

/// A TURN start-up: the shell configuration and what to tell the operator about it.
#[derive(Debug)]
pub struct TurnPlan {
    /// The shell configuration.
    pub shell: TurnShellConfig,
    /// The random REST secret generated because no credentials were configured, if any.
    pub generated_secret: Option<String>,
    /// The relay addresses chosen from the host's addresses (wildcard listener, no
    /// `--relay-ip`); empty when they were configured or taken from `--listen`.
    pub auto_relay: Vec<RelayChoice>,
}

/// A STUN/TURN configuration that cannot be used. The messages name the flag or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `--user` / `users` entry is not `NAME:PASSWORD`.
    #[error("--user NAME:PASSWORD: {0}")]
    UserSyntax(CredentialError),
    /// A user could not be added (for example a duplicate name).
    #[error("--user: {0}")]
    User(CredentialError),
    /// Neither users nor REST secrets (and none to generate).
    #[error("no TURN credentials: give --user NAME:PASSWORD or --auth-secret SECRET")]
    NoCredentials,
    /// A REST secret is unusable.
    #[error("--auth-secret: {0}")]
    AuthSecret(CredentialError),
    /// Two `--alternate-ip` of one family.
    #[error("--alternate-ip {0} and {1}: at most one alternate IP per address family")]
    AlternateTwice(IpAddr, IpAddr),
    /// An `--alternate-ip` whose family no listening address has.
    #[error("--alternate-ip {0}: no --listen address of its family")]
    AlternateUnused(IpAddr),
    /// No relay address given, the first listening address is a wildcard and the host has no
    /// address a peer could reach (only loopback, link-local and the like).
    #[error("listening on a wildcard address and the host has no global or private address of that family to relay from: give --relay-ip")]
    NoRelayIp,
    /// The host's interface addresses could not be read (for a wildcard listening address).
    #[error("reading the host's addresses for the wildcard listening address: {0}")]
    HostAddresses(io::Error),
    /// An `allow_peers`/`deny_peers` entry is not a CIDR prefix (host bits set, say).
    #[error("{key} {input:?}: {error}")]
    PeerRange {
        /// `allow_peers` or `deny_peers`.
        key: &'static str,
        /// The entry.
        input: String,
        /// Why it was refused.
        error: CidrError,
    },
    /// A rate-limit key or flag is zero.
    #[error("{0} must be at least 1 (0 would refuse every login over UDP)")]
    ZeroAuthRate(&'static str),
    /// A connection limit or timeout key or flag is zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// `relay_ports` is not `MIN-MAX`.
    #[error("relay ports {0:?}: expected MIN-MAX")]
    PortsSyntax(String),
    /// A `relay_ports` bound is not a number.
    #[error(transparent)]
    PortNumber(#[from] ParseIntError),
    /// `relay_ports` bounds out of order or zero.
    #[error("relay ports {0:?}: need 1 <= MIN <= MAX")]
    PortsRange(String),
    /// TLS listening addresses without a certificate or key (`"--tls-cert"`, `"--tls-key"`).
    #[error("--tls-listen needs {0}")]
    TlsMissing(&'static str),
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `xdp` is not off, auto, native or generic.
    #[error("--xdp: {0}")]
    XdpMode(String),
    /// XDP without an interface.
    #[error("--xdp {0} needs at least one --xdp-interface")]
    XdpNoInterface(XdpMode),
    /// `usage_metrics` is not off, room or tenant.
    #[error("--usage-metrics: {0}")]
    UsageMetrics(String),
    /// `usage_metrics_max_labels` is 0.
    #[error("usage_metrics_max_labels must be at least 1")]
    UsageMaxLabels,
}

impl TurnSection {
    /// Checks the settings (flags already applied) and builds the shell configuration for
    /// `listen`. With `generate_secret` and no REST secret, a random one is made (for `floe
    /// serve`, whose signalling server mints credentials with it); without it, a section with
    /// no credentials at all is refused.
    pub fn shell_config(
        &self,
        listen: &ListenConfig,
        generate_secret: bool,
    ) -> Result<TurnPlan, ConfigError> {
        self.shell_config_on(listen, generate_secret, host_ips::host_addresses)
    }

    /// [`TurnSection::shell_config`] with the host's addresses read by `host` (called only when
    /// a listening address is a wildcard).
    pub fn shell_config_on(
        &self,
        listen: &ListenConfig,
        generate_secret: bool,
        host: impl FnOnce() -> io::Result<Vec<HostAddress>>,
    ) -> Result<TurnPlan, ConfigError> {
        let addrs = listen.addrs();
        let (store, generated_secret) = self.credentials(generate_secret)?;
        // A wildcard listener answers on every address of the host: all of them are the
        // server's own.
        let wildcard: Vec<IpFamily> = addrs
            .iter()
            .filter(|l| l.ip().is_unspecified())
            .map(|l| IpFamily::of(l.ip()))
            .collect();
        let host = if wildcard.is_empty() {
            Vec::new()
        } else {
            host().map_err(ConfigError::HostAddresses)?
        };
        let mut relay_ips = self.relay_ips.clone();
        let mut auto_relay = Vec::new();
        if relay_ips.is_empty() {
            match addrs.first() {
                Some(l) if !l.ip().is_unspecified() => relay_ips.push(l.ip()),
                _ => {
                    auto_relay = host_ips::choose(&host, &wildcard);
                    if auto_relay.is_empty() {
                        return Err(ConfigError::NoRelayIp);
                    }
                    relay_ips.extend(auto_relay.iter().map(|c| c.address.ip));
                }
            }
        }
        // The server's own addresses (listening, alternate, advertised) are never peers: a
        // client must not relay back into the server (hairpin).
        let own: Vec<IpAddr> = addrs
            .iter()
            .map(|l| l.ip())
            .chain(listen.alternate_ip.iter().copied())
            .chain(self.external_ips.iter().copied())
            .chain(host.iter().map(|h| h.ip))
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let policy = PeerPolicy::new()
            .with_own_addresses(relay_ips.iter().copied().chain(own))
            .with_allow(peer_ranges("allow_peers", &self.allow_peers)?)
            .with_deny(peer_ranges("deny_peers", &self.deny_peers)?);
        let mut config = TurnConfig::new(
            store,
            relay_ips,
            NonceSecret::from_bytes(rand::random()),
            rand::random(),
        );
        config.policy = policy;
        self.apply_rate_limits(&mut config)?;
        config.external_ips = self.external_ips.clone();
        if let Some(p) = self.relay_ports.as_deref() {
            config.relay_ports = parse_ports(p)?;
        }
        if let Some(s) = self.default_lifetime_secs {
            config.lifetimes.default = Duration::from_secs(s);
        }
        if let Some(s) = self.max_lifetime_secs {
            config.lifetimes.max = Duration::from_secs(s);
        }
        let alternate_ips = alternates(listen, &addrs)?;
        let shell = TurnShellConfig {
            listen: addrs,
            alternate_ips,
            tls_listen: self.tls_listen.clone(),
            tls: self.tls()?,
            workers: listen.workers.unwrap_or(0),
            turn: config,
            quotas: self.quotas(),
            stream: self.stream_limits()?,
            xdp: self.xdp()?,
            usage: self.usage_metrics()?,
        };
        Ok(TurnPlan {
            shell,
            generated_secret,
            auto_relay,
        })
    }

    /// The usage metrics settings, checked.
    fn usage_metrics(&self) -> Result<UsageMetrics, ConfigError> {
        let by = match self.usage_metrics.as_deref() {
            None => UsageBy::Off,
            Some(s) => s.parse().map_err(ConfigError::UsageMetrics)?,
        };
        let max_labels = match self.usage_metrics_max_labels {
            None => DEFAULT_USAGE_MAX_LABELS,
            Some(0) => return Err(ConfigError::UsageMaxLabels),
            Some(n) => n,
        };
        Ok(UsageMetrics { by, max_labels })
    }

    /// The XDP settings, checked: a mode other than off needs an interface. Bandwidth caps apply
    /// to the kernel path too (charged every polling interval; see docs/xdp.md).
    fn xdp(&self) -> Result<XdpConfig, ConfigError> {
        let mode: XdpMode = match self.xdp.as_deref() {
            None => XdpMode::Off,
            Some(m) => m.parse().map_err(ConfigError::XdpMode)?,
        };
        if mode != XdpMode::Off && self.xdp_interfaces.is_empty() {
            return Err(ConfigError::XdpNoInterface(mode));
        }
        Ok(XdpConfig {
            mode,
            interfaces: self.xdp_interfaces.clone(),
        })
    }

    /// The credential store (realm, users, REST secrets, expiry policy) and the generated
    /// secret, if one was made.
    fn credentials(
        &self,
        generate_secret: bool,
    ) -> Result<(CredentialStore, Option<String>), ConfigError> {
        let realm = self.realm.as_deref().unwrap_or(DEFAULT_REALM);
        let mut store = CredentialStore::new(realm);
        for u in &self.users {
            let user: StaticUser = u.parse().map_err(ConfigError::UserSyntax)?;
            store.add_user(user).map_err(ConfigError::User)?;
        }
        let mut secrets = self.auth_secrets.clone();
        let mut generated_secret = None;
        if secrets.is_empty() {
            if generate_secret {
                let s = random_secret();
                secrets.push(s.clone());
                generated_secret = Some(s);
            } else if self.users.is_empty() {
                return Err(ConfigError::NoCredentials);
            }
        }
        for s in &secrets {
            store.add_rest_secret(RestSecret::new(s.as_bytes()).map_err(ConfigError::AuthSecret)?);
        }
        if self.strict_expiry.unwrap_or(false) {
            store.set_expiry_policy(ExpiryPolicy::Immediately);
        }
        Ok((store, generated_secret))
    }

    /// The TCP/TLS connection limits: each at least 1; unset keys keep
    /// [`StreamLimits::default`].
    fn stream_limits(&self) -> Result<StreamLimits, ConfigError> {
        /// Sets `dst` from a key that must not be zero (0 would refuse every connection or
        /// close it at once).
        fn set<T: Copy + PartialEq + From<u8>, U>(
            name: &'static str,
            v: Option<T>,
            dst: &mut U,
            convert: fn(T) -> U,
        ) -> Result<(), ConfigError> {
            match v {
                Some(n) if n == T::from(0) => Err(ConfigError::ZeroLimit(name)),
                Some(n) => {
                    *dst = convert(n);
                    Ok(())
                }
                None => Ok(()),
            }
        }
        fn count(name: &'static str, v: Option<usize>, dst: &mut usize) -> Result<(), ConfigError> {
            set(name, v, dst, |n| n)
        }
        fn secs(name: &'static str, v: Option<u64>, dst: &mut Duration) -> Result<(), ConfigError> {
            set(name, v, dst, Duration::from_secs)
        }
        let mut l = StreamLimits::default();
        count(
            "max_tcp_connections",
            self.max_tcp_connections,
            &mut l.max_connections,
        )?;
        count(
            "max_tcp_connections_per_ip",
            self.max_tcp_connections_per_ip,
            &mut l.max_per_ip,
        )?;
        count("tcp_queue_bytes", self.tcp_queue_bytes, &mut l.queue_bytes)?;
        secs(
            "tls_handshake_timeout_secs",
            self.tls_handshake_timeout_secs,
            &mut l.tls_handshake_timeout,
        )?;
        secs(
            "tcp_idle_timeout_secs",
            self.tcp_idle_timeout_secs,
            &mut l.idle_timeout,
        )?;
        secs(
            "tcp_unallocated_timeout_secs",
            self.tcp_unallocated_timeout_secs,
            &mut l.unallocated_timeout,
        )?;
        secs(
            "tcp_write_timeout_secs",
            self.tcp_write_timeout_secs,
            &mut l.write_timeout,
        )?;
        Ok(l)
    }

    /// `auth_rate`, `auth_burst` and their totals: each at least 1.
    fn apply_rate_limits(&self, config: &mut TurnConfig) -> Result<(), ConfigError> {
        let rl = &mut config.rate_limit;
        for (name, value, field) in [
            ("auth_rate", self.auth_rate, &mut rl.per_source_per_sec),
            ("auth_burst", self.auth_burst, &mut rl.per_source_burst),
            (
                "auth_rate_total",
                self.auth_rate_total,
                &mut rl.global_per_sec,
            ),
            (
                "auth_burst_total",
                self.auth_burst_total,
                &mut rl.global_burst,
            ),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    return Err(ConfigError::ZeroAuthRate(name));
                }
                *field = v;
            }
        }
        Ok(())
    }

    /// Allocation counts and bandwidth.
    fn quotas(&self) -> QuotaConfig {
        let mut quotas = QuotaConfig::default();
        if let Some(n) = self.max_allocations {
            quotas.max_allocations_total = n;
        }
        if let Some(n) = self.max_allocations_per_user {
            quotas.max_allocations_per_user = n;
        }
        if let Some(n) = self.max_permissions_per_allocation {
            quotas.max_permissions_per_allocation = n;
        }
        if let Some(n) = self.max_channels_per_allocation {
            quotas.max_channels_per_allocation = n;
        }
        if let Some(bps) = self.max_bps {
            quotas.allocation_bandwidth = bandwidth(bps);
        }
        if let Some(bps) = self.user_max_bps {
            quotas.user_bandwidth = bandwidth(bps);
        }
        quotas
    }

    /// The TLS configuration when there are TLS listening addresses.
    fn tls(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
        if self.tls_listen.is_empty() {
            return Ok(None);
        }
        let cert = self
            .tls_cert
            .as_ref()
            .ok_or(ConfigError::TlsMissing("--tls-cert"))?;
        let key = self
            .tls_key
            .as_ref()
            .ok_or(ConfigError::TlsMissing("--tls-key"))?;
        Ok(Some(crate::tls::server_config(cert, key)?))
    }
}

fn peer_ranges(key: &'static str, entries: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    entries
        .iter()
        .map(|c| {
            c.parse().map_err(|error| ConfigError::PeerRange {
                key,
                input: c.clone(),
                error,
            })
        })
        .collect()
}

fn parse_ports(s: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| ConfigError::PortsSyntax(s.to_owned()))?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        return Err(ConfigError::PortsRange(s.to_owned()));
    }
    Ok(a..=b)
}

/// A 32-character REST secret from `[a-z0-9]`.
fn random_secret() -> String {
    (0..32)
        .map(|_| {
            let i = rand::random::<u8>() % 36;
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(i)])
        })
        .collect()
}

/// A bytes-per-second limit with a one-second burst; 0 means unlimited.
fn bandwidth(bytes_per_sec: u64) -> Option<Bandwidth> {
    (bytes_per_sec > 0).then(|| Bandwidth::per_sec(bytes_per_sec))
}

/// The RFC 5780 alternate IPs, checked: at most one per family, each with a listening address
/// of its family (the listening addresses of a family without one answer plain Binding).
fn alternates(listen: &ListenConfig, addrs: &[SocketAddr]) -> Result<Vec<IpAddr>, ConfigError> {
    let ips = &listen.alternate_ip;
    for (i, a) in ips.iter().enumerate() {
        if let Some(b) = ips[..i].iter().find(|b| b.is_ipv4() == a.is_ipv4()) {
            return Err(ConfigError::AlternateTwice(*b, *a));
        }
        if !addrs.iter().any(|l| l.is_ipv4() == a.is_ipv4()) {
            return Err(ConfigError::AlternateUnused(*a));
        }
    }
    Ok(ips.clone())
}

/// A TOML value that is one item or a list of them (for `alternate_ip`).
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        turn: TurnArgs,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap()
    }

    fn error(section: &TurnSection) -> String {
        section
            .shell_config(&ListenConfig::default(), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn one_alternate_ip_per_family() {
        let section: TurnSection = toml::from_str("users = [\"bob:pw\"]\n").unwrap();
        let dual = |alts: &str| -> Result<TurnPlan, ConfigError> {
            let listen: ListenConfig = toml::from_str(&format!(
                "listen = [\"127.0.0.1:3478\", \"[::1]:3478\"]\nalternate_ip = {alts}\n"
            ))
            .unwrap();
            section.shell_config(&listen, false)
        };
        let plan = dual("[\"127.0.0.2\", \"fd00::2\"]").unwrap();
        let want: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(plan.shell.alternate_ips, want);
        // One IP, not a list, still reads (the key's earlier form).
        assert_eq!(
            dual("\"127.0.0.2\"").unwrap().shell.alternate_ips,
            want[..1]
        );
        let err = dual("[\"127.0.0.2\", \"127.0.0.3\"]").err().unwrap();
        assert_eq!(
            err.to_string(),
            "--alternate-ip 127.0.0.2 and 127.0.0.3: at most one alternate IP per address family"
        );
        let v4_only: ListenConfig =
            toml::from_str("listen = [\"127.0.0.1:3478\"]\nalternate_ip = \"fd00::2\"\n").unwrap();
        let err = section.shell_config(&v4_only, false).err().unwrap();
        assert_eq!(
            err.to_string(),
            "--alternate-ip fd00::2: no --listen address of its family"
        );
        let mut flags = ListenConfig::default();
        parse(&["--alternate-ip", "127.0.0.2", "--alternate-ip", "::2"])
            .listen
            .apply(&mut flags);
        assert_eq!(flags.alternate_ip.len(), 2);
    }

    fn host(list: &[&str]) -> Vec<HostAddress> {
        list.iter()
            .map(|ip| HostAddress {
                interface: "eth0".to_owned(),
                ip: ip.parse().unwrap(),
            })
            .collect()
    }

    #[test]
    fn a_wildcard_listener_relays_from_the_hosts_address_of_each_family() {
        let section: TurnSection = toml::from_str("users = [\"bob:pw\"]\n").unwrap();
        let listen: ListenConfig =
            toml::from_str("listen = [\"0.0.0.0:3478\", \"[::]:3478\"]\n").unwrap();
        let addrs = [
            "127.0.0.1",
            "10.1.0.1",
            "11.0.0.1",
            "::1",
            "fe80::1",
            "2a00::1",
        ];
        let plan = section
            .shell_config_on(&listen, false, || Ok(host(&addrs)))
            .unwrap();
        let want: Vec<IpAddr> = vec!["11.0.0.1".parse().unwrap(), "2a00::1".parse().unwrap()];
        assert_eq!(plan.shell.turn.relay_ips, want);
        assert_eq!(plan.auto_relay.len(), 2);
        // Every host address is the server's own: never a peer, even where public.
        let policy = &plan.shell.turn.policy;
        assert!(policy.check("11.0.0.1:9".parse().unwrap()).is_err());
        assert!(policy.check("11.0.0.2:9".parse().unwrap()).is_ok());
        // Only IPv4 listened on: only an IPv4 relay address.
        let v4: ListenConfig = toml::from_str("listen = [\"0.0.0.0:3478\"]\n").unwrap();
        let plan = section
            .shell_config_on(&v4, false, || Ok(host(&addrs)))
            .unwrap();
        assert_eq!(plan.shell.turn.relay_ips, want[..1]);
        // A host with nothing a peer could reach is refused with the flag to give.
        let err = section
            .shell_config_on(&v4, false, || Ok(host(&["127.0.0.1", "169.254.0.1"])))
            .err()
            .unwrap();
        assert!(err.to_string().contains("give --relay-ip"), "{err}");
        // --relay-ip wins, and a specific listening address is not looked up at all.
        let given: TurnSection =
            toml::from_str("users = [\"bob:pw\"]\nrelay_ips = [\"11.0.0.9\"]\n").unwrap();
        let plan = given
            .shell_config_on(&v4, false, || Ok(host(&addrs)))
            .unwrap();
        assert!(plan.auto_relay.is_empty());
        let one: ListenConfig = toml::from_str("listen = [\"127.0.0.1:3478\"]\n").unwrap();
        let plan = section
            .shell_config_on(&one, false, || panic!("host addresses read"))
            .unwrap();
        assert!(plan.auto_relay.is_empty());
    }

    #[test]
    fn flags_override_or_add_to_file_keys() {
        let mut section: TurnSection = toml::from_str(
            "realm = \"file\"\nusers = [\"bob:pw\"]\nallow_peers = [\"192.0.2.0/24\"]\n\
             auth_rate = 5\nauth_burst = 6\n",
        )
        .unwrap();
        let mut listen: ListenConfig =
            toml::from_str("listen = [\"127.0.0.1:4000\"]\nworkers = 2\n").unwrap();
        let cli = parse(&[
            "--realm",
            "flag",
            "--user",
            "alice:pw",
            "--allow-peer",
            "10.0.0.0/8",
            "--auth-rate",
            "7",
            "--strict-expiry",
            "--workers",
            "3",
            "--max-tcp-connections-per-ip",
            "5",
            "--tcp-unallocated-timeout-secs",
            "20",
        ]);
        cli.listen.apply(&mut listen);
        cli.turn.apply(&mut section);
        assert_eq!(section.realm.as_deref(), Some("flag"));
        assert_eq!(section.users, ["alice:pw", "bob:pw"]);
        assert_eq!(section.allow_peers, ["10.0.0.0/8", "192.0.2.0/24"]);
        assert_eq!((section.auth_rate, section.auth_burst), (Some(7), Some(6)));
        assert_eq!(section.strict_expiry, Some(true));
        assert_eq!(listen.addrs(), [SocketAddr::from(([127, 0, 0, 1], 4000))]);
        let plan = section.shell_config(&listen, false).unwrap();
        assert_eq!(plan.shell.workers, 3);
        assert_eq!(plan.shell.turn.realm(), "flag");
        assert_eq!(plan.shell.turn.rate_limit.per_source_per_sec, 7);
        assert_eq!(plan.shell.stream.max_per_ip, 5);
        assert_eq!(
            plan.shell.stream.unallocated_timeout,
            Duration::from_secs(20)
        );
        assert!(plan.generated_secret.is_none());
    }

    #[test]
    fn defaults_and_a_generated_secret() {
        let plan = TurnSection::default()
            .shell_config(&ListenConfig::default(), true)
            .unwrap();
        assert_eq!(plan.shell.listen, [DEFAULT_LISTEN]);
        assert_eq!(plan.shell.turn.realm(), DEFAULT_REALM);
        assert_eq!(plan.shell.turn.relay_ips, [DEFAULT_LISTEN.ip()]);
        assert_eq!(plan.shell.stream, StreamLimits::default());
        assert_eq!(plan.generated_secret.map(|s| s.len()), Some(32));
    }

    #[test]
    fn invalid_settings_are_refused_with_the_key_in_the_message() {
        assert_eq!(
            error(&TurnSection::default()),
            "no TURN credentials: give --user NAME:PASSWORD or --auth-secret SECRET"
        );
        let users = vec!["alice:pw".to_owned()];
        let s = TurnSection {
            users: users.clone(),
            auth_burst_total: Some(0),
            ..TurnSection::default()
        };
        assert_eq!(
            error(&s),
            "auth_burst_total must be at least 1 (0 would refuse every login over UDP)"
        );
        let s = TurnSection {
            users: users.clone(),
            max_tcp_connections_per_ip: Some(0),
            ..TurnSection::default()
        };
        assert_eq!(error(&s), "max_tcp_connections_per_ip must be at least 1");
        let s = TurnSection {
            users: users.clone(),
            deny_peers: vec!["10.0.0.1/8".into()],
            ..TurnSection::default()
        };
        assert_eq!(
            error(&s),
            "deny_peers \"10.0.0.1/8\": 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        let s = TurnSection {
            users: users.clone(),
            relay_ports: Some("2000-1000".into()),
            ..TurnSection::default()
        };
        assert_eq!(error(&s), "relay ports \"2000-1000\": need 1 <= MIN <= MAX");
        let s = TurnSection {
            users,
            tls_listen: vec![DEFAULT_LISTEN],
            ..TurnSection::default()
        };
        assert_eq!(error(&s), "--tls-listen needs --tls-cert");
        let err = Cli::try_parse_from(["x", "--deny-peer", "10.0.0.1/8"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("did you mean 10.0.0.0/8?"), "{err}");
        assert!(toml::from_str::<TurnSection>("realms = \"x\"").is_err());
    }

    /// The plan of a `[turn]` section `toml_text` with `flags` on top, listening on loopback.
    fn plan(toml_text: &str, flags: &[&str]) -> Result<TurnPlan, ConfigError> {
        let listen: ListenConfig = toml::from_str("listen = [\"127.0.0.1:3478\"]\n").unwrap();
        let mut section: TurnSection = toml::from_str(toml_text).unwrap();
        parse(flags).turn.apply(&mut section);
        section.shell_config(&listen, false)
    }

    #[test]
    fn xdp_flags_and_keys_are_checked() {
        let users = "users = [\"bob:pw\"]\n";
        // Off by default.
        assert_eq!(plan(users, &[]).unwrap().shell.xdp, XdpConfig::default());
        // File keys, with a flag adding an interface in front.
        let file = format!("{users}xdp = \"native\"\nxdp_interfaces = [\"eth1\"]\n");
        let xdp = plan(&file, &["--xdp-interface", "eth0"]).unwrap().shell.xdp;
        assert_eq!(
            (xdp.mode, xdp.interfaces),
            (XdpMode::Native, vec!["eth0".to_owned(), "eth1".to_owned()])
        );
        let err =
            |toml_text: &str, flags: &[&str]| plan(toml_text, flags).err().unwrap().to_string();
        assert!(err(users, &["--xdp", "fast"]).contains("unknown XDP mode"));
        assert_eq!(
            err(users, &["--xdp", "auto"]),
            "--xdp auto needs at least one --xdp-interface"
        );
        // The kernel path is charged to the bandwidth caps: the default caps go with XDP.
        let xdp = plan(users, &["--xdp", "generic", "--xdp-interface", "eth0"])
            .unwrap()
            .shell
            .xdp;
        assert_eq!(xdp.mode, XdpMode::Generic);
    }

    #[test]
    fn usage_metrics_flags_and_keys_are_checked() {
        let users = "users = [\"bob:pw\"]\n";
        // Off by default: no per-identity label anywhere.
        assert_eq!(
            plan(users, &[]).unwrap().shell.usage,
            UsageMetrics::default()
        );
        assert_eq!(UsageMetrics::default().max_labels, DEFAULT_USAGE_MAX_LABELS);
        let file = format!("{users}usage_metrics = \"tenant\"\nusage_metrics_max_labels = 50\n");
        let usage = plan(&file, &[]).unwrap().shell.usage;
        assert_eq!((usage.by, usage.max_labels), (UsageBy::Tenant, 50));
        // A flag wins over the key.
        let usage = plan(&file, &["--usage-metrics", "room"])
            .unwrap()
            .shell
            .usage;
        assert_eq!((usage.by, usage.max_labels), (UsageBy::Room, 50));
        let err =
            |toml_text: &str, flags: &[&str]| plan(toml_text, flags).err().unwrap().to_string();
        assert!(err(users, &["--usage-metrics", "user"]).contains("off, room or tenant"));
        assert_eq!(
            err(users, &["--usage-metrics-max-labels", "0"]),
            "usage_metrics_max_labels must be at least 1"
        );
    }
}
