//! Reload without drops, the parts beyond credentials and certificates (issue 13 §6): the log
//! level, TURN limits and quotas, and the signalling settings, on real `floe serve` and
//! `floe signal` processes with live relayed traffic and connected WebSocket peers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

#[path = "../../turn-server/tests/common/client.rs"]
mod client;
mod common;
#[path = "common/turn_pair.rs"]
mod turn_pair;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use client::{Client, REALM};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use turn_pair::{relaying_pair, relays};

use common::{
    free_port_pair, free_tcp, http, printed_http_addr, wait_for_stun, wait_for_tcp, Proc, TempDir,
};

/// Bound on every wait (far above what a loaded 2-core box needs).
const T: Duration = Duration::from_secs(20);

/// `POST /v1/reload`, asserting the status; the body.
fn reload(admin: SocketAddr, status: u16) -> String {
    let (got, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(got, status, "{body}");
    body
}

/// Starts `floe SUBCOMMAND --config FILE` with HTTP on a free port and stderr into `log` (so
/// the test reads what it logged); returns it with its HTTP and operations addresses once both
/// answer.
fn start(subcommand: &str, file: &str, log: &str) -> (Proc, SocketAddr, SocketAddr) {
    let admin = free_tcp();
    let stderr = std::fs::File::create(log).unwrap();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([subcommand, "--config", file, "--http", "127.0.0.1:0"])
        .args(["--admin", &admin.to_string()])
        .env_remove("FLOE_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let http = printed_http_addr(&mut child);
    let proc = Proc(child);
    wait_for_tcp(admin);
    (proc, http, admin)
}

/// How many `admin request` debug lines `log` holds.
fn debug_lines(log: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches("admin request")
        .count()
}

#[test]
fn a_reload_changes_the_log_level_of_floe_signal() {
    let dir = TempDir::new("floe-reload-log");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    let (_floe, _http, admin) = start("signal", &file, &log);
    // At `warn`, an admin request logs nothing.
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert_eq!(debug_lines(&log), 0);

    // Raised to debug for floe's own modules: the request is logged (before its answer is sent).
    std::fs::write(&file, "log = \"warn,floe=debug\"\n").unwrap();
    let body = reload(admin, 200);
    assert!(body.contains("log filter"), "{body}");
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    let raised = debug_lines(&log);
    assert!(raised >= 1, "{}", std::fs::read_to_string(&log).unwrap());

    // An invalid filter keeps the old one (400, the reason given).
    std::fs::write(&file, "log = \"floe=loud\"\n").unwrap();
    let body = reload(admin, 400);
    assert!(body.contains("log filter"), "{body}");
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert!(debug_lines(&log) > raised);

    // Lowered again: no more debug lines.
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    reload(admin, 200);
    let lowered = debug_lines(&log);
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert_eq!(debug_lines(&log), lowered);
}

/// `floe serve`'s file: TURN on `turn` with alice (realm of the test client), `turn_extra` in
/// `[turn]`, `signal` as the `[signal]` section, `top` before the sections.
fn serve_config(path: &str, turn: SocketAddr, top: &str, turn_extra: &str, signal: &str) {
    let text = format!(
        "{top}\nlisten = [\"{turn}\"]\n[turn]\nrealm = \"{REALM}\"\nusers = [\"alice:pw\"]\n{turn_extra}\n[signal]\n{signal}\n"
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn floe_serve_reloads_limits_with_live_allocations_relaying() {
    let dir = TempDir::new("floe-reload-serve");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    let turn = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let write = |top: &str, turn_extra: &str| serve_config(&file, turn, top, turn_extra, "");
    write("log = \"warn\"", "max_allocations_per_user = 10");
    let (_floe, _http, admin) = start("serve", &file, &log);
    wait_for_stun(turn);
    let (mut a, a_relay, mut b, b_relay) = relaying_pair(turn);
    assert!(relays(&mut a, &mut b, b_relay, b"before", 1));
    assert!(relays(&mut b, &mut a, a_relay, b"before back", 2));

    // (a) alice's allocation quota lowered to the two she holds: a third Allocate is refused
    // with 486 (RFC 8656 §7.2), the live two keep relaying both ways.
    write("log = \"warn\"", "max_allocations_per_user = 2");
    let body = reload(admin, 200);
    assert!(!body.contains("turn.max_allocations_per_user"), "{body}");
    assert_eq!(Client::udp(turn).try_allocate(), Err(486));
    assert!(relays(&mut a, &mut b, b_relay, b"after", 3));
    assert!(relays(&mut b, &mut a, a_relay, b"after back", 4));

    // TCP/TLS clients: one per address from now on. A client connected before stays served, a
    // second one from the same address is closed at once.
    let mut first = Client::tcp(turn);
    first.binding();
    write(
        "log = \"warn\"",
        "max_allocations_per_user = 2\nmax_tcp_connections_per_ip = 1",
    );
    let body = reload(admin, 200);
    assert!(!body.contains("max_tcp_connections_per_ip"), "{body}");
    let mut second = Client::tcp(turn);
    assert!(second.closed_within(Duration::from_secs(5)));
    first.binding();

    // Raised again: a third allocation is granted.
    write("log = \"warn\"", "max_allocations_per_user = 3");
    reload(admin, 200);
    assert!(Client::udp(turn).try_allocate().is_ok());

    // (c) An invalid file changes nothing: 400 with the reason, the old limit still in force.
    write("log = \"warn\"", "max_allocations_per_user = \"lots\"");
    let body = reload(admin, 400);
    assert!(body.contains("max_allocations_per_user"), "{body}");
    assert_eq!(Client::udp(turn).try_allocate(), Err(486));
    assert!(relays(&mut a, &mut b, b_relay, b"after a bad file", 5));

    // (d) The log level, in the same process.
    write("log = \"warn,floe=debug\"", "max_allocations_per_user = 3");
    reload(admin, 200);
    assert_eq!(http(admin, "GET", "/v1/status").0, 200);
    assert!(debug_lines(&log) >= 1);
    assert!(relays(&mut a, &mut b, b_relay, b"at the end", 6));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `http` that sent `join` for `peer` in `room` (with `token` if given); its
/// first answer (`welcome` or an error).
async fn join(http: SocketAddr, room: &str, peer: &str, token: Option<&str>) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/v1/ws"))
        .await
        .unwrap();
    let mut msg = json!({"type":"join","v":1,"room":room,"peer":peer});
    if let Some(t) = token {
        msg["token"] = t.into();
    }
    ws.send(WsMessage::Text(msg.to_string().into()))
        .await
        .unwrap();
    let first = recv(&mut ws).await;
    (ws, first)
}

/// The next text message, or `{"type":"_closed"}` once the server closed the connection.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return json!({"type":"_closed"}),
            Some(Ok(_)) => {}
        }
    }
}

/// The next message of type `kind` (presence and other messages on the way are skipped).
async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = recv(ws).await;
        if m["type"] == kind || m["type"] == "_closed" {
            return m;
        }
    }
}

/// `from` sends `data` to `to` (peer id), which must receive it.
async fn exchange(from: &mut Ws, to: &mut Ws, to_peer: &str, data: &str) {
    let msg = json!({"type":"data","to":to_peer,"data":data});
    from.send(WsMessage::Text(msg.to_string().into()))
        .await
        .unwrap();
    let got = recv_type(to, "data").await;
    assert_eq!(got["data"], data, "{got}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn floe_serve_reloads_signalling_with_connected_peers_and_live_allocations() {
    let rt = runtime();
    let dir = TempDir::new("floe-reload-serve-signal");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    let turn = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let write = |turn_extra: &str, signal: &str| {
        serve_config(&file, turn, "log = \"warn\"", turn_extra, signal)
    };
    write("", "");
    let (_floe, http_addr, admin) = start("serve", &file, &log);
    wait_for_stun(turn);
    let (mut a, a_relay, mut b, b_relay) = relaying_pair(turn);
    let (mut alice, welcome) = rt.block_on(join(http_addr, "r", "alice", None));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // By default the join answer carries this deployment's TURN URLs with credentials.
    assert!(
        welcome["iceServers"].to_string().contains("turn:"),
        "{welcome}"
    );
    let (mut bob, welcome) = rt.block_on(join(http_addr, "r", "bob", None));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    rt.block_on(exchange(&mut alice, &mut bob, "bob", "before"));
    assert!(relays(&mut a, &mut b, b_relay, b"before", 1));

    // (b) Rooms of two, and only a STUN URL in the ICE servers: the two peers stay connected
    // and keep exchanging both ways, the live allocations keep relaying; a third peer in
    // their room is refused, a new join elsewhere gets the new ICE servers.
    let stun = format!("stun:{turn}");
    write(
        "",
        &format!("max_peers_per_room = 2\nstun_urls = [\"{stun}\"]"),
    );
    let body = reload(admin, 200);
    assert!(body.contains("0 session(s) ended"), "{body}");
    rt.block_on(exchange(&mut alice, &mut bob, "bob", "after"));
    rt.block_on(exchange(&mut bob, &mut alice, "alice", "after, back"));
    assert!(relays(&mut a, &mut b, b_relay, b"after", 2));
    assert!(relays(&mut b, &mut a, a_relay, b"after, back", 3));
    let (_carol, refused) = rt.block_on(join(http_addr, "r", "carol", None));
    assert_eq!(refused["code"], "room_full", "{refused}");
    let (_dave, welcome) = rt.block_on(join(http_addr, "s", "dave", None));
    assert_eq!(
        welcome["iceServers"],
        json!([{"urls": [stun]}]),
        "{welcome}"
    );

    // (c) An invalid [signal] section changes nothing: 400 with the reason, rooms of two still.
    write("", "max_peers_per_room = 2\nmsgs_per_sec = 0");
    let body = reload(admin, 400);
    assert!(body.contains("msgs_per_sec"), "{body}");
    let (_erin, refused) = rt.block_on(join(http_addr, "r", "erin", None));
    assert_eq!(refused["code"], "room_full", "{refused}");
    // A key only a restart changes is named, and the rest applies: rooms of three.
    write("", "max_peers_per_room = 3\nheartbeat_secs = 5");
    let body = reload(admin, 200);
    assert!(body.contains("signal.heartbeat_secs"), "{body}");
    let (_frank, welcome) = rt.block_on(join(http_addr, "r", "frank", None));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // Restart-only keys keep their start value: the heartbeat told to new peers is unchanged.
    assert_eq!(welcome["heartbeatMs"], 10_000, "{welcome}");
    rt.block_on(exchange(&mut alice, &mut bob, "bob", "at the end"));
    assert!(relays(&mut a, &mut b, b_relay, b"at the end", 4));
}

/// An HS256 token for `peer` in `room`, valid ten minutes.
fn token(secret: &str, room: &str, peer: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    floe_signal::auth::mint_hs256(
        secret.as_bytes(),
        &floe_signal::auth::Claims {
            room: room.into(),
            peer: Some(peer.into()),
            perms: None,
            exp,
            nbf: None,
            iat: None,
            tenant: None,
        },
    )
    .unwrap()
}

#[test]
fn floe_signal_reloads_its_jwt_secret_and_ends_the_sessions_of_the_removed_one() {
    let rt = runtime();
    let dir = TempDir::new("floe-reload-signal-keys");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    let section = |extra: &str| format!("log = \"warn\"\n[signal]\n{extra}\n");
    std::fs::write(&file, section("jwt_secret = \"first-secret\"")).unwrap();
    let (_floe, http_addr, admin) = start("signal", &file, &log);
    let (mut alice, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "alice",
        Some(&token("first-secret", "r", "alice")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (mut bob, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "bob",
        Some(&token("first-secret", "r", "bob")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // Another setting changes, the key stays: the sessions go on.
    std::fs::write(
        &file,
        section("jwt_secret = \"first-secret\"\njoins_per_min_per_ip = 30"),
    )
    .unwrap();
    let body = reload(admin, 200);
    assert!(body.contains("0 session(s) ended"), "{body}");
    rt.block_on(exchange(&mut alice, &mut bob, "bob", "still here"));

    // The key is replaced: the sessions it admitted end (fatal invalid_token), a join with a
    // token of the old key is refused, one of the new key is admitted.
    std::fs::write(&file, section("jwt_secret = \"second-secret\"")).unwrap();
    let body = reload(admin, 200);
    assert!(body.contains("2 session(s) ended"), "{body}");
    let ended = rt.block_on(recv_type(&mut alice, "error"));
    assert_eq!(ended["code"], "invalid_token", "{ended}");
    assert_eq!(
        rt.block_on(recv_type(&mut bob, "error"))["code"],
        "invalid_token"
    );
    let (_old, refused) = rt.block_on(join(
        http_addr,
        "r",
        "carol",
        Some(&token("first-secret", "r", "carol")),
    ));
    assert_eq!(refused["code"], "invalid_token", "{refused}");
    let (_new, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "carol",
        Some(&token("second-secret", "r", "carol")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // An unreadable public key file is refused; the second secret stays in force.
    std::fs::write(
        &file,
        section("jwt_public_key = \"/nonexistent/floe-key.pem\""),
    )
    .unwrap();
    let body = reload(admin, 400);
    assert!(body.contains("floe-key.pem"), "{body}");
    let (_dave, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "dave",
        Some(&token("second-secret", "r", "dave")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}

/// A key rotation without drops: the new secret becomes `jwt_secret` and the old one moves to
/// `jwt_previous_secrets`; the sessions the old key admitted go on, tokens of both keys join; a
/// later reload without the old key ends what only it admitted.
#[test]
fn a_jwt_key_rotation_keeps_the_sessions_of_the_previous_key() {
    let rt = runtime();
    let dir = TempDir::new("floe-reload-signal-rotation");
    let (file, log) = (dir.file("floe.toml"), dir.file("stderr.log"));
    let section = |extra: &str| format!("log = \"warn\"\n[signal]\n{extra}\n");
    std::fs::write(&file, section("jwt_secret = \"old-secret\"")).unwrap();
    let (_floe, http_addr, admin) = start("signal", &file, &log);
    let (mut alice, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "alice",
        Some(&token("old-secret", "r", "alice")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    std::fs::write(
        &file,
        section("jwt_secret = \"new-secret\"\njwt_previous_secrets = [\"old-secret\"]"),
    )
    .unwrap();
    let body = reload(admin, 200);
    assert!(body.contains("0 session(s) ended"), "{body}");
    let (mut bob, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "bob",
        Some(&token("new-secret", "r", "bob")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    rt.block_on(exchange(&mut alice, &mut bob, "bob", "across the rotation"));
    let (_carol, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "carol",
        Some(&token("old-secret", "r", "carol")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // The rotation ends: only the sessions of the old key (alice, carol) end.
    std::fs::write(&file, section("jwt_secret = \"new-secret\"")).unwrap();
    let body = reload(admin, 200);
    assert!(body.contains("2 session(s) ended"), "{body}");
    let ended = rt.block_on(recv_type(&mut alice, "error"));
    assert_eq!(ended["code"], "invalid_token", "{ended}");

    // Earlier keys without a current one are refused, and nothing changes.
    std::fs::write(&file, section("jwt_previous_secrets = [\"old-secret\"]")).unwrap();
    let body = reload(admin, 400);
    assert!(body.contains("jwt_previous_secrets"), "{body}");
    let (_dave, welcome) = rt.block_on(join(
        http_addr,
        "r",
        "dave",
        Some(&token("new-secret", "r", "dave")),
    ));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}
