//! The TURN server's histograms ([`floe_histogram`]: lock-free, rendered by
//! [`render_histograms`] next to the recorder's metrics). Imports nothing of this module's.

use std::time::Instant;

use floe_histogram::{Histogram, HANDLING_BUCKETS, LIFETIME_BUCKETS};

/// How long allocations lived, observed when one ends for any reason (expiry, Refresh 0, the
/// client's TCP/TLS connection closing, the admin API, a revocation or a reload).
pub(super) static ALLOCATION_LIFETIME: Histogram<{ LIFETIME_BUCKETS.len() }> = Histogram::new(
    "floe_turn_allocation_lifetime_seconds",
    "Lifetime of TURN allocations, observed when they end (any reason).",
    LIFETIME_BUCKETS,
);

/// How long an Allocate request took to handle: from the clock read for the receive batch (UDP)
/// or the frame (TCP/TLS) that carried it to its response being queued for the client's socket
/// (relay sockets bound, state updated). Successes and errors alike; retransmissions answered
/// from the transaction cache too.
pub(super) static ALLOCATE_DURATION: Histogram<{ HANDLING_BUCKETS.len() }> = Histogram::new(
    "floe_turn_allocate_duration_seconds",
    "Time to handle a TURN Allocate request, from reading it to its response queued for the client.",
    HANDLING_BUCKETS,
);

/// Observes the handling time of `packet` if it is an Allocate request (RFC 8656 §7.2: message
/// type 0x0003, the first two bytes of a STUN message), handled from `start` until now. Two
/// byte compares on the relay path, nothing else.
pub(super) fn observe_if_allocate(packet: &[u8], start: Instant) {
    if packet.get(..2) == Some(&[0x00, 0x03]) {
        ALLOCATE_DURATION.observe(start.elapsed());
    }
}

/// Appends the TURN histograms in the Prometheus text format.
pub fn render_histograms(out: &mut String) {
    ALLOCATION_LIFETIME.render(out);
    ALLOCATE_DURATION.render(out);
}
