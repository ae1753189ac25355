//! The HTTP post box: one client message per POST, and a polled mailbox cursor.

use super::state::ReplyTo;
use super::state::Timer;
use super::{Hub, Now, Output};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::SessionId;
use crate::proto::{parse_client_msg, ClientMsg, ErrorBody, ServerMsg};

/// The result of a post-box poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PostBoxPoll {
    /// Messages with `seq > after`, oldest first.
    pub messages: Vec<ServerMsg>,
    /// The highest `seq` assigned so far; the next poll's `after` is the last one processed.
    pub last_seq: u64,
}

impl<B: Bus> Hub<B> {
    /// Post box: one client message for `session`, authenticated by its resume token. Returns the
    /// immediate replies (errors, `pong`, `refreshed`), or the error that refused the request.
    pub fn handle_post_box_message(
        &mut self,
        session: &SessionId,
        token: &str,
        body: &[u8],
        now: Now,
    ) -> Result<Vec<ServerMsg>, ErrorBody> {
        self.post_box_session(session, token, now)?;
        let refuse = |hub: &mut Self, code: ErrorCode, msg: String, ref_seq| {
            hub.outputs.push_back(Output::Rejected { code });
            Err(ErrorBody {
                code,
                message: msg,
                fatal: false,
                ref_seq,
            })
        };
        if body.len() > self.config.max_message_bytes {
            let max = self.config.max_message_bytes;
            return refuse(
                self,
                ErrorCode::MessageTooLarge,
                format!("body exceeds {max} bytes"),
                None,
            );
        }
        if let Some(s) = self.sessions.get_mut(session) {
            if !s.post_box_bucket.try_take(1, now.mono) {
                return refuse(
                    self,
                    ErrorCode::RateLimited,
                    "too many messages per second".into(),
                    None,
                );
            }
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return refuse(
                self,
                ErrorCode::BadJson,
                "body is not UTF-8 text".into(),
                None,
            );
        };
        let msg = match parse_client_msg(text) {
            Ok(m) => m,
            Err(e) => return refuse(self, e.code, e.message, e.ref_seq),
        };
        if matches!(msg, ClientMsg::Join { .. } | ClientMsg::Resume { .. }) {
            return refuse(
                self,
                ErrorCode::BadMessage,
                "join through POST /v1/rest/join; post-box sessions need no resume".into(),
                None,
            );
        }
        self.post_box = Some((session.clone(), Vec::new()));
        self.dispatch_session(ReplyTo::PostBox, session.clone(), msg, now);
        self.pump_bus(now);
        Ok(self.post_box.take().map(|(_, r)| r).unwrap_or_default())
    }

    /// Post box: acknowledge up to `after` and return the messages after it (possibly none; the
    /// shell long-polls by waiting for [`Output::Wake`]). An `after` beyond the last message
    /// numbered for the session is refused with `bad_ack` (400) and acknowledges nothing.
    pub fn handle_post_box_poll(
        &mut self,
        session: &SessionId,
        token: &str,
        after: u64,
        now: Now,
    ) -> Result<PostBoxPoll, ErrorBody> {
        self.post_box_session(session, token, now)?;
        let batch = self.config.post_box_poll_batch;
        if let Err(e) = self.ack_mailbox(session, after) {
            self.outputs.push_back(Output::Rejected {
                code: ErrorCode::BadAck,
            });
            return Err(ErrorBody {
                code: ErrorCode::BadAck,
                message: format!("after={after}: {e}"),
                fatal: false,
                ref_seq: None,
            });
        }
        let Some(s) = self.sessions.get(session) else {
            return Err(not_found_body());
        };
        Ok(PostBoxPoll {
            messages: s.mailbox.since(after).take(batch).cloned().collect(),
            last_seq: s.mailbox.last_seq(),
        })
    }

    /// Whether `session` exists and `token` is its resume token (for the shell's long-poll loop).
    pub fn post_box_session_valid(&self, session: &SessionId, token: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.resume_token.matches(token))
    }

    fn post_box_session(
        &mut self,
        sid: &SessionId,
        token: &str,
        now: Now,
    ) -> Result<(), ErrorBody> {
        let ttl = self.config.resume_ttl;
        match self.sessions.get_mut(sid) {
            Some(s) if s.resume_token.matches(token) => {
                if s.conn.is_none() {
                    s.detached_at = now.mono;
                    self.timers
                        .insert((now.mono + ttl, Timer::SessionTtl(sid.clone())));
                }
                Ok(())
            }
            _ => {
                self.outputs.push_back(Output::Rejected {
                    code: ErrorCode::SessionNotFound,
                });
                Err(not_found_body())
            }
        }
    }
}

fn not_found_body() -> ErrorBody {
    ErrorBody {
        code: ErrorCode::SessionNotFound,
        message: "unknown session or wrong bearer token".into(),
        fatal: false,
        ref_seq: None,
    }
}
