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
];

/// Reloads the TURN part of a running `floe turn` or `floe serve`.
#[derive(Debug)]
pub struct TurnReloader {
    /// The configuration file, if the process was started with one.
    pub path: Option<PathBuf>,
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
    /// Reads the file again and applies what can be applied; a summary for the log and the API.
    pub async fn reload(&self) -> anyhow::Result<String> {
        let mut file = FileConfig::load_or_default(self.path.as_deref())?;
        let mut listen = file.listen();
        self.net.clone().apply(&mut listen);
        self.args.clone().apply(&mut file.turn);
        if let Some(secret) = &self.minting_secret {
            if file.turn.auth_secrets.is_empty() {
                file.turn.auth_secrets.push(secret.clone());
            } else if !file.turn.auth_secrets.contains(secret) {
                bail!("the signalling server of this process mints TURN credentials with a secret the new [turn] auth_secrets lack, and signalling is not reloaded: keep that secret (add the new one beside it) until a restart");
            }
        }
        let plan = file
            .turn
            .shell_config(&listen, false)
            .context("the new configuration is invalid; the running one stays")?;
        let turn = &plan.shell.turn;
        let outcome = self
            .admin
            .reload(
                turn.credentials.clone(),
                turn.policy.clone(),
                plan.shell.tls.clone(),
            )
            .await
            .context("the TURN server stopped")?;
        let what = if plan.shell.tls.is_some() {
            "credentials, peer policy and TLS certificate"
        } else {
            "credentials and peer policy"
        };
        let mut summary = format!(
            "reloaded {what}: {} allocation(s) ended (credentials no longer valid), {} permission(s) and {} channel(s) removed (peer now refused)",
            outcome.allocations_ended, outcome.permissions_removed, outcome.channels_removed
        );
        let pending = self.not_applied(&file.turn, &listen);
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

/// What a reload request reloads, shared by SIGHUP and the API.
pub type Reloader = Arc<TurnReloader>;
