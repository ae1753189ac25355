//! The operator's handle on a running signalling server ([`SignalAdmin`]): list and end
//! sessions, drain. The binary's admin API calls it; it talks to the hub task like the
//! connection handlers do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub use floe_signal::hub::{SessionFilter, SessionInfo};

use crate::actor::HubHandle;
use crate::server::LiveServer;

/// The signalling server is not running (not started yet, or stopped).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the signalling server is not running")]
pub struct SignalStopped;

/// A cheap, cloneable handle; get it with [`crate::SignalServer::admin`] before `run`.
#[derive(Clone, Default)]
pub struct SignalAdmin {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    hub: OnceLock<HubHandle>,
    /// What a configuration reload reaches ([`crate::reload`]).
    pub(crate) live: OnceLock<LiveServer>,
    draining: AtomicBool,
    /// Sessions are shared through Redis (they move to another node when this one stops).
    shared: AtomicBool,
}

impl std::fmt::Debug for SignalAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalAdmin")
            .field("running", &self.inner.hub.get().is_some())
            .finish()
    }
}

impl SignalAdmin {
    /// Called by `run` once the hub task and the handlers' state exist.
    pub(crate) fn attach(&self, hub: HubHandle, shared_sessions: bool, live: LiveServer) {
        self.inner.shared.store(shared_sessions, Ordering::Relaxed);
        let _ = self.inner.hub.set(hub);
        let _ = self.inner.live.set(live);
    }

    /// The running server's reloadable parts and its hub.
    pub(crate) fn live(&self) -> Result<(&LiveServer, &HubHandle), SignalStopped> {
        Ok((self.inner.live.get().ok_or(SignalStopped)?, self.hub()?))
    }

    /// Whether sessions are shared with other nodes (Redis): when this node stops they are
    /// resumed elsewhere, so a drain need not wait for them.
    pub fn sessions_move(&self) -> bool {
        self.inner.shared.load(Ordering::Relaxed)
    }

    fn hub(&self) -> Result<&HubHandle, SignalStopped> {
        self.inner.hub.get().ok_or(SignalStopped)
    }

    /// This node's sessions.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, SignalStopped> {
        self.hub()?.sessions().await.map_err(|_| SignalStopped)
    }

    /// Ends the sessions `filter` names (their clients get `kicked`); returns how many.
    pub async fn end(&self, filter: SessionFilter) -> Result<usize, SignalStopped> {
        self.hub()?
            .end_sessions(filter)
            .await
            .map_err(|_| SignalStopped)
    }

    /// Starts draining: joins are refused, connected clients get `go_away` (reason
    /// `draining`, reconnect after `reconnect_ms`), sessions go on.
    pub async fn drain(&self, reconnect_ms: u64) -> Result<(), SignalStopped> {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.hub()?
            .drain(reconnect_ms)
            .await
            .map_err(|_| SignalStopped)
    }

    /// Whether [`SignalAdmin::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
}
