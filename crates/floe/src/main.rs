//! The `floe` binary: one executable, one subcommand per role.
//!
//! `floe serve` runs every server with safe local defaults; the other subcommands run one role or
//! act as a client. Argument parsing and logging setup live here; everything else is in libraries.

mod admin;
mod cmd;
mod config;
mod http_client;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// floe: STUN, TURN and WebRTC signalling in one binary.
#[derive(Debug, Parser)]
#[command(name = "floe", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `floe_turn_server=debug`.
    /// Default: the configuration file's `log` key, else `info`; given here it wins over the
    /// file, also at a reload.
    #[arg(long, global = true, env = "FLOE_LOG")]
    log: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every server (STUN, TURN, signalling) with safe local defaults.
    Serve(Box<cmd::serve::Args>),
    /// STUN client: print the mapped address, or (--nat) run RFC 5780 NAT discovery.
    Stun(cmd::stun::Args),
    /// Run the TURN relay (with STUN Binding) alone.
    Turn(Box<cmd::turn::Args>),
    /// Mint a TURN REST API credential (username and password) from a shared secret.
    Credentials(cmd::credentials::Args),
    /// Run the signalling server alone (WebSocket, HTTP post box, demo page).
    Signal(Box<cmd::signal::Args>),
    /// Mint a signalling JWT (HS256) for scripts, tests and the demo.
    Token(cmd::token::Args),
    /// A WebRTC peer: chat, or send and receive files, through floe (directly or relayed).
    Peer(cmd::peer::Args),
    /// Configuration files: `floe config check FILE` validates one and prints the effective
    /// configuration.
    Config(cmd::config::Args),
    /// Check a deployment from the outside: ICE servers, certificates, credentials, the
    /// advertised address and the relay ports, each failure explained with its fix.
    Doctor(cmd::doctor::Args),
    /// Operations client: list and end allocations and sessions, revoke, drain, readiness.
    Admin(cmd::admin::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log, cli.log_json);
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Stun(args) => cmd::stun::run(args),
        Command::Turn(args) => cmd::turn::run(*args),
        Command::Credentials(args) => cmd::credentials::run(args),
        Command::Signal(args) => cmd::signal::run(*args),
        Command::Token(args) => cmd::token::run(args),
        Command::Peer(args) => cmd::peer::run(args),
        Command::Config(args) => cmd::config::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Admin(args) => cmd::admin::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("floe: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
