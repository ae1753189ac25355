//! The `iceServers` list handed to peers: this deployment's STUN and TURN URLs, with TURN REST
//! credentials minted per peer by [`floe_turn::rest::mint`] (the same scheme the TURN server
//! verifies, so the signalling identity and the relay identity are one).

use crate::auth::TurnIdentity;
use crate::ids::{PeerId, RoomId, TenantId};
use crate::proto::IceServer;

/// Where peers find STUN and TURN, and how their TURN credentials are minted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// `stun:` URLs, handed out without credentials.
    pub stun_urls: Vec<String>,
    /// `turn:` / `turns:` URLs, handed out with minted credentials.
    pub turn_urls: Vec<String>,
    /// The TURN server's REST shared secret (its `--auth-secret`); without it, TURN URLs are
    /// not handed out (they would be useless).
    pub turn_secret: Option<Vec<u8>>,
    /// Lifetime of minted TURN credentials, in seconds.
    pub turn_ttl_secs: u64,
}

impl std::fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| ".."))
            .field("turn_ttl_secs", &self.turn_ttl_secs)
            .finish()
    }
}

/// Default lifetime of minted TURN credentials: 1 hour (renewed on every resume).
pub const DEFAULT_TURN_TTL_SECS: u64 = 3600;

impl IceConfig {
    /// The list for `peer` in `room` (of `tenant`) at `now_unix`. The TURN username carries
    /// them (`EXPIRY:PEER;room=ROOM;tenant=TENANT`, [`floe_turn::rest::Identity`]), inside the
    /// HMAC, so the TURN server can tell whose relay usage it is.
    pub fn servers_for(
        &self,
        peer: &PeerId,
        room: Option<&RoomId>,
        tenant: Option<&TenantId>,
        now_unix: u64,
    ) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.turn_secret) {
            let cred = floe_turn::rest::mint_identity(
                secret,
                peer.as_str(),
                room.map(RoomId::as_str),
                tenant.map(TenantId::as_str),
                self.turn_ttl_secs,
                now_unix,
            );
            out.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(cred.username),
                credential: Some(cred.password),
            });
        }
        out
    }

    /// The list for `id` at `now_unix` ([`IceConfig::servers_for`]).
    pub fn servers_for_identity(&self, id: &TurnIdentity, now_unix: u64) -> Vec<IceServer> {
        self.servers_for(&id.peer, id.room.as_ref(), id.tenant.as_ref(), now_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_use_the_turn_rest_scheme() {
        let cfg = IceConfig {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some(b"secret".to_vec()),
            turn_ttl_secs: 600,
        };
        let s = cfg.servers_for(&PeerId::new("alice").unwrap(), None, None, 1_700_000_000);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].username, None);
        assert_eq!(s[1].username.as_deref(), Some("1700000600:alice"));
        // Same reference value as floe_turn::rest's own test.
        assert_eq!(
            s[1].credential.as_deref(),
            Some("5PrY1fcLQr5jls8N4ZU7fEnmVNE=")
        );
        assert_eq!(
            floe_turn::rest::password_for(b"secret", "1700000600:alice"),
            "5PrY1fcLQr5jls8N4ZU7fEnmVNE="
        );
    }

    #[test]
    fn turn_usernames_carry_room_and_tenant() {
        let cfg = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret: Some(b"secret".to_vec()),
            turn_ttl_secs: 600,
            ..IceConfig::default()
        };
        let room = RoomId::new("standup").unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let s = cfg.servers_for(
            &PeerId::new("alice").unwrap(),
            Some(&room),
            Some(&tenant),
            1_700_000_000,
        );
        let username = s[0].username.as_deref().unwrap();
        assert_eq!(username, "1700000600:alice;room=standup;tenant=acme");
        let id = floe_turn::rest::Identity::parse(username).unwrap();
        assert_eq!(
            (id.user, id.room, id.tenant),
            ("alice", Some("standup"), Some("acme"))
        );
        assert_eq!(
            s[0].credential.as_deref(),
            Some(floe_turn::rest::password_for(b"secret", username).as_str())
        );
    }

    #[test]
    fn turn_urls_without_secret_are_not_handed_out() {
        let cfg = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            ..IceConfig::default()
        };
        assert!(cfg
            .servers_for(&PeerId::new("a").unwrap(), None, None, 0)
            .is_empty());
    }
}
