//! cargo fuzz run parse_channel_data --sanitizer none
//!
//! The checks live in `floe_stun::fuzzing::check_channel_data` so that `crates/stun/tests/corpus.rs`
//! replays the committed corpus with the same assertions on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| floe_stun::fuzzing::check_channel_data(data));
