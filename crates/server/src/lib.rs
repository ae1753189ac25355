//! floe-server.
