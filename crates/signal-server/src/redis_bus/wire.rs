//! The JSON payloads the directory scripts publish on a node's channel, and the member records
//! stored in a room's hash. Anything that does not parse is counted and dropped by the caller.

use std::collections::BTreeMap;

use floe_signal::bus::{MailboxEntry, Member};
use floe_signal::proto::{LeaveReason, Permissions, Signal};
use floe_signal::{ErrorCode, PeerId, RoomId, SessionId};
use serde::Deserialize;

/// One event on `<prefix>node:<id>:events` (see `lua/*.lua`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Wire {
    /// Our join succeeded; `members` joined before us, oldest first.
    Accepted {
        room: RoomId,
        session: SessionId,
        idx: u64,
        members: Vec<WireMember>,
    },
    /// Our join failed.
    Rejected {
        session: SessionId,
        peer: PeerId,
        code: ErrorCode,
        max: u64,
    },
    /// Someone joined a room where we have members (or we did).
    Joined {
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        idx: u64,
        sub: u8,
        /// Mailbox seq of the `peer_joined` per member session (shared mailboxes).
        #[serde(default)]
        seqs: BTreeMap<SessionId, u64>,
    },
    /// Someone left a room where we have members.
    Left {
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        reason: LeaveReason,
        #[serde(default)]
        seqs: BTreeMap<SessionId, u64>,
    },
    /// A signal for one of our sessions.
    Deliver {
        to: SessionId,
        from: PeerId,
        b: u8,
        msg: Signal,
        /// Its mailbox seq (absent: the session has no shared record).
        #[serde(default)]
        seq: Option<u64>,
    },
    /// A session moved to us (answer to our `resume`).
    Resumed(Box<WireResumed>),
    /// Our `resume` failed.
    ResumeRejected { session: SessionId },
    /// Our `Send`/`Kick` named a peer that is not there.
    Undeliverable {
        origin: SessionId,
        to: PeerId,
        #[serde(default)]
        ref_seq: Option<u64>,
    },
    /// One of our sessions was removed by the directory.
    Evict { session: SessionId, code: ErrorCode },
}

/// The body of a `resumed` event (see `lua/resume.lua`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct WireResumed {
    pub(crate) session: SessionId,
    pub(crate) room: RoomId,
    pub(crate) peer: PeerId,
    pub(crate) idx: u64,
    pub(crate) sub: u8,
    /// Four `0`/`1` flags: publish, subscribe, data, admin.
    pub(crate) perms: String,
    pub(crate) exp: Option<u64>,
    /// The token's `tenant` claim (absent from records stored before it was kept).
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    pub(crate) rcv: u64,
    pub(crate) seq: u64,
    pub(crate) members: Vec<WireMember>,
    pub(crate) missed: Vec<WireEntry>,
}

/// One entry of a shared mailbox: the event that was numbered `seq`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct WireEntry {
    pub(crate) seq: u64,
    pub(crate) e: Wire,
}

impl WireEntry {
    /// The mailbox entry, if the stored event is one that can be numbered.
    pub(crate) fn entry(self) -> Option<(u64, MailboxEntry)> {
        let entry = match self.e {
            Wire::Joined { peer, .. } => MailboxEntry::Joined { peer },
            Wire::Left { peer, reason, .. } => MailboxEntry::Left { peer, reason },
            Wire::Deliver { from, b, msg, .. } => MailboxEntry::Deliver {
                from,
                signal: msg,
                broadcast: b == 1,
            },
            _ => return None,
        };
        Some((self.seq, entry))
    }
}

/// Permissions as stored in a shared session record: four `0`/`1` flags.
pub(crate) fn encode_perms(p: Permissions) -> String {
    [p.publish, p.subscribe, p.data, p.admin]
        .iter()
        .map(|b| if *b { '1' } else { '0' })
        .collect()
}

/// The inverse of [`encode_perms`]; `None` for anything else.
pub(crate) fn decode_perms(s: &str) -> Option<Permissions> {
    let f: Vec<bool> = s.chars().map(|c| c == '1').collect();
    if f.len() != 4 || s.chars().any(|c| c != '0' && c != '1') {
        return None;
    }
    Some(Permissions {
        publish: f[0],
        subscribe: f[1],
        data: f[2],
        admin: f[3],
    })
}

/// A member as listed in an `accepted` event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct WireMember {
    pub(crate) peer: PeerId,
    pub(crate) session: SessionId,
    pub(crate) idx: u64,
    pub(crate) sub: u8,
}

impl From<WireMember> for Member {
    fn from(m: WireMember) -> Self {
        Member {
            peer: m.peer,
            session: m.session,
            join_index: m.idx,
            subscribe: m.sub == 1,
        }
    }
}

/// The value stored per peer in `<prefix>room:<room>:members`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Record {
    /// Session.
    pub(crate) s: SessionId,
    /// Node id.
    pub(crate) n: String,
    /// Join index.
    pub(crate) i: u64,
    /// Subscribe (0/1).
    pub(crate) b: u8,
}

/// Parses one published payload.
pub(crate) fn parse(payload: &[u8]) -> Result<Wire, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The `(member, node)` stored under `peer`, if the record is well formed.
pub(crate) fn parse_record(peer: &str, value: &str) -> Option<(Member, String)> {
    let peer = PeerId::new(peer).ok()?;
    let r: Record = serde_json::from_str(value).ok()?;
    Some((
        Member {
            peer,
            session: r.s,
            join_index: r.i,
            subscribe: r.b == 1,
        },
        r.n,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn published_events_parse() {
        let w = parse(br#"{"t":"accepted","room":"r","session":"00aa","idx":3,"members":[{"peer":"a","session":"01","idx":1,"sub":1}]}"#).unwrap();
        assert!(matches!(w, Wire::Accepted { idx: 3, ref members, .. } if members.len() == 1));
        let w =
            parse(br#"{"t":"deliver","to":"0a","from":"b","b":0,"msg":{"Data":{"data":[1,{}]}}}"#)
                .unwrap();
        assert!(matches!(w, Wire::Deliver { b: 0, .. }));
        let w = parse(br#"{"t":"left","room":"r","peer":"a","session":"0a","reason":"shutdown"}"#)
            .unwrap();
        assert!(matches!(
            w,
            Wire::Left {
                reason: LeaveReason::Shutdown,
                ..
            }
        ));
        let w = parse(
            br#"{"t":"undeliverable","origin":"0a","to":"x","ref_seq":18446744073709551615}"#,
        )
        .unwrap();
        assert!(matches!(
            w,
            Wire::Undeliverable {
                ref_seq: Some(u64::MAX),
                ..
            }
        ));
        let w = parse(br#"{"t":"rejected","session":"0a","peer":"a","code":"room_full","max":2}"#)
            .unwrap();
        assert!(matches!(
            w,
            Wire::Rejected {
                code: ErrorCode::RoomFull,
                ..
            }
        ));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"t\":\"nope\"}",
            b"{\"t\":\"joined\",\"room\":\"bad room\",\"peer\":\"a\",\"session\":\"s\",\"idx\":1,\"sub\":1}",
            b"{\"t\":\"deliver\",\"to\":\"s\",\"from\":\"a\",\"b\":0,\"msg\":{\"Nope\":{}}}",
            b"{\"t\":\"left\",\"room\":\"r\",\"peer\":\"a\",\"session\":\"s\",\"reason\":\"bored\"}",
            b"\xff\xfe",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_record("a", "{\"s\":\"0a\",\"n\":\"n1\",\"i\":2,\"b\":1}").is_some());
        assert!(parse_record("a", "garbage").is_none());
        assert!(parse_record("bad peer", "{\"s\":\"0a\",\"n\":\"n1\",\"i\":2,\"b\":1}").is_none());
    }

    #[test]
    fn numbered_events_and_resumed_parse() {
        let w = parse(
            br#"{"t":"left","room":"r","peer":"a","session":"0a","reason":"left","seqs":{"0b":7}}"#,
        )
        .unwrap();
        assert!(matches!(w, Wire::Left { ref seqs, .. } if seqs.len() == 1));
        let w = parse(
            br#"{"t":"joined","room":"r","peer":"a","session":"0a","idx":1,"sub":1,"seqs":{}}"#,
        )
        .unwrap();
        assert!(matches!(w, Wire::Joined { ref seqs, .. } if seqs.is_empty()));
        let w = parse(br#"{"t":"resumed","session":"0a","room":"r","peer":"a","idx":2,"sub":1,"perms":"1110","exp":null,"rcv":3,"seq":9,"members":[{"peer":"b","session":"0b","idx":1,"sub":1}],"missed":[{"seq":8,"e":{"t":"deliver","to":"0a","from":"b","b":0,"msg":"Bye"}},{"seq":9,"e":{"t":"left","room":"r","peer":"b","session":"0b","reason":"left"}}]}"#).unwrap();
        let Wire::Resumed(r) = w else {
            panic!("not resumed")
        };
        let entries: Vec<_> = r.missed.into_iter().filter_map(WireEntry::entry).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, 8);
        assert_eq!(decode_perms(&r.perms), Some(Permissions::DEFAULT));
    }

    #[test]
    fn perms_round_trip() {
        let p = Permissions {
            publish: false,
            subscribe: true,
            data: false,
            admin: true,
        };
        assert_eq!(decode_perms(&encode_perms(p)), Some(p));
        assert_eq!(decode_perms("11"), None);
        assert_eq!(decode_perms("11x1"), None);
    }
}
