//! Configuration: [`SignalConfig`] is the `[signal]` section of a TOML config file (unknown keys
//! are errors) and [`SignalArgs`] the matching command-line flags, which override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use floe_signal::auth::{Auth, JwtVerifier, KeyError};
use floe_signal::ice::{IceConfig, DEFAULT_TURN_TTL_SECS};
use floe_signal::HubConfig;
use serde::{Deserialize, Serialize};

pub use crate::origin::OriginError;
pub use floe_turn::policy::{Cidr, CidrError};

/// JWT signature algorithm for a public-key verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
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
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Earlier HS256 secrets still accepted during a key rotation (with a current `jwt_secret` or
    /// `jwt_public_key`); sessions their tokens admitted survive a reload that keeps them.
    pub jwt_previous_secrets: Vec<String>,
    /// Earlier public key files (of `jwt_algorithm`) still accepted during a key rotation.
    pub jwt_previous_public_keys: Vec<PathBuf>,
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
    /// Reverse proxies (CIDR, no host bits: `10.0.0.0/8`, not `10.0.0.1/8`) whose
    /// `X-Forwarded-For`/`Forwarded` headers name the client (default none: the socket peer is
    /// the client and such headers are ignored).
    #[serde(deserialize_with = "cidrs", serialize_with = "cidr_strings")]
    pub trusted_proxies: Vec<Cidr>,
    /// Web origins (`https://app.example`) allowed to use the server from another origin: CORS
    /// for REST and `/v1/ice-servers`, and the WebSocket/REST `Origin` check (default none).
    pub allow_origins: Vec<String>,
    /// HTTP post-box long-polls parked at once on this node; beyond, `server_busy` 503 (default
    /// 10000).
    pub max_rest_waiters: usize,
    /// Post-box long-polls parked at once per session; a newer one answers the oldest at once
    /// (default 2).
    pub max_rest_waiters_per_session: usize,
    /// Longest post-box long-poll, seconds (default 25; also kept below `resume_ttl_secs`).
    pub max_poll_wait_secs: u64,
    /// Messages returned by one post-box poll (default 256).
    pub rest_poll_batch: usize,
    /// Time allowed between connecting and `join`/`resume`, seconds (default 10).
    pub join_timeout_secs: u64,
    /// Consecutive rate-limited messages after which a connection is closed (default 50).
    pub max_rate_violations: u32,
    /// IP addresses tracked by the join limiter; beyond, new addresses are refused until
    /// entries age out (default 100000).
    pub max_tracked_ips: usize,
    /// Unacknowledged messages per session before `mailbox_overflow` (default 1024).
    pub mailbox_max_msgs: usize,
    /// Unacknowledged bytes per session before `mailbox_overflow` (default 1048576).
    pub mailbox_max_bytes: usize,
    /// Candidates held per peer pair until an offer or answer passes (default 128).
    pub max_held_candidates: usize,
    /// Frames queued towards one WebSocket before it counts as a slow consumer and is cut off
    /// (default 2048; more than `mailbox_max_msgs`, as a resume replays a whole mailbox).
    pub ws_outbound_queue: usize,
    /// Bytes queued towards one WebSocket before it counts as a slow consumer and is cut off
    /// with `slow_consumer` (default 2097152: a resume replays up to `mailbox_max_bytes` of
    /// payload at once, and the JSON around each message needs room too).
    pub ws_outbound_max_bytes: usize,
    /// Open TCP connections to the signalling port, whatever they carry (plain HTTP, post-box
    /// long-polls, WebSockets). Default: a quarter of the open-files limit (`ulimit -n`) found
    /// at start, between 64 and 10000: the rest is left to TURN and the process itself.
    pub max_connections: Option<usize>,
    /// Open TCP connections per peer address, counted at accept (trusted proxies exempt)
    /// (default 64, at most a quarter of `max_connections`).
    pub max_connections_per_ip: Option<usize>,
    /// Time allowed for a complete HTTP request head, from connecting or from the previous
    /// answer on a kept-alive connection (so also the keep-alive idle deadline), seconds
    /// (default 10).
    pub http_header_timeout_secs: u64,
    /// Time allowed to read a request body and answer, on top of the longest post-box poll,
    /// seconds (default 10).
    pub http_request_timeout_secs: u64,
}

impl std::fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalConfig")
            .field("http", &self.http)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| ".."))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("jwt_previous_secrets", &self.jwt_previous_secrets.len())
            .field("jwt_previous_public_keys", &self.jwt_previous_public_keys)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| ".."))
            .field("max_message_bytes", &self.max_message_bytes)
            .field("redis_url", &self.redis_url.as_ref().map(|_| ".."))
            .field("redis_node_ttl_secs", &self.redis_node_ttl_secs)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_origins", &self.allow_origins)
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
            jwt_previous_secrets: Vec::new(),
            jwt_previous_public_keys: Vec::new(),
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
            trusted_proxies: Vec::new(),
            allow_origins: Vec::new(),
            max_rest_waiters: 10_000,
            max_rest_waiters_per_session: 2,
            max_poll_wait_secs: 25,
            rest_poll_batch: hub.post_box_poll_batch,
            join_timeout_secs: hub.join_timeout.as_secs(),
            max_rate_violations: hub.max_rate_violations,
            max_tracked_ips: hub.max_tracked_ips,
            mailbox_max_msgs: hub.mailbox_max_msgs,
            mailbox_max_bytes: hub.mailbox_max_bytes,
            max_held_candidates: hub.max_held_candidates,
            ws_outbound_queue: 2048,
            ws_outbound_max_bytes: 2 << 20,
            max_connections: None,
            max_connections_per_ip: None,
            http_header_timeout_secs: 10,
            http_request_timeout_secs: 10,
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
    /// Earlier keys of a rotation without a current key.
    #[error("jwt_previous_secrets and jwt_previous_public_keys need a current jwt_secret or jwt_public_key")]
    PreviousWithoutCurrent,
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
    /// An `allow_origins` entry is unusable.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The mailbox byte limit cannot hold one message.
    #[error("mailbox_max_bytes ({mailbox}) must be at least max_message_bytes ({message})")]
    MailboxTooSmall {
        /// `mailbox_max_bytes`.
        mailbox: usize,
        /// `max_message_bytes`.
        message: usize,
    },
    /// The WebSocket outbound byte limit cannot hold a resume's replay of a full mailbox.
    #[error(
        "ws_outbound_max_bytes ({outbound}) must be at least mailbox_max_bytes + max_message_bytes + 256 * mailbox_max_msgs ({replay}): a resume replays the whole mailbox at once"
    )]
    OutboundTooSmall {
        /// `ws_outbound_max_bytes`.
        outbound: usize,
        /// `mailbox_max_bytes + max_message_bytes + 256 * mailbox_max_msgs`.
        replay: usize,
    },
    /// The WebSocket outbound frame limit cannot hold a resume's replay of a full mailbox.
    #[error(
        "ws_outbound_queue ({queue}) must be above mailbox_max_msgs ({mailbox}): a resume replays the whole mailbox at once"
    )]
    OutboundQueueTooShort {
        /// `ws_outbound_queue`.
        queue: usize,
        /// `mailbox_max_msgs`.
        mailbox: usize,
    },
    /// A value above its upper bound.
    #[error("{name} must be at most {max}")]
    TooLarge {
        /// The key.
        name: &'static str,
        /// The bound.
        max: u64,
    },
}

impl SignalConfig {
    /// Whether tokens are required.
    pub fn is_production(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    /// Builds the join authoriser (reads the public key file, if any).
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        let has_previous =
            !self.jwt_previous_secrets.is_empty() || !self.jwt_previous_public_keys.is_empty();
        let mut verifier = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoJwtKeys),
            (None, None) if has_previous => return Err(ConfigError::PreviousWithoutCurrent),
            (None, None) => return Ok(Auth::Development),
            (Some(secret), None) => JwtVerifier::hs256(secret.as_bytes())?,
            (None, Some(path)) => self.public_key(path)?,
        };
        for secret in &self.jwt_previous_secrets {
            verifier = verifier.also_accept(JwtVerifier::hs256(secret.as_bytes())?);
        }
        for path in &self.jwt_previous_public_keys {
            verifier = verifier.also_accept(self.public_key(path)?);
        }
        Ok(Auth::Jwt(verifier.with_leeway(self.jwt_leeway_secs)))
    }

    /// A verifier for the public key file at `path`, of `jwt_algorithm`.
    fn public_key(&self, path: &PathBuf) -> Result<JwtVerifier, ConfigError> {
        let pem = std::fs::read(path).map_err(|source| ConfigError::ReadKey {
            path: path.clone(),
            source,
        })?;
        Ok(match self.jwt_algorithm {
            JwtAlgorithm::EdDsa => JwtVerifier::eddsa_pem(&pem)?,
            JwtAlgorithm::Es256 => JwtVerifier::es256_pem(&pem)?,
        })
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
            ("max_rest_waiters", self.max_rest_waiters as u64),
            (
                "max_rest_waiters_per_session",
                self.max_rest_waiters_per_session as u64,
            ),
            ("max_poll_wait_secs", self.max_poll_wait_secs),
            ("rest_poll_batch", self.rest_poll_batch as u64),
            ("join_timeout_secs", self.join_timeout_secs),
            ("max_rate_violations", u64::from(self.max_rate_violations)),
            ("max_tracked_ips", self.max_tracked_ips as u64),
            ("mailbox_max_msgs", self.mailbox_max_msgs as u64),
            ("mailbox_max_bytes", self.mailbox_max_bytes as u64),
            ("max_held_candidates", self.max_held_candidates as u64),
            ("ws_outbound_queue", self.ws_outbound_queue as u64),
            ("ws_outbound_max_bytes", self.ws_outbound_max_bytes as u64),
            ("max_connections", self.max_connections.unwrap_or(1) as u64),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.unwrap_or(1) as u64,
            ),
            ("http_header_timeout_secs", self.http_header_timeout_secs),
            ("http_request_timeout_secs", self.http_request_timeout_secs),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        // Bounds that keep timers and semaphores in range (tokio's semaphore holds at most
        // usize::MAX >> 3 permits; a poll longer than 5 minutes only ties up a waiter).
        let bounded = [
            ("max_poll_wait_secs", self.max_poll_wait_secs, 300),
            (
                "max_ws_connections",
                self.max_ws_connections as u64,
                1 << 24,
            ),
            ("max_rest_waiters", self.max_rest_waiters as u64, 1 << 24),
            ("ws_outbound_queue", self.ws_outbound_queue as u64, 1 << 20),
            ("join_timeout_secs", self.join_timeout_secs, 3600),
            (
                "max_connections",
                self.max_connections.unwrap_or(1) as u64,
                1 << 24,
            ),
            (
                "http_header_timeout_secs",
                self.http_header_timeout_secs,
                3600,
            ),
            (
                "http_request_timeout_secs",
                self.http_request_timeout_secs,
                3600,
            ),
        ];
        if let Some((name, _, max)) = bounded.iter().find(|(_, v, max)| v > max) {
            return Err(ConfigError::TooLarge { name, max: *max });
        }
        // A resume sends `resumed` and replays the whole mailbox at once: the queue towards the
        // WebSocket must hold it, with the JSON around each message that the mailbox's payload
        // accounting leaves out (REPLAY_OVERHEAD bytes per message).
        if self.ws_outbound_queue <= self.mailbox_max_msgs {
            return Err(ConfigError::OutboundQueueTooShort {
                queue: self.ws_outbound_queue,
                mailbox: self.mailbox_max_msgs,
            });
        }
        let replay = self
            .mailbox_max_bytes
            .saturating_add(self.max_message_bytes)
            .saturating_add(self.mailbox_max_msgs.saturating_mul(REPLAY_OVERHEAD));
        if self.ws_outbound_max_bytes < replay {
            return Err(ConfigError::OutboundTooSmall {
                outbound: self.ws_outbound_max_bytes,
                replay,
            });
        }
        if self.mailbox_max_bytes < self.max_message_bytes {
            return Err(ConfigError::MailboxTooSmall {
                mailbox: self.mailbox_max_bytes,
                message: self.max_message_bytes,
            });
        }
        self.origin_policy()?;
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
            join_timeout: Duration::from_secs(self.join_timeout_secs),
            max_rate_violations: self.max_rate_violations,
            max_tracked_ips: self.max_tracked_ips,
            mailbox_max_msgs: self.mailbox_max_msgs,
            mailbox_max_bytes: self.mailbox_max_bytes,
            max_held_candidates: self.max_held_candidates,
            post_box_poll_batch: self.rest_poll_batch,
        })
    }

    /// The `Origin`/CORS policy.
    pub(crate) fn origin_policy(&self) -> Result<crate::origin::OriginPolicy, OriginError> {
        crate::origin::OriginPolicy::new(&self.allow_origins, !self.is_production())
    }

    /// The longest post-box long-poll: `max_poll_wait_secs`, kept below the resume TTL so that a
    /// parked poll cannot outlive its session.
    pub(crate) fn poll_wait_cap(&self) -> Duration {
        let below_ttl = self.resume_ttl_secs.saturating_sub(1).max(1);
        Duration::from_secs(self.max_poll_wait_secs.min(below_ttl))
    }

    /// `max_connections`, or its default for an open-files limit of `nofile`: a quarter of it,
    /// between 64 and 10000. `floe serve` runs TURN in the same process: relayed allocations
    /// (a socket each), TURN TCP/TLS connections and the process's own files need the rest.
    pub fn max_connections_for(&self, nofile: Option<u64>) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let quarter = nofile.unwrap_or(DEFAULT_NOFILE) / 4;
            usize::try_from(quarter.clamp(64, 10_000)).unwrap_or(10_000)
        })
    }

    /// `max_connections_per_ip`, or its default: 64, at most a quarter of `max_connections`
    /// (so that one address can never hold every slot), at least 1.
    pub fn max_connections_per_ip_for(&self, max_connections: usize) -> usize {
        self.max_connections_per_ip
            .unwrap_or_else(|| (max_connections / 4).clamp(1, 64))
    }
}

/// Bytes per mailbox message that a resume's replay needs beyond the mailbox's accounting: the
/// JSON envelope (type, seq, sender) and the queue slot.
const REPLAY_OVERHEAD: usize = 256;

/// The open-files limit assumed when the process's cannot be read (the usual Linux default).
const DEFAULT_NOFILE: u64 = 1024;

/// The soft open-files limit (`ulimit -n`) of this process, from `/proc/self/limits` (Linux);
/// `None` elsewhere or when unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Deserialises a list of CIDR strings ([`Cidr`]'s `FromStr`: its errors name the problem).
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// Serialises CIDRs as the strings [`cidrs`] reads.
fn cidr_strings<S: serde::Serializer>(list: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(Cidr::to_string))
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
    /// An earlier HS256 secret still accepted during a key rotation (repeatable). Prefer the
    /// config file (`jwt_previous_secrets`).
    #[arg(long = "jwt-previous-secret", value_name = "SECRET")]
    pub jwt_previous_secrets: Vec<String>,
    /// An earlier public key file still accepted during a key rotation (repeatable).
    #[arg(long = "jwt-previous-public-key", value_name = "FILE")]
    pub jwt_previous_public_keys: Vec<PathBuf>,
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
    /// Clock-skew allowance for token exp/nbf [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub jwt_leeway: Option<u64>,
    /// On shutdown: reconnect delay told to clients and drain time [default: 1000].
    #[arg(long, value_name = "MILLISECONDS")]
    pub shutdown_grace: Option<u64>,
    /// Reverse proxy network whose X-Forwarded-For/Forwarded headers name the client
    /// (repeatable), e.g. 10.0.0.0/8. Headers from other peers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<Cidr>,
    /// Web origin allowed to use this server cross-origin (repeatable), e.g.
    /// https://app.example; `*` for any (production mode only).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// HTTP post-box long-polls parked at once on this node [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_rest_waiters: Option<usize>,
    /// Post-box long-polls parked at once per session; a newer one answers the oldest
    /// [default: 2].
    #[arg(long, value_name = "N")]
    pub max_rest_waiters_per_session: Option<usize>,
    /// Longest post-box long-poll (at most 300, kept below --resume-ttl) [default: 25].
    #[arg(long, value_name = "SECONDS")]
    pub max_poll_wait: Option<u64>,
    /// Messages returned by one post-box poll [default: 256].
    #[arg(long, value_name = "N")]
    pub rest_poll_batch: Option<usize>,
    /// Time allowed between connecting and join/resume [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub join_timeout: Option<u64>,
    /// Consecutive rate-limited messages that close a connection [default: 50].
    #[arg(long, value_name = "N")]
    pub max_rate_violations: Option<u32>,
    /// IP addresses tracked by the join limiter [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_tracked_ips: Option<usize>,
    /// Unacknowledged messages per session [default: 1024].
    #[arg(long, value_name = "N")]
    pub mailbox_max_msgs: Option<usize>,
    /// Unacknowledged bytes per session (at least --max-message-bytes) [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub mailbox_max_bytes: Option<usize>,
    /// Candidates held per peer pair before an offer/answer [default: 128].
    #[arg(long, value_name = "N")]
    pub max_held_candidates: Option<usize>,
    /// Frames queued towards one WebSocket before it is cut off as too slow (above
    /// --mailbox-max-msgs) [default: 2048].
    #[arg(long, value_name = "N")]
    pub ws_outbound_queue: Option<usize>,
    /// Bytes queued towards one WebSocket before it is cut off as too slow (at least
    /// --mailbox-max-bytes + --max-message-bytes + 256 x --mailbox-max-msgs) [default: 2097152].
    #[arg(long, value_name = "BYTES")]
    pub ws_outbound_max_bytes: Option<usize>,
    /// Open TCP connections to the signalling port [default: ulimit -n / 4, 64..=10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open TCP connections per peer address, counted at accept; trusted proxies exempt
    /// [default: 64, at most max-connections / 4].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Time allowed for a complete HTTP request head, also the keep-alive idle deadline
    /// [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub http_header_timeout: Option<u64>,
    /// Time allowed to read a request body and answer, on top of the longest post-box poll
    /// [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub http_request_timeout: Option<u64>,
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
        if !self.jwt_previous_secrets.is_empty() {
            config.jwt_previous_secrets = self.jwt_previous_secrets;
        }
        if !self.jwt_previous_public_keys.is_empty() {
            config.jwt_previous_public_keys = self.jwt_previous_public_keys;
        }
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
        set(&mut config.jwt_leeway_secs, self.jwt_leeway);
        set(&mut config.shutdown_grace_ms, self.shutdown_grace);
        if !self.trusted_proxies.is_empty() {
            config.trusted_proxies = self.trusted_proxies;
        }
        if !self.allow_origins.is_empty() {
            config.allow_origins = self.allow_origins;
        }
        set(&mut config.max_rest_waiters, self.max_rest_waiters);
        set(
            &mut config.max_rest_waiters_per_session,
            self.max_rest_waiters_per_session,
        );
        set(&mut config.max_poll_wait_secs, self.max_poll_wait);
        set(&mut config.rest_poll_batch, self.rest_poll_batch);
        set(&mut config.join_timeout_secs, self.join_timeout);
        set(&mut config.max_rate_violations, self.max_rate_violations);
        set(&mut config.max_tracked_ips, self.max_tracked_ips);
        set(&mut config.mailbox_max_msgs, self.mailbox_max_msgs);
        set(&mut config.mailbox_max_bytes, self.mailbox_max_bytes);
        set(&mut config.max_held_candidates, self.max_held_candidates);
        set(&mut config.ws_outbound_queue, self.ws_outbound_queue);
        set(
            &mut config.ws_outbound_max_bytes,
            self.ws_outbound_max_bytes,
        );
        if self.max_connections.is_some() {
            config.max_connections = self.max_connections;
        }
        if self.max_connections_per_ip.is_some() {
            config.max_connections_per_ip = self.max_connections_per_ip;
        }
        set(
            &mut config.http_header_timeout_secs,
            self.http_header_timeout,
        );
        set(
            &mut config.http_request_timeout_secs,
            self.http_request_timeout,
        );
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
    fn new_limits_have_keys_flags_and_validation() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            signal: SignalArgs,
        }
        let mut c: SignalConfig = toml::from_str(
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nallow_origins = [\"https://app.example\"]\n\
             max_rest_waiters = 5\nmax_rest_waiters_per_session = 1\nmax_poll_wait_secs = 20\n\
             rest_poll_batch = 8\njoin_timeout_secs = 3\nmax_rate_violations = 4\n\
             max_tracked_ips = 100\nmailbox_max_msgs = 16\nmailbox_max_bytes = 70000\n\
             max_held_candidates = 9\nws_outbound_queue = 64\njwt_leeway_secs = 0\n\
             shutdown_grace_ms = 0\n",
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        let hub = c.hub_config().unwrap();
        assert_eq!(
            (
                hub.post_box_poll_batch,
                hub.max_held_candidates,
                hub.mailbox_max_msgs
            ),
            (8, 9, 16)
        );
        assert_eq!(hub.join_timeout, Duration::from_secs(3));
        assert_eq!((hub.max_rate_violations, hub.max_tracked_ips), (4, 100));
        let cli = Cli::try_parse_from([
            "x",
            "--trusted-proxy",
            "192.0.2.0/24",
            "--trusted-proxy",
            "2001:db8::/32",
            "--allow-origin",
            "https://b.example",
            "--max-rest-waiters",
            "7",
            "--max-rest-waiters-per-session",
            "3",
            "--max-poll-wait",
            "10",
            "--rest-poll-batch",
            "2",
            "--join-timeout",
            "4",
            "--max-rate-violations",
            "5",
            "--max-tracked-ips",
            "6",
            "--mailbox-max-msgs",
            "7",
            "--mailbox-max-bytes",
            "65536",
            "--max-held-candidates",
            "8",
            "--ws-outbound-queue",
            "9",
            "--jwt-leeway",
            "1",
            "--shutdown-grace",
            "200",
        ])
        .unwrap();
        cli.signal.apply(&mut c);
        assert_eq!(c.trusted_proxies[1].to_string(), "2001:db8::/32");
        assert_eq!(c.allow_origins, vec!["https://b.example".to_string()]);
        assert_eq!(
            (
                c.max_rest_waiters,
                c.max_rest_waiters_per_session,
                c.max_poll_wait_secs
            ),
            (7, 3, 10)
        );
        assert_eq!((c.rest_poll_batch, c.join_timeout_secs), (2, 4));
        assert_eq!((c.max_rate_violations, c.max_tracked_ips), (5, 6));
        assert_eq!((c.mailbox_max_msgs, c.mailbox_max_bytes), (7, 65536));
        assert_eq!((c.max_held_candidates, c.ws_outbound_queue), (8, 9));
        assert_eq!((c.jwt_leeway_secs, c.shutdown_grace_ms), (1, 200));
        assert!(c.hub_config().is_ok());
        assert!(Cli::try_parse_from(["x", "--trusted-proxy", "10.0.0.0/40"]).is_err());
        assert!(toml::from_str::<SignalConfig>("trusted_proxies = [\"nope\"]").is_err());

        for name in [
            "max_rest_waiters",
            "max_rest_waiters_per_session",
            "max_poll_wait_secs",
            "rest_poll_batch",
            "join_timeout_secs",
            "max_rate_violations",
            "max_tracked_ips",
            "mailbox_max_msgs",
            "max_held_candidates",
            "ws_outbound_queue",
        ] {
            let c: SignalConfig = toml::from_str(&format!("{name} = 0")).unwrap();
            let e = c
                .hub_config()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(e, format!("{name} must be at least 1"));
        }
        let c = SignalConfig {
            mailbox_max_bytes: 1000,
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::MailboxTooSmall { .. })
        ));
        let c = SignalConfig {
            max_poll_wait_secs: 301,
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::TooLarge {
                name: "max_poll_wait_secs",
                ..
            })
        ));
        let c = SignalConfig {
            allow_origins: vec!["*".into()],
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::Origin(OriginError::WildcardInDevelopment))
        ));
        let c = SignalConfig {
            allow_origins: vec!["https://app.example/path".into()],
            jwt_secret: Some("k".into()),
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::Origin(OriginError::Invalid(_)))
        ));
    }

    #[test]
    fn connection_limits_have_keys_flags_and_defaults_from_the_open_files_limit() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            signal: SignalArgs,
        }
        let d = SignalConfig::default();
        // ulimit -n 1024: 256 signalling connections, 64 per address; the rest for TURN.
        assert_eq!(d.max_connections_for(Some(1024)), 256);
        assert_eq!(d.max_connections_per_ip_for(256), 64);
        assert_eq!(d.max_connections_for(Some(256)), 64);
        assert_eq!(d.max_connections_per_ip_for(64), 16);
        assert_eq!(d.max_connections_for(Some(1 << 20)), 10_000);
        assert_eq!(d.max_connections_for(None), 256);
        assert_eq!(
            (d.http_header_timeout_secs, d.http_request_timeout_secs),
            (10, 10)
        );
        assert_eq!(d.ws_outbound_max_bytes, 2 << 20);
        let mut c: SignalConfig = toml::from_str(
            "max_connections = 100\nmax_connections_per_ip = 7\nhttp_header_timeout_secs = 3\n\
             http_request_timeout_secs = 4\nws_outbound_max_bytes = 1500000\n",
        )
        .unwrap();
        assert_eq!(c.max_connections_for(Some(1024)), 100);
        assert_eq!(c.max_connections_per_ip_for(100), 7);
        assert!(c.hub_config().is_ok());
        let cli = Cli::try_parse_from([
            "x",
            "--max-connections",
            "50",
            "--max-connections-per-ip",
            "5",
            "--http-header-timeout",
            "2",
            "--http-request-timeout",
            "6",
            "--ws-outbound-max-bytes",
            "3000000",
        ])
        .unwrap();
        cli.signal.apply(&mut c);
        assert_eq!(
            (c.max_connections, c.max_connections_per_ip),
            (Some(50), Some(5))
        );
        assert_eq!(
            (c.http_header_timeout_secs, c.http_request_timeout_secs),
            (2, 6)
        );
        assert_eq!(c.ws_outbound_max_bytes, 3_000_000);
        for key in [
            "max_connections",
            "max_connections_per_ip",
            "http_header_timeout_secs",
            "http_request_timeout_secs",
            "ws_outbound_max_bytes",
        ] {
            let c: SignalConfig = toml::from_str(&format!("{key} = 0")).unwrap();
            let e = c
                .hub_config()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(e, format!("{key} must be at least 1"));
        }
        let c = SignalConfig {
            ws_outbound_max_bytes: 1000,
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::OutboundTooSmall { .. })
        ));
        // Before, the defaults (1024 frames, 1024 mailbox messages) could not hold a resume's
        // replay of a full mailbox plus `resumed`: the resuming client was dropped as slow.
        assert_eq!(d.ws_outbound_queue, 2048);
        let c = SignalConfig {
            ws_outbound_queue: 1024,
            mailbox_max_msgs: 1024,
            ..SignalConfig::default()
        };
        assert!(matches!(
            c.hub_config(),
            Err(ConfigError::OutboundQueueTooShort { .. })
        ));
    }

    #[test]
    fn long_polls_stay_below_the_resume_ttl() {
        assert_eq!(
            SignalConfig::default().poll_wait_cap(),
            Duration::from_secs(25)
        );
        let c = SignalConfig {
            resume_ttl_secs: 10,
            ..SignalConfig::default()
        };
        assert_eq!(c.poll_wait_cap(), Duration::from_secs(9));
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
