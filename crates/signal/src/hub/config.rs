//! Hub limits and settings.

use std::time::{Duration, Instant};

use floe_turn::ratelimit::TokenBucket;

use crate::auth::Auth;
use crate::ice::IceConfig;

/// Hub limits and settings. [`HubConfig::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How joins are authorised.
    pub auth: Auth,
    /// STUN/TURN servers for `welcome` and `resumed`.
    pub ice: IceConfig,
    /// Largest accepted frame (default 64 KiB).
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection (default 50).
    pub msgs_per_sec: u32,
    /// Burst of messages per connection (default 200).
    pub msg_burst: u32,
    /// Consecutive rate-limited messages after which the connection is closed (default 50).
    pub max_rate_violations: u32,
    /// Joins per minute per IP address (default 60).
    pub joins_per_min_per_ip: u32,
    /// Peers per room (default 50).
    pub max_peers_per_room: usize,
    /// Rooms with at least one session on this node (default 10 000).
    pub max_rooms: usize,
    /// Distinct IP addresses tracked by the join limiter; beyond it new addresses are refused
    /// until entries age out (default 100 000).
    pub max_tracked_ips: usize,
    /// How long a disconnected session waits for `resume` (default 30 s).
    pub resume_ttl: Duration,
    /// The heartbeat interval clients are told to use; three intervals of silence end a
    /// connection (default 10 s).
    pub heartbeat: Duration,
    /// Time allowed between connecting and joining (default 10 s).
    pub join_timeout: Duration,
    /// Unacknowledged messages per session (default 1024).
    pub mailbox_max_msgs: usize,
    /// Unacknowledged bytes per session (default 1 MiB).
    pub mailbox_max_bytes: usize,
    /// Candidates held per peer pair until an offer or answer passes (default 128).
    pub max_held_candidates: usize,
    /// Messages returned by one post-box poll (default 256).
    pub post_box_poll_batch: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            auth: Auth::Development,
            ice: IceConfig::default(),
            max_message_bytes: 64 * 1024,
            msgs_per_sec: 50,
            msg_burst: 200,
            max_rate_violations: 50,
            joins_per_min_per_ip: 60,
            max_peers_per_room: 50,
            max_rooms: 10_000,
            max_tracked_ips: 100_000,
            resume_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            join_timeout: Duration::from_secs(10),
            mailbox_max_msgs: 1024,
            mailbox_max_bytes: 1024 * 1024,
            max_held_candidates: 128,
            post_box_poll_batch: 256,
        }
    }
}

impl HubConfig {
    /// A full message bucket: `msgs_per_sec` sustained, `msg_burst` (at least 1) at once. Each
    /// WebSocket connection and each post-box session has one.
    pub(super) fn message_bucket(&self, now: Instant) -> TokenBucket {
        let burst = u64::from(self.msg_burst.max(1));
        TokenBucket::new(u64::from(self.msgs_per_sec), burst, now)
    }

    /// A full join bucket for one IP address: `joins_per_min_per_ip` per minute, as many (at
    /// least 1) at once.
    pub(super) fn join_bucket(&self, now: Instant) -> TokenBucket {
        let per_min = self.joins_per_min_per_ip;
        let minute = Duration::from_secs(60);
        TokenBucket::with_period(u64::from(per_min), minute, u64::from(per_min.max(1)), now)
    }
}
