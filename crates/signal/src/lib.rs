//! floe-signal.
