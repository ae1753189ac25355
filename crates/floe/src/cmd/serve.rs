//! `floe serve`: every server with safe local defaults.
use std::process::ExitCode;

/// Arguments of `floe serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `floe serve`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("floe serve: not wired yet")
}
