//! The relay side's tasks: [`start`] spawns what a dispatch asked for (a task per new relay
//! socket, RFC 6062 peer connections), and [`relay_udp_loop`] is a UDP relay socket's receive
//! loop (peer to client).
//!
//! The loops that call [`start`] (UDP listeners, stream clients, the timer) are in `udp.rs`,
//! `stream.rs` and `timer.rs`; the tasks it spawns are here and in `rfc6062.rs`, none of which
//! calls back into those loops.

use std::net::SocketAddr;
use std::sync::Arc;

use floe_turn::server::{ClientTuple, ConnectionId, PeerAddr, RelayAddr};
use tokio::net::UdpSocket;

use super::batch;
use super::dispatch::{dispatch, Followups, NewRelay, RelaySocket};
use super::rfc6062;
use super::shard::{Ctx, Shard};

/// Starts the follow-ups of a dispatch: a receive task for each new UDP relay socket (on the
/// shard's runtime, so a relayed datagram stays on one thread) and an accept task for each new
/// TCP relay listener (on the current runtime, which it is registered with), then the RFC 6062
/// peer connections to open. Returns the RFC 6062 data connection bound, if any, for the stream
/// that sent ConnectionBind to splice.
pub(super) fn start(
    ctx: &Arc<Ctx>,
    shard: &Arc<Shard>,
    followups: Followups,
) -> Option<(ConnectionId, ClientTuple)> {
    for relay in followups.relays {
        start_relay(ctx, shard, relay);
    }
    for connect in followups.connects {
        rfc6062::spawn_connect(ctx, shard, connect);
    }
    followups.bound
}

fn start_relay(ctx: &Arc<Ctx>, shard: &Arc<Shard>, relay: NewRelay) {
    let key = relay.key();
    let (ctx, owner) = (ctx.clone(), shard.clone());
    let task = match relay.socket {
        RelaySocket::Udp(socket) => shard
            .rt
            .spawn(relay_udp_loop(ctx, owner, relay.addr, socket))
            .abort_handle(),
        RelaySocket::Tcp(listener) => tokio::spawn(rfc6062::relay_tcp_accept_loop(
            ctx, owner, relay.addr, listener,
        ))
        .abort_handle(),
    };
    shard.attach(key, relay.serial, task);
}

/// A UDP relay socket's receive loop (peer to client), batched like the listeners' loop: each
/// datagram is handled and relayed without an `.await` inside a batch.
async fn relay_udp_loop(
    ctx: Arc<Ctx>,
    shard: Arc<Shard>,
    relay: SocketAddr,
    socket: Arc<UdpSocket>,
) {
    let e = batch::serve(&socket, |now, peer, data, out| {
        let d = dispatch(&ctx, &shard, now, out, |turn, _, out| {
            turn.handle_peer_packet(now, RelayAddr(relay), PeerAddr(peer), data, out)
        });
        // Peer data binds nothing and opens nothing: the follow-ups are empty.
        let _ = start(&ctx, &shard, d.finish_now(&ctx, out));
    })
    .await;
    tracing::debug!(%relay, error = %e, "relay socket failed");
}
