//! Transport addresses (RFC 8489 §14.1, §14.2, §14.15, RFC 8656 §18.3, §18.5, RFC 5780 §7.3),
//! plain or XOR-ed with the magic cookie and transaction id, and the address [`Family`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::AttrError;
use crate::message::TransactionId;

use super::{be_u16, fixed, invalid_len, Attr, AttrType};

use crate::MAGIC_COOKIE;

/// RFC 8489 §14.1: address family 0x01.
pub const FAMILY_IPV4: u8 = 0x01;
/// RFC 8489 §14.1: address family 0x02.
pub const FAMILY_IPV6: u8 = 0x02;

/// An IP address family as used by REQUESTED-ADDRESS-FAMILY and friends (RFC 8656 §18.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// 0x01
    V4,
    /// 0x02
    V6,
}

impl Family {
    pub(super) fn from_byte(t: AttrType, b: u8) -> Result<Family, AttrError> {
        match b {
            FAMILY_IPV4 => Ok(Family::V4),
            FAMILY_IPV6 => Ok(Family::V6),
            family => Err(AttrError::UnknownFamily {
                attr_type: t.0,
                family,
            }),
        }
    }

    pub(super) fn byte(self) -> u8 {
        match self {
            Family::V4 => FAMILY_IPV4,
            Family::V6 => FAMILY_IPV6,
        }
    }

    /// The family of an address.
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(tid.as_bytes());
    key
}

fn decode_address(
    t: AttrType,
    value: &[u8],
    tid: &TransactionId,
    xor: bool,
) -> Result<SocketAddr, AttrError> {
    if value.len() < 4 {
        return Err(invalid_len(t, value.len()));
    }
    let key = xor_key(tid);
    let mask16 = if xor { be_u16(&key) } else { 0 };
    let port = be_u16(&value[2..]) ^ mask16;
    let ip = match Family::from_byte(t, value[1])? {
        Family::V4 => {
            let raw: &[u8; 4] = fixed(t, &value[4..]).map_err(|_| invalid_len(t, value.len()))?;
            let mut b = *raw;
            if xor {
                b.iter_mut().zip(&key[..4]).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        Family::V6 => {
            let raw: &[u8; 16] = fixed(t, &value[4..]).map_err(|_| invalid_len(t, value.len()))?;
            let mut b = *raw;
            if xor {
                b.iter_mut().zip(&key).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn address_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() {
        8
    } else {
        20
    }
}

fn encode_address(addr: &SocketAddr, out: &mut [u8], tid: &TransactionId, xor: bool) {
    let key = xor_key(tid);
    out[0] = 0;
    out[1] = Family::of(addr).byte();
    let mask16 = if xor { be_u16(&key) } else { 0 };
    out[2..4].copy_from_slice(&(addr.port() ^ mask16).to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[4..8].copy_from_slice(&ip.octets());
            if xor {
                out[4..8]
                    .iter_mut()
                    .zip(&key[..4])
                    .for_each(|(x, k)| *x ^= k);
            }
        }
        IpAddr::V6(ip) => {
            out[4..20].copy_from_slice(&ip.octets());
            if xor {
                out[4..20].iter_mut().zip(&key).for_each(|(x, k)| *x ^= k);
            }
        }
    }
}

macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $type:ident, $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$type;
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                decode_address(Self::TYPE, value, tid, $xor).map($name)
            }
            fn encoded_len(&self) -> usize {
                address_len(&self.0)
            }
            fn encode(&self, out: &mut [u8], tid: &TransactionId) {
                encode_address(&self.0, out, tid, $xor)
            }
        }
    };
}

address_attr!(
    /// RFC 8489 §14.1: MAPPED-ADDRESS, the reflexive address in the clear (legacy).
    MappedAddress, MAPPED_ADDRESS, false
);
address_attr!(
    /// RFC 8489 §14.2: XOR-MAPPED-ADDRESS, the reflexive transport address.
    XorMappedAddress, XOR_MAPPED_ADDRESS, true
);
address_attr!(
    /// RFC 8656 §18.3: XOR-PEER-ADDRESS, a peer's address as seen from the relay.
    XorPeerAddress, XOR_PEER_ADDRESS, true
);
address_attr!(
    /// RFC 8656 §18.5: XOR-RELAYED-ADDRESS, the allocated relayed transport address.
    XorRelayedAddress, XOR_RELAYED_ADDRESS, true
);
address_attr!(
    /// RFC 8489 §14.15: ALTERNATE-SERVER, where to retry (with 300 Try Alternate).
    AlternateServer, ALTERNATE_SERVER, false
);
address_attr!(
    /// RFC 5780 §7.3: RESPONSE-ORIGIN, the address the response was sent from.
    ResponseOrigin, RESPONSE_ORIGIN, false
);
address_attr!(
    /// RFC 5780 §7.4: OTHER-ADDRESS, the server's alternate IP and port.
    OtherAddress, OTHER_ADDRESS, false
);
