//! The signalling HTTP request-path fuzz checks on stable Rust (issue 12): the committed corpus
//! (`fuzz/corpus/signal_http/`) replayed, and a bounded property run over arbitrary and mutated
//! requests, with the same checks as the cargo-fuzz target `fuzz/fuzz_targets/signal_http.rs`
//! (`floe_signal_server::fuzzing::check_request`: through the real router, answers are 2xx-4xx
//! or 503, never a panic).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use floe_signal::fuzzing::{corpus, mutate};
use floe_signal_server::fuzzing::{check_request, request_from_bytes};
use proptest::prelude::*;

#[test]
fn signal_http_corpus_replays_and_reaches_every_route() {
    let mut paths = Vec::new();
    for (name, data) in corpus("signal_http") {
        eprintln!("signal_http: {name}");
        let req = request_from_bytes(&data).expect("every seed is a request");
        paths.push(req.uri().path().to_string());
        let status = check_request(&data).unwrap();
        // The seeds reach their handlers, not a blanket refusal.
        let want = match name.as_str() {
            "post_join" | "get_healthz" | "get_index" | "get_floe_js" => 200,
            "poll_after_max" | "delete_session" | "post_message" => 404,
            _ => status,
        };
        assert_eq!(status, want, "{name}");
    }
    for route in [
        "/v1/ws",
        "/v1/rest/join",
        "/v1/ice-servers",
        "/metrics",
        "/floe.js",
    ] {
        assert!(paths.iter().any(|p| p == route), "no seed for {route}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = check_request(&data);
    }

    #[test]
    fn mutated_seed_requests_never_panic(
        seed in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8),
    ) {
        let seeds = corpus("signal_http");
        let _ = check_request(&mutate(&seeds[seed % seeds.len()].1, &edits));
    }
}
