//! floe-turn-server: the STUN/TURN IO shell around floe-turn's sans-IO state machines.
//!
//! [`turn`] runs the TURN relay and the STUN Binding service (with RFC 5780 discovery) on UDP,
//! TCP and TLS listeners, one shard thread per worker. [`stun_client`] is the client side used by
//! `floe stun`. The binary (`crates/floe`) owns the configuration parsing and logging.

pub mod net;
pub mod stun_client;
pub mod tls;
pub mod turn;
