//! Blocking connections to a STUN/TURN server (UDP, TCP, TLS) and a driver that runs floe's
//! sans-IO TURN client over one of them with the wall clock, for `floe doctor`.

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_peer::ice_servers::TurnTransport;
use floe_turn::client::{StreamDecoder, TurnClient, TurnClientConfig, TurnEvent};
use rustls::pki_types::ServerName;

/// How a connection attempt failed, in terms an operator can act on.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP: the host answered with a reset: nothing listens on the port.
    Refused,
    /// TCP: no answer at all: a firewall drops the packets, or the host is unreachable.
    TimedOut,
    /// The TLS handshake failed; the rustls error says why (certificate name, expiry, issuer).
    Tls(rustls::Error),
    /// Any other socket error.
    Io(io::Error),
}

/// A TLS stream to the server.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One connection to the server.
pub enum Conn {
    /// A UDP socket and the server's address.
    Udp(UdpSocket, SocketAddr),
    /// A TCP stream with its STUN/ChannelData framing.
    Tcp(TcpStream, StreamDecoder),
    /// A TLS stream with its framing.
    Tls(Box<TlsStream>, StreamDecoder),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Udp(..) => "Conn::Udp",
            Conn::Tcp(..) => "Conn::Tcp",
            Conn::Tls(..) => "Conn::Tls",
        })
    }
}

fn tcp_connect(server: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    TcpStream::connect_timeout(&server, timeout).map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectError::TimedOut,
        _ => ConnectError::Io(e),
    })
}

impl Conn {
    /// Connects to `server` over `transport`; for TLS, checks the certificate against `host`
    /// with `tls`.
    pub fn connect(
        server: SocketAddr,
        transport: TurnTransport,
        host: &str,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        match transport {
            TurnTransport::Udp => {
                let local: SocketAddr = if server.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .map_err(|_| ConnectError::Io(io::ErrorKind::InvalidInput.into()))?;
                let socket = UdpSocket::bind(local).map_err(ConnectError::Io)?;
                Ok(Conn::Udp(socket, server))
            }
            TurnTransport::Tcp => Ok(Conn::Tcp(
                tcp_connect(server, timeout)?,
                StreamDecoder::new(),
            )),
            TurnTransport::Tls => {
                let mut tcp = tcp_connect(server, timeout)?;
                tcp.set_read_timeout(Some(timeout))
                    .map_err(ConnectError::Io)?;
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| ConnectError::Io(io::ErrorKind::InvalidInput.into()))?;
                let mut conn =
                    rustls::ClientConnection::new(tls.clone(), name).map_err(ConnectError::Tls)?;
                while conn.is_handshaking() {
                    if let Err(e) = conn.complete_io(&mut tcp) {
                        return Err(match e.into_inner() {
                            Some(inner) => match inner.downcast::<rustls::Error>() {
                                Ok(tls) => ConnectError::Tls(*tls),
                                Err(other) => ConnectError::Io(io::Error::other(other)),
                            },
                            None => ConnectError::TimedOut,
                        });
                    }
                }
                Ok(Conn::Tls(
                    Box::new(rustls::StreamOwned::new(conn, tcp)),
                    StreamDecoder::new(),
                ))
            }
        }
    }

    /// The server's certificate chain (TLS only), leaf first.
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        match self {
            Conn::Tls(s, _) => s
                .conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(s, to) => s.send_to(bytes, *to).map(|_| ()),
            Conn::Tcp(s, _) => s.write_all(bytes),
            Conn::Tls(s, _) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }

    /// Waits up to `wait` for input; returns the complete frames (datagrams over UDP). A
    /// closed stream or a framing error is an error.
    fn recv(&mut self, wait: Duration) -> io::Result<Vec<Vec<u8>>> {
        let mut buf = vec![0u8; 65_536];
        let timed_out = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        };
        match self {
            Conn::Udp(s, server) => {
                s.set_read_timeout(Some(wait))?;
                match s.recv_from(&mut buf) {
                    // Only the server's datagrams belong to the client.
                    Ok((n, from)) if from == *server => Ok(vec![buf[..n].to_vec()]),
                    Ok(_) => Ok(Vec::new()),
                    Err(e) if timed_out(&e) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
            Conn::Tcp(s, decoder) => {
                s.set_read_timeout(Some(wait))?;
                read_frames(s, decoder, &mut buf)
            }
            Conn::Tls(s, decoder) => {
                s.sock.set_read_timeout(Some(wait))?;
                read_frames(s, decoder, &mut buf)
            }
        }
    }
}

/// One read from a stream into `decoder`; the complete frames. A timeout is no frames; a closed
/// stream is an error.
fn read_frames(
    stream: &mut impl std::io::Read,
    decoder: &mut StreamDecoder,
    buf: &mut [u8],
) -> io::Result<Vec<Vec<u8>>> {
    let n = match stream.read(buf) {
        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    decoder.push(&buf[..n]);
    frames(decoder)
}

fn frames(decoder: &mut StreamDecoder) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some(f) = decoder
        .next_frame()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
    {
        out.push(f.to_vec());
    }
    Ok(out)
}

/// floe's TURN client driven over a [`Conn`] with the wall clock.
#[derive(Debug)]
pub struct Probe {
    conn: Conn,
    /// The client.
    pub client: TurnClient,
    /// Every event so far.
    pub events: Vec<TurnEvent>,
    /// Relayed data received: (peer, payload).
    pub received: Vec<(SocketAddr, Vec<u8>)>,
}

impl Probe {
    /// A client for `server` with these credentials over `conn` (not started until driven).
    pub fn new(conn: Conn, server: SocketAddr, username: &str, password: &str) -> Probe {
        let mut cfg = TurnClientConfig::new(server, username, password, rand::random());
        cfg.stream = !matches!(conn, Conn::Udp(..));
        cfg.software = Some(concat!("floe-doctor ", env!("CARGO_PKG_VERSION")).to_owned());
        // The probe is short: no need for a long allocation.
        cfg.lifetime = Duration::from_secs(120);
        Probe {
            conn,
            client: TurnClient::new(cfg, Instant::now()),
            events: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Runs the client until `done` holds or `timeout` passes; whether `done` held. A socket
    /// error ends the run early (returned).
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Probe) -> bool,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(bytes) = self.client.poll_transmit() {
                self.conn.send(&bytes)?;
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let wait = self
                .client
                .poll_timeout()
                .map_or(Duration::from_millis(50), |t| {
                    t.saturating_duration_since(now)
                })
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            for frame in self.conn.recv(wait)? {
                if let Some((peer, data)) = self.client.handle_input(&frame, Instant::now()) {
                    self.received.push((peer, data.to_vec()));
                }
            }
            let now = Instant::now();
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
        }
    }

    /// Releases the allocation (best effort, bounded).
    pub fn release(&mut self) {
        self.client.release(Instant::now());
        let _ = self.run_until(Duration::from_secs(2), |p| {
            p.events.iter().any(|e| matches!(e, TurnEvent::Released))
        });
    }
}
