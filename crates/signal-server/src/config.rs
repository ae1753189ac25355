//! Configuration: [`SignalConfig`] is the `[signal]` section of a TOML config file (unknown keys
//! are errors) and [`SignalArgs`] the matching command-line flags, which override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use floe_signal::auth::{Auth, JwtVerifier, KeyError};
use floe_signal::ice::{IceConfig, DEFAULT_TURN_TTL_SECS};
use floe_signal::HubConfig;
use serde::Deserialize;

/// JWT signature algorithm for a public-key verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// Ed25519 (`EdDSA`).
    #[serde(rename = "EdDSA")]
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDsa,
    /// P-256 ECDSA (`ES256`).
    #[serde(rename = "ES256")]
    #[value(name = "ES256", alias = "es256")]
    Es256,
}

/// The signalling server's settings. Every field has a flag in [`SignalArgs`] and a key of the
/// same name in the `[signal]` section of the config file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    /// HTTP and WebSocket listen address (`--http`). Default 127.0.0.1:8080.
    pub http: SocketAddr,
    /// HS256 shared secret; setting it (or `jwt_public_key`) turns on production mode.
    pub jwt_secret: Option<String>,
    /// PEM public key file for EdDSA or ES256 tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of `jwt_public_key` (default EdDSA).
    pub jwt_algorithm: JwtAlgorithm,
    /// Clock-skew allowance for token `exp`/`nbf`, seconds (default 5).
    pub jwt_leeway_secs: u64,
    /// `stun:` URLs handed to peers.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs handed to peers with minted credentials.
    pub turn_urls: Vec<String>,
    /// The TURN server's REST shared secret (its `--auth-secret`).
    pub turn_secret: Option<String>,
    /// Lifetime of minted TURN credentials, seconds (default 3600).
    pub turn_ttl_secs: u64,
    /// Largest accepted message, bytes (default 65536).
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection (default 50).
    pub msgs_per_sec: u32,
    /// Message burst per connection (default 200).
    pub msg_burst: u32,
    /// Joins per minute per IP address (default 60).
    pub joins_per_min_per_ip: u32,
    /// Peers per room (default 50).
    pub max_peers_per_room: usize,
    /// Rooms on this node (default 10000).
    pub max_rooms: usize,
    /// Concurrent WebSocket connections (default 10000).
    pub max_ws_connections: usize,
    /// How long a disconnected session waits for resume, seconds (default 30).
    pub resume_ttl_secs: u64,
    /// Heartbeat interval told to clients, seconds (default 10; 3 missed end a connection).
    pub heartbeat_secs: u64,
    /// On shutdown, the reconnect delay suggested to clients and the time allowed for
    /// connections to drain, milliseconds (default 1000).
    pub shutdown_grace_ms: u64,
    /// `redis://[user:password@]host:port[/db]`: share rooms with other nodes through this
    /// Redis server (default: none, rooms live in this process).
    pub redis_url: Option<String>,
    /// Multi-node: a node silent for this long is considered dead and its peers leave with
    /// `timeout`, seconds (default 10).
    pub redis_node_ttl_secs: u64,
}

impl std::fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalConfig")
            .field("http", &self.http)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| ".."))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| ".."))
            .field("max_message_bytes", &self.max_message_bytes)
            .field("redis_url", &self.redis_url.as_ref().map(|_| ".."))
            .field("redis_node_ttl_secs", &self.redis_node_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Default for SignalConfig {
    fn default() -> Self {
        let hub = HubConfig::default();
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret: None,
            jwt_public_key: None,
            jwt_algorithm: JwtAlgorithm::EdDsa,
            jwt_leeway_secs: 5,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: DEFAULT_TURN_TTL_SECS,
            max_message_bytes: hub.max_message_bytes,
            msgs_per_sec: hub.msgs_per_sec,
            msg_burst: hub.msg_burst,
            joins_per_min_per_ip: hub.joins_per_min_per_ip,
            max_peers_per_room: hub.max_peers_per_room,
            max_rooms: hub.max_rooms,
            max_ws_connections: 10_000,
            resume_ttl_secs: hub.resume_ttl.as_secs(),
            heartbeat_secs: hub.heartbeat.as_secs(),
            shutdown_grace_ms: 1000,
            redis_url: None,
            redis_node_ttl_secs: 10,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Both a secret and a public key were given.
    #[error("set either jwt_secret or jwt_public_key, not both")]
    TwoJwtKeys,
    /// The public key file could not be read.
    #[error("cannot read JWT public key {path}: {source}")]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A limit is zero or out of range.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// TURN URLs without a secret to mint credentials.
    #[error("turn_urls need turn_secret (the TURN server's REST auth secret) to mint credentials")]
    TurnWithoutSecret,
    /// `redis_url` is unusable (the message never repeats the URL: it may hold a password).
    #[error("redis_url: {0}")]
    RedisUrl(String),
}

impl SignalConfig {
    /// Whether tokens are required.
    pub fn is_production(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    /// Builds the join authoriser (reads the public key file, if any).
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        let verifier = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoJwtKeys),
            (None, None) => return Ok(Auth::Development),
            (Some(secret), None) => JwtVerifier::hs256(secret.as_bytes())?,
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| ConfigError::ReadKey {
                    path: path.clone(),
                    source,
                })?;
                match self.jwt_algorithm {
                    JwtAlgorithm::EdDsa => JwtVerifier::eddsa_pem(&pem)?,
                    JwtAlgorithm::Es256 => JwtVerifier::es256_pem(&pem)?,
                }
            }
        };
        Ok(Auth::Jwt(verifier.with_leeway(self.jwt_leeway_secs)))
    }

    /// The ICE server settings.
    pub fn ice(&self) -> IceConfig {
        IceConfig {
            stun_urls: self.stun_urls.clone(),
            turn_urls: self.turn_urls.clone(),
            turn_secret: self.turn_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            turn_ttl_secs: self.turn_ttl_secs,
        }
    }

    /// Checks the settings and builds the hub configuration.
    pub fn hub_config(&self) -> Result<HubConfig, ConfigError> {
        let nonzero = [
            ("max_message_bytes", self.max_message_bytes as u64),
            ("msgs_per_sec", u64::from(self.msgs_per_sec)),
            ("msg_burst", u64::from(self.msg_burst)),
            ("joins_per_min_per_ip", u64::from(self.joins_per_min_per_ip)),
            ("max_peers_per_room", self.max_peers_per_room as u64),
            ("max_rooms", self.max_rooms as u64),
            ("max_ws_connections", self.max_ws_connections as u64),
            ("resume_ttl_secs", self.resume_ttl_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("turn_ttl_secs", self.turn_ttl_secs),
            ("redis_node_ttl_secs", self.redis_node_ttl_secs),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if !self.turn_urls.is_empty() && self.turn_secret.is_none() {
            return Err(ConfigError::TurnWithoutSecret);
        }
        if let Some(url) = &self.redis_url {
            crate::redis_bus::describe(url).map_err(|e| ConfigError::RedisUrl(e.0))?;
        }
        Ok(HubConfig {
            auth: self.auth()?,
            ice: self.ice(),
            max_message_bytes: self.max_message_bytes,
            msgs_per_sec: self.msgs_per_sec,
            msg_burst: self.msg_burst,
            joins_per_min_per_ip: self.joins_per_min_per_ip,
            max_peers_per_room: self.max_peers_per_room,
            max_rooms: self.max_rooms,
            resume_ttl: Duration::from_secs(self.resume_ttl_secs),
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            ..HubConfig::default()
        })
    }
}

/// Command-line flags for the signalling server (flatten into `floe signal` and `floe serve`).
/// Each flag overrides the config-file key of the same name (dashes for underscores).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SignalArgs {
    /// HTTP and WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// HS256 secret: require JWTs (production mode). Prefer the environment variable.
    #[arg(
        long,
        env = "FLOE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key for EdDSA/ES256 JWTs (production mode).
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of --jwt-public-key [default: EdDSA].
    #[arg(long, value_name = "ALG")]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// STUN URL handed to peers (repeatable), e.g. stun:203.0.113.5:3478.
    #[arg(long = "stun-url", value_name = "URL")]
    pub stun_urls: Vec<String>,
    /// TURN URL handed to peers with minted credentials (repeatable).
    #[arg(long = "turn-url", value_name = "URL")]
    pub turn_urls: Vec<String>,
    /// The TURN server's REST shared secret, used to mint per-peer credentials.
    #[arg(
        long,
        env = "FLOE_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub turn_secret: Option<String>,
    /// Lifetime of minted TURN credentials [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    pub turn_ttl: Option<u64>,
    /// Largest accepted message [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Sustained messages per second per connection [default: 50].
    #[arg(long, value_name = "N")]
    pub msgs_per_sec: Option<u32>,
    /// Message burst per connection [default: 200].
    #[arg(long, value_name = "N")]
    pub msg_burst: Option<u32>,
    /// Joins per minute per IP address [default: 60].
    #[arg(long, value_name = "N")]
    pub joins_per_min_per_ip: Option<u32>,
    /// Peers per room [default: 50].
    #[arg(long, value_name = "N")]
    pub max_peers_per_room: Option<usize>,
    /// Rooms on this node [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Concurrent WebSocket connections [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_ws_connections: Option<usize>,
    /// How long a disconnected session waits for resume [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub resume_ttl: Option<u64>,
    /// Heartbeat interval told to clients [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat: Option<u64>,
    /// Share rooms with other nodes through Redis: redis://[user:password@]HOST:PORT[/DB]
    /// (prefer the environment variable when the URL holds a password).
    #[arg(
        long,
        env = "FLOE_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: Option<String>,
    /// Multi-node: seconds after which a silent node's peers leave [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub redis_node_ttl: Option<u64>,
}

impl SignalArgs {
    /// Applies the flags that were given on top of `config` (usually from the file).
    pub fn apply(self, config: &mut SignalConfig) {
        fn set<T>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        set(&mut config.http, self.http);
        if self.jwt_secret.is_some() {
            config.jwt_secret = self.jwt_secret;
        }
        if self.jwt_public_key.is_some() {
            config.jwt_public_key = self.jwt_public_key;
        }
        set(&mut config.jwt_algorithm, self.jwt_algorithm);
        if !self.stun_urls.is_empty() {
            config.stun_urls = self.stun_urls;
        }
        if !self.turn_urls.is_empty() {
            config.turn_urls = self.turn_urls;
        }
        if self.turn_secret.is_some() {
            config.turn_secret = self.turn_secret;
        }
        set(&mut config.turn_ttl_secs, self.turn_ttl);
        set(&mut config.max_message_bytes, self.max_message_bytes);
        set(&mut config.msgs_per_sec, self.msgs_per_sec);
        set(&mut config.msg_burst, self.msg_burst);
        set(&mut config.joins_per_min_per_ip, self.joins_per_min_per_ip);
        set(&mut config.max_peers_per_room, self.max_peers_per_room);
        set(&mut config.max_rooms, self.max_rooms);
        set(&mut config.max_ws_connections, self.max_ws_connections);
        set(&mut config.resume_ttl_secs, self.resume_ttl);
        set(&mut config.heartbeat_secs, self.heartbeat);
        if self.redis_url.is_some() {
            config.redis_url = self.redis_url;
        }
        set(&mut config.redis_node_ttl_secs, self.redis_node_ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_section_parses_and_rejects_unknown_keys() {
        let c: SignalConfig = toml::from_str(
            "http = \"127.0.0.1:9000\"\njwt_secret = \"s\"\nmax_peers_per_room = 4\njwt_algorithm = \"ES256\"\n",
        )
        .unwrap();
        assert_eq!(c.http.port(), 9000);
        assert!(c.is_production());
        assert_eq!(c.max_peers_per_room, 4);
        assert_eq!(c.jwt_algorithm, JwtAlgorithm::Es256);
        assert_eq!(c.resume_ttl_secs, 30);
        let e = toml::from_str::<SignalConfig>("max_peer_per_room = 4").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn flags_override_file_values() {
        let mut c = SignalConfig {
            max_rooms: 7,
            ..SignalConfig::default()
        };
        SignalArgs {
            max_peers_per_room: Some(3),
            ..SignalArgs::default()
        }
        .apply(&mut c);
        assert_eq!((c.max_rooms, c.max_peers_per_room), (7, 3));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let c = SignalConfig {
            msgs_per_sec: 0,
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::Zero("msgs_per_sec"))
        ));
        let c = SignalConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::TurnWithoutSecret)
        ));
        let c = SignalConfig {
            jwt_secret: Some("a".into()),
            jwt_public_key: Some("k.pem".into()),
            ..SignalConfig::default()
        };
        assert!(matches!(c.auth(), Err(ConfigError::TwoJwtKeys)));
        assert!(!SignalConfig::default().is_production());
        let c = SignalConfig {
            redis_url: Some("http://user:hunter2@example".into()),
            ..SignalConfig::default()
        };
        let e = c
            .hub_config()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("redis_url:") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn redis_keys_parse_and_flags_override() {
        let mut c: SignalConfig =
            toml::from_str("redis_url = \"redis://127.0.0.1:6379/2\"\nredis_node_ttl_secs = 4\n")
                .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379/2"));
        assert_eq!(c.redis_node_ttl_secs, 4);
        assert!(c.hub_config().is_ok());
        SignalArgs {
            redis_url: Some("redis://127.0.0.1:7000".into()),
            redis_node_ttl: Some(3),
            ..SignalArgs::default()
        }
        .apply(&mut c);
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:7000"));
        assert_eq!(c.redis_node_ttl_secs, 3);
        assert!(!format!("{c:?}").contains("127.0.0.1:7000"));
    }
}
