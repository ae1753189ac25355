//! floe-signal: the signalling protocol and the sans-IO room hub.
//!
//! - [`proto`]: the versioned JSON wire types (`/v1/ws` and the HTTP post box) and their parser.
//! - [`hub`]: the room hub state machine: connections, sessions, per-peer mailboxes with
//!   sequence numbers, acknowledgements and resume, heartbeats, limits, held candidates, roles.
//! - [`bus`]: the boundary between a node and the room directory, with the in-process
//!   [`bus::LocalBus`] as default.
//! - [`auth`]: JWT verification (HS256, EdDSA, ES256) and the development-mode rule.
//! - [`ice`]: the `iceServers` list with per-peer TURN REST credentials.
//!
//! No async runtime, no sockets, no clock: time comes in as [`hub::Now`], randomness from an injected RNG.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod error;
pub mod fuzzing;
pub mod hub;
pub mod ice;
pub mod ids;
pub mod mailbox;
pub mod proto;

pub use error::ErrorCode;
pub use hub::{Hub, HubConfig, HubStats, Now, Output, PostBoxPoll};
pub use ids::{ConnId, PeerId, ResumeToken, RoomId, SessionId, TenantId};
