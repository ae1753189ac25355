//! The browser client and demo page, embedded so that one binary serves them from any cwd.

/// `web/index.html`, served at `/`.
pub const INDEX_HTML: &str = include_str!("../../../web/index.html");
/// `web/floe.js`, served at `/floe.js`.
pub const FLOE_JS: &str = include_str!("../../../web/floe.js");
