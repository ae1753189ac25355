//! systemd's service notification protocol (sd_notify(3)), for units with `Type=notify` and
//! `WatchdogSec=`: `READY=1` once every listener is bound, `STOPPING=1` when shutdown begins,
//! and `WATCHDOG=1` at half the watchdog interval while the async runtime runs.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). Without the
//! variable every call does nothing, so floe behaves the same outside systemd. A send that fails
//! is logged once and otherwise ignored: notification never stops the server.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The notification socket, when systemd (or a test) gave one.
#[derive(Debug)]
struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
}

fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER
        .get_or_init(|| {
            let name = std::env::var_os("NOTIFY_SOCKET")?;
            let name = name.to_str()?;
            let target = match name.strip_prefix('@') {
                Some(abstract_name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    std::os::unix::net::SocketAddr::from_abstract_name(abstract_name).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(name).ok()?,
            };
            let socket = UnixDatagram::unbound().ok()?;
            Some(Notifier { socket, target })
        })
        .as_ref()
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) if there is a socket.
fn send(state: &str) {
    static FAILED: AtomicBool = AtomicBool::new(false);
    let Some(n) = notifier() else { return };
    if let Err(e) = n.socket.send_to_addr(state.as_bytes(), &n.target) {
        if !FAILED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "systemd notification failed (NOTIFY_SOCKET)");
        }
    }
}

/// Every listener is bound: the service is up. `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={}\nMAINPID={}",
        one_line(status),
        std::process::id()
    ));
}

/// Shutdown has begun.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process if
/// `$WATCHDOG_PID` names one).
fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Starts the watchdog task on the current tokio runtime when systemd asked for one: a
/// `WATCHDOG=1` every half interval, so a stalled runtime (no timer fires) gets the service
/// restarted.
pub fn start_watchdog() {
    let (Some(_), Some(interval)) = (notifier(), watchdog_interval()) else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            send("WATCHDOG=1");
        }
    });
}

/// `STATUS=` takes one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
