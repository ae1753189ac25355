//! Proves that parsing and validating a message, and building one, do not touch the heap:
//! a counting global allocator wraps the system allocator and the test asserts that the
//! count does not move across those calls.
//!
//! The workspace denies `unsafe_code`; implementing `GlobalAlloc` requires `unsafe impl` and
//! `unsafe fn`s that only forward to `std::alloc::System`. That is the only unsafe code, it lives
//! in this test binary alone (its own process, so the allocator sees no other test crate), and
//! it is what makes the "no heap allocation per packet" claim testable.
#![allow(unsafe_code)]
// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use floe_stun::attr::{Nonce, Realm, Software, Username, XorMappedAddress, XorPeerAddress};
use floe_stun::TransactionId;
use floe_stun::{integrity, Attribute, ChannelData, Class, Message, MessageBuilder, Method};

struct Counting;

thread_local! {
    /// Allocations made by this thread (the test harness runs other tests on other threads).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the same arguments; the counter is a
// thread-local `Cell<usize>` with a const initialiser, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Runs `f` and returns how many heap allocations it made on this thread.
fn count(f: impl FnOnce()) -> usize {
    let before = allocations();
    f();
    allocations() - before
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test below against a counter that never counts.
    let n = count(|| {
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(16));
        drop(v);
    });
    assert_eq!(n, 1);
}

#[test]
fn parse_verify_and_build_do_not_allocate() {
    let key = integrity::long_term_key_md5("alice", "floe", "secret");
    let peer: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
    let mut buf = [0u8; 512];
    let n = {
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Request,
            Method::CREATE_PERMISSION,
            TransactionId([7; 12]),
        )
        .unwrap();
        b.add(&XorPeerAddress(peer)).unwrap();
        b.add(&Username("alice")).unwrap();
        b.add(&Realm("floe")).unwrap();
        b.add(&Nonce("obMatJos2AAABnonce")).unwrap();
        b.add_message_integrity(&key).unwrap();
        b.add_message_integrity_sha256(&key).unwrap();
        b.add_fingerprint().unwrap();
        b.finish()
    };
    let bytes = &buf[..n];

    let parse_and_verify = count(|| {
        let msg = Message::parse(bytes).unwrap();
        let tid = msg.transaction_id();
        for raw in msg.attributes() {
            std::hint::black_box(Attribute::decode(raw.attr_type, raw.value, &tid).unwrap());
        }
        assert_eq!(msg.get::<XorPeerAddress>(), Some(Ok(XorPeerAddress(peer))));
        assert_eq!(msg.get_all::<XorPeerAddress>().count(), 1);
        assert!(msg.verify_integrity(&key));
        assert!(msg.verify_integrity_sha256(&key));
        assert!(msg.verify_fingerprint());
        let _ = integrity::long_term_key_sha256("alice", "floe", "secret");
    });
    assert_eq!(parse_and_verify, 0, "parse/verify allocated");

    let mut out = [0u8; 128];
    let build = count(|| {
        let mut b = MessageBuilder::new(
            &mut out,
            Class::SuccessResponse,
            Method::BINDING,
            TransactionId([1; 12]),
        )
        .unwrap();
        b.add(&XorMappedAddress(peer)).unwrap();
        b.add(&Software("floe")).unwrap();
        b.add_message_integrity(&key).unwrap();
        b.add_fingerprint().unwrap();
        std::hint::black_box(b.finish());
    });
    assert_eq!(build, 0, "build allocated");

    let mut frame = [0u8; 64];
    let channel_data = count(|| {
        let n = ChannelData::encode(0x4001, b"payload", true, &mut frame).unwrap();
        let cd = ChannelData::parse(&frame[..n]).unwrap();
        assert_eq!(cd.data, b"payload");
    });
    assert_eq!(channel_data, 0, "ChannelData allocated");
}
