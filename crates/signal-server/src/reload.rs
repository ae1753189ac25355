//! A configuration reload of a running signalling server (`floe signal` and `floe serve`
//! answer SIGHUP and `POST /v1/reload` with it; the operator's table is docs/operations.md
//! §6.1). The new `[signal]` section is checked exactly as at start; if valid, what can change
//! live is put in force for what comes next (joins, connections, requests) while every
//! connection and session goes on, except sessions whose token the new keys no longer verify
//! ([`floe_signal::Hub::handle_reconfigure`]). Keys that only a restart changes are kept as
//! started and named in the outcome.

use floe_signal::hub::HubConfig;

use crate::admin::{SignalAdmin, SignalStopped};
use crate::config::{ConfigError, SignalConfig};
use crate::origin::OriginPolicy;

/// `[signal]` keys a reload does not apply: the listener, the Redis connection and the shapes
/// fixed when a connection or the hub task starts.
pub const RESTART_ONLY: &[&str] = &[
    "http",
    "redis_url",
    "redis_node_ttl_secs",
    "max_message_bytes",
    "heartbeat_secs",
    "shutdown_grace_ms",
    "max_rest_waiters_per_session",
    "max_poll_wait_secs",
    "ws_outbound_queue",
    "ws_outbound_max_bytes",
    "http_header_timeout_secs",
    "http_request_timeout_secs",
];

/// A checked new configuration, ready for [`SignalAdmin::apply_reload`].
#[derive(Debug)]
pub struct PreparedReload {
    config: SignalConfig,
    hub: HubConfig,
    origins: OriginPolicy,
    restart_only: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadOutcome {
    /// Sessions ended because the new keys no longer admit them.
    pub sessions_ended: usize,
    /// `[signal]` keys that changed but apply only at a restart.
    pub restart_only: Vec<String>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new section is invalid; the running configuration stays.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server is not running.
    #[error(transparent)]
    Stopped(#[from] SignalStopped),
}

impl SignalAdmin {
    /// Checks `new` (flags already applied) as at start, against the configuration in force.
    pub fn prepare_reload(&self, mut new: SignalConfig) -> Result<PreparedReload, ReloadError> {
        let (live, _) = self.live()?;
        let current = live
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let restart_only = keep_restart_only(&mut new, &current);
        let hub = new.hub_config()?;
        let origins = new.origin_policy().map_err(ConfigError::from)?;
        Ok(PreparedReload {
            config: new,
            hub,
            origins,
            restart_only,
        })
    }

    /// Puts a prepared configuration in force: the request handlers' settings first, then the
    /// hub's (which may end sessions the new keys no longer admit).
    pub async fn apply_reload(&self, p: PreparedReload) -> Result<ReloadOutcome, SignalStopped> {
        let (live, hub) = self.live()?;
        live.apply(p.config, &p.hub, p.origins);
        let sessions_ended = hub.reconfigure(p.hub).await.map_err(|_| SignalStopped)?;
        Ok(ReloadOutcome {
            sessions_ended,
            restart_only: p.restart_only,
        })
    }
}

/// Sets the restart-only keys of `new` back to `current`'s; returns those that differed.
fn keep_restart_only(new: &mut SignalConfig, current: &SignalConfig) -> Vec<String> {
    let table = |c: &SignalConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (old, fresh) = (table(current), table(new));
    let changed = RESTART_ONLY
        .iter()
        .filter(|k| old.get(**k) != fresh.get(**k))
        .map(|k| format!("signal.{k}"))
        .collect();
    new.http = current.http;
    new.redis_url.clone_from(&current.redis_url);
    new.redis_node_ttl_secs = current.redis_node_ttl_secs;
    new.max_message_bytes = current.max_message_bytes;
    new.heartbeat_secs = current.heartbeat_secs;
    new.shutdown_grace_ms = current.shutdown_grace_ms;
    new.max_rest_waiters_per_session = current.max_rest_waiters_per_session;
    new.max_poll_wait_secs = current.max_poll_wait_secs;
    new.ws_outbound_queue = current.ws_outbound_queue;
    new.ws_outbound_max_bytes = current.ws_outbound_max_bytes;
    new.http_header_timeout_secs = current.http_header_timeout_secs;
    new.http_request_timeout_secs = current.http_request_timeout_secs;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_are_kept_and_named_every_other_is_taken() {
        let current = SignalConfig::default();
        let mut new = SignalConfig {
            heartbeat_secs: 3,
            joins_per_min_per_ip: 1,
            ..SignalConfig::default()
        };
        new.http.set_port(9999);
        let changed = keep_restart_only(&mut new, &current);
        assert_eq!(changed, ["signal.http", "signal.heartbeat_secs"]);
        assert_eq!(
            (new.http, new.heartbeat_secs),
            (current.http, current.heartbeat_secs)
        );
        assert_eq!(new.joins_per_min_per_ip, 1);
        // Every restart-only key is a key of the section.
        let keys = serde_json::to_value(&current).unwrap();
        for k in RESTART_ONLY {
            assert!(keys.get(*k).is_some(), "{k}");
        }
    }
}
