//! Checks shared by the cargo-fuzz target `signal_http` (`fuzz/`), the corpus replay and the
//! bounded property run (`tests/fuzz.rs`), so `cargo test` exercises them on stable Rust without
//! cargo-fuzz. Not part of the supported API.
//!
//! [`check_request`] turns arbitrary bytes into an HTTP request (method, path and query,
//! headers, body: see [`request_from_bytes`]), sends it through the real router (the WebSocket
//! upgrade, the HTTP post box, ICE servers, static files, metrics) over a live hub task, and
//! checks that the answer is 2xx, 3xx or 4xx, or 503 (`server_busy`); never a panic, never
//! another 5xx.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use tower_service::Service as _;

use crate::config::SignalConfig;

/// The methods a request can have: the first input byte picks one.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
    Method::PUT,
    Method::HEAD,
    Method::PATCH,
];

/// Decodes `data`: byte 0 picks the method; up to the first `\n` is the path and query (a `/`
/// is prefixed when missing); then `Name: value` header lines up to an empty line; the rest is
/// the body. `None` when the path is not a valid request target (hyper refuses those before
/// any route runs). Header lines that are not valid names or values are skipped.
pub fn request_from_bytes(data: &[u8]) -> Option<Request<Body>> {
    let (&m, rest) = data.split_first()?;
    let method = METHODS[usize::from(m) % METHODS.len()].clone();
    let mut lines = rest.splitn(2, |b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let mut rest = lines.next().unwrap_or_default();
    let target = String::from_utf8_lossy(target);
    let target = target.trim_end_matches('\r');
    let target = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/{target}")
    };
    let mut req = Request::builder().method(method).uri(target.as_str());
    loop {
        let (line, after) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            rest = after;
            break;
        }
        rest = after;
        if let Some(i) = line.iter().position(|b| *b == b':') {
            let name = HeaderName::from_bytes(&line[..i]);
            let value = HeaderValue::from_bytes(line[i + 1..].trim_ascii());
            if let (Ok(n), Ok(v)) = (name, value) {
                req = req.header(n, v);
            }
        }
        if after.is_empty() {
            break;
        }
    }
    let mut req = req.body(Body::from(rest.to_vec())).ok()?;
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    req.extensions_mut().insert(ConnectInfo(peer));
    Some(req)
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

/// One runtime and router for every input: a development-mode server (anonymous joins from
/// loopback, as the fuzzed requests come from 127.0.0.1) with a 1 s long-poll cap, so that no
/// input can park a request for long. Every input comes from one address: the per-IP join
/// limit and the room size are lifted so that they do not answer every join after the first
/// few dozen (the limits have their own tests).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the fuzz checks");
        let config = SignalConfig {
            max_poll_wait_secs: 1,
            http_request_timeout_secs: 1,
            joins_per_min_per_ip: u32::MAX,
            max_peers_per_room: 1 << 20,
            ..SignalConfig::default()
        };
        let router = rt
            .block_on(async { crate::server::standalone_router(&config) })
            .expect("the default configuration is valid");
        Fixture { rt, router }
    })
}

/// Sends the request `data` decodes to through the router and returns the answer's status;
/// panics when it is a 5xx other than 503. `None` when `data` is not a request.
pub fn check_request(data: &[u8]) -> Option<u16> {
    let req = request_from_bytes(data)?;
    let f = fixture();
    let mut router = f.router.clone();
    let resp = f.rt.block_on(async move { router.call(req).await });
    let Ok(resp) = resp;
    let status = resp.status().as_u16();
    assert!(
        status < 500 || status == 503,
        "status {status} for {:?}",
        String::from_utf8_lossy(data)
    );
    Some(status)
}
