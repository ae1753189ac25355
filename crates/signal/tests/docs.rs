//! docs/signalling.md must document every error code and every client message type.

use floe_signal::proto::ClientMsg;
use floe_signal::ErrorCode;

const DOC: &str = include_str!("../../../docs/signalling.md");

#[test]
fn every_error_code_is_documented() {
    for code in ErrorCode::ALL {
        let row = format!("| `{}` |", code.as_str());
        assert!(
            DOC.contains(&row),
            "docs/signalling.md lacks a row for {row}"
        );
    }
}

#[test]
fn every_client_message_type_is_documented() {
    for ty in ClientMsg::TYPES {
        let row = format!("| `{ty}` |");
        assert!(
            DOC.contains(&row),
            "docs/signalling.md lacks a row for {row}"
        );
    }
}
