//! Telling protocols apart by the first byte of a packet (RFC 7983 §7, RFC 8656 §12.5).

/// What a packet or stream starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// First byte 0–3: a STUN message.
    Stun,
    /// First byte 16–19: ZRTP.
    Zrtp,
    /// First byte 20–63 on a datagram transport: DTLS.
    Dtls,
    /// A TLS handshake record (0x16 0x03) at the start of a stream: TLS.
    Tls,
    /// First byte 64–127: TURN ChannelData (RFC 7983 assigns 64–79; RFC 5766 channel numbers
    /// reach 0x7FFF, and 80–127 are otherwise unassigned).
    ChannelData,
    /// First byte 128–191: RTP or RTCP.
    Rtp,
    /// Anything else (or empty input).
    Other,
}

/// RFC 7983 §7: classifies a datagram by its first byte.
pub fn classify_datagram(packet: &[u8]) -> Kind {
    match packet.first() {
        Some(0..=3) => Kind::Stun,
        Some(16..=19) => Kind::Zrtp,
        Some(20..=63) => Kind::Dtls,
        Some(64..=127) => Kind::ChannelData,
        Some(128..=191) => Kind::Rtp,
        _ => Kind::Other,
    }
}

/// Classifies the start of a TCP stream, so one port can serve STUN/TURN over TCP and over TLS:
/// a TLS ClientHello record starts with content type 22 and major version 3.
pub fn classify_stream(start: &[u8]) -> Kind {
    match start {
        [0x16, 0x03, ..] => Kind::Tls,
        [0..=3, ..] => Kind::Stun,
        [64..=127, ..] => Kind::ChannelData,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify_datagram(&[0x00, 0x01]), Kind::Stun);
        assert_eq!(classify_datagram(&[0x40, 0x00]), Kind::ChannelData);
        assert_eq!(classify_datagram(&[0x4F]), Kind::ChannelData);
        assert_eq!(classify_datagram(&[0x16, 0xfe]), Kind::Dtls);
        assert_eq!(classify_datagram(&[0x80]), Kind::Rtp);
        assert_eq!(classify_datagram(&[0x10]), Kind::Zrtp);
        assert_eq!(classify_datagram(&[]), Kind::Other);
        assert_eq!(classify_datagram(&[0xff]), Kind::Other);
        assert_eq!(classify_stream(&[0x16, 0x03, 0x01]), Kind::Tls);
        assert_eq!(classify_stream(&[0x00, 0x03]), Kind::Stun);
        assert_eq!(classify_stream(&[0x40, 0x00]), Kind::ChannelData);
        assert_eq!(classify_stream(&[0x47]), Kind::ChannelData);
        // HTTP methods start with ASCII letters, which fall in the ChannelData range: a TURN
        // port is no place to share with HTTP.
        assert_eq!(classify_stream(b"POST /"), Kind::ChannelData);
        assert_eq!(classify_stream(&[0xff, 0x00]), Kind::Other);
    }
}
