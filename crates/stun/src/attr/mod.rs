//! Typed STUN attributes (RFC 8489 §14, RFC 8656 §18, RFC 6062 §6.2, RFC 5780 §7,
//! RFC 8445 §16.1, RFC 8016 §3.1).
//!
//! Each attribute is a type implementing [`Attr`]: `decode` borrows from the message, `encode`
//! writes the value into a slice of exactly `encoded_len` bytes. [`Attribute`] is the sum of all
//! of them, for code that walks every attribute.
//!
//! One file per attribute family: `address` (MAPPED-ADDRESS, the XOR-ed addresses,
//! ALTERNATE-SERVER, RESPONSE-ORIGIN, OTHER-ADDRESS), `auth` (USERNAME, USERHASH, REALM, NONCE,
//! PASSWORD-ALGORITHM(S), MESSAGE-INTEGRITY(-SHA256), FINGERPRINT), `error_code` (ERROR-CODE,
//! ADDRESS-ERROR-CODE, UNKNOWN-ATTRIBUTES), `turn` (RFC 8656 and RFC 6062), `rfc5780`
//! (CHANGE-REQUEST, RESPONSE-PORT, PADDING), `ice` (RFC 8445). This file holds the type table,
//! the [`Attr`] trait, shared helpers, SOFTWARE, ALTERNATE-DOMAIN and the [`Attribute`] sum type;
//! `macros` the shared shapes (text, bytes, fixed bytes, empty, integer).

use core::fmt;

use crate::error::AttrError;
use crate::message::TransactionId;

#[macro_use]
mod macros;

mod address;
mod auth;
mod error_code;
mod ice;
mod rfc5780;
mod turn;

pub use address::{
    AlternateServer, Family, MappedAddress, OtherAddress, ResponseOrigin, XorMappedAddress,
    XorPeerAddress, XorRelayedAddress, FAMILY_IPV4, FAMILY_IPV6,
};
pub use auth::{
    Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, PasswordAlgorithm,
    PasswordAlgorithms, Realm, SecurityFeatures, Userhash, Username, NONCE_COOKIE,
};
pub use error_code::{AddressErrorCode, ErrorCode, UnknownAttributes};
pub use ice::{IceControlled, IceControlling, Priority, UseCandidate};
pub use rfc5780::{ChangeRequest, Padding, ResponsePort};
pub use turn::{
    AdditionalAddressFamily, ChannelNumber, ConnectionId, Data, DontFragment, EvenPort, Icmp,
    Lifetime, MobilityTicket, RequestedAddressFamily, RequestedTransport, ReservationToken,
};

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

// ---------------------------------------------------------------------------------------------
// Text of no family (RFC 8489 §14.14, §14.16)
// ---------------------------------------------------------------------------------------------

text_attr!(
    /// RFC 8489 §14.14: SOFTWARE, fewer than 128 characters, at most 763 bytes.
    Software, SOFTWARE, 763, 127
);
text_attr!(
    /// RFC 8489 §14.16: ALTERNATE-DOMAIN, a DNS name of at most 255 bytes.
    AlternateDomain, ALTERNATE_DOMAIN, 255, 255
);

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
