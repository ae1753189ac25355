//! Framing of a TCP or TLS byte stream from a TURN server into STUN messages and ChannelData
//! messages (RFC 8489 §6.2.2, RFC 8656 §12.5).

use floe_stun::{ChannelData, Message};

/// The stream is corrupt: a frame cannot start with this byte.
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
}

/// Reassembles complete frames from the bytes of a TCP or TLS stream.
///
/// Push what the socket returned with [`StreamDecoder::push`], then call
/// [`StreamDecoder::next_frame`] until it returns `Ok(None)`; hand every frame to
/// [`super::TurnClient::handle_input`]. A STUN frame is its 20-byte header plus its length
/// (RFC 8489 §6.2.2); a ChannelData frame is its 4-byte header plus its length rounded up to a
/// multiple of 4 (RFC 8656 §12.5), padding included.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// Length of the frame the last `next_frame` returned; consumed at the next call.
    handed_out: usize,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
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
    /// until the next call on the decoder.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        self.consume();
        let avail = &self.buf[self.start..];
        let Some(&first) = avail.first() else {
            return Ok(None);
        };
        let len = match first {
            0x00..=0x03 => Message::frame_len(avail),
            0x40..=0x7F => ChannelData::frame_len(avail),
            other => return Err(FramingError::Desync(other)),
        };
        match len {
            Some(len) if avail.len() >= len => {
                self.handed_out = len;
                Ok(Some(&self.buf[self.start..self.start + len]))
            }
            _ => Ok(None),
        }
    }

    /// Bytes buffered that are not part of a frame handed out yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start - self.handed_out
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
}
