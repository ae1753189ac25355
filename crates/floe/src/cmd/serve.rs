//! `floe serve`: every server with safe local defaults.
//!
//! * STUN and TURN on 127.0.0.1:3478 (UDP and TCP) unless `--listen` says otherwise, RFC 5780
//!   discovery with `--alternate-ip`, TURN over TLS with `--tls-listen`;
//! * signalling (WebSocket, HTTP post box, ICE servers, demo page) on 127.0.0.1:8080 unless
//!   `--http` says otherwise. Its join answers carry this server's STUN/TURN URLs and TURN REST
//!   credentials minted with the TURN shared secret (a random one when none is configured).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use floe_signal_server::{SignalArgs, SignalServer};
use floe_turn_server::config::{ListenArgs, StunArgs, TurnArgs};

use crate::admin::reload::{ConfigReloader, FileKind, ServeDefaults, SignalReloader, TurnReloader};
use crate::admin::{self, AdminArgs};
use crate::cmd::turn;
use crate::config::{FileConfig, ServePlan};

/// Arguments of `floe serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file; flags override its keys.
    #[arg(long, short = 'c', env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listening options.
    #[command(flatten)]
    pub net: ListenArgs,
    /// STUN options.
    #[command(flatten)]
    pub stun: StunArgs,
    /// TURN options.
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Signalling options.
    #[command(flatten)]
    pub signal: SignalArgs,
    /// Operations options (admin listener, readiness, drain).
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The addresses clients reach: behind a 1:1 NAT (`--external-ip`), a bound address's IP is
/// replaced by the external IP of its family (ports are kept by a 1:1 NAT); a wildcard bound
/// address (`0.0.0.0`, `::`), which no client can use, by the relay IP of its family (the
/// host's address floe relays from).
fn advertised(bound: &[SocketAddr], external: &[IpAddr], relay: &[IpAddr]) -> Vec<SocketAddr> {
    let of_family =
        |list: &[IpAddr], a: &SocketAddr| list.iter().copied().find(|e| e.is_ipv4() == a.is_ipv4());
    bound
        .iter()
        .filter_map(|a| {
            let ip = match of_family(external, a) {
                Some(ip) => ip,
                None if a.ip().is_unspecified() => of_family(relay, a)?,
                None => a.ip(),
            };
            Some(SocketAddr::new(ip, a.port()))
        })
        .fold(Vec::new(), |mut out, a| {
            if !out.contains(&a) {
                out.push(a);
            }
            out
        })
}

/// `stun:`/`turn:`/`turns:` URLs for the bound addresses (RFC 7064, RFC 7065).
fn ice_urls(udp_tcp: &[SocketAddr], tls: &[SocketAddr]) -> (Vec<String>, Vec<String>) {
    let host = |a: &SocketAddr| match a.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", a.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", a.port()),
    };
    let stun = udp_tcp
        .iter()
        .map(|a| format!("stun:{}", host(a)))
        .collect();
    let mut turn: Vec<String> = Vec::new();
    for a in udp_tcp {
        turn.push(format!("turn:{}?transport=udp", host(a)));
        turn.push(format!("turn:{}?transport=tcp", host(a)));
    }
    for a in tls {
        turn.push(format!("turns:{}?transport=tcp", host(a)));
    }
    (stun, turn)
}

/// Runs `floe serve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut file = FileConfig::load_or_default(args.config.as_deref())?;
    crate::logging::from_file(file.log.as_deref())?;
    let config_path = args.config.clone();
    let admin_config = args.admin.resolve(std::mem::take(&mut file.admin))?;
    let mut listen = file.listen();
    let (net_args, turn_args, signal_args) =
        (args.net.clone(), args.turn.clone(), args.signal.clone());
    args.net.apply(&mut listen);
    args.turn.apply(&mut file.turn);
    let started = (file.turn.clone(), listen.clone());
    args.signal.apply(&mut file.signal);
    args.stun.apply(&mut file.stun);
    let ServePlan {
        turn: plan,
        mut signal,
    } = file.serve_plan(&listen)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let prometheus = admin::install_metrics()?;
        let turn_service = turn::start(&plan).await?;
        let turn_admin = turn_service.admin();
        let turn_service_admin = turn_service.admin();
        let mut serve_defaults = ServeDefaults {
            generated_secret: plan.generated_secret.clone(),
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
        };
        // The join answer's ICE servers: this deployment's URLs and credentials from the same
        // secret the TURN server accepts, unless configured explicitly.
        if signal.stun_urls.is_empty() && signal.turn_urls.is_empty() {
            let (external, relay) = (&plan.shell.turn.external_ips, &plan.shell.turn.relay_ips);
            let (stun, turn) = ice_urls(
                &advertised(&turn_service.local_addrs(), external, relay),
                &advertised(&turn_service.tls_addrs(), external, relay),
            );
            signal.stun_urls.clone_from(&stun);
            signal.turn_urls.clone_from(&turn);
            (serve_defaults.stun_urls, serve_defaults.turn_urls) = (stun, turn);
        }
        if plan.generated_secret.is_some() {
            println!("floe: TURN credentials: REST scheme with a random secret generated at start; the signalling server mints them (set --auth-secret to share it with other tools)");
        }
        let listener = tokio::net::TcpListener::bind(signal.http)
            .await
            .with_context(|| format!("binding HTTP on {}", signal.http))?;
        let http = listener.local_addr().context("reading the bound address")?;
        println!("floe signal: listening on http://{http}");
        println!("floe: demo page at http://{http}/");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let turn_task = tokio::spawn(turn_service.run({
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }));
        // The public port keeps its /metrics (loopback only in production mode); the operations
        // listener is the place to scrape.
        let public_metrics = prometheus.clone();
        let server =
            SignalServer::new(signal).with_metrics(Arc::new(move || {
                admin::render_metrics(&public_metrics, true, true)
            }));
        let (ops, signals) = admin::start(
            admin_config,
            prometheus,
            Some(turn_admin),
            Some(server.admin()),
        )
        .await?;
        let mut reloader = ConfigReloader::new(config_path, FileKind::Full);
        reloader.turn = Some(TurnReloader {
            net: net_args,
            args: turn_args,
            started,
            admin: turn_service_admin,
        });
        reloader.signal = Some(SignalReloader {
            args: signal_args,
            admin: server.admin(),
            serve: Some(serve_defaults),
        });
        ops.set_reloader(Arc::new(reloader));
        let signal_result = server.run(listener, ops.lifecycle(signals)).await;
        let _ = stop_tx.send(true);
        let _ = turn_task.await;
        signal_result.context("signalling server")?;
        println!("floe: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().expect("test address"))
            .collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter()
            .map(|a| a.parse().expect("test address"))
            .collect()
    }

    #[test]
    fn advertises_external_then_relay_ip_for_wildcards() {
        let bound = addrs(&["0.0.0.0:3478", "[::]:3478", "127.0.0.1:3479"]);
        // Wildcards take the relay IP of their family; a specific address stays.
        assert_eq!(
            advertised(&bound, &[], &ips(&["11.0.0.1", "2000:9::1"])),
            addrs(&["11.0.0.1:3478", "[2000:9::1]:3478", "127.0.0.1:3479"])
        );
        // The external IP wins over both.
        assert_eq!(
            advertised(
                &bound,
                &ips(&["11.0.0.7"]),
                &ips(&["10.9.0.1", "2000:9::1"])
            ),
            addrs(&["11.0.0.7:3478", "[2000:9::1]:3478", "11.0.0.7:3479"])
        );
        // A wildcard of a family with no relay IP is left out rather than advertised as 0.0.0.0.
        assert_eq!(
            advertised(&bound[..2], &[], &ips(&["11.0.0.1"])),
            addrs(&["11.0.0.1:3478"])
        );
    }
}
