//! Signals between peers: permission and target checks, candidates held until an offer or
//! answer passes, data messages and kicks, all sent through the directory bus.

use super::state::{PairState, ReplyTo};
use super::Hub;
use crate::bus::{Bus, BusCommand};
use crate::error::ErrorCode;
use crate::ids::{PeerId, SessionId};
use crate::proto::{CandidateBody, DataBody, Permission, Signal};

impl<B: Bus> Hub<B> {
    pub(super) fn signal(
        &mut self,
        to: ReplyTo,
        sid: &SessionId,
        peer: PeerId,
        signal: Signal,
        seq: Option<u64>,
    ) {
        if !self.check_publish(to, sid, &peer, seq) {
            return;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let pair = s.pairs.entry(peer.clone()).or_default();
        let mut batch = Vec::new();
        match &signal {
            Signal::Offer { .. } | Signal::Answer { .. } => {
                pair.sdp_sent = true;
                batch.push((signal, seq));
                batch.append(&mut pair.held);
            }
            Signal::Bye => {
                *pair = PairState::default();
                batch.push((signal, seq));
            }
            _ if !pair.sdp_sent => {
                if pair.held.len() >= self.config.max_held_candidates {
                    let m = format!(
                        "more than {} candidates held for {peer} before an offer or answer",
                        self.config.max_held_candidates
                    );
                    return self.reply_error(to, ErrorCode::CandidateBufferFull, m, seq);
                }
                pair.held.push((signal, seq));
            }
            _ => batch.push((signal, seq)),
        }
        let (room, from) = (s.room.clone(), s.peer.clone());
        for (signal, ref_seq) in batch {
            self.bus.send(BusCommand::Send {
                room: room.clone(),
                from: from.clone(),
                origin: sid.clone(),
                to: Some(peer.clone()),
                signal,
                ref_seq,
            });
        }
    }

    pub(super) fn candidate(&mut self, to: ReplyTo, sid: &SessionId, c: CandidateBody) {
        let signal = Signal::Candidate {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
        };
        self.signal(to, sid, c.to, signal, c.seq)
    }

    /// Permission and target checks shared by the signals. Returns whether to go on.
    fn check_publish(
        &mut self,
        to: ReplyTo,
        sid: &SessionId,
        peer: &PeerId,
        seq: Option<u64>,
    ) -> bool {
        let Some(s) = self.sessions.get(sid) else {
            return false;
        };
        if !s.perms.has(Permission::Publish) {
            self.reply_error(
                to,
                ErrorCode::Forbidden,
                "the token does not grant publish",
                seq,
            );
            return false;
        }
        if *peer == s.peer {
            self.reply_error(to, ErrorCode::BadMessage, "cannot signal yourself", seq);
            return false;
        }
        let present = self
            .rooms
            .get(&s.room)
            .is_some_and(|r| r.members.contains_key(peer));
        if !present {
            self.reply_error(
                to,
                ErrorCode::PeerNotFound,
                format!("peer {peer} is not in the room"),
                seq,
            );
            return false;
        }
        true
    }

    pub(super) fn data(&mut self, to: ReplyTo, sid: &SessionId, d: DataBody) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if !s.perms.has(Permission::Data) {
            return self.reply_error(
                to,
                ErrorCode::Forbidden,
                "the token does not grant data",
                d.seq,
            );
        }
        if d.to.as_ref() == Some(&s.peer) {
            return self.reply_error(
                to,
                ErrorCode::BadMessage,
                "cannot send data to yourself",
                d.seq,
            );
        }
        self.bus.send(BusCommand::Send {
            room: s.room.clone(),
            from: s.peer.clone(),
            origin: sid.clone(),
            to: d.to,
            signal: Signal::Data { data: d.data },
            ref_seq: d.seq,
        });
    }

    pub(super) fn kick(&mut self, to: ReplyTo, sid: &SessionId, peer: PeerId) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if !s.perms.has(Permission::Admin) {
            return self.reply_error(
                to,
                ErrorCode::Forbidden,
                "kick needs the admin permission",
                None,
            );
        }
        let cmd = BusCommand::Kick {
            room: s.room.clone(),
            origin: sid.clone(),
            peer,
        };
        self.bus.send(cmd);
    }
}
