//! The TURN REST API ephemeral credential scheme
//! (draft-uberti-behave-turn-rest-00, as implemented by coturn's `use-auth-secret`).
//!
//! The username is `EXPIRY:USER` where `EXPIRY` is a unix timestamp in seconds; the password is
//! `base64(HMAC-SHA1(secret, username))`. The TURN server recomputes the password from any of its
//! configured secrets, so secrets can be rotated by configuring the new one beside the old one.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A minted ephemeral credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredential {
    /// `EXPIRY:USER`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Unix time (seconds) after which the credential is no longer accepted.
    pub expires_at: u64,
}

/// Mints a credential for `user`, valid for `ttl_secs` from `now_unix` (seconds).
pub fn mint(secret: &[u8], user: &str, ttl_secs: u64, now_unix: u64) -> RestCredential {
    let expires_at = now_unix.saturating_add(ttl_secs);
    let username = if user.is_empty() {
        expires_at.to_string()
    } else {
        format!("{expires_at}:{user}")
    };
    let password = password_for(secret, &username);
    RestCredential {
        username,
        password,
        expires_at,
    }
}

/// Computes the REST password for `username` under `secret`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail for HMAC-SHA1.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Reads the expiry (unix seconds) from a REST username `EXPIRY[:USER]`.
///
/// Returns `None` when the username does not start with a decimal timestamp.
pub fn expiry_of(username: &str) -> Option<u64> {
    let ts = username.split(':').next()?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

/// The user a REST username `EXPIRY:USER` stands for: `USER`, the part after the first `:`
/// (coturn's convention). Quotas count this user, not the credential, so that minting many
/// credentials for one user does not multiply its quotas. A username with no user part
/// (`EXPIRY` or `EXPIRY:`) names no user: it is its own user, the whole username.
pub fn user_of(username: &str) -> &str {
    match username.split_once(':') {
        Some((_, user)) if !user.is_empty() => user,
        _ => username,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_matches_coturn_scheme() {
        // Reference value computed with:
        // printf '%s' '1700000600:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = mint(b"secret", "alice", 600, 1_700_000_000);
        assert_eq!(c.username, "1700000600:alice");
        assert_eq!(c.expires_at, 1_700_000_600);
        assert_eq!(c.password, "5PrY1fcLQr5jls8N4ZU7fEnmVNE=");
        assert_eq!(expiry_of(&c.username), Some(1_700_000_600));
    }

    #[test]
    fn expiry_rejects_non_numeric() {
        assert_eq!(expiry_of("alice"), None);
        assert_eq!(expiry_of(":alice"), None);
        assert_eq!(expiry_of("12a:alice"), None);
        assert_eq!(expiry_of("42"), Some(42));
    }

    #[test]
    fn user_is_the_part_after_the_expiry() {
        assert_eq!(user_of("1700000600:alice"), "alice");
        assert_eq!(user_of("1700000601:alice"), "alice");
        assert_eq!(user_of("1700000600:a:b"), "a:b");
        assert_eq!(user_of("1700000600"), "1700000600");
        assert_eq!(user_of("1700000600:"), "1700000600:");
    }
}
