//! `floe admin`: a client of the operations listener's admin API (docs/operations.md). Plain
//! HTTP/1.1 over one TCP connection per command; the listener is meant for loopback or a private
//! network (put TLS in front of it otherwise).

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Arguments of `floe admin`.
#[derive(clap::Args)]
pub struct Args {
    /// The operations listener.
    #[arg(long, env = "FLOE_ADMIN_URL", default_value = "http://127.0.0.1:9642")]
    pub url: String,
    /// Bearer token (as given to the server's --admin-token).
    #[arg(long, env = "FLOE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("command", &self.command)
            .finish()
    }
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// List TURN allocations (optionally of one user).
    Allocations {
        /// Only this user (static username, or USER of EXPIRY:USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// List signalling sessions on this node.
    Sessions,
    /// End every allocation and session of USER (TURN user part and signalling peer id).
    KillUser { user: String },
    /// End one allocation (ID as listed, WORKER-N).
    EndAllocation { id: String },
    /// End one signalling session.
    EndSession { session: String },
    /// Revoke a TURN REST username until its expiry (401 from now on; its allocations end).
    Revoke {
        username: String,
        /// Until this unix time instead of the username's expiry.
        #[arg(long)]
        until: Option<u64>,
    },
    /// Start draining: readiness false, no new sessions or allocations, exit when empty.
    Drain,
    /// Reload the configuration file (TURN credentials, peer policy, TLS certificate) without
    /// dropping anything; an invalid file changes nothing and the error says why.
    Reload,
    /// Readiness (/readyz) with its checks.
    Ready,
    /// Load summary.
    Status,
}

/// Runs `floe admin`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.url, args.token.clone())?;
    let (method, path, body) = match &args.command {
        AdminCommand::Allocations { user: Some(u) } => {
            ("GET", format!("/v1/allocations?user={}", encode(u)), None)
        }
        AdminCommand::Allocations { user: None } => ("GET", "/v1/allocations".into(), None),
        AdminCommand::Sessions => ("GET", "/v1/sessions".into(), None),
        AdminCommand::KillUser { user } => ("DELETE", format!("/v1/users/{}", encode(user)), None),
        AdminCommand::EndAllocation { id } => {
            ("DELETE", format!("/v1/allocations/{}", encode(id)), None)
        }
        AdminCommand::EndSession { session } => {
            ("DELETE", format!("/v1/sessions/{}", encode(session)), None)
        }
        AdminCommand::Revoke { username, until } => (
            "POST",
            "/v1/revocations".into(),
            Some(serde_json::json!({"username": username, "until": until}).to_string()),
        ),
        AdminCommand::Drain => ("POST", "/v1/drain".into(), None),
        AdminCommand::Reload => ("POST", "/v1/reload".into(), None),
        AdminCommand::Ready => ("GET", "/readyz".into(), None),
        AdminCommand::Status => ("GET", "/v1/status".into(), None),
    };
    let (status, body) = client.request(method, &path, body.as_deref())?;
    let json: Value = serde_json::from_str(&body)
        .with_context(|| format!("the server answered {status} with non-JSON: {body:?}"))?;
    let ready_probe = matches!(args.command, AdminCommand::Ready);
    let answered = (200..300).contains(&status) || (ready_probe && status == 503);
    if !answered {
        let message = json["error"].as_str().unwrap_or("(no message)");
        bail!("the server answered {status}: {message}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", render(&args.command, &json));
    }
    Ok(if ready_probe && status == 503 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A table or a line for each command.
fn render(command: &AdminCommand, json: &Value) -> String {
    match command {
        AdminCommand::Allocations { .. } => table(
            &[
                "ID",
                "USER",
                "CLIENT",
                "TRANSPORT",
                "RELAYED",
                "PEERS",
                "CHANNELS",
                "TO PEER",
                "TO CLIENT",
                "AGE",
            ],
            rows(&json["allocations"], |a| {
                vec![
                    s(&a["id"]),
                    s(&a["username"]),
                    s(&a["client"]),
                    format!("{}/{}", s(&a["transport"]), s(&a["relay_transport"])),
                    join(&a["relayed"]),
                    join(&a["permissions"]),
                    a["channels"].as_array().map_or(0, Vec::len).to_string(),
                    s(&a["bytes_to_peer"]),
                    s(&a["bytes_to_client"]),
                    format!("{}s", s(&a["age_secs"])),
                ]
            }),
        ),
        AdminCommand::Sessions => table(
            &["SESSION", "ROOM", "PEER", "NODE", "STATE"],
            rows(&json["sessions"], |x| {
                vec![
                    s(&x["session"]),
                    s(&x["room"]),
                    s(&x["peer"]),
                    s(&x["node"]),
                    s(&x["state"]),
                ]
            }),
        ),
        AdminCommand::Ready => {
            let mut out = format!(
                "{}{}\n",
                if json["ready"].as_bool() == Some(true) {
                    "ready"
                } else {
                    "NOT READY: "
                },
                join(&json["reasons"])
            );
            out.push_str(&table(
                &["CHECK", "USED", "LIMIT", "LOAD"],
                rows(&json["checks"], |c| {
                    vec![
                        s(&c["name"]),
                        s(&c["used"]),
                        s(&c["limit"]),
                        format!("{:.0}%", c["load"].as_f64().unwrap_or(0.0) * 100.0),
                    ]
                }),
            ));
            out
        }
        _ => {
            let obj = json.as_object().map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}: {}", s(v)))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            format!("{}\n", obj.unwrap_or_else(|| json.to_string()))
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn rows(v: &Value, f: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Percent-encodes a path segment or query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.1 client for `http://HOST:PORT` URLs.
struct Client {
    host: String,
    token: Option<String>,
}

impl Client {
    fn new(url: &str, token: Option<String>) -> anyhow::Result<Client> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--url must be http://HOST:PORT (put TLS in front of the listener and tunnel)");
        };
        Ok(Client {
            host: rest.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let addr = self
            .host
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.host))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.host))?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.host
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream
            .write_all(req.as_bytes())
            .context("sending the request")?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).context("reading the answer")?;
        parse_response(&raw)
    }
}

/// Status and body of an HTTP/1.1 response (Content-Length or chunked, or read to the end).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("a truncated HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP answer without a status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
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
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (503, "{}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "{\"a\":1}".into()));
    }

    #[test]
    fn encodes_rest_usernames_in_paths() {
        assert_eq!(encode("1700000600:alice"), "1700000600%3Aalice");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], vec![vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
