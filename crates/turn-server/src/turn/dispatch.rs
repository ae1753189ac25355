//! One call into a shard's state machine: the call and the route of its output are resolved
//! under the shard lock ([`dispatch`]); the send and the events follow after it is released
//! ([`Dispatch::finish`], [`Dispatch::finish_now`]).
//!
//! A dispatch starts no task. What must run next — a receive task for each relay socket the
//! binder opened, an RFC 6062 peer connection to open, a data connection to splice — comes back
//! to the caller as [`Followups`] (`relay::start` starts them), so this module imports none of
//! the loops that call it.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use floe_turn::server::{
    BindError, ClientTuple, ConnectionId, Event, PeerAddr, RelayAddr, RelayBinder, RelayTransport,
    Transmit, Transport, TurnServer,
};
use tokio::net::{TcpListener, UdpSocket};

use super::batch;
use super::histograms;
use super::shard::{lock, Ctx, FastMap, Relay, Shard, ShardState, StreamTx};
use super::sockets;
use super::usage::EndedAllocation;

/// Where `out[..len]` goes, resolved under the shard lock.
enum Route {
    Udp(Arc<UdpSocket>, SocketAddr),
    /// To a UDP client: from a client-facing socket (queued on the UDP fast path).
    UdpClient(Arc<UdpSocket>, SocketAddr),
    Stream(StreamTx),
    /// To another allocation of this server (both peers relay-only through it): handed to the
    /// shard of `worker` inside the process, never sent on a socket (see [`handoff`]).
    Relay {
        worker: u32,
        relay: RelayAddr,
        from: PeerAddr,
    },
}

/// The result of [`dispatch`]: what to send, and what to do after.
#[must_use = "call finish or finish_now to send and to learn the follow-ups"]
pub(super) struct Dispatch {
    now: Instant,
    route: Option<(Route, usize)>,
    events: Vec<Event>,
    relays: Vec<NewRelay>,
}

/// A relay socket the binder opened during a dispatch; its task is the caller's to start and
/// to hand to [`Shard::attach`].
pub(super) struct NewRelay {
    /// The relayed address.
    pub(super) addr: SocketAddr,
    /// Which bind this is (see [`ShardState::next_serial`]).
    pub(super) serial: u64,
    /// The socket its task serves.
    pub(super) socket: RelaySocket,
}

/// The socket of a [`NewRelay`].
pub(super) enum RelaySocket {
    /// Receives from peers (registered with the shard's runtime).
    Udp(Arc<UdpSocket>),
    /// RFC 6062 §5.3: accepts peer connections (registered with the current runtime).
    Tcp(TcpListener),
}

impl NewRelay {
    /// The key of its entry in [`ShardState::relays`].
    pub(super) fn key(&self) -> (SocketAddr, RelayTransport) {
        let transport = match self.socket {
            RelaySocket::Udp(_) => RelayTransport::Udp,
            RelaySocket::Tcp(_) => RelayTransport::Tcp,
        };
        (self.addr, transport)
    }
}

/// RFC 6062 §5.2: a peer TCP connection to open from `relay` to `peer`.
pub(super) struct Connect {
    pub(super) id: ConnectionId,
    pub(super) relay: SocketAddr,
    pub(super) peer: SocketAddr,
}

/// What a dispatch leaves its caller to do. Empty on the relay path: the vectors allocate only
/// when something is pushed, so relaying a packet allocates nothing.
#[must_use = "relay::start starts the follow-ups"]
#[derive(Default)]
pub(super) struct Followups {
    /// Relay sockets bound during the call, each needing its receive (or accept) task.
    pub(super) relays: Vec<NewRelay>,
    /// RFC 6062 §5.2: peer connections to open.
    pub(super) connects: Vec<Connect>,
    /// RFC 6062 §5.4: a client data connection bound to a peer connection.
    pub(super) bound: Option<(ConnectionId, ClientTuple)>,
}

/// Runs `f` against the shard's state machine with a binder, resolves the route of what it
/// produced and drains its events, all under the shard lock. `now` is the time `f` passes to
/// the state machine (a relay-to-relay handoff passes it on to the receiving shard).
pub(super) fn dispatch<F>(ctx: &Ctx, shard: &Shard, now: Instant, out: &mut [u8], f: F) -> Dispatch
where
    F: FnOnce(&mut TurnServer, &mut dyn RelayBinder, &mut [u8]) -> Option<Transmit>,
{
    let mut guard = lock(&shard.state);
    let st = &mut *guard;
    let mut relays = Vec::new();
    let mut binder = Binder {
        ctx,
        rt: &shard.rt,
        relays: &mut st.relays,
        next_serial: &mut st.next_serial,
        new: &mut relays,
    };
    let transmit = f(&mut st.turn, &mut binder, out);
    let route = transmit.and_then(|t| resolve(st, t));
    let mut events = Vec::new();
    while let Some(ev) = st.turn.poll_event() {
        // Mirrored at once, under the shard lock, so the kernel sees a channel's ups and downs
        // in the state machine's order.
        if let Some(xdp) = &ctx.xdp {
            if xdp.mirror(&ev) {
                continue;
            }
        }
        events.push(ev);
    }
    Dispatch {
        now,
        route,
        events,
        relays,
    }
}

/// Opens and closes relay sockets for a shard; runs under the shard lock. Binding is
/// synchronous (the state machine needs Ok or Err to answer or try another port); starting the
/// socket's task is left to the caller ([`NewRelay`]).
struct Binder<'a> {
    ctx: &'a Ctx,
    /// The shard's runtime, which drives its UDP relay sockets.
    rt: &'a tokio::runtime::Handle,
    relays: &'a mut FastMap<(SocketAddr, RelayTransport), Relay>,
    next_serial: &'a mut u64,
    new: &'a mut Vec<NewRelay>,
}

impl RelayBinder for Binder<'_> {
    fn bind(&mut self, addr: SocketAddr, transport: RelayTransport) -> Result<(), BindError> {
        let (udp, socket) = match transport {
            RelayTransport::Udp => {
                let s = sockets::udp_relay(addr, self.rt)?;
                (Some(s.clone()), RelaySocket::Udp(s))
            }
            RelayTransport::Tcp => (
                None,
                RelaySocket::Tcp(sockets::tcp_relay_listener(self.ctx, addr)?),
            ),
        };
        let serial = *self.next_serial;
        *self.next_serial += 1;
        metrics::gauge!("floe_turn_relay_sockets").increment(1.0);
        self.relays.insert(
            (addr, transport),
            Relay {
                udp,
                task: None,
                serial,
            },
        );
        self.new.push(NewRelay {
            addr,
            serial,
            socket,
        });
        Ok(())
    }

    fn release(&mut self, addr: SocketAddr, transport: RelayTransport) {
        if let Some(relay) = self.relays.remove(&(addr, transport)) {
            relay.stop();
            metrics::gauge!("floe_turn_relay_sockets").decrement(1.0);
        }
        // Bound and released in the same call (an EVEN-PORT probe): no task to start.
        self.new.retain(|r| r.key() != (addr, transport));
        if transport == RelayTransport::Tcp {
            sockets::release_tcp_relay(self.ctx, addr);
        }
    }
}

fn resolve(st: &ShardState, t: Transmit) -> Option<(Route, usize)> {
    match t {
        Transmit::ToClient { client, len } => match client.transport {
            Transport::Udp => st
                .udp
                .get(&client.local)
                .map(|s| (Route::UdpClient(s.clone(), client.remote), len)),
            _ => st
                .streams
                .get(&(client.local, client.remote))
                .map(|tx| (Route::Stream(tx.clone()), len)),
        },
        Transmit::ToPeer {
            relay, peer, len, ..
        } => st
            .relays
            .get(&(relay.0, RelayTransport::Udp))
            .and_then(|r| r.udp.clone())
            .map(|s| (Route::Udp(s, peer.0), len)),
        Transmit::ToRelay {
            relay,
            worker,
            from,
            len,
        } => Some((
            Route::Relay {
                worker,
                relay,
                from,
            },
            len,
        )),
    }
}

impl Dispatch {
    /// Whether the call produced something to send.
    pub(super) fn has_route(&self) -> bool {
        self.route.is_some()
    }

    /// Sends the routed bytes and acts on the events; returns what is left for the caller.
    pub(super) async fn finish(self, ctx: &Ctx, out: &[u8]) -> Followups {
        if let Some((route, len)) = self.route {
            send(ctx, self.now, route, &out[..len]).await;
        }
        followups(ctx, self.events, self.relays)
    }

    /// The UDP fast path's [`finish`](Dispatch::finish): sends without awaiting (a datagram that
    /// meets a full socket buffer is handed, copied, to a task that waits for room).
    pub(super) fn finish_now(self, ctx: &Ctx, out: &[u8]) -> Followups {
        if let Some((route, len)) = self.route {
            send_now(ctx, self.now, route, &out[..len]);
        }
        followups(ctx, self.events, self.relays)
    }
}

async fn send(ctx: &Ctx, now: Instant, route: Route, bytes: &[u8]) {
    match route {
        Route::Udp(socket, to) | Route::UdpClient(socket, to) => {
            if let Err(e) = socket.send_to(bytes, to).await {
                udp_send_failed(to, &e);
            }
        }
        Route::Stream(tx) => send_stream(&tx, bytes),
        Route::Relay {
            worker,
            relay,
            from,
        } => handoff(ctx, now, worker, relay, from, bytes),
    }
}

fn send_now(ctx: &Ctx, now: Instant, route: Route, bytes: &[u8]) {
    match route {
        Route::Udp(socket, to) => batch::send_or_defer(&socket, bytes, to, udp_send_failed),
        Route::UdpClient(socket, to) => batch::queue_send(&socket, bytes, to, udp_send_failed),
        Route::Stream(tx) => send_stream(&tx, bytes),
        Route::Relay {
            worker,
            relay,
            from,
        } => handoff(ctx, now, worker, relay, from, bytes),
    }
}

thread_local! {
    /// The receiving shard's output buffer for [`handoff`] (the sender's `out` still holds the
    /// data being handed over). Allocated once per thread that hands data over.
    static HANDOFF_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Relay to relay (both peers relay-only through this server, `floe_turn::server`'s own-relay
/// rule): `data`, sent by an allocation whose relayed address is `from`, goes to the allocation
/// bound at `relay` on the shard of `worker` as if it had arrived on that relay socket, with
/// that allocation's permissions and quota applied; the result (ChannelData or a Data
/// indication) goes to its client. No socket round trip and no copy but the one into the
/// receiving client's message. Runs after the sender's shard lock is released, so two shards
/// handing data to each other cannot deadlock.
fn handoff(ctx: &Ctx, now: Instant, worker: u32, relay: RelayAddr, from: PeerAddr, data: &[u8]) {
    let Some(shard) = ctx.shard_of_worker(worker) else {
        // Invariant: workers are numbered by the shards that created them (`make_shards`).
        tracing::warn!(worker, "relay handoff to an unknown worker");
        return;
    };
    metrics::counter!("floe_turn_relay_to_relay_total").increment(1);
    HANDOFF_OUT.with(|cell| {
        // Never re-entered: the receiving side answers only its own client (ToClient).
        let Ok(mut out) = cell.try_borrow_mut() else {
            return;
        };
        if out.len() < batch::OUT_BUF {
            out.resize(batch::OUT_BUF, 0);
        }
        let d = dispatch(ctx, shard, now, &mut out, |turn, _, out| {
            turn.handle_relay_datagram(now, relay, from, data, out)
        });
        // handle_relay_datagram binds nothing and starts no task: the follow-ups are empty.
        let _ = d.finish_now(ctx, &out);
    });
}

/// Counts a UDP send that failed (the datagram is lost, as it could be on the wire).
pub(super) fn udp_send_failed(to: SocketAddr, e: &io::Error) {
    tracing::trace!(%to, error = %e, "udp send failed");
    metrics::counter!("floe_turn_send_errors_total", "transport" => "udp").increment(1);
}

/// Queues a frame for a TCP/TLS client; one that does not fit in its queue (a client that
/// reads slower than its data arrives) is dropped, as a full UDP socket buffer drops a datagram.
fn send_stream(tx: &StreamTx, bytes: &[u8]) {
    if !tx.try_send(bytes) {
        metrics::counter!("floe_turn_dropped_total", "reason" => "stream_queue_full").increment(1);
    }
}

/// Acts on the events that need no task (logs, RFC 6062 CloseConnection) and collects the rest.
fn followups(ctx: &Ctx, events: Vec<Event>, relays: Vec<NewRelay>) -> Followups {
    let mut f = Followups {
        relays,
        ..Followups::default()
    };
    for ev in events {
        on_event(ctx, ev, &mut f);
    }
    f
}

fn on_event(ctx: &Ctx, ev: Event, f: &mut Followups) {
    match ev {
        Event::AllocationCreated {
            client,
            username,
            transport,
            relays,
        } => {
            tracing::info!(client = %client.remote, transport = client.transport.label(), %username, relay_transport = ?transport, ?relays, "allocation created");
        }
        Event::AllocationDeleted {
            client,
            reason,
            created,
            username,
            usage,
        } => {
            let ended = Instant::now();
            histograms::ALLOCATION_LIFETIME.observe(ended.saturating_duration_since(created));
            lock(&ctx.ended).push(EndedAllocation {
                username,
                usage,
                ended,
            });
            tracing::info!(client = %client.remote, reason = reason.label(), "allocation deleted");
        }
        Event::ConnectPeer {
            connection_id,
            relay,
            peer,
        } => f.connects.push(Connect {
            id: connection_id,
            relay,
            peer,
        }),
        Event::ConnectionBound {
            connection_id,
            client,
        } => f.bound = Some((connection_id, client)),
        Event::CloseConnection { connection_id } => ctx.close_connection(connection_id),
        // Rate-limited by the state machine (REFUSAL_LOG_BURST per worker per window); every
        // refusal is counted in `floe_turn_peer_refused_total` regardless.
        Event::PeerRefused {
            client,
            username,
            request,
            peer,
            reason,
        } => {
            tracing::info!(client = %client.remote, transport = client.transport.label(), %username, request = request.label(), %peer, reason, "peer refused");
        }
        _ => {}
    }
}
