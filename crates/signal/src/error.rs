//! Stable error codes: the `code` field of every `error` message, the HTTP error body and the
//! `code` label of the `floe_signal_errors_total` counter. Codes are never renamed or reused;
//! docs/signalling.md lists them all.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable reason for refusing input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON (or not UTF-8 text).
    BadJson,
    /// Valid JSON, but not a valid message: missing or mistyped field, bad id, not an object.
    BadMessage,
    /// The `type` field names no message this server knows.
    UnknownType,
    /// The frame or body exceeds the configured maximum message size. Fatal on a WebSocket.
    MessageTooLarge,
    /// More messages per second than allowed on this connection. Fatal when sustained.
    RateLimited,
    /// Too many joins per minute from this IP address.
    JoinRateLimited,
    /// The room already has the maximum number of peers.
    RoomFull,
    /// This node already hosts the maximum number of rooms.
    TooManyRooms,
    /// The node has reached its connection limit (HTTP: 503).
    ServerBusy,
    /// The `v` field of `join` names a protocol version this server does not speak.
    UnsupportedVersion,
    /// The server runs in production mode (or the client is not on loopback in development mode)
    /// and the message carried no token.
    AuthRequired,
    /// The token does not verify: bad signature, wrong algorithm, malformed, missing claims.
    InvalidToken,
    /// The token's `exp` has passed. Fatal for a joined session whose token expires.
    TokenExpired,
    /// The token is valid but does not grant this: wrong room or peer, missing permission.
    Forbidden,
    /// The message needs a joined session and this connection has none.
    NotJoined,
    /// `join` or `resume` on a connection that already has a session.
    AlreadyJoined,
    /// Another live session in the room already uses this peer id.
    PeerIdTaken,
    /// The addressed peer is not in the room (or cannot receive signalling).
    PeerNotFound,
    /// `resume` named an unknown or expired session, or the resume token did not match.
    ResumeFailed,
    /// The post-box session does not exist (or the bearer token does not match it).
    SessionNotFound,
    /// Nothing was received within three heartbeat intervals. Fatal.
    HeartbeatTimeout,
    /// The connection did not join or resume in time. Fatal.
    JoinTimeout,
    /// The session's mailbox exceeded its bound because the client did not acknowledge. Fatal.
    MailboxOverflow,
    /// Too many candidates held for a peer that has not received an offer or answer yet.
    CandidateBufferFull,
    /// An admin removed this peer from the room. Fatal.
    Kicked,
    /// A `resume` from another connection took this session over. Fatal.
    SessionReplaced,
    /// The server is shutting down; reconnect (elsewhere). Fatal.
    ServerShutdown,
    /// An unexpected server-side failure; the message was not processed.
    Internal,
    /// An `ack` (or a `ping`'s `ack`, or a post-box poll's `after`) beyond the last message the
    /// server numbered for this session; it is ignored.
    BadAck,
    /// The connection fell behind: more than `ws_outbound_max_bytes` (or `ws_outbound_queue`
    /// frames) waited to be written. Fatal; the session stays resumable.
    SlowConsumer,
    /// An HTTP request did not send its body and get its answer in time (408).
    RequestTimeout,
}

impl ErrorCode {
    /// Every code, for documentation tests and metric pre-registration.
    pub const ALL: &'static [ErrorCode] = &[
        Self::BadJson,
        Self::BadMessage,
        Self::UnknownType,
        Self::MessageTooLarge,
        Self::RateLimited,
        Self::JoinRateLimited,
        Self::RoomFull,
        Self::TooManyRooms,
        Self::ServerBusy,
        Self::UnsupportedVersion,
        Self::AuthRequired,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::Forbidden,
        Self::NotJoined,
        Self::AlreadyJoined,
        Self::PeerIdTaken,
        Self::PeerNotFound,
        Self::ResumeFailed,
        Self::SessionNotFound,
        Self::HeartbeatTimeout,
        Self::JoinTimeout,
        Self::MailboxOverflow,
        Self::CandidateBufferFull,
        Self::Kicked,
        Self::SessionReplaced,
        Self::ServerShutdown,
        Self::Internal,
        Self::BadAck,
        Self::SlowConsumer,
        Self::RequestTimeout,
    ];

    /// The wire spelling, e.g. `"room_full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadMessage => "bad_message",
            Self::UnknownType => "unknown_type",
            Self::MessageTooLarge => "message_too_large",
            Self::RateLimited => "rate_limited",
            Self::JoinRateLimited => "join_rate_limited",
            Self::RoomFull => "room_full",
            Self::TooManyRooms => "too_many_rooms",
            Self::ServerBusy => "server_busy",
            Self::UnsupportedVersion => "unsupported_version",
            Self::AuthRequired => "auth_required",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::PeerIdTaken => "peer_id_taken",
            Self::PeerNotFound => "peer_not_found",
            Self::ResumeFailed => "resume_failed",
            Self::SessionNotFound => "session_not_found",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::JoinTimeout => "join_timeout",
            Self::MailboxOverflow => "mailbox_overflow",
            Self::CandidateBufferFull => "candidate_buffer_full",
            Self::Kicked => "kicked",
            Self::SessionReplaced => "session_replaced",
            Self::ServerShutdown => "server_shutdown",
            Self::Internal => "internal",
            Self::BadAck => "bad_ack",
            Self::SlowConsumer => "slow_consumer",
            Self::RequestTimeout => "request_timeout",
        }
    }

    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::MessageTooLarge
                | Self::HeartbeatTimeout
                | Self::JoinTimeout
                | Self::MailboxOverflow
                | Self::Kicked
                | Self::SessionReplaced
                | Self::ServerShutdown
                | Self::TokenExpired
                | Self::SlowConsumer
        )
    }

    /// The HTTP status that answers carry for this code (the post box, `/v1/ice-servers`, a
    /// refused WebSocket upgrade).
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadJson
            | Self::BadMessage
            | Self::UnknownType
            | Self::UnsupportedVersion
            | Self::NotJoined
            | Self::AlreadyJoined
            | Self::BadAck => 400,
            Self::AuthRequired | Self::InvalidToken | Self::TokenExpired => 401,
            Self::Forbidden | Self::Kicked => 403,
            Self::PeerNotFound | Self::ResumeFailed | Self::SessionNotFound => 404,
            Self::RoomFull | Self::PeerIdTaken | Self::SessionReplaced => 409,
            Self::MessageTooLarge => 413,
            Self::RateLimited | Self::JoinRateLimited | Self::CandidateBufferFull => 429,
            Self::MailboxOverflow | Self::HeartbeatTimeout | Self::JoinTimeout | Self::Internal => {
                500
            }
            Self::RequestTimeout => 408,
            Self::TooManyRooms | Self::ServerBusy | Self::ServerShutdown | Self::SlowConsumer => {
                503
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_serde_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn all_lists_each_code_once() {
        let mut v = ErrorCode::ALL.to_vec();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), ErrorCode::ALL.len());
    }
}
