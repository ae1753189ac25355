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

use crate::admin::reload::{ConfigReloader, FileKind, SignalReloader};
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
    /// The log filter (top-level `log`, as for the other commands).
    log: Option<String>,
    #[serde(default)]
    signal: SignalConfig,
    #[serde(default)]
    admin: AdminSection,
}

fn read(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Reads what `floe signal` reads of `path` (`log`, `[signal]`, `[admin]`) as the whole file's
/// type, the other sections left empty (for a reload).
pub fn load_file(path: &Path) -> anyhow::Result<crate::config::FileConfig> {
    let file = read(path)?;
    Ok(crate::config::FileConfig {
        log: file.log,
        signal: file.signal,
        admin: file.admin,
        ..Default::default()
    })
}

/// Runs `floe signal` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => read(path)?,
        None => FileConfig::default(),
    };
    crate::logging::from_file(file.log.as_deref())?;
    let (mut config, admin_section) = (file.signal, file.admin);
    args.signal.clone().apply(&mut config);
    let admin_config = args.admin.resolve(admin_section)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let reload = (args.config, args.signal);
    runtime.block_on(serve(config, admin_config, reload))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    config: SignalConfig,
    admin_config: AdminConfig,
    (path, flags): (Option<PathBuf>, SignalArgs),
) -> anyhow::Result<()> {
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
    let mut reloader = ConfigReloader::new(path, FileKind::SignalOnly);
    reloader.signal = Some(SignalReloader {
        args: flags,
        admin: server.admin(),
        serve: None,
    });
    ops.set_reloader(Arc::new(reloader));
    server
        .run(listener, ops.lifecycle(signals))
        .await
        .context("signalling server")?;
    Ok(())
}
