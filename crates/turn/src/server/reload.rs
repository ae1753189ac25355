//! A configuration reload (SIGHUP): new credentials and a new peer policy for a running worker.
//! Live allocations stay, except those the new configuration would not have granted: an
//! allocation whose username no longer authenticates with the key it was made with (a removed
//! user, a changed password, a removed REST secret, another realm) ends, and permissions and
//! channels to peers the new policy refuses are removed at once, so that tightening
//! `--deny-peer` takes effect without a restart (RFC 8656 §9, §12: both are the server's to
//! grant).

use core::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use floe_stun::attr::Family;

use super::allocation::AllocId;
use super::config::Lifetimes;
use super::{DeleteReason, RelayBinder, Timer, TurnServer};
use crate::credentials::{CredentialStore, PasswordAlgorithm};
use crate::policy::PeerPolicy;

/// What a reload changed on one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadOutcome {
    /// Allocations ended because their credentials no longer authenticate.
    pub allocations_ended: usize,
    /// Permissions removed because the new policy refuses their peer.
    pub permissions_removed: usize,
    /// Channels removed because the new policy refuses their peer.
    pub channels_removed: usize,
}

impl TurnServer {
    /// Replaces the credentials and the peer policy (see the module documentation); `now_unix`
    /// decides whether a TURN REST username has expired. The relay IPs stay the server's own
    /// addresses whatever the new policy says (the caller builds it with them).
    pub fn reload(
        &mut self,
        credentials: Arc<CredentialStore>,
        policy: PeerPolicy,
        now: Instant,
        now_unix: u64,
        binder: &mut dyn RelayBinder,
    ) -> ReloadOutcome {
        self.config.credentials = credentials;
        self.config.policy = policy;
        let mut outcome = ReloadOutcome::default();
        let stale: Vec<AllocId> = self
            .allocations
            .iter()
            .filter(|(_, a)| !self.still_authenticates(&a.user, &a.key, now_unix))
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.delete_allocation(id, DeleteReason::Revoked, binder);
            outcome.allocations_ended += 1;
        }
        let ids: Vec<AllocId> = self.allocations.keys().copied().collect();
        for id in ids {
            let (perms, chans) = self.refused_leases(id);
            let Some(a) = self.allocations.get_mut(&id) else {
                continue;
            };
            let mut down = Vec::new();
            for n in chans {
                if let Some(c) = a.channels.remove(&n) {
                    a.channel_by_peer.remove(&c.peer);
                    self.timers.remove(&(c.expires, Timer::Channel(id, n)));
                    self.stats.channels_active -= 1;
                    outcome.channels_removed += 1;
                    if let Some(r) = a.relay(Family::of(&c.peer)) {
                        down.push((a.client, r.local, c.peer, n));
                    }
                }
            }
            let mut synced = Vec::new();
            for ip in perms {
                if let Some(exp) = a.permissions.remove(&ip) {
                    self.timers.remove(&(exp, Timer::Permission(id, ip)));
                    self.stats.permissions_active -= 1;
                    outcome.permissions_removed += 1;
                    synced.push(ip);
                }
            }
            // The kernel fast path (if any) stops relaying them at once, like the state machine.
            for (client, relay, peer, n) in down {
                self.fast_path_down(client, relay, peer, n);
            }
            for ip in synced {
                self.fast_path_sync_ip(id, ip, now);
            }
        }
        outcome
    }

    /// New limits from a configuration reload, after [`super::Shared::set_quotas`]: allocation
    /// lifetimes for the next Allocate and Refresh (RFC 8656 §7.2: the server chooses them;
    /// live allocations keep their expiry until then) and each live allocation's permission,
    /// channel and bandwidth limits ([`crate::quota::AllocationQuota::reconfigure`]).
    pub fn set_limits(&mut self, lifetimes: Lifetimes, now: Instant) {
        self.config.lifetimes = lifetimes;
        let quotas = self.shared.quota_config();
        for a in self.allocations.values_mut() {
            if let Some(q) = a.quota.as_mut() {
                q.reconfigure(&quotas, now);
            }
        }
    }

    /// The state shared with the other workers (quotas, the limiter of unauthenticated answers).
    pub fn shared(&self) -> &Arc<super::Shared> {
        &self.shared
    }

    /// Whether `user` still gets `key` from the credential store.
    fn still_authenticates(
        &self,
        user: &str,
        key: &crate::credentials::LongTermKey,
        now_unix: u64,
    ) -> bool {
        let algorithm: PasswordAlgorithm = key.algorithm();
        self.config
            .credentials
            .lookup(user, algorithm, now_unix)
            .is_ok_and(|c| c.keys().iter().any(|k| k == key))
    }

    /// The permission IPs and channel numbers of allocation `id` that the policy now refuses,
    /// by the rule CreatePermission and ChannelBind apply (the server's own relayed addresses
    /// pass unless an explicit deny range covers them).
    fn refused_leases(&self, id: AllocId) -> (Vec<IpAddr>, Vec<u16>) {
        let Some(a) = self.allocations.get(&id) else {
            return (Vec::new(), Vec::new());
        };
        let policy = &self.config.policy;
        let refused_ip = |ip: IpAddr| {
            if self.is_own_relay_ip(ip) {
                policy.check_explicit_deny(ip).is_err()
            } else {
                policy.check_ip(ip).is_err()
            }
        };
        let perms = a
            .permissions
            .keys()
            .copied()
            .filter(|&ip| refused_ip(ip))
            .collect();
        let chans = a
            .channels
            .iter()
            .filter(|(_, c)| {
                if self.is_own_relay_ip(c.peer.ip()) {
                    policy.check_explicit_deny(c.peer.ip()).is_err()
                } else {
                    policy.check(c.peer).is_err()
                }
            })
            .map(|(&n, _)| n)
            .collect();
        (perms, chans)
    }
}
