//! TCP and TLS links to a TURN server: connect, then move framed messages both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use floe_turn::client::StreamDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Net;

#[derive(Debug, Clone)]
pub(super) struct TlsTarget {
    pub(super) name: String,
    pub(super) ca_file: Option<std::path::PathBuf>,
}

/// Connects to a TURN server over TCP (and TLS), then moves frames both ways.
pub(super) fn spawn_turn_stream(
    idx: usize,
    server: SocketAddr,
    tls: Option<TlsTarget>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::Sender<Net>,
) {
    tokio::spawn(async move {
        let down = |reason: String| Net::TurnDown { idx, reason };
        let tcp = match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = tx.send(down(format!("connect: {e}"))).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(down("connect timed out".into())).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let reason = match tls {
            None => pump_stream(idx, tcp, &mut rx, &tx).await,
            Some(t) => match tls_connect(tcp, &t).await {
                Ok(s) => pump_stream(idx, s, &mut rx, &tx).await,
                Err(e) => e,
            },
        };
        let _ = tx.send(down(reason)).await;
    });
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    t: &TlsTarget,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = crate::tls::client_config(t.ca_file.as_deref()).map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(t.name.clone())
        .map_err(|e| format!("TLS name {}: {e}", t.name))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS: {e}"))
}

async fn pump_stream<S>(
    idx: usize,
    stream: S,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    tx: &mpsc::Sender<Net>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let mut framer = StreamDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { return "closed".into() };
                if let Err(e) = w.write_all(&out).await {
                    return format!("write: {e}");
                }
            }
            n = r.read(&mut buf) => {
                let n = match n {
                    Ok(0) => return "closed by server".into(),
                    Ok(n) => n,
                    Err(e) => return format!("read: {e}"),
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => {
                            if tx.send(Net::Turn { idx, data: frame.to_vec() }).await.is_err() {
                                return "closed".into();
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return "the server sent something that is not STUN or ChannelData".into(),
                    }
                }
            }
        }
    }
}
