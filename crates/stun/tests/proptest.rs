//! Property tests: typed attributes and whole messages round-trip through the builder and the
//! parser; checksums verify exactly when they should; arbitrary and mutated bytes never panic.
// Helpers outside #[test] fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use floe_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, AlternateDomain, AlternateServer, ChangeRequest,
    ChannelNumber, ConnectionId, Data, DontFragment, ErrorCode, EvenPort, Family, Fingerprint,
    IceControlled, IceControlling, Icmp, Lifetime, MappedAddress, MessageIntegrity,
    MessageIntegritySha256, MobilityTicket, Nonce, OtherAddress, Padding, PasswordAlgorithm,
    PasswordAlgorithms, Priority, Realm, RequestedAddressFamily, RequestedTransport,
    ReservationToken, ResponseOrigin, ResponsePort, Software, UnknownAttributes, UseCandidate,
    Userhash, Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use floe_stun::channel_data::{ChannelData, MAX_CHANNEL, MIN_CHANNEL};
use floe_stun::{fuzzing, Attr, AttrType, Attribute, Class, Message, MessageBuilder, Method};
use floe_stun::{AttrError, TransactionId};
use proptest::prelude::*;

/// An owned attribute value, so proptest can generate and shrink it; [`Owned::with`] lends it as
/// a borrowed [`Attribute`].
#[derive(Debug, Clone)]
enum Owned {
    Typed(Box<OwnedTyped>),
    PasswordAlgorithms(Vec<(u16, Vec<u8>)>),
    UnknownAttributes(Vec<u16>),
}

#[derive(Debug, Clone)]
enum OwnedTyped {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Username(String),
    Userhash([u8; 32]),
    ErrorCode(u16, String),
    Realm(String),
    Nonce(String),
    PasswordAlgorithm(u16, Vec<u8>),
    Software(String),
    AlternateServer(SocketAddr),
    AlternateDomain(String),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(Vec<u8>),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(Family),
    EvenPort(bool),
    RequestedTransport(u8),
    DontFragment,
    ReservationToken([u8; 8]),
    AdditionalAddressFamily(Family),
    AddressErrorCode(Family, u16, String),
    Icmp(u8, u8, u32),
    ConnectionId(u32),
    ChangeRequest(bool, bool),
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    ResponsePort(u16),
    Padding(usize),
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    MobilityTicket(Vec<u8>),
    Unknown(u16, Vec<u8>),
}

impl Owned {
    /// Calls `f` with the borrowed attribute.
    fn with<R>(&self, f: impl FnOnce(Attribute<'_>) -> R) -> R {
        match self {
            Owned::Typed(t) => f(t.as_attribute()),
            Owned::PasswordAlgorithms(list) => {
                let algs: Vec<PasswordAlgorithm<'_>> = list
                    .iter()
                    .map(|(algorithm, params)| PasswordAlgorithm {
                        algorithm: *algorithm,
                        params,
                    })
                    .collect();
                f(Attribute::PasswordAlgorithms(PasswordAlgorithms::List(
                    &algs,
                )))
            }
            Owned::UnknownAttributes(list) => {
                let types: Vec<AttrType> = list.iter().copied().map(AttrType).collect();
                f(Attribute::UnknownAttributes(UnknownAttributes::List(
                    &types,
                )))
            }
        }
    }

    /// Whether `decoded` (from the wire) carries the same value.
    fn matches(&self, decoded: &Attribute<'_>) -> bool {
        match (self, decoded) {
            (Owned::PasswordAlgorithms(list), Attribute::PasswordAlgorithms(got)) => got
                .iter()
                .map(|a| (a.algorithm, a.params.to_vec()))
                .eq(list.iter().cloned()),
            (Owned::UnknownAttributes(list), Attribute::UnknownAttributes(got)) => {
                got.iter().map(|t| t.0).eq(list.iter().copied())
            }
            (Owned::Typed(t), got) => t.as_attribute() == *got,
            _ => false,
        }
    }
}

impl OwnedTyped {
    fn as_attribute(&self) -> Attribute<'_> {
        use OwnedTyped as O;
        match self {
            O::MappedAddress(a) => Attribute::MappedAddress(MappedAddress(*a)),
            O::XorMappedAddress(a) => Attribute::XorMappedAddress(XorMappedAddress(*a)),
            O::Username(s) => Attribute::Username(Username(s)),
            O::Userhash(h) => Attribute::Userhash(Userhash(h)),
            O::ErrorCode(code, reason) => Attribute::ErrorCode(ErrorCode {
                code: *code,
                reason,
            }),
            O::Realm(s) => Attribute::Realm(Realm(s)),
            O::Nonce(s) => Attribute::Nonce(Nonce(s)),
            O::PasswordAlgorithm(algorithm, params) => {
                Attribute::PasswordAlgorithm(PasswordAlgorithm {
                    algorithm: *algorithm,
                    params,
                })
            }
            O::Software(s) => Attribute::Software(Software(s)),
            O::AlternateServer(a) => Attribute::AlternateServer(AlternateServer(*a)),
            O::AlternateDomain(s) => Attribute::AlternateDomain(AlternateDomain(s)),
            O::ChannelNumber(n) => Attribute::ChannelNumber(ChannelNumber(*n)),
            O::Lifetime(n) => Attribute::Lifetime(Lifetime(*n)),
            O::XorPeerAddress(a) => Attribute::XorPeerAddress(XorPeerAddress(*a)),
            O::Data(d) => Attribute::Data(Data(d)),
            O::XorRelayedAddress(a) => Attribute::XorRelayedAddress(XorRelayedAddress(*a)),
            O::RequestedAddressFamily(f) => {
                Attribute::RequestedAddressFamily(RequestedAddressFamily(*f))
            }
            O::EvenPort(r) => Attribute::EvenPort(EvenPort { reserve_next: *r }),
            O::RequestedTransport(p) => Attribute::RequestedTransport(RequestedTransport(*p)),
            O::DontFragment => Attribute::DontFragment(DontFragment),
            O::ReservationToken(t) => Attribute::ReservationToken(ReservationToken(*t)),
            O::AdditionalAddressFamily(f) => {
                Attribute::AdditionalAddressFamily(AdditionalAddressFamily(*f))
            }
            O::AddressErrorCode(family, code, reason) => {
                Attribute::AddressErrorCode(AddressErrorCode {
                    family: *family,
                    code: *code,
                    reason,
                })
            }
            O::Icmp(t, c, d) => Attribute::Icmp(Icmp {
                icmp_type: *t,
                icmp_code: *c,
                error_data: *d,
            }),
            O::ConnectionId(n) => Attribute::ConnectionId(ConnectionId(*n)),
            O::ChangeRequest(ip, port) => Attribute::ChangeRequest(ChangeRequest {
                change_ip: *ip,
                change_port: *port,
            }),
            O::ResponseOrigin(a) => Attribute::ResponseOrigin(ResponseOrigin(*a)),
            O::OtherAddress(a) => Attribute::OtherAddress(OtherAddress(*a)),
            O::ResponsePort(p) => Attribute::ResponsePort(ResponsePort(*p)),
            O::Padding(n) => Attribute::Padding(Padding(*n)),
            O::Priority(n) => Attribute::Priority(Priority(*n)),
            O::UseCandidate => Attribute::UseCandidate(UseCandidate),
            O::IceControlled(n) => Attribute::IceControlled(IceControlled(*n)),
            O::IceControlling(n) => Attribute::IceControlling(IceControlling(*n)),
            O::MobilityTicket(t) => Attribute::MobilityTicket(MobilityTicket(t)),
            O::Unknown(t, value) => Attribute::Unknown {
                attr_type: AttrType(*t),
                value,
            },
        }
    }
}

/// RFC 8489 §14.9–§14.14: fewer than 128 characters (any Unicode scalar values, up to 4 bytes
/// each, so within the 763-byte limit).
fn short_text() -> impl Strategy<Value = String> {
    "\\PC{0,127}"
}

/// A transport address as it can be on the wire: no IPv6 flow label or scope id.
fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::V4), Just(Family::V6)]
}

fn error_code() -> impl Strategy<Value = u16> {
    300u16..=699
}

fn owned_typed() -> impl Strategy<Value = OwnedTyped> {
    use OwnedTyped as O;
    let bytes = |n: usize| proptest::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        addr().prop_map(O::MappedAddress),
        addr().prop_map(O::XorMappedAddress),
        "\\PC{0,120}".prop_map(O::Username),
        any::<[u8; 32]>().prop_map(O::Userhash),
        (error_code(), short_text()).prop_map(|(c, r)| O::ErrorCode(c, r)),
        short_text().prop_map(O::Realm),
        short_text().prop_map(O::Nonce),
        (any::<u16>(), bytes(40)).prop_map(|(a, p)| O::PasswordAlgorithm(a, p)),
        short_text().prop_map(O::Software),
        addr().prop_map(O::AlternateServer),
        "[a-z0-9.-]{0,255}".prop_map(O::AlternateDomain),
        any::<u16>().prop_map(O::ChannelNumber),
        any::<u32>().prop_map(O::Lifetime),
        addr().prop_map(O::XorPeerAddress),
        bytes(600).prop_map(O::Data),
        addr().prop_map(O::XorRelayedAddress),
        family().prop_map(O::RequestedAddressFamily),
        any::<bool>().prop_map(O::EvenPort),
        any::<u8>().prop_map(O::RequestedTransport),
        Just(O::DontFragment),
        any::<[u8; 8]>().prop_map(O::ReservationToken),
        family().prop_map(O::AdditionalAddressFamily),
        (family(), error_code(), short_text()).prop_map(|(f, c, r)| O::AddressErrorCode(f, c, r)),
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(t, c, d)| O::Icmp(t, c, d)),
        any::<u32>().prop_map(O::ConnectionId),
        (any::<bool>(), any::<bool>()).prop_map(|(i, p)| O::ChangeRequest(i, p)),
        addr().prop_map(O::ResponseOrigin),
        addr().prop_map(O::OtherAddress),
        any::<u16>().prop_map(O::ResponsePort),
        (0usize..600).prop_map(O::Padding),
        any::<u32>().prop_map(O::Priority),
        Just(O::UseCandidate),
        any::<u64>().prop_map(O::IceControlled),
        any::<u64>().prop_map(O::IceControlling),
        bytes(100).prop_map(O::MobilityTicket),
        (
            any::<u16>().prop_filter("unknown type", |t| !AttrType(*t).is_known()),
            bytes(60)
        )
            .prop_map(|(t, v)| O::Unknown(t, v)),
    ]
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        8 => owned_typed().prop_map(|t| Owned::Typed(Box::new(t))),
        1 => proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..12)), 0..5)
            .prop_map(Owned::PasswordAlgorithms),
        1 => proptest::collection::vec(any::<u16>(), 0..10).prop_map(Owned::UnknownAttributes),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::SuccessResponse),
        Just(Class::ErrorResponse),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    (0u16..=0x0FFF).prop_map(|m| Method::new(m).expect("12 bits"))
}

/// What a generated message carries after its attributes.
#[derive(Debug, Clone, Copy)]
struct Trailer {
    mi: bool,
    mi256: bool,
    fp: bool,
}

fn trailer() -> impl Strategy<Value = Trailer> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(mi, mi256, fp)| Trailer {
        mi,
        mi256,
        fp,
    })
}

/// Builds a message; returns it and the end offsets of MI and MI-SHA256.
fn build(
    class: Class,
    method: Method,
    tid: TransactionId,
    attrs: &[Owned],
    trailer: Trailer,
    key: &[u8],
) -> (Vec<u8>, usize, usize) {
    let mut buf = vec![0u8; 65_600];
    let mut b = MessageBuilder::new(&mut buf, class, method, tid).unwrap();
    for a in attrs {
        a.with(|attr| b.add_attribute(&attr)).unwrap();
    }
    if trailer.mi {
        b.add_message_integrity(key).unwrap();
    }
    let mi_end = b.len();
    if trailer.mi256 {
        b.add_message_integrity_sha256(key).unwrap();
    }
    let mi256_end = b.len();
    if trailer.fp {
        b.add_fingerprint().unwrap();
    }
    let n = b.finish();
    buf.truncate(n);
    (buf, mi_end, mi256_end)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every typed attribute: encode → decode gives the same value, through `Attr` and through
    /// `Attribute`.
    #[test]
    fn attribute_round_trips(a in owned(), tid in any::<[u8; 12]>()) {
        let tid = TransactionId(tid);
        a.with(|attr| {
            let mut out = vec![0u8; attr.encoded_len()];
            attr.encode(&mut out, &tid);
            let decoded = Attribute::decode(attr.attr_type(), &out, &tid);
            prop_assert!(decoded.as_ref().is_ok_and(|d| a.matches(d)), "{attr:?} -> {decoded:?}");
            Ok(())
        })?;
    }

    /// Whole messages: build → parse → same header, same attributes in order, checksums verify
    /// exactly when present and only with the right key.
    #[test]
    fn message_round_trips(
        class in class(),
        method in method(),
        tid in any::<[u8; 12]>(),
        attrs in proptest::collection::vec(owned(), 0..10),
        trailer in trailer(),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let tid = TransactionId(tid);
        let (bytes, _, _) = build(class, method, tid, &attrs, trailer, &key);
        let msg = Message::parse(&bytes).unwrap();
        prop_assert_eq!(msg.class(), class);
        prop_assert_eq!(msg.method(), method);
        prop_assert_eq!(msg.transaction_id(), tid);
        prop_assert_eq!(Message::frame_len(&bytes), Some(bytes.len()));
        let raws: Vec<_> = msg.attributes().collect();
        let extra = usize::from(trailer.mi) + usize::from(trailer.mi256) + usize::from(trailer.fp);
        prop_assert_eq!(raws.len(), attrs.len() + extra);
        for (a, raw) in attrs.iter().zip(&raws) {
            let decoded = Attribute::decode(raw.attr_type, raw.value, &tid).unwrap();
            prop_assert!(a.matches(&decoded), "{:?} vs {:?}", a, decoded);
        }
        prop_assert_eq!(msg.verify_integrity(&key), trailer.mi);
        prop_assert_eq!(msg.verify_integrity_sha256(&key), trailer.mi256);
        prop_assert_eq!(msg.verify_fingerprint(), trailer.fp);
        let mut wrong = key.clone();
        // (Not `push(0)`: HMAC pads short keys with zeros, so `key` and `key ‖ 0x00` are the
        // same HMAC key.)
        wrong.push(1);
        prop_assert!(!msg.verify_integrity(&wrong));
        prop_assert!(!msg.verify_integrity_sha256(&wrong));
        // The checksum attributes decode as typed values too.
        if trailer.mi {
            prop_assert!(matches!(msg.get::<MessageIntegrity<'_>>(), Some(Ok(_))));
        }
        if trailer.mi256 {
            prop_assert!(matches!(msg.get::<MessageIntegritySha256<'_>>(), Some(Ok(v)) if v.0.len() == 32));
        }
        if trailer.fp {
            prop_assert!(matches!(msg.get::<Fingerprint>(), Some(Ok(_))));
        }
    }

    /// RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and
    /// FINGERPRINT are ignored.
    #[test]
    fn attributes_after_integrity_are_ignored(
        before in proptest::collection::vec(owned(), 0..4),
        after in proptest::collection::vec(owned(), 1..4),
        key in proptest::collection::vec(any::<u8>(), 1..20),
    ) {
        let tid = TransactionId([3; 12]);
        let mut buf = vec![0u8; 65_600];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::ALLOCATE, tid).unwrap();
        for a in &before {
            a.with(|attr| b.add_attribute(&attr)).unwrap();
        }
        b.add_message_integrity(&key).unwrap();
        for a in &after {
            a.with(|attr| b.add_attribute(&attr)).unwrap();
        }
        b.add_fingerprint().unwrap();
        let n = b.finish();
        let msg = Message::parse(&buf[..n]).unwrap();
        let types: Vec<AttrType> = msg.attributes().map(|r| r.attr_type).collect();
        let mut expected: Vec<AttrType> = before.iter().map(|a| a.with(|x| x.attr_type())).collect();
        expected.push(AttrType::MESSAGE_INTEGRITY);
        expected.push(AttrType::FINGERPRINT);
        prop_assert_eq!(types, expected);
        prop_assert!(msg.verify_integrity(&key));
        prop_assert!(msg.verify_fingerprint());
    }

    /// One changed byte: each checksum fails exactly when it covers the byte; parsing never panics.
    #[test]
    fn mutation_fails_covered_checksums(
        attrs in proptest::collection::vec(owned(), 0..6),
        key in proptest::collection::vec(any::<u8>(), 1..20),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let tid = TransactionId([9; 12]);
        let all = Trailer { mi: true, mi256: true, fp: true };
        let (mut bytes, mi_end, mi256_end) = build(Class::Request, Method::BINDING, tid, &attrs, all, &key);
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        fuzzing::check_message(&bytes);
        if let Ok(msg) = Message::parse(&bytes) {
            prop_assert_eq!(msg.verify_integrity(&key), i >= mi_end);
            prop_assert_eq!(msg.verify_integrity_sha256(&key), i >= mi256_end);
            prop_assert!(!msg.verify_fingerprint());
        }
    }

    /// Arbitrary bytes never make the parsers panic.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), t in any::<u16>()) {
        fuzzing::check_message(&data);
        fuzzing::check_channel_data(&data);
        fuzzing::check_build_roundtrip(&data);
        let tid = TransactionId([1; 12]);
        let _ = Attribute::decode(AttrType(t), &data, &tid);
    }

    /// Arbitrary bytes with a valid STUN header and length, so they reach attribute parsing.
    #[test]
    fn arbitrary_attribute_sections_never_panic(words in proptest::collection::vec(any::<[u8; 4]>(), 0..64)) {
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&u16::try_from(4 * words.len()).unwrap().to_be_bytes());
        m.extend_from_slice(&floe_stun::MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[5; 12]);
        m.extend(words.iter().flatten());
        fuzzing::check_message(&m);
    }

    /// Every known attribute type decodes arbitrary values without panicking.
    #[test]
    fn every_known_type_decodes_arbitrary_values(value in proptest::collection::vec(any::<u8>(), 0..64)) {
        let tid = TransactionId([2; 12]);
        for t in 0..=0xFFFFu16 {
            if AttrType(t).is_known() {
                let r: Result<Attribute<'_>, AttrError> = Attribute::decode(AttrType(t), &value, &tid);
                if let Ok(a) = r {
                    prop_assert_eq!(a.attr_type(), AttrType(t));
                }
            }
        }
    }

    /// ChannelData: encode → parse, padded or not.
    #[test]
    fn channel_data_round_trips(
        channel in MIN_CHANNEL..=MAX_CHANNEL,
        data in proptest::collection::vec(any::<u8>(), 0..1500),
        pad in any::<bool>(),
    ) {
        let mut out = vec![0u8; data.len() + 8];
        let n = ChannelData::encode(channel, &data, pad, &mut out).unwrap();
        if pad {
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(ChannelData::frame_len(&out[..n]), Some(n));
        }
        let cd = ChannelData::parse(&out[..n]).unwrap();
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &data[..]);
        fuzzing::check_channel_data(&out[..n]);
    }

    /// Typed `get` finds the first of repeated attributes and `get_all` finds them all.
    #[test]
    fn get_all_finds_every_peer_address(peers in proptest::collection::vec(addr(), 1..8)) {
        let tid = TransactionId([4; 12]);
        let mut buf = [0u8; 512];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::CREATE_PERMISSION, tid).unwrap();
        for p in &peers {
            b.add(&XorPeerAddress(*p)).unwrap();
        }
        let n = b.finish();
        let msg = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(msg.get::<XorPeerAddress>(), Some(Ok(XorPeerAddress(peers[0]))));
        let all: Vec<SocketAddr> = msg.get_all::<XorPeerAddress>().map(|r| r.unwrap().0).collect();
        prop_assert_eq!(all, peers);
    }
}

/// Typed decode rejects malformed values of the fixed-size types (a sample; the proptest above
/// covers the no-panic side).
#[test]
fn fixed_size_attributes_reject_wrong_lengths() {
    let tid = TransactionId([0; 12]);
    assert!(Lifetime::decode(&[0; 3], &tid).is_err());
    assert!(ChannelNumber::decode(&[0; 5], &tid).is_err());
    assert!(XorMappedAddress::decode(&[0, 1, 0, 0, 1, 2, 3], &tid).is_err());
    assert!(XorMappedAddress::decode(&[0, 3, 0, 0, 1, 2, 3, 4], &tid).is_err());
    assert!(ErrorCode::decode(&[0, 0, 7, 0], &tid).is_err());
    assert!(ErrorCode::decode(&[0, 0, 4, 100], &tid).is_err());
    assert!(MessageIntegritySha256::decode(&[0; 12], &tid).is_err());
    assert!(MessageIntegritySha256::decode(&[0; 18], &tid).is_err());
    assert!(Software::decode(&[0xff, 0xfe], &tid).is_err());
}
