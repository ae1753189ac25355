//! Checks shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/corpus.rs`), so the committed corpus is exercised by `cargo test` on stable, without
//! cargo-fuzz. Not part of the supported API.
//!
//! Each function takes arbitrary bytes, must never panic on any input, and panics (with an
//! assertion message) only when it finds a codec bug: a round trip that changes a value, a
//! verification that passes on tampered bytes or fails on a correct message.

use crate::attr::{
    AdditionalAddressFamily, AddressErrorCode, AlternateDomain, AlternateServer, ChangeRequest,
    ChannelNumber, ConnectionId, Data, DontFragment, ErrorCode, EvenPort, Family, IceControlled,
    IceControlling, Icmp, Lifetime, MappedAddress, MobilityTicket, Nonce, OtherAddress, Padding,
    PasswordAlgorithm, PasswordAlgorithms, Priority, Realm, RequestedAddressFamily,
    RequestedTransport, ReservationToken, ResponseOrigin, ResponsePort, Software,
    UnknownAttributes, UseCandidate, Userhash, Username, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
use crate::channel_data::{is_valid_channel, ChannelData};
use crate::demux::{self, Kind};
use crate::{integrity, Attr, AttrType, Attribute, Class, Message, MessageBuilder, Method};
use crate::{TransactionId, FINGERPRINT_XOR};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The key the checks verify MESSAGE-INTEGRITY(-SHA256) with.
pub const FUZZ_KEY: &[u8] = b"floe-fuzz-key";

/// Parses `data` as a STUN message; when it parses, decodes and re-encodes every attribute,
/// verifies integrity and fingerprint with [`FUZZ_KEY`], and checks that recomputing each
/// checksum in place makes it verify.
///
/// Most mutations break the exact header length (and the cookie), which the parser rejects up
/// front; so the same checks also run on a copy whose header is repaired (length = the bytes
/// that follow, rounded down to 4; magic cookie; top bits clear), which lets the fuzzer reach
/// the attribute code with every input.
pub fn check_message(data: &[u8]) {
    check_message_as_is(data);
    if data.len() >= crate::HEADER_LEN {
        let body = (data.len() - crate::HEADER_LEN).min(0xFFFC) & !3;
        let mut m = data[..crate::HEADER_LEN + body].to_vec();
        m[0] &= 0x3F;
        m[2..4].copy_from_slice(&u16::try_from(body).unwrap_or(0).to_be_bytes());
        m[4..8].copy_from_slice(&crate::MAGIC_COOKIE.to_be_bytes());
        check_message_as_is(&m);
    }
}

fn check_message_as_is(data: &[u8]) {
    let _ = Message::frame_len(data);
    let _ = demux::classify_datagram(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert_eq!(Message::frame_len(data), Some(data.len()));
    // RFC 7983 classifies first bytes 0–3 as STUN: every method below 0x100. Larger methods
    // parse but are left to the caller to route.
    if data[0] <= 3 {
        assert_eq!(demux::classify_datagram(data), Kind::Stun);
    }
    let tid = msg.transaction_id();
    for raw in msg.attributes() {
        assert!(raw.offset + 4 + raw.value.len() <= data.len());
        let _ = Attribute::decode(raw.attr_type, raw.value, &tid);
    }
    let _ = msg
        .unknown_comprehension_required(AttrType::is_known)
        .count();
    let _ = msg.get::<XorMappedAddress>();
    let _ = msg.get_all::<XorPeerAddress>().count();
    assert_eq!(
        msg.has_integrity(),
        msg.raw(AttrType::MESSAGE_INTEGRITY).is_some()
    );
    assert_eq!(
        msg.has_integrity_sha256(),
        msg.raw(AttrType::MESSAGE_INTEGRITY_SHA256).is_some()
    );
    assert_eq!(
        msg.has_fingerprint(),
        msg.raw(AttrType::FINGERPRINT).is_some()
    );
    let _ = msg.verify_integrity(FUZZ_KEY);
    let _ = msg.verify_integrity_sha256(FUZZ_KEY);
    let _ = msg.verify_fingerprint();
    check_reencode(&msg);
    check_recomputed_checksums(&msg);
}

/// Parses `data` as TURN ChannelData and, when it parses, checks the encode round trip.
pub fn check_channel_data(data: &[u8]) {
    let _ = demux::classify_stream(data);
    let _ = ChannelData::frame_len(data);
    let Ok(cd) = ChannelData::parse(data) else {
        return;
    };
    assert!(is_valid_channel(cd.channel));
    assert_eq!(demux::classify_datagram(data), Kind::ChannelData);
    assert_eq!(cd.data, &data[4..4 + cd.data.len()]);
    let mut out = vec![0u8; cd.data.len() + 8];
    let n = ChannelData::encode(cd.channel, cd.data, false, &mut out).expect("fits");
    assert_eq!(&out[..n], &data[..n]);
    let padded = ChannelData::encode(cd.channel, cd.data, true, &mut out).expect("fits");
    assert_eq!(padded % 4, 0);
    assert_eq!(ChannelData::frame_len(&out), Some(padded));
    assert_eq!(ChannelData::parse(&out[..padded]), Ok(cd));
}

/// Interprets `data` as a recipe for a message (class, method, transaction id, a list of typed
/// attributes, optional MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT), builds it,
/// parses it back and checks every value, then flips one byte and checks that exactly the
/// checksums covering that byte fail.
pub fn check_build_roundtrip(data: &[u8]) {
    let mut src = Source(data);
    let class = [
        Class::Request,
        Class::Indication,
        Class::SuccessResponse,
        Class::ErrorResponse,
    ][usize::from(src.u8() & 3)];
    let Some(method) = Method::new(src.u16() & 0x0FFF) else {
        return;
    };
    let tid = TransactionId(src.array());
    let flags = src.u8();
    let padding = src.u8();
    let flip_at = usize::from(src.u16());
    let flip_mask = src.u8() | 1;

    let mut attrs: Vec<Attribute<'_>> = Vec::new();
    while !src.0.is_empty() && attrs.len() < 24 {
        if let Some(a) = next_attribute(&mut src) {
            attrs.push(a);
        }
    }

    let mut buf = vec![0u8; 16 * 1024];
    let mut b = MessageBuilder::new(&mut buf, class, method, tid).expect("header fits");
    b.set_padding_byte(padding);
    let mut added = Vec::new();
    for a in attrs {
        if b.add_attribute(&a).is_ok() {
            added.push(a);
        }
    }
    let mi = flags & 1 != 0 && b.add_message_integrity(FUZZ_KEY).is_ok();
    let mi_end = b.len();
    let mi256 = flags & 2 != 0 && b.add_message_integrity_sha256(FUZZ_KEY).is_ok();
    let mi256_end = b.len();
    let fp = flags & 4 != 0 && b.add_fingerprint().is_ok();
    let n = b.finish();
    let bytes = &buf[..n];

    let msg = Message::parse(bytes).expect("a built message parses");
    assert_eq!((msg.class(), msg.method()), (class, method));
    assert_eq!(msg.transaction_id(), tid);
    let mut raws = msg.attributes();
    for expected in &added {
        let raw = raws.next().expect("every added attribute is there");
        assert_eq!(raw.attr_type, expected.attr_type());
        let got = Attribute::decode(raw.attr_type, raw.value, &tid);
        assert_eq!(
            got.as_ref(),
            Ok(expected),
            "round trip of {:?}",
            raw.attr_type
        );
    }
    let trailer: Vec<AttrType> = raws.map(|r| r.attr_type).collect();
    let expected_trailer: Vec<AttrType> = [
        (mi, AttrType::MESSAGE_INTEGRITY),
        (mi256, AttrType::MESSAGE_INTEGRITY_SHA256),
        (fp, AttrType::FINGERPRINT),
    ]
    .iter()
    .filter(|(present, _)| *present)
    .map(|(_, t)| *t)
    .collect();
    assert_eq!(trailer, expected_trailer);
    assert_eq!(msg.verify_integrity(FUZZ_KEY), mi);
    assert_eq!(msg.verify_integrity_sha256(FUZZ_KEY), mi256);
    assert_eq!(msg.verify_fingerprint(), fp);
    if mi || mi256 {
        assert!(!msg.verify_integrity(b"wrong key") && !msg.verify_integrity_sha256(b"wrong key"));
    }

    // One flipped byte: a checksum fails exactly when it covers the byte.
    let at = flip_at % n;
    let mut tampered = bytes.to_vec();
    tampered[at] ^= flip_mask;
    if let Ok(t) = Message::parse(&tampered) {
        if mi {
            assert_eq!(
                t.verify_integrity(FUZZ_KEY),
                at >= mi_end,
                "MI, flip at {at}"
            );
        }
        if mi256 {
            assert_eq!(
                t.verify_integrity_sha256(FUZZ_KEY),
                at >= mi256_end,
                "MI-SHA256, flip at {at}"
            );
        }
        if fp {
            assert!(!t.verify_fingerprint(), "FINGERPRINT, flip at {at}");
        }
    }
}

/// Every decodable processed attribute, re-encoded into a fresh message, decodes to the same
/// value.
fn check_reencode(msg: &Message<'_>) {
    let tid = msg.transaction_id();
    let mut buf = vec![0u8; msg.as_bytes().len().max(crate::HEADER_LEN)];
    let mut b = MessageBuilder::new(&mut buf, msg.class(), msg.method(), tid).expect("fits");
    let mut decoded = Vec::new();
    for raw in msg.attributes() {
        if matches!(
            raw.attr_type,
            AttrType::MESSAGE_INTEGRITY
                | AttrType::MESSAGE_INTEGRITY_SHA256
                | AttrType::FINGERPRINT
        ) {
            continue;
        }
        if let Ok(a) = Attribute::decode(raw.attr_type, raw.value, &tid) {
            // Re-encoding never needs more room than the original value took.
            b.add_attribute(&a).expect("a decoded attribute re-encodes");
            decoded.push(a);
        }
    }
    let n = b.finish();
    let again = Message::parse(&buf[..n]).expect("the re-encoded message parses");
    let redecoded: Vec<_> = again
        .attributes()
        .map(|raw| Attribute::decode(raw.attr_type, raw.value, &tid))
        .collect();
    let decoded: Vec<_> = decoded.into_iter().map(Ok).collect();
    assert_eq!(redecoded, decoded);
}

/// Recomputing MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT in place (when the
/// attribute has a valid length) makes exactly that check pass.
fn check_recomputed_checksums(msg: &Message<'_>) {
    let bytes = msg.as_bytes();
    if let Some(raw) = msg.raw(AttrType::MESSAGE_INTEGRITY) {
        if raw.value.len() == 20 {
            let mut m = bytes.to_vec();
            let mac = integrity::hmac_sha1(FUZZ_KEY, &m, raw.offset, raw.offset + 24);
            m[raw.offset + 4..raw.offset + 24].copy_from_slice(&mac);
            let fixed = Message::parse(&m).expect("same structure");
            assert!(fixed.verify_integrity(FUZZ_KEY));
        }
    }
    if let Some(raw) = msg.raw(AttrType::MESSAGE_INTEGRITY_SHA256) {
        let len = raw.value.len();
        if (16..=32).contains(&len) && len % 4 == 0 {
            let mut m = bytes.to_vec();
            let end = raw.offset + 4 + len;
            let mac = integrity::hmac_sha256(FUZZ_KEY, &m, raw.offset, end);
            m[raw.offset + 4..end].copy_from_slice(&mac[..len]);
            let fixed = Message::parse(&m).expect("same structure");
            assert!(fixed.verify_integrity_sha256(FUZZ_KEY));
        }
    }
    if let Some(raw) = msg.raw(AttrType::FINGERPRINT) {
        if raw.value.len() == 4 {
            let mut m = bytes.to_vec();
            let crc = integrity::crc32_adjusted(&m, raw.offset, raw.offset + 8) ^ FINGERPRINT_XOR;
            m[raw.offset + 4..raw.offset + 8].copy_from_slice(&crc.to_be_bytes());
            let fixed = Message::parse(&m).expect("same structure");
            assert!(fixed.verify_fingerprint());
        }
    }
}

/// A cursor that hands out bytes and then zeros once exhausted.
struct Source<'a>(&'a [u8]);

impl<'a> Source<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.iter_mut().for_each(|b| *b = self.u8());
        out
    }

    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u8()).min(max).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn fixed<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(head)
    }

    /// Valid UTF-8 of at most `max_chars` characters.
    fn text(&mut self, max_chars: usize) -> &'a str {
        let bytes = self.bytes(255);
        let s = match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        };
        match s.char_indices().nth(max_chars) {
            Some((i, _)) => &s[..i],
            None => s,
        }
    }

    fn addr(&mut self) -> SocketAddr {
        let ip = if self.u8() & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.u32()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()))
        };
        SocketAddr::new(ip, self.u16())
    }

    fn family(&mut self) -> Family {
        if self.u8() & 1 == 0 {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn error_code(&mut self) -> u16 {
        300 + self.u16() % 400
    }
}

/// One typed attribute drawn from `src` (every type the codec knows, plus unknown ones), or
/// `None` when the bytes do not make a valid value of the chosen type.
fn next_attribute<'a>(src: &mut Source<'a>) -> Option<Attribute<'a>> {
    Some(match src.u8() % 40 {
        0 => Attribute::MappedAddress(MappedAddress(src.addr())),
        1 => Attribute::XorMappedAddress(XorMappedAddress(src.addr())),
        2 => Attribute::Username(Username(src.text(512))),
        3 => Attribute::Userhash(Userhash(src.fixed::<32>()?)),
        4 => Attribute::ErrorCode(ErrorCode {
            code: src.error_code(),
            reason: src.text(127),
        }),
        5 => Attribute::Realm(Realm(src.text(127))),
        6 => Attribute::Nonce(Nonce(src.text(127))),
        7 => {
            let wire = src.bytes(64);
            PasswordAlgorithms::decode(wire, &TransactionId::default()).ok()?;
            Attribute::PasswordAlgorithms(PasswordAlgorithms::Wire(wire))
        }
        8 => Attribute::PasswordAlgorithm(PasswordAlgorithm {
            algorithm: src.u16(),
            params: src.bytes(32),
        }),
        9 => {
            let wire = src.bytes(32);
            Attribute::UnknownAttributes(UnknownAttributes::Wire(&wire[..wire.len() & !1]))
        }
        10 => Attribute::Software(Software(src.text(127))),
        11 => Attribute::AlternateServer(AlternateServer(src.addr())),
        12 => Attribute::AlternateDomain(AlternateDomain(src.text(255))),
        13 => Attribute::ChannelNumber(ChannelNumber(src.u16())),
        14 => Attribute::Lifetime(Lifetime(src.u32())),
        15 => Attribute::XorPeerAddress(XorPeerAddress(src.addr())),
        16 => Attribute::Data(Data(src.bytes(255))),
        17 => Attribute::XorRelayedAddress(XorRelayedAddress(src.addr())),
        18 => Attribute::RequestedAddressFamily(RequestedAddressFamily(src.family())),
        19 => Attribute::EvenPort(EvenPort {
            reserve_next: src.u8() & 1 != 0,
        }),
        20 => Attribute::RequestedTransport(RequestedTransport(src.u8())),
        21 => Attribute::DontFragment(DontFragment),
        22 => Attribute::ReservationToken(ReservationToken(src.array())),
        23 => Attribute::AdditionalAddressFamily(AdditionalAddressFamily(src.family())),
        24 => Attribute::AddressErrorCode(AddressErrorCode {
            family: src.family(),
            code: src.error_code(),
            reason: src.text(127),
        }),
        25 => Attribute::Icmp(Icmp {
            icmp_type: src.u8(),
            icmp_code: src.u8(),
            error_data: src.u32(),
        }),
        26 => Attribute::ConnectionId(ConnectionId(src.u32())),
        27 => {
            let flags = src.u8();
            Attribute::ChangeRequest(ChangeRequest {
                change_ip: flags & 1 != 0,
                change_port: flags & 2 != 0,
            })
        }
        28 => Attribute::ResponseOrigin(ResponseOrigin(src.addr())),
        29 => Attribute::OtherAddress(OtherAddress(src.addr())),
        30 => Attribute::ResponsePort(ResponsePort(src.u16())),
        31 => Attribute::Padding(Padding(usize::from(src.u8()))),
        32 => Attribute::Priority(Priority(src.u32())),
        33 => Attribute::UseCandidate(UseCandidate),
        34 => Attribute::IceControlled(IceControlled(src.u64())),
        35 => Attribute::IceControlling(IceControlling(src.u64())),
        36 => Attribute::MobilityTicket(MobilityTicket(src.bytes(64))),
        _ => {
            let attr_type = AttrType(src.u16());
            if attr_type.is_known() {
                return None;
            }
            Attribute::Unknown {
                attr_type,
                value: src.bytes(64),
            }
        }
    })
}
