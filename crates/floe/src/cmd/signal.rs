//! `floe signal`: the signalling server alone (WebSocket, HTTP post box, ICE servers, demo page).
//!
//! `floe serve` embeds the same server: it flattens [`floe_signal_server::SignalArgs`], reads the
//! `[signal]` section into [`floe_signal_server::SignalConfig`], and calls
//! [`floe_signal_server::SignalServer::run`] beside STUN and TURN.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use floe_signal_server::{SignalArgs, SignalConfig, SignalServer};
use serde::Deserialize;

use crate::admin::{self, AdminArgs, AdminConfig, AdminSection};

/// Arguments of `floe signal`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config file; its `[signal]` table is read (keys as in docs/signalling.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Signalling flags (each overrides the config-file key of the same name).
    #[command(flatten)]
    pub signal: SignalArgs,
    /// Operations options (admin listener, readiness, drain).
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The parts of a floe config file `floe signal` reads. Other top-level tables (for the other
/// servers) are left to their subcommands; the `[signal]` table itself rejects unknown keys.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    signal: SignalConfig,
    #[serde(default)]
    admin: AdminSection,
}

/// Reads the `[signal]` and `[admin]` tables of `path`.
pub fn load_config(path: &Path) -> anyhow::Result<(SignalConfig, AdminSection)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok((file.signal, file.admin))
}

/// Runs `floe signal` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut config, admin_section) = match &args.config {
        Some(path) => load_config(path)?,
        None => (SignalConfig::default(), AdminSection::default()),
    };
    args.signal.apply(&mut config);
    let admin_config = args.admin.resolve(admin_section)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config, admin_config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: SignalConfig, admin_config: AdminConfig) -> anyhow::Result<()> {
    // Refuse a bad configuration before binding anything (the server checks again).
    config.hub_config().context("signalling configuration")?;
    let prometheus = admin::install_metrics()?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // A stable line on stdout so scripts and tests can use `--http 127.0.0.1:0`.
    println!("floe signal: listening on http://{addr}");
    // The public port keeps its /metrics (loopback only in production mode); the operations
    // listener is the place to scrape.
    let public_metrics = prometheus.clone();
    let server = SignalServer::new(config).with_metrics(Arc::new(move || {
        admin::render_metrics(&public_metrics, false, true)
    }));
    let (ops, signals) = admin::start(admin_config, prometheus, None, Some(server.admin())).await?;
    server
        .run(listener, ops.lifecycle(signals))
        .await
        .context("signalling server")?;
    Ok(())
}
