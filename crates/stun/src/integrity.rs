//! Message integrity and fingerprint (RFC 8489 §9, §14.5–§14.7).
//!
//! Keys: for short-term credentials (§9.1) the key is the password itself; for long-term
//! credentials (§9.2.2) it is `MD5(username ":" realm ":" password)` or, when PASSWORD-ALGORITHM is
//! SHA-256, `SHA-256(username ":" realm ":" password)`. floe applies no SASLprep/OpaqueString
//! mapping: ASCII credentials (every credential floe mints) are unchanged by it, and coturn and
//! browsers send the bytes as given.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::HEADER_LEN;

/// RFC 8489 §18.5: PASSWORD-ALGORITHM value for MD5.
pub const ALGORITHM_MD5: u16 = 0x0001;
/// RFC 8489 §18.5: PASSWORD-ALGORITHM value for SHA-256.
pub const ALGORITHM_SHA256: u16 = 0x0002;

/// RFC 8489 §9.2.2: the long-term key with the MD5 password algorithm.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// RFC 8489 §9.2.2: the long-term key with the SHA-256 password algorithm.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// RFC 8489 §14.4: USERHASH = SHA-256(username ":" realm).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// Compares two byte strings in constant time (for equal lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The message header with its length field rewritten to `end - 20`, as §14.5–§14.7 require.
fn adjusted_header(buf: &[u8], end: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&buf[..HEADER_LEN]);
    // `end` is at most the message length, which fits the 16-bit length field.
    let len = u16::try_from(end - HEADER_LEN).unwrap_or(u16::MAX);
    header[2..4].copy_from_slice(&len.to_be_bytes());
    header
}

/// RFC 8489 §14.5: HMAC-SHA1 over `buf[..attr_offset]` with the header length adjusted to end at
/// `attr_end` (the end of the MESSAGE-INTEGRITY attribute).
pub(crate) fn hmac_sha1(key: &[u8], buf: &[u8], attr_offset: usize, attr_end: usize) -> [u8; 20] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts any key length")
    };
    mac.update(&adjusted_header(buf, attr_end));
    mac.update(&buf[HEADER_LEN..attr_offset]);
    mac.finalize().into_bytes().into()
}

/// RFC 8489 §14.6: HMAC-SHA256, as [`hmac_sha1`].
pub(crate) fn hmac_sha256(key: &[u8], buf: &[u8], attr_offset: usize, attr_end: usize) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts any key length")
    };
    mac.update(&adjusted_header(buf, attr_end));
    mac.update(&buf[HEADER_LEN..attr_offset]);
    mac.finalize().into_bytes().into()
}

/// RFC 8489 §14.7: CRC-32 over `buf[..attr_offset]` with the header length adjusted to end at
/// `attr_end` (the end of FINGERPRINT). The caller XORs with 0x5354554E.
pub(crate) fn crc32_adjusted(buf: &[u8], attr_offset: usize, attr_end: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&adjusted_header(buf, attr_end));
    h.update(&buf[HEADER_LEN..attr_offset]);
    h.finalize()
}
