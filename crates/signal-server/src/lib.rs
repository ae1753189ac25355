//! floe-signal-server: the WebSocket and REST IO shell around the floe-signal hub.
