//! Rate limiting on virtual time.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `rate` tokens per second. Time is passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate_per_sec: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            burst,
            rate: rate_per_sec.max(0.0),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now` (an idle client; its entry can be dropped).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// How long until the bucket is full again.
    pub fn time_to_full(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::MAX;
        }
        Duration::from_secs_f64(((self.burst - self.tokens) / self.rate).max(0.0))
    }
}
