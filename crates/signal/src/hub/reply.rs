//! Replies to the input being processed, error answers and fatal closes.

use super::state::ReplyTo;
use super::{Hub, Now, Output};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::{ConnId, SessionId};
use crate::proto::{ErrorBody, ServerMsg};

impl<B: Bus> Hub<B> {
    /// Sends a fatal error, closes the connection and detaches its session.
    pub(super) fn fail(&mut self, conn: ConnId, code: ErrorCode, message: String, now: Now) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.outputs.push_back(Output::Rejected { code });
        let body = ErrorBody {
            code,
            message,
            fatal: true,
            ref_seq: None,
        };
        self.outputs.push_back(Output::Send {
            conn,
            msg: ServerMsg::Error(body),
        });
        self.outputs.push_back(Output::Close { conn, code });
        self.drop_conn(conn, now);
    }

    pub(super) fn reply(&mut self, to: ReplyTo, msg: ServerMsg) {
        match to {
            ReplyTo::Conn(conn) => self.outputs.push_back(Output::Send { conn, msg }),
            ReplyTo::PostBox => {
                if let Some((_, replies)) = &mut self.post_box {
                    replies.push(msg);
                }
            }
        }
    }

    pub(super) fn reply_error(
        &mut self,
        to: ReplyTo,
        code: ErrorCode,
        message: impl Into<String>,
        ref_seq: Option<u64>,
    ) {
        self.outputs.push_back(Output::Rejected { code });
        // Not fatal whatever the code (`token_expired` at join, say): the connection stays open,
        // and `fatal` promises a close. Fatal errors go through [`Hub::fail`].
        let body = ErrorBody {
            code,
            message: message.into(),
            fatal: false,
            ref_seq,
        };
        self.reply(to, ServerMsg::Error(body));
    }

    /// An error for a session from an asynchronous bus answer.
    pub(super) fn reply_session_error(
        &mut self,
        sid: &SessionId,
        code: ErrorCode,
        message: String,
        ref_seq: Option<u64>,
    ) {
        if self.post_box.as_ref().is_some_and(|(s, _)| s == sid) {
            return self.reply_error(ReplyTo::PostBox, code, message, ref_seq);
        }
        match self.sessions.get(sid).and_then(|s| s.conn) {
            Some(conn) => self.reply_error(ReplyTo::Conn(conn), code, message, ref_seq),
            None => self.outputs.push_back(Output::Rejected { code }),
        }
    }
}
