//! `floe serve`: every server with safe local defaults.
//!
//! At this stage: the STUN server (UDP and TCP) on 127.0.0.1:3478 unless `--listen` says
//! otherwise, with RFC 5780 discovery when `--alternate-ip` is given.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use floe_server::stun::{StunConfig, StunServer};

use crate::config::FileConfig;

/// Arguments of `floe serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file; flags override its keys.
    #[arg(long, short = 'c', env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    /// STUN/TURN listening address, UDP and TCP (repeatable). Default 127.0.0.1:3478.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Second IP address of this host: turns on RFC 5780 NAT discovery (alternate port =
    /// primary port + 1).
    #[arg(long, value_name = "IP")]
    pub alternate_ip: Option<IpAddr>,
    /// UDP sockets per address (0 = one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// SOFTWARE attribute in responses ("" to omit).
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,
}

/// The STUN configuration from the file and the flags (flags win).
pub fn stun_config(args: &Args, file: &FileConfig) -> StunConfig {
    let defaults = StunConfig::default();
    let listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else if !file.listen.is_empty() {
        file.listen.clone()
    } else {
        defaults.listen.clone()
    };
    let software = args
        .software
        .clone()
        .or_else(|| file.stun.software.clone())
        .map(|s| if s.is_empty() { None } else { Some(s) })
        .unwrap_or(defaults.software.clone());
    StunConfig {
        listen,
        alternate_ip: args.alternate_ip.or(file.alternate_ip),
        workers: args.workers.or(file.workers).unwrap_or(defaults.workers),
        software,
        max_tcp_connections: file
            .stun
            .max_tcp_connections
            .unwrap_or(defaults.max_tcp_connections),
        tcp_idle_timeout: file
            .stun
            .tcp_idle_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(defaults.tcp_idle_timeout),
        max_padding: file.stun.max_padding.unwrap_or(defaults.max_padding),
    }
}

/// Runs `floe serve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let stun = stun_config(&args, &file);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = StunServer::bind(stun.clone())
            .await
            .context("starting the STUN server")?;
        for addr in server.all_udp_addrs() {
            println!("floe: STUN listening on udp://{addr} and tcp://{addr}");
        }
        match stun.alternate_ip {
            Some(ip) => println!("floe: RFC 5780 NAT discovery on (alternate IP {ip})"),
            None => println!("floe: RFC 5780 NAT discovery off (no --alternate-ip)"),
        }
        tracing::info!(listen = ?server.local_addrs(), "STUN server started");
        server.run(shutdown_signal()).await;
        println!("floe: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
