//! Quotas: allocations per user and in total, permissions and channels per allocation, relay
//! bandwidth per allocation and per user.
//!
//! RFC 8656 §7.2: "the server MAY choose to reject the request with a 486 (Allocation Quota
//! Reached) error if it feels the client is trying to exceed some locally defined allocation
//! quota ... it SHOULD define it based on the username used to authenticate the request". RFC
//! 8656 §10.2 and §12.2 answer 508 (Insufficient Capacity) when a permission or channel cannot be
//! added. RFC 8656 §21.3.1 and §21.1.7 recommend per-username allocation and bandwidth limits
//! against DoS and TURN loops. Every limit is on by default ([`QuotaConfig::default`]).
//!
//! Only authenticated requests reach the quota tracker, and the total allocation cap bounds the
//! number of users it tracks, so its memory is bounded too. The relay path is O(1): an
//! [`AllocationQuota`] holds the index of its user, no map lookup per packet.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::ratelimit::TokenBucket;

/// The largest relayed datagram (a UDP payload); every bandwidth burst must hold one.
pub const MAX_DATAGRAM: u64 = 65_535;

/// A relay bandwidth limit: a token bucket in bytes (RFC 8656 §7.2 leaves quotas to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained bytes per second.
    pub bytes_per_sec: u64,
    /// Burst in bytes (at least [`MAX_DATAGRAM`]).
    pub burst_bytes: u64,
}

impl Bandwidth {
    /// A limit of `bytes_per_sec` with a one-second burst (at least one maximal datagram).
    pub const fn per_sec(bytes_per_sec: u64) -> Self {
        let burst = if bytes_per_sec < MAX_DATAGRAM {
            MAX_DATAGRAM
        } else {
            bytes_per_sec
        };
        Self {
            bytes_per_sec,
            burst_bytes: burst,
        }
    }
}

/// Quota settings (RFC 8656 §7.2, §10.2, §12.2). `u32::MAX` or `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaConfig {
    /// Allocations in total (default 10 000). Exceeding it answers 486.
    pub max_allocations_total: u32,
    /// Allocations per user (default 32). Exceeding it answers 486. The server counts a TURN REST
    /// username `EXPIRY:USER` as the user `USER` ([`crate::rest::user_of`]).
    pub max_allocations_per_user: u32,
    /// Permissions (peer IPs) per allocation (default 64). Exceeding it answers 508.
    pub max_permissions_per_allocation: u32,
    /// Channel bindings per allocation (default 64 of the 4096 channel numbers). Exceeding it
    /// answers 508.
    pub max_channels_per_allocation: u32,
    /// Relayed bytes per allocation, both directions together (default 2.5 MB/s = 20 Mbit/s,
    /// one-second burst).
    pub allocation_bandwidth: Option<Bandwidth>,
    /// Relayed bytes per user over all of the user's allocations (default 6.25 MB/s =
    /// 50 Mbit/s, one-second burst).
    pub user_bandwidth: Option<Bandwidth>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            max_allocations_total: 10_000,
            max_allocations_per_user: 32,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            allocation_bandwidth: Some(Bandwidth::per_sec(2_500_000)),
            user_bandwidth: Some(Bandwidth::per_sec(6_250_000)),
        }
    }
}

impl QuotaConfig {
    /// No limits at all (for tests and benchmarks; never the default).
    pub const fn unlimited() -> Self {
        Self {
            max_allocations_total: u32::MAX,
            max_allocations_per_user: u32::MAX,
            max_permissions_per_allocation: u32::MAX,
            max_channels_per_allocation: u32::MAX,
            allocation_bandwidth: None,
            user_bandwidth: None,
        }
    }

    /// Checks the settings: bursts must hold one maximal datagram (else some packets could never
    /// pass) and rates must not be zero (use `None` to mean unlimited).
    pub fn validate(&self) -> Result<(), QuotaConfigError> {
        for (what, bw) in [
            ("allocation", self.allocation_bandwidth),
            ("user", self.user_bandwidth),
        ] {
            let Some(bw) = bw else { continue };
            if bw.bytes_per_sec == 0 {
                return Err(QuotaConfigError::ZeroRate { what });
            }
            if bw.burst_bytes < MAX_DATAGRAM {
                return Err(QuotaConfigError::BurstTooSmall {
                    what,
                    burst: bw.burst_bytes,
                });
            }
        }
        Ok(())
    }
}

/// An invalid [`QuotaConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaConfigError {
    /// A bandwidth limit with a zero rate.
    #[error("{what} bandwidth rate is 0; omit the limit for unlimited")]
    ZeroRate {
        /// Which limit.
        what: &'static str,
    },
    /// A burst that cannot hold one maximal datagram.
    #[error("{what} bandwidth burst {burst} is smaller than one datagram ({MAX_DATAGRAM} bytes)")]
    BurstTooSmall {
        /// Which limit.
        what: &'static str,
        /// The configured burst.
        burst: u64,
    },
}

/// A quota that was hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The user has too many allocations (RFC 8656 §7.2: 486).
    #[error("user has {limit} allocations already")]
    UserAllocations {
        /// The limit.
        limit: u32,
    },
    /// The server has too many allocations (RFC 8656 §7.2: 486).
    #[error("server has {limit} allocations already")]
    TotalAllocations {
        /// The limit.
        limit: u32,
    },
    /// The allocation has too many permissions (RFC 8656 §10.2: 508).
    #[error("allocation has {limit} permissions already")]
    Permissions {
        /// The limit.
        limit: u32,
    },
    /// The allocation has too many channels (RFC 8656 §12.2: 508).
    #[error("allocation has {limit} channels already")]
    Channels {
        /// The limit.
        limit: u32,
    },
}

impl QuotaError {
    /// The STUN error code: 486 (Allocation Quota Reached) for allocations, 508 (Insufficient
    /// Capacity) for permissions and channels (RFC 8656 §7.2, §10.2, §12.2).
    pub const fn error_code(&self) -> u16 {
        match self {
            Self::UserAllocations { .. } | Self::TotalAllocations { .. } => 486,
            Self::Permissions { .. } | Self::Channels { .. } => 508,
        }
    }
}

struct UserState {
    name: String,
    allocations: u32,
    bandwidth: Option<TokenBucket>,
}

/// Accounts allocations per user and in total and the per-user bandwidth (RFC 8656 §7.2).
pub struct QuotaTracker {
    config: QuotaConfig,
    total: u32,
    users: Vec<Option<UserState>>,
    free: Vec<usize>,
    by_name: BTreeMap<String, usize>,
}

impl fmt::Debug for QuotaTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaTracker")
            .field("config", &self.config)
            .field("total", &self.total)
            .field("users", &self.by_name.len())
            .finish()
    }
}

/// The quota handle of one allocation: its bandwidth bucket and the index of its user. Not
/// `Clone`; give it back with [`QuotaTracker::release`] when the allocation ends.
#[derive(Debug)]
#[must_use = "an allocation quota must be released with QuotaTracker::release"]
pub struct AllocationQuota {
    user: usize,
    bandwidth: Option<TokenBucket>,
    max_permissions: u32,
    max_channels: u32,
}

impl AllocationQuota {
    /// Checks that one more permission fits next to `current` existing ones (RFC 8656 §10.2: 508
    /// otherwise). Refreshing an existing permission needs no check.
    pub fn check_new_permission(&self, current: usize) -> Result<(), QuotaError> {
        if exceeds(current, self.max_permissions) {
            return Err(QuotaError::Permissions {
                limit: self.max_permissions,
            });
        }
        Ok(())
    }

    /// Checks that one more channel fits next to `current` existing ones (RFC 8656 §12.2: 508
    /// otherwise). Refreshing an existing binding needs no check.
    pub fn check_new_channel(&self, current: usize) -> Result<(), QuotaError> {
        if exceeds(current, self.max_channels) {
            return Err(QuotaError::Channels {
                limit: self.max_channels,
            });
        }
        Ok(())
    }
}

impl AllocationQuota {
    /// New per-allocation limits (a configuration reload): permissions and channels beyond them
    /// stay until they expire, new ones are checked against them; the bandwidth limit applies
    /// to the next relayed byte.
    pub fn reconfigure(&mut self, config: &QuotaConfig, now: Instant) {
        self.max_permissions = config.max_permissions_per_allocation;
        self.max_channels = config.max_channels_per_allocation;
        rebucket(&mut self.bandwidth, config.allocation_bandwidth, now);
    }
}

/// Points `bucket` at the limit `limit` from `now` on (keeping the tokens it holds, up to the new
/// burst); `None` removes it.
fn rebucket(bucket: &mut Option<TokenBucket>, limit: Option<Bandwidth>, now: Instant) {
    match (bucket.as_mut(), limit) {
        (_, None) => *bucket = None,
        (Some(b), Some(l)) => b.set_rate(l.bytes_per_sec, l.burst_bytes, now),
        (None, Some(l)) => *bucket = Some(TokenBucket::new(l.bytes_per_sec, l.burst_bytes, now)),
    }
}

fn exceeds(current: usize, limit: u32) -> bool {
    u32::try_from(current).map_or(true, |c| c >= limit)
}

impl QuotaTracker {
    /// A tracker with `config` (validate it first with [`QuotaConfig::validate`]).
    pub fn new(config: QuotaConfig) -> Self {
        Self {
            config,
            total: 0,
            users: Vec::new(),
            free: Vec::new(),
            by_name: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// New quotas (a configuration reload, RFC 8656 §7.2 leaves them to the server): the
    /// allocation limits apply to the next Allocate (live allocations beyond them stay), the
    /// per-user bandwidth limit to the next relayed byte. Per-allocation limits are in each
    /// [`AllocationQuota`] ([`AllocationQuota::reconfigure`]). Validate `config` first.
    pub fn set_config(&mut self, config: QuotaConfig, now: Instant) {
        self.config = config;
        for user in self.users.iter_mut().flatten() {
            rebucket(&mut user.bandwidth, config.user_bandwidth, now);
        }
    }

    /// Allocations in use.
    pub fn total_allocations(&self) -> u32 {
        self.total
    }

    /// Allocations in use by `user`.
    pub fn user_allocations(&self, user: &str) -> u32 {
        self.by_name
            .get(user)
            .and_then(|&i| self.users[i].as_ref())
            .map_or(0, |u| u.allocations)
    }

    /// Number of users with at least one allocation.
    pub fn active_users(&self) -> usize {
        self.by_name.len()
    }

    /// Reserves an allocation for the authenticated `user` (RFC 8656 §7.2): 486 when the user or
    /// the server is at its limit.
    pub fn try_allocate(
        &mut self,
        user: &str,
        now: Instant,
    ) -> Result<AllocationQuota, QuotaError> {
        let c = self.config;
        if self.total >= c.max_allocations_total {
            return Err(QuotaError::TotalAllocations {
                limit: c.max_allocations_total,
            });
        }
        if self.user_allocations(user) >= c.max_allocations_per_user {
            return Err(QuotaError::UserAllocations {
                limit: c.max_allocations_per_user,
            });
        }
        let idx = self.user_slot(user, now);
        if let Some(u) = self.users[idx].as_mut() {
            u.allocations += 1;
        }
        self.total += 1;
        Ok(AllocationQuota {
            user: idx,
            bandwidth: c
                .allocation_bandwidth
                .map(|b| TokenBucket::new(b.bytes_per_sec, b.burst_bytes, now)),
            max_permissions: c.max_permissions_per_allocation,
            max_channels: c.max_channels_per_allocation,
        })
    }

    /// Ends an allocation's accounting; the user's entry goes when its last allocation does.
    pub fn release(&mut self, quota: AllocationQuota) {
        let Some(slot) = self.users.get_mut(quota.user) else {
            return;
        };
        let Some(u) = slot.as_mut() else { return };
        u.allocations = u.allocations.saturating_sub(1);
        self.total = self.total.saturating_sub(1);
        if u.allocations == 0 {
            let name = std::mem::take(&mut u.name);
            *slot = None;
            self.by_name.remove(&name);
            self.free.push(quota.user);
        }
    }

    /// Charges `bytes` of relayed data (either direction) to the allocation and its user at
    /// `now`. `false` means over quota: drop the packet. Either both buckets are charged or none.
    #[must_use]
    pub fn allow_relay(&mut self, quota: &mut AllocationQuota, bytes: usize, now: Instant) -> bool {
        let n = u64::try_from(bytes).unwrap_or(u64::MAX);
        let mut buckets = self.buckets(quota);
        let fits = buckets
            .iter_mut()
            .all(|b| b.as_mut().is_none_or(|b| b.available(now) >= n));
        if !fits {
            return false;
        }
        for b in buckets.into_iter().flatten() {
            let _ = b.try_take(n, now);
        }
        true
    }

    /// Charges `bytes` already relayed outside the state machine (a kernel fast path, counted
    /// after the fact) to the allocation and its user at `now`: takes what each bucket holds, up
    /// to `bytes`. `false` when a bucket held less, i.e. the allocation or its user went over
    /// its cap (the caller then takes the allocation off the fast path).
    pub fn charge_relayed(
        &mut self,
        quota: &mut AllocationQuota,
        bytes: u64,
        now: Instant,
    ) -> bool {
        let mut fit = true;
        for b in self.buckets(quota).into_iter().flatten() {
            let take = bytes.min(b.available(now));
            fit &= take == bytes;
            let _ = b.try_take(take, now);
        }
        fit
    }

    /// Whether the allocation's and its user's buckets each hold at least half their burst at
    /// `now` (an allocation taken off a kernel fast path for going over its cap may go back).
    pub fn relay_recovered(&mut self, quota: &mut AllocationQuota, now: Instant) -> bool {
        self.buckets(quota)
            .into_iter()
            .flatten()
            .all(|b| b.available(now) >= b.capacity() / 2)
    }

    /// Charges up to `want` bytes of a byte stream (RFC 6062 data connections: TCP cannot drop,
    /// so the relay paces itself instead) to the allocation and its user at `now`. Grants
    /// `min(want, what both buckets hold)` when that is at least `min(want, at_least)`, taking it
    /// from both buckets; otherwise takes nothing and says how long until `min(want, at_least)`
    /// bytes fit. `at_least` keeps a throttled stream from waking for every few bytes; keep it
    /// within the bursts (every burst holds [`MAX_DATAGRAM`]).
    pub fn grant_relay(
        &mut self,
        quota: &mut AllocationQuota,
        want: u64,
        at_least: u64,
        now: Instant,
    ) -> Result<u64, Duration> {
        let mut buckets = self.buckets(quota);
        let need = want.min(at_least);
        let available = buckets
            .iter_mut()
            .flatten()
            .map(|b| b.available(now))
            .min()
            .unwrap_or(u64::MAX);
        if available < need {
            let wait = buckets
                .iter_mut()
                .flatten()
                .map(|b| b.time_until(need, now).unwrap_or(Duration::from_secs(1)))
                .max()
                .unwrap_or(Duration::ZERO);
            return Err(wait);
        }
        let granted = want.min(available);
        for b in buckets.into_iter().flatten() {
            let _ = b.try_take(granted, now);
        }
        Ok(granted)
    }

    /// The allocation's and its user's bandwidth buckets (`None` where unlimited).
    fn buckets<'a>(
        &'a mut self,
        quota: &'a mut AllocationQuota,
    ) -> [Option<&'a mut TokenBucket>; 2] {
        let user = self
            .users
            .get_mut(quota.user)
            .and_then(Option::as_mut)
            .and_then(|u| u.bandwidth.as_mut());
        [quota.bandwidth.as_mut(), user]
    }

    fn user_slot(&mut self, user: &str, now: Instant) -> usize {
        if let Some(&i) = self.by_name.get(user) {
            return i;
        }
        let state = UserState {
            name: user.to_owned(),
            allocations: 0,
            bandwidth: self
                .config
                .user_bandwidth
                .map(|b| TokenBucket::new(b.bytes_per_sec, b.burst_bytes, now)),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.users[i] = Some(state);
                i
            }
            None => {
                self.users.push(Some(state));
                self.users.len() - 1
            }
        };
        self.by_name.insert(user.to_owned(), idx);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time: one arbitrary origin, every later instant is `origin + Duration`.
    fn t0() -> Instant {
        Instant::now()
    }

    fn small() -> QuotaConfig {
        QuotaConfig {
            max_allocations_total: 3,
            max_allocations_per_user: 2,
            max_permissions_per_allocation: 2,
            max_channels_per_allocation: 1,
            allocation_bandwidth: Some(Bandwidth {
                bytes_per_sec: 100_000,
                burst_bytes: 100_000,
            }),
            user_bandwidth: Some(Bandwidth {
                bytes_per_sec: 150_000,
                burst_bytes: 150_000,
            }),
        }
    }

    #[test]
    fn defaults_are_on_and_valid() {
        let d = QuotaConfig::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.max_allocations_total, 10_000);
        assert_eq!(d.max_allocations_per_user, 32);
        assert_eq!(d.max_permissions_per_allocation, 64);
        assert_eq!(d.max_channels_per_allocation, 64);
        assert_eq!(d.allocation_bandwidth, Some(Bandwidth::per_sec(2_500_000)));
        assert_eq!(d.user_bandwidth, Some(Bandwidth::per_sec(6_250_000)));
    }

    #[test]
    fn validate_rejects_useless_bandwidth() {
        let mut c = QuotaConfig {
            allocation_bandwidth: Some(Bandwidth {
                bytes_per_sec: 0,
                burst_bytes: 100_000,
            }),
            ..QuotaConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(QuotaConfigError::ZeroRate { what: "allocation" })
        );
        c.allocation_bandwidth = None;
        c.user_bandwidth = Some(Bandwidth {
            bytes_per_sec: 1000,
            burst_bytes: 1000,
        });
        assert!(matches!(
            c.validate(),
            Err(QuotaConfigError::BurstTooSmall { what: "user", .. })
        ));
        assert_eq!(Bandwidth::per_sec(1000).burst_bytes, MAX_DATAGRAM);
        assert_eq!(QuotaConfig::unlimited().validate(), Ok(()));
    }

    #[test]
    fn per_user_then_total_allocation_limits_answer_486() {
        let now = t0();
        let mut q = QuotaTracker::new(small());
        let a1 = q.try_allocate("alice", now).expect("a1");
        let a2 = q.try_allocate("alice", now).expect("a2");

        let e = q.try_allocate("alice", now).expect_err("alice over");
        assert_eq!(e, QuotaError::UserAllocations { limit: 2 });
        assert_eq!(e.error_code(), 486);

        let b1 = q.try_allocate("bob", now).expect("b1");
        let e = q.try_allocate("carol", now).expect_err("total");
        assert_eq!(e, QuotaError::TotalAllocations { limit: 3 });
        assert_eq!(e.error_code(), 486);
        assert_eq!(q.total_allocations(), 3);

        q.release(a1);
        let c1 = q.try_allocate("carol", now).expect("room again");
        assert_eq!(q.user_allocations("alice"), 1);
        for h in [a2, b1, c1] {
            q.release(h);
        }
        assert_eq!(q.total_allocations(), 0);
        assert_eq!(
            q.active_users(),
            0,
            "user entries are freed with their last allocation"
        );
    }

    #[test]
    fn permission_and_channel_limits_answer_508() {
        let mut q = QuotaTracker::new(small());
        let a = q.try_allocate("alice", t0()).expect("a");

        assert_eq!(a.check_new_permission(0), Ok(()));
        assert_eq!(a.check_new_permission(1), Ok(()));
        let e = a.check_new_permission(2).expect_err("full");
        assert_eq!(e.error_code(), 508);
        assert_eq!(a.check_new_channel(0), Ok(()));
        assert_eq!(
            a.check_new_channel(1),
            Err(QuotaError::Channels { limit: 1 })
        );
        q.release(a);
    }

    #[test]
    fn allocation_bandwidth_is_limited_and_refills() {
        let now = t0();
        let mut q = QuotaTracker::new(small());
        let mut a = q.try_allocate("alice", now).expect("a");

        assert!(q.allow_relay(&mut a, 60_000, now));
        assert!(
            !q.allow_relay(&mut a, 60_000, now),
            "allocation burst is 100 kB"
        );
        assert!(q.allow_relay(&mut a, 40_000, now));
        assert!(!q.allow_relay(&mut a, 1, now));
        assert!(q.allow_relay(&mut a, 10_000, now + Duration::from_millis(100)));
        q.release(a);
    }

    #[test]
    fn user_bandwidth_is_shared_across_allocations_and_failed_sends_cost_nothing() {
        let now = t0();
        let mut q = QuotaTracker::new(small());
        let mut a = q.try_allocate("alice", now).expect("a");
        let mut b = q.try_allocate("alice", now).expect("b");
        let mut other = q.try_allocate("bob", now).expect("bob");

        assert!(q.allow_relay(&mut a, 100_000, now));
        // b has its own 100 kB but the user has only 50 kB left.
        assert!(!q.allow_relay(&mut b, 60_000, now));
        assert!(
            q.allow_relay(&mut b, 50_000, now),
            "the refused send took no tokens"
        );
        assert!(!q.allow_relay(&mut b, 1, now));
        // Another user is unaffected.
        assert!(q.allow_relay(&mut other, 100_000, now));
        for h in [a, b, other] {
            q.release(h);
        }
    }

    #[test]
    fn stream_grants_are_partial_then_say_when_to_retry() {
        let now = t0();
        let mut q = QuotaTracker::new(small());
        let mut a = q.try_allocate("alice", now).expect("a");
        let mut b = q.try_allocate("alice", now).expect("b");

        assert_eq!(q.grant_relay(&mut a, 60_000, 4096, now), Ok(60_000));
        // The allocation holds 40 kB: a partial grant.
        assert_eq!(q.grant_relay(&mut a, 60_000, 4096, now), Ok(40_000));
        // Empty: 4096 bytes come back in 40.96 ms at 100 kB/s.
        assert_eq!(
            q.grant_relay(&mut a, 60_000, 4096, now),
            Err(Duration::from_nanos(40_960_000))
        );
        // The user has 50 kB left for b; then b waits on the user's 150 kB/s.
        assert_eq!(q.grant_relay(&mut b, 65_535, 4096, now), Ok(50_000));
        let wait = q
            .grant_relay(&mut b, 65_535, 4096, now)
            .expect_err("user empty");
        assert_eq!(wait, Duration::from_nanos(27_306_667));
        // After the wait, the bytes are there.
        assert_eq!(q.grant_relay(&mut b, 65_535, 4096, now + wait), Ok(4096));
        // A want below the minimum chunk is granted whole or waited for.
        let later = now + Duration::from_secs(10);
        assert_eq!(q.grant_relay(&mut a, 10, 4096, later), Ok(10));
        for h in [a, b] {
            q.release(h);
        }
    }

    #[test]
    fn unlimited_config_never_refuses() {
        let now = t0();
        let mut q = QuotaTracker::new(QuotaConfig::unlimited());
        let mut handles: Vec<_> = (0..100)
            .map(|_| q.try_allocate("x", now).expect("alloc"))
            .collect();
        assert!(q.allow_relay(&mut handles[0], usize::MAX, now));
        assert_eq!(handles[0].check_new_permission(1_000_000), Ok(()));
        for h in handles {
            q.release(h);
        }
    }

    #[test]
    fn released_slots_are_reused_so_memory_tracks_live_users() {
        let now = t0();
        let mut q = QuotaTracker::new(QuotaConfig::default());
        for i in 0..1000 {
            let h = q.try_allocate(&format!("user{i}"), now).expect("alloc");
            q.release(h);
        }
        assert_eq!(q.users.len(), 1);
        assert_eq!(q.active_users(), 0);
    }

    #[test]
    fn new_quotas_apply_to_the_next_allocate_and_the_next_byte() {
        let now = t0();
        let mut q = QuotaTracker::new(small());
        let mut a1 = q.try_allocate("alice", now).expect("a1");
        let a2 = q.try_allocate("bob", now).expect("a2");

        let lower = QuotaConfig {
            max_allocations_total: 2,
            max_permissions_per_allocation: 1,
            allocation_bandwidth: Some(Bandwidth::per_sec(MAX_DATAGRAM)),
            user_bandwidth: None,
            ..small()
        };
        q.set_config(lower, now);
        a1.reconfigure(&lower, now);

        // The live allocations stay; a third is refused by the new total.
        assert_eq!(q.total_allocations(), 2);
        let e = q
            .try_allocate("carol", now)
            .expect_err("over the new total");
        assert_eq!(e, QuotaError::TotalAllocations { limit: 2 });
        // The new per-allocation limits hold for a1 at once.
        assert_eq!(
            a1.check_new_permission(1),
            Err(QuotaError::Permissions { limit: 1 })
        );
        // Its bucket kept its tokens (100 000 held) cut to the new burst: one datagram passes,
        // the next byte waits for the refill.
        assert!(q.allow_relay(&mut a1, 65_535, now));
        assert!(!q.allow_relay(&mut a1, 1, now));
        q.release(a1);
        q.release(a2);
    }
}
