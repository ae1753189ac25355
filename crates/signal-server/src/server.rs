//! The HTTP surface: routes, the WebSocket connection task, the HTTP post box, ICE servers,
//! static files, metrics, and the run loop with graceful shutdown.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use floe_signal::auth::Auth;
use floe_signal::ice::IceConfig;
use floe_signal::proto::{ErrorBody, ServerMsg};
use floe_signal::{ErrorCode, SessionId};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{oneshot, watch, Semaphore};

use floe_signal::bus::LocalBus;
use floe_turn::policy::Cidr;

use crate::actor::{self, HubHandle, NodeBus, Outbound};
use crate::client_ip::client_ip;
use crate::config::{ConfigError, SignalConfig};
use crate::origin::{self, OriginPolicy, Verdict};
use crate::outbox::outbox;
use crate::redis_bus::{self, RedisSettings};

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
        }
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
        let ice = hub_config.ice.clone();
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
        let origins = self.config.origin_policy().map_err(ConfigError::from)?;
        let (hub, hub_task) = actor::spawn(
            hub_config,
            bus,
            bus_events,
            self.config.max_rest_waiters_per_session,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let conn_limit = Arc::new(Semaphore::new(self.config.max_ws_connections));
        let state = AppState(Arc::new(Inner {
            hub: hub.clone(),
            auth,
            ice,
            conn_limit: conn_limit.clone(),
            post_box_waiters: Arc::new(Semaphore::new(self.config.max_rest_waiters)),
            poll_wait_cap: self.config.poll_wait_cap(),
            outbound_queue: self.config.ws_outbound_queue,
            trusted_proxies: self.config.trusted_proxies.clone(),
            origins,
            max_message_bytes: self.config.max_message_bytes,
            metrics: self.metrics,
            stop: stop_rx,
        }));
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let on_shutdown = async move {
            shutdown.await;
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
        axum::serve(listener, app)
            .with_graceful_shutdown(on_shutdown)
            .await?;
        // WebSocket tasks outlive hyper's graceful shutdown; wait for them to flush their close.
        let max = u32::try_from(self.config.max_ws_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, conn_limit.acquire_many(max)).await;
        hub_task.abort();
        Ok(())
    }
}

/// Runs the signalling server on `listener` until `shutdown` completes (see [`SignalServer`]).
pub async fn run(
    config: SignalConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    SignalServer::new(config).run(listener, shutdown).await
}

#[derive(Clone)]
struct AppState(Arc<Inner>);

struct Inner {
    hub: HubHandle,
    auth: Auth,
    ice: IceConfig,
    conn_limit: Arc<Semaphore>,
    /// Parked post-box long-polls (config key `max_rest_waiters`).
    post_box_waiters: Arc<Semaphore>,
    /// Longest post-box long-poll.
    poll_wait_cap: Duration,
    /// Frames queued towards one WebSocket (`ws_outbound_queue`).
    outbound_queue: usize,
    trusted_proxies: Vec<Cidr>,
    origins: OriginPolicy,
    max_message_bytes: usize,
    metrics: Option<MetricsRender>,
    stop: watch::Receiver<bool>,
}

impl Inner {
    /// The client's address: the socket peer, or what a trusted proxy says (`client_ip`).
    fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer.ip(), headers, &self.trusted_proxies)
    }
}

fn router(state: AppState) -> Router {
    // The routes a page on another origin may call (CORS, preflight, `Origin` check).
    let api = Router::new()
        .route("/v1/ice-servers", get(ice_servers))
        .route("/v1/rest/join", post(post_box_join))
        .route(
            "/v1/rest/sessions/{session}/messages",
            post(post_box_message).get(post_box_poll),
        )
        .route(
            "/v1/rest/sessions/{session}",
            axum::routing::delete(post_box_leave),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors));
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/floe.js", get(client_js))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/ws", get(ws_upgrade))
        .merge(api)
        .with_state(state)
}

/// CORS for the API routes: refuses pages the origin policy refuses (`forbidden`), answers
/// preflights for allowed origins, and marks allowed cross-origin answers readable.
async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let verdict = state.0.origins.check(req.headers());
    let request_headers = req.headers().clone();
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = match (verdict, preflight) {
        (Verdict::Refused, _) => refuse(ErrorCode::Forbidden, state.0.origins.refusal()),
        (Verdict::Cors, true) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            origin::preflight_headers(r.headers_mut());
            r
        }
        (_, true) => refuse(
            ErrorCode::Forbidden,
            "cross-origin requests need --allow-origin for this page's origin",
        ),
        (_, false) => next.run(req).await,
    };
    if verdict == Verdict::Cors {
        origin::allow_headers(&request_headers, resp.headers_mut());
    }
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    resp
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

// ---- static files and small routes --------------------------------------------------------

async fn index() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        crate::assets::INDEX_HTML,
    )
        .into_response()
}

async fn client_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        crate::assets::FLOE_JS,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.0.metrics {
        Some(render) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `GET /v1/ice-servers`: the same list as in `welcome`. Production mode: `Authorization:
/// Bearer <JWT>` (any room); the token's `peer` claim names the TURN user.
async fn ice_servers(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Answered outside the hub task, with the clock read by the same function as for the hub.
    let now = actor::now().unix;
    let ip = state.0.client_ip(addr, &headers);
    let peer = match state
        .0
        .auth
        .authorize_ice_servers(bearer(&headers), ip, now)
    {
        Ok(p) => p,
        Err(d) => return refuse(d.code, d.message),
    };
    let servers = state.0.ice.servers_for(&peer, now);
    Json(json!({ "iceServers": servers, "ttl": state.0.ice.turn_ttl_secs })).into_response()
}

// ---- WebSocket ----------------------------------------------------------------------------

async fn ws_upgrade(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if *state.0.stop.borrow() {
        return gone();
    }
    // Development mode: a page from a non-local origin must not use a developer's localhost
    // server (a malicious site could otherwise join rooms through the visitor's browser).
    if state.0.origins.check(&headers) == Verdict::Refused {
        return refuse(ErrorCode::Forbidden, state.0.origins.refusal());
    }
    let ip = state.0.client_ip(addr, &headers);
    let Ok(permit) = state.0.conn_limit.clone().try_acquire_owned() else {
        return refuse(
            ErrorCode::ServerBusy,
            "connection limit reached; try another node",
        );
    };
    // Frames up to 4x the message limit are read and refused politely by the hub; larger ones
    // break the connection at the transport (and are counted as message_too_large too).
    let hard_cap = state.0.max_message_bytes.saturating_mul(4).max(4096);
    // Buffers sized to signalling traffic, not to tungstenite's defaults (a 128 KiB read buffer
    // per connection, zero-filled before every read): see `READ_BUFFER`.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(hard_cap.saturating_mul(2))
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_upgrade(move |socket| async move {
            connection(socket, ip, state).await;
            drop(permit);
        })
}

/// The read buffer of one WebSocket, allocated when it opens. Heartbeats, acks and candidates
/// (tens to hundreds of bytes) fit in one read; a larger frame (an SDP of a few KiB, up to the
/// message limit) grows the buffer to the frame's size as its header is read, so this bounds only
/// the idle cost, not the message size.
const READ_BUFFER: usize = 1024;

async fn connection(socket: WebSocket, ip: IpAddr, state: AppState) {
    let hub = state.0.hub.clone();
    let (tx, mut rx) = outbox(state.0.outbound_queue);
    let Ok(conn) = hub.connect(ip, tx).await else {
        return;
    };
    let (mut sink, mut stream) = socket.split();
    // The writer owns the receiver: once it stops, the hub task finds the channel closed (a
    // hang-up), never full (a slow consumer).
    let writer = async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outbound::Text(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return WriteEnd::Failed;
                    }
                }
                Outbound::Close(code) => {
                    let frame = CloseFrame {
                        code: close_code(code),
                        reason: code.as_str().into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return WriteEnd::Done;
                }
            }
        }
        WriteEnd::Done
    };
    let reader = async {
        while let Some(msg) = stream.next().await {
            let data = match msg {
                Ok(Message::Text(t)) => t.as_str().as_bytes().to_vec(),
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => break,
                Err(e) => {
                    if is_capacity_error(e) {
                        hub.oversized(conn).await;
                        return ReadEnd::Oversized;
                    }
                    break;
                }
            };
            if hub.frame(conn, data).await.is_err() {
                break;
            }
        }
        ReadEnd::Done
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        end = &mut reader => {
            if end == ReadEnd::Oversized {
                // Let the writer send the error and the close frame.
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
            }
        }
        end = &mut writer => {
            if end == WriteEnd::Failed {
                // The client hung up while we wrote to it. What it sent before (its `leave`
                // above all) still reaches the hub, ahead of the disconnect below: read what
                // the socket holds until the stream ends (bounded).
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
            }
        }
    }
    hub.disconnect(conn).await;
}

/// How a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// The hub closed the connection (a fatal error or shutdown; the close frame was sent) or
    /// dropped it (a slow consumer): it ignores anything the client sends from now on.
    Done,
    /// Writing failed: the client is gone.
    Failed,
}

/// How a connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// End of stream, a close frame, a transport error, or the hub is gone.
    Done,
    /// A frame over the transport's hard cap; the hub was told.
    Oversized,
}

/// How long a connection task waits, once one direction stopped, for the other to finish: the
/// reader to hand over frames a client sent before it hung up, or the writer to send a fatal
/// error's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

fn is_capacity_error(e: axum::Error) -> bool {
    e.into_inner()
        .downcast::<tokio_tungstenite::tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

/// The WebSocket close code for a fatal error.
fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::MessageTooLarge => 1009,
        ErrorCode::ServerShutdown => 1012, // service restart: reconnect
        ErrorCode::Internal => 1011,
        _ => 1008, // policy violation
    }
}

// ---- HTTP post box -----------------------------------------------------------------------

async fn read_body(state: &Inner, body: Body) -> Result<Vec<u8>, Response> {
    // Read a little past the limit so the hub can tell "too large" apart from a cut body.
    let limit = state.max_message_bytes.saturating_add(1);
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(_) => Err(refuse(
            ErrorCode::MessageTooLarge,
            format!("body exceeds {} bytes", state.max_message_bytes),
        )),
    }
}

/// `POST /v1/rest/join`: body is a `join` message; answers `welcome` (200) or an error.
async fn post_box_join(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if *state.0.stop.borrow() {
        return gone();
    }
    let ip = state.0.client_ip(addr, req.headers());
    let body = match read_body(&state.0, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let answer =
        tokio::time::timeout(Duration::from_secs(10), state.0.hub.post_box_join(ip, body)).await;
    match answer {
        Ok(Ok(ServerMsg::Error(e))) => error_response(e),
        Ok(Ok(msg)) => Json(msg).into_response(),
        Ok(Err(_)) => gone(),
        Err(_) => refuse(ErrorCode::Internal, "the join was not answered in time"),
    }
}

/// The session of a post-box path and the bearer token, or the refusal.
fn post_box_target(
    session: &str,
    headers: &HeaderMap,
) -> Result<(SessionId, String), Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Err(Box::new(refuse(
            ErrorCode::AuthRequired,
            "send Authorization: Bearer <resumeToken>",
        )));
    };
    let session = SessionId::new(session).map_err(|_| {
        Box::new(refuse(
            ErrorCode::SessionNotFound,
            "unknown session or wrong bearer token",
        ))
    })?;
    Ok((session, token.to_string()))
}

/// `POST /v1/rest/sessions/{session}/messages`: one client message; answers
/// `{"replies":[...]}` (errors for asynchronous refusals, `pong`, `refreshed`).
async fn post_box_message(
    State(state): State<AppState>,
    Path(session): Path<String>,
    req: Request,
) -> Response {
    let (session, token) = match post_box_target(&session, req.headers()) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let body = match read_body(&state.0, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match state.0.hub.post_box_message(session, token, body).await {
        Ok(Ok(replies)) => Json(json!({ "replies": replies })).into_response(),
        Ok(Err(e)) => error_response(e),
        Err(_) => gone(),
    }
}

#[derive(Debug, Deserialize)]
struct PollQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

/// `GET /v1/rest/sessions/{session}/messages?after=N&wait=S`: acknowledges up to `after` and
/// answers `{"messages":[...],"lastSeq":N}`, waiting up to `wait` seconds (max
/// `max_poll_wait_secs`) for one.
///
/// Bounds: a poll that has to park needs one of `max_rest_waiters` permits (else 503
/// `server_busy`; a poll that finds messages is answered anyway), and the hub task keeps at
/// most `max_rest_waiters_per_session` parked per session, answering the oldest at once when a
/// newer one arrives.
async fn post_box_poll(
    State(state): State<AppState>,
    Path(session): Path<String>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let (session, token) = match post_box_target(&session, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let wait = Duration::from_secs(q.wait).min(state.0.poll_wait_cap);
    let hub = &state.0.hub;
    // Taken before the first poll so that the hub only parks (and supersedes older polls for)
    // a poll that will really wait.
    let permit = if wait.is_zero() {
        None
    } else {
        state.0.post_box_waiters.clone().try_acquire_owned().ok()
    };
    let (watch_tx, watch_rx) = oneshot::channel();
    let watch = permit.is_some().then_some(watch_tx);
    let first = match hub
        .post_box_poll(session.clone(), token.clone(), q.after, watch)
        .await
    {
        Ok(r) => r,
        Err(_) => return gone(),
    };
    let poll = match first {
        Ok(p) if p.messages.is_empty() && !wait.is_zero() && permit.is_none() => {
            return refuse(
                ErrorCode::ServerBusy,
                "too many long-polls are waiting on this node; retry shortly",
            );
        }
        Ok(p) if p.messages.is_empty() && !wait.is_zero() => {
            // Counted until this future ends or is dropped (the client went away).
            let parked = Parked::new(permit);
            let mut stop = state.0.stop.clone();
            tokio::select! {
                _ = tokio::time::timeout(wait, watch_rx) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            drop(parked);
            match hub.post_box_poll(session, token, q.after, None).await {
                Ok(r) => r,
                Err(_) => return gone(),
            }
        }
        other => other,
    };
    match poll {
        Ok(p) => Json(json!({ "messages": p.messages, "lastSeq": p.last_seq })).into_response(),
        Err(e) => error_response(e),
    }
}

/// A parked long-poll: holds its `max_rest_waiters` permit and counts in the
/// `floe_signal_rest_waiters` gauge while it lives.
struct Parked(Option<tokio::sync::OwnedSemaphorePermit>);

impl Parked {
    fn new(permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        metrics::gauge!("floe_signal_rest_waiters").increment(1.0);
        Self(permit)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        metrics::gauge!("floe_signal_rest_waiters").decrement(1.0);
        self.0.take();
    }
}

/// `DELETE /v1/rest/sessions/{session}`: leave the room (204).
async fn post_box_leave(
    State(state): State<AppState>,
    Path(session): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (session, token) = match post_box_target(&session, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    match state
        .0
        .hub
        .post_box_message(session, token, br#"{"type":"leave"}"#.to_vec())
        .await
    {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error_response(e),
        Err(_) => gone(),
    }
}
