//! floe-turn.
