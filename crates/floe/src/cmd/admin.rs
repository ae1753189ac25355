//! `floe admin`: a client of the operations listener's admin API (docs/operations.md). Plain
//! HTTP/1.1 over one TCP connection per command; the listener is meant for loopback or a private
//! network (put TLS in front of it otherwise).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::http_client::{self, BaseUrl, Request};

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
    /// Live relayed bytes and packets summed by room, tenant or user (from the TURN usernames
    /// floe's signalling server mints).
    Usage {
        /// room, tenant or user.
        #[arg(long, default_value = "room")]
        by: String,
        /// Also the allocations that ended in the last MINUTES (at most 10).
        #[arg(long, value_name = "MINUTES")]
        ended: Option<u64>,
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
    if !args.url.starts_with("http://") {
        bail!("--url must be http://HOST:PORT (put TLS in front of the listener and tunnel)");
    }
    let base = BaseUrl::parse(&args.url)?;
    let (method, path, body) = match &args.command {
        AdminCommand::Allocations { user: Some(u) } => {
            ("GET", format!("/v1/allocations?user={}", encode(u)), None)
        }
        AdminCommand::Allocations { user: None } => ("GET", "/v1/allocations".into(), None),
        AdminCommand::Usage { by, ended } => {
            let ended = ended.map_or(String::new(), |m| format!("&ended={m}"));
            ("GET", format!("/v1/usage?by={}{ended}", encode(by)), None)
        }
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
    let request = Request {
        method,
        path: &path,
        token: args.token.as_deref(),
        body: body.as_deref(),
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(30),
    };
    let (status, body) = http_client::request(&base, &request, None)?;
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
                "ROOM",
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
                    s(&a["room"]),
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
        AdminCommand::Usage { .. } => {
            let by = json["by"].as_str().unwrap_or("room");
            let key = by.to_uppercase();
            table(
                &[
                    &key,
                    "ALLOCATIONS",
                    "ENDED",
                    "TO PEER",
                    "TO CLIENT",
                    "PACKETS TO PEER",
                    "PACKETS TO CLIENT",
                ],
                rows(&json["usage"], |u| {
                    vec![
                        s(&u[by]),
                        s(&u["allocations"]),
                        s(&u["ended_allocations"]),
                        s(&u["bytes_to_peer"]),
                        s(&u["bytes_to_client"]),
                        s(&u["packets_to_peer"]),
                        s(&u["packets_to_client"]),
                    ]
                }),
            )
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

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
