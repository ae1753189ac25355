//! floe-turn: the sans-IO STUN/TURN server state machine, and a sans-IO TURN client
//! ([`client`]).
//!
//! No sockets, no tokio, no clock: every entry point takes the current time as an argument.

pub mod binding;
pub mod client;
pub mod credentials;
pub mod nonce;
pub mod policy;
pub mod quota;
pub mod ratelimit;
pub mod rest;
pub mod server;
