//! Rate limiting for answers to unauthenticated requests, and the token bucket used by quotas
//! and by floe-signal's message and join limits.
//!
//! RFC 8489 §9.2.4 answers an unauthenticated request with a 401 that carries REALM and NONCE: the
//! answer is larger than the request that caused it, so a server that answers every spoofed
//! request is an amplifier. [`SourceRateLimiter`] limits those answers per source IP *and* in
//! total, in memory that is fixed at construction: a flood from millions of spoofed sources
//! cannot grow it.
//!
//! Design: a count-min-style sketch of token buckets. `ROWS` rows of `width` buckets each; a
//! source hashes (with a secret, injected key) to one bucket per row, and an answer is allowed
//! only when *every* one of its buckets and the global bucket has a token; then one token is
//! taken from each. Collisions therefore only ever make a source's limit stricter, never looser,
//! and there is no per-source entry to evict, so an attacker cannot reset a victim's bucket by
//! churning the table. IPv6 sources are grouped by prefix (default /64, one subscriber).
//!
//! Time is passed in (`now: Instant`); nothing here reads a clock.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Per-source limiter
// ---------------------------------------------------------------------------------------------

/// Number of hash rows in [`SourceRateLimiter`].
pub const ROWS: usize = 2;

/// Settings for [`SourceRateLimiter`] (RFC 8489 §9.2.4 401 answers; RFC 8656 §21.3.1 DoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Sustained answers per second per source (default 10).
    pub per_source_per_sec: u32,
    /// Burst per source (default 40): enough for a browser gathering several allocations over
    /// UDP, TCP and TLS at once behind one NAT.
    pub per_source_burst: u32,
    /// Sustained answers per second over all sources (default 2000).
    pub global_per_sec: u32,
    /// Global burst (default 4000).
    pub global_burst: u32,
    /// Buckets per row, rounded up to a power of two (default 4096; memory is
    /// `ROWS * width * 16` bytes, 128 KiB by default).
    pub width: usize,
    /// IPv6 sources are grouped by this prefix length (default 64).
    pub ipv6_prefix_len: u8,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_source_per_sec: 10,
            per_source_burst: 40,
            global_per_sec: 2000,
            global_burst: 4000,
            width: 4096,
            ipv6_prefix_len: 64,
        }
    }
}

/// The outcome of [`SourceRateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RateDecision {
    /// Send the answer; a token was taken.
    Allow,
    /// Drop the request silently (do not amplify, RFC 8656 §21.3.1).
    LimitedSource,
    /// Drop the request silently: the server-wide budget is spent.
    LimitedGlobal,
}

impl RateDecision {
    /// Whether the answer may be sent.
    pub fn is_allowed(self) -> bool {
        self == Self::Allow
    }
}

#[derive(Clone, Copy)]
struct Slot {
    /// Thousandths of a token.
    milli: u32,
    /// Milliseconds since the limiter's epoch at the last refill.
    last_ms: u64,
}

/// A bounded-memory limiter for answers to unauthenticated requests, keyed by source IP
/// (RFC 8489 §9.2.4, RFC 8656 §21.3.1). See the module docs for the design.
pub struct SourceRateLimiter {
    config: RateLimitConfig,
    mask: usize,
    keys: [[u64; 2]; ROWS],
    slots: Box<[Slot]>,
    global: TokenBucket,
    epoch: Instant,
}

impl fmt::Debug for SourceRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRateLimiter")
            .field("config", &self.config)
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

impl SourceRateLimiter {
    /// Creates the limiter. `hash_key` must come from the OS CSPRNG (injected; this crate never
    /// reads an RNG) so that sources cannot be chosen to collide with a given victim.
    pub fn new(config: RateLimitConfig, hash_key: [u8; 32], now: Instant) -> Self {
        let width = config.width.clamp(1, 1 << 24).next_power_of_two();
        let full = Slot {
            milli: config.per_source_burst.saturating_mul(1000),
            last_ms: 0,
        };
        let mut keys = [[0_u64; 2]; ROWS];
        for (i, chunk) in hash_key.chunks_exact(8).enumerate() {
            let mut b = [0_u8; 8];
            b.copy_from_slice(chunk);
            keys[i / 2][i % 2] = u64::from_le_bytes(b);
        }
        Self {
            config,
            mask: width - 1,
            keys,
            slots: vec![full; width * ROWS].into_boxed_slice(),
            global: TokenBucket::new(
                u64::from(config.global_per_sec),
                u64::from(config.global_burst),
                now,
            ),
            epoch: now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// New rates and bursts from `now` on (a configuration reload). The table keeps its width
    /// and IPv6 grouping; each source keeps the tokens it holds, cut to the new burst at its
    /// next request.
    pub fn set_rates(&mut self, config: RateLimitConfig, now: Instant) {
        self.config.per_source_per_sec = config.per_source_per_sec;
        self.config.per_source_burst = config.per_source_burst;
        self.config.global_per_sec = config.global_per_sec;
        self.config.global_burst = config.global_burst;
        self.global.set_rate(
            u64::from(config.global_per_sec),
            u64::from(config.global_burst),
            now,
        );
    }

    /// Bytes of bucket state, fixed at construction whatever the traffic.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Asks whether an answer to an unauthenticated request from `source` may be sent at `now`,
    /// and takes a token if so (RFC 8489 §9.2.4).
    pub fn check(&mut self, source: IpAddr, now: Instant) -> RateDecision {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let key = self.source_key(source);
        let mut idx = [0_usize; ROWS];
        let mut ok = true;
        for (row, slot_idx) in idx.iter_mut().enumerate() {
            *slot_idx = row * (self.mask + 1) + (self.hash(row, key) & self.mask);
            let slot = &mut self.slots[*slot_idx];
            refill_slot(slot, now_ms, &self.config);
            ok &= slot.milli >= 1000;
        }
        if !ok {
            return RateDecision::LimitedSource;
        }
        if !self.global.try_take(1, now) {
            return RateDecision::LimitedGlobal;
        }
        for i in idx {
            self.slots[i].milli -= 1000;
        }
        RateDecision::Allow
    }

    /// The 128-bit key for a source: IPv4 (and IPv4-mapped IPv6) as `::ffff:a.b.c.d`, IPv6
    /// truncated to the configured prefix.
    fn source_key(&self, source: IpAddr) -> u128 {
        match source {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => u128::from(v4.to_ipv6_mapped()),
                None => {
                    let len = u32::from(self.config.ipv6_prefix_len.min(128));
                    let mask = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - len)
                    };
                    u128::from(a) & mask
                }
            },
        }
    }

    /// A keyed mix (not a MAC: collisions can only tighten limits, see the module docs).
    fn hash(&self, row: usize, key: u128) -> usize {
        let [k0, k1] = self.keys[row];
        // Truncations split the key into its two 64-bit halves.
        let h = splitmix64((key as u64) ^ k0);
        let h = splitmix64(h ^ ((key >> 64) as u64) ^ k1);
        // On 32-bit targets the high bits are dropped; the mask keeps the low ones anyway.
        h as usize
    }
}

fn refill_slot(slot: &mut Slot, now_ms: u64, config: &RateLimitConfig) {
    let elapsed = now_ms.saturating_sub(slot.last_ms);
    slot.last_ms = slot.last_ms.max(now_ms);
    let cap = config.per_source_burst.saturating_mul(1000);
    // `per_source_per_sec` tokens per second is exactly that many thousandths per millisecond.
    let add = elapsed.saturating_mul(u64::from(config.per_source_per_sec));
    let add = u32::try_from(add).unwrap_or(u32::MAX);
    slot.milli = slot.milli.saturating_add(add).min(cap);
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Token bucket
// ---------------------------------------------------------------------------------------------

/// A token bucket with exact integer arithmetic: `rate` tokens per period (a second unless
/// [`TokenBucket::with_period`] says otherwise) up to `capacity`, starting full. Used for
/// unauthenticated answers here, for relay bandwidth quotas (RFC 8656 §7.2 leaves the quota
/// policy to the server) and for floe-signal's message and join limits. No drift: a token is
/// `period` (in nanoseconds) units, so `rate` tokens per period is exactly `rate` units per
/// nanosecond, and many tiny refills add up to exactly the same as one big one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u64,
    capacity: u64,
    /// Units per token: the period in nanoseconds (1 to `u64::MAX`, so products with a `u64`
    /// token count fit in a `u128`).
    scale: u128,
    /// Tokens times `scale`.
    units: u128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` tokens per second, holding at most `capacity`.
    pub fn new(rate: u64, capacity: u64, now: Instant) -> Self {
        Self::with_period(rate, Duration::from_secs(1), capacity, now)
    }

    /// A full bucket refilled at `rate` tokens per `period` (for example 60 per minute, which is
    /// not a whole number per second), holding at most `capacity`. A zero period counts as 1 ns;
    /// periods beyond `u64::MAX` ns (584 years) are cut to it.
    pub fn with_period(rate: u64, period: Duration, capacity: u64, now: Instant) -> Self {
        let scale = period.as_nanos().clamp(1, u128::from(u64::MAX));
        Self {
            rate,
            capacity,
            scale,
            units: u128::from(capacity) * scale,
            last: now,
        }
    }

    /// Refill rate in tokens per period (per second unless built with
    /// [`TokenBucket::with_period`]).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Capacity (burst) in tokens.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// New `rate` and `capacity` from `now` on (a configuration reload), same period: the
    /// tokens held are kept, up to the new capacity, so a change never grants a fresh burst.
    pub fn set_rate(&mut self, rate: u64, capacity: u64, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.capacity = capacity;
        self.units = self.units.min(u128::from(capacity) * self.scale);
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.units / self.scale).unwrap_or(u64::MAX)
    }

    /// Whether the bucket is full at `now` (an idle user: its entry can be dropped).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.units >= u128::from(self.capacity) * self.scale
    }

    /// Takes `n` tokens if that many are available at `now`; otherwise takes none.
    #[must_use]
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        let need = u128::from(n) * self.scale;
        if self.units >= need {
            self.units -= need;
            true
        } else {
            false
        }
    }

    /// How long from `now` until `n` tokens are available; `None` if never (`n` > capacity or a
    /// zero rate). Useful for a `poll_timeout`.
    pub fn time_until(&mut self, n: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let need = u128::from(n) * self.scale;
        if self.units >= need {
            return Some(Duration::ZERO);
        }
        if n > self.capacity || self.rate == 0 {
            return None;
        }
        // `rate` units arrive per nanosecond.
        let missing = need - self.units;
        let nanos = missing.div_ceil(u128::from(self.rate));
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        if now > self.last {
            self.last = now;
        }
        let cap = u128::from(self.capacity) * self.scale;
        let add = elapsed.saturating_mul(u128::from(self.rate));
        self.units = self.units.saturating_add(add).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time: the only clock read in these tests picks an arbitrary origin; every later
    /// instant is `origin + Duration`.
    fn origin() -> Instant {
        Instant::now()
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn limiter(t0: Instant) -> SourceRateLimiter {
        let cfg = RateLimitConfig {
            per_source_per_sec: 2,
            per_source_burst: 3,
            global_per_sec: 100,
            global_burst: 100,
            width: 1024,
            ipv6_prefix_len: 64,
        };
        SourceRateLimiter::new(cfg, [42; 32], t0)
    }

    #[test]
    fn burst_then_limited_then_refilled() {
        let t0 = origin();
        let mut l = limiter(t0);
        let a = ip("198.51.100.1");

        let first: Vec<_> = (0..4).map(|_| l.check(a, t0)).collect();

        assert_eq!(
            first,
            vec![
                RateDecision::Allow,
                RateDecision::Allow,
                RateDecision::Allow,
                RateDecision::LimitedSource
            ]
        );
        // 2 per second: one token after 500 ms, not before.
        assert_eq!(l.check(a, ms(t0, 499)), RateDecision::LimitedSource);
        assert_eq!(l.check(a, ms(t0, 500)), RateDecision::Allow);
        assert_eq!(l.check(a, ms(t0, 500)), RateDecision::LimitedSource);
        // Long idle refills only up to the burst.
        let later = ms(t0, 3_600_000);
        assert_eq!(
            (0..10).filter(|_| l.check(a, later).is_allowed()).count(),
            3
        );
    }

    #[test]
    fn sources_are_independent() {
        let t0 = origin();
        let mut l = limiter(t0);
        for _ in 0..3 {
            assert!(l.check(ip("198.51.100.1"), t0).is_allowed());
        }

        assert!(!l.check(ip("198.51.100.1"), t0).is_allowed());
        // With 1024 buckets per row, a different fixed address is very unlikely to share both.
        assert!(l.check(ip("198.51.100.2"), t0).is_allowed());
    }

    #[test]
    fn ipv6_sources_are_grouped_by_prefix_and_mapped_equals_v4() {
        let t0 = origin();
        let mut l = limiter(t0);
        for i in 0..3 {
            assert!(l.check(ip(&format!("2001:db8:1:2::{i}")), t0).is_allowed());
        }
        assert!(!l.check(ip("2001:db8:1:2:ffff::9"), t0).is_allowed());

        for _ in 0..3 {
            assert!(l.check(ip("192.0.2.1"), t0).is_allowed());
        }
        assert!(!l.check(ip("::ffff:192.0.2.1"), t0).is_allowed());
    }

    #[test]
    fn spoofed_flood_keeps_memory_fixed_and_hits_the_global_limit() {
        let t0 = origin();
        let mut l = limiter(t0);
        let before = l.memory_bytes();

        let allowed = (0..100_000_u32)
            .filter(|i| l.check(IpAddr::V4((*i).into()), t0).is_allowed())
            .count();

        assert_eq!(l.memory_bytes(), before);
        assert_eq!(before, 2 * 1024 * 16);
        assert_eq!(allowed, 100, "global burst caps the flood");
        assert_eq!(
            l.check(ip("203.0.113.99"), t0),
            RateDecision::LimitedGlobal,
            "a fresh source is refused while the global budget is spent"
        );
        // One second later the global bucket has 100 new tokens.
        let t1 = ms(t0, 1000);
        let allowed = (0..1000_u32)
            .filter(|i| {
                l.check(IpAddr::V4((0x0a00_0000 + *i).into()), t1)
                    .is_allowed()
            })
            .count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn a_flood_cannot_reset_a_victims_bucket() {
        let t0 = origin();
        let cfg = RateLimitConfig {
            global_per_sec: u32::MAX,
            global_burst: u32::MAX,
            width: 64,
            ..RateLimitConfig::default()
        };
        let mut l = SourceRateLimiter::new(cfg, [1; 32], t0);
        let victim = ip("192.0.2.55");
        while l.check(victim, t0).is_allowed() {}

        for i in 0..10_000_u32 {
            let _ = l.check(IpAddr::V4(i.into()), t0);
        }

        assert_eq!(l.check(victim, t0), RateDecision::LimitedSource);
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let t0 = origin();
        let mut l = limiter(t0 + Duration::from_secs(10));
        let a = ip("198.51.100.1");
        let t = t0 + Duration::from_secs(20);
        while l.check(a, t).is_allowed() {}

        assert!(!l.check(a, t0).is_allowed());
        assert!(!l.check(a, t - Duration::from_secs(5)).is_allowed());
    }

    #[test]
    fn token_bucket_is_exact_under_many_small_refills() {
        let t0 = origin();
        let mut b = TokenBucket::new(3, 10, t0);
        assert!(b.try_take(10, t0));
        assert!(!b.try_take(1, t0));

        // 1000 steps of 1 ms at 3 tokens/s add up to exactly 3 tokens.
        for i in 1..=1000 {
            let _ = b.available(ms(t0, i));
        }

        assert_eq!(b.available(ms(t0, 1000)), 3);
        assert_eq!(
            b.time_until(4, ms(t0, 1000)),
            Some(Duration::from_nanos(333_333_334))
        );
        assert_eq!(b.time_until(11, ms(t0, 1000)), None);
        assert!(b.try_take(3, ms(t0, 1000)));
        assert_eq!(b.available(ms(t0, 1_000_000)), 10);
    }

    #[test]
    fn token_bucket_handles_huge_values() {
        let t0 = origin();
        let mut b = TokenBucket::new(u64::MAX, u64::MAX, t0);
        assert!(b.try_take(u64::MAX, t0));
        assert_eq!(b.available(t0 + Duration::from_secs(1)), u64::MAX);
        let mut z = TokenBucket::new(0, 5, t0);
        assert!(z.try_take(5, t0));
        assert_eq!(z.time_until(1, t0 + Duration::from_secs(100)), None);
    }

    #[test]
    fn token_bucket_refills_per_second_and_reports_full() {
        // The case floe-signal's message limit relies on (formerly its own f64 bucket's test).
        let t0 = origin();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.try_take(1, t0) && b.try_take(1, t0) && b.try_take(1, t0));

        assert!(!b.try_take(1, t0));
        assert!(!b.try_take(1, ms(t0, 50)));
        assert!(b.try_take(1, ms(t0, 101)));
        assert!(!b.is_full(ms(t0, 101)));
        assert!(b.is_full(ms(t0, 1000)));
    }

    #[test]
    fn token_bucket_with_a_period_refills_exactly() {
        // 60 joins per minute: one per second, without a fractional per-second rate.
        let t0 = origin();
        let mut b = TokenBucket::with_period(60, Duration::from_secs(60), 60, t0);
        assert!(b.try_take(60, t0));

        assert!(!b.try_take(1, ms(t0, 999)));
        assert!(b.try_take(1, ms(t0, 1000)));
        assert_eq!(b.time_until(1, ms(t0, 1000)), Some(Duration::from_secs(1)));
        // 7 per minute: 4 tokens after exactly 4/7 of a minute, not a nanosecond earlier.
        let mut odd = TokenBucket::with_period(7, Duration::from_secs(60), 7, t0);
        assert!(odd.try_take(7, t0));
        let four = Duration::from_nanos(60_000_000_000 * 4 / 7 + 1);
        assert_eq!(odd.time_until(4, t0), Some(four));
        assert_eq!(odd.available(t0 + four - Duration::from_nanos(1)), 3);
        assert_eq!(odd.available(t0 + four), 4);
        assert!(odd.is_full(t0 + Duration::from_secs(60)));
        // A zero period is one nanosecond: never a division by zero.
        let mut z = TokenBucket::with_period(1, Duration::ZERO, 2, t0);
        assert!(z.try_take(2, t0));
        assert!(z.try_take(1, t0 + Duration::from_nanos(1)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Over any schedule, a single source never gets more than burst + rate * elapsed.
            #[test]
            fn a_source_never_exceeds_burst_plus_rate(steps in proptest::collection::vec(0_u64..2000, 1..200)) {
                let t0 = origin();
                let mut l = limiter(t0);
                let a = ip("198.51.100.1");
                let mut now = 0;
                let mut allowed = 0_u64;
                for s in steps {
                    now += s;
                    if l.check(a, ms(t0, now)).is_allowed() {
                        allowed += 1;
                    }
                }
                prop_assert!(allowed <= 3 + 2 * now / 1000);
            }

            #[test]
            fn token_bucket_never_exceeds_capacity_plus_refill(
                rate in 0_u64..1_000_000, cap in 1_u64..1_000_000,
                ops in proptest::collection::vec((0_u64..5000, 0_u64..100_000), 1..100),
            ) {
                let t0 = origin();
                let mut b = TokenBucket::new(rate, cap, t0);
                let (mut now, mut taken) = (0_u64, 0_u128);
                for (dt, n) in ops {
                    now += dt;
                    if b.try_take(n, ms(t0, now)) {
                        taken += u128::from(n);
                    }
                }
                prop_assert!(taken <= u128::from(cap) + u128::from(rate) * u128::from(now) / 1000);
            }
        }
    }

    #[test]
    fn a_new_rate_keeps_the_tokens_held_up_to_the_new_capacity() {
        let t0 = origin();
        let mut b = TokenBucket::new(10, 10, t0);
        assert!(b.try_take(4, t0));
        // Raised: the 6 held stay 6 (no fresh burst), refilled at the new rate.
        b.set_rate(100, 100, t0);
        assert_eq!(b.available(t0), 6);
        assert_eq!(b.available(ms(t0, 100)), 16);
        // Lowered: cut to the new capacity.
        b.set_rate(1, 2, ms(t0, 100));
        assert_eq!(b.available(ms(t0, 100)), 2);
    }
}
