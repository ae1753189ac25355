//! The HTTP surface: routes, the WebSocket connection task, the HTTP post box, ICE servers,
//! static files, metrics, and the run loop with graceful shutdown.
//!
//! `mod.rs` (the server, its run loop, shared state and error answers) · `router.rs` (routes,
//! CORS, static files, metrics) · `websocket.rs` · `post_box.rs` · `ice_servers.rs`.

mod ice_servers;
mod listener;
pub(crate) mod live;
mod post_box;
mod router;
mod websocket;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_signal::auth::Auth;
use floe_signal::ice::IceConfig;
use floe_signal::proto::{ErrorBody, ServerMsg};
use floe_signal::ErrorCode;
use tokio::sync::{watch, Semaphore};

use floe_signal::bus::LocalBus;
use floe_turn::policy::Cidr;

use crate::actor::{self, HubHandle, NodeBus};
use crate::admin::SignalAdmin;
use crate::client_ip::client_ip;
use crate::config::{ConfigError, SignalConfig};
use crate::origin::OriginPolicy;
use crate::redis_bus::{self, RedisSettings};

use self::listener::{ConnTracker, ListenerLimits};
use self::live::{Resizable, Swap};
use self::router::router;

/// Renders the Prometheus text exposition for `GET /metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is unusable.
    #[error("signalling configuration: {0}")]
    Config(#[from] ConfigError),
    /// Serving failed.
    #[error("signalling server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The signalling server: a configuration plus optional hooks. Build it, then [`Self::run`].
pub struct SignalServer {
    config: SignalConfig,
    metrics: Option<MetricsRender>,
    admin: SignalAdmin,
}

impl std::fmt::Debug for SignalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalServer")
            .field("config", &self.config)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl SignalServer {
    /// A server with `config`.
    pub fn new(config: SignalConfig) -> Self {
        Self {
            config,
            metrics: None,
            admin: SignalAdmin::default(),
        }
    }

    /// The operator's handle (list and end sessions, drain); it answers while [`Self::run`]
    /// runs.
    pub fn admin(&self) -> SignalAdmin {
        self.admin.clone()
    }

    /// Serves `GET /metrics` with `render` (the binary installs the Prometheus recorder and
    /// passes its handle's `render`). Without it `/metrics` answers 404.
    pub fn with_metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }

    /// Serves on `listener` until `shutdown` completes, then tells every client to reconnect
    /// elsewhere (`go_away`), closes the connections and returns once they drained (bounded by
    /// `shutdown_grace_ms`).
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let hub_config = self.config.hub_config()?;
        let auth = hub_config.auth.clone();
        let addr = listener.local_addr()?;
        if auth.is_production() {
            tracing::info!(%addr, "signalling: production mode, every join needs a JWT");
        } else {
            tracing::warn!(
                %addr,
                "signalling: DEVELOPMENT MODE: anonymous joins accepted from localhost only; \
                 set --jwt-secret or --jwt-public-key for production"
            );
        }
        let (bus, bus_events, redis) = match &self.config.redis_url {
            None => (NodeBus::Local(LocalBus::new()), None, None),
            Some(url) => {
                let settings = RedisSettings {
                    url: url.clone(),
                    node_ttl: Duration::from_secs(self.config.redis_node_ttl_secs),
                };
                let (bus, events, driver) = redis_bus::spawn(settings)
                    .map_err(|e| ServerError::Config(ConfigError::RedisUrl(e.0)))?;
                (NodeBus::Redis(bus), Some(events), Some(driver))
            }
        };
        let (hub, hub_task) = actor::spawn(
            hub_config,
            bus,
            bus_events,
            self.config.max_rest_waiters_per_session,
        );
        let nofile = crate::config::open_files_limit();
        let max_connections = self.config.max_connections_for(nofile);
        let tracker = ConnTracker::new(ListenerLimits {
            max_connections,
            max_connections_per_ip: self.config.max_connections_per_ip_for(max_connections),
            trusted_proxies: self.config.trusted_proxies.clone(),
            header_timeout: Duration::from_secs(self.config.http_header_timeout_secs),
        });
        tracing::info!(
            max_connections,
            open_files_limit = nofile,
            "signalling: connection limits"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let ws_slots = Arc::new(Resizable::new(self.config.max_ws_connections));
        let waiters = Arc::new(Resizable::new(self.config.max_rest_waiters));
        let state = app_state(
            &self.config,
            hub.clone(),
            (ws_slots.semaphore.clone(), waiters.semaphore.clone()),
            self.metrics,
            stop_rx,
        )?;
        self.admin.attach(
            hub.clone(),
            self.config.redis_url.is_some(),
            LiveServer {
                state: state.clone(),
                tracker: tracker.clone(),
                ws_slots: ws_slots.clone(),
                waiters,
                nofile,
                config: std::sync::Mutex::new(self.config.clone()),
            },
        );
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let app = router(state);
        let on_shutdown = async move {
            tracing::info!("signalling: shutting down, telling clients to reconnect elsewhere");
            let _ = stop_tx.send(true);
            hub.shutdown(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX))
                .await;
            // Multi-node: orphan this node's sessions in Redis so that clients resume them on
            // another node.
            if let Some(driver) = &redis {
                driver.shutdown(grace).await;
            }
        };
        listener::serve(listener, app, tracker, shutdown, on_shutdown, grace).await;
        // WebSocket tasks outlive hyper's graceful shutdown; wait for them to flush their close.
        let max = u32::try_from(ws_slots.size()).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, ws_slots.semaphore.acquire_many(max)).await;
        hub_task.abort();
        Ok(())
    }
}

/// What a configuration reload reaches in a running server ([`crate::reload`]).
pub(crate) struct LiveServer {
    pub(crate) state: AppState,
    pub(crate) tracker: Arc<ConnTracker>,
    /// `max_ws_connections` permits.
    pub(crate) ws_slots: Arc<Resizable>,
    /// `max_rest_waiters` permits.
    pub(crate) waiters: Arc<Resizable>,
    /// The open-files limit found at start (for the default `max_connections`).
    pub(crate) nofile: Option<u64>,
    /// The configuration in force.
    pub(crate) config: std::sync::Mutex<SignalConfig>,
}

/// The shared state of the handlers: everything but the hub and the semaphores (WebSocket
/// connections, parked long-polls) comes from `config`.
fn app_state(
    config: &SignalConfig,
    hub: HubHandle,
    (conn_limit, post_box_waiters): (Arc<Semaphore>, Arc<Semaphore>),
    metrics: Option<MetricsRender>,
    stop: watch::Receiver<bool>,
) -> Result<AppState, ConfigError> {
    let hub_config = config.hub_config()?;
    Ok(AppState(Arc::new(Inner {
        hub,
        auth: Swap::new(hub_config.auth),
        ice: Swap::new(hub_config.ice),
        conn_limit,
        post_box_waiters,
        poll_wait_cap: config.poll_wait_cap(),
        request_timeout: config.poll_wait_cap()
            + Duration::from_secs(config.http_request_timeout_secs),
        outbound_queue: config.ws_outbound_queue,
        outbound_max_bytes: config.ws_outbound_max_bytes,
        trusted_proxies: Swap::new(config.trusted_proxies.clone()),
        origins: Swap::new(config.origin_policy()?),
        max_message_bytes: config.max_message_bytes,
        metrics,
        stop,
    })))
}

/// The routes over a fresh in-process hub task, as [`SignalServer::run`] serves them but without
/// a listener: for the request-path fuzz checks ([`crate::fuzzing`]). Call inside a tokio runtime.
pub(crate) fn standalone_router(config: &SignalConfig) -> Result<axum::Router, ConfigError> {
    let hub_config = config.hub_config()?;
    let (hub, _task) = actor::spawn(
        hub_config,
        NodeBus::Local(LocalBus::new()),
        None,
        config.max_rest_waiters_per_session,
    );
    // The sender is dropped: `stop` reads false for ever, as in a server never shut down.
    let (_, stop) = watch::channel(false);
    let semaphores = (
        Arc::new(Semaphore::new(config.max_ws_connections)),
        Arc::new(Semaphore::new(config.max_rest_waiters)),
    );
    Ok(router(app_state(config, hub, semaphores, None, stop)?))
}

/// Runs the signalling server on `listener` until `shutdown` completes (see [`SignalServer`]).
pub async fn run(
    config: SignalConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    SignalServer::new(config).run(listener, shutdown).await
}

impl LiveServer {
    /// Puts a checked configuration in force for the next requests and connections
    /// (`hub` and `origins` were built from `config`): authorisation and ICE servers of
    /// `/v1/ice-servers`, allowed origins, trusted proxies, the connection caps and the
    /// semaphores. The hub gets its part separately.
    pub(crate) fn apply(
        &self,
        config: SignalConfig,
        hub: &floe_signal::hub::HubConfig,
        origins: OriginPolicy,
    ) {
        let inner = &self.state.0;
        inner.auth.set(hub.auth.clone());
        inner.ice.set(hub.ice.clone());
        inner.origins.set(origins);
        inner.trusted_proxies.set(config.trusted_proxies.clone());
        let max_connections = config.max_connections_for(self.nofile);
        self.tracker.set_limits(
            max_connections,
            config.max_connections_per_ip_for(max_connections),
            config.trusted_proxies.clone(),
        );
        self.ws_slots.resize(config.max_ws_connections);
        self.waiters.resize(config.max_rest_waiters);
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

/// The handlers' shared state. The settings a reload changes are behind a [`Swap`].
struct Inner {
    hub: HubHandle,
    auth: Swap<Auth>,
    ice: Swap<IceConfig>,
    conn_limit: Arc<Semaphore>,
    /// Parked post-box long-polls (config key `max_rest_waiters`).
    post_box_waiters: Arc<Semaphore>,
    /// Longest post-box long-poll.
    poll_wait_cap: Duration,
    /// Deadline of one non-WebSocket request: reading its body and answering
    /// (`http_request_timeout_secs` on top of the longest long-poll).
    request_timeout: Duration,
    /// Frames queued towards one WebSocket (`ws_outbound_queue`).
    outbound_queue: usize,
    /// Bytes queued towards one WebSocket (`ws_outbound_max_bytes`).
    outbound_max_bytes: usize,
    trusted_proxies: Swap<Vec<Cidr>>,
    origins: Swap<OriginPolicy>,
    max_message_bytes: usize,
    metrics: Option<MetricsRender>,
    stop: watch::Receiver<bool>,
}

impl Inner {
    /// The client's address: the socket peer, or what a trusted proxy says (`client_ip`).
    fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer.ip(), headers, &self.trusted_proxies.get())
    }
}

// ---- errors -------------------------------------------------------------------------------

fn count(code: ErrorCode) {
    metrics::counter!("floe_signal_errors_total", "code" => code.as_str()).increment(1);
}

/// An error answer in the same JSON shape as the WebSocket `error` message.
fn error_response(body: ErrorBody) -> Response {
    let status = StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(ServerMsg::Error(body))).into_response()
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    count(code);
    error_response(ErrorBody {
        code,
        message: message.into(),
        fatal: false,
        ref_seq: None,
    })
}

fn gone() -> Response {
    refuse(ErrorCode::ServerShutdown, "the server is shutting down")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
