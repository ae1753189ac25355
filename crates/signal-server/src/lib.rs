//! floe-signal-server: the IO shell around the [`floe_signal`] hub.
//!
//! The sans-IO hub sits behind a mutex (see `actor`): connection tasks handle their frames
//! under it, a hub task its timers and other commands; `actor::now` is the one function that
//! reads the clock for the hub and for `/v1/ice-servers` (the delivery histogram,
//! `histograms.rs`, times its messages with `Instant` readings of its own, which never reach the
//! hub). axum serves:
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/ws` | the signalling WebSocket (JSON text frames, protocol v1) |
//! | `POST /v1/rest/join` | HTTP post box: join (answers `welcome`) |
//! | `POST /v1/rest/sessions/{session}/messages` | post box: send one message |
//! | `GET /v1/rest/sessions/{session}/messages?after=N&wait=S` | post box: cursor + long-poll |
//! | `DELETE /v1/rest/sessions/{session}` | post box: leave |
//! | `GET /v1/ice-servers` | STUN/TURN list with minted TURN credentials |
//! | `GET /`, `GET /floe.js` | the demo page and the browser client module |
//! | `GET /metrics` | Prometheus text from the binary's render callback |
//! | `GET /healthz` | liveness |
//!
//! Entry points: [`run`] (mini-redis style: config, listener, shutdown future) and
//! [`SignalServer`] for the optional metrics hook. With `redis_url` set, rooms are shared with
//! other nodes through Redis (`redis_bus`: Lua scripts for membership, pub/sub for events).
//! Without it, in-process [`floe_signal::bus::LocalBus`].
//! The client IP comes from the socket peer, or from `X-Forwarded-For`/`Forwarded` when the peer
//! is a `--trusted-proxy` (`client_ip`); `origin` decides which web pages may use the server
//! (the `Origin` check and CORS, `--allow-origin`).
//! Flags: [`SignalArgs`]; config file section:
//! [`SignalConfig`]; a running server's settings are reloaded through [`SignalAdmin`]
//! ([`reload`]). docs/signalling.md documents the protocol.
#![forbid(unsafe_code)]

mod actor;
pub mod admin;
pub mod assets;
mod client_ip;
pub mod config;
pub mod config_check;
pub mod fuzzing;
mod histograms;
mod origin;
mod outbox;
mod redis_bus;
pub mod reload;
mod server;

pub use admin::SignalAdmin;
pub use config::{ConfigError, JwtAlgorithm, SignalArgs, SignalConfig};
pub use histograms::render_histograms;
pub use server::{run, MetricsRender, ServerError, SignalServer};
