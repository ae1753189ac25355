//! A STUN client: Binding requests with retransmission (RFC 8489 §6.2.1) and RFC 5780 NAT
//! behaviour discovery (§4.3 mapping, §4.4 filtering). Blocking std sockets: this runs in the
//! `floe stun` command and in tests, never inside the server.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use floe_stun::attr::{ChangeRequest, ErrorCode, OtherAddress, ResponseOrigin, XorMappedAddress};
use floe_stun::{Class, Message, MessageBuilder, Method, TransactionId};

/// RFC 8489 §6.2.1: the initial retransmission timeout.
const INITIAL_RTO: Duration = Duration::from_millis(500);

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// No response within the timeout.
    #[error("no response from {0} within the timeout")]
    Timeout(SocketAddr),
    /// The server answered with an error response.
    #[error("server answered {code} {reason}")]
    ErrorResponse {
        /// The error code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The response lacked XOR-MAPPED-ADDRESS or was malformed.
    #[error("invalid response: {0}")]
    InvalidResponse(&'static str),
    /// RFC 5780 discovery needs OTHER-ADDRESS, which the server did not send.
    #[error("the server does not support RFC 5780 (no OTHER-ADDRESS in its response)")]
    NoDiscoverySupport,
}

/// What a Binding response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingResult {
    /// XOR-MAPPED-ADDRESS: our address as the server saw it.
    pub mapped: SocketAddr,
    /// OTHER-ADDRESS (RFC 5780), when the server has one.
    pub other: Option<SocketAddr>,
    /// RESPONSE-ORIGIN (RFC 5780), when present.
    pub origin: Option<SocketAddr>,
    /// Where the response came from, as seen by our socket.
    pub source: SocketAddr,
}

fn random_tid() -> TransactionId {
    TransactionId(rand::random())
}

fn build_request(
    tid: TransactionId,
    change: Option<ChangeRequest>,
) -> Result<Vec<u8>, ClientError> {
    let mut buf = vec![0u8; 128];
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, tid)
        .map_err(|_| ClientError::InvalidResponse("build"))?;
    if let Some(change) = change {
        b.add(&change)
            .map_err(|_| ClientError::InvalidResponse("build"))?;
    }
    b.add_fingerprint()
        .map_err(|_| ClientError::InvalidResponse("build"))?;
    let n = b.finish();
    buf.truncate(n);
    Ok(buf)
}

fn read_response(
    packet: &[u8],
    tid: TransactionId,
    source: SocketAddr,
) -> Option<Result<BindingResult, ClientError>> {
    let msg = Message::parse(packet).ok()?;
    if msg.transaction_id() != tid || msg.method() != Method::BINDING {
        return None;
    }
    match msg.class() {
        Class::SuccessResponse => Some(success(&msg, source)),
        Class::ErrorResponse => {
            let (code, reason) = match msg.get::<ErrorCode<'_>>() {
                Some(Ok(e)) => (e.code, e.reason.to_owned()),
                _ => (0, "malformed ERROR-CODE".to_owned()),
            };
            Some(Err(ClientError::ErrorResponse { code, reason }))
        }
        _ => None,
    }
}

fn success(msg: &Message<'_>, source: SocketAddr) -> Result<BindingResult, ClientError> {
    let mapped = match msg.get::<XorMappedAddress>() {
        Some(Ok(XorMappedAddress(a))) => a,
        _ => return Err(ClientError::InvalidResponse("no XOR-MAPPED-ADDRESS")),
    };
    Ok(BindingResult {
        mapped,
        other: msg.get::<OtherAddress>().and_then(Result::ok).map(|a| a.0),
        origin: msg
            .get::<ResponseOrigin>()
            .and_then(Result::ok)
            .map(|a| a.0),
        source,
    })
}

/// Sends a Binding request over UDP from `socket` to `server`, retransmitting with a doubling
/// RTO until `timeout` has passed (RFC 8489 §6.2.1).
pub fn binding_udp(
    socket: &UdpSocket,
    server: SocketAddr,
    change: Option<ChangeRequest>,
    timeout: Duration,
) -> Result<BindingResult, ClientError> {
    let tid = random_tid();
    let request = build_request(tid, change)?;
    let deadline = Instant::now() + timeout;
    let mut rto = INITIAL_RTO;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Timeout(server));
        }
        socket.send_to(&request, server)?;
        let resend_at = (now + rto).min(deadline);
        rto *= 2;
        while let Some(wait) = resend_at
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            socket.set_read_timeout(Some(wait))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(result) = read_response(&buf[..n], tid, from) {
                        return result;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP port unreachable from an earlier send: keep waiting for the deadline.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Sends a Binding request over TCP (RFC 8489 §6.2.2) and waits up to `timeout` for the answer.
pub fn binding_tcp(server: SocketAddr, timeout: Duration) -> Result<BindingResult, ClientError> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&server, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let tid = random_tid();
    stream.write_all(&build_request(tid, None)?)?;
    let mut header = [0u8; 20];
    stream.read_exact(&mut header)?;
    let len = Message::frame_len(&header).ok_or(ClientError::InvalidResponse("short header"))?;
    let mut msg = vec![0u8; len];
    msg[..20].copy_from_slice(&header);
    stream.read_exact(&mut msg[20..])?;
    read_response(&msg, tid, server)
        .unwrap_or(Err(ClientError::InvalidResponse("unexpected message")))
}

/// RFC 4787 / RFC 5780 §4.3–§4.4 behaviour of a NAT's mapping or filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// No NAT between client and server: the mapped address is the local address.
    NoNat,
    /// Endpoint-independent.
    EndpointIndependent,
    /// Address-dependent.
    AddressDependent,
    /// Address- and port-dependent.
    AddressAndPortDependent,
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Behaviour::NoNat => "no NAT (endpoint-independent)",
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        })
    }
}

/// The outcome of RFC 5780 discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatReport {
    /// The local address the tests were sent from.
    pub local: SocketAddr,
    /// The mapped address from test I.
    pub mapped: SocketAddr,
    /// The server's OTHER-ADDRESS.
    pub other: SocketAddr,
    /// Mapping behaviour (§4.3).
    pub mapping: Behaviour,
    /// Filtering behaviour (§4.4).
    pub filtering: Behaviour,
}

/// Runs RFC 5780 mapping (§4.3) and filtering (§4.4) discovery against `server` from `socket`.
/// `timeout` bounds each test; a filtering test that gets no answer takes the whole timeout.
pub fn discover_nat(
    socket: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<NatReport, ClientError> {
    let local = socket.local_addr()?;
    // Test I.
    let t1 = binding_udp(socket, server, None, timeout)?;
    let other = t1.other.ok_or(ClientError::NoDiscoverySupport)?;
    let no_nat = t1.mapped == local
        || (local.ip().is_unspecified()
            && t1.mapped.port() == local.port()
            && is_local_ip(t1.mapped));
    let mapping = if no_nat {
        Behaviour::NoNat
    } else {
        // Test II: the alternate IP, the primary port.
        let t2 = binding_udp(
            socket,
            SocketAddr::new(other.ip(), server.port()),
            None,
            timeout,
        )?;
        if t2.mapped == t1.mapped {
            Behaviour::EndpointIndependent
        } else {
            // Test III: the alternate IP and port.
            let t3 = binding_udp(socket, other, None, timeout)?;
            if t3.mapped == t2.mapped {
                Behaviour::AddressDependent
            } else {
                Behaviour::AddressAndPortDependent
            }
        }
    };
    let change = |change_ip, change_port| {
        Some(ChangeRequest {
            change_ip,
            change_port,
        })
    };
    // Filtering test II: answer from the other IP and port.
    let filtering = match binding_udp(socket, server, change(true, true), timeout) {
        Ok(_) if no_nat => Behaviour::NoNat,
        Ok(_) => Behaviour::EndpointIndependent,
        Err(ClientError::Timeout(_)) => {
            // Filtering test III: answer from the other port only.
            match binding_udp(socket, server, change(false, true), timeout) {
                Ok(_) => Behaviour::AddressDependent,
                Err(ClientError::Timeout(_)) => Behaviour::AddressAndPortDependent,
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(NatReport {
        local,
        mapped: t1.mapped,
        other,
        mapping,
        filtering,
    })
}

/// Whether `addr`'s IP belongs to this host (a socket can bind it).
fn is_local_ip(addr: SocketAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}
