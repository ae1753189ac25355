//! The configuration file (TOML). Every command-line flag has a key here; flags given on the
//! command line override the file. Unknown keys are rejected, so a typo is an error, not a
//! silently ignored setting.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// STUN/TURN listening addresses (UDP and TCP on each). Flag: `--listen`.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 alternate IP. Flag: `--alternate-ip`.
    pub alternate_ip: Option<IpAddr>,
    /// UDP sockets per address (0 = one per core). Flag: `--workers`.
    pub workers: Option<usize>,
    /// STUN tuning.
    #[serde(default)]
    pub stun: StunSection,
}

/// `[stun]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StunSection {
    /// SOFTWARE attribute; empty string omits it. Flag: `--software`.
    pub software: Option<String>,
    /// Largest PADDING echoed in RFC 5780 responses, bytes.
    pub max_padding: Option<usize>,
    /// Most concurrent TCP connections.
    pub max_tcp_connections: Option<usize>,
    /// Idle TCP connections are closed after this many seconds.
    pub tcp_idle_timeout_secs: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c: FileConfig = toml::from_str(
            r#"
            listen = ["127.0.0.1:3478", "[::1]:3478"]
            alternate_ip = "127.0.0.2"
            workers = 2
            [stun]
            software = ""
            max_padding = 600
            max_tcp_connections = 10
            tcp_idle_timeout_secs = 5
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.stun.max_padding, Some(600));
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = toml::from_str::<FileConfig>("lisen = []").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
