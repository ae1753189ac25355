//! A shard's timer: expires allocations, permissions, channels and RFC 6062 connections at the
//! state machine's next deadline (`poll_timeout`), at least once a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dispatch::dispatch;
use super::relay;
use super::shard::{lock, Ctx, Shard};

/// Longest sleep between two `handle_timeout` calls.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Runs on the shard's own runtime.
pub(super) async fn timer_loop(ctx: Arc<Ctx>, shard: Arc<Shard>) {
    let mut out = vec![0u8; 2048];
    loop {
        let next = lock(&shard.state).turn.poll_timeout();
        let cap = Instant::now() + MAX_SLEEP;
        let at = next.map_or(cap, |n| n.min(cap));
        tokio::time::sleep_until(at.into()).await;
        let now = Instant::now();
        let unix = ctx.unix_secs(now);
        let d = dispatch(&ctx, &shard, now, &mut out, |turn, binder, _| {
            turn.handle_timeout(now, unix, binder);
            None
        });
        // Expiry only releases; the follow-ups are empty.
        let _ = relay::start(&ctx, &shard, d.finish(&ctx, &out).await);
    }
}
