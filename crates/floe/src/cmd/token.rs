//! `floe token`: mint an HS256 signalling JWT.
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use floe_signal::auth::{mint_hs256, Claims};
use floe_signal::proto::Permission;
use floe_signal::{PeerId, RoomId, TenantId};

/// Arguments of `floe token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The HS256 secret the server was started with (`--jwt-secret`).
    #[arg(long, env = "FLOE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The room the token admits to (`*` for any room).
    #[arg(long)]
    pub room: String,
    /// The peer id the holder must use (omit to let the client choose or the server assign).
    #[arg(long)]
    pub peer: Option<String>,
    /// The tenant the holder belongs to (`tenant` claim): carried into the TURN credentials
    /// minted for it, for usage per tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Comma-separated permissions: publish, subscribe, data, admin.
    #[arg(long, value_delimiter = ',', default_value = "publish,subscribe,data")]
    pub perms: Vec<String>,
}

/// Prints the token on stdout.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.room != "*" {
        RoomId::new(args.room.clone()).with_context(|| format!("--room {:?}", args.room))?;
    }
    if let Some(p) = &args.peer {
        PeerId::new(p.clone()).with_context(|| format!("--peer {p:?}"))?;
    }
    if let Some(t) = &args.tenant {
        TenantId::new(t.clone()).with_context(|| format!("--tenant {t:?}"))?;
    }
    let perms = args
        .perms
        .iter()
        .map(|p| match p.trim() {
            "publish" => Ok(Permission::Publish),
            "subscribe" => Ok(Permission::Subscribe),
            "data" => Ok(Permission::Data),
            "admin" => Ok(Permission::Admin),
            other => {
                anyhow::bail!("unknown permission {other:?} (publish, subscribe, data, admin)")
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    let claims = Claims {
        room: args.room,
        peer: args.peer,
        perms: Some(perms),
        exp: now.saturating_add(args.ttl),
        nbf: None,
        iat: Some(now),
        tenant: args.tenant,
    };
    let token = mint_hs256(args.secret.as_bytes(), &claims).context("minting the token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
