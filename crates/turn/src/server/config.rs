//! Configuration of the TURN state machine.

use core::net::IpAddr;
use core::ops::RangeInclusive;
use core::time::Duration;
use std::sync::Arc;

use crate::binding::BindingConfig;
use crate::credentials::CredentialStore;
use crate::nonce::{NonceSecret, DEFAULT_NONCE_TTL_SECS};
use crate::policy::PeerPolicy;
use crate::ratelimit::RateLimitConfig;

/// RFC 8656 §7.2: allocation lifetimes. The RFC's rule: the granted lifetime is
/// `max(default, min(requested, max))`, so `default` is also the shortest lifetime granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// RFC 8656 §7.2: the default lifetime, 10 minutes (granted when LIFETIME is absent or
    /// smaller).
    pub default: Duration,
    /// The largest lifetime granted (RFC 8656 §7.2 suggests one hour).
    pub max: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            default: Duration::from_secs(600),
            max: Duration::from_secs(3600),
        }
    }
}

impl Lifetimes {
    /// RFC 8656 §7.2 / §8.2: the lifetime granted for a requested LIFETIME (seconds).
    pub fn negotiate(&self, requested: Option<u32>) -> Duration {
        match requested {
            None => self.default,
            Some(secs) => Duration::from_secs(u64::from(secs))
                .min(self.max)
                .max(self.default),
        }
    }
}

/// Everything a [`crate::server::TurnServer`] needs. Cheap to clone (the credential store is
/// shared), so each worker gets a copy.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Long-term credentials (static users, REST secrets, strict expiry policy); its realm is
    /// the REALM of every challenge (RFC 8489 §9.2).
    pub credentials: Arc<CredentialStore>,
    /// SOFTWARE in every response (RFC 8489 §14.14); `None` omits it.
    pub software: Option<String>,
    /// Local relay IPs, at most one per family is used (the first IPv4 and the first IPv6).
    /// RFC 8656 §7.2: a family without a relay IP answers 440.
    pub relay_ips: Vec<IpAddr>,
    /// Advertised relay IPs per family for a server behind a 1:1 NAT: XOR-RELAYED-ADDRESS
    /// carries the external IP of the relay's family and the relay port. Families without an
    /// entry advertise the local relay IP.
    pub external_ips: Vec<IpAddr>,
    /// The relay port range (RFC 8656 §7.2 suggests 49152–65535).
    pub relay_ports: RangeInclusive<u16>,
    /// Allocation lifetimes.
    pub lifetimes: Lifetimes,
    /// Secret for the stateless nonces (RFC 8489 §9.2); inject it from the OS CSPRNG.
    pub nonce_secret: NonceSecret,
    /// How long a nonce is valid (RFC 8489 §9.2.5: an expired one gets 438).
    pub nonce_ttl_secs: u64,
    /// Offer SHA-256 keys: PASSWORD-ALGORITHMS in challenges and the nonce cookie
    /// (RFC 8489 §9.2.1, §14.11). MESSAGE-INTEGRITY-SHA256 is accepted either way.
    pub offer_sha256: bool,
    /// Accept USERHASH (RFC 8489 §14.4) and announce "username anonymity" in the nonce cookie.
    pub offer_userhash: bool,
    /// Limits answers to unauthenticated requests per source (RFC 8656 §21.1).
    pub rate_limit: RateLimitConfig,
    /// Hash key of the rate limiter (inject it from the OS CSPRNG).
    pub rate_limit_key: [u8; 32],
    /// Which peers may be relayed to (RFC 8656 §21.2): 403 otherwise.
    pub policy: PeerPolicy,
    /// The STUN Binding service (RFC 8489 §6.3, RFC 5780); its SOFTWARE is replaced by
    /// [`TurnConfig::software`].
    pub binding: BindingConfig,
    /// Responses remembered for retransmitted requests over UDP (RFC 8489 §6.3.1), per worker.
    pub transaction_cache_entries: usize,
    /// RFC 6062: peer TCP connections (connecting, pending or bound) per TCP allocation;
    /// exceeding it answers 508.
    pub max_connections_per_allocation: usize,
    /// Report [`crate::server::Event::ChannelRelayUp`] and [`crate::server::Event::ChannelRelayDown`]
    /// so that the shell can mirror live channels into a kernel fast path (XDP). Off by default:
    /// a shell without a fast path never sees these events.
    pub fast_path_events: bool,
}

impl TurnConfig {
    /// A configuration with safe defaults: the given credentials and relay IPs, the default
    /// peer policy (which also refuses the relay IPs themselves), SHA-256 and USERHASH offered.
    pub fn new(
        credentials: CredentialStore,
        relay_ips: Vec<IpAddr>,
        nonce_secret: NonceSecret,
        rate_limit_key: [u8; 32],
    ) -> Self {
        let policy = PeerPolicy::new().with_own_addresses(relay_ips.iter().copied());
        TurnConfig {
            credentials: Arc::new(credentials),
            software: Some(concat!("floe ", env!("CARGO_PKG_VERSION")).to_owned()),
            relay_ips,
            external_ips: Vec::new(),
            relay_ports: 49152..=65535,
            lifetimes: Lifetimes::default(),
            nonce_secret,
            nonce_ttl_secs: DEFAULT_NONCE_TTL_SECS,
            offer_sha256: true,
            offer_userhash: true,
            rate_limit: RateLimitConfig::default(),
            rate_limit_key,
            policy,
            binding: BindingConfig::default(),
            transaction_cache_entries: 4096,
            max_connections_per_allocation: 64,
            fast_path_events: false,
        }
    }

    /// The realm (RFC 8489 §14.9).
    pub fn realm(&self) -> &str {
        self.credentials.realm()
    }
}
