//! Property tests of the peer's parsers: ICE server URLs, signalling messages, file-channel
//! control messages and candidate names never panic on any input, and round-trip what they
//! produce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use floe_peer::ice_servers::{parse_url, IceServer, TurnTransport};
use floe_peer::signal::parse_incoming;
use floe_peer::transfer::{self, parse_control, safe_file_name, Control};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("offer"),
            Just("answer"),
            Just("candidate"),
            Just("peer_joined"),
            Just("peer_left"),
            Just("bye"),
            Just("error"),
            Just("end_of_candidates")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("from".to_string()),
                    Just("sdp".to_string()),
                    Just("peer".to_string()),
                    Just("offerer".to_string()),
                    Just("polite".to_string()),
                    Just("candidate".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn ice_urls_never_panic(url in ".{0,64}", user in proptest::option::of(".{0,8}")) {
        let _ = parse_url(&url, user.as_deref(), user.as_deref());
    }

    #[test]
    fn turn_urls_round_trip(
        host in "[a-z][a-z0-9.-]{0,20}|[0-9]{1,3}(\\.[0-9]{1,3}){3}",
        port in 1u16..,
        t in 0u8..3,
    ) {
        let (scheme, q, want) = match t {
            0 => ("turn", "?transport=udp", TurnTransport::Udp),
            1 => ("turn", "?transport=tcp", TurnTransport::Tcp),
            _ => ("turns", "?transport=tcp", TurnTransport::Tls),
        };
        let url = format!("{scheme}:{host}:{port}{q}");
        match parse_url(&url, Some("u"), Some("p")).unwrap() {
            IceServer::Turn { host: h, port: p, transport, .. } => {
                prop_assert_eq!(h, host);
                prop_assert_eq!(p, port);
                prop_assert_eq!(transport, want);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn signalling_messages_never_panic(v in json_value()) {
        let _ = parse_incoming(&v);
    }

    #[test]
    fn file_control_never_panics(text in ".{0,200}") {
        let _ = parse_control(&text);
    }

    #[test]
    fn headers_round_trip(name in ".{0,40}", data in prop::collection::vec(any::<u8>(), 0..512)) {
        let h = transfer::header_for(&name, &data);
        let back = parse_control(&serde_json::to_string(&h).unwrap()).unwrap();
        prop_assert_eq!(back, Control::Header(h));
    }

    #[test]
    fn safe_names_stay_in_the_directory(name in ".{0,60}") {
        let n = safe_file_name(&name);
        prop_assert!(!n.is_empty());
        prop_assert!(!n.contains('/') && !n.contains('\\'));
        prop_assert!(n != "." && n != "..");
        prop_assert!(!n.chars().any(char::is_control));
    }
}
