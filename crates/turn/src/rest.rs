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
/// (coturn's convention), without the identity fields floe's signalling server appends
/// ([`Identity`]: `EXPIRY:PEER;room=ROOM;tenant=TENANT` stands for `PEER`). Quotas count this
/// user, not the credential, so that minting many credentials for one user does not multiply
/// its quotas. A username with no user part (`EXPIRY` or `EXPIRY:`) names no user: it is its own
/// user, the whole username.
pub fn user_of(username: &str) -> &str {
    if let Some(id) = Identity::parse(username) {
        return id.user;
    }
    match username.split_once(':') {
        Some((_, user)) if !user.is_empty() => user,
        _ => username,
    }
}

/// Longest room, peer or tenant id in an [`Identity`] (floe's signalling ids are at most 64).
pub const MAX_IDENTITY_FIELD: usize = 64;

/// The signalling identity a TURN REST username minted by floe carries:
/// `EXPIRY:PEER[;room=ROOM][;tenant=TENANT]`, each id 1 to 64 characters from
/// `[A-Za-z0-9_.~-]` (floe's room and peer id alphabet, which has no `:`, `;` or `=`).
///
/// The whole username is the HMAC's input (its password is `HMAC(secret, username)`), so a
/// username that authenticated carries the room and tenant the signalling server put in it:
/// a client cannot change them without the secret. Parsing is strict: anything else (another
/// system's `EXPIRY:USER`, a static username, a field out of order or repeated) is not an
/// identity, and [`user_of`] falls back to coturn's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The credential's expiry, unix seconds.
    pub expiry: u64,
    /// The user: for floe-minted credentials, the signalling peer id.
    pub user: &'a str,
    /// The signalling room, when the credential was minted for one.
    pub room: Option<&'a str>,
    /// The JWT's `tenant` claim, when the token had one.
    pub tenant: Option<&'a str>,
}

/// Whether `s` is a valid identity field: 1 to [`MAX_IDENTITY_FIELD`] characters from
/// `[A-Za-z0-9_.~-]`.
pub fn is_identity_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENTITY_FIELD
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-'))
}

impl<'a> Identity<'a> {
    /// Parses a username of the form `EXPIRY:USER[;room=ROOM][;tenant=TENANT]`; `None` for
    /// anything else (never panics, whatever the input).
    pub fn parse(username: &'a str) -> Option<Identity<'a>> {
        let (expiry, rest) = username.split_once(':')?;
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let expiry = expiry.parse().ok()?;
        let mut fields = rest.split(';');
        let user = fields.next().filter(|u| is_identity_field(u))?;
        let mut room = None;
        let mut tenant = None;
        for field in fields {
            let (key, value) = field.split_once('=')?;
            if !is_identity_field(value) {
                return None;
            }
            // Fixed order, each at most once: one username has one spelling.
            match key {
                "room" if room.is_none() && tenant.is_none() => room = Some(value),
                "tenant" if tenant.is_none() => tenant = Some(value),
                _ => return None,
            }
        }
        Some(Identity {
            expiry,
            user,
            room,
            tenant,
        })
    }

    /// The username: `EXPIRY:USER[;room=ROOM][;tenant=TENANT]`.
    pub fn username(&self) -> String {
        let mut s = format!("{}:{}", self.expiry, self.user);
        if let Some(room) = self.room {
            s.push_str(";room=");
            s.push_str(room);
        }
        if let Some(tenant) = self.tenant {
            s.push_str(";tenant=");
            s.push_str(tenant);
        }
        s
    }
}

/// Mints a credential whose username carries a signalling identity ([`Identity`]): `user`
/// (the peer id), and the room and tenant when given, valid for `ttl_secs` from `now_unix`.
/// Each field must pass [`is_identity_field`] (the caller validated them as signalling ids);
/// one that does not is left out rather than producing a username that does not parse back.
pub fn mint_identity(
    secret: &[u8],
    user: &str,
    room: Option<&str>,
    tenant: Option<&str>,
    ttl_secs: u64,
    now_unix: u64,
) -> RestCredential {
    if !is_identity_field(user) {
        return mint(secret, user, ttl_secs, now_unix);
    }
    let expires_at = now_unix.saturating_add(ttl_secs);
    let username = Identity {
        expiry: expires_at,
        user,
        room: room.filter(|r| is_identity_field(r)),
        tenant: tenant.filter(|t| is_identity_field(t)),
    }
    .username();
    let password = password_for(secret, &username);
    RestCredential {
        username,
        password,
        expires_at,
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
        assert_eq!(user_of("1700000600:alice;room=standup"), "alice");
        assert_eq!(user_of("1700000600:alice;room=a b"), "alice;room=a b");
    }

    #[test]
    fn identity_usernames_parse_back() {
        let c = mint_identity(
            b"secret",
            "alice",
            Some("standup"),
            Some("acme"),
            600,
            1_700_000_000,
        );
        assert_eq!(c.username, "1700000600:alice;room=standup;tenant=acme");
        assert_eq!(c.password, password_for(b"secret", &c.username));
        assert_eq!(expiry_of(&c.username), Some(1_700_000_600));
        assert_eq!(
            Identity::parse(&c.username),
            Some(Identity {
                expiry: 1_700_000_600,
                user: "alice",
                room: Some("standup"),
                tenant: Some("acme"),
            })
        );
        let plain = mint_identity(b"secret", "bob", None, None, 600, 1_700_000_000);
        assert_eq!(
            plain,
            mint(b"secret", "bob", 600, 1_700_000_000),
            "no fields: as before"
        );
        // A tenant without a room, and what is not an identity.
        assert_eq!(
            Identity::parse("5:bob;tenant=t").map(|i| (i.room, i.tenant)),
            Some((None, Some("t")))
        );
        for not in [
            "alice",
            "5",
            "5:",
            ":alice",
            "5:alice;",
            "5:alice;room=",
            "5:alice;tenant=t;room=r",
            "5:alice;room=r;room=s",
            "5:alice;color=red",
            "5:al:ice",
            "5:bob@example.com",
        ] {
            assert_eq!(Identity::parse(not), None, "{not}");
        }
    }

    proptest::proptest! {
        #[test]
        fn identity_parsing_never_panics(s in "\\PC*") {
            let _ = Identity::parse(&s);
            let _ = user_of(&s);
            let _ = expiry_of(&s);
        }

        #[test]
        fn identities_round_trip(
            expiry in 0u64..=u64::MAX,
            user in "[A-Za-z0-9_.~-]{1,64}",
            room in proptest::option::of("[A-Za-z0-9_.~-]{1,64}"),
            tenant in proptest::option::of("[A-Za-z0-9_.~-]{1,64}"),
        ) {
            let id = Identity { expiry, user: &user, room: room.as_deref(), tenant: tenant.as_deref() };
            let name = id.username();
            proptest::prop_assert_eq!(Identity::parse(&name), Some(id));
            proptest::prop_assert_eq!(user_of(&name), user.as_str());
            proptest::prop_assert_eq!(expiry_of(&name), Some(expiry));
        }

        #[test]
        fn arbitrary_fields_parse_back_or_not_at_all(
            user in ".{0,70}",
            room in proptest::option::of(".{0,70}"),
        ) {
            let name = match &room {
                Some(r) => format!("7:{user};room={r}"),
                None => format!("7:{user}"),
            };
            if let Some(id) = Identity::parse(&name) {
                proptest::prop_assert_eq!(id.username(), name);
            }
        }
    }
}
