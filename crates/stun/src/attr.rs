//! Typed STUN attributes (RFC 8489 §14, RFC 8656 §18, RFC 6062 §6.2, RFC 5780 §7,
//! RFC 8445 §16.1, RFC 8016 §3.1).
//!
//! Each attribute is a type implementing [`Attr`]: `decode` borrows from the message, `encode`
//! writes the value into a slice of exactly `encoded_len` bytes. [`Attribute`] is the sum of all
//! of them, for code that walks every attribute.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::AttrError;
use crate::message::TransactionId;
use crate::MAGIC_COOKIE;

/// A 16-bit attribute type (RFC 8489 §14, §18.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

macro_rules! attr_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $label:expr;)*) => {
        impl AttrType {
            $($(#[$doc])* pub const $name: AttrType = AttrType($value);)*

            /// The IANA name of a type this codec knows, or `None`.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($label),)*
                    _ => None,
                }
            }
        }
    };
}

attr_types! {
    /// RFC 8489 §14.1.
    MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
    /// RFC 5780 §7.2.
    CHANGE_REQUEST = 0x0003, "CHANGE-REQUEST";
    /// RFC 8489 §14.3.
    USERNAME = 0x0006, "USERNAME";
    /// RFC 8489 §14.5.
    MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
    /// RFC 8489 §14.8.
    ERROR_CODE = 0x0009, "ERROR-CODE";
    /// RFC 8489 §14.9.
    UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
    /// RFC 8656 §18.1.
    CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
    /// RFC 8656 §18.2.
    LIFETIME = 0x000D, "LIFETIME";
    /// RFC 8656 §18.3.
    XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
    /// RFC 8656 §18.4.
    DATA = 0x0013, "DATA";
    /// RFC 8489 §14.9.
    REALM = 0x0014, "REALM";
    /// RFC 8489 §14.10.
    NONCE = 0x0015, "NONCE";
    /// RFC 8656 §18.5.
    XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
    /// RFC 8656 §18.6.
    REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
    /// RFC 8656 §18.7.
    EVEN_PORT = 0x0018, "EVEN-PORT";
    /// RFC 8656 §18.8.
    REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
    /// RFC 8656 §18.9.
    DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
    /// RFC 8489 §14.6.
    MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
    /// RFC 8489 §14.12.
    PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
    /// RFC 8489 §14.4.
    USERHASH = 0x001E, "USERHASH";
    /// RFC 8489 §14.2.
    XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
    /// RFC 8656 §18.10.
    RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
    /// RFC 8445 §16.1.
    PRIORITY = 0x0024, "PRIORITY";
    /// RFC 8445 §16.1.
    USE_CANDIDATE = 0x0025, "USE-CANDIDATE";
    /// RFC 5780 §7.4.
    PADDING = 0x0026, "PADDING";
    /// RFC 5780 §7.5.
    RESPONSE_PORT = 0x0027, "RESPONSE-PORT";
    /// RFC 6062 §6.2.1.
    CONNECTION_ID = 0x002A, "CONNECTION-ID";
    /// RFC 8656 §18.11.
    ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
    /// RFC 8656 §18.12.
    ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
    /// RFC 8489 §14.11.
    PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
    /// RFC 8489 §14.16.
    ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
    /// RFC 8656 §18.13.
    ICMP = 0x8004, "ICMP";
    /// RFC 8489 §14.14.
    SOFTWARE = 0x8022, "SOFTWARE";
    /// RFC 8489 §14.15.
    ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
    /// RFC 8489 §14.7.
    FINGERPRINT = 0x8028, "FINGERPRINT";
    /// RFC 8445 §16.1.
    ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED";
    /// RFC 8445 §16.1.
    ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING";
    /// RFC 5780 §7.3.
    RESPONSE_ORIGIN = 0x802B, "RESPONSE-ORIGIN";
    /// RFC 5780 §7.3.
    OTHER_ADDRESS = 0x802C, "OTHER-ADDRESS";
    /// RFC 8016 §3.1.
    MOBILITY_TICKET = 0x8030, "MOBILITY-TICKET";
}

impl AttrType {
    /// RFC 8489 §14: types 0x0000–0x7FFF are comprehension-required.
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this codec has a typed decoder for the type.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "AttrType(0x{:04x})", self.0),
        }
    }
}

/// A typed attribute: decoded from, and encoded to, its value bytes (without padding).
pub trait Attr<'a>: Sized {
    /// The attribute type.
    const TYPE: AttrType;
    /// Decodes a value; `tid` is needed by the XOR-ed address attributes.
    fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError>;
    /// Length of the encoded value, without padding.
    fn encoded_len(&self) -> usize;
    /// Writes the value into `out`, which is exactly `encoded_len()` bytes long.
    fn encode(&self, out: &mut [u8], tid: &TransactionId);
}

fn invalid_len(t: AttrType, len: usize) -> AttrError {
    AttrError::InvalidLength {
        attr_type: t.0,
        len,
    }
}

fn fixed<const N: usize>(t: AttrType, value: &[u8]) -> Result<&[u8; N], AttrError> {
    value.try_into().map_err(|_| invalid_len(t, value.len()))
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// ---------------------------------------------------------------------------------------------
// Addresses (RFC 8489 §14.1, §14.2)
// ---------------------------------------------------------------------------------------------

/// RFC 8489 §14.1: address family 0x01.
pub const FAMILY_IPV4: u8 = 0x01;
/// RFC 8489 §14.1: address family 0x02.
pub const FAMILY_IPV6: u8 = 0x02;

/// An IP address family as used by REQUESTED-ADDRESS-FAMILY and friends (RFC 8656 §18.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// 0x01
    V4,
    /// 0x02
    V6,
}

impl Family {
    fn from_byte(t: AttrType, b: u8) -> Result<Family, AttrError> {
        match b {
            FAMILY_IPV4 => Ok(Family::V4),
            FAMILY_IPV6 => Ok(Family::V6),
            family => Err(AttrError::UnknownFamily {
                attr_type: t.0,
                family,
            }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Family::V4 => FAMILY_IPV4,
            Family::V6 => FAMILY_IPV6,
        }
    }

    /// The family of an address.
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(tid.as_bytes());
    key
}

fn decode_address(
    t: AttrType,
    value: &[u8],
    tid: &TransactionId,
    xor: bool,
) -> Result<SocketAddr, AttrError> {
    if value.len() < 4 {
        return Err(invalid_len(t, value.len()));
    }
    let key = xor_key(tid);
    let mask16 = if xor { be_u16(&key) } else { 0 };
    let port = be_u16(&value[2..]) ^ mask16;
    let ip = match Family::from_byte(t, value[1])? {
        Family::V4 => {
            let raw: &[u8; 4] = fixed(t, &value[4..]).map_err(|_| invalid_len(t, value.len()))?;
            let mut b = *raw;
            if xor {
                b.iter_mut().zip(&key[..4]).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        Family::V6 => {
            let raw: &[u8; 16] = fixed(t, &value[4..]).map_err(|_| invalid_len(t, value.len()))?;
            let mut b = *raw;
            if xor {
                b.iter_mut().zip(&key).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn address_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() {
        8
    } else {
        20
    }
}

fn encode_address(addr: &SocketAddr, out: &mut [u8], tid: &TransactionId, xor: bool) {
    let key = xor_key(tid);
    out[0] = 0;
    out[1] = Family::of(addr).byte();
    let mask16 = if xor { be_u16(&key) } else { 0 };
    out[2..4].copy_from_slice(&(addr.port() ^ mask16).to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[4..8].copy_from_slice(&ip.octets());
            if xor {
                out[4..8]
                    .iter_mut()
                    .zip(&key[..4])
                    .for_each(|(x, k)| *x ^= k);
            }
        }
        IpAddr::V6(ip) => {
            out[4..20].copy_from_slice(&ip.octets());
            if xor {
                out[4..20].iter_mut().zip(&key).for_each(|(x, k)| *x ^= k);
            }
        }
    }
}

macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                decode_address(Self::TYPE, value, tid, $xor).map($name)
            }
            fn encoded_len(&self) -> usize {
                address_len(&self.0)
            }
            fn encode(&self, out: &mut [u8], tid: &TransactionId) {
                encode_address(&self.0, out, tid, $xor)
            }
        }
    };
}

address_attr!(
    /// RFC 8489 §14.1: MAPPED-ADDRESS, the reflexive address in the clear (legacy).
    MappedAddress, MAPPED_ADDRESS, false
);
address_attr!(
    /// RFC 8489 §14.2: XOR-MAPPED-ADDRESS, the reflexive transport address.
    XorMappedAddress, XOR_MAPPED_ADDRESS, true
);
address_attr!(
    /// RFC 8656 §18.3: XOR-PEER-ADDRESS, a peer's address as seen from the relay.
    XorPeerAddress, XOR_PEER_ADDRESS, true
);
address_attr!(
    /// RFC 8656 §18.5: XOR-RELAYED-ADDRESS, the allocated relayed transport address.
    XorRelayedAddress, XOR_RELAYED_ADDRESS, true
);
address_attr!(
    /// RFC 8489 §14.15: ALTERNATE-SERVER, where to retry (with 300 Try Alternate).
    AlternateServer, ALTERNATE_SERVER, false
);
address_attr!(
    /// RFC 5780 §7.3: RESPONSE-ORIGIN, the address the response was sent from.
    ResponseOrigin, RESPONSE_ORIGIN, false
);
address_attr!(
    /// RFC 5780 §7.4: OTHER-ADDRESS, the server's alternate IP and port.
    OtherAddress, OTHER_ADDRESS, false
);

// ---------------------------------------------------------------------------------------------
// Text (RFC 8489 §14.3, §14.9, §14.10, §14.14, §14.16)
// ---------------------------------------------------------------------------------------------

fn decode_text(
    t: AttrType,
    value: &[u8],
    max_bytes: usize,
    max_chars: usize,
) -> Result<&str, AttrError> {
    if value.len() > max_bytes {
        return Err(invalid_len(t, value.len()));
    }
    let s = core::str::from_utf8(value).map_err(|_| AttrError::InvalidText { attr_type: t.0 })?;
    if s.chars().count() > max_chars {
        return Err(AttrError::InvalidText { attr_type: t.0 });
    }
    Ok(s)
}

macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $max_bytes:expr, $max_chars:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> $name<'a> {
            /// Largest value in bytes the RFC allows.
            pub const MAX_BYTES: usize = $max_bytes;
        }

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                decode_text(Self::TYPE, value, $max_bytes, $max_chars).map($name)
            }
            fn encoded_len(&self) -> usize {
                self.0.len()
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(self.0.as_bytes())
            }
        }
    };
}

text_attr!(
    /// RFC 8489 §14.3: USERNAME, UTF-8, fewer than 509 bytes (the RFC says < 509 after
    /// OpaqueString processing; 513 in RFC 5389). floe accepts up to 512.
    Username, USERNAME, 512, 512
);
text_attr!(
    /// RFC 8489 §14.9: REALM, fewer than 128 characters, at most 763 bytes.
    Realm, REALM, 763, 127
);
text_attr!(
    /// RFC 8489 §14.10: NONCE, fewer than 128 characters, at most 763 bytes.
    Nonce, NONCE, 763, 127
);
text_attr!(
    /// RFC 8489 §14.14: SOFTWARE, fewer than 128 characters, at most 763 bytes.
    Software, SOFTWARE, 763, 127
);
text_attr!(
    /// RFC 8489 §14.16: ALTERNATE-DOMAIN, a DNS name of at most 255 bytes.
    AlternateDomain, ALTERNATE_DOMAIN, 255, 255
);

/// RFC 8489 §9.2: the prefix of a NONCE that carries the server's security feature set.
pub const NONCE_COOKIE: &str = "obMatJos2";

impl<'a> Nonce<'a> {
    /// RFC 8489 §9.2: the 24-bit security feature set when the nonce starts with the nonce
    /// cookie followed by four base64 characters; `None` otherwise.
    pub fn security_features(&self) -> Option<SecurityFeatures> {
        let rest = self.0.strip_prefix(NONCE_COOKIE)?;
        let enc = rest.as_bytes().get(..4)?;
        let mut bits: u32 = 0;
        for &c in enc {
            bits = (bits << 6) | u32::from(base64_value(c)?);
        }
        Some(SecurityFeatures(bits))
    }
}

/// RFC 8489 §9.2 / §18.1: the 24-bit security feature set advertised in a NONCE.
///
/// Bit numbering follows RFC 8489 erratum 6268: bit 0 is the *least* significant bit of the 24
/// (the RFC text had it the other way round). This matches the RFC's own Appendix B.1 vector,
/// whose nonce `obMatJos2AAAC…` (0x000002: bit 1, username anonymity) comes with a USERHASH,
/// libjuice, and floe's TURN server (`floe-turn`'s nonce cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityFeatures(pub u32);

impl SecurityFeatures {
    /// Bit 0 (the least significant, erratum 6268): Password algorithms.
    pub const PASSWORD_ALGORITHMS: u32 = 1 << 0;
    /// Bit 1: Username anonymity.
    pub const USERNAME_ANONYMITY: u32 = 1 << 1;

    /// Whether the server supports PASSWORD-ALGORITHMS.
    pub fn password_algorithms(self) -> bool {
        self.0 & Self::PASSWORD_ALGORITHMS != 0
    }

    /// Whether the server supports USERHASH.
    pub fn username_anonymity(self) -> bool {
        self.0 & Self::USERNAME_ANONYMITY != 0
    }

    /// The four base64 characters that encode the set after [`NONCE_COOKIE`].
    pub fn encode(self) -> [u8; 4] {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = self.0 & 0x00FF_FFFF;
        [18, 12, 6, 0].map(|shift| ALPHABET[((b >> shift) & 0x3F) as usize])
    }
}

fn base64_value(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Error codes (RFC 8489 §14.8, RFC 8656 §18.12)
// ---------------------------------------------------------------------------------------------

/// RFC 8489 §14.8: ERROR-CODE, a 3-digit code (300–699) and a reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The code, 300..=699.
    pub code: u16,
    /// The UTF-8 reason phrase (at most 763 bytes).
    pub reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    /// 300 Try Alternate.
    pub const TRY_ALTERNATE: u16 = 300;
    /// 400 Bad Request.
    pub const BAD_REQUEST: u16 = 400;
    /// 401 Unauthenticated.
    pub const UNAUTHENTICATED: u16 = 401;
    /// 403 Forbidden.
    pub const FORBIDDEN: u16 = 403;
    /// 420 Unknown Attribute.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// 437 Allocation Mismatch.
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// 438 Stale Nonce.
    pub const STALE_NONCE: u16 = 438;
    /// 440 Address Family not Supported.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// 441 Wrong Credentials.
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// 442 Unsupported Transport Protocol.
    pub const UNSUPPORTED_TRANSPORT: u16 = 442;
    /// 443 Peer Address Family Mismatch.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// 446 Connection Already Exists (RFC 6062).
    pub const CONNECTION_ALREADY_EXISTS: u16 = 446;
    /// 447 Connection Timeout or Failure (RFC 6062).
    pub const CONNECTION_TIMEOUT_OR_FAILURE: u16 = 447;
    /// 486 Allocation Quota Reached.
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// 487 Role Conflict (RFC 8445).
    pub const ROLE_CONFLICT: u16 = 487;
    /// 500 Server Error.
    pub const SERVER_ERROR: u16 = 500;
    /// 508 Insufficient Capacity.
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// The RFC's recommended reason phrase for a code.
    pub fn default_reason(code: u16) -> &'static str {
        match code {
            300 => "Try Alternate",
            400 => "Bad Request",
            401 => "Unauthenticated",
            403 => "Forbidden",
            405 => "Mobility Forbidden",
            420 => "Unknown Attribute",
            437 => "Allocation Mismatch",
            438 => "Stale Nonce",
            440 => "Address Family not Supported",
            441 => "Wrong Credentials",
            442 => "Unsupported Transport Protocol",
            443 => "Peer Address Family Mismatch",
            446 => "Connection Already Exists",
            447 => "Connection Timeout or Failure",
            486 => "Allocation Quota Reached",
            487 => "Role Conflict",
            500 => "Server Error",
            508 => "Insufficient Capacity",
            _ => "Error",
        }
    }

    /// An error with the default reason phrase.
    pub fn new(code: u16) -> ErrorCode<'static> {
        ErrorCode {
            code,
            reason: ErrorCode::default_reason(code),
        }
    }
}

fn decode_code(t: AttrType, class_number: &[u8]) -> Result<u16, AttrError> {
    let class = u16::from(class_number[0] & 0x07);
    let number = u16::from(class_number[1]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::OutOfRange { attr_type: t.0 });
    }
    Ok(class * 100 + number)
}

impl<'a> Attr<'a> for ErrorCode<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() < 4 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        let code = decode_code(Self::TYPE, &value[2..4])?;
        let reason = decode_text(Self::TYPE, &value[4..], 763, 763)?;
        Ok(ErrorCode { code, reason })
    }
    fn encoded_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = 0;
        out[1] = 0;
        out[2] = ((self.code / 100) & 0x07) as u8;
        out[3] = (self.code % 100) as u8;
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

/// RFC 8656 §18.12: ADDRESS-ERROR-CODE, why one family of a dual allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressErrorCode<'a> {
    /// The family that failed.
    pub family: Family,
    /// The error code (e.g. 440, 508).
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

impl<'a> Attr<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() < 4 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        let family = Family::from_byte(Self::TYPE, value[0])?;
        let code = decode_code(Self::TYPE, &value[2..4])?;
        let reason = decode_text(Self::TYPE, &value[4..], 763, 763)?;
        Ok(AddressErrorCode {
            family,
            code,
            reason,
        })
    }
    fn encoded_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = self.family.byte();
        out[1] = 0;
        out[2] = ((self.code / 100) & 0x07) as u8;
        out[3] = (self.code % 100) as u8;
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Lists (UNKNOWN-ATTRIBUTES, PASSWORD-ALGORITHMS)
// ---------------------------------------------------------------------------------------------

/// RFC 8489 §14.13: UNKNOWN-ATTRIBUTES, the comprehension-required types a server did not
/// understand. Decoded as the wire bytes; built from a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAttributes<'a> {
    /// As received: a list of 16-bit types.
    Wire(&'a [u8]),
    /// To send.
    List(&'a [AttrType]),
}

impl<'a> UnknownAttributes<'a> {
    /// The listed types.
    pub fn iter(&self) -> impl Iterator<Item = AttrType> + 'a {
        let (wire, list): (&'a [u8], &'a [AttrType]) = match *self {
            UnknownAttributes::Wire(w) => (w, &[]),
            UnknownAttributes::List(l) => (&[], l),
        };
        wire.chunks_exact(2)
            .map(|c| AttrType(be_u16(c)))
            .chain(list.iter().copied())
    }
}

impl<'a> Attr<'a> for UnknownAttributes<'a> {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() % 2 != 0 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        Ok(UnknownAttributes::Wire(value))
    }
    fn encoded_len(&self) -> usize {
        match self {
            UnknownAttributes::Wire(w) => w.len(),
            UnknownAttributes::List(l) => 2 * l.len(),
        }
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.iter()) {
            chunk.copy_from_slice(&t.0.to_be_bytes());
        }
    }
}

/// RFC 8489 §14.12: PASSWORD-ALGORITHM, the algorithm the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithm<'a> {
    /// 0x0001 MD5 or 0x0002 SHA-256 ([`crate::integrity::ALGORITHM_MD5`], ...).
    pub algorithm: u16,
    /// Algorithm parameters (empty for MD5 and SHA-256).
    pub params: &'a [u8],
}

impl<'a> PasswordAlgorithm<'a> {
    fn wire_len(&self) -> usize {
        4 + ((self.params.len() + 3) & !3)
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.algorithm.to_be_bytes());
        // Lengths are bounded by the attribute length (u16); see `Attr::encoded_len`.
        out[2..4].copy_from_slice(&(self.params.len() as u16).to_be_bytes());
        out[4..4 + self.params.len()].copy_from_slice(self.params);
        out[4 + self.params.len()..self.wire_len()].fill(0);
    }

    fn read(t: AttrType, value: &'a [u8]) -> Result<(Self, usize), AttrError> {
        if value.len() < 4 {
            return Err(invalid_len(t, value.len()));
        }
        let algorithm = be_u16(value);
        let plen = usize::from(be_u16(&value[2..]));
        let params = value
            .get(4..4 + plen)
            .ok_or_else(|| invalid_len(t, value.len()))?;
        let used = (4 + ((plen + 3) & !3)).min(value.len());
        Ok((PasswordAlgorithm { algorithm, params }, used))
    }
}

impl<'a> Attr<'a> for PasswordAlgorithm<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let (alg, _) = PasswordAlgorithm::read(Self::TYPE, value)?;
        Ok(alg)
    }
    fn encoded_len(&self) -> usize {
        4 + self.params.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0..2].copy_from_slice(&self.algorithm.to_be_bytes());
        out[2..4].copy_from_slice(&(self.params.len() as u16).to_be_bytes());
        out[4..].copy_from_slice(self.params);
    }
}

/// RFC 8489 §14.11: PASSWORD-ALGORITHMS, the algorithms a server supports, in preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithms<'a> {
    /// As received.
    Wire(&'a [u8]),
    /// To send.
    List(&'a [PasswordAlgorithm<'a>]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// The listed algorithms. A malformed trailing entry ends the iteration.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let (mut wire, list): (&'a [u8], &'a [PasswordAlgorithm<'a>]) = match *self {
            PasswordAlgorithms::Wire(w) => (w, &[]),
            PasswordAlgorithms::List(l) => (&[], l),
        };
        core::iter::from_fn(move || {
            let (alg, used) = PasswordAlgorithm::read(AttrType::PASSWORD_ALGORITHMS, wire).ok()?;
            wire = &wire[used..];
            Some(alg)
        })
        .chain(list.iter().copied())
    }
}

impl<'a> Attr<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            let (_, used) = PasswordAlgorithm::read(Self::TYPE, rest)?;
            rest = &rest[used..];
        }
        Ok(PasswordAlgorithms::Wire(value))
    }
    fn encoded_len(&self) -> usize {
        match self {
            PasswordAlgorithms::Wire(w) => w.len(),
            PasswordAlgorithms::List(l) => l.iter().map(PasswordAlgorithm::wire_len).sum(),
        }
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        match self {
            PasswordAlgorithms::Wire(w) => out.copy_from_slice(w),
            PasswordAlgorithms::List(l) => {
                let mut at = 0;
                for alg in l.iter() {
                    let n = alg.wire_len();
                    alg.write(&mut out[at..at + n]);
                    at += n;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Opaque byte strings and fixed-size values
// ---------------------------------------------------------------------------------------------

macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                Ok($name(value))
            }
            fn encoded_len(&self) -> usize {
                self.0.len()
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

bytes_attr!(
    /// RFC 8656 §18.4: DATA, the application payload of a Send or Data indication.
    Data, DATA
);
bytes_attr!(
    /// RFC 8016 §3.1: MOBILITY-TICKET, an opaque ticket for moving an allocation.
    MobilityTicket, MOBILITY_TICKET
);

macro_rules! fixed_bytes_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $n:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8; $n]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                fixed(Self::TYPE, value).map($name)
            }
            fn encoded_len(&self) -> usize {
                $n
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

fixed_bytes_attr!(
    /// RFC 8489 §14.5: MESSAGE-INTEGRITY, an HMAC-SHA1. Build it with
    /// [`crate::MessageBuilder::add_message_integrity`], check it with
    /// [`crate::Message::verify_integrity`].
    MessageIntegrity, MESSAGE_INTEGRITY, 20
);
fixed_bytes_attr!(
    /// RFC 8489 §14.4: USERHASH, SHA-256(username ":" realm).
    Userhash, USERHASH, 32
);

/// RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256, an HMAC-SHA256 truncated to 16..=32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for MessageIntegritySha256<'a> {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if !(16..=32).contains(&value.len()) || value.len() % 4 != 0 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        Ok(MessageIntegritySha256(value))
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out.copy_from_slice(self.0)
    }
}

/// RFC 8656 §18.10: RESERVATION-TOKEN, 8 bytes naming a reserved relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationToken(pub [u8; 8]);

impl<'a> Attr<'a> for ReservationToken {
    const TYPE: AttrType = AttrType::RESERVATION_TOKEN;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        fixed::<8>(Self::TYPE, value).map(|b| ReservationToken(*b))
    }
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out.copy_from_slice(&self.0)
    }
}

macro_rules! empty_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name;

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                if value.is_empty() {
                    Ok($name)
                } else {
                    Err(invalid_len(Self::TYPE, value.len()))
                }
            }
            fn encoded_len(&self) -> usize {
                0
            }
            fn encode(&self, _out: &mut [u8], _tid: &TransactionId) {}
        }
    };
}

empty_attr!(
    /// RFC 8656 §18.9: DONT-FRAGMENT, set DF on packets to the peer.
    DontFragment, DONT_FRAGMENT
);
empty_attr!(
    /// RFC 8445 §7.1.2: USE-CANDIDATE, nominate this pair.
    UseCandidate, USE_CANDIDATE
);

macro_rules! uint_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $ty:ty, $n:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $ty);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                let b: &[u8; $n] = fixed(Self::TYPE, value)?;
                Ok($name(<$ty>::from_be_bytes(*b)))
            }
            fn encoded_len(&self) -> usize {
                $n
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out.copy_from_slice(&self.0.to_be_bytes())
            }
        }
    };
}

uint_attr!(
    /// RFC 8489 §14.7: FINGERPRINT, CRC-32 of the message XOR 0x5354554E. Build it with
    /// [`crate::MessageBuilder::add_fingerprint`].
    Fingerprint, FINGERPRINT, u32, 4
);
uint_attr!(
    /// RFC 8656 §18.2: LIFETIME in seconds.
    Lifetime, LIFETIME, u32, 4
);
uint_attr!(
    /// RFC 6062 §6.2.1: CONNECTION-ID of a peer TCP connection.
    ConnectionId, CONNECTION_ID, u32, 4
);
uint_attr!(
    /// RFC 8445 §16.1: PRIORITY of the peer-reflexive candidate.
    Priority, PRIORITY, u32, 4
);
uint_attr!(
    /// RFC 8445 §16.1: ICE-CONTROLLED with its tie-breaker.
    IceControlled, ICE_CONTROLLED, u64, 8
);
uint_attr!(
    /// RFC 8445 §16.1: ICE-CONTROLLING with its tie-breaker.
    IceControlling, ICE_CONTROLLING, u64, 8
);

/// RFC 8656 §18.1: CHANNEL-NUMBER (16 bits, then 16 reserved bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelNumber(pub u16);

impl<'a> Attr<'a> for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        Ok(ChannelNumber(be_u16(b)))
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..].fill(0);
    }
}

/// RFC 5780 §7.5: RESPONSE-PORT (16 bits, then 16 bits of padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponsePort(pub u16);

impl<'a> Attr<'a> for ResponsePort {
    const TYPE: AttrType = AttrType::RESPONSE_PORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        Ok(ResponsePort(be_u16(b)))
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..].fill(0);
    }
}

/// RFC 8656 §18.8: REQUESTED-TRANSPORT, an IP protocol number (17 UDP, 6 TCP) then 24 RFFU bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// IANA protocol number of UDP.
    pub const UDP: u8 = 17;
    /// IANA protocol number of TCP (RFC 6062).
    pub const TCP: u8 = 6;
}

impl<'a> Attr<'a> for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        Ok(RequestedTransport(b[0]))
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = self.0;
        out[1..].fill(0);
    }
}

macro_rules! family_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub Family);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                let b: &[u8; 4] = fixed(Self::TYPE, value)?;
                Family::from_byte(Self::TYPE, b[0]).map($name)
            }
            fn encoded_len(&self) -> usize {
                4
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out[0] = self.0.byte();
                out[1..].fill(0);
            }
        }
    };
}

family_attr!(
    /// RFC 8656 §18.6: REQUESTED-ADDRESS-FAMILY of the relayed address.
    RequestedAddressFamily, REQUESTED_ADDRESS_FAMILY
);
family_attr!(
    /// RFC 8656 §18.11: ADDITIONAL-ADDRESS-FAMILY, asks for a second (IPv6) relayed address.
    AdditionalAddressFamily, ADDITIONAL_ADDRESS_FAMILY
);

/// RFC 8656 §18.7: EVEN-PORT, with the R bit asking to reserve the next port too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvenPort {
    /// The R bit.
    pub reserve_next: bool,
}

impl<'a> Attr<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        // RFC 8656 §18.7 says one byte; some clients pad the value to four. Accept both.
        match value {
            [b] | [b, 0, 0, 0] => Ok(EvenPort {
                reserve_next: b & 0x80 != 0,
            }),
            _ => Err(invalid_len(Self::TYPE, value.len())),
        }
    }
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = if self.reserve_next { 0x80 } else { 0 };
    }
}

/// RFC 5780 §7.2: CHANGE-REQUEST flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChangeRequest {
    /// Flag A: send the response from the alternate IP address.
    pub change_ip: bool,
    /// Flag B: send the response from the alternate port.
    pub change_port: bool,
}

impl<'a> Attr<'a> for ChangeRequest {
    const TYPE: AttrType = AttrType::CHANGE_REQUEST;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        let flags = be_u32(b);
        Ok(ChangeRequest {
            change_ip: flags & 0x4 != 0,
            change_port: flags & 0x2 != 0,
        })
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        let flags = (u32::from(self.change_ip) << 2) | (u32::from(self.change_port) << 1);
        out.copy_from_slice(&flags.to_be_bytes());
    }
}

/// RFC 5780 §7.6: PADDING; only its length matters. Encoded as zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Padding(pub usize);

impl<'a> Attr<'a> for Padding {
    const TYPE: AttrType = AttrType::PADDING;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        Ok(Padding(value.len()))
    }
    fn encoded_len(&self) -> usize {
        self.0
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out.fill(0)
    }
}

/// RFC 8656 §18.13: ICMP, an ICMP error seen on the relay path, in a Data indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Error data (e.g. the MTU of "fragmentation needed").
    pub error_data: u32,
}

impl<'a> Attr<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 8] = fixed(Self::TYPE, value)?;
        Ok(Icmp {
            icmp_type: b[2],
            icmp_code: b[3],
            error_data: be_u32(&b[4..]),
        })
    }
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = 0;
        out[1] = 0;
        out[2] = self.icmp_type;
        out[3] = self.icmp_code;
        out[4..].copy_from_slice(&self.error_data.to_be_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// The sum type
// ---------------------------------------------------------------------------------------------

macro_rules! attribute_enum {
    ($($variant:ident($ty:ty),)*) => {
        /// Any attribute, decoded by type. Unknown types keep their raw value.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Attribute<'a> {
            $(#[allow(missing_docs)] $variant($ty),)*
            /// A type this codec has no decoder for.
            Unknown {
                /// The type.
                attr_type: AttrType,
                /// The value bytes.
                value: &'a [u8],
            },
        }

        impl<'a> Attribute<'a> {
            /// Decodes a value of type `t`.
            pub fn decode(t: AttrType, value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                $(if t == <$ty as Attr<'a>>::TYPE {
                    return <$ty as Attr<'a>>::decode(value, tid).map(Attribute::$variant);
                })*
                Ok(Attribute::Unknown { attr_type: t, value })
            }

            /// The attribute type.
            pub fn attr_type(&self) -> AttrType {
                match self {
                    $(Attribute::$variant(_) => <$ty as Attr<'a>>::TYPE,)*
                    Attribute::Unknown { attr_type, .. } => *attr_type,
                }
            }

            /// Length of the encoded value.
            pub fn encoded_len(&self) -> usize {
                match self {
                    $(Attribute::$variant(a) => a.encoded_len(),)*
                    Attribute::Unknown { value, .. } => value.len(),
                }
            }

            /// Writes the value into `out` (exactly `encoded_len()` bytes).
            pub fn encode(&self, out: &mut [u8], tid: &TransactionId) {
                match self {
                    $(Attribute::$variant(a) => a.encode(out, tid),)*
                    Attribute::Unknown { value, .. } => out.copy_from_slice(value),
                }
            }
        }
    };
}

attribute_enum! {
    MappedAddress(MappedAddress),
    XorMappedAddress(XorMappedAddress),
    Username(Username<'a>),
    Userhash(Userhash<'a>),
    MessageIntegrity(MessageIntegrity<'a>),
    MessageIntegritySha256(MessageIntegritySha256<'a>),
    Fingerprint(Fingerprint),
    ErrorCode(ErrorCode<'a>),
    Realm(Realm<'a>),
    Nonce(Nonce<'a>),
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    PasswordAlgorithm(PasswordAlgorithm<'a>),
    UnknownAttributes(UnknownAttributes<'a>),
    Software(Software<'a>),
    AlternateServer(AlternateServer),
    AlternateDomain(AlternateDomain<'a>),
    ChannelNumber(ChannelNumber),
    Lifetime(Lifetime),
    XorPeerAddress(XorPeerAddress),
    Data(Data<'a>),
    XorRelayedAddress(XorRelayedAddress),
    RequestedAddressFamily(RequestedAddressFamily),
    EvenPort(EvenPort),
    RequestedTransport(RequestedTransport),
    DontFragment(DontFragment),
    ReservationToken(ReservationToken),
    AdditionalAddressFamily(AdditionalAddressFamily),
    AddressErrorCode(AddressErrorCode<'a>),
    Icmp(Icmp),
    ConnectionId(ConnectionId),
    ChangeRequest(ChangeRequest),
    ResponseOrigin(ResponseOrigin),
    OtherAddress(OtherAddress),
    ResponsePort(ResponsePort),
    Padding(Padding),
    Priority(Priority),
    UseCandidate(UseCandidate),
    IceControlled(IceControlled),
    IceControlling(IceControlling),
    MobilityTicket(MobilityTicket<'a>),
}
