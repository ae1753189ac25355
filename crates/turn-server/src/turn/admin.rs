//! The operator's view into the shards: a command channel per shard, served by a task on the
//! shard's own runtime (so a command takes the shard's mutex on the thread that owns it, between
//! two relay batches, and the relay path gains no lock). [`TurnAdmin`] is the handle the admin
//! API holds: list, end and revoke allocations, drain, and the load for readiness.

use std::sync::Arc;
use std::time::Instant;

use floe_turn::credentials::CredentialStore;
use floe_turn::policy::PeerPolicy;
use floe_turn::server::{AllocationFilter, AllocationInfo, DrainConfig, Lifetimes, ReloadOutcome};
use tokio::sync::{mpsc, oneshot};

use super::config::TurnShellConfig;
use super::dispatch::dispatch;
use super::relay;
use super::shard::{lock, Ctx, Shard};

/// Commands queued per shard before a sender waits.
pub(super) const QUEUE: usize = 64;

/// One command to a shard.
pub(super) enum ShardCmd {
    List(oneshot::Sender<Vec<AllocationInfo>>),
    End(AllocationFilter, oneshot::Sender<usize>),
    Revoke {
        username: String,
        until_unix: u64,
        reply: oneshot::Sender<usize>,
    },
    Drain(Option<DrainConfig>, oneshot::Sender<()>),
    Load(oneshot::Sender<ShardLoad>),
    Reload(Arc<Reload>, oneshot::Sender<ReloadOutcome>),
}

/// What a configuration reload gives every shard.
pub(super) struct Reload {
    credentials: Arc<CredentialStore>,
    policy: PeerPolicy,
    lifetimes: Lifetimes,
}

/// What one shard holds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ShardLoad {
    allocations: usize,
    relay_ports: usize,
    bytes_relayed: u64,
}

/// The TURN server stopped: its shards no longer answer.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the TURN server is not running")]
pub struct TurnStopped;

/// The TURN server's load against its limits (for readiness and the admin API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnLoad {
    /// Live allocations in all shards.
    pub allocations: usize,
    /// The allocation quota (`max_allocations_total`).
    pub max_allocations: usize,
    /// Relayed transport addresses (relay ports) bound.
    pub relay_ports: usize,
    /// Relay ports available: the port range times the relay IPs.
    pub relay_ports_total: usize,
    /// TCP and TLS client connections open.
    pub stream_connections: usize,
    /// Their limit (`max_tcp_connections`).
    pub max_stream_connections: usize,
    /// Payload bytes relayed since start, both directions.
    pub bytes_relayed: u64,
    /// Whether new Allocates are refused.
    pub draining: bool,
}

/// A cheap, cloneable handle to the shards' command channels.
#[derive(Clone)]
pub struct TurnAdmin {
    pub(super) ctx: Arc<Ctx>,
    pub(super) shards: Vec<mpsc::Sender<ShardCmd>>,
    pub(super) limits: TurnLoad,
}

impl std::fmt::Debug for TurnAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnAdmin")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl TurnAdmin {
    /// Every allocation, ordered by worker and id.
    pub async fn allocations(&self) -> Result<Vec<AllocationInfo>, TurnStopped> {
        let lists = self.ask_all(ShardCmd::List).await?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// The allocations that ended within `within` (at most [`super::RECENT`], and the last
    /// [`super::RECENT_MAX`] of them), oldest first.
    pub fn recently_ended(&self, within: std::time::Duration) -> Vec<super::EndedAllocation> {
        lock(&self.ctx.ended).within(within, Instant::now())
    }

    /// Ends the allocations `filter` names; returns how many ended.
    pub async fn end(&self, filter: AllocationFilter) -> Result<usize, TurnStopped> {
        let counts = self
            .ask_all(|reply| ShardCmd::End(filter.clone(), reply))
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// Revokes `username` until `until_unix` in every shard (401 from now on) and ends its
    /// allocations; returns how many ended.
    pub async fn revoke(&self, username: &str, until_unix: u64) -> Result<usize, TurnStopped> {
        let counts = self
            .ask_all(|reply| ShardCmd::Revoke {
                username: username.to_owned(),
                until_unix,
                reply,
            })
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// A configuration reload from `config` (checked as at start): new credentials and peer
    /// policy in every shard (see [`floe_turn::server::TurnServer::reload`]), new quotas, rates
    /// of unauthenticated answers and allocation lifetimes (see
    /// [`floe_turn::server::TurnServer::set_limits`]), and the TLS certificate for new
    /// handshakes when `config.tls` is given, and the TCP/TLS connection limits for new
    /// connections. What only a restart changes (listening addresses, relay ports and IPs,
    /// workers, XDP) is not read.
    /// Returns what changed, summed over the shards.
    pub async fn reload(&self, config: &TurnShellConfig) -> Result<ReloadOutcome, TurnStopped> {
        if let Some(tls) = config.tls.clone() {
            let mut acceptor = self
                .ctx
                .tls
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only where TLS listens: a reload does not start TLS listeners.
            if acceptor.is_some() {
                *acceptor = Some(tokio_rustls::TlsAcceptor::from(tls));
            }
        }
        self.ctx.set_stream_limits(config.stream);
        // The shared parts once, before the shards apply theirs.
        if let Some(shard) = self.ctx.shards.first() {
            let st = lock(&shard.state);
            let shared = st.turn.shared();
            let now = Instant::now();
            shared.set_quotas(config.quotas, now);
            shared.set_rate_limit(config.turn.rate_limit, now);
        }
        let reload = Arc::new(Reload {
            credentials: config.turn.credentials.clone(),
            policy: config.turn.policy.clone(),
            lifetimes: config.turn.lifetimes,
        });
        let outcomes = self
            .ask_all(|reply| ShardCmd::Reload(reload.clone(), reply))
            .await?;
        let mut total = ReloadOutcome::default();
        for o in outcomes {
            total.allocations_ended += o.allocations_ended;
            total.permissions_removed += o.permissions_removed;
            total.channels_removed += o.channels_removed;
        }
        Ok(total)
    }

    /// Starts (`Some`) or stops draining in every shard.
    pub async fn drain(&self, drain: Option<DrainConfig>) -> Result<(), TurnStopped> {
        self.ask_all(|reply| ShardCmd::Drain(drain.clone(), reply))
            .await
            .map(drop)
    }

    /// The current load against the limits.
    pub async fn load(&self) -> Result<TurnLoad, TurnStopped> {
        let loads = self.ask_all(ShardCmd::Load).await?;
        let mut load = self.limits;
        if let Some(shard) = self.ctx.shards.first() {
            let max = lock(&shard.state)
                .turn
                .shared()
                .quota_config()
                .max_allocations_total;
            load.max_allocations = usize::try_from(max).unwrap_or(usize::MAX);
        }
        for l in loads {
            load.allocations += l.allocations;
            load.relay_ports += l.relay_ports;
            load.bytes_relayed += l.bytes_relayed;
        }
        load.max_stream_connections = self.ctx.limits().max_connections;
        load.stream_connections = self.ctx.tcp_connections();
        load.draining = lock(&self.ctx.shards[0].state).turn.is_draining();
        Ok(load)
    }

    /// Sends a command to every shard and collects the answers in shard order.
    async fn ask_all<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> ShardCmd,
    ) -> Result<Vec<T>, TurnStopped> {
        let mut waits = Vec::with_capacity(self.shards.len());
        for tx in &self.shards {
            let (reply, rx) = oneshot::channel();
            tx.send(make(reply)).await.map_err(|_| TurnStopped)?;
            waits.push(rx);
        }
        let mut out = Vec::with_capacity(waits.len());
        for rx in waits {
            out.push(rx.await.map_err(|_| TurnStopped)?);
        }
        Ok(out)
    }
}

/// Serves a shard's commands; runs on the shard's runtime.
pub(super) async fn admin_loop(ctx: Arc<Ctx>, shard: Arc<Shard>, mut rx: mpsc::Receiver<ShardCmd>) {
    let mut out = vec![0u8; 2048];
    while let Some(cmd) = rx.recv().await {
        let now = Instant::now();
        let unix = ctx.unix_secs(now);
        match cmd {
            ShardCmd::List(reply) => {
                let _ = reply.send(lock(&shard.state).turn.allocations(now));
            }
            ShardCmd::Load(reply) => {
                let st = lock(&shard.state);
                let stats = st.turn.stats();
                let _ = reply.send(ShardLoad {
                    allocations: st.turn.allocation_count(),
                    relay_ports: st.turn.relay_ports_in_use(),
                    bytes_relayed: stats.bytes_to_peer + stats.bytes_to_client,
                });
            }
            ShardCmd::Drain(drain, reply) => {
                lock(&shard.state).turn.set_draining(drain);
                let _ = reply.send(());
            }
            ShardCmd::End(filter, reply) => {
                let mut ended = 0;
                let d = dispatch(&ctx, &shard, now, &mut out, |turn, binder, _| {
                    ended = turn.end_allocations(&filter, binder);
                    None
                });
                // Ending only releases; the follow-ups are empty (RFC 6062 closes included).
                let _ = relay::start(&ctx, &shard, d.finish(&ctx, &out).await);
                let _ = reply.send(ended);
            }
            ShardCmd::Revoke {
                username,
                until_unix,
                reply,
            } => {
                let mut ended = 0;
                let d = dispatch(&ctx, &shard, now, &mut out, |turn, binder, _| {
                    ended = turn.revoke(&username, until_unix, unix, binder);
                    None
                });
                let _ = relay::start(&ctx, &shard, d.finish(&ctx, &out).await);
                let _ = reply.send(ended);
            }
            ShardCmd::Reload(reload, reply) => {
                let mut outcome = ReloadOutcome::default();
                let d = dispatch(&ctx, &shard, now, &mut out, |turn, binder, _| {
                    outcome = turn.reload(
                        reload.credentials.clone(),
                        reload.policy.clone(),
                        now,
                        unix,
                        binder,
                    );
                    turn.set_limits(reload.lifetimes, now);
                    None
                });
                let _ = relay::start(&ctx, &shard, d.finish(&ctx, &out).await);
                let _ = reply.send(outcome);
            }
        }
    }
}
