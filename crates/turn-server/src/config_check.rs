//! Support for `floe config check`: which config-file key an error is about, and the effective
//! `[turn]` section (every key, defaults filled in from what would run, secrets redacted).

use std::time::Duration;

use crate::config::{ConfigError, TurnPlan, TurnSection, DEFAULT_REALM};

/// Where a config-file key lives: the top level of the file or the `[turn]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPath {
    /// A top-level key (`listen`, `alternate_ip`, `workers`).
    Top(&'static str),
    /// A key of the `[turn]` section.
    Turn(&'static str),
}

/// What `floe config check` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl ConfigError {
    /// The config-file key this error is about, if it is about one.
    pub fn key(&self) -> Option<KeyPath> {
        Some(match self {
            Self::UserSyntax(_) | Self::User(_) | Self::NoCredentials => KeyPath::Turn("users"),
            Self::AuthSecret(_) => KeyPath::Turn("auth_secrets"),
            Self::AlternateTwice(..) | Self::AlternateUnused(_) => KeyPath::Top("alternate_ip"),
            Self::NoRelayIp | Self::HostAddresses(_) => KeyPath::Top("listen"),
            Self::PeerRange { key, .. } | Self::ZeroAuthRate(key) => KeyPath::Turn(key),
            Self::PortsSyntax(_) | Self::PortNumber(_) | Self::PortsRange(_) => {
                KeyPath::Turn("relay_ports")
            }
            Self::TlsMissing(_) => KeyPath::Turn("tls_listen"),
            Self::Tls(_) => KeyPath::Turn("tls_cert"),
            Self::ZeroLimit(key) => KeyPath::Turn(key),
            Self::XdpMode(_) => KeyPath::Turn("xdp"),
            Self::XdpNoInterface(_) => KeyPath::Turn("xdp_interfaces"),
            Self::UsageMetrics(_) => KeyPath::Turn("usage_metrics"),
            Self::UsageMaxLabels => KeyPath::Turn("usage_metrics_max_labels"),
        })
    }
}

impl TurnSection {
    /// The section as it would run with `plan` (built from it): every unset key filled in with
    /// the value in effect, the relay addresses chosen at start included, passwords and secrets
    /// replaced by [`REDACTED`].
    pub fn effective(&self, plan: &TurnPlan) -> TurnSection {
        let turn = &plan.shell.turn;
        let quotas = &plan.shell.quotas;
        let stream = &plan.shell.stream;
        let bps = |b: Option<floe_turn::quota::Bandwidth>| b.map_or(0, |b| b.bytes_per_sec);
        let secs = |d: Duration| d.as_secs();
        let rl = &turn.rate_limit;
        TurnSection {
            tls_listen: self.tls_listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            relay_ips: turn.relay_ips.clone(),
            external_ips: turn.external_ips.clone(),
            realm: Some(
                self.realm
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REALM.to_owned()),
            ),
            users: self
                .users
                .iter()
                .map(|u| match u.split_once(':') {
                    Some((name, _)) => format!("{name}:{REDACTED}"),
                    None => REDACTED.to_owned(),
                })
                .collect(),
            auth_secrets: self
                .auth_secrets
                .iter()
                .map(|_| REDACTED.to_owned())
                .collect(),
            allow_peers: self.allow_peers.clone(),
            deny_peers: self.deny_peers.clone(),
            relay_ports: Some(format!(
                "{}-{}",
                turn.relay_ports.start(),
                turn.relay_ports.end()
            )),
            strict_expiry: Some(self.strict_expiry.unwrap_or(false)),
            max_allocations: Some(quotas.max_allocations_total),
            max_allocations_per_user: Some(quotas.max_allocations_per_user),
            max_bps: Some(bps(quotas.allocation_bandwidth)),
            user_max_bps: Some(bps(quotas.user_bandwidth)),
            auth_rate: Some(rl.per_source_per_sec),
            auth_burst: Some(rl.per_source_burst),
            auth_rate_total: Some(rl.global_per_sec),
            auth_burst_total: Some(rl.global_burst),
            max_permissions_per_allocation: Some(quotas.max_permissions_per_allocation),
            max_channels_per_allocation: Some(quotas.max_channels_per_allocation),
            default_lifetime_secs: Some(secs(turn.lifetimes.default)),
            max_lifetime_secs: Some(secs(turn.lifetimes.max)),
            max_tcp_connections: Some(stream.max_connections),
            max_tcp_connections_per_ip: Some(stream.max_per_ip),
            tls_handshake_timeout_secs: Some(secs(stream.tls_handshake_timeout)),
            tcp_idle_timeout_secs: Some(secs(stream.idle_timeout)),
            tcp_unallocated_timeout_secs: Some(secs(stream.unallocated_timeout)),
            tcp_write_timeout_secs: Some(secs(stream.write_timeout)),
            tcp_queue_bytes: Some(stream.queue_bytes),
            xdp: Some(plan.shell.xdp.mode.label().to_owned()),
            xdp_interfaces: plan.shell.xdp.interfaces.clone(),
            usage_metrics: Some(plan.shell.usage.by.label().to_owned()),
            usage_metrics_max_labels: Some(plan.shell.usage.max_labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenConfig;

    #[test]
    fn every_key_has_an_effective_value_and_no_secret_survives() {
        let section: TurnSection = toml::from_str(
            "users = [\"alice:hunter2\"]\nauth_secrets = [\"s3cret\"]\nmax_bps = 1000000\n",
        )
        .unwrap();
        let listen: ListenConfig = toml::from_str("listen = [\"127.0.0.1:3478\"]\n").unwrap();
        let plan = section.shell_config(&listen, false).unwrap();
        let effective = section.effective(&plan);
        let text = toml::to_string(&effective).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("alice:<redacted>"), "{text}");
        assert!(text.contains("max_bps = 1000000"), "{text}");
        assert!(text.contains("relay_ports = \"49152-65535\""), "{text}");
        // Every key is filled in (the optional TLS files aside): the list of keys is the one
        // serde names when it refuses an unknown key, so a key added to TurnSection without an
        // effective value fails here.
        let table: toml::Table = toml::from_str(&text).unwrap();
        let missing: Vec<String> = all_keys()
            .into_iter()
            .filter(|k| !table.contains_key(k) && k != "tls_cert" && k != "tls_key")
            .collect();
        assert!(missing.is_empty(), "no effective value for {missing:?}");
    }

    /// Every key of `[turn]`, from serde's "expected one of" message.
    fn all_keys() -> Vec<String> {
        let err = toml::from_str::<TurnSection>("no_such_key = 1").unwrap_err();
        let msg = err.to_string();
        let list = msg
            .split("expected one of")
            .nth(1)
            .expect("serde's key list");
        let keys: Vec<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(keys.len() > 20, "{msg}");
        keys
    }

    #[test]
    fn errors_name_their_key() {
        let section: TurnSection =
            toml::from_str("users = [\"a:b\"]\nrelay_ports = \"9-1\"\n").unwrap();
        let err = section
            .shell_config(&ListenConfig::default(), false)
            .err()
            .unwrap();
        assert_eq!(err.key(), Some(KeyPath::Turn("relay_ports")));
    }
}
