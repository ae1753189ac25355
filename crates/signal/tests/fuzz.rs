//! The signalling message fuzz checks on stable Rust (issue 12): the committed corpus
//! (`fuzz/corpus/signal_message/`) replayed, and a bounded property run over arbitrary bytes and
//! over mutated JSON messages, with the same checks as the cargo-fuzz target
//! `fuzz/fuzz_targets/signal_message.rs` (`floe_signal::fuzzing::check_client_msg`).

use floe_signal::fuzzing::{check_client_msg, corpus, mutate};
use floe_signal::proto::ClientMsg;
use proptest::prelude::*;

#[test]
fn signal_message_corpus_replays_and_covers_every_message_type() {
    let seeds = corpus("signal_message");
    for (name, data) in &seeds {
        eprintln!("signal_message: {name}");
        check_client_msg(data, std::time::Instant::now());
    }
    for ty in ClientMsg::TYPES {
        let tag = format!("\"type\":\"{ty}\"");
        let seeded = seeds
            .iter()
            .any(|(_, d)| String::from_utf8_lossy(d).contains(&tag));
        assert!(seeded, "no seed for {ty}");
    }
}

proptest! {
    // Bounded: a few hundred cases per run (each builds a hub and three sessions).
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_client_msg(&data, std::time::Instant::now());
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8),
    ) {
        let seeds = corpus("signal_message");
        check_client_msg(&mutate(&seeds[seed % seeds.len()].1, &edits), std::time::Instant::now());
    }

    #[test]
    fn json_field_values_never_panic(
        ty in proptest::sample::select(ClientMsg::TYPES.to_vec()),
        seq in prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()],
        s in "\\PC{0,40}",
        n in any::<i64>(),
    ) {
        let v = serde_json::json!({
            "type": ty, "v": n, "room": s, "peer": s, "to": s, "sdp": s, "seq": seq,
            "ack": seq, "lastSeq": seq, "session": s, "resumeToken": s, "token": s,
            "candidate": s, "sdpMLineIndex": n, "data": {"x": s},
        });
        check_client_msg(v.to_string().as_bytes(), std::time::Instant::now());
    }
}
