//! The configuration file (TOML). Every command-line flag has a key here; flags given on the
//! command line override the file. Unknown keys are rejected, so a typo is an error, not a
//! silently ignored setting.
//!
//! Each section belongs to its shell crate, which also owns the matching flags, defaults and
//! validation: the top-level listening keys, `[stun]` and `[turn]` to
//! [`floe_turn_server::config`], `[signal]` to [`floe_signal_server::config`]. This file only
//! puts them together.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;
use floe_signal_server::SignalConfig;
use floe_turn_server::config::{ListenConfig, StunSection, TurnPlan, TurnSection};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The log filter (tracing `EnvFilter` syntax: `info`, `warn,floe_turn_server=debug`);
    /// default `info`. Flag: `--log` (env `FLOE_LOG`), which wins over it. A reload applies it.
    pub log: Option<String>,
    /// STUN/TURN listening addresses (UDP and TCP on each). Flag: `--listen`.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 alternate IPs, one per family (one IP or a list). Flag: `--alternate-ip`.
    #[serde(default, deserialize_with = "floe_turn_server::config::one_or_many")]
    pub alternate_ip: Vec<IpAddr>,
    /// UDP sockets per address (0 = one per core). Flag: `--workers`.
    pub workers: Option<usize>,
    /// STUN tuning.
    #[serde(default)]
    pub stun: StunSection,
    /// TURN options (`floe turn`, `floe serve`).
    #[serde(default)]
    pub turn: TurnSection,
    /// Signalling options (`floe signal`, `floe serve`), keys as in docs/signalling.md.
    #[serde(default)]
    pub signal: SignalConfig,
    /// The operations listener, readiness and drain (docs/operations.md).
    #[serde(default)]
    pub admin: crate::admin::AdminSection,
}

impl FileConfig {
    /// Reads and parses `path`, or an empty file without one.
    pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        match path {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// The top-level listening keys, for [`floe_turn_server::config::ListenArgs::apply`].
    pub fn listen(&self) -> ListenConfig {
        ListenConfig {
            listen: self.listen.clone(),
            alternate_ip: self.alternate_ip.clone(),
            workers: self.workers,
        }
    }
}

/// What `floe serve` runs: the TURN plan and the signalling settings, from a file (flags already
/// applied to it), with the rules that tie the two together.
#[derive(Debug)]
pub struct ServePlan {
    /// The STUN/TURN start-up.
    pub turn: TurnPlan,
    /// The signalling settings, its TURN secret filled in.
    pub signal: SignalConfig,
}

impl FileConfig {
    /// Builds `floe serve`'s plan for `listen` (the file's listening keys, flags applied): one deployment, one TURN REST secret. A `--turn-secret`
    /// given alone is also the TURN server's (else it would mint credentials that the TURN
    /// server, with a generated secret, rejects); without it the signalling server mints with
    /// the TURN server's first secret, or the one generated at start. The signalling settings
    /// are checked here too, before anything starts.
    pub fn serve_plan(mut self, listen: &ListenConfig) -> anyhow::Result<ServePlan> {
        let mut signal = std::mem::take(&mut self.signal);
        if self.turn.auth_secrets.is_empty() {
            self.turn.auth_secrets.extend(signal.turn_secret.clone());
        }
        let mut turn = self.turn.shell_config(listen, true)?;
        if signal.turn_secret.is_none() {
            signal.turn_secret = self
                .turn
                .auth_secrets
                .first()
                .cloned()
                .or(turn.generated_secret.clone());
        }
        self.stun.apply_to(&mut turn.shell.turn);
        signal.hub_config().context("signalling configuration")?;
        Ok(ServePlan { turn, signal })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c: FileConfig = toml::from_str(
            r#"
            log = "info,floe_turn_server=debug"
            listen = ["127.0.0.1:3478", "[::1]:3478"]
            alternate_ip = "127.0.0.2"
            workers = 2
            [stun]
            software = ""
            max_padding = 600
            [turn]
            realm = "example.org"
            users = ["alice:secret"]
            auth_secrets = ["s1", "s2"]
            allow_peers = ["192.0.2.0/24"]
            relay_ports = "50000-50100"
            max_tcp_connections = 10
            tcp_idle_timeout_secs = 700
            max_bps = 0
            user_max_bps = 12500000
            max_permissions_per_allocation = 16
            max_channels_per_allocation = 8
            auth_rate = 5
            auth_burst = 20
            auth_rate_total = 1000
            auth_burst_total = 2000
            [signal]
            http = "127.0.0.1:8081"
            redis_url = "redis://127.0.0.1:6379/1"
            redis_node_ttl_secs = 5
            trusted_proxies = ["10.0.0.0/8"]
            allow_origins = ["https://app.example"]
            max_rest_waiters = 100
            [admin]
            listen = "127.0.0.1:9700"
            token_file = "/etc/floe/admin-token"
            ready_max_load = 0.8
            ready_max_bps = 100000000
            drain_timeout_secs = 600
            term_drain_timeout_secs = 5
            alternate_server = ["192.0.2.10:3478"]
            "#,
        )
        .unwrap();
        assert_eq!(c.log.as_deref(), Some("info,floe_turn_server=debug"));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.stun.max_padding, Some(600));
        assert_eq!(c.turn.auth_secrets.len(), 2);
        assert_eq!(c.turn.max_tcp_connections, Some(10));
        assert_eq!(
            (c.turn.max_bps, c.turn.user_max_bps),
            (Some(0), Some(12_500_000))
        );
        assert_eq!(c.turn.max_channels_per_allocation, Some(8));
        assert_eq!((c.turn.auth_rate, c.turn.auth_burst), (Some(5), Some(20)));
        assert_eq!(c.turn.auth_burst_total, Some(2000));
        assert_eq!(c.signal.http.port(), 8081);
        assert_eq!(
            c.signal.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379/1")
        );
        assert_eq!(c.signal.redis_node_ttl_secs, 5);
        assert_eq!(c.signal.trusted_proxies[0].to_string(), "10.0.0.0/8");
        assert_eq!(c.signal.allow_origins, ["https://app.example"]);
        assert_eq!(c.signal.max_rest_waiters, 100);
        assert_eq!(c.admin.listen.as_deref(), Some("127.0.0.1:9700"));
        assert_eq!(c.admin.drain_timeout_secs, Some(600));
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = toml::from_str::<FileConfig>("lisen = []").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
