//! Deadlines: join timeout and dead connections, the resume TTL of detached sessions, token
//! expiry.

use super::state::Timer;
use super::{Hub, Now};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::{ConnId, SessionId};
use crate::proto::LeaveReason;

impl<B: Bus> Hub<B> {
    pub(super) fn check_conn(&mut self, conn: ConnId, now: Now) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let dead_after = self.config.heartbeat * 3;
        let idle_deadline = c.last_rx + dead_after;
        let joined = c.session.is_some() || c.pending_join.is_some();
        let join_deadline = (!joined).then(|| c.unjoined_since + self.config.join_timeout);
        if join_deadline.is_some_and(|d| d <= now.mono) {
            return self.fail(
                conn,
                ErrorCode::JoinTimeout,
                "no join or resume in time".into(),
                now,
            );
        }
        if idle_deadline <= now.mono {
            let m = format!("nothing received for {} s", dead_after.as_secs());
            return self.fail(conn, ErrorCode::HeartbeatTimeout, m, now);
        }
        let next = join_deadline.map_or(idle_deadline, |j| j.min(idle_deadline));
        self.timers.insert((next, Timer::Conn(conn)));
    }

    /// Schedules the dead-connection check of a joined connection (the join-timeout check may be
    /// later than three heartbeats).
    pub(super) fn arm_idle_timer(&mut self, conn: ConnId, now: Now) {
        let at = now.mono + self.config.heartbeat * 3;
        self.timers.insert((at, Timer::Conn(conn)));
    }

    pub(super) fn check_session_ttl(&mut self, sid: &SessionId, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if s.conn.is_some() {
            return; // Re-armed when it detaches again.
        }
        let deadline = s.detached_at + self.config.resume_ttl;
        if deadline <= now.mono {
            self.end_session(sid, LeaveReason::Timeout, true, now);
        } else {
            self.timers
                .insert((deadline, Timer::SessionTtl(sid.clone())));
        }
    }

    pub(super) fn check_token(&mut self, sid: &SessionId, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let Some(deadline) = s.token_deadline else {
            return;
        };
        if deadline > now.mono {
            return; // Refreshed; a timer for the new deadline exists.
        }
        if let Some(conn) = s.conn {
            self.fail(
                conn,
                ErrorCode::TokenExpired,
                "the token expired; refresh it before `exp`".into(),
                now,
            );
        }
        self.end_session(sid, LeaveReason::Expired, true, now);
    }
}
