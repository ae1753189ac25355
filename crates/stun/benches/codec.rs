//! Codec benchmarks.
//!
//! `cargo bench -p floe-stun --bench codec -- --warm-up-time 1 --measurement-time 3`
//!
//! * parse a Binding request (RFC 5769 §2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
//!   MESSAGE-INTEGRITY, FINGERPRINT);
//! * parse + MESSAGE-INTEGRITY check with a long-term key (RFC 5769 §2.4);
//! * build a Binding success response with XOR-MAPPED-ADDRESS, SOFTWARE and FINGERPRINT;
//! * parse a ChannelData message.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use floe_stun::attr::{Software, XorMappedAddress};
use floe_stun::{integrity, ChannelData, Class, Message, MessageBuilder, Method, TransactionId};

/// RFC 5769 §2.1.
const SAMPLE_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573\
7420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020\
000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";

/// RFC 5769 §2.4.
const LONG_TERM_REQUEST: &str = "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee383\
88e383aae38383e382afe382b900000015001c662f2f3439396b393534643\
64f4c33346f4c394653547679363473410014000b6578616d706c652e6f72\
670000080014f67024656dd64a3e02b8e0712e85c9a28ca89666";

fn bench(c: &mut Criterion) {
    let request = hex::decode(SAMPLE_REQUEST).expect("hex");
    let long_term = hex::decode(LONG_TERM_REQUEST).expect("hex");
    let key = integrity::long_term_key_md5(
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
        "example.org",
        "TheMatrIX",
    );
    assert!(Message::parse(&long_term)
        .expect("valid")
        .verify_integrity(&key));

    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));

    g.bench_function("parse_binding_request", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(&request)).expect("valid");
            black_box(msg.attributes().count())
        })
    });

    g.bench_function("parse_and_verify_long_term_integrity", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(&long_term)).expect("valid");
            black_box(msg.verify_integrity(black_box(&key)))
        })
    });

    let mapped: SocketAddr = "192.0.2.1:32853".parse().expect("address");
    let tid = TransactionId(*b"floe-bench!!");
    let mut out = [0u8; 128];
    g.bench_function("build_binding_success_response", |b| {
        b.iter(|| {
            let mut m = MessageBuilder::new(
                &mut out,
                Class::SuccessResponse,
                Method::BINDING,
                black_box(tid),
            )
            .expect("fits");
            m.add(&XorMappedAddress(black_box(mapped))).expect("fits");
            m.add(&Software("floe")).expect("fits");
            m.add_fingerprint().expect("fits");
            black_box(m.finish())
        })
    });

    let mut frame = [0u8; 1204];
    let n = ChannelData::encode(0x4001, &[0xAB; 1200], false, &mut frame).expect("fits");
    g.bench_function("parse_channel_data_1200B", |b| {
        b.iter(|| {
            let cd = ChannelData::parse(black_box(&frame[..n])).expect("valid");
            black_box(cd.data.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
