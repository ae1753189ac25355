//! Naming the selected candidate pair (RFC 8445 §5.1.1 candidate types) for humans and tests.
//!
//! str0m reports the nominated pair as the local *base* (a socket address, or the relayed
//! address for a relay candidate) and the remote address. Candidate types follow from what this
//! peer gathered and what the remote peer signalled:
//! - local: `relay` when the base is one of our TURN allocations. Otherwise the address the remote
//!   peer saw us as (XOR-MAPPED-ADDRESS of its ICE Binding responses) decides: our base → `host`,
//!   one of our server-reflexive addresses → `srflx`, anything else → `prflx` (a NAT mapping
//!   that only this path created, e.g. a symmetric NAT's mapping towards the remote's relay).
//!   Before any response: `srflx` when the remote address is not a remote host candidate and the
//!   socket has a server-reflexive address different from its base, else `host`;
//! - remote: the type the remote peer signalled for that address, or `prflx` (RFC 8445 §7.3.1.3)
//!   when it never signalled it (learned from its connectivity checks).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ice_servers::TurnTransport;

/// RFC 8445 candidate types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// A local interface address.
    Host,
    /// Server reflexive: the address a STUN server saw (our NAT's mapping).
    Srflx,
    /// Peer reflexive: learned from a connectivity check.
    Prflx,
    /// Relayed by a TURN server.
    Relay,
}

impl CandidateType {
    /// The SDP `typ` name.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::Srflx => "srflx",
            CandidateType::Prflx => "prflx",
            CandidateType::Relay => "relay",
        }
    }

    /// From an SDP `typ` token.
    pub fn from_typ(s: &str) -> Option<Self> {
        Some(match s {
            "host" => CandidateType::Host,
            "srflx" => CandidateType::Srflx,
            "prflx" => CandidateType::Prflx,
            "relay" => CandidateType::Relay,
            _ => return None,
        })
    }
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of our candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCandidate {
    /// Its type.
    pub kind: CandidateType,
    /// The address the remote peer sends to.
    pub addr: SocketAddr,
    /// The socket it is sent from (for a relay candidate: the relayed address itself).
    pub base: SocketAddr,
    /// For relay candidates: how we reach the TURN server.
    pub turn: Option<TurnTransport>,
}

impl fmt::Display for LocalCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.addr)?;
        if let Some(t) = self.turn {
            write!(f, " via turn {t}")?;
        }
        if self.kind == CandidateType::Srflx {
            write!(f, " base {}", self.base)?;
        }
        Ok(())
    }
}

/// How the selected path carries packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight UDP between the peers (host or through NATs).
    Udp,
    /// Through our TURN allocation, reached over this transport.
    Turn(TurnTransport),
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Udp => f.write_str("udp"),
            Via::Turn(t) => write!(f, "turn-{t}"),
        }
    }
}

/// The selected (nominated) candidate pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectedPair {
    /// Our candidate's type.
    pub local_kind: CandidateType,
    /// Our candidate's address (srflx: the NAT mapping; relay: the relayed address).
    pub local: SocketAddr,
    /// The remote candidate's type.
    pub remote_kind: CandidateType,
    /// The remote address we send to.
    pub remote: SocketAddr,
    /// Transport of the path.
    pub via: Via,
    /// Round-trip time of the last ICE check on the pair.
    pub rtt: Option<Duration>,
}

impl SelectedPair {
    /// Classifies the nominated pair `(base, remote)`.
    pub fn classify(
        base: SocketAddr,
        remote: SocketAddr,
        locals: &[LocalCandidate],
        remotes: &[(CandidateType, SocketAddr)],
        seen_as: Option<SocketAddr>,
        rtt: Option<Duration>,
    ) -> SelectedPair {
        let remote_kind = remotes
            .iter()
            .find(|(_, a)| *a == remote)
            .map(|(k, _)| *k)
            .unwrap_or(CandidateType::Prflx);
        if let Some(relay) = locals
            .iter()
            .find(|c| c.kind == CandidateType::Relay && c.addr == base)
        {
            return SelectedPair {
                local_kind: CandidateType::Relay,
                local: relay.addr,
                remote_kind,
                remote,
                via: Via::Turn(relay.turn.unwrap_or(TurnTransport::Udp)),
                rtt,
            };
        }
        let srflx = locals
            .iter()
            .find(|c| c.kind == CandidateType::Srflx && c.base == base && c.addr != base);
        let (local_kind, local) = match (seen_as, srflx) {
            (Some(seen), _) if seen == base => (CandidateType::Host, base),
            (Some(seen), _) => {
                let known = locals
                    .iter()
                    .any(|c| c.kind == CandidateType::Srflx && c.addr == seen);
                let kind = if known {
                    CandidateType::Srflx
                } else {
                    CandidateType::Prflx
                };
                (kind, seen)
            }
            (None, Some(s)) if remote_kind != CandidateType::Host => (CandidateType::Srflx, s.addr),
            (None, _) => (CandidateType::Host, base),
        };
        SelectedPair {
            local_kind,
            local,
            remote_kind,
            remote,
            via: Via::Udp,
            rtt,
        }
    }
}

impl fmt::Display for SelectedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "local {} {} <-> remote {} {} via {}",
            self.local_kind, self.local, self.remote_kind, self.remote, self.via
        )?;
        match self.rtt {
            Some(rtt) => write!(f, " rtt {:.3} ms", rtt.as_secs_f64() * 1000.0),
            None => f.write_str(" rtt ? ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn locals() -> Vec<LocalCandidate> {
        vec![
            LocalCandidate {
                kind: CandidateType::Host,
                addr: a("192.0.2.2:5000"),
                base: a("192.0.2.2:5000"),
                turn: None,
            },
            LocalCandidate {
                kind: CandidateType::Srflx,
                addr: a("203.0.113.20:5000"),
                base: a("192.0.2.2:5000"),
                turn: None,
            },
            LocalCandidate {
                kind: CandidateType::Relay,
                addr: a("203.0.113.10:50000"),
                base: a("203.0.113.10:50000"),
                turn: Some(TurnTransport::Tcp),
            },
        ]
    }

    #[test]
    fn through_both_nats_is_srflx_to_srflx() {
        let remotes = [
            (CandidateType::Host, a("198.51.100.2:6000")),
            (CandidateType::Srflx, a("203.0.113.30:6000")),
        ];
        let p = SelectedPair::classify(
            a("192.0.2.2:5000"),
            a("203.0.113.30:6000"),
            &locals(),
            &remotes,
            None,
            Some(Duration::from_micros(1500)),
        );
        assert_eq!(
            p.to_string(),
            "local srflx 203.0.113.20:5000 <-> remote srflx 203.0.113.30:6000 via udp rtt 1.500 ms"
        );
    }

    #[test]
    fn same_lan_is_host_to_host() {
        let remotes = [(CandidateType::Host, a("192.0.2.3:7000"))];
        let p = SelectedPair::classify(
            a("192.0.2.2:5000"),
            a("192.0.2.3:7000"),
            &locals(),
            &remotes,
            None,
            None,
        );
        assert_eq!(
            (p.local_kind, p.remote_kind),
            (CandidateType::Host, CandidateType::Host)
        );
        assert_eq!(p.via, Via::Udp);
    }

    #[test]
    fn the_remote_peers_view_names_our_end() {
        let remote = [(CandidateType::Relay, a("203.0.113.10:50002"))];
        let base = a("192.0.2.2:5000");
        // A symmetric NAT mapped us to a new port towards the remote's relay: prflx.
        let p = SelectedPair::classify(
            base,
            a("203.0.113.10:50002"),
            &locals(),
            &remote,
            Some(a("203.0.113.20:7777")),
            None,
        );
        assert_eq!(
            p.to_string(),
            "local prflx 203.0.113.20:7777 <-> remote relay 203.0.113.10:50002 via udp rtt ? ms"
        );
        // The same mapping the STUN server saw: srflx.
        let p = SelectedPair::classify(
            base,
            a("203.0.113.10:50002"),
            &locals(),
            &remote,
            Some(a("203.0.113.20:5000")),
            None,
        );
        assert_eq!(
            (p.local_kind, p.local),
            (CandidateType::Srflx, a("203.0.113.20:5000"))
        );
        // Seen as our own address: no NAT on this path.
        let p = SelectedPair::classify(
            base,
            a("203.0.113.10:50002"),
            &locals(),
            &remote,
            Some(base),
            None,
        );
        assert_eq!(p.local_kind, CandidateType::Host);
    }

    #[test]
    fn relay_base_is_a_relay_pair_with_its_transport() {
        let p = SelectedPair::classify(
            a("203.0.113.10:50000"),
            a("203.0.113.10:50002"),
            &locals(),
            &[],
            None,
            None,
        );
        assert_eq!(p.local_kind, CandidateType::Relay);
        assert_eq!(p.remote_kind, CandidateType::Prflx);
        assert_eq!(p.via.to_string(), "turn-tcp");
    }
}
