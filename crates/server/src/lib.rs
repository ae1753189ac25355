//! floe-server: the IO shells around floe's sans-IO protocol crates.
//!
//! [`stun`] runs the STUN Binding service (with RFC 5780 discovery) on UDP and TCP listeners,
//! one SO_REUSEPORT UDP socket per worker. [`stun_client`] is the client side used by
//! `floe stun`. The binary (`crates/floe`) owns the clock-free configuration parsing and logging.

pub mod net;
pub mod stun;
pub mod stun_client;
pub mod tls;
pub mod turn;
