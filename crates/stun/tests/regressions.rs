//! Regression tests for codec bugs found while building the evidence (fuzzing, property tests).
// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use floe_stun::{Message, MAGIC_COOKIE};

/// A Binding request whose attribute section is `attrs` (already padded).
fn message(attrs: &[u8]) -> Vec<u8> {
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(attrs);
    m
}

/// Bug: a MESSAGE-INTEGRITY with a value shorter than 20 bytes at the end of a message made
/// `verify_integrity` slice past the end of the buffer and panic.
#[test]
fn short_message_integrity_does_not_panic() {
    for len in [0u8, 4, 16] {
        let mut attrs = vec![0x00, 0x08, 0x00, len];
        attrs.resize(4 + usize::from(len), 0);
        let m = message(&attrs);
        let msg = Message::parse(&m).expect("well-formed TLV");
        assert!(msg.has_integrity());
        assert!(!msg.verify_integrity(b"key"));
    }
}

/// Bug: a FINGERPRINT with an empty value at the end of a message made `verify_fingerprint`
/// slice past the end of the buffer and panic.
#[test]
fn short_fingerprint_does_not_panic() {
    let m = message(&[0x80, 0x28, 0x00, 0x00]);
    let msg = Message::parse(&m).expect("well-formed TLV");
    assert!(msg.has_fingerprint());
    assert!(!msg.verify_fingerprint());
}

/// A MESSAGE-INTEGRITY of the wrong length that is not last must not be checked against the
/// bytes of the attributes that follow it: it is simply invalid.
#[test]
fn oversized_message_integrity_is_rejected() {
    let mut attrs = vec![0x00, 0x08, 0x00, 24];
    attrs.resize(28, 0);
    let m = message(&attrs);
    let msg = Message::parse(&m).expect("well-formed TLV");
    assert!(!msg.verify_integrity(b"key"));
}

/// Bug: the security feature bits were numbered from the most significant bit, against RFC 8489
/// erratum 6268 (bit 0 is the least significant) and floe's own TURN server, which announces
/// password algorithms as "obMatJos2AAAB".
#[test]
fn security_feature_bits_follow_erratum_6268() {
    use floe_stun::attr::{Nonce, SecurityFeatures};

    let f = Nonce("obMatJos2AAABrest").security_features().unwrap();
    assert!(f.password_algorithms());
    assert!(!f.username_anonymity());
    let f = Nonce("obMatJos2AAAC").security_features().unwrap();
    assert!(f.username_anonymity());
    assert!(!f.password_algorithms());
    let both = SecurityFeatures(
        SecurityFeatures::PASSWORD_ALGORITHMS | SecurityFeatures::USERNAME_ANONYMITY,
    );
    assert_eq!(&both.encode(), b"AAAD");
    assert_eq!(Nonce("no-cookie").security_features(), None);
}
