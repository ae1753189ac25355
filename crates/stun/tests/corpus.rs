//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) with the same checks as the
//! cargo-fuzz targets, so `cargo test` exercises it on stable Rust without cargo-fuzz.
// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use floe_stun::fuzzing;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus(target);
    for path in &files {
        let data = fs::read(path).expect("readable corpus file");
        // A panic names the file that triggered it.
        eprintln!("{target}: {}", path.display());
        check(&data);
    }
    files.len()
}

#[test]
fn parse_message_corpus() {
    let n = replay("parse_message", fuzzing::check_message);
    // The RFC 5769 / RFC 8489 vectors and the TURN messages are there.
    assert!(n >= 12, "{n} files");
}

#[test]
fn parse_message_corpus_contains_valid_vectors() {
    // The seeds are real messages: every one of them parses (the fuzzer's own additions, if
    // any are committed later, are not required to).
    for path in corpus("parse_message") {
        let data = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("rfc") || name.starts_with("turn") {
            let msg = floe_stun::Message::parse(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(msg.attributes().count() > 0, "{name}");
        }
    }
}

#[test]
fn parse_channel_data_corpus() {
    replay("parse_channel_data", fuzzing::check_channel_data);
}

#[test]
fn build_roundtrip_corpus() {
    replay("build_roundtrip", fuzzing::check_build_roundtrip);
}
