//! The published test vectors, byte for byte, parsed and built.
//!
//! * RFC 5769 §2.1–§2.4 (the four STUN sample messages).
//! * RFC 8489 Appendix B.1 (long-term credentials with USERHASH, PASSWORD-ALGORITHM SHA-256 and
//!   MESSAGE-INTEGRITY-SHA256), as corrected by RFC 8489 errata 6268.
//!
//! The hex below is transcribed from the RFC text. Every byte of each vector is covered by its
//! MESSAGE-INTEGRITY (-SHA256) or FINGERPRINT, so a verification that succeeds with the RFC's
//! credentials also proves the transcription.
// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use floe_stun::attr::{
    IceControlled, Nonce, PasswordAlgorithm, Priority, Realm, Software, Userhash, Username,
    XorMappedAddress,
};
use floe_stun::integrity::{self, ALGORITHM_SHA256};
use floe_stun::{AttrType, Class, Message, MessageBuilder, Method, TransactionId};

fn unhex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    hex::decode(digits).expect("valid hex")
}

fn tid(s: &str) -> TransactionId {
    let mut id = [0u8; 12];
    id.copy_from_slice(&unhex(s));
    TransactionId(id)
}

/// RFC 5769 §2.1–§2.3: the short-term password shared by the first three vectors.
const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
/// RFC 5769 §2.4 and RFC 8489 B.1: "マトリックス" (U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9),
/// unchanged by SASLprep / OpaqueString.
const LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// The password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep (RFC 5769) / OpaqueString
/// (RFC 8489): floe takes prepared credentials, so the vectors use the prepared form.
const LT_PASSWORD: &str = "TheMatrIX";
const LT_REALM: &str = "example.org";

/// RFC 5769 §2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY, FINGERPRINT). USERNAME "evtj:h6vY" is padded with three 0x20 bytes.
const SAMPLE_REQUEST: &str = "
    00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
    00 24 00 04  6e 00 01 ff
    80 29 00 08  93 2f f9 b1  51 26 3b 36
    00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
    00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
    80 28 00 04  e5 7a 3b cf";

/// RFC 5769 §2.2: sample IPv4 response. SOFTWARE "test vector" is padded with one 0x20 byte.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 08  00 01 a1 47  e1 12 a6 43
    00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
    80 28 00 04  c0 7d 4c 96";

/// RFC 5769 §2.3: sample IPv6 response.
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
    00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
    80 28 00 04  c8 fb 0b 4c";

/// RFC 5769 §2.4: sample request with long-term authentication (USERNAME, NONCE, REALM,
/// MESSAGE-INTEGRITY). Padding here is 0x00.
const SAMPLE_REQUEST_LONG_TERM: &str = "
    00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00
    00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46
                 53 54 76 79  36 34 73 41
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66";

/// RFC 8489 Appendix B.1 as published. It is inconsistent: the header claims 0x9c attribute
/// bytes but 136 follow, PASSWORD-ALGORITHM is missing although the key must be SHA-256 for
/// MESSAGE-INTEGRITY-SHA256, and the HMAC matches neither reading. Errata 6268 corrects it.
const RFC8489_B1_AS_PUBLISHED: &str = "
    00 01 00 9c  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 1e 00 20  4a 3c f3 8f  ef 69 92 bd  a9 52 c6 78  04 17 da 0f
                 24 81 94 15  56 9e 60 b2  05 c4 6e 41  40 7f 17 04
    00 15 00 29  6f 62 4d 61  74 4a 6f 73  32 41 41 41  43 66 2f 2f
                 34 39 39 6b  39 35 34 64  36 4f 4c 33  34 6f 4c 39
                 46 53 54 76  79 36 34 73  41 00 00 00
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 1c 00 20  e4 68 6c 8f  0e de b5 90  13 e0 70 90  01 0a 93 ef
                 cc bc cc 54  4c 0a 45 d9  f8 30 aa 6d  6f 73 5a 01";

/// RFC 8489 Appendix B.1 with errata 6268: PASSWORD-ALGORITHM (SHA-256) before
/// MESSAGE-INTEGRITY-SHA256, the length 0x90, and the HMAC-SHA256 recomputed with the SHA-256
/// long-term key.
const RFC8489_B1: &str = "
    00 01 00 90  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 1e 00 20  4a 3c f3 8f  ef 69 92 bd  a9 52 c6 78  04 17 da 0f
                 24 81 94 15  56 9e 60 b2  05 c4 6e 41  40 7f 17 04
    00 15 00 29  6f 62 4d 61  74 4a 6f 73  32 41 41 41  43 66 2f 2f
                 34 39 39 6b  39 35 34 64  36 4f 4c 33  34 6f 4c 39
                 46 53 54 76  79 36 34 73  41 00 00 00
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 1d 00 04  00 02 00 00
    00 1c 00 20  b5 c7 bf 00  5b 6c 52 a2  1c 51 c5 e8  92 f8 19 24
                 13 62 96 cb  92 7c 43 14  93 09 27 8c  c6 51 8e 65";

const RFC5769_TID: &str = "b7 e7 a7 01 bc 34 d6 86 fa 87 df ae";
const LONG_TERM_TID: &str = "78 ad 34 33 c6 ad 72 c0 29 da 41 2e";

/// Flips each bit of every byte in `range` and asserts `verifies` turns false (or the message no
/// longer parses). This is the "one-bit flip fails verification" check, done exhaustively.
fn assert_bit_flips_fail(
    bytes: &[u8],
    range: std::ops::Range<usize>,
    verifies: impl Fn(&Message<'_>) -> bool,
) {
    for i in range {
        for bit in 0..8 {
            let mut m = bytes.to_vec();
            m[i] ^= 1 << bit;
            if let Ok(msg) = Message::parse(&m) {
                assert!(
                    !verifies(&msg),
                    "flip of bit {bit} in byte {i} still verifies"
                );
            }
        }
    }
}

fn attr_types(msg: &Message<'_>) -> Vec<AttrType> {
    msg.attributes().map(|a| a.attr_type).collect()
}

/// Builds a message whose padding bytes are `padding` into a fresh buffer.
fn build(
    class: Class,
    method: Method,
    id: &str,
    padding: u8,
    f: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, class, method, tid(id)).expect("header fits");
    b.set_padding_byte(padding);
    f(&mut b);
    let n = b.finish();
    buf[..n].to_vec()
}

// ------------------------------------------------------------------------------------------
// RFC 5769 §2.1
// ------------------------------------------------------------------------------------------

#[test]
fn rfc5769_2_1_sample_request_parses() {
    let bytes = unhex(SAMPLE_REQUEST);
    let msg = Message::parse(&bytes).expect("valid");

    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), tid(RFC5769_TID));
    assert_eq!(
        attr_types(&msg),
        [
            AttrType::SOFTWARE,
            AttrType::PRIORITY,
            AttrType::ICE_CONTROLLED,
            AttrType::USERNAME,
            AttrType::MESSAGE_INTEGRITY,
            AttrType::FINGERPRINT
        ]
    );
    assert_eq!(
        msg.get::<Software<'_>>(),
        Some(Ok(Software("STUN test client")))
    );
    assert_eq!(msg.get::<Priority>(), Some(Ok(Priority(0x6e00_01ff))));
    assert_eq!(
        msg.get::<IceControlled>(),
        Some(Ok(IceControlled(0x932f_f9b1_5126_3b36)))
    );
    assert_eq!(msg.get::<Username<'_>>(), Some(Ok(Username("evtj:h6vY"))));
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
    assert!(!msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    assert!(msg.verify_fingerprint());
}

#[test]
fn rfc5769_2_1_bit_flips_fail_verification() {
    let bytes = unhex(SAMPLE_REQUEST);
    let mi_offset = bytes.len() - 8 - 24;
    assert_bit_flips_fail(&bytes, 0..mi_offset + 24, |m| {
        m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes())
    });
    assert_bit_flips_fail(&bytes, 0..bytes.len(), |m| m.verify_fingerprint());
}

#[test]
fn rfc5769_2_1_sample_request_builds_byte_for_byte() {
    // The RFC pads USERNAME with 0x20 (padding may be any value, RFC 8489 §14); the padding is
    // covered by MESSAGE-INTEGRITY and FINGERPRINT, so the builder is told to pad with 0x20.
    let built = build(Class::Request, Method::BINDING, RFC5769_TID, 0x20, |b| {
        b.add(&Software("STUN test client")).unwrap();
        b.add(&Priority(0x6e00_01ff)).unwrap();
        b.add(&IceControlled(0x932f_f9b1_5126_3b36)).unwrap();
        b.add(&Username("evtj:h6vY")).unwrap();
        b.add_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
            .unwrap();
        b.add_fingerprint().unwrap();
    });
    assert_eq!(hex::encode(built), hex::encode(unhex(SAMPLE_REQUEST)));
}

#[test]
fn rfc5769_2_1_with_zero_padding_differs_only_in_padding_and_checksums() {
    // Default zero padding: the same message except the three padding bytes, and therefore a
    // different MESSAGE-INTEGRITY and FINGERPRINT, which still verify.
    let built = build(Class::Request, Method::BINDING, RFC5769_TID, 0, |b| {
        b.add(&Software("STUN test client")).unwrap();
        b.add(&Priority(0x6e00_01ff)).unwrap();
        b.add(&IceControlled(0x932f_f9b1_5126_3b36)).unwrap();
        b.add(&Username("evtj:h6vY")).unwrap();
        b.add_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
            .unwrap();
        b.add_fingerprint().unwrap();
    });
    let rfc = unhex(SAMPLE_REQUEST);
    assert_eq!(built.len(), rfc.len());
    let padding = 73..76;
    assert_eq!(&rfc[padding.clone()], b"   ");
    assert_eq!(&built[padding.clone()], &[0, 0, 0]);
    assert_eq!(built[..padding.start], rfc[..padding.start]);
    assert_eq!(built[padding.end..80], rfc[padding.end..80]);
    let msg = Message::parse(&built).unwrap();
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
    assert!(msg.verify_fingerprint());
}

// ------------------------------------------------------------------------------------------
// RFC 5769 §2.2 and §2.3
// ------------------------------------------------------------------------------------------

fn check_response(hex_text: &str, mapped: &str) {
    let bytes = unhex(hex_text);
    let msg = Message::parse(&bytes).expect("valid");
    let mapped: SocketAddr = mapped.parse().unwrap();

    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), tid(RFC5769_TID));
    assert_eq!(
        attr_types(&msg),
        [
            AttrType::SOFTWARE,
            AttrType::XOR_MAPPED_ADDRESS,
            AttrType::MESSAGE_INTEGRITY,
            AttrType::FINGERPRINT
        ]
    );
    assert_eq!(msg.get::<Software<'_>>(), Some(Ok(Software("test vector"))));
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(mapped)))
    );
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
    assert!(msg.verify_fingerprint());
    let mi_end = bytes.len() - 8;
    assert_bit_flips_fail(&bytes, 0..mi_end, |m| {
        m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes())
    });
    assert_bit_flips_fail(&bytes, 0..bytes.len(), |m| m.verify_fingerprint());

    // SOFTWARE "test vector" is padded with one 0x20 byte in the RFC.
    let built = build(
        Class::SuccessResponse,
        Method::BINDING,
        RFC5769_TID,
        0x20,
        |b| {
            b.add(&Software("test vector")).unwrap();
            b.add(&XorMappedAddress(mapped)).unwrap();
            b.add_message_integrity(SHORT_TERM_PASSWORD.as_bytes())
                .unwrap();
            b.add_fingerprint().unwrap();
        },
    );
    assert_eq!(hex::encode(built), hex::encode(&bytes));
}

#[test]
fn rfc5769_2_2_ipv4_response() {
    check_response(SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853");
}

#[test]
fn rfc5769_2_3_ipv6_response() {
    check_response(
        SAMPLE_IPV6_RESPONSE,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
    );
}

// ------------------------------------------------------------------------------------------
// RFC 5769 §2.4
// ------------------------------------------------------------------------------------------

#[test]
fn rfc5769_2_4_long_term_request_parses() {
    let bytes = unhex(SAMPLE_REQUEST_LONG_TERM);
    let msg = Message::parse(&bytes).expect("valid");
    let key = integrity::long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);

    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), tid(LONG_TERM_TID));
    assert_eq!(
        attr_types(&msg),
        [
            AttrType::USERNAME,
            AttrType::NONCE,
            AttrType::REALM,
            AttrType::MESSAGE_INTEGRITY
        ]
    );
    assert_eq!(msg.get::<Username<'_>>(), Some(Ok(Username(LT_USERNAME))));
    assert_eq!(
        msg.get::<Nonce<'_>>(),
        Some(Ok(Nonce("f//499k954d6OL34oL9FSTvy64sA")))
    );
    assert_eq!(msg.get::<Realm<'_>>(), Some(Ok(Realm(LT_REALM))));
    assert!(!msg.has_fingerprint());
    assert!(msg.verify_integrity(&key));
    assert!(!msg.verify_integrity(&integrity::long_term_key_md5(
        LT_USERNAME,
        LT_REALM,
        "TheMatrix"
    )));
    assert_bit_flips_fail(&bytes, 0..bytes.len(), |m| m.verify_integrity(&key));
}

#[test]
fn rfc5769_2_4_long_term_request_builds_byte_for_byte() {
    let key = integrity::long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    let built = build(Class::Request, Method::BINDING, LONG_TERM_TID, 0, |b| {
        b.add(&Username(LT_USERNAME)).unwrap();
        b.add(&Nonce("f//499k954d6OL34oL9FSTvy64sA")).unwrap();
        b.add(&Realm(LT_REALM)).unwrap();
        b.add_message_integrity(&key).unwrap();
    });
    assert_eq!(
        hex::encode(built),
        hex::encode(unhex(SAMPLE_REQUEST_LONG_TERM))
    );
}

// ------------------------------------------------------------------------------------------
// RFC 8489 Appendix B.1 (errata 6268)
// ------------------------------------------------------------------------------------------

#[test]
fn rfc8489_b1_parses_and_verifies() {
    let bytes = unhex(RFC8489_B1);
    let msg = Message::parse(&bytes).expect("valid");
    let key = integrity::long_term_key_sha256(LT_USERNAME, LT_REALM, LT_PASSWORD);
    let userhash = integrity::userhash(LT_USERNAME, LT_REALM);

    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), tid(LONG_TERM_TID));
    assert_eq!(
        attr_types(&msg),
        [
            AttrType::USERHASH,
            AttrType::NONCE,
            AttrType::REALM,
            AttrType::PASSWORD_ALGORITHM,
            AttrType::MESSAGE_INTEGRITY_SHA256
        ]
    );
    // The USERHASH in the vector is SHA-256(username ":" realm), RFC 8489 §14.4.
    assert_eq!(msg.get::<Userhash<'_>>(), Some(Ok(Userhash(&userhash))));
    let nonce = msg.get::<Nonce<'_>>().unwrap().unwrap();
    assert_eq!(nonce, Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"));
    // "obMatJos2" + "AAAC": the 24-bit security feature set is 0x000002 (RFC 8489 §9.2). With the
    // bit numbering of erratum 6268 (bit 0 least significant) that is bit 1, username anonymity,
    // which is why the request carries USERHASH instead of USERNAME.
    let features = nonce.security_features().expect("nonce cookie");
    assert_eq!(features.0, 0x00_0002);
    assert!(features.username_anonymity());
    assert!(!features.password_algorithms());
    assert_eq!(msg.get::<Realm<'_>>(), Some(Ok(Realm(LT_REALM))));
    assert_eq!(
        msg.get::<PasswordAlgorithm<'_>>(),
        Some(Ok(PasswordAlgorithm {
            algorithm: ALGORITHM_SHA256,
            params: &[]
        }))
    );
    assert!(msg.verify_integrity_sha256(&key));
    assert!(!msg.verify_integrity_sha256(&integrity::long_term_key_md5(
        LT_USERNAME,
        LT_REALM,
        LT_PASSWORD
    )));
    assert!(!msg.has_integrity());
    assert_bit_flips_fail(&bytes, 0..bytes.len(), |m| m.verify_integrity_sha256(&key));
}

#[test]
fn rfc8489_b1_builds_byte_for_byte() {
    let key = integrity::long_term_key_sha256(LT_USERNAME, LT_REALM, LT_PASSWORD);
    let userhash = integrity::userhash(LT_USERNAME, LT_REALM);
    let built = build(Class::Request, Method::BINDING, LONG_TERM_TID, 0, |b| {
        b.add(&Userhash(&userhash)).unwrap();
        b.add(&Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"))
            .unwrap();
        b.add(&Realm(LT_REALM)).unwrap();
        b.add(&PasswordAlgorithm {
            algorithm: ALGORITHM_SHA256,
            params: &[],
        })
        .unwrap();
        b.add_message_integrity_sha256(&key).unwrap();
    });
    assert_eq!(hex::encode(built), hex::encode(unhex(RFC8489_B1)));
}

#[test]
fn rfc8489_b1_as_published_is_rejected() {
    // The header length (0x9c) disagrees with the 136 attribute bytes that follow: a strict
    // parser must refuse it. This is the inconsistency errata 6268 corrects.
    let bytes = unhex(RFC8489_B1_AS_PUBLISHED);
    assert_eq!(bytes.len(), 20 + 136);
    assert!(Message::parse(&bytes).is_err());
    // With the length repaired the TLVs parse, but the published HMAC matches neither key
    // derivation: the corrected vector above is the one an implementation can pass.
    let mut repaired = bytes.clone();
    repaired[2..4].copy_from_slice(&136u16.to_be_bytes());
    let msg = Message::parse(&repaired).expect("TLVs are well formed");
    let sha256 = integrity::long_term_key_sha256(LT_USERNAME, LT_REALM, LT_PASSWORD);
    let md5 = integrity::long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    assert!(!msg.verify_integrity_sha256(&sha256));
    assert!(!msg.verify_integrity_sha256(&md5));
}
