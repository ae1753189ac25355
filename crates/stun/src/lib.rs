//! floe-stun: a zero-copy STUN and TURN message codec.
//!
//! * [`Message`] parses and validates a message over a borrowed `&[u8]` without allocating
//!   (RFC 8489 §5, §14); attributes are decoded lazily as typed values ([`attr`]).
//! * [`MessageBuilder`] writes a message into a caller-supplied buffer, with
//!   MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT ([`integrity`]).
//! * [`channel_data`] frames TURN ChannelData (RFC 8656 §12.4) and [`demux`] classifies a packet by
//!   its first byte (RFC 7983).
//! * [`StreamDecoder`] splits a TCP/TLS byte stream into STUN and ChannelData frames
//!   (RFC 8656 §12.5), for TURN clients and servers alike ([`stream`]).
//!
//! The crate has no IO, no clock and no state: it is safe to call from any thread and it never
//! panics on malformed input, which is fuzzed (`fuzz/`).

pub mod attr;
mod builder;
pub mod channel_data;
pub mod demux;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod integrity;
mod message;
pub mod stream;

pub use attr::{Attr, AttrType, Attribute};
pub use builder::MessageBuilder;
pub use channel_data::ChannelData;
pub use error::{AttrError, BuildError, ParseError};
pub use message::{AttrIter, Class, Message, Method, RawAttr, TransactionId};
pub use stream::{FramingError, StreamDecoder};

/// RFC 8489 §5: the fixed magic cookie in every STUN header.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// RFC 8489 §5: size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// RFC 8489 §14.7: the value XORed into the CRC-32 of FINGERPRINT.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
