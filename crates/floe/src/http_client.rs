//! A minimal blocking HTTP/1.1 client (plain or TLS), one request per connection
//! (`Connection: close`) with a bounded response: `floe admin` (the operations listener's API)
//! and `floe doctor` (`/v1/ice-servers`) use it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rustls::pki_types::ServerName;

/// The largest response read.
const MAX_RESPONSE: u64 = 1 << 20;

/// A parsed `http://` or `https://` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https://`.
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port (80 or 443 by default).
    pub port: u16,
}

impl BaseUrl {
    /// Parses `http[s]://host[:port][/...]` (the path is ignored: the API is at the root).
    pub fn parse(url: &str) -> anyhow::Result<BaseUrl> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("{url:?}: expected an http:// or https:// URL of the signalling server");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("{url:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().with_context(|| format!("{url:?}: bad port"))?,
                None => default,
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().with_context(|| format!("{url:?}: bad port"))?,
                ),
                None => (authority.to_owned(), default),
            }
        };
        if host.is_empty() {
            bail!("{url:?}: no host");
        }
        Ok(BaseUrl { tls, host, port })
    }

    /// The first address the host resolves to.
    pub fn resolve(&self) -> anyhow::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.host))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.host))
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: &'a str,
    /// The path (and query).
    pub path: &'a str,
    /// A bearer token.
    pub token: Option<&'a str>,
    /// A JSON body.
    pub body: Option<&'a str>,
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Bound on each read and write.
    pub io_timeout: Duration,
}

/// Sends `req` to `base` (TLS with `tls` for `https://`): the status code and the body.
pub fn request(
    base: &BaseUrl,
    req: &Request<'_>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<(u16, String)> {
    let addr = base.resolve()?;
    let tcp = TcpStream::connect_timeout(&addr, req.connect_timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(req.io_timeout))?;
    tcp.set_write_timeout(Some(req.io_timeout))?;
    let host = if base.host.contains(':') {
        format!("[{}]:{}", base.host, base.port)
    } else {
        format!("{}:{}", base.host, base.port)
    };
    let (method, path) = (req.method, req.path);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
         User-Agent: floe/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = req.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = req.body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    let message = format!("{head}\r\n{body}");
    let mut raw = Vec::new();
    if base.tls {
        let Some(tls) = tls else {
            bail!("https:// needs a TLS configuration");
        };
        let name = ServerName::try_from(base.host.clone())
            .with_context(|| format!("{:?} is not a valid TLS server name", base.host))?;
        let conn = rustls::ClientConnection::new(tls.clone(), name)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream.write_all(message.as_bytes())?;
        read_bounded(&mut stream, &mut raw)?;
    } else {
        let mut tcp = tcp;
        tcp.write_all(message.as_bytes())
            .context("sending the request")?;
        read_bounded(&mut tcp, &mut raw)?;
    }
    parse_response(&raw)
}

fn read_bounded(r: &mut impl std::io::Read, out: &mut Vec<u8>) -> anyhow::Result<()> {
    match r.take(MAX_RESPONSE).read_to_end(out) {
        Ok(_) => Ok(()),
        // A TLS peer that closes without close_notify still sent a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(e).context("reading the response"),
    }
}

/// Splits a `Connection: close` response into its status code and body (identity or chunked).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the response has no end of headers")?;
    let status_line = head.lines().next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {status_line:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = BaseUrl::parse("https://signal.example/app").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "signal.example", 443)
        );
        let u = BaseUrl::parse("http://[2000:9::1]:8080").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "2000:9::1", 8080));
        let u = BaseUrl::parse("http://11.0.0.10:8080/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("11.0.0.10", 8080));
        assert!(BaseUrl::parse("ws://x").is_err());
        assert!(BaseUrl::parse("http://:80").is_err());
    }

    #[test]
    fn parses_responses() {
        let (code, body) =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((code, body.as_str()), (200, "{}"));
        let (code, body) = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((code, body.as_str()), (401, "abcde"));
        assert!(parse_response(b"garbage").is_err());
        // floe admin's answers: a plain error and a chunked body split inside a JSON string.
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (503, "{}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "{\"a\":1}".into()));
    }
}
