//! The STUN Binding service (RFC 8489 §6.3) with NAT behaviour discovery (RFC 5780 §6).
//!
//! Sans-IO: [`BindingService::handle`] takes one received request and writes the response into
//! a caller-supplied buffer, naming the local address to send it from and the destination. It
//! keeps no per-client state and never allocates.
//!
//! Amplification (RFC 5780 §9.1, RFC 8489 §16.1): the response goes only to the request's source
//! IP (RESPONSE-PORT may change the port only), and PADDING in the response is never longer than
//! the PADDING the request itself carried, capped by [`BindingConfig::max_padding`].

use core::net::{IpAddr, SocketAddr};

use floe_stun::attr::{
    ChangeRequest, ErrorCode, OtherAddress, Padding, ResponseOrigin, ResponsePort, Software,
    UnknownAttributes, XorMappedAddress,
};
use floe_stun::{AttrType, BuildError, Class, Message, MessageBuilder, Method};

/// How the request reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (or TLS over TCP).
    Tcp,
}

/// RFC 5780 §4.1: the server's second IP address and port, used for NAT discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlternateAddress {
    /// The primary IP address (the one clients are told about).
    pub primary_ip: IpAddr,
    /// The alternate IP address.
    pub alternate_ip: IpAddr,
    /// The primary port.
    pub primary_port: u16,
    /// The alternate port.
    pub alternate_port: u16,
}

impl AlternateAddress {
    /// The four transport addresses the server listens on, in the order
    /// (primary IP, primary port), (primary IP, alt port), (alt IP, primary port), (alt IP, alt port).
    pub fn listen_addresses(&self) -> [SocketAddr; 4] {
        [
            SocketAddr::new(self.primary_ip, self.primary_port),
            SocketAddr::new(self.primary_ip, self.alternate_port),
            SocketAddr::new(self.alternate_ip, self.primary_port),
            SocketAddr::new(self.alternate_ip, self.alternate_port),
        ]
    }

    /// The other IP of the pair, or `None` if `ip` is neither.
    fn flip_ip(&self, ip: IpAddr) -> Option<IpAddr> {
        if ip == self.primary_ip {
            Some(self.alternate_ip)
        } else if ip == self.alternate_ip {
            Some(self.primary_ip)
        } else {
            None
        }
    }

    /// The other port of the pair, or `None` if `port` is neither.
    fn flip_port(&self, port: u16) -> Option<u16> {
        if port == self.primary_port {
            Some(self.alternate_port)
        } else if port == self.alternate_port {
            Some(self.primary_port)
        } else {
            None
        }
    }

    /// RFC 5780 §7.4: OTHER-ADDRESS differs from the receiving address in both IP and port.
    fn other_of(&self, local: SocketAddr) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            self.flip_ip(local.ip())?,
            self.flip_port(local.port())?,
        ))
    }
}

/// Configuration of the Binding service.
#[derive(Debug, Clone)]
pub struct BindingConfig {
    /// SOFTWARE attribute value (RFC 8489 §14.14); `None` to omit it.
    pub software: Option<String>,
    /// RFC 5780 discovery: one primary/alternate quad per listening address that has an
    /// alternate IP of its family (at most one per family in floe's configuration). A request
    /// received on an address of a quad is answered with that quad's OTHER-ADDRESS and may use
    /// CHANGE-REQUEST; one received anywhere else is answered as plain Binding (RFC 8489).
    pub alternates: Vec<AlternateAddress>,
    /// Largest PADDING echoed in a response (RFC 5780 §7.6), in bytes.
    pub max_padding: usize,
}

impl Default for BindingConfig {
    fn default() -> Self {
        BindingConfig {
            software: Some(concat!("floe ", env!("CARGO_PKG_VERSION")).to_owned()),
            alternates: Vec::new(),
            max_padding: 1200,
        }
    }
}

/// A response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Length of the response in the output buffer.
    pub len: usize,
    /// The local transport address to send it from (RFC 5780 CHANGE-REQUEST may pick another
    /// of the server's sockets).
    pub from: SocketAddr,
    /// Where to send it.
    pub to: SocketAddr,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply.
    Reply(Reply),
    /// Nothing to send, for the given reason (counted by the IO shell).
    Drop(DropReason),
}

/// Why no response is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A Binding indication (a keepalive, RFC 8489 §6.3.2): no response by design.
    Indication,
    /// Not a Binding request.
    NotBindingRequest,
    /// The output buffer was too small (a bug in the caller's sizing).
    BufferTooSmall,
}

impl DropReason {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Indication => "indication",
            DropReason::NotBindingRequest => "not_binding",
            DropReason::BufferTooSmall => "buffer_too_small",
        }
    }
}

/// The stateless Binding service.
#[derive(Debug, Clone, Default)]
pub struct BindingService {
    config: BindingConfig,
}

/// Attribute types the Binding service understands (RFC 8489 §6.3.1, RFC 5780 §7).
fn is_understood(t: AttrType) -> bool {
    matches!(
        t,
        AttrType::CHANGE_REQUEST
            | AttrType::RESPONSE_PORT
            | AttrType::PADDING
            | AttrType::FINGERPRINT
            | AttrType::SOFTWARE
            | AttrType::USERNAME
            | AttrType::MESSAGE_INTEGRITY
            | AttrType::MESSAGE_INTEGRITY_SHA256
            | AttrType::PRIORITY
            | AttrType::USE_CANDIDATE
            | AttrType::ICE_CONTROLLED
            | AttrType::ICE_CONTROLLING
    )
}

impl BindingService {
    /// A service with `config`.
    pub fn new(config: BindingConfig) -> Self {
        BindingService { config }
    }

    /// The configuration.
    pub fn config(&self) -> &BindingConfig {
        &self.config
    }

    /// Handles a parsed message received on `local` from `peer` over `transport`, writing any
    /// response into `out` (a 1500-byte buffer is always enough).
    pub fn handle(
        &self,
        msg: &Message<'_>,
        local: SocketAddr,
        peer: SocketAddr,
        transport: Transport,
        out: &mut [u8],
    ) -> Outcome {
        if msg.method() != Method::BINDING {
            return Outcome::Drop(DropReason::NotBindingRequest);
        }
        match msg.class() {
            Class::Request => {}
            Class::Indication => return Outcome::Drop(DropReason::Indication),
            _ => return Outcome::Drop(DropReason::NotBindingRequest),
        }
        let result = match self.check_request(msg, local, transport) {
            Ok(plan) => self.success(msg, local, peer, plan, out),
            Err(error) => self.error(msg, local, peer, error, out),
        };
        match result {
            Ok(reply) => Outcome::Reply(reply),
            Err(_) => Outcome::Drop(DropReason::BufferTooSmall),
        }
    }

    /// Validates the request and decides where the response goes from and to.
    fn check_request(
        &self,
        msg: &Message<'_>,
        local: SocketAddr,
        transport: Transport,
    ) -> Result<Plan, RequestError> {
        if msg
            .unknown_comprehension_required(is_understood)
            .next()
            .is_some()
        {
            return Err(RequestError::UnknownAttributes);
        }
        let change = match msg.get::<ChangeRequest>() {
            None => ChangeRequest::default(),
            Some(Ok(c)) => c,
            Some(Err(_)) => return Err(RequestError::BadRequest("malformed CHANGE-REQUEST")),
        };
        let response_port = match msg.get::<ResponsePort>() {
            None => None,
            Some(Ok(ResponsePort(0))) | Some(Err(_)) => {
                return Err(RequestError::BadRequest("malformed RESPONSE-PORT"))
            }
            Some(Ok(ResponsePort(p))) => Some(p),
        };
        let padding = match msg.get::<Padding>() {
            None => 0,
            Some(Ok(Padding(n))) => n.min(self.config.max_padding) & !3,
            Some(Err(_)) => 0,
        };
        let changes = change.change_ip || change.change_port;
        let alternate = self.alternate_for(local);
        let from = match (changes, alternate) {
            (false, _) => local,
            // RFC 5780 §6.1: without an alternate address, CHANGE-REQUEST gets 420.
            (true, None) => return Err(RequestError::UnknownAttributes),
            // Over TCP the response must use the request's connection.
            (true, Some(_)) if transport == Transport::Tcp => {
                return Err(RequestError::BadRequest("CHANGE-REQUEST over TCP"))
            }
            (true, Some(alt)) => {
                let ip = if change.change_ip {
                    alt.flip_ip(local.ip())
                } else {
                    Some(local.ip())
                };
                let port = if change.change_port {
                    alt.flip_port(local.port())
                } else {
                    Some(local.port())
                };
                match (ip, port) {
                    (Some(ip), Some(port)) => SocketAddr::new(ip, port),
                    _ => return Err(RequestError::BadRequest("not a discovery address")),
                }
            }
        };
        if response_port.is_some() && (alternate.is_none() || transport == Transport::Tcp) {
            return Err(RequestError::UnknownAttributes);
        }
        Ok(Plan {
            from,
            response_port,
            padding,
        })
    }

    fn success(
        &self,
        msg: &Message<'_>,
        local: SocketAddr,
        peer: SocketAddr,
        plan: Plan,
        out: &mut [u8],
    ) -> Result<Reply, BuildError> {
        let mut b = MessageBuilder::new(
            out,
            Class::SuccessResponse,
            Method::BINDING,
            msg.transaction_id(),
        )?;
        b.add(&XorMappedAddress(peer))?;
        if let Some(alt) = self.alternate_for(local) {
            if let Some(other) = alt.other_of(local) {
                b.add(&OtherAddress(other))?;
            }
            b.add(&ResponseOrigin(plan.from))?;
        }
        if plan.padding > 0 {
            b.add(&Padding(plan.padding))?;
        }
        self.finish(b, plan.from, plan.to(peer))
    }

    fn error(
        &self,
        msg: &Message<'_>,
        local: SocketAddr,
        peer: SocketAddr,
        error: RequestError,
        out: &mut [u8],
    ) -> Result<Reply, BuildError> {
        let mut b = MessageBuilder::new(
            out,
            Class::ErrorResponse,
            Method::BINDING,
            msg.transaction_id(),
        )?;
        match error {
            RequestError::UnknownAttributes => {
                b.add(&ErrorCode::new(ErrorCode::UNKNOWN_ATTRIBUTE))?;
                let mut unknown = [AttrType(0); 16];
                let mut n = 0;
                let is_known =
                    |t: AttrType| is_understood(t) && self.understood_here(msg, local, t);
                for t in msg.unknown_comprehension_required(is_known).take(16) {
                    unknown[n] = t;
                    n += 1;
                }
                b.add(&UnknownAttributes::List(&unknown[..n]))?;
            }
            RequestError::BadRequest(reason) => {
                b.add(&ErrorCode {
                    code: ErrorCode::BAD_REQUEST,
                    reason,
                })?;
            }
        }
        self.finish(b, local, peer)
    }

    /// The discovery quad that `local` (the address a request arrived on) belongs to.
    fn alternate_for(&self, local: SocketAddr) -> Option<AlternateAddress> {
        self.config
            .alternates
            .iter()
            .find(|a| a.listen_addresses().contains(&local))
            .copied()
    }

    /// CHANGE-REQUEST and RESPONSE-PORT are understood only where discovery is configured (on
    /// the addresses of an alternate quad).
    fn understood_here(&self, msg: &Message<'_>, local: SocketAddr, t: AttrType) -> bool {
        let discovery = self.alternate_for(local).is_some();
        match t {
            AttrType::RESPONSE_PORT => discovery,
            AttrType::CHANGE_REQUEST => {
                discovery
                    || !matches!(msg.get::<ChangeRequest>(), Some(Ok(c)) if c.change_ip || c.change_port)
            }
            _ => true,
        }
    }

    fn finish(
        &self,
        mut b: MessageBuilder<'_>,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<Reply, BuildError> {
        if let Some(software) = &self.config.software {
            b.add(&Software(software))?;
        }
        b.add_fingerprint()?;
        Ok(Reply {
            len: b.finish(),
            from,
            to,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    from: SocketAddr,
    response_port: Option<u16>,
    padding: usize,
}

impl Plan {
    /// RFC 5780 §7.5: RESPONSE-PORT changes the destination port, never the IP.
    fn to(&self, peer: SocketAddr) -> SocketAddr {
        match self.response_port {
            Some(port) => SocketAddr::new(peer.ip(), port),
            None => peer,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum RequestError {
    UnknownAttributes,
    BadRequest(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_stun::TransactionId;

    const TID: TransactionId = TransactionId([7; 12]);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn request(extra: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        extra(&mut b);
        let n = b.finish();
        buf.truncate(n);
        buf
    }

    fn discovery() -> BindingService {
        BindingService::new(BindingConfig {
            alternates: vec![AlternateAddress {
                primary_ip: "192.0.2.1".parse().unwrap(),
                alternate_ip: "192.0.2.2".parse().unwrap(),
                primary_port: 3478,
                alternate_port: 3479,
            }],
            ..BindingConfig::default()
        })
    }

    fn reply(outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Reply(r) => r,
            Outcome::Drop(d) => panic!("dropped: {d:?}"),
        }
    }

    #[test]
    fn answers_with_xor_mapped_address_software_and_fingerprint() {
        let svc = BindingService::default();
        let req = request(|_| {});
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let local = addr("127.0.0.1:3478");
        let peer = addr("198.51.100.7:5000");
        let r = reply(svc.handle(&msg, local, peer, Transport::Udp, &mut out));
        assert_eq!((r.from, r.to), (local, peer));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(resp.class(), Class::SuccessResponse);
        assert_eq!(resp.transaction_id(), TID);
        assert_eq!(
            resp.get::<XorMappedAddress>(),
            Some(Ok(XorMappedAddress(peer)))
        );
        assert!(resp.get::<Software<'_>>().is_some());
        assert!(resp.verify_fingerprint());
        assert!(resp.get::<OtherAddress>().is_none());
    }

    #[test]
    fn each_family_uses_its_own_alternate_and_others_answer_plain_binding() {
        let v4 = AlternateAddress {
            primary_ip: "192.0.2.1".parse().unwrap(),
            alternate_ip: "192.0.2.2".parse().unwrap(),
            primary_port: 3478,
            alternate_port: 3479,
        };
        let v6 = AlternateAddress {
            primary_ip: "2001:db8::1".parse().unwrap(),
            alternate_ip: "2001:db8::2".parse().unwrap(),
            primary_port: 3478,
            alternate_port: 3479,
        };
        let svc = BindingService::new(BindingConfig {
            alternates: vec![v4, v6],
            ..BindingConfig::default()
        });
        let change_both = request(|b| {
            b.add(&ChangeRequest {
                change_ip: true,
                change_port: true,
            })
            .unwrap()
        });
        let msg = Message::parse(&change_both).unwrap();
        let mut out = [0u8; 1500];
        for (local, other, peer) in [
            ("192.0.2.1:3478", "192.0.2.2:3479", "198.51.100.7:5000"),
            (
                "[2001:db8::2]:3479",
                "[2001:db8::1]:3478",
                "[2001:db8:5::7]:5000",
            ),
        ] {
            let r = reply(svc.handle(&msg, addr(local), addr(peer), Transport::Udp, &mut out));
            assert_eq!(r.from, addr(other), "CHANGE-REQUEST on {local}");
            let resp = Message::parse(&out[..r.len]).unwrap();
            assert_eq!(
                resp.get::<OtherAddress>(),
                Some(Ok(OtherAddress(addr(other))))
            );
        }
        // A listening address without an alternate (here a second IPv6 address): plain Binding.
        let local = addr("[2001:db8::9]:3478");
        let peer = addr("[2001:db8:5::7]:5000");
        let r = reply(svc.handle(&msg, local, peer, Transport::Udp, &mut out));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(resp.class(), Class::ErrorResponse);
        let req = request(|_| {});
        let msg = Message::parse(&req).unwrap();
        let r = reply(svc.handle(&msg, local, peer, Transport::Udp, &mut out));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(resp.class(), Class::SuccessResponse);
        assert!(resp.get::<OtherAddress>().is_none());
    }

    #[test]
    fn ipv6_peer() {
        let svc = BindingService::default();
        let req = request(|_| {});
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let peer = addr("[2001:db8::1]:4000");
        let r = reply(svc.handle(&msg, addr("[::1]:3478"), peer, Transport::Tcp, &mut out));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(
            resp.get::<XorMappedAddress>(),
            Some(Ok(XorMappedAddress(peer)))
        );
    }

    #[test]
    fn indications_and_other_methods_are_dropped() {
        let svc = BindingService::default();
        let mut buf = [0u8; 64];
        let n = MessageBuilder::new(&mut buf, Class::Indication, Method::BINDING, TID)
            .unwrap()
            .finish();
        let msg = Message::parse(&buf[..n]).unwrap();
        let mut out = [0u8; 1500];
        let peer = addr("198.51.100.7:5000");
        let local = addr("127.0.0.1:3478");
        assert_eq!(
            svc.handle(&msg, local, peer, Transport::Udp, &mut out),
            Outcome::Drop(DropReason::Indication)
        );
        let n = MessageBuilder::new(&mut buf, Class::Request, Method::ALLOCATE, TID)
            .unwrap()
            .finish();
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            svc.handle(&msg, local, peer, Transport::Udp, &mut out),
            Outcome::Drop(DropReason::NotBindingRequest)
        );
    }

    #[test]
    fn unknown_comprehension_required_gets_420() {
        let svc = BindingService::default();
        let req = request(|b| {
            b.add_raw(AttrType(0x7ff0), b"x").unwrap();
            b.add_raw(AttrType(0xfff0), b"optional").unwrap();
        });
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let peer = addr("198.51.100.7:5000");
        let r = reply(svc.handle(&msg, addr("127.0.0.1:3478"), peer, Transport::Udp, &mut out));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(resp.class(), Class::ErrorResponse);
        assert_eq!(resp.get::<ErrorCode<'_>>().unwrap().unwrap().code, 420);
        let unknown: Vec<_> = resp
            .get::<UnknownAttributes<'_>>()
            .unwrap()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(unknown, vec![AttrType(0x7ff0)]);
        assert_eq!(r.to, peer);
    }

    #[test]
    fn change_request_without_discovery_gets_420() {
        let svc = BindingService::default();
        let req = request(|b| {
            b.add(&ChangeRequest {
                change_ip: true,
                change_port: true,
            })
            .unwrap();
        });
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let r = reply(svc.handle(
            &msg,
            addr("127.0.0.1:3478"),
            addr("198.51.100.7:5000"),
            Transport::Udp,
            &mut out,
        ));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(resp.get::<ErrorCode<'_>>().unwrap().unwrap().code, 420);
        let unknown: Vec<_> = resp
            .get::<UnknownAttributes<'_>>()
            .unwrap()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(unknown, vec![AttrType::CHANGE_REQUEST]);
    }

    #[test]
    fn change_request_picks_the_responding_socket() {
        let svc = discovery();
        let peer = addr("198.51.100.7:5000");
        let mut out = [0u8; 1500];
        let cases = [
            ((false, false), "192.0.2.1:3478"),
            ((true, false), "192.0.2.2:3478"),
            ((false, true), "192.0.2.1:3479"),
            ((true, true), "192.0.2.2:3479"),
        ];
        for ((change_ip, change_port), from) in cases {
            let req = request(|b| {
                b.add(&ChangeRequest {
                    change_ip,
                    change_port,
                })
                .unwrap();
            });
            let msg = Message::parse(&req).unwrap();
            let r = reply(svc.handle(&msg, addr("192.0.2.1:3478"), peer, Transport::Udp, &mut out));
            assert_eq!(r.from, addr(from));
            let resp = Message::parse(&out[..r.len]).unwrap();
            assert_eq!(
                resp.get::<ResponseOrigin>(),
                Some(Ok(ResponseOrigin(addr(from))))
            );
            assert_eq!(
                resp.get::<OtherAddress>(),
                Some(Ok(OtherAddress(addr("192.0.2.2:3479"))))
            );
        }
    }

    #[test]
    fn other_address_is_relative_to_the_receiving_socket() {
        let svc = discovery();
        let req = request(|_| {});
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let r = reply(svc.handle(
            &msg,
            addr("192.0.2.2:3479"),
            addr("198.51.100.7:5000"),
            Transport::Udp,
            &mut out,
        ));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(
            resp.get::<OtherAddress>(),
            Some(Ok(OtherAddress(addr("192.0.2.1:3478"))))
        );
    }

    #[test]
    fn response_port_changes_only_the_port() {
        let svc = discovery();
        let req = request(|b| b.add(&ResponsePort(6000)).unwrap());
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let r = reply(svc.handle(
            &msg,
            addr("192.0.2.1:3478"),
            addr("198.51.100.7:5000"),
            Transport::Udp,
            &mut out,
        ));
        assert_eq!(r.to, addr("198.51.100.7:6000"));
    }

    #[test]
    fn change_request_over_tcp_is_a_bad_request() {
        let svc = discovery();
        let req = request(|b| {
            b.add(&ChangeRequest {
                change_ip: true,
                change_port: false,
            })
            .unwrap()
        });
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 1500];
        let r = reply(svc.handle(
            &msg,
            addr("192.0.2.1:3478"),
            addr("198.51.100.7:5000"),
            Transport::Tcp,
            &mut out,
        ));
        let resp = Message::parse(&out[..r.len]).unwrap();
        assert_eq!(resp.get::<ErrorCode<'_>>().unwrap().unwrap().code, 400);
        assert_eq!(r.from, addr("192.0.2.1:3478"));
    }

    #[test]
    fn padding_is_never_longer_than_the_requests_own() {
        let svc = discovery();
        let mut out = [0u8; 2048];
        for asked in [0usize, 8, 500, 1200, 4000] {
            let mut buf = vec![0u8; 4200];
            let mut b =
                MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
            b.add(&Padding(asked)).unwrap();
            let n = b.finish();
            let msg = Message::parse(&buf[..n]).unwrap();
            let r = reply(svc.handle(
                &msg,
                addr("192.0.2.1:3478"),
                addr("198.51.100.7:5000"),
                Transport::Udp,
                &mut out,
            ));
            let resp = Message::parse(&out[..r.len]).unwrap();
            let echoed = resp.get::<Padding>().map(|p| p.unwrap().0).unwrap_or(0);
            assert!(echoed <= asked.min(1200), "asked {asked}, echoed {echoed}");
            assert!(r.len <= n + 100, "response {} for request {n}", r.len);
        }
    }
}
