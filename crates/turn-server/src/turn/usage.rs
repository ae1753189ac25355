//! The opt-in usage metric (`--usage-metrics room|tenant`): relayed payload bytes by the room or
//! tenant a floe-minted TURN username carries ([`floe_turn::rest::Identity`]), updated once a
//! second while allocations run. The label values are capped: beyond
//! [`UsageMetrics::max_labels`] distinct values, the rest are counted under `_other` (and the
//! allocations folded so in `floe_turn_usage_folded_allocations_total`), so clients that pick
//! rooms cannot blow up the metrics.
//!
//! Also [`RecentlyEnded`]: the allocations that ended in the last [`RECENT`], for the admin
//! API's usage summary. Imports only `config.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_turn::rest::Identity;
use floe_turn::server::{AllocationUsage, UsageDelta};

use super::config::{UsageBy, UsageMetrics};

/// The label of bytes beyond the cap.
pub(super) const OTHER: &str = "_other";
/// The label of allocations whose username carries no room (or tenant): static users, TURN
/// REST usernames minted elsewhere.
pub(super) const NONE: &str = "_none";

/// Byte counts per label, summed from the shards' reports, then exported.
#[derive(Debug)]
pub(super) struct UsageExporter {
    config: UsageMetrics,
    /// Label values given a series of their own so far (never forgotten: a Prometheus
    /// counter's series lives as long as the process).
    known: HashSet<String>,
    /// This tick's deltas: label → (to peer, to client).
    pending: HashMap<String, (u64, u64)>,
    /// Allocations whose label was folded into [`OTHER`] this tick.
    folded: u64,
}

impl UsageExporter {
    /// An exporter, or `None` when usage metrics are off.
    pub(super) fn new(config: UsageMetrics) -> Option<UsageExporter> {
        (config.by != UsageBy::Off).then(|| UsageExporter {
            config,
            known: HashSet::new(),
            pending: HashMap::new(),
            folded: 0,
        })
    }

    /// The label name (`room` or `tenant`).
    fn key(&self) -> &'static str {
        match self.config.by {
            UsageBy::Tenant => "tenant",
            _ => "room",
        }
    }

    /// The label value of a username, the cap applied.
    fn label_of<'a>(&mut self, username: &'a str, first: bool) -> &'a str {
        let id = Identity::parse(username);
        let value = match self.config.by {
            UsageBy::Tenant => id.and_then(|i| i.tenant),
            _ => id.and_then(|i| i.room),
        };
        let Some(value) = value else {
            return NONE;
        };
        if self.known.contains(value) {
            return value;
        }
        if self.known.len() < self.config.max_labels {
            self.known.insert(value.to_owned());
            return value;
        }
        if first {
            self.folded += 1;
        }
        OTHER
    }

    /// Adds one allocation's report (called under the shard lock: no metrics calls here).
    pub(super) fn add(&mut self, d: UsageDelta<'_>) {
        self.add_bytes(d.username, d.first, d.bytes_to_peer, d.bytes_to_client);
    }

    fn add_bytes(&mut self, username: &str, first: bool, to_peer: u64, to_client: u64) {
        // An idle allocation already labelled costs nothing more.
        if !first && to_peer == 0 && to_client == 0 {
            return;
        }
        let label = self.label_of(username, first);
        // Allocates only the first time a label is seen in a tick.
        let e = match self.pending.get_mut(label) {
            Some(e) => e,
            None => self.pending.entry(label.to_owned()).or_default(),
        };
        e.0 += to_peer;
        e.1 += to_client;
    }

    /// Publishes this tick's deltas and starts the next tick.
    pub(super) fn export(&mut self) {
        let key = self.key();
        for (label, (to_peer, to_client)) in self.pending.drain() {
            metrics::counter!("floe_turn_usage_bytes_total", key => label.clone(), "direction" => "to_peer")
                .increment(to_peer);
            metrics::counter!("floe_turn_usage_bytes_total", key => label, "direction" => "to_client")
                .increment(to_client);
        }
        metrics::counter!("floe_turn_usage_folded_allocations_total").increment(self.folded);
        self.folded = 0;
        metrics::gauge!("floe_turn_usage_labels").set(self.known.len() as f64);
    }
}

/// How long ended allocations are remembered for the usage summary.
pub const RECENT: Duration = Duration::from_secs(600);
/// Most ended allocations remembered (the oldest are forgotten first).
pub const RECENT_MAX: usize = 10_000;

/// An allocation that ended, as the usage summary sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndedAllocation {
    /// The username that authenticated its Allocate.
    pub username: Arc<str>,
    /// What it relayed over its life.
    pub usage: AllocationUsage,
    /// When it ended.
    pub ended: Instant,
}

/// The allocations that ended in the last [`RECENT`], at most [`RECENT_MAX`] of them: pushed
/// when an allocation ends (under a mutex of its own, never on the relay path), read by the
/// admin API.
#[derive(Debug, Default)]
pub(super) struct RecentlyEnded(VecDeque<EndedAllocation>);

impl RecentlyEnded {
    pub(super) fn push(&mut self, e: EndedAllocation) {
        self.prune(e.ended);
        if self.0.len() >= RECENT_MAX {
            self.0.pop_front();
        }
        self.0.push_back(e);
    }

    /// Forgets what ended more than [`RECENT`] before `now`.
    fn prune(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.ended) > RECENT)
        {
            self.0.pop_front();
        }
    }

    /// The allocations that ended within `within` (at most [`RECENT`]) before `now`.
    pub(super) fn within(&mut self, within: Duration, now: Instant) -> Vec<EndedAllocation> {
        self.prune(now);
        self.0
            .iter()
            .filter(|e| now.saturating_duration_since(e.ended) <= within)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_capped_and_the_rest_folded() {
        let mut u = UsageExporter::new(UsageMetrics {
            by: UsageBy::Room,
            max_labels: 2,
        })
        .unwrap();
        let reports = [
            ("9:a;room=one", true, 10),
            ("9:b;room=two", true, 20),
            ("9:c;room=three", true, 30),
            ("9:d;room=four", true, 40),
            ("9:e;room=one", true, 1),
            ("alice", true, 5),
            // A later report of a folded allocation is not folded twice.
            ("9:c;room=three", false, 3),
        ];
        for (name, first, bytes) in reports {
            u.add_bytes(name, first, bytes, 0);
        }
        assert_eq!(u.pending["one"], (11, 0));
        assert_eq!(u.pending["two"], (20, 0));
        assert_eq!(u.pending[OTHER], (73, 0));
        assert_eq!(u.pending[NONE], (5, 0));
        assert_eq!(u.folded, 2);
        assert_eq!(u.known.len(), 2);
    }

    #[test]
    fn recently_ended_forgets_by_age_and_by_count() {
        let t0 = Instant::now();
        let ended = |secs| EndedAllocation {
            username: Arc::from("9:a;room=r"),
            usage: AllocationUsage::default(),
            ended: t0 + Duration::from_secs(secs),
        };
        let mut r = RecentlyEnded::default();
        r.push(ended(0));
        r.push(ended(100));
        let now = t0 + Duration::from_secs(650);
        assert_eq!(
            r.within(RECENT, now).len(),
            1,
            "the first is over 600 s old"
        );
        assert_eq!(r.within(Duration::from_secs(60), now).len(), 0);
        for i in 0..RECENT_MAX as u64 + 5 {
            r.push(ended(200 + i / 1000));
        }
        assert_eq!(r.0.len(), RECENT_MAX);
    }

    #[test]
    fn off_exports_nothing_and_tenant_reads_the_tenant() {
        assert!(UsageExporter::new(UsageMetrics::default()).is_none());
        let mut u = UsageExporter::new(UsageMetrics {
            by: UsageBy::Tenant,
            max_labels: 10,
        })
        .unwrap();
        u.add_bytes("9:a;room=r;tenant=acme", true, 0, 7);
        assert_eq!(u.pending["acme"], (0, 7));
    }
}
