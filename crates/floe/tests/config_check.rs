//! `floe config check` as an operator runs it (issue 13 §8): exit status, every problem on its
//! own line with the file's line number, and the effective configuration with secrets redacted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::process::Command;

use common::{run, TempDir};

const FLOE: &str = env!("CARGO_BIN_EXE_floe");

#[test]
fn lists_every_problem_with_its_line_then_prints_the_effective_config() {
    let dir = TempDir::new("floe-config-check");
    let bad = dir.file("bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"127.0.0.1:3478\"]\n[turn]\nusers = [\"alice:hunter2\"]\n\
         relay_ports = \"9000-10\"\n[signal]\nmax_rooms = 0\n",
    )
    .unwrap();
    // A bad log filter is a problem of its own line too.
    let text = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, format!("log = \"floe=loud\"\n{text}")).unwrap();
    let (out, text) = run(Command::new(FLOE).args(["config", "check", &bad]));
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{bad}:1: log: invalid log filter")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad}:5: turn.relay_ports: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad}:7: signal.max_rooms: ")),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(!text.contains("hunter2"), "{text}");

    let good = dir.file("good.toml");
    std::fs::write(
        &good,
        "log = \"warn\"\nlisten = [\"127.0.0.1:3478\"]\n[turn]\nusers = [\"alice:hunter2\"]\n",
    )
    .unwrap();
    for role in ["serve", "turn"] {
        let (out, text) = run(Command::new(FLOE).args(["config", "check", &good, "--role", role]));
        assert!(out.status.success(), "{role}: {text}");
        assert!(
            text.contains("users = [\"alice:<redacted>\"]"),
            "{role}: {text}"
        );
        assert!(text.contains("log = \"warn\""), "{role}: {text}");
        assert!(!text.contains("hunter2"), "{role}: {text}");
    }
}

#[test]
fn usage_metrics_keys_are_shown_and_checked() {
    let dir = TempDir::new("floe-config-check-usage");
    let good = dir.file("good.toml");
    std::fs::write(
        &good,
        "listen = [\"127.0.0.1:3478\"]\n[turn]\nusers = [\"alice:pw\"]\n",
    )
    .unwrap();
    let (out, text) = run(Command::new(FLOE).args(["config", "check", &good, "--role", "turn"]));
    assert!(out.status.success(), "{text}");
    // Off by default, and the cap in force.
    assert!(text.contains("usage_metrics = \"off\""), "{text}");
    assert!(text.contains("usage_metrics_max_labels = 1000"), "{text}");

    let bad = dir.file("bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"127.0.0.1:3478\"]\n[turn]\nusers = [\"alice:pw\"]\nusage_metrics = \"user\"\n",
    )
    .unwrap();
    let (out, text) = run(Command::new(FLOE).args(["config", "check", &bad]));
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{bad}:4: turn.usage_metrics: ")),
        "{stderr}"
    );
}
