//! ICE server URLs as the signalling server hands them out (`welcome.iceServers`):
//! `stun:` (RFC 7064) and `turn:` / `turns:` (RFC 7065) URIs with their credentials.

use std::fmt;

/// How a TURN client reaches its server (RFC 7065 §3: `transport=udp|tcp`, `turns:` is TLS over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    /// `turn:host?transport=udp` (the default for `turn:`).
    Udp,
    /// `turn:host?transport=tcp`.
    Tcp,
    /// `turns:host?transport=tcp` (TLS over TCP).
    Tls,
}

impl fmt::Display for TurnTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
            TurnTransport::Tls => "tls",
        })
    }
}

/// One usable ICE server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceServer {
    /// A STUN server: `host` and `port`.
    Stun {
        /// Host name or IP literal (brackets removed).
        host: String,
        /// Port (default 3478).
        port: u16,
    },
    /// A TURN server with long-term credentials.
    Turn {
        /// Host name or IP literal (brackets removed).
        host: String,
        /// Port (default 3478, 5349 for `turns:`).
        port: u16,
        /// Transport to the server.
        transport: TurnTransport,
        /// Username (REST API: `expiry:peer`).
        username: String,
        /// Password.
        credential: String,
    },
}

/// Why a URL was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `stun:`, `stuns:`, `turn:` or `turns:`.
    #[error("unsupported ICE server scheme in {0:?}")]
    Scheme(String),
    /// Host or port missing or malformed.
    #[error("malformed ICE server URL {0:?}")]
    Malformed(String),
    /// A `turn:` URL without username/credential.
    #[error("TURN URL {0:?} has no credentials")]
    NoCredentials(String),
    /// `transport=` other than udp or tcp, or `turns:` over udp (DTLS is not supported).
    #[error("unsupported transport in {0:?}")]
    Transport(String),
}

/// Parses one URL of an `RTCIceServer` entry.
pub fn parse_url(
    url: &str,
    username: Option<&str>,
    credential: Option<&str>,
) -> Result<IceServer, UrlError> {
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| UrlError::Malformed(url.to_owned()))?;
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let transport_param = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("transport="))
            .map(str::to_ascii_lowercase)
    });
    let scheme = scheme.to_ascii_lowercase();
    let default_port = if scheme == "turns" || scheme == "stuns" {
        5349
    } else {
        3478
    };
    let (host, port) = split_host_port(hostport, default_port)
        .ok_or_else(|| UrlError::Malformed(url.to_owned()))?;
    match scheme.as_str() {
        "stun" => Ok(IceServer::Stun { host, port }),
        "turn" | "turns" => {
            let transport = match (scheme.as_str(), transport_param.as_deref()) {
                ("turn", None | Some("udp")) => TurnTransport::Udp,
                ("turn", Some("tcp")) => TurnTransport::Tcp,
                ("turns", None | Some("tcp")) => TurnTransport::Tls,
                _ => return Err(UrlError::Transport(url.to_owned())),
            };
            let (Some(username), Some(credential)) = (username, credential) else {
                return Err(UrlError::NoCredentials(url.to_owned()));
            };
            Ok(IceServer::Turn {
                host,
                port,
                transport,
                username: username.to_owned(),
                credential: credential.to_owned(),
            })
        }
        _ => Err(UrlError::Scheme(url.to_owned())),
    }
}

/// Parses a `welcome.iceServers` array; URLs that cannot be used are returned as errors beside
/// the usable ones so that the caller can log them.
pub fn parse_ice_servers(v: &serde_json::Value) -> (Vec<IceServer>, Vec<UrlError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for entry in v.as_array().into_iter().flatten() {
        let username = entry.get("username").and_then(|u| u.as_str());
        let credential = entry.get("credential").and_then(|u| u.as_str());
        let urls: Vec<&str> = match entry.get("urls") {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|u| u.as_str()).collect(),
            _ => Vec::new(),
        };
        for url in urls {
            match parse_url(url, username, credential) {
                Ok(s) => ok.push(s),
                Err(e) => bad.push(e),
            }
        }
    }
    (ok, bad)
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, port).
pub(crate) fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        // A bare IPv6 literal without brackets is not a valid URI host.
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((s.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_urls_floe_serve_hands_out() {
        let v = serde_json::json!([
            {"urls": ["stun:203.0.113.10:3478"]},
            {"urls": ["turn:203.0.113.10:3478?transport=udp", "turn:203.0.113.10:3478?transport=tcp",
                      "turns:203.0.113.10:5349?transport=tcp", "turn:[2001:db8::1]"],
             "username": "1700000000:alice", "credential": "c2VjcmV0"}
        ]);
        let (ok, bad) = parse_ice_servers(&v);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            ok[0],
            IceServer::Stun {
                host: "203.0.113.10".into(),
                port: 3478
            }
        );
        let kinds: Vec<_> = ok[1..]
            .iter()
            .map(|s| match s {
                IceServer::Turn {
                    transport,
                    port,
                    host,
                    ..
                } => (host.clone(), *port, *transport),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("203.0.113.10".into(), 3478, TurnTransport::Udp),
                ("203.0.113.10".into(), 3478, TurnTransport::Tcp),
                ("203.0.113.10".into(), 5349, TurnTransport::Tls),
                ("2001:db8::1".into(), 3478, TurnTransport::Udp),
            ]
        );
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert!(matches!(
            parse_url("turn:example.org", None, None),
            Err(UrlError::NoCredentials(_))
        ));
        assert!(matches!(
            parse_url("turns:example.org?transport=udp", Some("u"), Some("p")),
            Err(UrlError::Transport(_))
        ));
        assert!(matches!(
            parse_url("http://example.org", None, None),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            parse_url("stun:", None, None),
            Err(UrlError::Malformed(_))
        ));
        assert!(matches!(
            parse_url("stun:2001:db8::1", None, None),
            Err(UrlError::Malformed(_))
        ));
        assert!(matches!(
            parse_url("stun:host:notaport", None, None),
            Err(UrlError::Malformed(_))
        ));
    }
}
