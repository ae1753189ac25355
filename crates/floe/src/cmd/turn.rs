//! `floe turn`: the TURN relay (which also answers STUN Binding) alone. Its flags, file keys,
//! defaults and validation live in [`floe_turn_server::config`]; this module wires them and
//! prints what it started (also for `floe serve`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use floe_turn_server::config::{ListenArgs, TurnArgs, TurnPlan};
use floe_turn_server::turn::TurnService;

use crate::admin::reload::{ConfigReloader, FileKind, TurnReloader};
use crate::admin::{self, AdminArgs};
use crate::config::FileConfig;

/// Arguments of `floe turn`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file; flags override its keys.
    #[arg(long, short = 'c', env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listening options.
    #[command(flatten)]
    pub net: ListenArgs,
    /// TURN options.
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Operations options (admin listener, readiness, drain).
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `floe turn`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut file = FileConfig::load_or_default(args.config.as_deref())?;
    crate::logging::from_file(file.log.as_deref())?;
    let config_path = args.config.clone();
    let admin_config = args.admin.resolve(std::mem::take(&mut file.admin))?;
    let mut listen = file.listen();
    let (net_args, turn_args) = (args.net.clone(), args.turn.clone());
    args.net.apply(&mut listen);
    args.turn.apply(&mut file.turn);
    let plan = file.turn.shell_config(&listen, false)?;
    let started = (file.turn.clone(), listen.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let prometheus = admin::install_metrics()?;
        let service = start(&plan).await?;
        let (ops, signals) =
            admin::start(admin_config, prometheus, Some(service.admin()), None).await?;
        let mut reloader = ConfigReloader::new(config_path, FileKind::Full);
        reloader.turn = Some(TurnReloader {
            net: net_args,
            args: turn_args,
            started,
            admin: service.admin(),
        });
        ops.set_reloader(Arc::new(reloader));
        service.run(ops.lifecycle(signals)).await;
        println!("floe: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Binds the TURN service and prints what it started.
pub async fn start(plan: &TurnPlan) -> anyhow::Result<TurnService> {
    let service = TurnService::bind(plan.shell.clone())
        .await
        .context("starting the TURN server")?;
    for addr in service.all_addrs() {
        println!("floe: TURN listening on udp://{addr} and tcp://{addr} (STUN Binding too)");
    }
    for addr in service.tls_addrs() {
        println!("floe: TURN over TLS listening on tls://{addr}");
    }
    let ips: Vec<String> = plan
        .shell
        .turn
        .relay_ips
        .iter()
        .map(|i| i.to_string())
        .collect();
    println!(
        "floe: relaying from {} (ports {}-{}), realm {:?}",
        ips.join(", "),
        plan.shell.turn.relay_ports.start(),
        plan.shell.turn.relay_ports.end(),
        plan.shell.turn.realm()
    );
    for choice in &plan.auto_relay {
        let ip = choice.address.ip;
        println!(
            "floe: relay address {ip} chosen from interface {} (listening on a wildcard address; --relay-ip chooses another)",
            choice.address.interface
        );
        let advertised = plan
            .shell
            .turn
            .external_ips
            .iter()
            .any(|e| e.is_ipv4() == ip.is_ipv4());
        if choice.behind_nat && !advertised {
            println!(
                "floe: warning: {ip} is a private address, so peers on the internet reach it only through a 1:1 NAT: give --external-ip with the public address of this host"
            );
        }
    }
    for ip in &plan.shell.alternate_ips {
        println!("floe: RFC 5780 NAT discovery on (alternate IP {ip})");
    }
    Ok(service)
}
