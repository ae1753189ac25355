//! A configuration reload on a live hub: new limits, ICE servers and authorisation for what
//! comes next, while every connection and session goes on, except sessions the new
//! authorisation would not have admitted.

use super::state::JoinedWith;
use super::{Hub, HubConfig, Now};
use crate::auth::{grant_for_room, Auth};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::{RoomId, SessionId};

impl<B: Bus> Hub<B> {
    /// Replaces the configuration (a reload). From now on joins are authorised, rate-limited
    /// and bounded by `config` (rooms, peers per room, tracked addresses), welcomes carry its
    /// ICE servers and timings, and mailboxes and held candidates get its bounds. What is live
    /// stays: connections keep the message bucket they were given, per-address join buckets
    /// keep their tokens (cut to the new burst) and refill at the new rate, rooms above a
    /// lowered `max_peers_per_room` keep their members.
    ///
    /// Every session is then checked against the new authorisation as at its join (cheap
    /// next to a reload; a session whose token still verifies is untouched): a session whose
    /// token the new keys no longer verify (its key was removed), or an anonymous development
    /// session once tokens are required, ends at once: its client gets the fatal
    /// `invalid_token` error and the room `peer_left` (`kicked`), as for a session an operator
    /// ends. An expired token is left to its own expiry. Sessions resumed from another node
    /// (multi-node), whose token is not known here, stay. Returns how many ended.
    pub fn handle_reconfigure(&mut self, config: HubConfig, now: Now) -> usize {
        self.config = config;
        let per_min = self.config.joins_per_min_per_ip;
        for bucket in self.ip_joins.values_mut() {
            bucket.set_rate(u64::from(per_min), u64::from(per_min.max(1)), now.mono);
        }
        let refused: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !self.still_admitted(&s.joined_with, &s.room, now))
            .map(|(sid, _)| sid.clone())
            .collect();
        let message = "the server's keys changed and no longer admit this session; join again with a new token";
        self.end_sessions_for(refused, ErrorCode::InvalidToken, message, now)
    }

    /// Whether the current authorisation admits a session joined `with` to `room`.
    fn still_admitted(&self, with: &JoinedWith, room: &RoomId, now: Now) -> bool {
        let Auth::Jwt(verifier) = &self.config.auth else {
            // Development mode admits everyone it can reach (loopback, checked at connect).
            return true;
        };
        match with {
            JoinedWith::Elsewhere => true,
            JoinedWith::Anonymous => false,
            JoinedWith::Token(token) => match verifier.verify(token, now.unix) {
                Ok(claims) => grant_for_room(&claims, room).is_ok(),
                Err(d) => d.code == ErrorCode::TokenExpired,
            },
        }
    }
}
