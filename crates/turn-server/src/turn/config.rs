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
    /// Most TCP and TLS client connections at once.
    pub max_tcp_connections: usize,
    /// A client TCP/TLS connection silent for this long is closed (RFC 8656 clients refresh at
    /// least every 5 minutes, so keep this above 300 s).
    pub tcp_idle_timeout: Duration,
    /// The XDP fast path (`docs/xdp.md`); off by default.
    pub xdp: XdpConfig,
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
