//! floe's Rust WebRTC peer.
//!
//! Joins a room through floe's signalling (WebSocket), gathers host, server-reflexive (STUN) and
//! relayed candidates (floe's own sans-IO TURN client, [`floe_turn::client`], over UDP, TCP or
//! TLS), and runs ICE (RFC 8445), DTLS and SCTP with [str0m] to open the two data channels that
//! `web/floe.js` uses: `chat` (negotiated id 0) and `file` (negotiated id 1). Browsers and other
//! floe peers are interchangeable on the other side.
//!
//! ```no_run
//! # async fn f() -> Result<(), floe_peer::PeerError> {
//! use floe_peer::{connect, Chan, PeerEvent, PeerOptions, SignalOptions};
//! let opts = PeerOptions::new(SignalOptions {
//!     url: "http://127.0.0.1:8080".into(),
//!     room: "letters".into(),
//!     peer: None,
//!     token: None,
//!     ca_file: None,
//! });
//! let mut conn = connect(opts).await?;
//! while let Some(ev) = conn.next_event().await {
//!     if let PeerEvent::ChannelOpen(Chan::Chat) = ev {
//!         conn.send(Chan::Chat, false, b"hello".to_vec()).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Layout: [`signal`] (signalling client), [`ice_servers`] (STUN/TURN URLs), [`pair`] (naming the
//! selected pair), [`transfer`] (the file protocol, no IO), `session` (the event loop that owns
//! the sockets and the str0m `Rtc`).

mod core;
pub mod ice_servers;
pub mod pair;
mod session;
pub mod signal;
pub mod tls;
pub mod transfer;

pub use crate::core::{Chan, CoreConfig, Output, PeerCore, PeerEvent};
pub use pair::{CandidateType, LocalCandidate, SelectedPair, Via};
pub use session::{connect, Connection, PeerOptions, Sender};
pub use signal::SignalOptions;

/// Errors of the peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Bad options or URLs.
    #[error("configuration: {0}")]
    Config(String),
    /// Signalling failed (connection, protocol).
    #[error("signalling: {0}")]
    Signal(String),
    /// The signalling server refused the join.
    #[error("the signalling server refused: {code}: {message}")]
    Refused {
        /// Stable error code (docs/signalling.md §4).
        code: String,
        /// Human text.
        message: String,
    },
    /// A socket error.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// Timed out waiting for something.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection is closed.
    #[error("connection closed: {0}")]
    Closed(String),
}
