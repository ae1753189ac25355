//! The systemd notify protocol (sd_notify(3)): `READY=1` once every listener is bound,
//! `STOPPING=1` when a drain or the shutdown begins, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while the servers answer. A datagram to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); without it nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go, if systemd (or a test) asked for them.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Path(String),
    Abstract(String),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when unset or empty.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(s) if !s.is_empty() => Notifier::new(&s).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket `name` (a path, or `@name` for the abstract namespace).
    pub fn new(name: &str) -> io::Result<Notifier> {
        let target = match name.strip_prefix('@') {
            Some(a) => Target::Abstract(a.to_owned()),
            None => Target::Path(name.to_owned()),
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            target,
        })
    }

    /// Sends one notification (`KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p).map(drop),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                self.socket.send_to_addr(state.as_bytes(), &addr).map(drop)
            }
        }
    }

    /// Sends and logs a failure (a notification is never worth stopping for).
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, "systemd notification failed");
        }
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` is set): pings go out every half of it.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("floe-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let fake_systemd = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = fake_systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("floe-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_systemd = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1")
            .unwrap();
        let n = abstract_systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
