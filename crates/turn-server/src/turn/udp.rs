//! A shard's UDP listener loop (client to server): the RFC 8656 fast path.

use std::net::SocketAddr;
use std::sync::Arc;

use floe_turn::server::{ClientTuple, Transport};
use tokio::net::UdpSocket;

use super::batch;
use super::dispatch::dispatch;
use super::histograms;
use super::relay;
use super::shard::{Ctx, Shard};

/// A shard's UDP listener: drains the socket in batches, each datagram handled and its answer
/// (or relayed packet) sent before the next, without an `.await` inside a batch. Relay sockets
/// an Allocate binds get their receive tasks before the next datagram.
pub(super) async fn udp_client_loop(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    local: SocketAddr,
    socket: Arc<UdpSocket>,
) {
    let e = batch::serve(&socket, |now, remote, packet, out| {
        let unix = ctx.unix_secs(now);
        let client = ClientTuple {
            transport: Transport::Udp,
            local,
            remote,
        };
        let d = dispatch(&ctx, &shard, now, out, |turn, binder, out| {
            turn.handle_client_packet(now, unix, client, packet, out, binder)
        });
        // A UDP client never binds an RFC 6062 data connection (§5.1: TCP allocations are
        // for TCP/TLS clients only), so there is no bound connection to act on.
        let _ = relay::start(&ctx, &shard, d.finish_now(&ctx, out));
        histograms::observe_if_allocate(packet, now);
    })
    .await;
    tracing::debug!(%local, error = %e, "udp listener failed");
}
