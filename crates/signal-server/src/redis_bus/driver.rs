//! The driver task's loop: connect, subscribe, serve commands, events and heartbeats, reconnect
//! with backoff.

use std::time::Duration;

use floe_signal::bus::BusEvent;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::time::Instant;

use super::{
    bus_error, dropped, timed_out, Driver, End, MAX_BACKOFF, MIN_BACKOFF, OP_TIMEOUT, PREFIX,
};

impl Driver {
    pub(super) async fn run(mut self) {
        // Consecutive failed attempts: the first of an outage is a warning, then one a minute.
        let mut failures: u32 = 0;
        loop {
            match self.connected().await {
                End::Stop => return,
                End::Lost(e) => {
                    metrics::gauge!("floe_signal_bus_connected").set(0.0);
                    bus_error("connect");
                    failures = if self.backoff == MIN_BACKOFF {
                        1
                    } else {
                        failures + 1
                    };
                    let retry_ms = self.backoff.as_millis() as u64;
                    if failures == 1 || failures % 12 == 0 {
                        tracing::warn!(error = %e, retry_ms, failures,
                            "signalling: Redis unreachable; reconnecting");
                    } else {
                        tracing::debug!(error = %e, retry_ms, failures,
                            "signalling: Redis unreachable; reconnecting");
                    }
                }
            }
            if self.wait_backoff().await {
                return;
            }
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits one backoff interval, queueing commands and failing stale ones. `true`: stop.
    async fn wait_backoff(&mut self) -> bool {
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        let until = Instant::now() + self.backoff + jitter;
        loop {
            self.expire_stale();
            tokio::select! {
                () = tokio::time::sleep_until(until) => return false,
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.queue(cmd),
                    None => return true,
                },
                stop = self.stop.recv() => {
                    // Redis is unreachable: nothing to remove; the TTL will reap our members.
                    if let Some(done) = stop {
                        let _ = done.send(());
                    }
                    return true;
                }
            }
        }
    }

    /// One connected period: connect, register, then serve until the connection fails.
    async fn connected(&mut self) -> End {
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return End::Lost(e),
        };
        let pubsub = match self.subscribe().await {
            Ok(p) => p,
            Err(e) => return End::Lost(e),
        };
        let (_sink, mut stream) = pubsub.split();
        if let Err(e) = self.load_scripts(&mut conn).await {
            return End::Lost(e);
        }
        if let Err(e) = self.sync(&mut conn).await {
            return End::Lost(e);
        }
        metrics::gauge!("floe_signal_bus_connected").set(1.0);
        tracing::info!(node = %self.node, "signalling: connected to Redis");
        self.backoff = MIN_BACKOFF;
        let beat = self.ttl / 3;
        let mut next_beat = Instant::now() + beat;
        loop {
            if let Err(e) = self.run_pending(&mut conn).await {
                return End::Lost(e);
            }
            let reconcile_at = self.reconcile_at;
            let reconcile = async move {
                match reconcile_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            // Unbiased: a flood of events must not starve the heartbeat (or the reverse).
            tokio::select! {
                stop = self.stop.recv() => {
                    if let Err(e) = self.script_bye(&mut conn).await {
                        bus_error("bye");
                        tracing::warn!(error = %e, "signalling: could not hand this node's sessions over in Redis");
                    }
                    if let Some(done) = stop {
                        let _ = done.send(());
                    }
                    return End::Stop;
                }
                msg = stream.next() => match msg {
                    Some(m) => self.on_message(m.get_payload_bytes()),
                    None => return End::Lost(dropped("the pub/sub connection closed")),
                },
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.queue(cmd),
                    None => return End::Stop,
                },
                () = tokio::time::sleep_until(next_beat) => {
                    next_beat = Instant::now() + beat;
                    if let Err(e) = self.beat(&mut conn).await {
                        return End::Lost(e);
                    }
                }
                () = reconcile => {
                    self.reconcile_at = None;
                    if let Err(e) = self.reconcile(&mut conn).await {
                        return End::Lost(e);
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, RedisError> {
        let chan = format!("{PREFIX}node:{}:events", self.node);
        let attempt = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(chan).await?;
            Ok(pubsub)
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(timed_out("subscribing")),
        }
    }

    pub(super) fn emit(&self, ev: BusEvent) {
        // The hub task is gone only during shutdown.
        let _ = self.events.send(ev);
    }
}
