//! floe-stun.
