//! The TURN shell's configuration and start-up errors.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use floe_turn::quota::QuotaConfig;
use floe_turn::server::TurnConfig;
use floe_xdp::{XdpError, XdpMode};

use crate::net::ListenError;

/// Configuration of the TURN IO shell.
#[derive(Debug, Clone)]
pub struct TurnShellConfig {
    /// UDP and TCP listening addresses.
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 alternate IPs (STUN NAT discovery on the same ports), at most one per family:
    /// each listening address uses the one of its family; a family without one answers plain
    /// Binding.
    pub alternate_ips: Vec<IpAddr>,
    /// TLS listening addresses (`turns:`).
    pub tls_listen: Vec<SocketAddr>,
    /// The TLS configuration, required when `tls_listen` is not empty.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Shards (0: one per core).
    pub workers: usize,
    /// The sans-IO state machine's configuration.
    pub turn: TurnConfig,
    /// Quotas shared by all shards.
    pub quotas: QuotaConfig,
    /// Limits of the TCP and TLS client connections.
    pub stream: StreamLimits,
    /// The XDP fast path (`docs/xdp.md`); off by default.
    pub xdp: XdpConfig,
    /// Usage metrics by room or tenant (`floe_turn_usage_bytes_total`); off by default.
    pub usage: UsageMetrics,
}

/// Which identity `floe_turn_usage_bytes_total` is labelled by (`--usage-metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageBy {
    /// No usage metric (the default: no per-identity label anywhere).
    #[default]
    Off,
    /// The `room` of floe-minted TURN usernames.
    Room,
    /// The `tenant` (the JWT's `tenant` claim) of floe-minted TURN usernames.
    Tenant,
}

impl UsageBy {
    /// The flag's spelling: `off`, `room` or `tenant`.
    pub fn label(self) -> &'static str {
        match self {
            UsageBy::Off => "off",
            UsageBy::Room => "room",
            UsageBy::Tenant => "tenant",
        }
    }
}

impl std::str::FromStr for UsageBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(UsageBy::Off),
            "room" => Ok(UsageBy::Room),
            "tenant" => Ok(UsageBy::Tenant),
            other => Err(format!(
                "unknown usage label {other:?} (off, room or tenant)"
            )),
        }
    }
}

/// Opt-in usage metrics (docs/operations.md §7): relayed bytes labelled by room or tenant,
/// updated once a second while allocations run, at most `max_labels` distinct values (the
/// rest are counted under `_other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageMetrics {
    /// The label, or off.
    pub by: UsageBy,
    /// Distinct label values before the rest fold into `_other` (default 1000).
    pub max_labels: usize,
}

/// Default of [`UsageMetrics::max_labels`].
pub const DEFAULT_USAGE_MAX_LABELS: usize = 1000;

impl Default for UsageMetrics {
    fn default() -> Self {
        UsageMetrics {
            by: UsageBy::Off,
            max_labels: DEFAULT_USAGE_MAX_LABELS,
        }
    }
}

/// Limits of TCP and TLS client connections (issue 12: no single client can exhaust the
/// server). Every field has a `[turn]` file key and a flag (`crate::config`); the defaults are
/// what a public server runs with (docs/security.md, "TURN listeners").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most TCP and TLS client connections at once (default 4096). RFC 6062 data connections
    /// count too.
    pub max_connections: usize,
    /// Most TCP and TLS client connections at once from one IP address, IPv6 addresses grouped
    /// by /64 (default 64), so that one host cannot take every slot.
    pub max_per_ip: usize,
    /// A TLS handshake not done within this is abandoned (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// A connection that sends no complete STUN message or ChannelData frame for this long is
    /// closed (default 600 s). Bytes that do not complete a frame do not count, so a client
    /// dripping a byte at a time is closed all the same. RFC 8656 clients refresh at least every
    /// 5 minutes, so keep this above 300 s.
    pub idle_timeout: Duration,
    /// A connection that holds no allocation is closed this long after it was accepted (or its
    /// allocation ended), whatever it sends (default 60 s, as coturn): Binding-only and
    /// unauthenticated clients, and RFC 6062 data connections that never send ConnectionBind.
    pub unallocated_timeout: Duration,
    /// A write to the client that makes no progress for this long closes the connection
    /// (default 30 s): a client that does not read is cut off.
    pub write_timeout: Duration,
    /// Bytes queued for one client before newer frames are dropped, as a UDP socket would drop
    /// datagrams (default 128 KiB; STUN answers and relayed data alike).
    pub queue_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_connections: 4096,
            max_per_ip: 64,
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            unallocated_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            queue_bytes: 128 * 1024,
        }
    }
}

/// `--xdp` and `--xdp-interface`: where to attach the kernel fast path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Off, auto, native or generic.
    pub mode: XdpMode,
    /// Interfaces to attach to (at most [`floe_xdp::MAX_INTERFACES`]).
    pub interfaces: Vec<String>,
}

/// Errors starting the TURN server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnShellError {
    /// A listening socket could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// `tls_listen` is set but no TLS configuration was given.
    #[error("TLS listening addresses need a certificate and key")]
    NoTlsConfig,
    /// A shard's thread or runtime could not be started.
    #[error("cannot start a TURN worker thread: {0}")]
    Runtime(#[source] io::Error),
    /// `--xdp native` or `generic` could not be set up (`auto` falls back instead).
    #[error("--xdp: {0}")]
    Xdp(#[source] XdpError),
}
