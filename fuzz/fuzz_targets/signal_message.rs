//! cargo fuzz run signal_message --sanitizer none
//!
//! A client→server signalling message, fed to the parser, to a hub through a WebSocket frame and
//! through the HTTP post box. The checks live in `floe_signal::fuzzing::check_client_msg` so
//! that `crates/signal/tests/fuzz.rs` replays the committed corpus and runs a bounded property
//! test with the same assertions on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| floe_signal::fuzzing::check_client_msg(
    data,
    std::time::Instant::now()
));
