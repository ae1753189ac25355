//! TURN links: one [`TurnClient`] per TURN server, started a transport at a time (UDP, then
//! TCP, then TLS), and their relayed candidates.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floe_turn::client::{TurnClient, TurnClientConfig, TurnEvent};
use rand::RngCore;
use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::{Output, PeerCore, PeerEvent};
use crate::ice_servers::{IceServer, TurnTransport};
use crate::pair::{CandidateType, LocalCandidate};
use crate::PeerError;

/// How long a TURN transport may take before the next one is tried as well.
const TURN_GRACE: Duration = Duration::from_secs(1);

pub(super) struct TurnSlot {
    pub(super) client: TurnClient,
    server: SocketAddr,
    transport: TurnTransport,
    pub(super) relayed: Option<SocketAddr>,
    pub(super) done: bool,
}

impl PeerCore {
    /// A datagram (UDP) or a frame (TCP/TLS) arrived from TURN server `idx`.
    pub fn handle_turn(&mut self, idx: usize, data: &[u8], now: Instant) -> Result<(), PeerError> {
        if let Some(t) = self.turns.get_mut(idx) {
            let relayed = t.relayed;
            if let (Some((peer, payload)), Some(relayed)) =
                (t.client.handle_input(data, now), relayed)
            {
                if let Ok(r) = Receive::new(Protocol::Udp, peer, relayed, payload) {
                    if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                        tracing::debug!("rtc input: {e}");
                    }
                }
            }
        }
        self.drive(now)
    }

    /// The link to TURN server `idx` failed or closed.
    pub fn handle_turn_closed(
        &mut self,
        idx: usize,
        reason: String,
        now: Instant,
    ) -> Result<(), PeerError> {
        if let Some(t) = self.turns.get_mut(idx) {
            let server = format!("{} {}", t.transport, t.server);
            if !t.done {
                t.done = true;
                self.emit(PeerEvent::TurnFailed { server, reason });
            } else if let Some(relayed) = t.relayed.take() {
                tracing::warn!("TURN connection {server} lost ({reason}); relay {relayed} gone");
            }
        }
        self.drive(now)
    }

    /// Starts the next transport's TURN allocations once the previous transport's finished or
    /// [`TURN_GRACE`] passed. str0m ranks relayed candidates by the order they are added (RFC
    /// 8445 §5.1.2.1 local preference, counted down), so this order makes a relay over UDP
    /// preferred to one over TCP, and TCP to TLS, as browsers do, while a blocked transport
    /// delays the next by at most the grace.
    pub(super) fn start_due_turns(&mut self, now: Instant) {
        let Some((
            _,
            IceServer::Turn {
                transport: next, ..
            },
        )) = self.turn_queue.first()
        else {
            return;
        };
        let next = *next;
        let previous_done = self.turns.iter().all(|t| t.done);
        if !(self.turns.is_empty() || previous_done || now >= self.next_turn_group) {
            return;
        }
        while let Some((
            server,
            IceServer::Turn {
                host,
                transport,
                username,
                credential,
                ..
            },
        )) = self.turn_queue.first().cloned()
        {
            if transport != next {
                break;
            }
            self.turn_queue.remove(0);
            let Some(local_ip) = self
                .hosts
                .iter()
                .find(|h| h.is_ipv4() == server.is_ipv4())
                .map(|h| h.ip())
            else {
                continue;
            };
            let mut seed = [0u8; 32];
            self.rng.fill_bytes(&mut seed);
            let mut cfg = TurnClientConfig::new(server, username, credential, seed);
            cfg.software = Some(concat!("floe-peer ", env!("CARGO_PKG_VERSION")).to_owned());
            cfg.stream = transport != TurnTransport::Udp;
            let idx = self.turns.len();
            self.out.push_back(Output::OpenTurn {
                idx,
                server,
                host,
                transport,
                local_ip,
            });
            self.turns.push(TurnSlot {
                client: TurnClient::new(cfg, now),
                server,
                transport,
                relayed: None,
                done: false,
            });
        }
        self.next_turn_group = now + TURN_GRACE;
    }

    pub(super) fn pump_turns(&mut self, now: Instant) {
        let mut new_locals = Vec::new();
        let mut failures = Vec::new();
        for (idx, t) in self.turns.iter_mut().enumerate() {
            while let Some(data) = t.client.poll_transmit() {
                self.out.push_back(Output::Turn { idx, data });
            }
            while let Some(ev) = t.client.poll_event() {
                match ev {
                    TurnEvent::Allocated { relayed, .. } => {
                        t.relayed = Some(relayed);
                        t.done = true;
                        new_locals.push(LocalCandidate {
                            kind: CandidateType::Relay,
                            addr: relayed,
                            base: relayed,
                            turn: Some(t.transport),
                        });
                    }
                    TurnEvent::AllocationFailed(e) => {
                        t.done = true;
                        failures.push((format!("{} {}", t.transport, t.server), e.to_string()));
                    }
                    other => tracing::debug!("turn {}: {other:?}", t.server),
                }
            }
        }
        for c in new_locals {
            // Permissions for the remote candidates we already know (RFC 8656 §9).
            let remote_ips: Vec<IpAddr> = self.remotes.iter().map(|(_, a)| a.ip()).collect();
            if let Some(t) = self.turns.iter_mut().find(|t| t.relayed == Some(c.addr)) {
                for ip in remote_ips
                    .into_iter()
                    .filter(|ip| ip.is_ipv4() == c.addr.is_ipv4())
                {
                    // The requests go out with the next pump (drive() pumps twice).
                    t.client.create_permission(ip, now);
                }
            }
            self.add_local(c, true);
        }
        for (server, reason) in failures {
            self.emit(PeerEvent::TurnFailed { server, reason });
        }
    }
}

pub(super) fn transport_rank(t: TurnTransport) -> u8 {
    match t {
        TurnTransport::Udp => 0,
        TurnTransport::Tcp => 1,
        TurnTransport::Tls => 2,
    }
}
