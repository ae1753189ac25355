//! TURN ChannelData messages (RFC 8656 §12.4).
//!
//! A 4-byte header (channel number, length) then the application data. Over UDP the datagram
//! may carry padding after the data; over TCP and TLS every ChannelData message is padded to a
//! multiple of 4 bytes (§12.5), which [`ChannelData::frame_len`] accounts for.

use core::fmt;

use crate::error::BuildError;

/// RFC 8656 §12: the first valid channel number.
pub const MIN_CHANNEL: u16 = 0x4000;
/// The last channel number accepted: RFC 8656 §12 has clients pick from 0x4000–0x4FFF, but
/// RFC 5766 allowed up to 0x7FFF and clients still use it (coturn's `turnutils_uclient` does), so
/// a server accepts the old range. RFC 7983's demultiplexer still tells STUN, ChannelData and
/// DTLS apart: 0x50–0x7F were unassigned there.
pub const MAX_CHANNEL: u16 = 0x7FFF;
/// RFC 8656 §12: the last channel number a client should pick.
pub const MAX_CHANNEL_RFC8656: u16 = 0x4FFF;
/// Size of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("ChannelData shorter than its header")]
    TooShort,
    /// The channel number is outside 0x4000..=0x7FFF.
    #[error("channel number 0x{0:04x} outside 0x4000..=0x7FFF")]
    InvalidChannel(u16),
    /// The length field runs past the end of the buffer.
    #[error("ChannelData length {length} exceeds the {available} bytes available")]
    Truncated {
        /// Length from the header.
        length: usize,
        /// Bytes after the header.
        available: usize,
    },
}

/// A borrowed ChannelData message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number.
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl fmt::Debug for ChannelData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelData")
            .field("channel", &format_args!("0x{:04x}", self.channel))
            .field("len", &self.data.len())
            .finish()
    }
}

/// Whether `channel` is a valid channel number (RFC 8656 §12).
pub fn is_valid_channel(channel: u16) -> bool {
    (MIN_CHANNEL..=MAX_CHANNEL).contains(&channel)
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message at the start of `buf`; bytes after the data (padding) are
    /// ignored, as §12.5 allows over UDP.
    pub fn parse(buf: &'a [u8]) -> Result<ChannelData<'a>, ChannelDataError> {
        if buf.len() < HEADER_LEN {
            return Err(ChannelDataError::TooShort);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !is_valid_channel(channel) {
            return Err(ChannelDataError::InvalidChannel(channel));
        }
        let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf
            .get(HEADER_LEN..HEADER_LEN + length)
            .ok_or(ChannelDataError::Truncated {
                length,
                available: buf.len() - HEADER_LEN,
            })?;
        Ok(ChannelData { channel, data })
    }

    /// Over a stream transport: the length of the padded frame at the start of `buf`, once its
    /// 4-byte header is there (§12.5). `None` with fewer than 4 bytes.
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let header = buf.get(..HEADER_LEN)?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        Some(HEADER_LEN + ((length + 3) & !3))
    }

    /// Writes a ChannelData message into `out`, padded to 4 bytes when `pad` (stream
    /// transports); returns its length.
    pub fn encode(
        channel: u16,
        data: &[u8],
        pad: bool,
        out: &mut [u8],
    ) -> Result<usize, BuildError> {
        let length = u16::try_from(data.len()).map_err(|_| BuildError::TooLong)?;
        let end = HEADER_LEN + data.len();
        let total = if pad { (end + 3) & !3 } else { end };
        if out.len() < total {
            return Err(BuildError::BufferTooSmall {
                needed: total,
                available: out.len(),
            });
        }
        out[0..2].copy_from_slice(&channel.to_be_bytes());
        out[2..4].copy_from_slice(&length.to_be_bytes());
        out[HEADER_LEN..end].copy_from_slice(data);
        out[end..total].fill(0);
        Ok(total)
    }

    /// Writes just the 4-byte header for `len` bytes of data that the caller placed (or will
    /// place) right after it: lets a relay receive into `buf[4..]` and send `buf[..4 + len]`
    /// without copying.
    pub fn write_header(channel: u16, len: u16, out: &mut [u8; HEADER_LEN]) {
        out[0..2].copy_from_slice(&channel.to_be_bytes());
        out[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_padding() {
        let mut buf = [0u8; 16];
        let n = ChannelData::encode(0x4001, b"hello", false, &mut buf).unwrap();
        assert_eq!(n, 9);
        let n_pad = ChannelData::encode(0x4001, b"hello", true, &mut buf).unwrap();
        assert_eq!(n_pad, 12);
        assert_eq!(&buf[9..12], &[0, 0, 0]);
        assert_eq!(ChannelData::frame_len(&buf), Some(12));
        let cd = ChannelData::parse(&buf[..n_pad]).unwrap();
        assert_eq!(cd.channel, 0x4001);
        assert_eq!(cd.data, b"hello");
    }

    #[test]
    fn rejects_invalid() {
        assert_eq!(ChannelData::parse(&[0x40]), Err(ChannelDataError::TooShort));
        assert_eq!(
            ChannelData::parse(&[0x80, 0, 0, 0]),
            Err(ChannelDataError::InvalidChannel(0x8000))
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 2, 1]),
            Err(ChannelDataError::Truncated {
                length: 2,
                available: 1
            })
        );
        let mut small = [0u8; 6];
        assert!(ChannelData::encode(0x4000, b"abc", false, &mut small).is_err());
    }
}
