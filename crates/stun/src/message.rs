//! Zero-copy STUN message parsing (RFC 8489 §5 and §14).

use core::fmt;

use crate::attr::{Attr, AttrType};
use crate::error::{AttrError, ParseError};
use crate::integrity;
use crate::{FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE};

/// RFC 8489 §5: the 96-bit transaction ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// RFC 8489 §5: the message class, two bits spread over the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 0b00
    Request,
    /// 0b01
    Indication,
    /// 0b10
    SuccessResponse,
    /// 0b11
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// RFC 8489 §5: a 12-bit STUN method.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// RFC 8489 §18.2.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 §17.
    pub const ALLOCATE: Method = Method(0x003);
    /// RFC 8656 §17.
    pub const REFRESH: Method = Method(0x004);
    /// RFC 8656 §17.
    pub const SEND: Method = Method(0x006);
    /// RFC 8656 §17.
    pub const DATA: Method = Method(0x007);
    /// RFC 8656 §17.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// RFC 8656 §17.
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// RFC 6062 §6.1.
    pub const CONNECT: Method = Method(0x00A);
    /// RFC 6062 §6.1.
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// RFC 6062 §6.1.
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A method from its 12-bit number; `None` when it does not fit in 12 bits.
    pub const fn new(value: u16) -> Option<Method> {
        if value > 0x0FFF {
            None
        } else {
            Some(Method(value))
        }
    }

    /// The 12-bit method number.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The IANA name, where known.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x001 => "Binding",
            0x003 => "Allocate",
            0x004 => "Refresh",
            0x006 => "Send",
            0x007 => "Data",
            0x008 => "CreatePermission",
            0x009 => "ChannelBind",
            0x00A => "Connect",
            0x00B => "ConnectionBind",
            0x00C => "ConnectionAttempt",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Method(0x{:03x})", self.0),
        }
    }
}

/// RFC 8489 §5: encodes class and method into the 14-bit message type.
pub(crate) fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

fn split_message_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let c = ((t >> 4) & 0b01) | ((t >> 7) & 0b10);
    (Class::from_bits(c), Method(m))
}

/// A validated STUN message borrowed from a buffer.
///
/// Parsing checks the header (RFC 8489 §5), that every attribute TLV fits, and that FINGERPRINT
/// is last (§14.7). Attribute values are decoded lazily, on access.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    class: Class,
    method: Method,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("class", &self.class)
            .field("method", &self.method)
            .field("transaction_id", &self.transaction_id())
            .field("len", &self.buf.len())
            .finish()
    }
}

/// One attribute as it is on the wire: its type, its value (without padding) and its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttr<'a> {
    /// The attribute type.
    pub attr_type: AttrType,
    /// The value, without padding.
    pub value: &'a [u8],
    /// Offset of the attribute header from the start of the message.
    pub offset: usize,
}

impl<'a> Message<'a> {
    /// For a stream transport (RFC 8489 §6.2.2): the total length of the STUN message at the
    /// start of `buf`, once at least its 4 first bytes are there. `None` if fewer than 4 bytes.
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        if buf.len() < 4 {
            return None;
        }
        Some(HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]])))
    }

    /// Parses and validates a STUN message that fills `buf` exactly.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort(buf.len()));
        }
        if buf[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        let length = u16::from_be_bytes([buf[2], buf[3]]);
        if length % 4 != 0 {
            return Err(ParseError::UnalignedLength(length));
        }
        let actual = buf.len() - HEADER_LEN;
        if usize::from(length) != actual {
            return Err(ParseError::LengthMismatch {
                header: usize::from(length),
                actual,
            });
        }
        let (class, method) = split_message_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut msg = Message {
            buf,
            class,
            method,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        msg.scan_attributes()?;
        Ok(msg)
    }

    fn scan_attributes(&mut self) -> Result<(), ParseError> {
        let mut offset = HEADER_LEN;
        while offset < self.buf.len() {
            let (attr_type, value_len) = tlv_header(self.buf, offset)?;
            if self.fingerprint.is_some() {
                return Err(ParseError::FingerprintNotLast);
            }
            let padded = (value_len + 3) & !3;
            if offset + 4 + padded > self.buf.len() {
                return Err(ParseError::AttributeOverrun { attr_type, offset });
            }
            match AttrType(attr_type) {
                AttrType::MESSAGE_INTEGRITY
                    if self.integrity.is_none() && self.integrity_sha256.is_none() =>
                {
                    self.integrity = Some(offset);
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if self.integrity_sha256.is_none() => {
                    self.integrity_sha256 = Some(offset);
                }
                AttrType::FINGERPRINT => self.fingerprint = Some(offset),
                _ => {}
            }
            offset += 4 + padded;
        }
        Ok(())
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The message method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..20]);
        TransactionId(id)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The attributes a receiver processes, in order.
    ///
    /// RFC 8489 §14.5/§14.6: attributes after MESSAGE-INTEGRITY are ignored except
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT; after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT
    /// counts. The ignored attributes are not yielded.
    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter {
            buf: self.buf,
            offset: HEADER_LEN,
            seen_mi: false,
            seen_mi256: false,
        }
    }

    /// The first processed attribute of type `t`, raw.
    pub fn raw(&self, t: AttrType) -> Option<RawAttr<'a>> {
        self.attributes().find(|a| a.attr_type == t)
    }

    /// Decodes the first processed attribute of type `A`: `None` when absent.
    pub fn get<A: Attr<'a>>(&self) -> Option<Result<A, AttrError>> {
        let tid = self.transaction_id();
        self.raw(A::TYPE).map(|raw| A::decode(raw.value, &tid))
    }

    /// Decodes every processed attribute of type `A`, in order (for attributes that may repeat,
    /// such as XOR-PEER-ADDRESS in CreatePermission, RFC 8656 §9.1).
    pub fn get_all<A: Attr<'a>>(&self) -> impl Iterator<Item = Result<A, AttrError>> + 'a {
        let tid = self.transaction_id();
        self.attributes()
            .filter(|a| a.attr_type == A::TYPE)
            .map(move |raw| A::decode(raw.value, &tid))
    }

    /// RFC 8489 §14: processed comprehension-required attributes (type < 0x8000) for which `known`
    /// returns false. A server answers those with 420 and UNKNOWN-ATTRIBUTES.
    pub fn unknown_comprehension_required<F>(&self, known: F) -> impl Iterator<Item = AttrType> + 'a
    where
        F: Fn(AttrType) -> bool + 'a,
    {
        self.attributes()
            .map(|a| a.attr_type)
            .filter(move |t| t.is_comprehension_required() && !known(*t))
    }

    /// Whether the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether the message carries MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether the message carries FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// RFC 8489 §14.5: checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key` (see [`integrity`] for
    /// key derivation), in constant time.
    /// `false` when the attribute is absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(offset) = self.integrity else {
            return false;
        };
        // §14.5: the HMAC-SHA1 is exactly 20 bytes; any other length is invalid (and must not
        // be read past: the TLV may be the last bytes of the buffer).
        if self.value_len(offset) != 20 {
            return false;
        }
        let value = &self.buf[offset + 4..offset + 4 + 20];
        let mac = integrity::hmac_sha1(key, self.buf, offset, offset + 24);
        integrity::ct_eq(&mac, value)
    }

    /// RFC 8489 §14.6: checks MESSAGE-INTEGRITY-SHA256 (possibly truncated to 16..=32 bytes)
    /// with `key`, in constant time. `false` when absent or of an invalid length.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(offset) = self.integrity_sha256 else {
            return false;
        };
        let len = self.value_len(offset);
        if !(16..=32).contains(&len) || len % 4 != 0 {
            return false;
        }
        let value = &self.buf[offset + 4..offset + 4 + len];
        let mac = integrity::hmac_sha256(key, self.buf, offset, offset + 4 + len);
        integrity::ct_eq(&mac[..len], value)
    }

    /// RFC 8489 §14.7: checks FINGERPRINT. `false` when absent.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(offset) = self.fingerprint else {
            return false;
        };
        // §14.7: the CRC is exactly 4 bytes.
        if self.value_len(offset) != 4 {
            return false;
        }
        let v = &self.buf[offset + 4..offset + 8];
        let got = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        integrity::crc32_adjusted(self.buf, offset, offset + 8) ^ FINGERPRINT_XOR == got
    }

    /// The value length of the attribute whose TLV header is at `offset` (validated by
    /// [`Message::parse`]: the header and its value are inside `buf`).
    fn value_len(&self, offset: usize) -> usize {
        usize::from(u16::from_be_bytes([
            self.buf[offset + 2],
            self.buf[offset + 3],
        ]))
    }
}

fn tlv_header(buf: &[u8], offset: usize) -> Result<(u16, usize), ParseError> {
    match buf.get(offset..offset + 4) {
        Some(h) => Ok((
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[2], h[3]])),
        )),
        None => Err(ParseError::AttributeOverrun {
            attr_type: 0,
            offset,
        }),
    }
}

/// Iterator over the processed attributes of a parsed [`Message`].
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    offset: usize,
    seen_mi: bool,
    seen_mi256: bool,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttr<'a>;

    fn next(&mut self) -> Option<RawAttr<'a>> {
        loop {
            // Validated by `Message::parse`: every TLV fits inside `buf`.
            let (t, len) = tlv_header(self.buf, self.offset).ok()?;
            let offset = self.offset;
            let value = self.buf.get(offset + 4..offset + 4 + len)?;
            self.offset = offset + 4 + ((len + 3) & !3);
            let attr_type = AttrType(t);
            let ignored = match attr_type {
                AttrType::FINGERPRINT => false,
                AttrType::MESSAGE_INTEGRITY_SHA256 => self.seen_mi256,
                _ => self.seen_mi || self.seen_mi256,
            };
            match attr_type {
                AttrType::MESSAGE_INTEGRITY => self.seen_mi = true,
                AttrType::MESSAGE_INTEGRITY_SHA256 => self.seen_mi256 = true,
                _ => {}
            }
            if !ignored {
                return Some(RawAttr {
                    attr_type,
                    value,
                    offset,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_all_methods_and_classes() {
        for m in 0..=0x0FFF {
            for class in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let method = Method(m);
                let t = message_type(class, method);
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_message_type(t), (class, method));
            }
        }
    }

    #[test]
    fn known_message_types() {
        assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(
            message_type(Class::SuccessResponse, Method::BINDING),
            0x0101
        );
        assert_eq!(message_type(Class::ErrorResponse, Method::BINDING), 0x0111);
        assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
        assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
        assert_eq!(message_type(Class::Request, Method::ALLOCATE), 0x0003);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Message::parse(&[0; 4]).err(), Some(ParseError::TooShort(4)));
        let mut m = [0u8; 20];
        m[1] = 1;
        assert_eq!(Message::parse(&m).err(), Some(ParseError::BadMagicCookie));
        m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(Message::parse(&m).is_ok());
        m[0] = 0x40;
        assert_eq!(Message::parse(&m).err(), Some(ParseError::NotStun));
        m[0] = 0;
        m[3] = 2;
        assert_eq!(
            Message::parse(&m).err(),
            Some(ParseError::UnalignedLength(2))
        );
        m[3] = 4;
        assert!(matches!(
            Message::parse(&m),
            Err(ParseError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn rejects_attribute_overrun() {
        let mut m = vec![0u8; 28];
        m[1] = 1;
        m[3] = 8;
        m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m[20..24].copy_from_slice(&[0x80, 0x22, 0x00, 0x05]); // SOFTWARE, 5 bytes -> 8 padded
        assert!(matches!(
            Message::parse(&m),
            Err(ParseError::AttributeOverrun { .. })
        ));
        m[23] = 4;
        assert!(Message::parse(&m).is_ok());
    }
}
