//! The floe TURN service (which also answers STUN) on loopback, on a runtime of its own thread,
//! for the socket tests of this crate. Dropping the guard stops it.

// Each test file uses its own subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use floe_turn::credentials::{CredentialStore, StaticUser};
use floe_turn::nonce::NonceSecret;
use floe_turn::policy::{Cidr, PeerPolicy};
use floe_turn::quota::QuotaConfig;
use floe_turn::server::TurnConfig;
use floe_turn_server::turn::{StreamLimits, TurnService, TurnShellConfig};

pub mod client;

pub use client::REALM;

/// A running service; stopped (and its thread joined) on drop.
pub struct Running {
    /// Every listening address (UDP and TCP share each).
    pub addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A configuration listening on `listen` with static user `alice:pw`, two workers, a 30 s TCP
/// idle timeout; loopback peers allowed when `allow_loopback`.
pub fn config(listen: &[&str], allow_loopback: bool) -> TurnShellConfig {
    let listen: Vec<SocketAddr> = listen.iter().map(|s| s.parse().unwrap()).collect();
    let mut store = CredentialStore::new(REALM);
    store
        .add_user("alice:pw".parse::<StaticUser>().unwrap())
        .unwrap();
    let mut turn = TurnConfig::new(
        store,
        vec![listen[0].ip()],
        NonceSecret::from_bytes([7; 32]),
        [9; 32],
    );
    let mut policy = PeerPolicy::new().with_own_addresses([listen[0].ip()]);
    if allow_loopback {
        policy = policy.with_allow(["127.0.0.0/8".parse::<Cidr>().unwrap()]);
    }
    turn.policy = policy;
    TurnShellConfig {
        listen,
        alternate_ips: Vec::new(),
        tls_listen: Vec::new(),
        tls: None,
        workers: 2,
        turn,
        quotas: QuotaConfig::default(),
        stream: StreamLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(30),
            ..StreamLimits::default()
        },
        xdp: Default::default(),
        usage: Default::default(),
    }
}

/// Binds and runs the service; returns once it listens.
pub fn start(config: TurnShellConfig) -> Running {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let service = TurnService::bind(config).await.unwrap();
            addr_tx.send(service.local_addrs()).unwrap();
            service
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    let addrs = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Running {
        addrs,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}
