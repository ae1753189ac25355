//! Building STUN messages into a caller-supplied buffer (RFC 8489 §5, §14).

use crate::attr::{Attr, AttrType, Attribute};
use crate::error::BuildError;
use crate::integrity;
use crate::message::{message_type, Class, Method, TransactionId};
use crate::{FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE};

/// Writes a STUN message into a borrowed buffer without allocating.
///
/// The header length is kept current after every attribute, so [`MessageBuilder::finish`] only
/// returns the length. Integrity and fingerprint attributes are computed over what precedes
/// them, as RFC 8489 §14.5–§14.7 require; add them last (in that order).
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
    sealed: bool,
    padding: u8,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message of `class` and `method` with transaction id `tid` in `buf`.
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        tid: TransactionId,
    ) -> Result<Self, BuildError> {
        if buf.len() < HEADER_LEN {
            return Err(BuildError::BufferTooSmall {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        buf[0..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        buf[2..4].fill(0);
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(tid.as_bytes());
        Ok(MessageBuilder {
            buf,
            len: HEADER_LEN,
            tid,
            sealed: false,
            padding: 0,
        })
    }

    /// The transaction id of the message being built.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Sets the byte written into attribute padding from now on (default 0x00).
    ///
    /// RFC 8489 §14: padding bytes may be any value and receivers ignore them, but they are
    /// covered by MESSAGE-INTEGRITY and FINGERPRINT. Some senders pad with spaces (the RFC 5769
    /// test vectors pad with 0x20); this reproduces such messages byte for byte.
    pub fn set_padding_byte(&mut self, byte: u8) {
        self.padding = byte;
    }

    /// Appends a typed attribute.
    pub fn add<'a, A: Attr<'a>>(&mut self, attr: &A) -> Result<(), BuildError> {
        let tid = self.tid;
        let value = self.reserve(A::TYPE, attr.encoded_len())?;
        attr.encode(value, &tid);
        Ok(())
    }

    /// Appends any [`Attribute`].
    pub fn add_attribute(&mut self, attr: &Attribute<'_>) -> Result<(), BuildError> {
        let tid = self.tid;
        let value = self.reserve(attr.attr_type(), attr.encoded_len())?;
        attr.encode(value, &tid);
        Ok(())
    }

    /// Appends an attribute from its raw value.
    pub fn add_raw(&mut self, attr_type: AttrType, value: &[u8]) -> Result<(), BuildError> {
        self.reserve(attr_type, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// RFC 8489 §14.5: appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), BuildError> {
        let offset = self.len;
        self.reserve(AttrType::MESSAGE_INTEGRITY, 20)?;
        let mac = integrity::hmac_sha1(key, self.buf, offset, offset + 24);
        self.buf[offset + 4..offset + 24].copy_from_slice(&mac);
        Ok(())
    }

    /// RFC 8489 §14.6: appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes, HMAC-SHA256 with `key`).
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), BuildError> {
        let offset = self.len;
        self.reserve(AttrType::MESSAGE_INTEGRITY_SHA256, 32)?;
        let mac = integrity::hmac_sha256(key, self.buf, offset, offset + 36);
        self.buf[offset + 4..offset + 36].copy_from_slice(&mac);
        Ok(())
    }

    /// RFC 8489 §14.7: appends FINGERPRINT; nothing can be added after it.
    pub fn add_fingerprint(&mut self) -> Result<(), BuildError> {
        let offset = self.len;
        self.reserve(AttrType::FINGERPRINT, 4)?;
        let crc = integrity::crc32_adjusted(self.buf, offset, offset + 8) ^ FINGERPRINT_XOR;
        self.buf[offset + 4..offset + 8].copy_from_slice(&crc.to_be_bytes());
        self.sealed = true;
        Ok(())
    }

    /// Length of the message so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Finishes the message and returns its length: the message is `buf[..len]`.
    pub fn finish(self) -> usize {
        self.len
    }

    /// Reserves a TLV with a `value_len` value, zeroes its padding, updates the header length and
    /// returns the value slice to fill.
    fn reserve(&mut self, attr_type: AttrType, value_len: usize) -> Result<&mut [u8], BuildError> {
        if self.sealed {
            return Err(BuildError::AfterFingerprint);
        }
        let wire_len =
            u16::try_from(value_len).map_err(|_| BuildError::InvalidAttribute(attr_type.0))?;
        let padded = (value_len + 3) & !3;
        let end = self.len + 4 + padded;
        let total = u16::try_from(end - HEADER_LEN).map_err(|_| BuildError::TooLong)?;
        if end > self.buf.len() {
            return Err(BuildError::BufferTooSmall {
                needed: end,
                available: self.buf.len(),
            });
        }
        let start = self.len;
        self.buf[start..start + 2].copy_from_slice(&attr_type.0.to_be_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&wire_len.to_be_bytes());
        self.buf[start + 4 + value_len..end].fill(self.padding);
        self.buf[2..4].copy_from_slice(&total.to_be_bytes());
        self.len = end;
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }
}
