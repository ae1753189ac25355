//! Logging: one `tracing` subscriber for the process, writing to stderr, whose filter can be
//! replaced while the process runs (a configuration reload, docs/operations.md §6.1).
//!
//! The filter comes from `--log` (or `FLOE_LOG`) when given, else from the configuration file's
//! top-level `log` key, else `info`. A flag wins over the file at start and at every reload, as
//! every other flag does.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use anyhow::Context as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter when neither the flag nor the file names one.
pub const DEFAULT_FILTER: &str = "info";

struct Logging {
    /// The filter given with `--log`/`FLOE_LOG`, which the file cannot override.
    flag: Option<String>,
    /// Replaces the live filter.
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter in force (its text as configured).
    current: std::sync::Mutex<String>,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();

/// Parses a filter (tracing `EnvFilter` syntax: `info`, `warn,floe_turn_server=debug`).
pub fn parse(filter: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))
}

/// Installs the process's subscriber with the flag's filter (or `info`); call once, first thing.
pub fn init(flag: Option<String>, json: bool) {
    let text = flag.clone().unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let filter = match parse(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("floe: {e:#}; logging at {DEFAULT_FILTER}");
            EnvFilter::new(DEFAULT_FILTER)
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    // Colour codes only on a terminal: `floe serve 2>log` writes plain text (and NO_COLOR,
    // https://no-color.org, turns them off on a terminal too).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    let _ = LOGGING.set(Logging {
        flag,
        handle,
        current: std::sync::Mutex::new(text),
    });
}

/// The filter a configuration file's `log` key asks for, with the flag on top: `None` when it
/// is the one in force. An invalid filter is an error (the caller keeps the old one).
pub fn prepare(file_key: Option<&str>) -> anyhow::Result<Option<(String, EnvFilter)>> {
    let Some(logging) = LOGGING.get() else {
        return Ok(None);
    };
    let text = logging
        .flag
        .as_deref()
        .or(file_key)
        .unwrap_or(DEFAULT_FILTER)
        .to_owned();
    let current = logging
        .current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *current == text {
        return Ok(None);
    }
    let filter = parse(&text).context("the `log` key")?;
    Ok(Some((text, filter)))
}

/// Puts a filter from [`prepare`] in force; returns its text.
pub fn apply((text, filter): (String, EnvFilter)) -> anyhow::Result<String> {
    let Some(logging) = LOGGING.get() else {
        return Ok(text);
    };
    logging
        .handle
        .reload(filter)
        .context("replacing the log filter")?;
    *logging
        .current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = text.clone();
    Ok(text)
}

/// At start: the file's `log` key (unless the flag was given) replaces the start-up filter.
pub fn from_file(file_key: Option<&str>) -> anyhow::Result<()> {
    if let Some(next) = prepare(file_key)? {
        apply(next)?;
    }
    Ok(())
}
