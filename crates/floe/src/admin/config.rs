//! The operations listener's flags and `[admin]` file keys (docs/operations.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

/// The default address: loopback, next to coturn's Prometheus port 9641.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9642";
/// Default fraction of a limit above which `/readyz` says not ready.
pub const DEFAULT_MAX_LOAD: f64 = 0.9;
/// Default `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `--term-drain-timeout`: SIGTERM drains this long at most, then stops as before.
pub const DEFAULT_TERM_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The `[admin]` table of the config file; every key has a flag of the same meaning.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listening address, or `"off"`. Flag: `--admin`.
    pub listen: Option<String>,
    /// Bearer token for the admin API and /metrics. Flag: `--admin-token`.
    pub token: Option<String>,
    /// File whose first line is the token. Flag: `--admin-token-file`.
    pub token_file: Option<PathBuf>,
    /// Not ready above this fraction of a limit. Flag: `--ready-max-load`.
    pub ready_max_load: Option<f64>,
    /// Not ready above this many relayed bytes per second (0: no budget). Flag:
    /// `--ready-max-bps`.
    pub ready_max_bps: Option<u64>,
    /// Longest drain (SIGUSR1, `POST /v1/drain`). Flag: `--drain-timeout`.
    pub drain_timeout_secs: Option<u64>,
    /// Longest drain on SIGTERM (0: stop at once). Flag: `--term-drain-timeout`.
    pub term_drain_timeout_secs: Option<u64>,
    /// TURN servers a draining node sends new Allocates to (300 Try Alternate). Flag:
    /// `--alternate-server`.
    #[serde(default, deserialize_with = "floe_turn_server::config::one_or_many")]
    pub alternate_server: Vec<SocketAddr>,
}

impl std::fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSection")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ready_max_load", &self.ready_max_load)
            .field("ready_max_bps", &self.ready_max_bps)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .field("term_drain_timeout_secs", &self.term_drain_timeout_secs)
            .field("alternate_server", &self.alternate_server)
            .finish()
    }
}

/// Operations flags (`floe serve`, `floe turn`, `floe signal`).
#[derive(Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// Operations listener (/metrics, /healthz, /readyz, admin API), or `off`
    /// [default: 127.0.0.1:9642; file key admin.listen].
    #[arg(long = "admin", value_name = "ADDR|off")]
    pub admin: Option<String>,
    /// Bearer token for the admin API and /metrics (without one they answer loopback clients
    /// only) [file key admin.token].
    #[arg(
        long,
        env = "FLOE_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// Read the admin token from the first line of FILE [file key admin.token_file].
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// /readyz answers 503 when a load (allocations, relay ports, file descriptors, TCP/TLS
    /// connections, bandwidth) is above this fraction of its limit [default: 0.9].
    #[arg(long, value_name = "FRACTION")]
    pub ready_max_load: Option<f64>,
    /// Relayed bytes per second that count as the bandwidth budget for /readyz (0: none)
    /// [default: 0].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub ready_max_bps: Option<u64>,
    /// Longest drain after SIGUSR1 or POST /v1/drain, in seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Longest drain after SIGTERM, in seconds; 0 stops at once [default: 2].
    #[arg(long, value_name = "SECS")]
    pub term_drain_timeout: Option<u64>,
    /// While draining, answer new TURN Allocates 300 Try Alternate with this ALTERNATE-SERVER
    /// (one per address family; repeatable). Without one of the client's family: 508.
    #[arg(long, value_name = "ADDR")]
    pub alternate_server: Vec<SocketAddr>,
}

impl std::fmt::Debug for AdminArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminArgs")
            .field("admin", &self.admin)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_token_file", &self.admin_token_file)
            .finish_non_exhaustive()
    }
}

/// The effective operations configuration.
#[derive(Clone)]
pub struct AdminConfig {
    /// Where to listen; `None`: off.
    pub listen: Option<SocketAddr>,
    /// The address was configured (a bind failure is fatal); the default is best effort.
    pub explicit: bool,
    /// The bearer token, if any.
    pub token: Option<String>,
    pub max_load: f64,
    pub max_bps: u64,
    pub drain_timeout: Duration,
    pub term_drain_timeout: Duration,
    pub alternates: Vec<SocketAddr>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_load", &self.max_load)
            .finish_non_exhaustive()
    }
}

impl AdminArgs {
    /// Flags over file keys over defaults.
    pub fn resolve(self, file: AdminSection) -> anyhow::Result<AdminConfig> {
        let listen_text = self.admin.or(file.listen);
        let explicit = listen_text.is_some();
        let listen = match listen_text.as_deref().unwrap_or(DEFAULT_LISTEN) {
            "off" | "none" => None,
            text => Some(
                text.parse::<SocketAddr>()
                    .with_context(|| format!("--admin: {text:?} is not ADDR:PORT or off"))?,
            ),
        };
        let token = match (
            self.admin_token.or(file.token),
            self.admin_token_file.or(file.token_file),
        ) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(read_token(&path)?),
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            anyhow::bail!("the admin token is empty");
        }
        let max_load = self
            .ready_max_load
            .or(file.ready_max_load)
            .unwrap_or(DEFAULT_MAX_LOAD);
        if !(max_load > 0.0 && max_load <= 1.0) {
            anyhow::bail!("--ready-max-load must be in (0, 1], got {max_load}");
        }
        let mut alternates = self.alternate_server;
        if alternates.is_empty() {
            alternates = file.alternate_server;
        }
        Ok(AdminConfig {
            listen,
            explicit,
            token,
            max_load,
            max_bps: self.ready_max_bps.or(file.ready_max_bps).unwrap_or(0),
            drain_timeout: self
                .drain_timeout
                .or(file.drain_timeout_secs)
                .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs),
            term_drain_timeout: self
                .term_drain_timeout
                .or(file.term_drain_timeout_secs)
                .map_or(DEFAULT_TERM_DRAIN_TIMEOUT, Duration::from_secs),
            alternates,
        })
    }
}

/// The first line of `path`, trimmed.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    fn args() -> AdminArgs {
        AdminArgs {
            admin: None,
            admin_token: None,
            admin_token_file: None,
            ready_max_load: None,
            ready_max_bps: None,
            drain_timeout: None,
            term_drain_timeout: None,
            alternate_server: Vec::new(),
        }
    }

    #[test]
    fn defaults_listen_on_loopback_9642_best_effort() {
        let c = args().resolve(AdminSection::default()).unwrap();
        assert_eq!(c.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert!(!c.explicit);
        assert_eq!(c.max_load, DEFAULT_MAX_LOAD);
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }

    #[test]
    fn flags_override_file_keys_and_off_disables() {
        let file: AdminSection = toml::from_str(
            "listen = \"127.0.0.1:1\"\ntoken = \"file\"\nready_max_load = 0.5\nalternate_server = \"192.0.2.1:3478\"",
        )
        .unwrap();
        let mut a = args();
        a.admin = Some("off".into());
        a.admin_token = Some("flag".into());
        let c = a.resolve(file.clone()).unwrap();
        assert_eq!(c.listen, None);
        assert_eq!(c.token.as_deref(), Some("flag"));
        assert_eq!(c.max_load, 0.5);
        assert_eq!(c.alternates.len(), 1);
        assert!(!format!("{file:?}").contains("file\""), "token redacted");
    }

    #[test]
    fn bad_values_are_errors() {
        let mut a = args();
        a.ready_max_load = Some(1.5);
        assert!(a.resolve(AdminSection::default()).is_err());
        let mut a = args();
        a.admin = Some("nope".into());
        assert!(a.resolve(AdminSection::default()).is_err());
    }
}
