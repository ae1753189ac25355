//! Join authorisation: JWT verification (HS256 with a shared secret, EdDSA or ES256 with a public
//! key) and the development-mode rule (anonymous joins from loopback only).
//!
//! Time stays outside: `jsonwebtoken`'s own expiry check reads the system clock, so it is turned
//! off and `exp`/`nbf` are checked here against the `now_unix` the caller passes in.

use std::net::IpAddr;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{PeerId, RoomId, TenantId};
use crate::proto::{Permission, Permissions};

/// The claims floe reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The room the token admits to, or `"*"` for any room.
    pub room: String,
    /// The peer id the holder must use; when absent the client may choose or get one assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Granted permissions; when absent: publish, subscribe and data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perms: Option<Vec<Permission>>,
    /// Expiry, unix seconds (required).
    pub exp: u64,
    /// Not before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The tenant the holder belongs to (a room/peer-style id): carried into the TURN
    /// credentials minted for it (`EXPIRY:PEER;room=ROOM;tenant=TENANT`), so relay usage can
    /// be summed per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Failure to build a verifier from configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM could not be parsed as a key of the requested kind.
    #[error("cannot read {kind} public key: {source}")]
    BadPublicKey {
        /// "Ed25519" or "P-256".
        kind: &'static str,
        /// The parser's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The HS256 secret is empty.
    #[error("the JWT secret must not be empty")]
    EmptySecret,
}

/// How joins are authorised.
#[derive(Clone)]
pub enum Auth {
    /// Development mode: no tokens needed, but only from loopback addresses. Tokens that are
    /// presented are ignored.
    Development,
    /// Production mode: every join needs a valid token.
    Jwt(JwtVerifier),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Development => f.write_str("Auth::Development"),
            Auth::Jwt(v) => write!(f, "Auth::Jwt({:?})", v.algorithm),
        }
    }
}

/// What a successful authorisation grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The peer id the token pins, if any.
    pub peer: Option<PeerId>,
    /// Granted permissions.
    pub perms: Permissions,
    /// Token expiry (unix seconds); `None` in development mode.
    pub exp: Option<u64>,
    /// The token's `tenant` claim, if any.
    pub tenant: Option<TenantId>,
}

/// Whom TURN credentials are minted for ([`crate::ice::IceConfig::servers_for`]): the peer, and
/// the room and tenant when known; all travel in the TURN username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnIdentity {
    /// The peer id (the TURN user).
    pub peer: PeerId,
    /// The signalling room.
    pub room: Option<RoomId>,
    /// The JWT's `tenant` claim.
    pub tenant: Option<TenantId>,
}

/// What a `GET /v1/ice-servers` request asks for (`?room=R&peer=P`, both optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceRequest {
    /// The room the credentials are for.
    pub room: Option<RoomId>,
    /// The peer id the credentials are for.
    pub peer: Option<PeerId>,
}

/// A refused authorisation: a code for the client and a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// `auth_required`, `invalid_token`, `token_expired` or `forbidden`.
    pub code: ErrorCode,
    /// Human text (never contains the token).
    pub message: String,
}

fn denied(code: ErrorCode, message: impl Into<String>) -> Denied {
    Denied {
        code,
        message: message.into(),
    }
}

impl Auth {
    /// The authentication rule of every signalling entry point (a join over the WebSocket or the
    /// HTTP post box, `GET /v1/ice-servers`): development mode admits loopback addresses only and
    /// ignores tokens; production mode needs a `token` that verifies at `now_unix`. Returns the
    /// verified claims (`None` in development mode).
    pub fn authenticate(
        &self,
        token: Option<&str>,
        ip: IpAddr,
        now_unix: u64,
    ) -> Result<Option<Claims>, Denied> {
        match self {
            Auth::Development if is_loopback(ip) => Ok(None),
            Auth::Development => Err(denied(
                ErrorCode::AuthRequired,
                "development mode accepts anonymous requests from localhost only",
            )),
            Auth::Jwt(v) => {
                let token = token.ok_or_else(|| {
                    denied(ErrorCode::AuthRequired, "this server requires a token")
                })?;
                v.verify(token, now_unix).map(Some)
            }
        }
    }

    /// Authorises a join of `room` by a client at `ip` presenting `token`
    /// ([`Auth::authenticate`], then the token must admit to `room`).
    pub fn authorize_join(
        &self,
        room: &RoomId,
        token: Option<&str>,
        ip: IpAddr,
        now_unix: u64,
    ) -> Result<Grant, Denied> {
        match self.authenticate(token, ip, now_unix)? {
            None => Ok(Grant {
                peer: None,
                perms: Permissions::DEFAULT,
                exp: None,
                tenant: None,
            }),
            Some(claims) => grant_for_room(&claims, room),
        }
    }

    /// Authorises `GET /v1/ice-servers` ([`Auth::authenticate`]; a token for any room will do)
    /// and names whom to mint TURN credentials for:
    /// * the peer: the token's `peer` claim, else the requested peer, else `anonymous`;
    /// * the room: the token's `room` claim unless it is `*`, else the requested room, else
    ///   none;
    /// * the tenant: the token's `tenant` claim (none in development mode).
    ///
    /// A request for another peer or room than the token pins is `forbidden`, as a join would
    /// be: the identity in the credentials is never wider than what the token grants.
    pub fn authorize_ice_servers(
        &self,
        token: Option<&str>,
        ip: IpAddr,
        now_unix: u64,
        asked: &IceRequest,
    ) -> Result<TurnIdentity, Denied> {
        let Some(claims) = self.authenticate(token, ip, now_unix)? else {
            return Ok(TurnIdentity {
                peer: asked.peer.clone().unwrap_or_else(anonymous),
                room: asked.room.clone(),
                tenant: None,
            });
        };
        let room = match (claims.room.as_str(), &asked.room) {
            ("*", asked) => asked.clone(),
            (pinned, Some(r)) if pinned != r.as_str() => {
                return Err(denied(
                    ErrorCode::Forbidden,
                    format!("the token is for another room, not {r}"),
                ))
            }
            (pinned, _) => RoomId::new(pinned).ok(),
        };
        let tenant = tenant_claim(&claims)?;
        let peer = match (claims.peer, &asked.peer) {
            (Some(p), asked) => {
                let p = PeerId::new(p).map_err(|_| {
                    denied(
                        ErrorCode::InvalidToken,
                        "the token's peer claim is not a valid peer id",
                    )
                })?;
                if asked.as_ref().is_some_and(|q| *q != p) {
                    return Err(denied(
                        ErrorCode::Forbidden,
                        format!("the token is for peer {p}"),
                    ));
                }
                p
            }
            (None, asked) => asked.clone().unwrap_or_else(anonymous),
        };
        Ok(TurnIdentity { peer, room, tenant })
    }

    /// Whether tokens are required.
    pub fn is_production(&self) -> bool {
        matches!(self, Auth::Jwt(_))
    }
}

/// The TURN user of credentials asked for without a peer id.
fn anonymous() -> PeerId {
    // Invariant: a valid peer id (letters only).
    PeerId::new("anonymous").unwrap_or_else(|_| unreachable!())
}

/// The token's `tenant` claim, validated like a room or peer id (it travels in TURN usernames
/// and metric labels).
fn tenant_claim(claims: &Claims) -> Result<Option<TenantId>, Denied> {
    claims
        .tenant
        .as_ref()
        .map(|t| {
            TenantId::new(t.clone())
                .map_err(|e| denied(ErrorCode::InvalidToken, format!("tenant claim: {e}")))
        })
        .transpose()
}

/// Whether `ip` is a loopback address (including IPv4-mapped loopback).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Checks that `claims` admit to `room` and turns them into a grant.
pub fn grant_for_room(claims: &Claims, room: &RoomId) -> Result<Grant, Denied> {
    if claims.room != "*" && claims.room != room.as_str() {
        return Err(denied(
            ErrorCode::Forbidden,
            format!("the token is for another room, not {room}"),
        ));
    }
    let peer = match &claims.peer {
        Some(p) => Some(
            PeerId::new(p.clone())
                .map_err(|e| denied(ErrorCode::InvalidToken, format!("peer claim: {e}")))?,
        ),
        None => None,
    };
    let perms = claims
        .perms
        .as_deref()
        .map_or(Permissions::DEFAULT, Permissions::from_list);
    Ok(Grant {
        peer,
        perms,
        exp: Some(claims.exp),
        tenant: tenant_claim(claims)?,
    })
}

/// Verifies tokens with one key and algorithm, and during a key rotation also with the keys
/// that came before it ([`JwtVerifier::also_accept`]).
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    algorithm: Algorithm,
    leeway_secs: u64,
    /// Earlier keys still accepted, tried in order after `key`.
    previous: Vec<(DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("previous_keys", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        install_crypto_provider();
        Ok(Self {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
            leeway_secs: 0,
            previous: Vec::new(),
        })
    }

    /// EdDSA (Ed25519) with a PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn eddsa_pem(pem: &[u8]) -> Result<Self, KeyError> {
        install_crypto_provider();
        let key = DecodingKey::from_ed_pem(pem).map_err(|source| KeyError::BadPublicKey {
            kind: "Ed25519",
            source,
        })?;
        Ok(Self {
            key,
            algorithm: Algorithm::EdDSA,
            leeway_secs: 0,
            previous: Vec::new(),
        })
    }

    /// ES256 (P-256) with a PEM public key.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        install_crypto_provider();
        let key = DecodingKey::from_ec_pem(pem).map_err(|source| KeyError::BadPublicKey {
            kind: "P-256",
            source,
        })?;
        Ok(Self {
            key,
            algorithm: Algorithm::ES256,
            leeway_secs: 0,
            previous: Vec::new(),
        })
    }

    /// Accepts tokens up to `secs` past `exp` (clock skew allowance).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Also accepts tokens signed with `earlier`'s key (and the keys it accepts), for a key
    /// rotation: tokens already handed out keep working, and so do the sessions they admitted,
    /// until the earlier key is removed from the configuration.
    pub fn also_accept(mut self, earlier: JwtVerifier) -> Self {
        self.previous.push((earlier.key, earlier.algorithm));
        self.previous.extend(earlier.previous);
        self
    }

    /// Verifies the signature and the time claims of `token` at `now_unix`.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, Denied> {
        let current = decode(token, &self.key, self.algorithm);
        let claims = match current {
            Ok(claims) => claims,
            // An earlier key of a rotation; the answer is the current key's error otherwise.
            Err(e) => self
                .previous
                .iter()
                .find_map(|(key, alg)| decode(token, key, *alg).ok())
                .ok_or_else(|| {
                    denied(
                        ErrorCode::InvalidToken,
                        format!("token rejected: {}", e.kind_text()),
                    )
                })?,
        };
        if now_unix > claims.exp.saturating_add(self.leeway_secs) {
            return Err(denied(ErrorCode::TokenExpired, "the token has expired"));
        }
        if let Some(nbf) = claims.nbf {
            if now_unix.saturating_add(self.leeway_secs) < nbf {
                return Err(denied(
                    ErrorCode::InvalidToken,
                    "the token is not valid yet",
                ));
            }
        }
        Ok(claims)
    }
}

/// The claims of `token` if its signature verifies with `key` (time claims unchecked: the library
/// reads the system clock, so [`JwtVerifier::verify`] checks them against its `now_unix`).
fn decode(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Claims>(token, key, &validation).map(|data| data.claims)
}

/// A short description of a jsonwebtoken error that never includes token material.
trait KindText {
    fn kind_text(&self) -> &'static str;
}

impl KindText for jsonwebtoken::errors::Error {
    fn kind_text(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::InvalidToken => "malformed",
            K::InvalidSignature => "bad signature",
            K::InvalidAlgorithm | K::InvalidAlgorithmName => "wrong algorithm",
            K::MissingRequiredClaim(_) => "missing required claim",
            K::Base64(_) | K::Json(_) | K::Utf8(_) => "malformed",
            _ => "invalid",
        }
    }
}

/// Mints an HS256 token (for `floe token`, tests and the demo).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, KeyError> {
    if secret.is_empty() {
        return Err(KeyError::EmptySecret);
    }
    install_crypto_provider();
    // Encoding a serde struct with an HMAC key cannot fail except on serialization, which for
    // `Claims` (strings and integers only) does not happen; surface it anyway.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|source| KeyError::BadPublicKey {
        kind: "HMAC",
        source,
    })
}

/// Makes the RustCrypto backend jsonwebtoken's process default (idempotent). Only that backend
/// is compiled in, so this just makes the choice explicit and immune to feature unification.
fn install_crypto_provider() {
    // `Err` means a provider is installed already, which is fine.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims(room: &str, peer: Option<&str>, exp: u64) -> Claims {
        Claims {
            room: room.into(),
            peer: peer.map(Into::into),
            perms: None,
            exp,
            nbf: None,
            iat: Some(NOW),
            tenant: None,
        }
    }

    fn room(s: &str) -> RoomId {
        RoomId::new(s).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn development_mode_admits_loopback_only() {
        let a = Auth::Development;
        assert!(a.authorize_join(&room("r"), None, LOCAL, NOW).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(a.authorize_join(&room("r"), None, mapped, NOW).is_ok());
        assert_eq!(
            a.authorize_join(&room("r"), None, REMOTE, NOW)
                .unwrap_err()
                .code,
            ErrorCode::AuthRequired
        );
    }

    #[test]
    fn ice_servers_follow_the_join_rule_in_any_room() {
        let dev = Auth::Development;
        let anonymous = PeerId::new("anonymous").unwrap();
        let none = IceRequest::default();
        let id = |peer: &str, room: Option<&str>, tenant: Option<&str>| TurnIdentity {
            peer: PeerId::new(peer).unwrap(),
            room: room.map(|r| RoomId::new(r).unwrap()),
            tenant: tenant.map(|t| TenantId::new(t).unwrap()),
        };
        let ask = |room: Option<&str>, peer: Option<&str>| IceRequest {
            room: room.map(|r| RoomId::new(r).unwrap()),
            peer: peer.map(|p| PeerId::new(p).unwrap()),
        };
        assert_eq!(
            dev.authorize_ice_servers(None, LOCAL, NOW, &none)
                .map(|i| i.peer),
            Ok(anonymous.clone())
        );
        assert_eq!(
            dev.authorize_ice_servers(None, LOCAL, NOW, &ask(Some("standup"), Some("bob"))),
            Ok(id("bob", Some("standup"), None))
        );
        assert_eq!(
            dev.authorize_ice_servers(None, REMOTE, NOW, &none)
                .unwrap_err()
                .code,
            ErrorCode::AuthRequired
        );

        let jwt = Auth::Jwt(JwtVerifier::hs256(b"k").unwrap());
        let alice = mint_hs256(b"k", &claims("some-room", Some("alice"), NOW + 60)).unwrap();
        let nobody = mint_hs256(b"k", &claims("r", None, NOW + 60)).unwrap();
        let bad_peer = mint_hs256(b"k", &claims("r", Some("not a peer id"), NOW + 60)).unwrap();
        let mut tenant_claims = claims("*", Some("carol"), NOW + 60);
        tenant_claims.tenant = Some("acme".into());
        let tenant = mint_hs256(b"k", &tenant_claims).unwrap();
        tenant_claims.tenant = Some("a;room=x".into());
        let bad_tenant = mint_hs256(b"k", &tenant_claims).unwrap();
        let code = |r: Result<TurnIdentity, Denied>| r.unwrap_err().code;
        assert_eq!(
            jwt.authorize_ice_servers(Some(&alice), REMOTE, NOW, &none),
            Ok(id("alice", Some("some-room"), None))
        );
        assert_eq!(
            jwt.authorize_ice_servers(Some(&nobody), REMOTE, NOW, &none)
                .map(|i| i.peer),
            Ok(anonymous)
        );
        assert_eq!(
            jwt.authorize_ice_servers(Some(&nobody), REMOTE, NOW, &ask(None, Some("dave"))),
            Ok(id("dave", Some("r"), None))
        );
        assert_eq!(
            jwt.authorize_ice_servers(Some(&tenant), REMOTE, NOW, &ask(Some("any"), None)),
            Ok(id("carol", Some("any"), Some("acme"))),
            "a token for any room: the room asked for"
        );
        // Never wider than the token: another room or peer than it pins is forbidden.
        assert_eq!(
            code(jwt.authorize_ice_servers(Some(&alice), REMOTE, NOW, &ask(Some("x"), None))),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(jwt.authorize_ice_servers(Some(&alice), REMOTE, NOW, &ask(None, Some("eve")))),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(jwt.authorize_ice_servers(Some(&bad_tenant), REMOTE, NOW, &none)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            code(jwt.authorize_ice_servers(None, LOCAL, NOW, &none)),
            ErrorCode::AuthRequired
        );
        assert_eq!(
            code(jwt.authorize_ice_servers(Some(&alice), REMOTE, NOW + 61, &none)),
            ErrorCode::TokenExpired
        );
        assert_eq!(
            code(jwt.authorize_ice_servers(Some(&bad_peer), REMOTE, NOW, &none)),
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn a_rotation_accepts_the_earlier_keys_and_no_other() {
        let v = JwtVerifier::hs256(b"new")
            .unwrap()
            .also_accept(JwtVerifier::hs256(b"old").unwrap())
            .also_accept(JwtVerifier::eddsa_pem(ED_PUB).unwrap());
        let c = claims("r", Some("alice"), NOW + 60);
        for key in [&b"new"[..], b"old"] {
            let t = mint_hs256(key, &c).unwrap();
            assert_eq!(v.verify(&t, NOW).unwrap(), c);
        }
        let ed = EncodingKey::from_ed_pem(ED_PRIV).unwrap();
        assert_eq!(v.verify(&sign(Algorithm::EdDSA, &ed, &c), NOW).unwrap(), c);
        let other = mint_hs256(b"other", &c).unwrap();
        assert_eq!(
            v.verify(&other, NOW).unwrap_err().code,
            ErrorCode::InvalidToken
        );
        // An earlier key does not lift the time checks.
        let old = mint_hs256(b"old", &claims("r", None, NOW - 60)).unwrap();
        assert_eq!(
            v.verify(&old, NOW).unwrap_err().code,
            ErrorCode::TokenExpired
        );
    }

    #[test]
    fn hs256_round_trip_and_claim_checks() {
        let v = JwtVerifier::hs256(b"s3cret").unwrap();
        let a = Auth::Jwt(v);
        let t = mint_hs256(b"s3cret", &claims("r", Some("alice"), NOW + 60)).unwrap();
        let g = a.authorize_join(&room("r"), Some(&t), REMOTE, NOW).unwrap();
        assert_eq!(g.peer, Some(PeerId::new("alice").unwrap()));
        assert_eq!(g.perms, Permissions::DEFAULT);
        assert_eq!(g.exp, Some(NOW + 60));

        let code = |r: Result<Grant, Denied>| r.unwrap_err().code;
        assert_eq!(
            code(a.authorize_join(&room("r"), None, LOCAL, NOW)),
            ErrorCode::AuthRequired
        );
        assert_eq!(
            code(a.authorize_join(&room("other"), Some(&t), REMOTE, NOW)),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(a.authorize_join(&room("r"), Some(&t), REMOTE, NOW + 61)),
            ErrorCode::TokenExpired
        );
        let forged = mint_hs256(b"other", &claims("r", None, NOW + 60)).unwrap();
        assert_eq!(
            code(a.authorize_join(&room("r"), Some(&forged), REMOTE, NOW)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            code(a.authorize_join(&room("r"), Some("garbage"), REMOTE, NOW)),
            ErrorCode::InvalidToken
        );
        let wild = mint_hs256(b"s3cret", &claims("*", None, NOW + 60)).unwrap();
        assert!(a
            .authorize_join(&room("any"), Some(&wild), REMOTE, NOW)
            .is_ok());
    }

    #[test]
    fn nbf_and_perms_are_honoured() {
        let a = Auth::Jwt(JwtVerifier::hs256(b"k").unwrap());
        let mut c = claims("r", None, NOW + 60);
        c.nbf = Some(NOW + 10);
        let t = mint_hs256(b"k", &c).unwrap();
        assert_eq!(
            a.authorize_join(&room("r"), Some(&t), REMOTE, NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidToken
        );
        let mut c = claims("r", None, NOW + 60);
        c.perms = Some(vec![Permission::Subscribe]);
        let t = mint_hs256(b"k", &c).unwrap();
        let g = a.authorize_join(&room("r"), Some(&t), REMOTE, NOW).unwrap();
        assert!(g.perms.subscribe && !g.perms.publish && !g.perms.data);
    }

    // Test-only key pairs generated with openssl for these tests.
    const ED_PRIV: &[u8] = include_bytes!("../tests/keys/ed25519.pem");
    const ED_PUB: &[u8] = include_bytes!("../tests/keys/ed25519.pub.pem");
    const P256_PRIV: &[u8] = include_bytes!("../tests/keys/p256.pem");
    const P256_PUB: &[u8] = include_bytes!("../tests/keys/p256.pub.pem");

    fn sign(alg: Algorithm, key: &EncodingKey, c: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(alg), c, key).unwrap()
    }

    #[test]
    fn eddsa_and_es256_verify_with_public_keys() {
        install_crypto_provider();
        let c = claims("r", Some("bob"), NOW + 60);
        let ed = EncodingKey::from_ed_pem(ED_PRIV).unwrap();
        let es = EncodingKey::from_ec_pem(P256_PRIV).unwrap();
        let ed_v = JwtVerifier::eddsa_pem(ED_PUB).unwrap();
        let es_v = JwtVerifier::es256_pem(P256_PUB).unwrap();
        assert_eq!(
            ed_v.verify(&sign(Algorithm::EdDSA, &ed, &c), NOW).unwrap(),
            c
        );
        assert_eq!(
            es_v.verify(&sign(Algorithm::ES256, &es, &c), NOW).unwrap(),
            c
        );
        // Each verifier refuses the other's tokens.
        assert_eq!(
            ed_v.verify(&sign(Algorithm::ES256, &es, &c), NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidToken
        );
        assert_eq!(
            es_v.verify(&sign(Algorithm::EdDSA, &ed, &c), NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidToken
        );
        let late = ed_v.with_leeway(5);
        assert!(late
            .verify(&sign(Algorithm::EdDSA, &ed, &c), NOW + 65)
            .is_ok());
        assert!(late
            .verify(&sign(Algorithm::EdDSA, &ed, &c), NOW + 66)
            .is_err());
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // An HS256 token signed with the public key bytes must not pass an Ed25519 verifier.
        let v = JwtVerifier::eddsa_pem(ED_PUB).unwrap();
        let t = mint_hs256(ED_PUB, &claims("r", None, NOW + 60)).unwrap();
        assert_eq!(v.verify(&t, NOW).unwrap_err().code, ErrorCode::InvalidToken);
        assert!(JwtVerifier::es256_pem(b"not a pem").is_err());
        assert!(JwtVerifier::hs256(b"").is_err());
    }
}
