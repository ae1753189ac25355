//! Framing of a TCP or TLS byte stream into STUN messages and ChannelData messages
//! (RFC 8489 §6.2.2, RFC 8656 §12.5, RFC 6062), for both ends: a TURN client reading its server
//! and a TURN server reading its clients.

use crate::{ChannelData, Message};

/// The longest frame a stream can carry: a STUN message's 20-byte header plus the largest 16-bit
/// length. (A ChannelData frame is at most 4 + 65 535 bytes, padded to 65 540.) Both length
/// fields are 16 bits, so no announced frame is longer and a decoder never buffers more than
/// one frame plus the last [`StreamDecoder::push`].
pub const MAX_FRAME_LEN: usize = crate::HEADER_LEN + u16::MAX as usize;

/// The stream is corrupt or speaks another protocol.
///
/// RFC 8656 §12.5 (with RFC 7983): over TCP and TLS every frame is a STUN message (first byte
/// 0–3) or a ChannelData message (first byte 0x40–0x7F). Anything else means the stream lost
/// its framing, and there is no way to resynchronise: close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A frame would start with this byte.
    #[error("stream byte 0x{0:02x} starts neither a STUN message nor ChannelData")]
    Desync(u8),
    /// The stream's first frame is not a STUN message (see [`StreamDecoder::stun_first`]); its
    /// first byte.
    #[error("stream starts with byte 0x{0:02x}, not a STUN message")]
    NotStunFirst(u8),
}

/// Reassembles complete frames from the bytes of a TCP or TLS stream.
///
/// Push what the socket returned with [`StreamDecoder::push`], then call
/// [`StreamDecoder::next_frame`] until it returns `Ok(None)`; hand every frame to the state
/// machine. A STUN frame is its 20-byte header plus its length (RFC 8489 §6.2.2); a ChannelData
/// frame is its 4-byte header plus its length rounded up to a multiple of 4 (RFC 8656 §12.5),
/// padding included. No frame is longer than [`MAX_FRAME_LEN`].
///
/// The buffer is kept between pushes, so a long-lived stream reuses it without allocating.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// Length of the frame the last `next_frame` returned; consumed at the next call.
    handed_out: usize,
    /// The first frame must be a STUN message ([`StreamDecoder::stun_first`]).
    stun_first: bool,
    /// A frame was handed out.
    started: bool,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty decoder for a stream whose first frame must be a STUN message: a TURN server
    /// reading a client, whose first frame is a request (Allocate, Binding, ConnectionBind),
    /// since ChannelData needs a channel bound by an earlier request (RFC 8656 §12). This closes
    /// a connection that speaks another protocol at its first byte: "GET / HTTP/1.1" would
    /// otherwise read as a ChannelData header announcing 21 536 bytes and hold the connection
    /// until it is idle.
    pub fn stun_first() -> Self {
        StreamDecoder {
            stun_first: true,
            ..Self::default()
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.consume();
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. The frame stays valid
    /// until the next call on the decoder. An error is reported as soon as a frame's first byte
    /// is there, before the rest of the frame.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        self.consume();
        let avail = &self.buf[self.start..];
        let Some(&first) = avail.first() else {
            return Ok(None);
        };
        let len = match first {
            0x00..=0x03 => Message::frame_len(avail),
            0x40..=0x7F if self.stun_first && !self.started => {
                return Err(FramingError::NotStunFirst(first))
            }
            0x40..=0x7F => ChannelData::frame_len(avail),
            other => return Err(FramingError::Desync(other)),
        };
        match len {
            Some(len) if avail.len() >= len => {
                self.handed_out = len;
                self.started = true;
                Ok(Some(&self.buf[self.start..self.start + len]))
            }
            _ => Ok(None),
        }
    }

    /// Bytes buffered that are not part of a frame handed out yet.
    pub fn buffered(&self) -> usize {
        self.remaining().len()
    }

    /// The bytes buffered after the last frame handed out: what the stream carries once it stops
    /// being framed (RFC 6062 §5.4: after ConnectionBind, the data connection's bytes are the
    /// peer's).
    pub fn remaining(&self) -> &[u8] {
        &self.buf[self.start + self.handed_out..]
    }

    fn consume(&mut self) {
        self.start += self.handed_out;
        self.handed_out = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_frames_fed_byte_by_byte() {
        // A ChannelData frame of 5 bytes padded to 8, then a 20-byte STUN header.
        let mut stream = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        stream.extend_from_slice(&[0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
        stream.extend_from_slice(&[7; 12]);
        let mut d = StreamDecoder::new();
        let mut frames = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().expect("in sync") {
                frames.push(f.to_vec());
            }
        }
        assert_eq!(frames, vec![stream[..12].to_vec(), stream[12..].to_vec()]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn reports_a_corrupt_stream() {
        let mut d = StreamDecoder::new();
        d.push(&[0x80, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FramingError::Desync(0x80)));
    }

    #[test]
    fn reports_a_corrupt_byte_before_the_frame_is_complete() {
        let mut d = StreamDecoder::new();
        d.push(&[0xC0]);
        assert_eq!(d.next_frame(), Err(FramingError::Desync(0xC0)));
    }

    #[test]
    fn stun_first_refuses_a_stream_that_starts_like_channel_data() {
        // "GET / HTTP/1.1": 'G' (0x47) reads as a ChannelData channel number.
        let mut d = StreamDecoder::stun_first();
        d.push(b"G");
        assert_eq!(d.next_frame(), Err(FramingError::NotStunFirst(b'G')));
    }

    #[test]
    fn stun_first_takes_channel_data_after_a_stun_message() {
        let mut stream = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        stream.extend_from_slice(&[9; 12]);
        stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x01, 0xAB, 0, 0, 0]);
        let mut d = StreamDecoder::stun_first();
        d.push(&stream);
        assert_eq!(d.next_frame().unwrap(), Some(&stream[..20]));
        assert_eq!(d.next_frame().unwrap(), Some(&stream[20..]));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn remaining_is_what_follows_the_last_frame() {
        let mut stream = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        stream.extend_from_slice(&[9; 12]);
        stream.extend_from_slice(b"peer bytes");
        let mut d = StreamDecoder::new();
        d.push(&stream);
        assert_eq!(d.next_frame().unwrap(), Some(&stream[..20]));
        assert_eq!(d.remaining(), b"peer bytes");
        assert_eq!(d.buffered(), 10);
    }

    #[test]
    fn the_longest_frames_fit_max_frame_len() {
        let mut stun = vec![0x00, 0x01, 0xFF, 0xFF];
        stun.resize(MAX_FRAME_LEN, 0);
        let mut channel = vec![0x7F, 0xFF, 0xFF, 0xFF];
        channel.resize(4 + 65_536, 0);
        for frame in [stun, channel] {
            let mut d = StreamDecoder::new();
            d.push(&frame[..frame.len() - 1]);
            assert_eq!(d.next_frame().unwrap(), None);
            d.push(&frame[frame.len() - 1..]);
            let got = d.next_frame().unwrap().expect("complete");
            assert_eq!(got.len(), frame.len());
            assert!(got.len() <= MAX_FRAME_LEN);
        }
    }
}
