//! ICE connectivity checks (RFC 8445 §7.1.2, §16.1): PRIORITY, USE-CANDIDATE, ICE-CONTROLLED,
//! ICE-CONTROLLING.

use crate::error::AttrError;
use crate::message::TransactionId;

use super::{fixed, invalid_len, Attr, AttrType};

uint_attr!(
    /// RFC 8445 §16.1: PRIORITY of the peer-reflexive candidate.
    Priority, PRIORITY, u32, 4
);
uint_attr!(
    /// RFC 8445 §16.1: ICE-CONTROLLED with its tie-breaker.
    IceControlled, ICE_CONTROLLED, u64, 8
);
uint_attr!(
    /// RFC 8445 §16.1: ICE-CONTROLLING with its tie-breaker.
    IceControlling, ICE_CONTROLLING, u64, 8
);

empty_attr!(
    /// RFC 8445 §7.1.2: USE-CANDIDATE, nominate this pair.
    UseCandidate, USE_CANDIDATE
);
