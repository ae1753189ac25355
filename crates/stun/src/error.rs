//! Error types. Every malformed input maps to one of these values; nothing panics.

/// Why a byte string is not a valid STUN message (RFC 8489 §5, §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the 20-byte header.
    #[error("message shorter than the 20-byte STUN header ({0} bytes)")]
    TooShort(usize),
    /// The two most significant bits of the first byte are not zero.
    #[error("first two bits are not zero: not a STUN message")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (an RFC 3489 message, or not STUN).
    #[error("magic cookie mismatch")]
    BadMagicCookie,
    /// The header length is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header length disagrees with the number of bytes given.
    #[error("header says {header} attribute bytes, buffer holds {actual}")]
    LengthMismatch {
        /// Length from the header.
        header: usize,
        /// Bytes after the header in the buffer.
        actual: usize,
    },
    /// An attribute's length runs past the end of the message.
    #[error("attribute 0x{attr_type:04x} at offset {offset} overruns the message")]
    AttributeOverrun {
        /// Attribute type.
        attr_type: u16,
        /// Offset of the attribute header.
        offset: usize,
    },
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    #[error("attribute after FINGERPRINT")]
    FingerprintNotLast,
}

/// Why an attribute value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// The value has the wrong length for its type.
    #[error("attribute 0x{attr_type:04x}: invalid length {len}")]
    InvalidLength {
        /// Attribute type.
        attr_type: u16,
        /// Value length.
        len: usize,
    },
    /// An address family other than 0x01 (IPv4) or 0x02 (IPv6).
    #[error("attribute 0x{attr_type:04x}: unknown address family 0x{family:02x}")]
    UnknownFamily {
        /// Attribute type.
        attr_type: u16,
        /// The family byte.
        family: u8,
    },
    /// Text that is not UTF-8 or is longer than the RFC allows.
    #[error("attribute 0x{attr_type:04x}: invalid text")]
    InvalidText {
        /// Attribute type.
        attr_type: u16,
    },
    /// A field outside its allowed range (e.g. ERROR-CODE class outside 3..=6).
    #[error("attribute 0x{attr_type:04x}: value out of range")]
    OutOfRange {
        /// Attribute type.
        attr_type: u16,
    },
}

/// Why a message could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The caller's buffer is too small.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The message would exceed the 16-bit length field.
    #[error("message too long for the 16-bit length field")]
    TooLong,
    /// A value cannot be encoded (e.g. an attribute longer than 65535 bytes, or text too long).
    #[error("attribute 0x{0:04x} cannot be encoded")]
    InvalidAttribute(u16),
    /// An attribute was added after FINGERPRINT or integrity where the RFC forbids it.
    #[error("attribute added after FINGERPRINT")]
    AfterFingerprint,
}
