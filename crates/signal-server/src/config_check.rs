//! Support for `floe config check`: which `[signal]` key an error is about, and the section with
//! its secrets redacted.

use crate::config::{ConfigError, SignalConfig};

/// What `floe config check` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl ConfigError {
    /// The `[signal]` config-file key this error is about, if it is about one.
    pub fn key(&self) -> Option<&'static str> {
        Some(match self {
            Self::TwoJwtKeys => "jwt_public_key",
            Self::PreviousWithoutCurrent => "jwt_previous_secrets",
            Self::ReadKey { .. } => "jwt_public_key",
            // A key error is about whichever of the two is set; `redacted` callers know which.
            Self::Key(_) => return None,
            Self::Zero(key) => key,
            Self::TurnWithoutSecret => "turn_urls",
            Self::RedisUrl(_) => "redis_url",
            Self::Origin(_) => "allow_origins",
            Self::MailboxTooSmall { .. } => "mailbox_max_bytes",
            Self::TooLarge { name, .. } => name,
            Self::OutboundTooSmall { .. } => "ws_outbound_max_bytes",
            Self::OutboundQueueTooShort { .. } => "ws_outbound_queue",
        })
    }
}

impl SignalConfig {
    /// A copy fit to print: the JWT and TURN secrets replaced by [`REDACTED`], and the password
    /// of a `redis://user:password@host` URL too.
    pub fn redacted(&self) -> SignalConfig {
        let mut out = self.clone();
        let hide = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some(REDACTED.to_owned());
            }
        };
        hide(&mut out.jwt_secret);
        for s in &mut out.jwt_previous_secrets {
            *s = REDACTED.to_owned();
        }
        hide(&mut out.turn_secret);
        if let Some(url) = &mut out.redis_url {
            *url = redact_url_password(url);
        }
        out
    }
}

/// `scheme://user:password@host...` with the password replaced; a URL without a password
/// unchanged.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let Some((user, _password)) = rest[..at].split_once(':') else {
        return url.to_owned();
    };
    format!("{scheme}://{user}:{REDACTED}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let config: SignalConfig = toml::from_str(
            "jwt_secret = \"jwt-s3cret\"\nturn_secret = \"turn-s3cret\"\n\
             redis_url = \"redis://app:redis-s3cret@10.0.0.5:6379/1\"\n\
             trusted_proxies = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let text = toml::to_string(&config.redacted()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("redis_url = \"redis://app:<redacted>@10.0.0.5:6379/1\""),
            "{text}"
        );
        assert!(
            text.contains("trusted_proxies = [\"10.0.0.0/8\"]"),
            "{text}"
        );
        // What is printed reads back (the check's output is a valid config file).
        let back: SignalConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.http, config.http);
    }

    #[test]
    fn url_password_forms() {
        assert_eq!(redact_url_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url_password("redis://:pw@h:6379/0"),
            "redis://:<redacted>@h:6379/0"
        );
        assert_eq!(redact_url_password("rediss://u@h"), "rediss://u@h");
    }
}
