//! Host sockets: ICE server resolution, local address discovery and UDP socket readers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::ice_servers::IceServer;
use crate::signal;

use super::Net;

/// Resolves ICE server host names (first address of each).
pub(super) async fn resolve_servers(servers: &[IceServer]) -> Vec<(SocketAddr, IceServer)> {
    let mut out = Vec::new();
    for s in servers {
        let (host, port) = match s {
            IceServer::Stun { host, port } | IceServer::Turn { host, port, .. } => (host, *port),
        };
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, port)),
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut a| a.next()),
        };
        match addr {
            Some(a) => out.push((a, s.clone())),
            None => tracing::warn!("cannot resolve ICE server {host}"),
        }
    }
    out
}

pub(super) async fn signal_ip(url: &str) -> Option<SocketAddr> {
    let (host, port) = signal::host_port(&signal::ws_url(url).ok()?).ok()?;
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
    addrs.next()
}

/// The local addresses the kernel would use to reach `targets` (a connected UDP socket sends
/// nothing; it only consults the routing table). These are our host candidates' IPs.
pub(super) fn local_ips(targets: impl Iterator<Item = SocketAddr>) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for t in targets {
        let bind: SocketAddr = if t.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = std::net::UdpSocket::bind(bind) else {
            continue;
        };
        if s.connect(t).is_err() {
            continue;
        }
        if let Ok(local) = s.local_addr() {
            if !local.ip().is_unspecified() && !ips.contains(&local.ip()) {
                ips.push(local.ip());
            }
        }
    }
    ips
}

pub(super) fn spawn_udp_reader(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Net>,
    wrap: impl Fn(SocketAddr, Vec<u8>) -> Net + Send + 'static,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if tx.send(wrap(from, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // ICMP port unreachable surfaces as ECONNREFUSED on Linux; keep reading.
                    tracing::trace!("udp recv: {e}");
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        }
    });
}
