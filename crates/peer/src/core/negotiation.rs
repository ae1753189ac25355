//! Negotiation: the offer/answer exchange (perfect negotiation's impolite side ignores glare),
//! trickled candidates both ways, and end-of-candidates.

use std::time::Instant;

use serde_json::json;
use str0m::net::Protocol;
use str0m::Candidate;

use super::{Chan, PeerCore, PeerEvent};
use crate::pair::{CandidateType, LocalCandidate};
use crate::PeerError;

impl PeerCore {
    /// We joined later: we offer (docs/signalling.md §3, roles).
    pub(super) fn make_offer(&mut self) -> Result<(), PeerError> {
        let mut api = self.rtc.sdp_api();
        let chat = api.add_channel_with_config(Chan::Chat.config());
        let file = api.add_channel_with_config(Chan::File.config());
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| PeerError::Rtc("nothing to offer".into()))?;
        self.channels.insert(chat, Chan::Chat);
        self.channels.insert(file, Chan::File);
        self.pending_offer = Some(pending);
        let sdp = offer.to_sdp_string();
        self.mid = first_mid(&sdp).unwrap_or_else(|| "0".into());
        let to = self.remote.peer.clone();
        self.signal(json!({"type": "offer", "to": to, "sdp": sdp}));
        Ok(())
    }

    pub(super) fn on_sdp(&mut self, kind: &str, sdp: &str, now: Instant) -> Result<(), PeerError> {
        match kind {
            "offer" => {
                if self.pending_offer.is_some() && !self.remote.polite {
                    // Glare and we are impolite: ignore theirs (perfect negotiation).
                    return Ok(());
                }
                self.pending_offer = None;
                let offer = str0m::change::SdpOffer::from_sdp_string(sdp)
                    .map_err(|e| PeerError::Rtc(format!("bad offer: {e}")))?;
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| PeerError::Rtc(format!("cannot accept offer: {e}")))?;
                if self.channels.is_empty() {
                    for chan in [Chan::Chat, Chan::File] {
                        let id = self.rtc.direct_api().create_data_channel(chan.config());
                        self.channels.insert(id, chan);
                    }
                }
                let sdp_out = answer.to_sdp_string();
                self.mid = first_mid(&sdp_out).unwrap_or_else(|| "0".into());
                let to = self.remote.peer.clone();
                self.signal(json!({"type": "answer", "to": to, "sdp": sdp_out}));
            }
            "answer" => {
                let Some(pending) = self.pending_offer.take() else {
                    return Ok(());
                };
                let answer = str0m::change::SdpAnswer::from_sdp_string(sdp)
                    .map_err(|e| PeerError::Rtc(format!("bad answer: {e}")))?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| PeerError::Rtc(format!("cannot accept answer: {e}")))?;
            }
            _ => return Ok(()),
        }
        self.has_remote_sdp = true;
        for line in sdp.lines() {
            if let Some(c) = line.trim().strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    self.on_remote_candidate(c, now);
                }
            }
        }
        for c in std::mem::take(&mut self.held_remote) {
            self.on_remote_candidate(&c, now);
        }
        Ok(())
    }

    pub(super) fn on_remote_candidate(&mut self, line: &str, now: Instant) {
        if !self.has_remote_sdp {
            self.held_remote.push(line.to_owned());
            return;
        }
        let line = line.trim().trim_start_matches("a=");
        let Ok(c) = Candidate::from_sdp_string(line) else {
            // e.g. an mDNS ".local" host candidate.
            tracing::debug!("ignoring remote candidate {line}");
            return;
        };
        if c.proto() != Protocol::Udp {
            return;
        }
        let kind = line
            .split_whitespace()
            .skip_while(|t| *t != "typ")
            .nth(1)
            .and_then(CandidateType::from_typ)
            .unwrap_or(CandidateType::Host);
        let addr = c.addr();
        if self.remotes.iter().any(|(_, a)| *a == addr) {
            return;
        }
        self.remotes.push((kind, addr));
        self.emit(PeerEvent::RemoteCandidate(kind, addr));
        // Permissions on every allocation of the family (RFC 8656 §9), before ICE checks.
        for t in &mut self.turns {
            if t.relayed.is_some_and(|r| r.is_ipv4() == addr.is_ipv4()) {
                t.client.create_permission(addr.ip(), now);
            }
        }
        self.rtc.add_remote_candidate(c);
    }

    /// Adds a local candidate to ICE and (when `trickle`) sends it to the remote peer.
    pub(super) fn add_local(&mut self, cand: LocalCandidate, trickle: bool) {
        let c = match cand.kind {
            CandidateType::Host => Candidate::host(cand.addr, "udp"),
            CandidateType::Srflx => Candidate::server_reflexive(cand.addr, cand.base, "udp"),
            CandidateType::Relay => Candidate::relayed(cand.addr, cand.base, "udp"),
            CandidateType::Prflx => return,
        };
        let Ok(c) = c else {
            return;
        };
        let Some(added) = self.rtc.add_local_candidate(c) else {
            return; // redundant
        };
        let line = added.to_sdp_string();
        self.locals.push(cand);
        self.emit(PeerEvent::LocalCandidate(cand));
        if trickle {
            let (to, mid) = (self.remote.peer.clone(), self.mid.clone());
            self.signal(json!({
                "type": "candidate", "to": to, "candidate": line,
                "sdpMid": mid, "sdpMLineIndex": 0,
            }));
        }
    }

    fn gathering_done(&self) -> bool {
        self.stun.is_empty() && self.turn_queue.is_empty() && self.turns.iter().all(|t| t.done)
    }

    pub(super) fn maybe_end_of_candidates(&mut self, now: Instant) -> Result<(), PeerError> {
        if !self.end_of_candidates_sent && (self.gathering_done() || now >= self.gather_deadline) {
            if self.locals.is_empty() {
                return Err(PeerError::Closed(if self.cfg.relay_only {
                    "relay-only, and no TURN server gave us a relayed address".into()
                } else {
                    "gathered no candidate".into()
                }));
            }
            self.end_of_candidates_sent = true;
            let to = self.remote.peer.clone();
            self.signal(json!({"type": "end_of_candidates", "to": to}));
        }
        Ok(())
    }
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=mid:"))
        .map(str::to_owned)
}
