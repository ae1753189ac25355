//! Configuration reload without drops (SIGHUP or `POST /v1/reload`): the configuration file is
//! read again with the same command-line flags on top, checked exactly as at start, and, if
//! valid, the TURN server's credentials (users, REST secrets, strict expiry, realm), its peer
//! policy (allow and deny ranges) and its TLS certificate are replaced while every allocation and
//! session goes on. An invalid file changes nothing; the error says why.
//!
//! What a reload cannot change without a restart (listening addresses, relay ports, limits,
//! quotas, the signalling section) is named in the answer and the log rather than silently
//! ignored.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use floe_turn_server::config::{ListenArgs, ListenConfig, TurnArgs, TurnSection};

use floe_turn_server::turn::TurnAdmin;

use crate::config::FileConfig;
use crate::logging;

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
    /// `floe serve`: the secret its signalling server mints credentials with (configured or
    /// generated at start), which the TURN server must keep accepting: signalling is not
    /// reloaded. As at start, it is the TURN server's secret when the file names none.
    pub minting_secret: Option<String>,
    /// The TURN server's command channels.
    pub admin: TurnAdmin,
}

impl TurnReloader {
    /// Checks the new file's `[turn]` section and listening keys (flags applied) exactly as at
    /// start: what [`TurnReloader::apply`] puts in force.
    fn prepare(&self, file: &FileConfig) -> anyhow::Result<TurnPrepared> {
        let mut turn = file.turn.clone();
        let mut listen = file.listen();
        self.net.clone().apply(&mut listen);
        self.args.clone().apply(&mut turn);
        if let Some(secret) = &self.minting_secret {
            if turn.auth_secrets.is_empty() {
                turn.auth_secrets.push(secret.clone());
            } else if !turn.auth_secrets.contains(secret) {
                bail!("the signalling server of this process mints TURN credentials with a secret the new [turn] auth_secrets lack, and signalling is not reloaded: keep that secret (add the new one beside it) until a restart");
            }
        }
        let plan = turn
            .shell_config(&listen, false)
            .context("the new configuration is invalid; the running one stays")?;
        let pending = self.not_applied(&turn, &listen);
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
            "reloaded {what}: {} allocation(s) ended (credentials no longer valid), {} permission(s) and {} channel(s) removed (peer now refused)",
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
    plan: floe_turn_server::config::TurnPlan,
    /// Keys that changed but apply only at a restart.
    pending: Vec<String>,
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
}

impl ConfigReloader {
    /// A reloader of the log filter alone; add the servers with the fields.
    pub fn new(path: Option<PathBuf>, kind: FileKind) -> Self {
        ConfigReloader {
            path,
            kind,
            turn: None,
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
        let file = self
            .load()
            .context("the new configuration is invalid; the running one stays")?;
        let log = logging::prepare(file.log.as_deref())
            .context("the new configuration is invalid; the running one stays")?;
        let turn = match &self.turn {
            Some(t) => Some(t.prepare(&file)?),
            None => None,
        };
        // Everything is valid: apply.
        let mut parts = Vec::new();
        if let Some(log) = log {
            parts.push(format!("log filter now {:?}", logging::apply(log)?));
        }
        if let (Some(t), Some(prepared)) = (&self.turn, turn) {
            parts.push(t.apply(prepared).await?);
        }
        if parts.is_empty() {
            parts.push("nothing changed".to_owned());
        }
        Ok(parts.join("; "))
    }
}

/// What a reload request reloads, shared by SIGHUP and the API.
pub type Reloader = Arc<ConfigReloader>;
