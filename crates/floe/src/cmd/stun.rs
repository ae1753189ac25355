//! `floe stun`: STUN client.
use std::process::ExitCode;

/// Arguments of `floe stun`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `floe stun`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("floe stun: not wired yet")
}
