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

use crate::shutdown::shutdown_signal;

/// Arguments of `floe signal`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config file; its `[signal]` table is read (keys as in docs/signalling.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Signalling flags (each overrides the config-file key of the same name).
    #[command(flatten)]
    pub signal: SignalArgs,
}

/// The parts of a floe config file `floe signal` reads. Other top-level tables (for the other
/// servers) are left to their subcommands; the `[signal]` table itself rejects unknown keys.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    signal: SignalConfig,
}

/// Reads the `[signal]` table of `path`.
pub fn load_config(path: &Path) -> anyhow::Result<SignalConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.signal)
}

/// Runs `floe signal` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => load_config(path)?,
        None => SignalConfig::default(),
    };
    args.signal.apply(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: SignalConfig) -> anyhow::Result<()> {
    // Refuse a bad configuration before binding anything (the server checks again).
    config.hub_config().context("signalling configuration")?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // A stable line on stdout so scripts and tests can use `--http 127.0.0.1:0`.
    println!("floe signal: listening on http://{addr}");
    crate::notify::ready(&format!("signalling on http://{addr} running"));
    crate::notify::start_watchdog();
    SignalServer::new(config)
        .with_metrics(Arc::new(move || prometheus.render()))
        .run(listener, shutdown_signal())
        .await
        .context("signalling server")?;
    Ok(())
}
