//! Publishes the shards' [`TurnStats`] as Prometheus metrics once a second.
//!
//! Every plain counter of [`TurnStats`] is one row of [`STATS`] (metric name, label, kind and
//! field), so exporting a new one touches that table only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{counter, gauge};
use floe_turn::server::{Traffic, Transport, TurnStats};

use super::shard::{lock, Ctx};
use super::usage::UsageExporter;

/// How a [`Stat`] is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A monotonic total (`absolute`).
    Counter,
    /// A current value.
    Gauge,
}

/// One exported field of [`TurnStats`].
struct Stat {
    name: &'static str,
    /// A `direction` label, for the relayed packet and byte totals.
    direction: Option<&'static str>,
    kind: Kind,
    get: fn(&TurnStats) -> u64,
}

const fn stat(name: &'static str, kind: Kind, get: fn(&TurnStats) -> u64) -> Stat {
    Stat {
        name,
        direction: None,
        kind,
        get,
    }
}

const fn relayed(name: &'static str, direction: &'static str, get: fn(&TurnStats) -> u64) -> Stat {
    Stat {
        name,
        direction: Some(direction),
        kind: Kind::Counter,
        get,
    }
}

/// The exported counters and gauges (metric names in `docs/turn.md`).
const STATS: &[Stat] = &[
    stat("floe_turn_allocations_created_total", Kind::Counter, |s| {
        s.allocations_created
    }),
    stat("floe_turn_allocations_deleted_total", Kind::Counter, |s| {
        s.allocations_deleted
    }),
    stat("floe_turn_allocations", Kind::Gauge, |s| {
        s.allocations_active
    }),
    stat("floe_turn_permissions_created_total", Kind::Counter, |s| {
        s.permissions_created
    }),
    stat("floe_turn_permissions", Kind::Gauge, |s| {
        s.permissions_active
    }),
    stat("floe_turn_channels_created_total", Kind::Counter, |s| {
        s.channels_created
    }),
    stat("floe_turn_channels", Kind::Gauge, |s| s.channels_active),
    relayed("floe_turn_relayed_packets_total", "to_peer", |s| {
        s.packets_to_peer
    }),
    relayed("floe_turn_relayed_bytes_total", "to_peer", |s| {
        s.bytes_to_peer
    }),
    relayed("floe_turn_relayed_packets_total", "to_client", |s| {
        s.packets_to_client
    }),
    relayed("floe_turn_relayed_bytes_total", "to_client", |s| {
        s.bytes_to_client
    }),
    stat("floe_turn_requests_total", Kind::Counter, |s| s.requests),
    stat("floe_turn_retransmissions_total", Kind::Counter, |s| {
        s.retransmissions
    }),
    stat("floe_turn_auth_failures_total", Kind::Counter, |s| {
        s.auth_failures
    }),
];

/// Publishes the shards' counters once a second.
pub(super) async fn metrics_loop(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut usage = UsageExporter::new(ctx.usage);
    loop {
        tick.tick().await;
        let mut total = Totals::default();
        for shard in &ctx.shards {
            let mut st = lock(&shard.state);
            total.add(st.turn.stats());
            if let Some(u) = usage.as_mut() {
                st.turn.drain_usage(|d| u.add(d));
            }
        }
        if let Some(u) = usage.as_mut() {
            u.export();
        }
        if let Some(xdp) = &ctx.xdp {
            total.add_fast_path(xdp.counters());
            xdp.export();
        }
        total.export();
        gauge!("floe_turn_tcp_queued_bytes")
            .set(ctx.queued_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64);
        gauge!("floe_turn_tcp_max_connections").set(ctx.limits().max_connections as f64);
        gauge!("floe_turn_tcp_connections").set(ctx.tcp_connections() as f64);
    }
}

/// The shards' [`TurnStats`] summed: `values[i]` is the total of `STATS[i]`.
#[derive(Default)]
struct Totals {
    values: [u64; STATS.len()],
    errors: BTreeMap<u16, u64>,
    dropped: BTreeMap<&'static str, u64>,
    /// `(request, reason)` → refused peer addresses.
    refused: BTreeMap<(&'static str, &'static str), u64>,
    /// method → (successes, errors).
    responses: BTreeMap<&'static str, (u64, u64)>,
    /// Relayed traffic by the client transport of the allocation.
    by_transport: BTreeMap<&'static str, Traffic>,
}

impl Totals {
    fn add(&mut self, s: &TurnStats) {
        for (total, stat) in self.values.iter_mut().zip(STATS) {
            *total += (stat.get)(s);
        }
        for (code, n) in s.errors.iter() {
            *self.errors.entry(code).or_default() += n;
        }
        for (transport, t) in s.by_transport.iter() {
            add_traffic(self.by_transport.entry(transport.label()).or_default(), t);
        }
        for (reason, n) in s.dropped.iter() {
            *self.dropped.entry(reason.label()).or_default() += n;
        }
        for (request, reason, n) in s.peer_refused.iter() {
            *self.refused.entry((request.label(), reason)).or_default() += n;
        }
        for (method, ok, err) in s.responses.iter() {
            let e = self.responses.entry(method).or_default();
            e.0 += ok;
            e.1 += err;
        }
    }

    /// Adds what the XDP program relayed to the relayed packet and byte totals (it relays
    /// outside the state machine, so its counts are not in [`TurnStats`]).
    fn add_fast_path(&mut self, c: floe_xdp::Counters) {
        for (name, direction, n) in [
            (
                "floe_turn_relayed_packets_total",
                "to_peer",
                c.to_peer_packets,
            ),
            ("floe_turn_relayed_bytes_total", "to_peer", c.to_peer_bytes),
            (
                "floe_turn_relayed_packets_total",
                "to_client",
                c.to_client_packets,
            ),
            (
                "floe_turn_relayed_bytes_total",
                "to_client",
                c.to_client_bytes,
            ),
        ] {
            if let Some(i) = STATS
                .iter()
                .position(|s| s.name == name && s.direction == Some(direction))
            {
                self.values[i] += n;
            }
        }
        // The program relays for UDP clients only.
        add_traffic(
            self.by_transport.entry(Transport::Udp.label()).or_default(),
            &Traffic {
                packets_to_peer: c.to_peer_packets,
                bytes_to_peer: c.to_peer_bytes,
                packets_to_client: c.to_client_packets,
                bytes_to_client: c.to_client_bytes,
            },
        );
        counter!("floe_turn_xdp_relayed_packets_total", "direction" => "to_peer")
            .absolute(c.to_peer_packets);
        counter!("floe_turn_xdp_relayed_packets_total", "direction" => "to_client")
            .absolute(c.to_client_packets);
    }

    fn export(&self) {
        for (&value, stat) in self.values.iter().zip(STATS) {
            stat.export(value);
        }
        for (code, n) in &self.errors {
            counter!("floe_turn_error_responses_total", "code" => code.to_string()).absolute(*n);
        }
        for (reason, n) in &self.dropped {
            counter!("floe_turn_dropped_total", "reason" => *reason).absolute(*n);
        }
        for (method, (ok, err)) in &self.responses {
            counter!("floe_turn_responses_total", "method" => *method, "result" => "success")
                .absolute(*ok);
            counter!("floe_turn_responses_total", "method" => *method, "result" => "error")
                .absolute(*err);
        }
        for (transport, t) in &self.by_transport {
            for (name, direction, n) in [
                (
                    "floe_turn_transport_relayed_packets_total",
                    "to_peer",
                    t.packets_to_peer,
                ),
                (
                    "floe_turn_transport_relayed_bytes_total",
                    "to_peer",
                    t.bytes_to_peer,
                ),
                (
                    "floe_turn_transport_relayed_packets_total",
                    "to_client",
                    t.packets_to_client,
                ),
                (
                    "floe_turn_transport_relayed_bytes_total",
                    "to_client",
                    t.bytes_to_client,
                ),
            ] {
                counter!(name, "transport" => *transport, "direction" => direction).absolute(n);
            }
        }
        for ((request, reason), n) in &self.refused {
            counter!("floe_turn_peer_refused_total", "request" => *request, "reason" => *reason)
                .absolute(*n);
        }
    }
}

fn add_traffic(total: &mut Traffic, t: &Traffic) {
    total.packets_to_peer += t.packets_to_peer;
    total.bytes_to_peer += t.bytes_to_peer;
    total.packets_to_client += t.packets_to_client;
    total.bytes_to_client += t.bytes_to_client;
}

impl Stat {
    fn export(&self, value: u64) {
        match (self.kind, self.direction) {
            (Kind::Counter, None) => counter!(self.name).absolute(value),
            (Kind::Counter, Some(d)) => counter!(self.name, "direction" => d).absolute(value),
            (Kind::Gauge, None) => gauge!(self.name).set(value as f64),
            (Kind::Gauge, Some(d)) => gauge!(self.name, "direction" => d).set(value as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_and_label_pair_is_exported_once() {
        let mut seen = std::collections::HashSet::new();
        for stat in STATS {
            assert!(
                seen.insert((stat.name, stat.direction)),
                "{} twice",
                stat.name
            );
        }
    }

    #[test]
    fn totals_sum_each_field_into_its_own_row() {
        let mut stats = TurnStats::default();
        stats.allocations_created = 1;
        stats.packets_to_client = 7;
        stats.auth_failures = 3;
        let mut total = Totals::default();
        total.add(&stats);
        total.add(&stats);
        let value = |name, direction| {
            let i = STATS
                .iter()
                .position(|s| s.name == name && s.direction == direction)
                .expect("exported");
            total.values[i]
        };
        assert_eq!(value("floe_turn_allocations_created_total", None), 2);
        assert_eq!(
            value("floe_turn_relayed_packets_total", Some("to_client")),
            14
        );
        assert_eq!(value("floe_turn_auth_failures_total", None), 6);
        assert_eq!(value("floe_turn_requests_total", None), 0);
    }
}
