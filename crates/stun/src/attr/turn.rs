//! TURN (RFC 8656 §18, RFC 6062 §6.2, RFC 8016 §3.1): CHANNEL-NUMBER, LIFETIME, DATA,
//! REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT, REQUESTED-TRANSPORT,
//! DONT-FRAGMENT, RESERVATION-TOKEN, ICMP, CONNECTION-ID, MOBILITY-TICKET. The addresses
//! (XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS) live in `address`, ADDRESS-ERROR-CODE in `error_code`.

use crate::error::AttrError;
use crate::message::TransactionId;

use super::{be_u16, be_u32, fixed, invalid_len, Attr, AttrType, Family};

/// RFC 8656 §18.1: CHANNEL-NUMBER (16 bits, then 16 reserved bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelNumber(pub u16);

impl<'a> Attr<'a> for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        Ok(ChannelNumber(be_u16(b)))
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..].fill(0);
    }
}

uint_attr!(
    /// RFC 8656 §18.2: LIFETIME in seconds.
    Lifetime, LIFETIME, u32, 4
);

uint_attr!(
    /// RFC 6062 §6.2.1: CONNECTION-ID of a peer TCP connection.
    ConnectionId, CONNECTION_ID, u32, 4
);

bytes_attr!(
    /// RFC 8656 §18.4: DATA, the application payload of a Send or Data indication.
    Data, DATA
);
bytes_attr!(
    /// RFC 8016 §3.1: MOBILITY-TICKET, an opaque ticket for moving an allocation.
    MobilityTicket, MOBILITY_TICKET
);

/// RFC 8656 §18.8: REQUESTED-TRANSPORT, an IP protocol number (17 UDP, 6 TCP) then 24 RFFU bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// IANA protocol number of UDP.
    pub const UDP: u8 = 17;
    /// IANA protocol number of TCP (RFC 6062).
    pub const TCP: u8 = 6;
}

impl<'a> Attr<'a> for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        Ok(RequestedTransport(b[0]))
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = self.0;
        out[1..].fill(0);
    }
}

macro_rules! family_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub Family);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                let b: &[u8; 4] = fixed(Self::TYPE, value)?;
                Family::from_byte(Self::TYPE, b[0]).map($name)
            }
            fn encoded_len(&self) -> usize {
                4
            }
            fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
                out[0] = self.0.byte();
                out[1..].fill(0);
            }
        }
    };
}

family_attr!(
    /// RFC 8656 §18.6: REQUESTED-ADDRESS-FAMILY of the relayed address.
    RequestedAddressFamily, REQUESTED_ADDRESS_FAMILY
);
family_attr!(
    /// RFC 8656 §18.11: ADDITIONAL-ADDRESS-FAMILY, asks for a second (IPv6) relayed address.
    AdditionalAddressFamily, ADDITIONAL_ADDRESS_FAMILY
);

/// RFC 8656 §18.7: EVEN-PORT, with the R bit asking to reserve the next port too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvenPort {
    /// The R bit.
    pub reserve_next: bool,
}

impl<'a> Attr<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        // RFC 8656 §18.7 says one byte; some clients pad the value to four. Accept both.
        match value {
            [b] | [b, 0, 0, 0] => Ok(EvenPort {
                reserve_next: b & 0x80 != 0,
            }),
            _ => Err(invalid_len(Self::TYPE, value.len())),
        }
    }
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = if self.reserve_next { 0x80 } else { 0 };
    }
}

/// RFC 8656 §18.10: RESERVATION-TOKEN, 8 bytes naming a reserved relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationToken(pub [u8; 8]);

impl<'a> Attr<'a> for ReservationToken {
    const TYPE: AttrType = AttrType::RESERVATION_TOKEN;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        fixed::<8>(Self::TYPE, value).map(|b| ReservationToken(*b))
    }
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out.copy_from_slice(&self.0)
    }
}

empty_attr!(
    /// RFC 8656 §18.9: DONT-FRAGMENT, set DF on packets to the peer.
    DontFragment, DONT_FRAGMENT
);

/// RFC 8656 §18.13: ICMP, an ICMP error seen on the relay path, in a Data indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Error data (e.g. the MTU of "fragmentation needed").
    pub error_data: u32,
}

impl<'a> Attr<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 8] = fixed(Self::TYPE, value)?;
        Ok(Icmp {
            icmp_type: b[2],
            icmp_code: b[3],
            error_data: be_u32(&b[4..]),
        })
    }
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = 0;
        out[1] = 0;
        out[2] = self.icmp_type;
        out[3] = self.icmp_code;
        out[4..].copy_from_slice(&self.error_data.to_be_bytes());
    }
}
