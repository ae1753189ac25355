//! What the operations listener and the signals act on: the TURN and signalling admin handles
//! of whatever runs in this process, drain, and the process's lifecycle (when to stop).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_signal_server::SignalAdmin;
use floe_turn::server::DrainConfig;
use floe_turn_server::turn::TurnAdmin;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use super::config::AdminConfig;
use super::notify::Notifier;
use super::ready::{self, Check, Readiness};
use super::reload::Reloader;

/// How often a drain checks whether the process is empty, and the bandwidth is sampled.
const TICK: Duration = Duration::from_millis(250);
/// How long `/readyz` waits for the TURN shards' answer before saying `turn_unresponsive`.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// `go_away.reconnectMs` sent when a drain starts.
pub const DRAIN_RECONNECT_MS: u64 = 500;

/// Renders the Prometheus exposition.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared by the admin HTTP handlers, the signal handlers and the servers' shutdown.
#[derive(Clone)]
pub struct Ops(Arc<Inner>);

struct Inner {
    turn: Option<TurnAdmin>,
    signal: Option<SignalAdmin>,
    config: AdminConfig,
    metrics: Render,
    draining: AtomicBool,
    /// A drain asked for (its timeout), by the API or a signal.
    drain_request: watch::Sender<Option<Duration>>,
    /// Relayed bytes per second over the last sample.
    bps: AtomicU64,
    /// systemd notifications (`$NOTIFY_SOCKET`).
    notifier: Option<Notifier>,
    /// What SIGHUP and `POST /v1/reload` reload, once the command has set it.
    reloader: std::sync::OnceLock<Reloader>,
}

/// The process's signals, registered at start (before the first one can arrive) so that
/// SIGUSR1 never takes its default action (terminate).
pub struct Signals {
    int: Signal,
    term: Signal,
    usr1: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers SIGINT, SIGTERM, SIGUSR1 and SIGHUP. Must run inside the tokio runtime.
    pub fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Ops {
    pub fn new(
        config: AdminConfig,
        turn: Option<TurnAdmin>,
        signal: Option<SignalAdmin>,
        metrics: Render,
        notifier: Option<Notifier>,
    ) -> Ops {
        let (drain_request, _) = watch::channel(None);
        metrics::gauge!("floe_draining").set(0.0);
        Ops(Arc::new(Inner {
            turn,
            signal,
            config,
            metrics,
            draining: AtomicBool::new(false),
            drain_request,
            bps: AtomicU64::new(0),
            notifier,
            reloader: std::sync::OnceLock::new(),
        }))
    }

    /// Sets what SIGHUP and `POST /v1/reload` reload (once; later calls are ignored).
    pub fn set_reloader(&self, reloader: Reloader) {
        let _ = self.0.reloader.set(reloader);
    }

    /// Reloads the configuration (see [`super::reload`]): a summary, or why nothing changed.
    pub async fn reload(&self) -> anyhow::Result<String> {
        let Some(reloader) = self.0.reloader.get() else {
            anyhow::bail!("this command has nothing to reload");
        };
        self.notify("RELOADING=1\nSTATUS=reloading");
        let result = reloader.reload().await;
        match &result {
            Ok(summary) => {
                tracing::info!("configuration reloaded: {summary}");
                metrics::counter!("floe_reloads_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                tracing::warn!("configuration reload refused: {e:#}");
                metrics::counter!("floe_reloads_total", "result" => "error").increment(1);
            }
        }
        self.notify("READY=1\nSTATUS=serving");
        result
    }

    /// Sends a systemd notification, if systemd asked for them.
    pub fn notify(&self, state: &str) {
        if let Some(n) = &self.0.notifier {
            n.notify(state);
        }
    }

    /// Pings the systemd watchdog every `interval` while the servers answer: each TURN shard
    /// through its command channel (so a stuck shard thread stops the pings) and the
    /// signalling hub task. Runs until dropped.
    pub async fn watchdog(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let turn_ok = match &self.0.turn {
                Some(t) => matches!(tokio::time::timeout(interval, t.load()).await, Ok(Ok(_))),
                None => true,
            };
            let signal_ok = match &self.0.signal {
                Some(s) => matches!(
                    tokio::time::timeout(interval, s.sessions()).await,
                    Ok(Ok(_))
                ),
                None => true,
            };
            if turn_ok && signal_ok {
                self.notify("WATCHDOG=1");
            } else {
                tracing::warn!(
                    turn_ok,
                    signal_ok,
                    "a server did not answer: no watchdog ping"
                );
            }
        }
    }

    pub fn config(&self) -> &AdminConfig {
        &self.0.config
    }

    pub fn turn(&self) -> Option<&TurnAdmin> {
        self.0.turn.as_ref()
    }

    pub fn signal(&self) -> Option<&SignalAdmin> {
        self.0.signal.as_ref()
    }

    pub fn render_metrics(&self) -> String {
        (self.0.metrics)()
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Drains with the configured `--drain-timeout` (the API's `POST /v1/drain`): the refusals
    /// are in force when this returns; the lifecycle then waits for the process to empty.
    pub async fn request_drain(&self) {
        self.start_drain().await;
        let timeout = self.0.config.drain_timeout;
        self.0.drain_request.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(timeout);
            }
            first
        });
    }

    /// The readiness checks now.
    pub async fn readiness(&self) -> Readiness {
        let mut checks = Vec::new();
        let mut unresponsive = false;
        if let Some(turn) = &self.0.turn {
            let load = tokio::time::timeout(ANSWER_WITHIN, turn.load()).await;
            unresponsive = !matches!(load, Ok(Ok(_)));
            if let Ok(Ok(l)) = load {
                let n = |v: usize| v as u64;
                checks.extend(Check::new(
                    "allocations",
                    n(l.allocations),
                    n(l.max_allocations),
                ));
                checks.extend(Check::new(
                    "relay_ports",
                    n(l.relay_ports),
                    n(l.relay_ports_total),
                ));
                checks.extend(Check::new(
                    "tcp_connections",
                    n(l.stream_connections),
                    n(l.max_stream_connections),
                ));
            }
            checks.extend(Check::new(
                "bandwidth_bps",
                self.0.bps.load(Ordering::Relaxed),
                self.0.config.max_bps,
            ));
        }
        if let Some((open, limit)) = ready::file_descriptors() {
            checks.extend(Check::new("file_descriptors", open, limit));
        }
        let mut r = ready::assess(self.is_draining(), checks, self.0.config.max_load);
        if unresponsive {
            r.ready = false;
            r.reasons.push("turn_unresponsive".into());
        }
        r
    }

    /// Samples the relayed bytes every tick into the bandwidth rate; runs until dropped.
    pub async fn sample_bandwidth(self) {
        let Some(turn) = self.0.turn.clone() else {
            return;
        };
        let mut last: Option<(Instant, u64)> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Ok(load) = turn.load().await else { return };
            let now = Instant::now();
            if let Some((t, bytes)) = last {
                let secs = now.duration_since(t).as_secs_f64().max(0.001);
                let rate = load.bytes_relayed.saturating_sub(bytes) as f64 / secs;
                self.0.bps.store(rate as u64, Ordering::Relaxed);
                metrics::gauge!("floe_turn_relayed_bytes_per_second").set(rate);
            }
            last = Some((now, load.bytes_relayed));
        }
    }

    /// Whether nothing pins the process any more: no TURN allocation, and no signalling session
    /// unless sessions move to another node when this one stops (Redis).
    async fn is_empty(&self) -> bool {
        if let Some(turn) = &self.0.turn {
            match turn.load().await {
                Ok(l) if l.allocations > 0 => return false,
                _ => {}
            }
        }
        if let Some(signal) = self.0.signal.as_ref().filter(|s| !s.sessions_move()) {
            match signal.sessions().await {
                Ok(s) if !s.is_empty() => return false,
                _ => {}
            }
        }
        true
    }

    /// Starts draining (once): readiness goes false, TURN refuses new Allocates, signalling
    /// refuses joins and tells its clients `go_away`.
    async fn start_drain(&self) {
        if self.0.draining.swap(true, Ordering::Relaxed) {
            return;
        }
        metrics::gauge!("floe_draining").set(1.0);
        self.notify("STOPPING=1\nSTATUS=draining");
        tracing::info!("draining: refusing new sessions and allocations; existing ones go on");
        if let Some(turn) = &self.0.turn {
            let drain = DrainConfig {
                alternates: self.0.config.alternates.clone(),
            };
            let _ = turn.drain(Some(drain)).await;
        }
        if let Some(signal) = &self.0.signal {
            let _ = signal.drain(DRAIN_RECONNECT_MS).await;
        }
    }

    /// Completes when the process should stop, which is what the servers' `shutdown` futures
    /// wait for:
    /// * SIGINT (Ctrl-C): at once, as before;
    /// * SIGTERM: drain for at most `--term-drain-timeout` (0: at once, the old behaviour);
    /// * SIGUSR1 or `POST /v1/drain`: drain for at most `--drain-timeout`;
    /// * SIGHUP: reload the configuration, then go on.
    ///
    /// A drain ends early once no allocation and no session is left; a SIGINT or SIGTERM
    /// during a drain stops at once.
    pub async fn lifecycle(self, signals: Signals) {
        self.clone().wait_for_stop(signals).await;
        self.notify("STOPPING=1\nSTATUS=stopping");
    }

    async fn wait_for_stop(self, mut signals: Signals) {
        let mut requests = self.0.drain_request.subscribe();
        let timeout = loop {
            tokio::select! {
                _ = signals.int.recv() => return,
                _ = signals.term.recv() => break self.0.config.term_drain_timeout,
                _ = signals.usr1.recv() => break self.0.config.drain_timeout,
                t = requests.wait_for(Option::is_some) => match t {
                    Ok(t) => break t.unwrap_or_default(),
                    Err(_) => return,
                },
                // SIGHUP reloads and the process goes on (the result is logged).
                _ = signals.hup.recv() => {}
            }
            let _ = self.reload().await;
        };
        if timeout.is_zero() {
            return;
        }
        self.start_drain().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_empty().await {
                tracing::info!("drained: no allocation or session left; stopping");
                return;
            }
            tokio::select! {
                _ = signals.int.recv() => return,
                _ = signals.term.recv() => return,
                _ = signals.usr1.recv() => {}
                _ = signals.hup.recv() => {
                    let _ = self.reload().await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::info!("drain timeout reached; stopping");
                    return;
                }
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
