//! The XDP fast path's place in the shell (`docs/xdp.md`): attaches it at start, mirrors
//! floe-turn's `ChannelRelayUp`/`Down` and `PermissionRelayUp`/`Down` events into its maps under the shard lock,
//! and reads its counters for the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_turn::server::{ChannelRelay, Event, FastPathCharge, FastPathUsage, PermissionRelay};
use floe_xdp::{Counters, Stat, XdpMode, XdpRelay};
use metrics::counter;

use super::config::{TurnShellError, XdpConfig};
use super::dispatch::dispatch;
use super::shard::Ctx;

/// How often the fast path's per-entry counters are read and charged to their allocations
/// (admin API counts, usage metrics, bandwidth caps). An allocation goes over its cap by at
/// most what it relays in one interval before it is withdrawn to the user-space relay.
pub(super) const USAGE_INTERVAL: Duration = Duration::from_millis(200);

/// The attached fast path.
#[derive(Debug)]
pub(super) struct XdpShell {
    relay: XdpRelay,
}

impl XdpShell {
    /// Attaches the program as configured; says what it attached where, and why not. `None`
    /// when off, or when `auto` could not attach anywhere (floe then relays in user space as
    /// without XDP).
    pub(super) fn start(
        config: &XdpConfig,
        listen: &[std::net::SocketAddr],
    ) -> Result<Option<XdpShell>, TurnShellError> {
        if config.mode == XdpMode::Off {
            return Ok(None);
        }
        for l in listen.iter().filter(|l| l.ip().is_unspecified()) {
            tracing::warn!(listen = %l, "XDP cannot relay for a wildcard listening address (no source address to write): its clients stay on the user-space relay; listen on the interface's IP");
        }
        match XdpRelay::attach(config.mode, &config.interfaces) {
            Ok(relay) => {
                for a in relay.attached() {
                    match &a.outcome {
                        Ok(mode) => {
                            tracing::info!(interface = %a.interface, mode, "XDP fast path attached (ChannelData, Send and Data indications over UDP, IPv4)")
                        }
                        Err(reason) => {
                            tracing::warn!(interface = %a.interface, %reason, "XDP not attached; this interface stays on the user-space relay")
                        }
                    }
                }
                Ok(Some(XdpShell { relay }))
            }
            Err(e) if config.mode == XdpMode::Auto => {
                tracing::warn!(error = %e, "--xdp auto: no XDP fast path; relaying in user space");
                Ok(None)
            }
            Err(e) => Err(TurnShellError::Xdp(e)),
        }
    }

    /// Applies a channel or permission event to the maps; `true` when `ev` was one (nothing
    /// else to do).
    pub(super) fn mirror(&self, ev: &Event) -> bool {
        let (up, c): (bool, &ChannelRelay) = match ev {
            Event::ChannelRelayUp(c) => (true, c),
            Event::ChannelRelayDown(c) => (false, c),
            Event::PermissionRelayUp(p) => return self.mirror_permission(true, p),
            Event::PermissionRelayDown(p) => return self.mirror_permission(false, p),
            _ => return false,
        };
        let (client, server) = (c.client.remote, c.client.local);
        let result = if up {
            self.relay
                .channel_up(client, server, c.relay, c.peer, c.channel)
                .map(|_| ())
        } else {
            self.relay
                .channel_down(client, server, c.relay, c.peer, c.channel)
        };
        if let Err(e) = result {
            // An entry that could not be added leaves the channel on the user-space relay; one
            // that could not be removed is logged loudly (it keeps relaying in the kernel).
            let op = if up { "add" } else { "remove" };
            counter!("floe_turn_xdp_map_errors_total", "op" => op).increment(1);
            tracing::error!(error = %e, op, client = %client, peer = %c.peer, channel = c.channel, "XDP map update failed");
        }
        true
    }

    /// Applies a permission event (Send and Data indications) to the maps.
    fn mirror_permission(&self, up: bool, p: &PermissionRelay) -> bool {
        let (client, server) = (p.client.remote, p.client.local);
        let result = if up {
            self.relay
                .permission_up(client, server, p.relay, p.peer)
                .map(|_| ())
        } else {
            self.relay.permission_down(client, server, p.relay, p.peer)
        };
        if let Err(e) = result {
            // As for channels: a failed add leaves the permission's indications in user space.
            let op = if up { "add" } else { "remove" };
            counter!("floe_turn_xdp_map_errors_total", "op" => op).increment(1);
            tracing::error!(error = %e, op, client = %client, peer = %p.peer, "XDP permission map update failed");
        }
        true
    }

    /// Packets and bytes the program relayed.
    pub(super) fn counters(&self) -> Counters {
        self.relay.counters()
    }

    /// Publishes the program's own counters (packets of known flows it passed to user space).
    pub(super) fn export(&self) {
        for (stat, reason) in [
            (Stat::PassNoRoute, "no_route"),
            (Stat::PassTooBig, "too_big"),
            (Stat::PassLength, "length"),
            (Stat::RedirectFailed, "redirect_failed"),
            (Stat::PassSendFormat, "send_format"),
            (Stat::PassTail, "no_tailroom"),
        ] {
            counter!("floe_turn_xdp_passed_total", "reason" => reason)
                .absolute(self.relay.stat(stat));
        }
        for (stat, direction) in [
            (Stat::SendToPeer, "to_peer"),
            (Stat::DataToClient, "to_client"),
        ] {
            counter!("floe_turn_xdp_indications_total", "direction" => direction)
                .absolute(self.relay.stat(stat));
        }
        counter!("floe_turn_xdp_data_shifted_total").absolute(self.relay.stat(Stat::DataShifted));
        counter!("floe_turn_xdp_relay_to_relay_total")
            .absolute(self.relay.stat(Stat::RelayToRelay));
        let (perms, dperms) = self.relay.permission_entries();
        metrics::gauge!("floe_turn_xdp_permissions").set(perms.min(dperms) as f64);
        let (chans, peers) = self.relay.entries();
        metrics::gauge!("floe_turn_xdp_channels").set(chans.min(peers) as f64);
        let (dests, resolved) = self.relay.next_hops();
        metrics::gauge!("floe_turn_xdp_destinations").set(dests as f64);
        metrics::gauge!("floe_turn_xdp_next_hops").set(resolved as f64);
    }
}

/// Re-reads routes and neighbours once a second, so that destinations whose neighbour the
/// user-space relay just resolved move to the fast path (and vanished ones leave it).
pub(super) async fn next_hop_loop(ctx: Arc<Ctx>) {
    let Some(xdp) = &ctx.xdp else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(e) = xdp.relay.refresh_next_hops() {
            counter!("floe_turn_xdp_map_errors_total", "op" => "next_hop").increment(1);
            tracing::error!(error = %e, "XDP next-hop update failed");
        }
    }
}

/// Every [`USAGE_INTERVAL`]: reads what the kernel relayed per allocation, counts and charges it
/// in the allocation's shard (`TurnServer::fast_path_relayed`), withdraws allocations that went
/// over a bandwidth cap from the maps and puts recovered ones back (`fast_path_recheck`), all
/// through [`dispatch`], so the map updates follow under the shard lock as for any other event.
pub(super) async fn usage_loop(ctx: Arc<Ctx>) {
    let Some(xdp) = &ctx.xdp else {
        return;
    };
    let mut tick = tokio::time::interval(USAGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = [0u8; 0];
    loop {
        tick.tick().await;
        let mut usage = xdp.relay.take_usage();
        let now = Instant::now();
        for shard in &ctx.shards {
            let (mut withdrawn, mut back) = (0u64, 0usize);
            let d = dispatch(&ctx, shard, now, &mut out, |turn, _, _| {
                usage.retain(|&relay, c| {
                    let u = FastPathUsage {
                        to_peer_packets: c.to_peer_packets,
                        to_peer_bytes: c.to_peer_bytes,
                        to_client_packets: c.to_client_packets,
                        to_client_bytes: c.to_client_bytes,
                    };
                    match turn.fast_path_relayed(now, relay, u) {
                        FastPathCharge::Unknown => true,
                        FastPathCharge::Charged => false,
                        FastPathCharge::Withdrawn => {
                            withdrawn += 1;
                            false
                        }
                    }
                });
                back = turn.fast_path_recheck(now);
                None
            });
            counter!("floe_turn_xdp_over_cap_total", "transition" => "withdrawn")
                .increment(withdrawn);
            counter!("floe_turn_xdp_over_cap_total", "transition" => "reinstalled")
                .increment(back as u64);
            // Only fast-path events come out of these calls (mirrored in `dispatch`).
            let _ = d.finish_now(&ctx, &out);
        }
        // What is left belongs to allocations that ended before their last counts were read:
        // it is in the server-wide totals, not attributed (at most one interval's worth).
    }
}
