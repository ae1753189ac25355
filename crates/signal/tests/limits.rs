//! The token bucket on virtual time (kept outside `src/` so the crate's sources never mention
//! the clock; see the sans-IO check in test.sh).

use std::time::{Duration, Instant};

use floe_signal::limits::TokenBucket;

#[test]
fn bucket_allows_burst_then_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(10.0, 3, t0);
    assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
    assert!(!b.try_take(t0));
    assert!(!b.try_take(t0 + Duration::from_millis(50)));
    assert!(b.try_take(t0 + Duration::from_millis(101)));
    assert!(!b.is_full(t0 + Duration::from_millis(101)));
    assert!(b.is_full(t0 + Duration::from_secs(1)));
    assert_eq!(TokenBucket::new(0.0, 1, t0).time_to_full(), Duration::MAX);
}
