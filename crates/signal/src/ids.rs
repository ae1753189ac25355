//! Newtypes for the identifiers that travel on the wire.
//!
//! Room and peer ids are chosen by applications (or assigned by the server), so they are
//! validated once at the edge: 1 to 64 characters from `[A-Za-z0-9_.~-]`. That keeps them safe in
//! URLs, log lines, metric-free contexts and TURN usernames (no `:`), and bounds memory.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted room or peer id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// The id contains a character outside `[A-Za-z0-9_.~-]`.
    #[error("may only contain A-Z a-z 0-9 _ . ~ -")]
    BadChar,
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-'))
    {
        return Err(IdError::BadChar);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A room: the set of peers that can see and message each other.
    RoomId
);
id_type!(
    /// A peer's id, unique within its room.
    PeerId
);
id_type!(
    /// A tenant: the JWT's `tenant` claim, carried into the TURN credentials minted for the
    /// holder so that relay usage can be summed per tenant (docs/operations.md §7).
    TenantId
);
id_type!(
    /// A session: one peer's membership of one room, surviving reconnects within the resume TTL.
    /// Server-generated (64 random bits, hex).
    SessionId
);

/// The secret that lets a reconnecting client take its session back (128 random bits, hex).
///
/// Its `Debug` output is redacted so it never reaches a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResumeToken(String);

impl ResumeToken {
    /// Wraps a token received from a client.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Constant-time comparison, so a guesser learns nothing from timing.
    pub fn matches(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.len() && bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(..)")
    }
}

/// A connection handle assigned by the hub: one WebSocket, or one post-box join's virtual
/// connection. Never reused within a hub's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate_charset_and_length() {
        assert!(RoomId::new("demo-room_1.x~y").is_ok());
        assert_eq!(RoomId::new(""), Err(IdError::Empty));
        assert_eq!(PeerId::new("a".repeat(65)), Err(IdError::TooLong));
        assert!(PeerId::new("a".repeat(64)).is_ok());
        assert_eq!(PeerId::new("a:b"), Err(IdError::BadChar));
        assert_eq!(PeerId::new("a b"), Err(IdError::BadChar));
        assert_eq!(PeerId::new("é"), Err(IdError::BadChar));
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: PeerId = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(ok.as_str(), "bob");
        assert!(serde_json::from_str::<PeerId>("\"b/ob\"").is_err());
    }

    #[test]
    fn resume_token_compares_and_redacts() {
        let t = ResumeToken::new("abc123");
        assert!(t.matches("abc123"));
        assert!(!t.matches("abc124"));
        assert!(!t.matches("abc12"));
        assert_eq!(format!("{t:?}"), "ResumeToken(..)");
    }
}
