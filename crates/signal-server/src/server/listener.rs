//! The accept loop: every TCP connection to the signalling port is counted from `accept` to its
//! last byte (plain HTTP, post-box long-polls and upgraded WebSockets alike) against a global
//! cap and a per-IP cap, and served by hyper with a request-head deadline.
//!
//! Caps are checked at accept, before any HTTP is parsed, so the key is the TCP peer: there are no
//! `X-Forwarded-For` headers yet. A peer inside `trusted_proxies` carries many clients, so it is
//! exempt from the per-IP cap (it still counts against the global cap); the per-IP join limit,
//! which runs after the headers were read, keys on the forwarded client.
//!
//! A refused connection is closed at once (no HTTP answer: writing one would let a flood of
//! refused connections cost us write buffers) and counted in
//! `floe_signal_connections_refused_total{reason="per_ip"|"global"}`.
//!
//! The counting guard lives inside the connection's IO object ([`Counted`]), which hyper moves
//! into the upgraded WebSocket: a connection's slot is given back when its socket is dropped,
//! whatever it was used for.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use floe_turn::policy::Cidr;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service as _;

/// The connection limits of the listener.
#[derive(Debug, Clone)]
pub(crate) struct ListenerLimits {
    /// Open connections on this listener.
    pub(crate) max_connections: usize,
    /// Open connections per TCP peer address (trusted proxies exempt).
    pub(crate) max_connections_per_ip: usize,
    /// Peers exempt from the per-IP cap (`trusted_proxies`).
    pub(crate) trusted_proxies: Vec<Cidr>,
    /// Time allowed for a complete request head, from the moment the server waits for one: a
    /// new connection's first request, and each next request on a kept-alive connection (so it
    /// is also the keep-alive idle deadline).
    pub(crate) header_timeout: Duration,
}

/// Open connections, overall and per peer address.
#[derive(Debug)]
pub(crate) struct ConnTracker {
    /// The caps, replaced by a configuration reload (read once per accept).
    limits: RwLock<ListenerLimits>,
    /// [`ListenerLimits::header_timeout`] as started (a reload does not change it).
    header_timeout: Duration,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Global,
    /// `max_connections_per_ip` are open from this address.
    PerIp,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Global => "global",
            Refusal::PerIp => "per_ip",
        }
    }
}

impl ConnTracker {
    pub(crate) fn new(limits: ListenerLimits) -> Arc<Self> {
        Arc::new(Self {
            header_timeout: limits.header_timeout,
            limits: RwLock::new(limits),
            state: Mutex::new(Counts::default()),
        })
    }

    /// New caps and trusted proxies for the next accepted connection (a configuration reload);
    /// open connections stay, even above a lowered cap.
    pub(crate) fn set_limits(&self, max_connections: usize, max_per_ip: usize, proxies: Vec<Cidr>) {
        let mut l = self.limits.write().unwrap_or_else(PoisonError::into_inner);
        l.max_connections = max_connections;
        l.max_connections_per_ip = max_per_ip;
        l.trusted_proxies = proxies;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent counts.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection from `ip`, or says why it is refused.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let ip = ip.to_canonical();
        let (max_total, max_per_ip, exempt) = {
            let l = self.limits.read().unwrap_or_else(PoisonError::into_inner);
            let exempt = l.trusted_proxies.iter().any(|c| c.contains(ip));
            (l.max_connections, l.max_connections_per_ip, exempt)
        };
        let mut s = self.lock();
        if s.total >= max_total {
            return Err(Refusal::Global);
        }
        let n = s.per_ip.get(&ip).copied().unwrap_or(0);
        if !exempt && n >= max_per_ip {
            return Err(Refusal::PerIp);
        }
        s.total += 1;
        s.per_ip.insert(ip, n + 1);
        let total = s.total;
        drop(s);
        metrics::gauge!("floe_signal_tcp_connections").set(total as f64);
        Ok(ConnGuard {
            tracker: self.clone(),
            ip,
        })
    }

    /// Open connections.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().total
    }
}

/// One counted connection; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    tracker: Arc<ConnTracker>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut s = self.tracker.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
        let total = s.total;
        drop(s);
        metrics::gauge!("floe_signal_tcp_connections").set(total as f64);
    }
}

/// A TCP stream that holds its connection's slot until it is dropped (with the upgraded
/// WebSocket, if it became one).
#[derive(Debug)]
pub(crate) struct Counted {
    stream: TcpStream,
    _guard: ConnGuard,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How long the accept loop pauses after an accept error (out of file descriptors, above all),
/// as axum's and hyper's loops do: retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, runs
/// `on_shutdown`, asks every HTTP connection to finish its request and close, and returns.
/// Upgraded WebSockets are not waited for here (the caller drains them).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tracker: Arc<ConnTracker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let (close_tx, close_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "signalling: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let guard = match tracker.admit(peer.ip()) {
            Ok(g) => g,
            Err(reason) => {
                metrics::counter!(
                    "floe_signal_connections_refused_total",
                    "reason" => reason.as_str()
                )
                .increment(1);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = Counted {
            stream,
            _guard: guard,
        };
        tokio::spawn(connection(
            io,
            peer,
            router.clone(),
            tracker.header_timeout,
            close_rx.clone(),
        ));
    }
    drop(listener);
    drop(close_rx);
    on_shutdown.await;
    let _ = close_tx.send(true);
    // Wait for the HTTP connections to finish (each holds a receiver), bounded.
    let _ = tokio::time::timeout(grace, close_tx.closed()).await;
}

async fn connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    mut close: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(req.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        metrics::counter!("floe_signal_http_timeouts_total", "kind" => "header")
                            .increment(1);
                    }
                    tracing::trace!(error = %e, "signalling: HTTP connection ended");
                }
                break;
            }
            r = close.wait_for(|c| *c), if !closing => {
                closing = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    fn tracker(global: usize, per_ip: usize, trusted: &[&str]) -> Arc<ConnTracker> {
        ConnTracker::new(ListenerLimits {
            max_connections: global,
            max_connections_per_ip: per_ip,
            trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(),
            header_timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn caps_hold_per_ip_and_globally_and_slots_come_back() {
        let t = tracker(3, 2, &[]);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        let g1 = t.admit(a).unwrap();
        let _g2 = t.admit(a).unwrap();
        assert_eq!(t.admit(a).unwrap_err(), Refusal::PerIp);
        let _g3 = t.admit(b).unwrap();
        assert_eq!(
            t.admit("127.0.0.3".parse().unwrap()).unwrap_err(),
            Refusal::Global
        );
        drop(g1);
        assert_eq!(t.open(), 2);
        let _g4 = t.admit(a).unwrap();
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_ip_cap_only() {
        let t = tracker(3, 1, &["10.0.0.0/8"]);
        let p: IpAddr = "10.1.2.3".parse().unwrap();
        let _g: Vec<_> = (0..3).map(|_| t.admit(p).unwrap()).collect();
        assert_eq!(t.admit(p).unwrap_err(), Refusal::Global);
    }
}
