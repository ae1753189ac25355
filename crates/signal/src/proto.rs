//! The wire protocol, version 1: JSON text frames over WebSocket at `/v1/ws`, and the same
//! messages over the HTTP post box. Every message is an object whose `type` field names it;
//! field names are camelCase (candidate fields match the browser's `RTCIceCandidateInit`).
//! Unknown fields are ignored so that newer clients keep working against older servers.
//!
//! docs/signalling.md is the normative description; the tests at the bottom pin the JSON shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::ids::{PeerId, ResumeToken, RoomId, SessionId};

/// The protocol version this crate speaks (`v` in `join` and `welcome`).
pub const PROTOCOL_VERSION: u32 = 1;

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum ClientMsg {
    /// Join a room. Answered by `welcome` or `error`.
    Join {
        /// Protocol version; must be 1.
        v: u32,
        /// The room to join.
        room: RoomId,
        /// The peer id to use; when absent the token's `peer` claim or a server-assigned id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<PeerId>,
        /// A JWT (required in production mode).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Take a session back after a reconnect. Answered by `resumed` followed by every message
    /// with `seq > lastSeq`, or `error` `resume_failed`.
    Resume {
        /// The session id from `welcome`.
        session: SessionId,
        /// The resume token from `welcome`.
        resume_token: ResumeToken,
        /// The highest `seq` the client has processed (0 if none).
        #[serde(default)]
        last_seq: u64,
    },
    /// An SDP offer for one peer.
    Offer(SdpBody),
    /// An SDP answer for one peer.
    Answer(SdpBody),
    /// A trickled ICE candidate for one peer.
    Candidate(CandidateBody),
    /// The sender has gathered all its candidates (for one peer).
    EndOfCandidates(DirectedBody),
    /// The sender hangs up its connection with one peer (it stays in the room).
    Bye(DirectedBody),
    /// An application message to one peer (`to`) or to everyone else in the room (no `to`).
    Data(DataBody),
    /// Acknowledge every server message with `seq <= seq`; they are dropped from the mailbox.
    Ack {
        /// The highest processed `seq`.
        seq: u64,
    },
    /// Heartbeat. Answered by `pong`.
    Ping {
        /// Optionally acknowledge like `ack` in the same frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
    },
    /// Replace the session's token with a fresh one (same room and peer).
    Refresh {
        /// The new JWT.
        token: String,
    },
    /// Leave the room for good (peers see `peer_left` with reason `left`).
    Leave {},
    /// Remove a peer from the room (needs the `admin` permission).
    Kick {
        /// The peer to remove.
        peer: PeerId,
    },
}

impl ClientMsg {
    /// Every `type` value a client may send.
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "resume",
        "offer",
        "answer",
        "candidate",
        "end_of_candidates",
        "bye",
        "data",
        "ack",
        "ping",
        "refresh",
        "leave",
        "kick",
    ];
}

/// Body of `offer` and `answer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SdpBody {
    /// The addressed peer.
    pub to: PeerId,
    /// The session description.
    pub sdp: String,
    /// Client sequence number, for deduplication after a resume (see [`ClientMsg::Resume`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Body of `candidate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateBody {
    /// The addressed peer.
    pub to: PeerId,
    /// The candidate line (`candidate:...`); empty string means end of candidates for a
    /// generation, as in the browser API.
    pub candidate: String,
    /// Media stream identification tag.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// Index of the m-line.
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    /// ICE username fragment (tells which ICE generation the candidate belongs to).
    #[serde(default)]
    pub username_fragment: Option<String>,
    /// Client sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Body of `end_of_candidates` and `bye`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectedBody {
    /// The addressed peer.
    pub to: PeerId,
    /// Client sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Body of `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataBody {
    /// The addressed peer; absent for a broadcast to every other peer in the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PeerId>,
    /// Any JSON value.
    pub data: Value,
    /// Client sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// What one peer sends another through the room, as routed by the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Signal {
    /// SDP offer.
    Offer {
        /// Session description.
        sdp: String,
    },
    /// SDP answer.
    Answer {
        /// Session description.
        sdp: String,
    },
    /// Trickled candidate.
    Candidate {
        /// Candidate line.
        candidate: String,
        /// Media stream identification tag.
        sdp_mid: Option<String>,
        /// m-line index.
        sdp_mline_index: Option<u16>,
        /// ICE username fragment.
        username_fragment: Option<String>,
    },
    /// End of candidates.
    EndOfCandidates,
    /// Hang up.
    Bye,
    /// Application data.
    Data {
        /// Any JSON value.
        data: Value,
    },
}

impl Signal {
    /// The server message that delivers this signal to its receiver.
    pub fn into_server_msg(self, seq: u64, from: PeerId, broadcast: bool) -> ServerMsg {
        match self {
            Signal::Offer { sdp } => ServerMsg::Offer { seq, from, sdp },
            Signal::Answer { sdp } => ServerMsg::Answer { seq, from, sdp },
            Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => ServerMsg::Candidate {
                seq,
                from,
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            },
            Signal::EndOfCandidates => ServerMsg::EndOfCandidates { seq, from },
            Signal::Bye => ServerMsg::Bye { seq, from },
            Signal::Data { data } => ServerMsg::Data {
                seq,
                from,
                data,
                broadcast,
            },
        }
    }

    /// A rough size in bytes, for mailbox accounting.
    pub fn approx_size(&self) -> usize {
        match self {
            Signal::Offer { sdp } | Signal::Answer { sdp } => json_len(sdp),
            Signal::Candidate {
                candidate,
                sdp_mid,
                username_fragment,
                ..
            } => {
                json_len(candidate)
                    + sdp_mid.as_ref().map_or(0, json_len)
                    + username_fragment.as_ref().map_or(0, json_len)
            }
            Signal::EndOfCandidates | Signal::Bye => 0,
            Signal::Data { data } => json_len(data),
        }
    }
}

/// The length of `v` serialized as compact JSON (escapes included: a control character takes
/// six bytes on the wire), counted without building the text. Mailbox bounds are counted in
/// these bytes, so a resume's replay of a full mailbox fits the WebSocket queue's byte bound
/// whatever the payload's characters.
fn json_len<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Serializing a `Value` to a sink cannot fail; a partial count is a safe fallback regardless.
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// One other peer of the room, as seen by the receiving peer, with the roles the server assigned
/// for this pair: the peer that joined later makes the first offer and is impolite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// The other peer.
    pub peer: PeerId,
    /// Whether the receiver is the polite side of this pair (it rolls back on glare).
    pub polite: bool,
    /// Whether the receiver should send the first offer to this peer.
    pub offerer: bool,
}

/// One entry of `iceServers`, shaped like the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN REST username (`expiry:peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN REST password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message from the server to a client. Messages with a `seq` are mailbox messages: numbered
/// per session from 1, kept until acknowledged and replayed after a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum ServerMsg {
    /// The answer to `join`.
    Welcome(Box<Welcome>),
    /// The answer to `resume`; the missed mailbox messages follow.
    Resumed(Box<Resumed>),
    /// A peer joined the room.
    PeerJoined {
        /// Mailbox sequence number.
        seq: u64,
        /// The new peer and the roles for this pair.
        #[serde(flatten)]
        info: PeerInfo,
    },
    /// A peer left the room for good.
    PeerLeft {
        /// Mailbox sequence number.
        seq: u64,
        /// The peer.
        peer: PeerId,
        /// `left`, `timeout`, `kicked`, `expired`, `overflow` or `shutdown`.
        reason: LeaveReason,
    },
    /// SDP offer from a peer.
    Offer {
        /// Mailbox sequence number.
        seq: u64,
        /// The sender.
        from: PeerId,
        /// Session description.
        sdp: String,
    },
    /// SDP answer from a peer.
    Answer {
        /// Mailbox sequence number.
        seq: u64,
        /// The sender.
        from: PeerId,
        /// Session description.
        sdp: String,
    },
    /// ICE candidate from a peer.
    Candidate {
        /// Mailbox sequence number.
        seq: u64,
        /// The sender.
        from: PeerId,
        /// Candidate line.
        candidate: String,
        /// Media stream identification tag.
        sdp_mid: Option<String>,
        /// m-line index.
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u16>,
        /// ICE username fragment.
        username_fragment: Option<String>,
    },
    /// A peer finished gathering candidates.
    EndOfCandidates {
        /// Mailbox sequence number.
        seq: u64,
        /// The sender.
        from: PeerId,
    },
    /// A peer hung up its connection with the receiver.
    Bye {
        /// Mailbox sequence number.
        seq: u64,
        /// The sender.
        from: PeerId,
    },
    /// Application data from a peer.
    Data {
        /// Mailbox sequence number.
        seq: u64,
        /// The sender.
        from: PeerId,
        /// The payload.
        data: Value,
        /// Whether it was sent to the whole room.
        broadcast: bool,
    },
    /// Answer to `ping`.
    Pong {
        /// The highest client `seq` the server has processed in this session (0 if none).
        ack: u64,
    },
    /// Answer to `refresh`.
    Refreshed {
        /// The new token's expiry (unix seconds), if it has one.
        exp: Option<u64>,
    },
    /// A refused message or a fatal condition.
    Error(ErrorBody),
    /// The server is going away; reconnect (with `resume`) after `reconnectMs`, to another node
    /// if one is available.
    GoAway {
        /// Why.
        reason: String,
        /// Suggested delay before reconnecting.
        reconnect_ms: u64,
    },
}

impl ServerMsg {
    /// The mailbox sequence number, for messages that have one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMsg::PeerJoined { seq, .. }
            | ServerMsg::PeerLeft { seq, .. }
            | ServerMsg::Offer { seq, .. }
            | ServerMsg::Answer { seq, .. }
            | ServerMsg::Candidate { seq, .. }
            | ServerMsg::EndOfCandidates { seq, .. }
            | ServerMsg::Bye { seq, .. }
            | ServerMsg::Data { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// Whether this is a message one peer sent to another (offer, answer, candidate,
    /// end-of-candidates, bye, data not sent to the whole room): what
    /// `floe_signal_delivery_seconds` times.
    pub fn is_directed(&self) -> bool {
        match self {
            ServerMsg::Offer { .. }
            | ServerMsg::Answer { .. }
            | ServerMsg::Candidate { .. }
            | ServerMsg::EndOfCandidates { .. }
            | ServerMsg::Bye { .. } => true,
            ServerMsg::Data { broadcast, .. } => !broadcast,
            _ => false,
        }
    }

    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>, ref_seq: Option<u64>) -> Self {
        ServerMsg::Error(ErrorBody {
            code,
            message: message.into(),
            fatal: code.is_fatal(),
            ref_seq,
        })
    }
}

/// The `welcome` message: the answer to a successful `join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// Protocol version.
    pub v: u32,
    /// The room joined.
    pub room: RoomId,
    /// This peer's id (as requested, from the token, or assigned).
    pub peer: PeerId,
    /// This session's id.
    pub session: SessionId,
    /// Secret for `resume` and the HTTP post box's bearer token. Keep it private.
    pub resume_token: ResumeToken,
    /// How long a disconnected session is kept for `resume`.
    pub resume_ttl_ms: u64,
    /// Send `ping` at least this often; silence for three intervals ends the connection.
    pub heartbeat_ms: u64,
    /// Largest accepted frame, in bytes.
    pub max_message_bytes: usize,
    /// The other peers, with roles.
    pub peers: Vec<PeerInfo>,
    /// STUN/TURN servers with credentials minted for this peer.
    pub ice_servers: Vec<IceServer>,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
    /// The token's expiry (unix seconds), if any; `refresh` before then.
    pub token_exp: Option<u64>,
}

/// The `resumed` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resumed {
    /// The room.
    pub room: RoomId,
    /// This peer's id.
    pub peer: PeerId,
    /// The session id.
    pub session: SessionId,
    /// The current other peers, with roles.
    pub peers: Vec<PeerInfo>,
    /// Fresh STUN/TURN servers and credentials.
    pub ice_servers: Vec<IceServer>,
    /// The highest client `seq` processed; resend anything later.
    pub received: u64,
    /// The highest mailbox `seq` assigned so far; messages up to it follow if not acknowledged.
    pub last_seq: u64,
}

/// The body of `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable text; may change between versions.
    pub message: String,
    /// Whether the server closes the connection after this message.
    pub fatal: bool,
    /// The client `seq` of the refused message, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_seq: Option<u64>,
}

/// Why a peer left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// The peer sent `leave` (or the post box's `DELETE`).
    Left,
    /// The peer disconnected and did not resume within the TTL.
    Timeout,
    /// An admin kicked it.
    Kicked,
    /// Its token expired.
    Expired,
    /// Its mailbox overflowed.
    Overflow,
    /// The node it was on shut down and it did not come back within the TTL.
    Shutdown,
}

/// A permission granted by a token (all but `admin` in development mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Send `offer`, `answer`, `candidate`, `end_of_candidates` and `bye`.
    Publish,
    /// Receive them (a peer without it is invisible as a signalling target).
    Subscribe,
    /// Send `data`.
    Data,
    /// Send `kick`.
    Admin,
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    /// `publish`.
    pub publish: bool,
    /// `subscribe`.
    pub subscribe: bool,
    /// `data`.
    pub data: bool,
    /// `admin`.
    pub admin: bool,
}

impl Permissions {
    /// publish + subscribe + data: what development mode and tokens without a `perms` claim get.
    pub const DEFAULT: Permissions = Permissions {
        publish: true,
        subscribe: true,
        data: true,
        admin: false,
    };

    /// Whether `p` is granted.
    pub fn has(&self, p: Permission) -> bool {
        match p {
            Permission::Publish => self.publish,
            Permission::Subscribe => self.subscribe,
            Permission::Data => self.data,
            Permission::Admin => self.admin,
        }
    }

    /// The granted permissions as a list.
    pub fn to_list(self) -> Vec<Permission> {
        [
            Permission::Publish,
            Permission::Subscribe,
            Permission::Data,
            Permission::Admin,
        ]
        .into_iter()
        .filter(|p| self.has(*p))
        .collect()
    }

    /// Builds a set from a list.
    pub fn from_list(list: &[Permission]) -> Self {
        let mut p = Permissions::default();
        for perm in list {
            match perm {
                Permission::Publish => p.publish = true,
                Permission::Subscribe => p.subscribe = true,
                Permission::Data => p.data = true,
                Permission::Admin => p.admin = true,
            }
        }
        p
    }
}

/// Why a frame could not be turned into a [`ClientMsg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// `bad_json`, `unknown_type` or `bad_message`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
    /// The message's client `seq`, if it could be read.
    pub ref_seq: Option<u64>,
}

/// Parses one client frame, telling malformed JSON, unknown types and bad fields apart.
///
/// The frequent messages (`data`, `candidate`, `offer`, `answer`, `ack`, `ping`) are read
/// straight into their body types; anything the fast path cannot read (a missing or odd
/// `type`, a duplicate key, a bad field) goes through the general path, which builds the same
/// errors as always.
pub fn parse_client_msg(text: &str) -> Result<ClientMsg, ParseError> {
    fast_client_msg(text).map_or_else(|| parse_client_msg_slow(text), Ok)
}

/// The `type` of a frame, read without building the rest of it.
#[derive(Deserialize)]
struct TypeProbe<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct AckBody {
    seq: u64,
}

#[derive(Deserialize)]
struct PingBody {
    #[serde(default)]
    ack: Option<u64>,
}

/// The hot message types without a `serde_json::Value` of the whole frame and the internally
/// tagged enum's buffering (measured in docs/benchmarks.md, "Signalling"). `None`: use the
/// general path.
fn fast_client_msg(text: &str) -> Option<ClientMsg> {
    let probe: TypeProbe<'_> = serde_json::from_str(text).ok()?;
    Some(match probe.ty.as_ref() {
        "data" => ClientMsg::Data(serde_json::from_str(text).ok()?),
        "candidate" => ClientMsg::Candidate(serde_json::from_str(text).ok()?),
        "offer" => ClientMsg::Offer(serde_json::from_str(text).ok()?),
        "answer" => ClientMsg::Answer(serde_json::from_str(text).ok()?),
        "ack" => ClientMsg::Ack {
            seq: serde_json::from_str::<AckBody>(text).ok()?.seq,
        },
        "ping" => ClientMsg::Ping {
            ack: serde_json::from_str::<PingBody>(text).ok()?.ack,
        },
        _ => return None,
    })
}

fn parse_client_msg_slow(text: &str) -> Result<ClientMsg, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError {
        code: ErrorCode::BadJson,
        message: format!("invalid JSON: {e}"),
        ref_seq: None,
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ParseError {
            code: ErrorCode::BadMessage,
            message: "a message must be a JSON object".into(),
            ref_seq: None,
        });
    };
    let ref_seq = obj.get("seq").and_then(Value::as_u64);
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(ParseError {
                code: ErrorCode::BadMessage,
                message: "`type` must be a string".into(),
                ref_seq,
            })
        }
        None => {
            return Err(ParseError {
                code: ErrorCode::BadMessage,
                message: "missing `type`".into(),
                ref_seq,
            })
        }
    };
    if !ClientMsg::TYPES.contains(&ty.as_str()) {
        let mut shown: String = ty.chars().take(32).collect();
        if shown.len() < ty.len() {
            shown.push('…');
        }
        return Err(ParseError {
            code: ErrorCode::UnknownType,
            message: format!("unknown message type {shown:?}"),
            ref_seq,
        });
    }
    serde_json::from_value(value).map_err(|e| ParseError {
        code: ErrorCode::BadMessage,
        message: format!("invalid {ty}: {e}"),
        ref_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// The bound `ws_outbound_max_bytes ≥ mailbox_max_bytes + max_message_bytes + 256 ×
        /// mailbox_max_msgs` (a resume replays a full mailbox at once) holds only if a numbered
        /// message's frame is at most its accounted size (`approx_size() + 64`) plus 256, for any
        /// characters: before sizes counted escapes, 1,000 control characters in an SDP were
        /// accounted as 1,000 bytes and sent as 6,000.
        #[test]
        fn a_frame_is_never_larger_than_its_accounted_size(
            text in any::<String>(),
            ctl in proptest::collection::vec(0u8..0x20, 0..200),
            kind in 0u8..4,
        ) {
            let text = text + &ctl.iter().map(|&b| char::from(b)).collect::<String>();
            let signal = match kind {
                0 => Signal::Offer { sdp: text },
                1 => Signal::Answer { sdp: text },
                2 => Signal::Candidate {
                    candidate: text.clone(),
                    sdp_mid: Some(text.clone()),
                    sdp_mline_index: Some(u16::MAX),
                    username_fragment: Some(text),
                },
                _ => Signal::Data { data: json!({ "t": text, "n": [1, 2.5, null] }) },
            };
            let accounted = signal.approx_size() + 64;
            let frame = serde_json::to_string(&signal.into_server_msg(u64::MAX, peer(&"p".repeat(64)), true)).unwrap();
            prop_assert!(frame.len() <= accounted + 256, "{} > {} + 256", frame.len(), accounted);
        }
    }

    fn peer(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    #[test]
    fn parses_candidate_with_browser_field_names() {
        let m = parse_client_msg(
            r#"{"type":"candidate","to":"bob","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab","seq":7}"#,
        )
        .unwrap();
        let ClientMsg::Candidate(c) = m else {
            panic!("not a candidate")
        };
        assert_eq!(c.to, peer("bob"));
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_mline_index, Some(0));
        assert_eq!(c.username_fragment.as_deref(), Some("ab"));
        assert_eq!(c.seq, Some(7));
    }

    #[test]
    fn parse_errors_are_classified() {
        assert_eq!(parse_client_msg("{").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(
            parse_client_msg("[1]").unwrap_err().code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_msg("{}").unwrap_err().code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_msg(r#"{"type":5}"#).unwrap_err().code,
            ErrorCode::BadMessage
        );
        let e = parse_client_msg(r#"{"type":"teleport","seq":3}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.ref_seq, Some(3));
        assert_eq!(
            parse_client_msg(r#"{"type":"offer","to":"bob"}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_msg(r#"{"type":"offer","to":"b:ob","sdp":"x"}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = parse_client_msg(r#"{"type":"ping","future":true}"#).unwrap();
        assert_eq!(m, ClientMsg::Ping { ack: None });
        let m = parse_client_msg(r#"{"type":"leave"}"#).unwrap();
        assert_eq!(m, ClientMsg::Leave {});
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let m = ServerMsg::PeerJoined {
            seq: 3,
            info: PeerInfo {
                peer: peer("bob"),
                polite: true,
                offerer: false,
            },
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"peer_joined","seq":3,"peer":"bob","polite":true,"offerer":false})
        );
        let m = Signal::Candidate {
            candidate: "c".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(1),
            username_fragment: None,
        }
        .into_server_msg(9, peer("alice"), false);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"candidate","seq":9,"from":"alice","candidate":"c","sdpMid":"0",
                   "sdpMLineIndex":1,"usernameFragment":null})
        );
        let m = ServerMsg::error(ErrorCode::RoomFull, "full", Some(4));
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"error","code":"room_full","message":"full","fatal":false,"refSeq":4})
        );
        let m = ServerMsg::GoAway {
            reason: "shutdown".into(),
            reconnect_ms: 500,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"go_away","reason":"shutdown","reconnectMs":500})
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = vec![
            ServerMsg::Pong { ack: 4 },
            ServerMsg::Data {
                seq: 1,
                from: peer("a"),
                data: json!({"x":[1,2]}),
                broadcast: true,
            },
            ServerMsg::PeerLeft {
                seq: 2,
                peer: peer("a"),
                reason: LeaveReason::Timeout,
            },
        ];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ServerMsg>(&s).unwrap(), m);
        }
    }

    #[test]
    fn the_fast_path_parses_exactly_as_the_general_one() {
        let frames = [
            r#"{"type":"data","to":"b","seq":3,"data":{"t":1,"pad":"xx"}}"#,
            r#"{"type":"data","data":[1,"two",null],"extra":true}"#,
            r#"{"type":"data","to":"b"}"#,
            r#"{"type":"data","to":"b","data":1,"data":2}"#,
            r#"{"type":"data","type":"ack","seq":1}"#,
            r#"{"type":"data","to":"","data":1}"#,
            r#"{"type":"candidate","to":"b","candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u","seq":9}"#,
            r#"{"type":"candidate","to":"b","candidate":""}"#,
            r#"{"type":"offer","to":"b","sdp":"v=0\r\n","seq":1}"#,
            r#"{"type":"answer","to":"b"}"#,
            r#"{"type":"ack","seq":7}"#,
            r#"{"type":"ack","seq":-1}"#,
            r#"{"type":"ack","seq":1.5}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","ack":null}"#,
            r#"{"type":"ping","ack":12}"#,
            r#"{"type":"ping","ack":"12"}"#,
            r#"{"type":"ping"} trailing"#,
            r#"{"type":7}"#,
            r#"{"type":"nope","seq":2}"#,
            r#"{"type":"leave"}"#,
            r#"["type","data"]"#,
            r#"{"type":"data\u0000"}"#,
            r#"{"type":"d\u0061ta","data":1}"#,
        ];
        for f in frames {
            assert_eq!(parse_client_msg(f), parse_client_msg_slow(f), "{f}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_and_general_paths_agree_on_generated_frames(
            ty in proptest::sample::select(vec!["data", "ack", "ping", "candidate", "offer", "answer"]),
            to in proptest::option::of("[a-z]{0,3}"),
            seq in proptest::option::of(proptest::num::i64::ANY),
            data in proptest::option::of("[a-z\\\"]{0,4}"),
            ack in proptest::option::of(0u64..5),
        ) {
            let mut o = serde_json::Map::new();
            o.insert("type".into(), json!(ty));
            if let Some(t) = to { o.insert("to".into(), json!(t)); }
            if let Some(s) = seq { o.insert("seq".into(), json!(s)); }
            if let Some(d) = &data { o.insert("data".into(), json!(d)); o.insert("sdp".into(), json!(d)); o.insert("candidate".into(), json!(d)); }
            if let Some(a) = ack { o.insert("ack".into(), json!(a)); }
            let f = Value::Object(o).to_string();
            proptest::prop_assert_eq!(parse_client_msg(&f), parse_client_msg_slow(&f));
        }
    }

    #[test]
    fn permissions_list_round_trip() {
        let p = Permissions::from_list(&[Permission::Data, Permission::Admin]);
        assert!(p.has(Permission::Admin) && !p.has(Permission::Publish));
        assert_eq!(Permissions::from_list(&p.to_list()), p);
    }
}
