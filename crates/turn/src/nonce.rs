//! Stateless nonces for the long-term credential mechanism (RFC 8489 §9.2).
//!
//! RFC 8489 §9.2 lets the server choose the nonce format; floe keeps no state for unauthenticated
//! requests (a flood of them must not grow memory; RFC 8656 §21.3.1). A floe nonce is therefore
//! self-verifying:
//!
//! ```text
//! [ "obMatJos2" base64(security-feature-set, 3 bytes) ]        -- only when features are offered
//! base64url( expiry (u64 BE, unix seconds) || HMAC-SHA-256(secret, ...)[..16] )
//! ```
//!
//! The MAC covers a domain-separation label, the cookie prefix, the expiry and the client's
//! IP address (family and IP), so a nonce is only good for the host it was issued to and until it
//! expires. The port is deliberately not covered: an RFC 6062 client opens its data connections
//! from new ports and authenticates ConnectionBind with the nonce of its control connection
//! (coturn's clients do exactly that). Tags are compared in constant time. An authentic but expired nonce is
//! *stale* (438, RFC 8489 §9.2.4); anything else that does not verify is *invalid* (401).
//!
//! The output is 32 characters, or 45 with the cookie: well below the 128-character limit of the
//! NONCE attribute (RFC 8489 §14.10) and made of printable base64 characters only.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// RFC 8489 §9.2: the "nonce cookie" that starts a nonce when the server supports any of the
/// STUN security features (§18.1), so that a client can detect a bid-down attack.
pub const NONCE_COOKIE: &str = "obMatJos2";

/// RFC 8489 §14.10: a NONCE value is less than 128 characters.
pub const MAX_NONCE_CHARS: usize = 127;

/// The default validity of a nonce in seconds (RFC 8489 §9.2 leaves it to the server; coturn's
/// default is also 600 s).
pub const DEFAULT_NONCE_TTL_SECS: u64 = 600;

const TAG_LEN: usize = 16;
const PAYLOAD_LEN: usize = 8 + TAG_LEN;
const DOMAIN: &[u8] = b"floe-turn nonce v1\0";

type HmacSha256 = Hmac<Sha256>;

/// The 24-bit STUN Security Feature Set announced in the nonce cookie (RFC 8489 §9.2, registry
/// in §18.1).
///
/// Bit numbering follows verified erratum EID 6268 to RFC 8489 §18.1: bit 0 is the *least*
/// significant bit. This matches the RFC's own test vector (Appendix B.1 nonce `obMatJos2AAAC...`,
/// bit 1 = username anonymity, sent with a USERHASH) and libjuice; the original RFC text said the
/// opposite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SecurityFeatures(u32);

impl SecurityFeatures {
    /// No features: the nonce carries no cookie (RFC 8489 §9.2: the cookie is only sent when the
    /// server supports a feature).
    pub const NONE: Self = Self(0);
    /// RFC 8489 §18.1 bit 0: Password Algorithms (PASSWORD-ALGORITHMS, SHA-256 keys).
    pub const PASSWORD_ALGORITHMS: Self = Self(1);
    /// RFC 8489 §18.1 bit 1: Username Anonymity (USERHASH).
    pub const USERNAME_ANONYMITY: Self = Self(1 << 1);

    /// Builds a set from the 24 feature bits (higher bits are ignored).
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits & 0x00ff_ffff)
    }

    /// The 24 feature bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every feature of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no feature is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The cookie prefix: `obMatJos2` plus four base64 characters, or empty without features.
    fn cookie(self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let bytes = self.0.to_be_bytes();
        let mut s = String::from(NONCE_COOKIE);
        STANDARD.encode_string(&bytes[1..], &mut s);
        s
    }
}

impl std::ops::BitOr for SecurityFeatures {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Reads the security features from a nonce that starts with the RFC 8489 §9.2 nonce cookie;
/// `None` when there is no (well-formed) cookie.
pub fn parse_cookie(nonce: &str) -> Option<SecurityFeatures> {
    let rest = nonce.strip_prefix(NONCE_COOKIE)?;
    let b64 = rest.get(..4)?;
    let mut bytes = [0_u8; 3];
    let n = STANDARD.decode_slice(b64, &mut bytes).ok()?;
    (n == 3)
        .then(|| SecurityFeatures::from_bits(u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])))
}

/// The server secret nonces are authenticated with (RFC 8489 §9.2 leaves the construction to the
/// server). Create it from the OS CSPRNG in the IO shell at start-up; `Debug` never shows it.
#[derive(Clone)]
pub struct NonceSecret([u8; 32]);

impl NonceSecret {
    /// Wraps 32 random bytes (inject them; this crate never reads an RNG itself).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for NonceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceSecret(<redacted>)")
    }
}

/// Nonce settings (RFC 8489 §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NonceConfig {
    /// How long a nonce stays valid, in seconds (default [`DEFAULT_NONCE_TTL_SECS`]).
    pub ttl_secs: u64,
    /// The security features to announce in the nonce cookie (default none). Set
    /// [`SecurityFeatures::PASSWORD_ALGORITHMS`] when PASSWORD-ALGORITHMS is offered and
    /// [`SecurityFeatures::USERNAME_ANONYMITY`] when USERHASH is accepted.
    pub features: SecurityFeatures,
}

impl NonceConfig {
    /// A configuration with the given TTL and features.
    pub const fn new(ttl_secs: u64, features: SecurityFeatures) -> Self {
        Self { ttl_secs, features }
    }
}

impl Default for NonceConfig {
    fn default() -> Self {
        Self::new(DEFAULT_NONCE_TTL_SECS, SecurityFeatures::NONE)
    }
}

/// A nonce to put in a NONCE attribute (RFC 8489 §14.10): printable ASCII, at most 45 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nonce(String);

impl Nonce {
    /// The nonce text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nonce text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A nonce that verified (RFC 8489 §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidNonce {
    /// Unix time (seconds) at which the nonce becomes stale.
    pub expires_at: u64,
}

/// Why a nonce was not accepted (RFC 8489 §9.2.4 step 3/4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// The nonce is authentic but expired: answer 438 (Stale Nonce) with a fresh nonce.
    #[error("nonce expired at {expired_at}")]
    Stale {
        /// Unix time (seconds) at which it expired.
        expired_at: u64,
    },
    /// The nonce was not issued by this server for this client: answer 401 (Unauthenticated).
    #[error("nonce is not valid for this client")]
    Invalid,
}

impl NonceError {
    /// The STUN error code: 438 for stale, 401 for invalid (RFC 8489 §9.2.4).
    pub const fn error_code(&self) -> u16 {
        match self {
            Self::Stale { .. } => 438,
            Self::Invalid => 401,
        }
    }
}

/// Issues and verifies stateless nonces (RFC 8489 §9.2), with one previous secret kept so that a
/// rotation does not invalidate nonces already handed out.
#[derive(Debug, Clone)]
pub struct Nonces {
    current: NonceSecret,
    previous: Option<NonceSecret>,
    config: NonceConfig,
    cookie: String,
}

impl Nonces {
    /// Creates the nonce service from a random secret (RFC 8489 §9.2).
    pub fn new(secret: NonceSecret, config: NonceConfig) -> Self {
        let cookie = config.features.cookie();
        Self {
            current: secret,
            previous: None,
            config,
            cookie,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NonceConfig {
        &self.config
    }

    /// Replaces the secret; nonces minted with the old one keep verifying until the next rotation
    /// (rotate less often than the TTL so none is cut short).
    pub fn rotate(&mut self, secret: NonceSecret) {
        self.previous = Some(std::mem::replace(&mut self.current, secret));
    }

    /// Issues a nonce for `client`, valid for the configured TTL from `now_unix` (RFC 8489 §9.2).
    pub fn issue(&self, client: SocketAddr, now_unix: u64) -> Nonce {
        let expires_at = now_unix.saturating_add(self.config.ttl_secs);
        let tag = self.tag(&self.current, expires_at, client);
        let mut payload = [0_u8; PAYLOAD_LEN];
        payload[..8].copy_from_slice(&expires_at.to_be_bytes());
        payload[8..].copy_from_slice(&tag);
        let mut s = self.cookie.clone();
        URL_SAFE_NO_PAD.encode_string(payload, &mut s);
        Nonce(s)
    }

    /// Verifies a NONCE value received from `client` (RFC 8489 §9.2.4): `Stale` when it is
    /// authentic but expired (438), `Invalid` otherwise (401). The tag is compared in constant
    /// time against the current and the previous secret.
    pub fn verify(
        &self,
        nonce: &[u8],
        client: SocketAddr,
        now_unix: u64,
    ) -> Result<ValidNonce, NonceError> {
        let body = nonce
            .strip_prefix(self.cookie.as_bytes())
            .ok_or(NonceError::Invalid)?;
        let mut payload = [0_u8; PAYLOAD_LEN + 3];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut payload) {
            Ok(PAYLOAD_LEN) => {}
            _ => return Err(NonceError::Invalid),
        }
        let mut expiry = [0_u8; 8];
        expiry.copy_from_slice(&payload[..8]);
        let expires_at = u64::from_be_bytes(expiry);
        let received = &payload[8..PAYLOAD_LEN];

        let mut ok: Choice = self.tag(&self.current, expires_at, client)[..].ct_eq(received);
        if let Some(prev) = &self.previous {
            ok |= self.tag(prev, expires_at, client)[..].ct_eq(received);
        }
        if !bool::from(ok) {
            return Err(NonceError::Invalid);
        }
        if now_unix >= expires_at {
            return Err(NonceError::Stale {
                expired_at: expires_at,
            });
        }
        Ok(ValidNonce { expires_at })
    }

    fn tag(&self, secret: &NonceSecret, expires_at: u64, client: SocketAddr) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&secret.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(DOMAIN);
        mac.update(&(self.cookie.len() as u64).to_be_bytes());
        mac.update(self.cookie.as_bytes());
        mac.update(&expires_at.to_be_bytes());
        match client.ip() {
            IpAddr::V4(a) => {
                mac.update(&[4]);
                mac.update(&a.octets());
            }
            IpAddr::V6(a) => {
                mac.update(&[6]);
                mac.update(&a.octets());
            }
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0_u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn client() -> SocketAddr {
        "203.0.113.7:50000".parse().expect("addr")
    }

    fn nonces(features: SecurityFeatures) -> Nonces {
        Nonces::new(
            NonceSecret::from_bytes([7; 32]),
            NonceConfig::new(600, features),
        )
    }

    #[test]
    fn issued_nonce_verifies_for_the_same_client_until_expiry() {
        let n = nonces(SecurityFeatures::NONE);

        let nonce = n.issue(client(), NOW);

        assert_eq!(
            n.verify(nonce.as_str().as_bytes(), client(), NOW + 599),
            Ok(ValidNonce {
                expires_at: NOW + 600
            })
        );
        assert_eq!(
            n.verify(nonce.as_str().as_bytes(), client(), NOW + 600),
            Err(NonceError::Stale {
                expired_at: NOW + 600
            })
        );
        assert_eq!(
            NonceError::Stale { expired_at: 0 }.error_code(),
            438,
            "stale maps to 438"
        );
    }

    #[test]
    fn other_client_address_is_invalid_other_port_is_not() {
        let n = nonces(SecurityFeatures::NONE);
        let nonce = n.issue(client(), NOW);
        // RFC 6062 data connections come from new ports with the control connection's nonce.
        let same_host: SocketAddr = "203.0.113.7:50001".parse().expect("addr");
        assert!(n.verify(nonce.as_str().as_bytes(), same_host, NOW).is_ok());

        for other in ["203.0.113.8:50000", "[::ffff:203.0.113.7]:50000"] {
            let other: SocketAddr = other.parse().expect("addr");
            let r = n.verify(nonce.as_str().as_bytes(), other, NOW);
            assert_eq!(r, Err(NonceError::Invalid), "{other}");
        }
        assert_eq!(NonceError::Invalid.error_code(), 401);
    }

    #[test]
    fn expired_nonce_with_a_forged_tag_is_invalid_not_stale() {
        let n = nonces(SecurityFeatures::NONE);
        let nonce = n.issue(client(), NOW);
        let mut raw = URL_SAFE_NO_PAD.decode(nonce.as_str()).expect("b64");
        raw[PAYLOAD_LEN - 1] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&raw);

        let r = n.verify(forged.as_bytes(), client(), NOW + 10_000);

        assert_eq!(r, Err(NonceError::Invalid));
    }

    #[test]
    fn extending_the_expiry_breaks_the_tag() {
        let n = nonces(SecurityFeatures::NONE);
        let nonce = n.issue(client(), NOW);
        let mut raw = URL_SAFE_NO_PAD.decode(nonce.as_str()).expect("b64");
        raw[..8].copy_from_slice(&(NOW + 100_000).to_be_bytes());

        let r = n.verify(URL_SAFE_NO_PAD.encode(&raw).as_bytes(), client(), NOW + 700);

        assert_eq!(r, Err(NonceError::Invalid));
    }

    #[test]
    fn garbage_is_invalid() {
        let n = nonces(SecurityFeatures::PASSWORD_ALGORITHMS);
        for bad in [
            &b""[..],
            b"obMatJos2",
            b"obMatJos2AAAB",
            b"not base64 !!",
            b"\xff\xfe",
            &[b'A'; 200][..],
        ] {
            assert_eq!(n.verify(bad, client(), NOW), Err(NonceError::Invalid));
        }
    }

    #[test]
    fn cookie_announces_the_security_features() {
        let both = SecurityFeatures::PASSWORD_ALGORITHMS | SecurityFeatures::USERNAME_ANONYMITY;
        let n = nonces(both);

        let nonce = n.issue(client(), NOW);

        // 0x000003 in base64 is "AAAD"; password algorithms alone (0x000001) is "AAAB".
        assert!(nonce.as_str().starts_with("obMatJos2AAAD"), "{nonce}");
        assert_eq!(parse_cookie(nonce.as_str()), Some(both));
        assert!(n.verify(nonce.as_str().as_bytes(), client(), NOW).is_ok());
        let pa = nonces(SecurityFeatures::PASSWORD_ALGORITHMS).issue(client(), NOW);
        assert!(pa.as_str().starts_with("obMatJos2AAAB"), "{pa}");
    }

    #[test]
    fn parses_the_rfc_8489_appendix_b1_nonce() {
        // RFC 8489 Appendix B.1 (a request with USERHASH): "AAAC" is 0x000002, bit 1 under
        // erratum 6268. The same vector is checked byte for byte in floe-stun's tests.
        let f = parse_cookie("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA");

        assert_eq!(f, Some(SecurityFeatures::USERNAME_ANONYMITY));
        assert_eq!(
            parse_cookie("obMatJos2AAAB"),
            Some(SecurityFeatures::PASSWORD_ALGORITHMS)
        );
        assert_eq!(parse_cookie("obMatJos2AA"), None);
        assert_eq!(parse_cookie("obMatJos2!!!!xyz"), None);
        assert_eq!(parse_cookie("obMatJos"), None);
    }

    #[test]
    fn no_cookie_without_features_and_stripping_the_cookie_fails() {
        let plain = nonces(SecurityFeatures::NONE).issue(client(), NOW);
        assert_eq!(parse_cookie(plain.as_str()), None);

        let n = nonces(SecurityFeatures::PASSWORD_ALGORITHMS);
        let with = n.issue(client(), NOW);
        let stripped = &with.as_str()[NONCE_COOKIE.len() + 4..];
        assert_eq!(
            n.verify(stripped.as_bytes(), client(), NOW),
            Err(NonceError::Invalid)
        );
        // A nonce from a server without features does not verify on one with features.
        assert_eq!(
            n.verify(plain.as_str().as_bytes(), client(), NOW),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn nonce_is_short_and_printable() {
        let n =
            nonces(SecurityFeatures::PASSWORD_ALGORITHMS | SecurityFeatures::USERNAME_ANONYMITY);
        let v6: SocketAddr = "[2001:db8::1]:1".parse().expect("addr");

        let nonce = n.issue(v6, u64::MAX - 5);

        assert!(nonce.as_str().len() <= MAX_NONCE_CHARS);
        assert_eq!(nonce.as_str().len(), 45);
        assert!(nonce
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
        // Expiry saturates instead of wrapping, so the nonce is already stale at the end of time.
        assert!(matches!(
            n.verify(nonce.as_str().as_bytes(), v6, u64::MAX),
            Err(NonceError::Stale { .. })
        ));
    }

    #[test]
    fn rotation_keeps_one_previous_secret() {
        let mut n = nonces(SecurityFeatures::NONE);
        let old = n.issue(client(), NOW);

        n.rotate(NonceSecret::from_bytes([8; 32]));
        let new = n.issue(client(), NOW);

        assert_ne!(old, new);
        assert!(n.verify(old.as_str().as_bytes(), client(), NOW).is_ok());
        assert!(n.verify(new.as_str().as_bytes(), client(), NOW).is_ok());
        n.rotate(NonceSecret::from_bytes([9; 32]));
        assert_eq!(
            n.verify(old.as_str().as_bytes(), client(), NOW),
            Err(NonceError::Invalid)
        );
        assert!(n.verify(new.as_str().as_bytes(), client(), NOW).is_ok());
    }

    #[test]
    fn different_secrets_do_not_accept_each_others_nonces() {
        let a = nonces(SecurityFeatures::NONE);
        let b = Nonces::new(NonceSecret::from_bytes([1; 32]), NonceConfig::default());

        let nonce = a.issue(client(), NOW);

        assert_eq!(
            b.verify(nonce.as_str().as_bytes(), client(), NOW),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let n = nonces(SecurityFeatures::NONE);
        let s = format!("{n:?}");
        assert!(s.contains("<redacted>"));
        assert!(!s.contains("7, 7"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn round_trip_and_any_single_byte_change_is_rejected(
                ip in any::<[u8; 16]>(), port in any::<u16>(), now in 0_u64..u64::MAX / 2,
                pos in 0_usize..45, byte in any::<u8>(),
            ) {
                let n = nonces(SecurityFeatures::PASSWORD_ALGORITHMS);
                let client = SocketAddr::new(IpAddr::from(ip), port);
                let nonce = n.issue(client, now);
                prop_assert!(n.verify(nonce.as_str().as_bytes(), client, now).is_ok());

                let mut bytes = nonce.into_string().into_bytes();
                prop_assume!(bytes[pos] != byte);
                bytes[pos] = byte;
                prop_assert!(n.verify(&bytes, client, now).is_err());
            }
        }
    }
}
