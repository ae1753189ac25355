//! The heartbeat, the sweep for crashed nodes, and the goodbye of a graceful shutdown.

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::time::Instant;

use super::{bus_error, is_connection_error, Driver, PREFIX};

impl Driver {
    pub(super) async fn heartbeat(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<bool, RedisError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let added: i64 = self
            .scripts
            .heartbeat
            .arg(PREFIX)
            .arg(&self.node)
            .arg(ttl_ms)
            .invoke_async(conn)
            .await?;
        Ok(added == 1)
    }

    /// A heartbeat plus a sweep for crashed nodes.
    pub(super) async fn beat(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let reregistered = match self.heartbeat(conn).await {
            Ok(r) => r,
            Err(e) => {
                bus_error("heartbeat");
                return Err(e);
            }
        };
        if reregistered {
            // Redis lost our registration (restart, or we were reaped): restore and reconcile.
            tracing::warn!(node = %self.node, "signalling: this node was missing from Redis; restoring its peers");
            self.restore(conn).await?;
            self.reconcile_at = Some(Instant::now() + self.ttl / 3);
        }
        match self
            .scripts
            .reap
            .arg(PREFIX)
            .invoke_async::<i64>(conn)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                nodes = n,
                "signalling: reaped the peers of unresponsive nodes"
            ),
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => {
                bus_error("reap");
                tracing::warn!(error = %e, "signalling: reaping failed");
            }
        }
        Ok(())
    }

    pub(super) async fn script_bye(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let _: i64 = self
            .scripts
            .bye
            .arg(PREFIX)
            .arg(&self.node)
            .invoke_async(conn)
            .await?;
        self.local.clear();
        self.mirror.clear();
        Ok(())
    }
}
