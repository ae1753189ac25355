//! Which web pages may use this server: the `Origin` check of the WebSocket upgrade and HTTP
//! post-box requests, and CORS for the post box and `/v1/ice-servers`.
//!
//! * Same-origin pages (the demo page served by this server) are always allowed (development
//!   mode: when served from localhost, see below).
//! * `--allow-origin` lists the other origins (`https://app.example`, exact match; `*` for any,
//!   production mode only). Listed origins get CORS answers; nothing ever sends
//!   `Access-Control-Allow-Credentials` (authentication is a bearer token, never a cookie).
//! * Development mode also allows pages from `localhost`/loopback (and gives them CORS, so that a
//!   front-end dev server on another port works) and refuses every other page: a site visited by
//!   the developer must not drive their local server.
//! * Production mode without a list accepts any `Origin` on the WebSocket and the post box
//!   (backwards compatible; a token is still required) but gives no CORS answers, so
//!   cross-origin pages cannot read post-box responses. With a list, other origins are refused
//!   (`forbidden`).

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderValue};
use floe_signal::auth::is_loopback;

/// The origin policy (built once from the configuration).
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    /// Listed origins, normalised (lower case, no trailing slash).
    allowed: Vec<String>,
    any: bool,
    development: bool,
}

/// An `allow_origins` entry that is not `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// Not `http(s)://host[:port]` (paths, queries and trailing slashes are not origins).
    #[error(
        "allow_origins: {0:?} is not an origin like https://app.example or http://localhost:3000"
    )]
    Invalid(String),
    /// `*` in development mode would let any web site use a developer's local server.
    #[error("allow_origins: \"*\" is refused in development mode (it would let any web page use this server); list origins or configure JWTs")]
    WildcardInDevelopment,
}

/// Checks one `allow_origins` entry and returns it normalised.
pub(crate) fn normalise(origin: &str) -> Result<String, OriginError> {
    let o = origin.trim().to_ascii_lowercase();
    if o == "*" {
        return Ok(o);
    }
    let bad = || OriginError::Invalid(origin.to_string());
    let (scheme, authority) = o.split_once("://").ok_or_else(bad)?;
    let ok_scheme = matches!(scheme, "http" | "https");
    let ok_authority = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' ', ','])
        && origin_host(&o).is_some_and(|h| !h.is_empty());
    if ok_scheme && ok_authority {
        Ok(o)
    } else {
        Err(bad())
    }
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No `Origin` header (not a browser page) or same-origin: no CORS headers needed.
    NoCors,
    /// A cross-origin page that may use the server and read its answers.
    Cors,
    /// A cross-origin page that may use the server but gets no CORS headers (production
    /// mode without a list).
    Tolerated,
    /// Refused with `forbidden`.
    Refused,
}

impl OriginPolicy {
    /// A policy from normalised `allow_origins` entries.
    pub(crate) fn new(allowed: &[String], development: bool) -> Result<Self, OriginError> {
        let mut list = Vec::with_capacity(allowed.len());
        for o in allowed {
            list.push(normalise(o)?);
        }
        let any = list.iter().any(|o| o == "*");
        if any && development {
            return Err(OriginError::WildcardInDevelopment);
        }
        Ok(Self {
            allowed: list,
            any,
            development,
        })
    }

    /// The verdict for a request with these headers.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::NoCors;
        };
        let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if self.any || self.allowed.contains(&origin) {
            return Verdict::Cors;
        }
        // Development mode ignores `Host`: with DNS rebinding a hostile page can be same-origin
        // with a localhost server, so only loopback origins and the list count there.
        if !self.development && same_origin(&origin, headers) {
            return Verdict::NoCors;
        }
        let local = origin_host(&origin).is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(is_loopback)
        });
        match (self.development, local) {
            (true, true) => Verdict::Cors,
            (true, false) => Verdict::Refused,
            (false, _) if self.allowed.is_empty() => Verdict::Tolerated,
            (false, _) => Verdict::Refused,
        }
    }

    /// The message for a refusal.
    pub(crate) fn refusal(&self) -> &'static str {
        if self.development {
            "development mode accepts pages served from localhost (or --allow-origin) only"
        } else {
            "this page's origin is not in --allow-origin"
        }
    }
}

/// Whether the page's origin is this server itself (`Origin` authority equals `Host`).
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host.trim()))
}

/// CORS headers for an allowed cross-origin request (`Vary: Origin` is added by the caller on
/// every answer of a CORS route).
pub(crate) fn allow_headers(headers: &HeaderMap, out: &mut HeaderMap) {
    if let Some(origin) = headers.get(header::ORIGIN) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

/// The extra headers of a preflight answer.
pub(crate) fn preflight_headers(out: &mut HeaderMap) {
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

/// The host of an `Origin` header value (`scheme://host[:port]`), without IPv6 brackets.
pub(crate) fn origin_host(origin: &str) -> Option<&str> {
    let authority = origin.split_once("://")?.1;
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origin_hosts() {
        assert_eq!(origin_host("http://localhost:8080"), Some("localhost"));
        assert_eq!(origin_host("http://127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(origin_host("http://[::1]:80"), Some("::1"));
        assert_eq!(origin_host("https://evil.example"), Some("evil.example"));
        assert_eq!(origin_host("null"), None);
    }

    #[test]
    fn entries_are_validated() {
        assert_eq!(
            normalise("https://App.Example:8443").unwrap(),
            "https://app.example:8443"
        );
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "ftp://x",
            "https://",
            "null",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
        assert_eq!(
            OriginPolicy::new(&["*".into()], true).unwrap_err(),
            OriginError::WildcardInDevelopment
        );
    }

    #[test]
    fn verdicts() {
        let dev = OriginPolicy::new(&["https://app.example".into()], true).unwrap();
        let host = "127.0.0.1:8080";
        assert_eq!(dev.check(&req(None, host)), Verdict::NoCors);
        assert_eq!(
            dev.check(&req(Some("http://127.0.0.1:8080"), host)),
            Verdict::Cors
        );
        // DNS rebinding: same-origin with a hostile name is still refused in development mode.
        let rebound = req(Some("http://evil.example:8080"), "evil.example:8080");
        assert_eq!(dev.check(&rebound), Verdict::Refused);
        assert_eq!(
            dev.check(&req(Some("http://localhost:5173"), host)),
            Verdict::Cors
        );
        assert_eq!(
            dev.check(&req(Some("https://app.example"), host)),
            Verdict::Cors
        );
        assert_eq!(
            dev.check(&req(Some("https://evil.example"), host)),
            Verdict::Refused
        );
        let open = OriginPolicy::new(&[], false).unwrap();
        assert_eq!(
            open.check(&req(Some("https://evil.example"), host)),
            Verdict::Tolerated
        );
        let listed = OriginPolicy::new(&["https://app.example".into()], false).unwrap();
        assert_eq!(
            listed.check(&req(Some("https://APP.example"), host)),
            Verdict::Cors
        );
        assert_eq!(
            listed.check(&req(Some("https://evil.example"), host)),
            Verdict::Refused
        );
        assert_eq!(
            listed.check(&req(Some("http://localhost:1"), host)),
            Verdict::Refused
        );
        let sig = "https://signal.example";
        assert_eq!(
            listed.check(&req(Some(sig), "signal.example")),
            Verdict::NoCors
        );
        let any = OriginPolicy::new(&["*".into()], false).unwrap();
        assert_eq!(
            any.check(&req(Some("https://x.example"), host)),
            Verdict::Cors
        );
    }
}
