//! The credential store for the long-term credential mechanism (RFC 8489 §9.2).
//!
//! Two sources of users:
//!
//! * static users from the configuration (`--user NAME:PASSWORD`). Their long-term keys are
//!   computed once when they are added, for both password algorithms (RFC 8489 §9.2.2: MD5 and
//!   SHA-256), and the password itself is not kept;
//! * TURN REST API secrets (`--auth-secret`, see [`crate::rest`]): the username is `EXPIRY:USER`
//!   and the password is derived from the secret, so any number of users work without
//!   configuration. Several secrets may be configured for rotation; a lookup returns one key per
//!   secret and the caller accepts the message if MESSAGE-INTEGRITY verifies under any of them.
//!
//! USERHASH (RFC 8489 §14.4) is resolved for static users. Nothing here implements `Display` for a
//! secret, and every `Debug` that could reach one is written by hand to redact it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use floe_stun::integrity;
use subtle::{Choice, ConstantTimeEq};

use crate::rest;

/// The password algorithms of RFC 8489 §18.5 (PASSWORD-ALGORITHM values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PasswordAlgorithm {
    /// 0x0001: MD5 (the RFC 5389 key, the default when the client names no algorithm).
    Md5,
    /// 0x0002: SHA-256.
    Sha256,
}

impl PasswordAlgorithm {
    /// The registered value (RFC 8489 §18.5).
    pub const fn code(self) -> u16 {
        match self {
            Self::Md5 => integrity::ALGORITHM_MD5,
            Self::Sha256 => integrity::ALGORITHM_SHA256,
        }
    }

    /// The algorithm with the registered value `code`, if supported.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            integrity::ALGORITHM_MD5 => Some(Self::Md5),
            integrity::ALGORITHM_SHA256 => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// A long-term credential key (RFC 8489 §9.2.2): 16 bytes for MD5, 32 for SHA-256. Compared in
/// constant time; `Debug` redacts it.
#[derive(Clone)]
pub struct LongTermKey {
    algorithm: PasswordAlgorithm,
    bytes: [u8; 32],
}

impl LongTermKey {
    /// The algorithm the key was derived with.
    pub fn algorithm(&self) -> PasswordAlgorithm {
        self.algorithm
    }

    /// The key bytes, to key the MESSAGE-INTEGRITY(-SHA256) HMAC (RFC 8489 §14.5, §14.6).
    pub fn as_bytes(&self) -> &[u8] {
        match self.algorithm {
            PasswordAlgorithm::Md5 => &self.bytes[..16],
            PasswordAlgorithm::Sha256 => &self.bytes,
        }
    }
}

impl ConstantTimeEq for LongTermKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        let same_alg = Choice::from(u8::from(self.algorithm == other.algorithm));
        same_alg & self.bytes.ct_eq(&other.bytes)
    }
}

impl PartialEq for LongTermKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for LongTermKey {}

impl fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LongTermKey({:?}, <redacted>)", self.algorithm)
    }
}

/// Derives the long-term key (RFC 8489 §9.2.2):
/// `MD5(username ":" realm ":" password)` or `SHA-256(username ":" realm ":" password)`.
///
/// No PRECIS/OpaqueString processing is applied (RFC 8489 §9.2.2 asks for it on realm and
/// password); for ASCII input it is the identity, and non-ASCII input is used as its UTF-8
/// bytes, as coturn and browsers do. The digests are `floe_stun::integrity`'s.
pub fn long_term_key(
    username: &str,
    realm: &str,
    password: &str,
    algorithm: PasswordAlgorithm,
) -> LongTermKey {
    let mut bytes = [0_u8; 32];
    match algorithm {
        PasswordAlgorithm::Md5 => {
            bytes[..16].copy_from_slice(&integrity::long_term_key_md5(username, realm, password));
        }
        PasswordAlgorithm::Sha256 => {
            bytes = integrity::long_term_key_sha256(username, realm, password);
        }
    }
    LongTermKey { algorithm, bytes }
}

/// The USERHASH of a username (RFC 8489 §14.4): `SHA-256(username ":" realm)`.
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    integrity::userhash(username, realm)
}

/// A static user from the configuration, `NAME:PASSWORD` (RFC 8489 §9.2 long-term credential).
/// The password may contain `:`; the name may not. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticUser {
    name: String,
    password: String,
}

impl StaticUser {
    /// A user with `name` and `password`; both must be non-empty, the name without `:` and
    /// neither longer than the 509-byte USERNAME limit (RFC 8489 §14.3).
    pub fn new(name: &str, password: &str) -> Result<Self, CredentialError> {
        if name.is_empty() || name.contains(':') || name.len() > MAX_USERNAME_BYTES {
            return Err(CredentialError::InvalidUsername);
        }
        if password.is_empty() || password.len() > MAX_USERNAME_BYTES {
            return Err(CredentialError::InvalidPassword);
        }
        Ok(Self {
            name: name.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// RFC 8489 §14.3: USERNAME is less than 509 bytes.
pub const MAX_USERNAME_BYTES: usize = 508;

impl FromStr for StaticUser {
    type Err = CredentialError;

    /// Parses `NAME:PASSWORD`, splitting at the first `:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, password) = s.split_once(':').ok_or(CredentialError::MissingPassword)?;
        Self::new(name, password)
    }
}

impl fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A TURN REST API shared secret (see [`crate::rest`]); `Debug` redacts it.
#[derive(Clone)]
pub struct RestSecret(Vec<u8>);

impl RestSecret {
    /// Wraps a non-empty secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, CredentialError> {
        let s = secret.into();
        if s.is_empty() {
            return Err(CredentialError::EmptySecret);
        }
        Ok(Self(s))
    }
}

impl fmt::Debug for RestSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestSecret(<redacted>)")
    }
}

/// What happens to a live allocation when its REST credential expires (issue §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpiryPolicy {
    /// The next Refresh fails authentication (401) and the allocation ends then (default).
    #[default]
    AtNextRefresh,
    /// Strict mode: the allocation ends as soon as the credential expires.
    Immediately,
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialKind {
    /// A configured static user.
    Static,
    /// A TURN REST API ephemeral credential valid until `expires_at` (unix seconds).
    Rest {
        /// Unix time (seconds) at which it stops being accepted.
        expires_at: u64,
    },
}

/// The result of a lookup: the candidate keys for MESSAGE-INTEGRITY and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    kind: CredentialKind,
    keys: Vec<LongTermKey>,
}

impl Credential {
    /// Static or REST, with the expiry.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// One key for a static user, one per configured secret for a REST username (RFC 8489 §9.2.4:
    /// the message is accepted if its integrity verifies under any of them).
    pub fn keys(&self) -> &[LongTermKey] {
        &self.keys
    }

    /// Unix time (seconds) at which the credential expires; `None` for static users.
    pub fn expires_at(&self) -> Option<u64> {
        match self.kind {
            CredentialKind::Rest { expires_at } => Some(expires_at),
            CredentialKind::Static => None,
        }
    }
}

/// Why a credential could not be used or configured (RFC 8489 §9.2.4: answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// No static user by that name and not a REST username (or no REST secret configured).
    #[error("unknown user")]
    UnknownUser,
    /// A REST credential past its expiry.
    #[error("credential expired at {expired_at}")]
    Expired {
        /// Unix time (seconds) of expiry.
        expired_at: u64,
    },
    /// A USERHASH that matches no static user.
    #[error("unknown USERHASH")]
    UnknownUserhash,
    /// A configured user name is empty, contains `:` or is too long.
    #[error("user name must be 1..=508 bytes without ':'")]
    InvalidUsername,
    /// A configured password is empty or too long.
    #[error("password must be 1..=508 bytes")]
    InvalidPassword,
    /// `--user` without `:PASSWORD`.
    #[error("expected NAME:PASSWORD")]
    MissingPassword,
    /// The same static user configured twice.
    #[error("user {name:?} is configured twice")]
    DuplicateUser {
        /// The user name.
        name: String,
    },
    /// An empty REST secret.
    #[error("REST secret is empty")]
    EmptySecret,
}

impl CredentialError {
    /// The STUN error code for lookup failures: 401 (Unauthenticated, RFC 8489 §9.2.4).
    pub const fn error_code(&self) -> u16 {
        401
    }
}

struct UserKeys {
    md5: LongTermKey,
    sha256: LongTermKey,
}

/// The credential store (RFC 8489 §9.2): static users with cached keys, REST secrets, USERHASH
/// index. Build it once at start-up; lookups take `&self`.
pub struct CredentialStore {
    realm: String,
    users: BTreeMap<String, UserKeys>,
    userhashes: BTreeMap<[u8; 32], String>,
    rest: Vec<RestSecret>,
    expiry: ExpiryPolicy,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("realm", &self.realm)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("rest_secrets", &self.rest.len())
            .field("expiry", &self.expiry)
            .finish()
    }
}

impl CredentialStore {
    /// An empty store for `realm` (RFC 8489 §14.9 REALM).
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            users: BTreeMap::new(),
            userhashes: BTreeMap::new(),
            rest: Vec::new(),
            expiry: ExpiryPolicy::default(),
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Adds a static user, computing both long-term keys now (RFC 8489 §9.2.2) and its USERHASH
    /// (§14.4). The password is dropped afterwards.
    pub fn add_user(&mut self, user: StaticUser) -> Result<(), CredentialError> {
        if self.users.contains_key(&user.name) {
            return Err(CredentialError::DuplicateUser { name: user.name });
        }
        let keys = UserKeys {
            md5: long_term_key(
                &user.name,
                &self.realm,
                &user.password,
                PasswordAlgorithm::Md5,
            ),
            sha256: long_term_key(
                &user.name,
                &self.realm,
                &user.password,
                PasswordAlgorithm::Sha256,
            ),
        };
        self.userhashes
            .insert(userhash(&user.name, &self.realm), user.name.clone());
        self.users.insert(user.name, keys);
        Ok(())
    }

    /// Adds a REST secret; with several, credentials minted with any of them are accepted.
    pub fn add_rest_secret(&mut self, secret: RestSecret) {
        self.rest.push(secret);
    }

    /// Sets what happens when a REST credential expires during an allocation.
    pub fn set_expiry_policy(&mut self, policy: ExpiryPolicy) {
        self.expiry = policy;
    }

    /// The expiry policy.
    pub fn expiry_policy(&self) -> ExpiryPolicy {
        self.expiry
    }

    /// When an allocation authenticated with `credential` must end regardless of refreshes:
    /// the credential's expiry in strict mode, otherwise `None` (RFC 8656 §7 lifetimes apply and
    /// the next Refresh fails with 401 once the credential has expired).
    pub fn allocation_deadline(&self, credential: &Credential) -> Option<u64> {
        match self.expiry {
            ExpiryPolicy::Immediately => credential.expires_at(),
            ExpiryPolicy::AtNextRefresh => None,
        }
    }

    /// Looks up the keys for `username` (RFC 8489 §9.2.4). Static users win over REST usernames;
    /// a REST credential whose expiry is not after `now_unix` is refused.
    pub fn lookup(
        &self,
        username: &str,
        algorithm: PasswordAlgorithm,
        now_unix: u64,
    ) -> Result<Credential, CredentialError> {
        if let Some(keys) = self.users.get(username) {
            let key = match algorithm {
                PasswordAlgorithm::Md5 => keys.md5.clone(),
                PasswordAlgorithm::Sha256 => keys.sha256.clone(),
            };
            return Ok(Credential {
                kind: CredentialKind::Static,
                keys: vec![key],
            });
        }
        let expires_at = self.rest_expiry(username, now_unix)?;
        let keys = self
            .rest
            .iter()
            .map(|s| {
                let password = rest::password_for(&s.0, username);
                long_term_key(username, &self.realm, &password, algorithm)
            })
            .collect();
        Ok(Credential {
            kind: CredentialKind::Rest { expires_at },
            keys,
        })
    }

    /// Resolves a USERHASH attribute value to the static user name (RFC 8489 §14.4). REST
    /// usernames cannot be resolved (they are not known in advance).
    pub fn resolve_userhash(&self, hash: &[u8]) -> Result<&str, CredentialError> {
        let hash: &[u8; 32] = hash
            .try_into()
            .map_err(|_| CredentialError::UnknownUserhash)?;
        self.userhashes
            .get(hash)
            .map(String::as_str)
            .ok_or(CredentialError::UnknownUserhash)
    }

    /// Checks a plain password (for interfaces other than STUN, and tests), in constant time with
    /// respect to the password: `Ok` with the credential when it matches.
    pub fn verify_password(
        &self,
        username: &str,
        password: &str,
        now_unix: u64,
    ) -> Result<Credential, CredentialError> {
        let candidate = long_term_key(username, &self.realm, password, PasswordAlgorithm::Md5);
        let credential = self.lookup(username, PasswordAlgorithm::Md5, now_unix)?;
        let mut ok = Choice::from(0);
        for key in credential.keys() {
            ok |= key.ct_eq(&candidate);
        }
        if bool::from(ok) {
            Ok(credential)
        } else {
            Err(CredentialError::UnknownUser)
        }
    }

    fn rest_expiry(&self, username: &str, now_unix: u64) -> Result<u64, CredentialError> {
        if self.rest.is_empty() || username.len() > MAX_USERNAME_BYTES {
            return Err(CredentialError::UnknownUser);
        }
        let expires_at = rest::expiry_of(username).ok_or(CredentialError::UnknownUser)?;
        if expires_at <= now_unix {
            return Err(CredentialError::Expired {
                expired_at: expires_at,
            });
        }
        Ok(expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "example.org";
    const NOW: u64 = 1_700_000_000;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn store() -> CredentialStore {
        let mut s = CredentialStore::new(REALM);
        s.add_user("alice:s3cret:x".parse().expect("user"))
            .expect("add alice");
        s.add_rest_secret(RestSecret::new("old").expect("secret"));
        s.add_rest_secret(RestSecret::new("rotated").expect("secret"));
        s
    }

    #[test]
    fn long_term_keys_match_independent_digests() {
        // printf 'alice:example.org:s3cret:x' | md5sum / sha256sum
        let md5 = long_term_key("alice", REALM, "s3cret:x", PasswordAlgorithm::Md5);
        let sha = long_term_key("alice", REALM, "s3cret:x", PasswordAlgorithm::Sha256);

        assert_eq!(hex(md5.as_bytes()), "89e91c072fac17a0bdcf5f4c7a61edd2");
        assert_eq!(
            hex(sha.as_bytes()),
            "6e192e1c773f2e107e475feb8e55dcb2e1f987ebb89c275c8f5f1a40f34b56f1"
        );
        assert_ne!(md5, sha);
    }

    #[test]
    fn userhash_matches_independent_digest() {
        // printf 'alice:example.org' | sha256sum
        assert_eq!(
            hex(&userhash("alice", REALM)),
            "435b7933096a304d3c734cfb833ec9075bd47ab1c0160321aed31c06a8c7009e"
        );
    }

    #[test]
    fn static_user_lookup_returns_the_cached_key_for_each_algorithm() {
        let s = store();

        let md5 = s.lookup("alice", PasswordAlgorithm::Md5, NOW).expect("md5");
        let sha = s
            .lookup("alice", PasswordAlgorithm::Sha256, NOW)
            .expect("sha");

        assert_eq!(md5.kind(), CredentialKind::Static);
        assert_eq!(md5.expires_at(), None);
        assert_eq!(
            md5.keys(),
            &[long_term_key(
                "alice",
                REALM,
                "s3cret:x",
                PasswordAlgorithm::Md5
            )]
        );
        assert_eq!(sha.keys()[0].algorithm(), PasswordAlgorithm::Sha256);
        assert_eq!(sha.keys()[0].as_bytes().len(), 32);
    }

    #[test]
    fn rest_lookup_returns_one_key_per_secret_and_the_expiry() {
        let s = store();
        let username = "1700000600:bob";

        let c = s
            .lookup(username, PasswordAlgorithm::Md5, NOW)
            .expect("rest");

        assert_eq!(
            c.kind(),
            CredentialKind::Rest {
                expires_at: 1_700_000_600
            }
        );
        assert_eq!(c.keys().len(), 2);
        // printf '1700000600:bob' | openssl dgst -sha1 -hmac rotated -binary | base64
        //   -> oysSFpqmUNMa5T6Vga0ooZLvrds=
        // printf '1700000600:bob:example.org:oysSFpqmUNMa5T6Vga0ooZLvrds=' | md5sum
        assert_eq!(
            hex(c.keys()[1].as_bytes()),
            "6e093ce248b478a9e12b009f343ba27e"
        );
        assert!(s
            .verify_password(username, "oysSFpqmUNMa5T6Vga0ooZLvrds=", NOW)
            .is_ok());
        let minted = rest::mint(b"old", "bob", 600, NOW);
        assert!(s
            .verify_password(&minted.username, &minted.password, NOW)
            .is_ok());
    }

    #[test]
    fn expired_rest_credentials_are_refused() {
        let s = store();
        let minted = rest::mint(b"rotated", "bob", 600, NOW);

        let at_expiry = s.lookup(&minted.username, PasswordAlgorithm::Md5, NOW + 600);
        let before = s.lookup(&minted.username, PasswordAlgorithm::Md5, NOW + 599);

        assert_eq!(
            at_expiry,
            Err(CredentialError::Expired {
                expired_at: NOW + 600
            })
        );
        assert!(before.is_ok());
        assert_eq!(CredentialError::Expired { expired_at: 0 }.error_code(), 401);
    }

    #[test]
    fn wrong_password_unknown_user_and_no_rest_secrets() {
        let s = store();
        assert_eq!(
            s.verify_password("alice", "s3cret", NOW),
            Err(CredentialError::UnknownUser)
        );
        assert!(s.verify_password("alice", "s3cret:x", NOW).is_ok());
        assert_eq!(
            s.lookup("mallory", PasswordAlgorithm::Md5, NOW),
            Err(CredentialError::UnknownUser)
        );
        let minted = rest::mint(b"unknown-secret", "bob", 600, NOW);
        assert_eq!(
            s.verify_password(&minted.username, &minted.password, NOW),
            Err(CredentialError::UnknownUser)
        );

        let static_only = {
            let mut s = CredentialStore::new(REALM);
            s.add_user(StaticUser::new("alice", "pw").expect("u"))
                .expect("add");
            s
        };
        assert_eq!(
            static_only.lookup("1700000600:bob", PasswordAlgorithm::Md5, NOW),
            Err(CredentialError::UnknownUser)
        );
    }

    #[test]
    fn userhash_resolves_static_users_only() {
        let s = store();

        assert_eq!(s.resolve_userhash(&userhash("alice", REALM)), Ok("alice"));
        assert_eq!(
            s.resolve_userhash(&userhash("alice", "other.realm")),
            Err(CredentialError::UnknownUserhash)
        );
        assert_eq!(
            s.resolve_userhash(&[0; 31]),
            Err(CredentialError::UnknownUserhash)
        );
    }

    #[test]
    fn expiry_policy_sets_the_allocation_deadline() {
        let mut s = store();
        let rest_cred = s
            .lookup("1700000600:bob", PasswordAlgorithm::Md5, NOW)
            .expect("r");
        let static_cred = s.lookup("alice", PasswordAlgorithm::Md5, NOW).expect("s");

        assert_eq!(s.allocation_deadline(&rest_cred), None);
        s.set_expiry_policy(ExpiryPolicy::Immediately);
        assert_eq!(s.allocation_deadline(&rest_cred), Some(1_700_000_600));
        assert_eq!(s.allocation_deadline(&static_cred), None);
    }

    #[test]
    fn config_parsing_and_validation() {
        assert_eq!(
            "alice".parse::<StaticUser>(),
            Err(CredentialError::MissingPassword)
        );
        assert_eq!(
            ":pw".parse::<StaticUser>(),
            Err(CredentialError::InvalidUsername)
        );
        assert_eq!(
            "alice:".parse::<StaticUser>(),
            Err(CredentialError::InvalidPassword)
        );
        let u: StaticUser = "alice:a:b:c".parse().expect("colons in password");
        assert_eq!(u.name(), "alice");
        assert!(StaticUser::new(&"a".repeat(509), "pw").is_err());
        assert!(matches!(
            RestSecret::new(""),
            Err(CredentialError::EmptySecret)
        ));

        let mut s = store();
        assert_eq!(
            s.add_user(StaticUser::new("alice", "other").expect("u")),
            Err(CredentialError::DuplicateUser {
                name: "alice".into()
            })
        );
    }

    #[test]
    fn static_user_wins_over_rest_format_name() {
        let mut s = store();
        s.add_user(StaticUser::new("1700000600", "pw").expect("u"))
            .expect("add");

        let c = s
            .lookup("1700000600", PasswordAlgorithm::Md5, NOW + 10_000)
            .expect("static");

        assert_eq!(c.kind(), CredentialKind::Static);
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let s = store();
        let cred = s.lookup("alice", PasswordAlgorithm::Md5, NOW).expect("c");
        let user: StaticUser = "alice:hunter2".parse().expect("u");
        let secret = RestSecret::new("topsecret").expect("s");

        let all = format!("{s:?} {cred:?} {user:?} {secret:?}");

        for needle in [
            "hunter2",
            "topsecret",
            "rotated",
            "s3cret",
            "89e91c",
            "137, 233",
        ] {
            assert!(!all.contains(needle), "{needle} leaked in {all}");
        }
        assert!(all.contains("<redacted>"));
    }

    #[test]
    fn algorithm_codes_round_trip() {
        for a in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            assert_eq!(PasswordAlgorithm::from_code(a.code()), Some(a));
        }
        assert_eq!(PasswordAlgorithm::from_code(0), None);
        assert_eq!(PasswordAlgorithm::from_code(3), None);
    }
}
