//! The operations listener (`--admin`, default 127.0.0.1:9642) of `floe serve`, `floe turn` and
//! `floe signal`: `/metrics`, `/healthz`, `/readyz` and the admin API, plus drain and the
//! signals that stop the process. The operator's reference is docs/operations.md.
//!
//! `config.rs` flags and `[admin]` keys · `ops.rs` the handles, drain and lifecycle ·
//! `ready.rs` readiness rules · `http.rs` routes and auth · `notify.rs` systemd notify.

pub mod config;
pub mod http;
pub mod notify;
pub mod ops;
pub mod ready;
pub mod reload;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use floe_signal_server::SignalAdmin;
use floe_turn_server::turn::TurnAdmin;
use metrics_exporter_prometheus::PrometheusHandle;

pub use config::{AdminArgs, AdminConfig, AdminSection};
pub use ops::{Ops, Signals};

/// Installs the process's Prometheus recorder (one per process).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")
}

/// The Prometheus text of the process: the recorder's metrics, then the histograms of the
/// servers that run in it (TURN: allocation lifetime and Allocate handling time; signalling:
/// delivery latency), which live outside the recorder (`floe_histogram`).
pub fn render_metrics(prometheus: &PrometheusHandle, turn: bool, signal: bool) -> String {
    let mut out = prometheus.render();
    if turn {
        floe_turn_server::turn::render_histograms(&mut out);
    }
    if signal {
        floe_signal_server::render_histograms(&mut out);
    }
    out
}

/// Everything a server subcommand needs for operations: the handles, the listener, the
/// signals. Call inside the runtime, before the servers run.
pub async fn start(
    config: AdminConfig,
    prometheus: PrometheusHandle,
    turn: Option<TurnAdmin>,
    signal: Option<SignalAdmin>,
) -> anyhow::Result<(Ops, Signals)> {
    let signals = Signals::register().context("registering signal handlers")?;
    let (has_turn, has_signal) = (turn.is_some(), signal.is_some());
    let render = Arc::new(move || render_metrics(&prometheus, has_turn, has_signal));
    let notifier = notify::Notifier::from_env().context("opening $NOTIFY_SOCKET")?;
    let ops = Ops::new(config, turn, signal, render, notifier);
    tokio::spawn(ops.clone().sample_bandwidth());
    if let Some(addr) = ops.config().listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => serve(listener, ops.clone())?,
            Err(e) if !ops.config().explicit => {
                // The default address is best effort: a second floe on the host (or a test
                // suite running several) must not fail to start because of it.
                tracing::warn!(%addr, error = %e, "operations listener not started (default address in use); set --admin ADDR or --admin off");
            }
            Err(e) => {
                return Err(e).with_context(|| format!("binding the operations listener on {addr}"))
            }
        }
    }
    // Every listener is bound (the servers' tasks start right after): systemd may route to us.
    // MAINPID: floe is the main process even when started through a wrapper script.
    ops.notify(&format!(
        "READY=1\nSTATUS=serving\nMAINPID={}",
        std::process::id()
    ));
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(ops.clone().watchdog(every));
    }
    Ok((ops, signals))
}

fn serve(listener: tokio::net::TcpListener, ops: Ops) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the admin address")?;
    let auth = if ops.config().token.is_some() {
        "bearer token"
    } else {
        "no token: loopback clients only"
    };
    if ops.config().token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "operations listener on a non-loopback address without --admin-token: the admin API and /metrics answer loopback clients only");
    }
    // A stable line so scripts and tests can use `--admin 127.0.0.1:0`.
    println!("floe: operations on http://{addr} (/metrics, /healthz, /readyz, /v1/...; {auth})");
    let app = http::router(ops).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "operations listener stopped");
        }
    });
    Ok(())
}
