//! floe-turn-server: the STUN/TURN IO shell around floe-turn's sans-IO state machines.
//!
//! [`turn`] runs the TURN relay and the STUN Binding service (with RFC 5780 discovery) on UDP,
//! TCP and TLS listeners, one shard thread per worker. [`stun_client`] is the client side used by
//! `floe stun`. [`config`] owns the STUN/TURN flags and config-file keys and builds the
//! [`turn::TurnShellConfig`]; the binary (`crates/floe`) wires them and sets up logging.

pub mod config;
pub mod config_check;
pub mod host_ips;
pub mod net;
pub mod stun_client;
pub mod tls;
pub mod turn;
