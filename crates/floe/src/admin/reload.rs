//! Configuration reload without drops (SIGHUP or `POST /v1/reload`): the configuration file is
//! read again with the same command-line flags on top and every part is checked exactly as at
//! start; only if all are valid are they applied, while every allocation, connection and session
//! goes on (docs/operations.md §6.1 lists every key and its live effect):
//!
//! * the log filter (`log`, unless `--log`/`FLOE_LOG` was given);
//! * TURN (`floe turn`, `floe serve`): credentials, peer policy, quotas, bandwidth caps, rates
//!   of unauthenticated answers, lifetimes, TCP/TLS connection limits and the TLS certificate
//!   ([`floe_turn_server::turn::TurnAdmin::reload`]);
//! * signalling (`floe signal`, `floe serve`): keys, limits, ICE servers, origins and proxies
//!   ([`floe_signal_server::reload`]).
//!
//! An invalid file changes nothing; the error says why. What only a restart changes
//! (listening addresses, relay addresses and ports, workers, XDP, a few `[signal]` keys,
//! `[admin]`) is named in the answer and the log rather than silently ignored.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use floe_signal_server::reload::PreparedReload;
use floe_signal_server::{SignalAdmin, SignalArgs, SignalConfig};
use floe_turn_server::config::{ListenArgs, ListenConfig, TurnArgs, TurnPlan, TurnSection};
use floe_turn_server::turn::TurnAdmin;

use crate::config::FileConfig;
use crate::logging;

/// Why nothing changed.
const INVALID: &str = "the new configuration is invalid; the running one stays";

/// `[turn]` keys a reload applies.
const RELOADABLE: &[&str] = &[
    "users",
    "auth_secrets",
    "strict_expiry",
    "realm",
    "allow_peers",
    "deny_peers",
    "tls_cert",
    "tls_key",
    "max_allocations",
    "max_allocations_per_user",
    "max_permissions_per_allocation",
    "max_channels_per_allocation",
    "max_bps",
    "user_max_bps",
    "auth_rate",
    "auth_burst",
    "auth_rate_total",
    "auth_burst_total",
    "default_lifetime_secs",
    "max_lifetime_secs",
    "max_tcp_connections",
    "max_tcp_connections_per_ip",
    "tls_handshake_timeout_secs",
    "tcp_idle_timeout_secs",
    "tcp_unallocated_timeout_secs",
    "tcp_write_timeout_secs",
    "tcp_queue_bytes",
];

/// Reloads the TURN part of a running `floe turn` or `floe serve`.
#[derive(Debug)]
pub struct TurnReloader {
    /// The listening flags given at start.
    pub net: ListenArgs,
    /// The TURN flags given at start (they still win over the file).
    pub args: TurnArgs,
    /// The `[turn]` section and listening keys as started (flags applied).
    pub started: (TurnSection, ListenConfig),
    /// The TURN server's command channels.
    pub admin: TurnAdmin,
}

impl TurnReloader {
    /// The new file's `[turn]` section and listening keys with the start's flags on top.
    fn sections(&self, file: &FileConfig) -> (TurnSection, ListenConfig) {
        let (mut turn, mut listen) = (file.turn.clone(), file.listen());
        self.net.clone().apply(&mut listen);
        self.args.clone().apply(&mut turn);
        (turn, listen)
    }

    /// Checks `turn` and `listen` exactly as at start: what [`TurnReloader::apply`] puts in
    /// force.
    fn prepare(&self, turn: &TurnSection, listen: &ListenConfig) -> anyhow::Result<TurnPrepared> {
        let plan = turn.shell_config(listen, false).context(INVALID)?;
        let pending = self.not_applied(turn, listen);
        Ok(TurnPrepared { plan, pending })
    }

    /// Puts a prepared configuration in force; a summary for the log and the API.
    async fn apply(&self, prepared: TurnPrepared) -> anyhow::Result<String> {
        let TurnPrepared { plan, pending } = prepared;
        let outcome = self
            .admin
            .reload(&plan.shell)
            .await
            .context("the TURN server stopped")?;
        let what = if plan.shell.tls.is_some() {
            "credentials, peer policy, limits and TLS certificate"
        } else {
            "credentials, peer policy and limits"
        };
        let mut summary = format!(
            "reloaded TURN {what}: {} allocation(s) ended (credentials no longer valid), {} permission(s) and {} channel(s) removed (peer now refused)",
            outcome.allocations_ended, outcome.permissions_removed, outcome.channels_removed
        );
        if !pending.is_empty() {
            summary.push_str(&format!(
                "; changed but applied only at a restart: {}",
                pending.join(", ")
            ));
        }
        Ok(summary)
    }

    /// Keys that differ from the started configuration but a reload does not apply.
    fn not_applied(&self, turn: &TurnSection, listen: &ListenConfig) -> Vec<String> {
        let table = |v: &TurnSection| match toml::Value::try_from(v) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        let (old, new) = (table(&self.started.0), table(turn));
        let mut keys: Vec<String> = old
            .keys()
            .chain(new.keys())
            .filter(|k| !RELOADABLE.contains(&k.as_str()))
            .filter(|k| old.get(*k) != new.get(*k))
            .map(|k| format!("turn.{k}"))
            .collect();
        keys.sort();
        keys.dedup();
        if self.started.1 != *listen {
            keys.insert(0, "listen".to_owned());
        }
        keys
    }
}

/// A checked TURN configuration, ready to be put in force.
struct TurnPrepared {
    plan: TurnPlan,
    /// Keys that changed but apply only at a restart.
    pending: Vec<String>,
}

/// Reloads the signalling part of a running `floe signal` or `floe serve`.
#[derive(Debug)]
pub struct SignalReloader {
    /// The signalling flags given at start (they still win over the file).
    pub args: SignalArgs,
    /// The running server's handle.
    pub admin: SignalAdmin,
    /// `floe serve`: what ties signalling to the TURN server of the same process.
    pub serve: Option<ServeDefaults>,
}

/// `floe serve`'s signalling defaults, worked out at start from the TURN server.
#[derive(Debug, Clone)]
pub struct ServeDefaults {
    /// The TURN REST secret generated at start when none was configured (the TURN server
    /// keeps accepting it, and signalling keeps minting with it, while the file names none).
    pub generated_secret: Option<String>,
    /// The `stun:` URLs of the bound addresses (when the file names no ICE URLs).
    pub stun_urls: Vec<String>,
    /// The `turn:`/`turns:` URLs of the bound addresses.
    pub turn_urls: Vec<String>,
}

impl ServeDefaults {
    /// Ties the two sections as `floe serve` does at start ([`FileConfig::serve_plan`]): one
    /// TURN REST secret for both (the signalling one, else the TURN one, else the one
    /// generated at start), and this deployment's URLs unless the file names some.
    fn tie(&self, turn: &mut TurnSection, signal: &mut SignalConfig) {
        if turn.auth_secrets.is_empty() {
            turn.auth_secrets.extend(signal.turn_secret.clone());
        }
        if turn.auth_secrets.is_empty() {
            turn.auth_secrets.extend(self.generated_secret.clone());
        }
        if signal.turn_secret.is_none() {
            signal.turn_secret = turn.auth_secrets.first().cloned();
        }
        if signal.stun_urls.is_empty() && signal.turn_urls.is_empty() {
            signal.stun_urls.clone_from(&self.stun_urls);
            signal.turn_urls.clone_from(&self.turn_urls);
        }
    }
}

impl SignalReloader {
    /// The new file's `[signal]` section with the start's flags on top.
    fn section(&self, file: &FileConfig) -> SignalConfig {
        let mut signal = file.signal.clone();
        self.args.clone().apply(&mut signal);
        signal
    }

    /// Checks `signal` exactly as at start.
    fn prepare(&self, signal: SignalConfig) -> anyhow::Result<PreparedReload> {
        self.admin
            .prepare_reload(signal)
            .context("signalling configuration")
            .context(INVALID)
    }

    /// Puts a prepared configuration in force; a summary for the log and the API.
    async fn apply(&self, prepared: PreparedReload) -> anyhow::Result<String> {
        let outcome = self
            .admin
            .apply_reload(prepared)
            .await
            .context("the signalling server stopped")?;
        let mut summary = format!(
            "reloaded signalling keys, limits, ICE servers, origins and proxies: {} session(s) ended (no longer admitted by the keys)",
            outcome.sessions_ended
        );
        if !outcome.restart_only.is_empty() {
            summary.push_str(&format!(
                "; changed but applied only at a restart: {}",
                outcome.restart_only.join(", ")
            ));
        }
        Ok(summary)
    }
}

/// How the process reads its configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `floe serve`, `floe turn`: every section, unknown keys rejected.
    Full,
    /// `floe signal`: `log`, `[signal]` and `[admin]`; other sections are left to the other
    /// commands.
    SignalOnly,
}

/// Everything a reload may change in this process: the log filter, and the servers it runs.
#[derive(Debug)]
pub struct ConfigReloader {
    /// The configuration file, if the process was started with one.
    pub path: Option<PathBuf>,
    /// How to read it.
    pub kind: FileKind,
    /// The TURN server (`floe turn`, `floe serve`).
    pub turn: Option<TurnReloader>,
    /// The signalling server (`floe signal`, `floe serve`).
    pub signal: Option<SignalReloader>,
}

impl ConfigReloader {
    /// A reloader of the log filter alone; add the servers with the fields.
    pub fn new(path: Option<PathBuf>, kind: FileKind) -> Self {
        ConfigReloader {
            path,
            kind,
            turn: None,
            signal: None,
        }
    }

    fn load(&self) -> anyhow::Result<FileConfig> {
        match (self.kind, &self.path) {
            (_, None) => Ok(FileConfig::default()),
            (FileKind::Full, Some(path)) => FileConfig::load(path),
            (FileKind::SignalOnly, Some(path)) => crate::cmd::signal::load_file(path),
        }
    }

    /// Reads the file again, checks every part, then (only if all are valid) applies them; a
    /// summary for the log and the API, or why nothing changed.
    pub async fn reload(&self) -> anyhow::Result<String> {
        let file = self.load().context(INVALID)?;
        let log = logging::prepare(file.log.as_deref()).context(INVALID)?;
        let mut turn = self.turn.as_ref().map(|t| t.sections(&file));
        let mut signal = self.signal.as_ref().map(|s| s.section(&file));
        if let (Some((turn, _)), Some(signal), Some(tie)) = (
            turn.as_mut(),
            signal.as_mut(),
            self.signal.as_ref().and_then(|s| s.serve.as_ref()),
        ) {
            tie.tie(turn, signal);
        }
        let turn = match (&self.turn, turn) {
            (Some(t), Some((section, listen))) => Some(t.prepare(&section, &listen)?),
            _ => None,
        };
        let signal = match (&self.signal, signal) {
            (Some(s), Some(section)) => Some(s.prepare(section)?),
            _ => None,
        };
        // Everything is valid: apply.
        let mut parts = Vec::new();
        if let Some(log) = log {
            parts.push(format!("log filter now {:?}", logging::apply(log)?));
        }
        if let (Some(t), Some(prepared)) = (&self.turn, turn) {
            parts.push(t.apply(prepared).await?);
        }
        if let (Some(s), Some(prepared)) = (&self.signal, signal) {
            parts.push(s.apply(prepared).await?);
        }
        if parts.is_empty() {
            parts.push("nothing to reload: the log filter is unchanged".to_owned());
        }
        Ok(parts.join("; "))
    }
}

/// What a reload request reloads, shared by SIGHUP and the API.
pub type Reloader = Arc<ConfigReloader>;
