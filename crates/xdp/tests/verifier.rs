//! The kernel's verifier accepts the program built from `bpf/turn_relay.c` (loaded, not attached
//! anywhere). Needs root (CAP_BPF) and clang at build time; `./test.sh` provides both, and a
//! build without the object fails here rather than skipping.

#[test]
fn the_verifier_accepts_the_program_on_this_kernel() {
    assert!(
        floe_xdp::supported(),
        "built without the eBPF object: install clang (./test.sh does)"
    );
    if let Err(e) = floe_xdp::verify() {
        panic!("{e}");
    }
}
