//! `floe credentials`: mints a TURN REST API credential (the scheme `--auth-secret` accepts).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

/// Arguments of `floe credentials`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shared secret (one of the server's --auth-secret values).
    #[arg(long, env = "FLOE_TURN_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The user name to embed (may be empty).
    #[arg(long, default_value = "")]
    pub user: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl: u64,
    /// Print JSON (`{"username":..,"password":..,"ttl":..}`) instead of two lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs `floe credentials`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.secret.is_empty(), "--secret must not be empty");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    let c = floe_turn::rest::mint(args.secret.as_bytes(), &args.user, args.ttl, now);
    if args.json {
        let json = serde_json::json!({
            "username": c.username,
            "password": c.password,
            "ttl": args.ttl,
        });
        println!("{json}");
    } else {
        println!("username: {}", c.username);
        println!("password: {}", c.password);
    }
    Ok(ExitCode::SUCCESS)
}
