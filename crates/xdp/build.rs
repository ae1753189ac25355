//! Builds `bpf/turn_relay.c` into an eBPF object with clang (`docs/xdp.md`).
//!
//! Without clang the crate still builds, with an empty object: floe then runs without XDP
//! support and says so when `--xdp` asks for it. Set `FLOE_XDP_REQUIRE=1` (CI does, through
//! `./test.sh`) to make a missing clang a build error instead.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let src = manifest.join("../../bpf/turn_relay.c");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("turn_relay.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=FLOE_XDP_REQUIRE");
    println!("cargo:rerun-if-env-changed=CLANG");
    let required = std::env::var("FLOE_XDP_REQUIRE").is_ok_and(|v| v == "1");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // Debian keeps asm/types.h under the multiarch include directory, which clang's BPF
    // target does not search by itself.
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{multiarch}"))
        // Reproducible output: no absolute build paths in the debug info.
        .arg(format!(
            "-fdebug-prefix-map={}=.",
            manifest.join("../..").display()
        ))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output();
    let failure = match result {
        Ok(o) if o.status.success() => return,
        Ok(o) => format!(
            "{clang} failed to build {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!(
            "cannot run {clang} ({e}): install clang, llvm and libbpf-dev \
             (Debian: apt-get install clang llvm libbpf-dev) for XDP support"
        ),
    };
    if required {
        panic!("FLOE_XDP_REQUIRE=1: {failure}");
    }
    println!("cargo:warning=floe is built without XDP support: {failure}");
    std::fs::write(&out, b"").expect("OUT_DIR is writable");
}
