//! `floe stun HOST:PORT`: print the mapped address; `--nat` runs RFC 5780 discovery.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use floe_turn_server::stun_client;

/// Arguments of `floe stun`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The STUN server, HOST:PORT.
    #[arg(value_name = "HOST:PORT")]
    pub server: String,
    /// Run RFC 5780 NAT behaviour discovery (mapping and filtering).
    #[arg(long)]
    pub nat: bool,
    /// Use TCP instead of UDP (plain Binding only).
    #[arg(long, conflicts_with = "nat")]
    pub tcp: bool,
    /// Local address to send from.
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub timeout: f64,
}

/// Runs `floe stun`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let server = args
        .server
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", args.server))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.server))?;
    let timeout = Duration::try_from_secs_f64(args.timeout).context("--timeout")?;
    if args.tcp {
        let r = stun_client::binding_tcp(server, timeout)?;
        println!("mapped address: {}", r.mapped);
        return Ok(ExitCode::SUCCESS);
    }
    let bind = args.bind.unwrap_or_else(|| {
        if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        }
    });
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    if args.nat {
        let report = stun_client::discover_nat(&socket, server, timeout)?;
        println!("local address: {}", report.local);
        println!("mapped address: {}", report.mapped);
        println!("other address: {}", report.other);
        println!("mapping behaviour: {}", report.mapping);
        println!("filtering behaviour: {}", report.filtering);
    } else {
        let r = stun_client::binding_udp(&socket, server, None, timeout)?;
        println!("mapped address: {}", r.mapped);
        if let Some(other) = r.other {
            println!("other address: {other}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
