//! cargo fuzz run signal_http --sanitizer none
//!
//! An HTTP request (method, path and query, headers, body) through the signalling router: the
//! WebSocket upgrade, the HTTP post box, ICE servers, static files and metrics. The checks live
//! in `floe_signal_server::fuzzing::check_request` so that `crates/signal-server/tests/fuzz.rs`
//! replays the committed corpus and runs a bounded property test on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = floe_signal_server::fuzzing::check_request(data);
});
