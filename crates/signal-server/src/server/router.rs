//! The routes, CORS for the API routes, static files and `/metrics`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use floe_signal::proto::ErrorBody;
use floe_signal::ErrorCode;

use crate::origin::{self, Verdict};

use super::ice_servers::ice_servers;
use super::post_box::{post_box_join, post_box_leave, post_box_message, post_box_poll};
use super::websocket::ws_upgrade;
use super::{error_response, refuse, AppState};

pub(super) fn router(state: AppState) -> Router {
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        .with_state(state)
}

/// Bounds one request from its head to its answer: reading the body (a client that drips it
/// would hold the connection forever) and the longest post-box long-poll. Past it the answer is
/// 408 `request_timeout`, counted in `floe_signal_http_timeouts_total{kind="request"}` and
/// `floe_signal_errors_total`; hyper closes the connection since the body was not read. A
/// WebSocket upgrade answers at once; the WebSocket itself runs outside this deadline.
async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.0.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics::counter!("floe_signal_http_timeouts_total", "kind" => "request").increment(1);
            let mut resp = refuse(
                ErrorCode::RequestTimeout,
                "the request body and its answer took too long",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
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

/// `GET /metrics`. In production mode only for a scraper on this host: the socket peer must be a
/// loopback address and the request must not come through a proxy (any forwarding header), else
/// 403 `forbidden`, counted in `floe_signal_metrics_refused_total`. Development mode serves
/// everyone, as it always did.
async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if state.0.auth.is_production() && !is_local_scraper(peer, &headers) {
        metrics::counter!("floe_signal_metrics_refused_total").increment(1);
        return error_response(ErrorBody {
            code: ErrorCode::Forbidden,
            message: "production mode: /metrics answers loopback clients only".into(),
            fatal: false,
            ref_seq: None,
        });
    }
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

/// A request from this host that no proxy relayed: a reverse proxy on the same host connects from
/// loopback too, so a forwarding header (trusted or not) means someone else asked.
fn is_local_scraper(peer: SocketAddr, headers: &HeaderMap) -> bool {
    const FORWARDING: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];
    peer.ip().to_canonical().is_loopback() && !FORWARDING.iter().any(|h| headers.contains_key(*h))
}
