//! The signalling server's histograms ([`floe_histogram`]: lock-free, rendered by
//! [`render_histograms`] next to the recorder's metrics).

use floe_histogram::{Histogram, HANDLING_BUCKETS};

/// Delivery latency of directed messages (offer, answer, candidate, end-of-candidates, bye,
/// data to one peer) between peers connected to this node: from the connection's reader handing
/// the frame to the hub task (a post-box message: the hub task taking it) to the message being
/// queued for the recipient's WebSocket writer. Includes the wait in the hub's input queue, the
/// hub's handling and the serialisation; not the writer's socket write. Messages for
/// post-box recipients (fetched by polling) and for peers on other nodes are not timed.
pub(crate) static DELIVERY: Histogram<{ HANDLING_BUCKETS.len() }> = Histogram::new(
    "floe_signal_delivery_seconds",
    "Signalling delivery latency of directed messages, from the hub receiving them to their queueing for the recipient's WebSocket writer.",
    HANDLING_BUCKETS,
);

/// Appends the signalling histograms in the Prometheus text format.
pub fn render_histograms(out: &mut String) {
    DELIVERY.render(out);
}
