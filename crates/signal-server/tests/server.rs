//! The signalling server on real loopback sockets: WebSocket and REST, every error path of
//! issue 4 §6, resume across a real reconnect, ICE servers, metrics and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use floe_signal::auth::{mint_hs256, Claims};
use floe_signal_server::{SignalConfig, SignalServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

fn metrics_render() -> floe_signal_server::MetricsRender {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    let h = HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("recorder")
    });
    let h = h.clone();
    std::sync::Arc::new(move || h.render())
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), floe_signal_server::ServerError>>,
}

impl Server {
    async fn start(config: SignalConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = SignalServer::new(config).with_metrics(metrics_render());
        let task = tokio::spawn(server.run(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(T, self.task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
    async fn ws(&self) -> Ws {
        Ws::connect(self.addr, None).await.unwrap()
    }
    async fn join(&self, room: &str, peer: &str) -> (Ws, Value) {
        let mut ws = self.ws().await;
        ws.send(json!({"type":"join","v":1,"room":room,"peer":peer}))
            .await;
        let w = ws.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        (ws, w)
    }
}

struct Ws {
    inner: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl Ws {
    async fn connect(
        addr: SocketAddr,
        origin: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (inner, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")?;
        Ok(Self { inner })
    }
    /// Connects with extra request headers; answers the HTTP status of a refused upgrade.
    async fn connect_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Self, u16> {
        let mut req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
        for (k, v) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes());
            req.headers_mut().append(name.unwrap(), v.parse().unwrap());
        }
        match tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
        {
            Ok((inner, _)) => Ok(Self { inner }),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("unexpected WebSocket error {e:?}"),
        }
    }
    async fn send(&mut self, v: Value) {
        self.inner
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }
    async fn send_raw(&mut self, s: String) {
        self.inner.send(Message::Text(s.into())).await.unwrap();
    }
    /// The next JSON message (pongs from the server are skipped).
    async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(T, self.inner.next())
                .await
                .expect("message in time")
                .expect("open")
                .unwrap();
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
    async fn expect_error(&mut self, code: &str) -> Value {
        let m = self.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["code"].as_str()),
            (Some("error"), Some(code)),
            "{m}"
        );
        m
    }
    /// Waits for the close frame and returns (code, reason).
    async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(T, self.inner.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
                Some(Ok(Message::Close(None))) | None => return (0, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(_)) => return (0, String::new()),
            }
        }
    }
}

/// A minimal HTTP/1.1 client (Connection: close) so the tests need no HTTP client crate.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (status, _, body) = http_full(addr, method, path, headers, body).await;
    (status, body)
}

/// [`http`] that also returns the response head (status line and headers, lower-cased).
async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Value) {
    let mut s = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

async fn post_json(addr: SocketAddr, path: &str, bearer: Option<&str>, v: &Value) -> (u16, Value) {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut h = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a));
    }
    http(addr, "POST", path, &h, v.to_string().as_bytes()).await
}

#[tokio::test]
async fn two_peers_join_see_presence_and_exchange_signals() {
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, wa) = s.join("room", "alice").await;
    assert_eq!(wa["v"], 1);
    assert_eq!(wa["peers"], json!([]));
    assert!(wa["resumeToken"].as_str().unwrap().len() >= 32);
    let (mut b, wb) = s.join("room", "bob").await;
    assert_eq!(
        wb["peers"],
        json!([{"peer":"alice","polite":false,"offerer":true}])
    );
    let pj = a.recv().await;
    assert_eq!(
        pj,
        json!({"type":"peer_joined","seq":1,"peer":"bob","polite":true,"offerer":false})
    );
    b.send(json!({"type":"candidate","to":"alice","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"})).await;
    b.send(json!({"type":"offer","to":"alice","sdp":"v=0"}))
        .await;
    let o = a.recv().await;
    assert_eq!(
        (o["type"].as_str(), o["from"].as_str(), o["seq"].as_u64()),
        (Some("offer"), Some("bob"), Some(2))
    );
    let c = a.recv().await;
    assert_eq!(
        c["type"], "candidate",
        "the candidate sent before the offer follows it"
    );
    assert_eq!(c["sdpMLineIndex"], 0);
    a.send(json!({"type":"answer","to":"bob","sdp":"v=0 a"}))
        .await;
    assert_eq!(b.recv().await["type"], "answer");
    a.send(json!({"type":"ping","ack":3})).await;
    assert_eq!(a.recv().await, json!({"type":"pong","ack":0}));
    s.stop().await;
}

#[tokio::test]
async fn malformed_and_misaddressed_messages_get_errors_without_affecting_others() {
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("r", "alice").await;
    let (mut b, _) = s.join("r", "bob").await;
    a.recv().await; // peer_joined
    b.send_raw("{oops".into()).await;
    b.expect_error("bad_json").await;
    b.send(json!({"type":"teleport"})).await;
    b.expect_error("unknown_type").await;
    b.send(json!({"type":"offer","to":"alice"})).await;
    b.expect_error("bad_message").await;
    b.send(json!({"type":"offer","to":"nobody","sdp":"x","seq":7}))
        .await;
    let e = b.expect_error("peer_not_found").await;
    assert_eq!(e["refSeq"], 7);
    b.inner
        .send(Message::Binary(vec![0xff, 0x00].into()))
        .await
        .unwrap();
    b.expect_error("bad_json").await;
    b.send(json!({"type":"join","v":1,"room":"r"})).await;
    b.expect_error("already_joined").await;
    let mut c = s.ws().await;
    c.send(json!({"type":"data","data":1})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"type":"join","v":9,"room":"r"})).await;
    c.expect_error("unsupported_version").await;
    // Alice is untouched and the connection of bob still works.
    b.send(json!({"type":"data","to":"alice","data":"hi"}))
        .await;
    let d = a.recv().await;
    assert_eq!(
        (d["type"].as_str(), d["data"].as_str()),
        (Some("data"), Some("hi"))
    );
    s.stop().await;
}

#[tokio::test]
async fn messages_up_to_the_limit_pass_whole_through_the_small_read_buffer() {
    // The read buffer is 1 KiB; frames from a few bytes to just under the 64 KiB limit, sent
    // back to back, arrive whole and in order.
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("r", "alice").await;
    let (mut b, _) = s.join("r", "bob").await;
    a.recv().await; // bob joined
    let sizes = [1, 1000, 1024, 1025, 5000, 40_000, 65_000];
    for n in sizes {
        b.send(json!({"type":"data","to":"alice","data":"z".repeat(n)}))
            .await;
    }
    for n in sizes {
        let m = a.recv().await;
        assert_eq!(m["type"], "data", "{m}");
        assert_eq!(m["data"].as_str().map(str::len), Some(n));
    }
    s.stop().await;
}

#[tokio::test]
async fn oversized_frames_are_refused_and_close_the_connection() {
    let s = Server::start(SignalConfig {
        max_message_bytes: 1024,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = s.join("r", "alice").await;
    let (mut b, _) = s.join("r", "bob").await;
    a.recv().await;
    b.send(json!({"type":"data","to":"alice","data":"x".repeat(1100)}))
        .await;
    let e = b.expect_error("message_too_large").await;
    assert_eq!(e["fatal"], true);
    assert_eq!(b.expect_close().await, (1009, "message_too_large".into()));
    // Beyond the transport's hard cap (4x) the connection is dropped outright.
    let (mut c, _) = s.join("r", "carol").await;
    let _ = c.inner.send(Message::Text("y".repeat(5000).into())).await;
    let (code, _) = c.expect_close().await;
    assert!(code == 1009 || code == 0, "closed with {code}");
    a.send(json!({"type":"ping"})).await;
    let mut got = a.recv().await;
    while got["type"] != "pong" {
        got = a.recv().await; // presence of bob/carol may come first
    }
    s.stop().await;
}

#[tokio::test]
async fn message_rate_limit() {
    let s = Server::start(SignalConfig {
        msgs_per_sec: 1,
        msg_burst: 3,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = s.join("r", "alice").await; // one token used by the join
    for _ in 0..2 {
        a.send(json!({"type":"ping"})).await;
        assert_eq!(a.recv().await["type"], "pong");
    }
    a.send(json!({"type":"ping"})).await;
    let e = a.expect_error("rate_limited").await;
    assert_eq!(e["fatal"], false);
    s.stop().await;
}

#[tokio::test]
async fn join_rate_room_capacity_room_count_and_connection_limits() {
    let s = Server::start(SignalConfig {
        joins_per_min_per_ip: 4,
        max_peers_per_room: 1,
        max_rooms: 2,
        ..SignalConfig::default()
    })
    .await;
    let (_a, _) = s.join("r1", "a").await;
    let mut x = s.ws().await;
    x.send(json!({"type":"join","v":1,"room":"r1","peer":"b"}))
        .await;
    x.expect_error("room_full").await;
    x.send(json!({"type":"join","v":1,"room":"r2","peer":"a"}))
        .await;
    assert_eq!(x.recv().await["type"], "welcome");
    let mut y = s.ws().await;
    y.send(json!({"type":"join","v":1,"room":"r3","peer":"c"}))
        .await;
    y.expect_error("too_many_rooms").await;
    y.send(json!({"type":"join","v":1,"room":"r3","peer":"c"}))
        .await;
    y.expect_error("join_rate_limited").await;
    s.stop().await;

    let s = Server::start(SignalConfig {
        max_ws_connections: 1,
        ..SignalConfig::default()
    })
    .await;
    let _first = s.ws().await;
    let err = Ws::connect(s.addr, None)
        .await
        .err()
        .expect("second connection refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 503),
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn resume_after_a_real_reconnect_replays_missed_messages() {
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("r", "alice").await;
    let (b, wb) = s.join("r", "bob").await;
    a.recv().await;
    drop(b);
    for i in 0..3 {
        a.send(json!({"type":"data","to":"bob","data":i})).await;
    }
    // A message to bob is accepted while bob is away (no error comes back to alice).
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await["type"], "pong");
    let mut b2 = s.ws().await;
    b2.send(json!({"type":"resume","session":wb["session"],"resumeToken":wb["resumeToken"],"lastSeq":0})).await;
    let r = b2.recv().await;
    assert_eq!(r["type"], "resumed", "{r}");
    assert_eq!(r["lastSeq"], 3);
    for i in 0..3 {
        let d = b2.recv().await;
        assert_eq!(
            (d["data"].as_i64(), d["seq"].as_u64()),
            (Some(i), Some(i as u64 + 1))
        );
    }
    b2.send(json!({"type":"resume","session":wb["session"],"resumeToken":"bad","lastSeq":0}))
        .await;
    b2.expect_error("already_joined").await;
    let mut b3 = s.ws().await;
    b3.send(json!({"type":"resume","session":wb["session"],"resumeToken":"bad"}))
        .await;
    b3.expect_error("resume_failed").await;
    s.stop().await;
}

#[tokio::test]
async fn rest_post_box_talks_to_a_websocket_peer_with_long_poll() {
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("r", "alice").await;
    let (st, w) = post_json(
        s.addr,
        "/v1/rest/join",
        None,
        &json!({"type":"join","v":1,"room":"r","peer":"rest"}),
    )
    .await;
    assert_eq!((st, w["type"].as_str()), (200, Some("welcome")), "{w}");
    assert_eq!(w["peers"][0]["peer"], "alice");
    let sid = w["session"].as_str().unwrap().to_string();
    let tok = w["resumeToken"].as_str().unwrap().to_string();
    assert_eq!(a.recv().await["peer"], "rest");
    let path = format!("/v1/rest/sessions/{sid}/messages");
    let (st, r) = post_json(
        s.addr,
        &path,
        Some(&tok),
        &json!({"type":"offer","to":"alice","sdp":"o"}),
    )
    .await;
    assert_eq!((st, r.clone()), (200, json!({"replies":[]})));
    assert_eq!(a.recv().await["from"], "rest");
    // A long-poll parked before alice answers is woken by the answer.
    let addr = s.addr;
    let (p2, t2) = (path.clone(), tok.clone());
    let poll = tokio::spawn(async move {
        let auth = format!("Bearer {t2}");
        http(
            addr,
            "GET",
            &format!("{p2}?after=0&wait=20"),
            &[("authorization", &auth)],
            b"",
        )
        .await
    });
    a.send(json!({"type":"ping"})).await; // make sure the poll had a chance to park first
    a.recv().await;
    a.send(json!({"type":"answer","to":"rest","sdp":"a"})).await;
    let (st, got) = tokio::time::timeout(T, poll)
        .await
        .expect("long-poll woken")
        .unwrap();
    assert_eq!(st, 200);
    assert_eq!(got["messages"][0]["type"], "answer", "{got}");
    assert_eq!(got["lastSeq"], 1);
    // Errors of the REST surface.
    let (st, e) = post_json(
        s.addr,
        &path,
        Some(&tok),
        &json!({"type":"data","to":"ghost","data":1,"seq":4}),
    )
    .await;
    assert_eq!(
        (st, e["replies"][0]["code"].as_str()),
        (200, Some("peer_not_found"))
    );
    let (st, e) = post_json(s.addr, &path, Some("wrong"), &json!({"type":"ping"})).await;
    assert_eq!((st, e["code"].as_str()), (404, Some("session_not_found")));
    let (st, e) = post_json(s.addr, &path, None, &json!({"type":"ping"})).await;
    assert_eq!((st, e["code"].as_str()), (401, Some("auth_required")));
    let bad = http(
        s.addr,
        "POST",
        &path,
        &[("authorization", &format!("Bearer {tok}"))],
        b"{nope",
    )
    .await;
    assert_eq!((bad.0, bad.1["code"].as_str()), (400, Some("bad_json")));
    let (st, e) = post_json(s.addr, &path, Some(&tok), &json!({"type":"warp"})).await;
    assert_eq!((st, e["code"].as_str()), (400, Some("unknown_type")));
    let big = json!({"type":"data","data":"x".repeat(70_000)});
    let (st, e) = post_json(s.addr, &path, Some(&tok), &big).await;
    assert_eq!((st, e["code"].as_str()), (413, Some("message_too_large")));
    let (st, e) = post_json(
        s.addr,
        "/v1/rest/join",
        None,
        &json!({"type":"join","v":1,"room":"r","peer":"alice"}),
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (409, Some("peer_id_taken")));
    let auth = format!("Bearer {tok}");
    let (st, _) = http(
        s.addr,
        "DELETE",
        &format!("/v1/rest/sessions/{sid}"),
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(st, 204);
    let left = a.recv().await;
    assert_eq!(
        (left["type"].as_str(), left["reason"].as_str()),
        (Some("peer_left"), Some("left"))
    );
    s.stop().await;
}

#[tokio::test]
async fn ice_servers_carry_turn_rest_credentials() {
    let s = Server::start(SignalConfig {
        stun_urls: vec!["stun:127.0.0.1:3478".into()],
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: Some("turnsecret".into()),
        turn_ttl_secs: 600,
        ..SignalConfig::default()
    })
    .await;
    let (st, v) = http(s.addr, "GET", "/v1/ice-servers", &[], b"").await;
    assert_eq!(st, 200);
    assert_eq!(v["iceServers"][0]["urls"][0], "stun:127.0.0.1:3478");
    let (_ws, w) = s.join("r", "alice").await;
    let turn = &w["iceServers"][1];
    let user = turn["username"].as_str().unwrap();
    // The username carries the peer and its room (inside the HMAC).
    assert!(user.ends_with(":alice;room=r"), "{user}");
    assert_eq!(
        turn["credential"].as_str().unwrap(),
        floe_turn::rest::password_for(b"turnsecret", user)
    );
    // The HTTP route names them with ?room=&peer= (development mode: loopback, any).
    let (st, v) = http(
        s.addr,
        "GET",
        "/v1/ice-servers?room=standup&peer=bob",
        &[],
        b"",
    )
    .await;
    assert_eq!(st, 200);
    let user = v["iceServers"][1]["username"].as_str().unwrap();
    let id = floe_turn::rest::Identity::parse(user).unwrap();
    assert_eq!(
        (id.user, id.room, id.tenant),
        ("bob", Some("standup"), None)
    );
    let (st, e) = http(s.addr, "GET", "/v1/ice-servers?room=a%20b", &[], b"").await;
    assert_eq!((st, e["code"].as_str()), (400, Some("bad_message")), "{e}");
    let (st, _) = http(
        s.addr,
        "GET",
        "/v1/ice-servers",
        &[("origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(st, 403);
    s.stop().await;
}

#[tokio::test]
async fn production_mode_requires_jwts_and_refuses_foreign_origins_only_in_development() {
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        ..SignalConfig::default()
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = mint_hs256(
        b"k3y",
        &Claims {
            room: "r".into(),
            peer: Some("bob".into()),
            perms: None,
            exp,
            nbf: None,
            iat: None,
            tenant: None,
        },
    )
    .unwrap();
    let mut ws = Ws::connect(s.addr, Some("https://app.example"))
        .await
        .unwrap();
    ws.send(json!({"type":"join","v":1,"room":"r"})).await;
    ws.expect_error("auth_required").await;
    ws.send(json!({"type":"join","v":1,"room":"r","token":"a.b.c"}))
        .await;
    ws.expect_error("invalid_token").await;
    ws.send(json!({"type":"join","v":1,"room":"r","token":token}))
        .await;
    let w = ws.recv().await;
    assert_eq!(
        (
            w["type"].as_str(),
            w["peer"].as_str(),
            w["tokenExp"].as_u64()
        ),
        (Some("welcome"), Some("bob"), Some(exp))
    );
    let (st, e) = http(s.addr, "GET", "/v1/ice-servers", &[], b"").await;
    assert_eq!((st, e["code"].as_str()), (401, Some("auth_required")));
    let auth = format!("Bearer {token}");
    let (st, _) = http(
        s.addr,
        "GET",
        "/v1/ice-servers",
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(st, 200);
    s.stop().await;

    let s = Server::start(SignalConfig::default()).await;
    let err = Ws::connect(s.addr, Some("https://evil.example"))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 403),
        "{err:?}"
    );
    assert!(Ws::connect(s.addr, Some("http://localhost:8080"))
        .await
        .is_ok());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect_elsewhere() {
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("r", "alice").await;
    let mut idle = s.ws().await;
    let addr = s.addr;
    let stopping = tokio::spawn(s.stop());
    for ws in [&mut a, &mut idle] {
        let g = ws.recv().await;
        assert_eq!(g["type"], "go_away", "{g}");
        assert!(g["reconnectMs"].as_u64().is_some());
        assert_eq!(ws.expect_close().await, (1012, "server_shutdown".into()));
    }
    tokio::time::timeout(T, stopping).await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn static_files_health_and_metrics() {
    let s = Server::start(SignalConfig::default()).await;
    let (st, body) = http(s.addr, "GET", "/", &[], b"").await;
    assert_eq!(st, 200);
    assert!(body.as_str().unwrap().contains("floe"), "index served");
    let (st, body) = http(s.addr, "GET", "/floe.js", &[], b"").await;
    assert_eq!(st, 200);
    assert!(body.as_str().unwrap().contains("export"), "module served");
    assert_eq!(http(s.addr, "GET", "/healthz", &[], b"").await.0, 200);
    let mut ws = s.ws().await;
    ws.send_raw("not json".into()).await;
    ws.expect_error("bad_json").await;
    let (st, body) = http(s.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(st, 200);
    let text = body.as_str().unwrap();
    assert!(
        text.contains("floe_signal_errors_total{code=\"bad_json\"}"),
        "{text}"
    );
    assert!(text.contains("floe_signal_connections"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_by_the_heartbeat_timer_and_resume_works() {
    // heartbeat 1 s: three silent seconds close the connection (the hub task's timer, real time).
    let s = Server::start(SignalConfig {
        heartbeat_secs: 1,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, wa) = s.join("r", "alice").await;
    assert_eq!(wa["heartbeatMs"], 1000);
    let e = a.expect_error("heartbeat_timeout").await;
    assert_eq!(e["fatal"], true);
    assert_eq!(a.expect_close().await, (1008, "heartbeat_timeout".into()));
    let mut a2 = s.ws().await;
    a2.send(json!({"type":"resume","session":wa["session"],"resumeToken":wa["resumeToken"]}))
        .await;
    assert_eq!(a2.recv().await["type"], "resumed");
    s.stop().await;
}

fn token_for_any_room() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let claims = Claims {
        room: "*".into(),
        peer: None,
        perms: None,
        exp,
        nbf: None,
        iat: None,
        tenant: None,
    };
    mint_hs256(b"k3y", &claims).unwrap()
}

/// REST join in `room` with extra headers; answers (status, body).
async fn rest_join_with(
    addr: SocketAddr,
    room: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    let body = json!({"type":"join","v":1,"room":room,"token":token});
    http(
        addr,
        "POST",
        "/v1/rest/join",
        &h,
        body.to_string().as_bytes(),
    )
    .await
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (st, body) = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(st, 200);
    body.as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_newer_long_poll_answers_the_older_one_of_the_same_session() {
    let s = Server::start(SignalConfig {
        max_rest_waiters_per_session: 1,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = s.join("r", "alice").await;
    let (st, w) = rest_join_with(s.addr, "r", None, &[]).await;
    assert_eq!(st, 200, "{w}");
    a.recv().await; // peer_joined
    let peer = w["peer"].as_str().unwrap().to_string();
    let path = format!(
        "/v1/rest/sessions/{}/messages?after=0&wait=20",
        w["session"].as_str().unwrap()
    );
    let auth = format!("Bearer {}", w["resumeToken"].as_str().unwrap());
    let poll = |path: String, auth: String| {
        let addr = s.addr;
        tokio::spawn(
            async move { http(addr, "GET", &path, &[("authorization", &auth)], b"").await },
        )
    };
    let mut first = poll(path.clone(), auth.clone());
    let mut second = poll(path.clone(), auth.clone());
    // Whichever reached the hub first is answered at once, empty, when the other parks.
    let (answered, mut parked) = tokio::select! {
        r = &mut first => (r.unwrap(), second),
        r = &mut second => (r.unwrap(), first),
        () = tokio::time::sleep(T) => panic!("no long-poll was superseded"),
    };
    assert_eq!(answered, (200, json!({"messages": [], "lastSeq": 0})));
    assert!(!parked.is_finished());
    a.send(json!({"type":"data","to":peer,"data":"hi"})).await;
    let (st, got) = tokio::time::timeout(T, &mut parked)
        .await
        .expect("the remaining poll is woken")
        .unwrap();
    assert_eq!((st, got["messages"][0]["data"].as_str()), (200, Some("hi")));
    let text = metrics_text(s.addr).await;
    assert!(
        text.contains("floe_signal_rest_polls_superseded_total"),
        "{text}"
    );
    assert!(text.contains("floe_signal_rest_waiters"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn parked_long_polls_are_capped_per_node_with_server_busy() {
    let s = Server::start(SignalConfig {
        max_rest_waiters: 1,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = s.join("r", "alice").await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (st, w) = rest_join_with(s.addr, "r", None, &[]).await;
        assert_eq!(st, 200, "{w}");
        sessions.push((
            w["peer"].as_str().unwrap().to_string(),
            format!(
                "/v1/rest/sessions/{}/messages",
                w["session"].as_str().unwrap()
            ),
            format!("Bearer {}", w["resumeToken"].as_str().unwrap()),
        ));
    }
    let poll = |path: String, auth: String| {
        let addr = s.addr;
        tokio::spawn(
            async move { http(addr, "GET", &path, &[("authorization", &auth)], b"").await },
        )
    };
    let (p1, path1, auth1) = sessions[0].clone();
    let (p2, path2, auth2) = sessions[1].clone();
    // Two waits of session 1 (after its peer_joined about session 2) race for the one permit:
    // exactly one is refused, the other parks.
    let mut x = poll(format!("{path1}?after=1&wait=20"), auth1.clone());
    let mut y = poll(format!("{path1}?after=1&wait=20"), auth1.clone());
    let (refused, mut parked) = tokio::select! {
        r = &mut x => (r.unwrap(), y),
        r = &mut y => (r.unwrap(), x),
        () = tokio::time::sleep(T) => panic!("no long-poll was refused"),
    };
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (503, Some("server_busy")),
        "{refused:?}"
    );
    // Session 2 is refused while it would have to wait, but not when it need not wait.
    let (st, e) = http(
        s.addr,
        "GET",
        &format!("{path2}?after=0&wait=5"),
        &[("authorization", &auth2)],
        b"",
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (503, Some("server_busy")));
    let (st, v) = http(
        s.addr,
        "GET",
        &format!("{path2}?after=0&wait=0"),
        &[("authorization", &auth2)],
        b"",
    )
    .await;
    assert_eq!((st, v["messages"].as_array().map(Vec::len)), (200, Some(0)));
    a.send(json!({"type":"data","to":p2,"data":"for two"}))
        .await;
    a.send(json!({"type":"data","to":p1,"data":"for one"}))
        .await;
    let (st, got) = tokio::time::timeout(T, &mut parked).await.unwrap().unwrap();
    assert_eq!(
        (st, got["messages"][0]["data"].as_str()),
        (200, Some("for one"))
    );
    // Messages waiting: answered even at the cap (the permit is free again by now anyway).
    let (st, v) = http(
        s.addr,
        "GET",
        &format!("{path2}?after=0&wait=5"),
        &[("authorization", &auth2)],
        b"",
    )
    .await;
    assert_eq!(
        (st, v["messages"][0]["data"].as_str()),
        (200, Some("for two"))
    );
    let text = metrics_text(s.addr).await;
    assert!(
        text.contains("floe_signal_errors_total{code=\"server_busy\"}"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let xff = [("x-forwarded-for", "192.0.2.1")];
    let fwd = [("forwarded", "for=192.0.2.1")];
    // Development mode, the loopback peer is not a trusted proxy: spoofed headers are ignored
    // (had they been believed, the remote address would be refused in development mode).
    let s = Server::start(SignalConfig {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..SignalConfig::default()
    })
    .await;
    for h in [&xff[..], &fwd[..]] {
        let (st, w) = rest_join_with(s.addr, "r", None, h).await;
        assert_eq!((st, w["type"].as_str()), (200, Some("welcome")), "{w}");
    }
    let mut ws = Ws::connect_with(s.addr, &xff).await.unwrap();
    ws.send(json!({"type":"join","v":1,"room":"r"})).await;
    assert_eq!(ws.recv().await["type"], "welcome");
    assert_eq!(
        http(s.addr, "GET", "/v1/ice-servers", &xff, b"").await.0,
        200
    );
    s.stop().await;

    // Behind a trusted local proxy the forwarded client is remote: development mode refuses it.
    let s = Server::start(SignalConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..SignalConfig::default()
    })
    .await;
    for h in [
        &xff[..],
        &fwd[..],
        &[("x-forwarded-for", "192.0.2.1, 127.0.0.1")][..],
    ] {
        let (st, e) = rest_join_with(s.addr, "r", None, h).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (401, Some("auth_required")),
            "{h:?}"
        );
    }
    let (st, e) = http(s.addr, "GET", "/v1/ice-servers", &xff, b"").await;
    assert_eq!((st, e["code"].as_str()), (401, Some("auth_required")));
    let mut ws = Ws::connect_with(s.addr, &xff).await.unwrap();
    ws.send(json!({"type":"join","v":1,"room":"r"})).await;
    ws.expect_error("auth_required").await;
    let (st, _) = rest_join_with(s.addr, "r", None, &[]).await;
    assert_eq!(st, 200, "the proxy itself is local");
    s.stop().await;

    // Production mode: the join budget is per forwarded client, the right-most untrusted hop.
    let token = token_for_any_room();
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        joins_per_min_per_ip: 1,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..SignalConfig::default()
    })
    .await;
    let join = |h: &'static str, v: &'static str| {
        let (addr, token) = (s.addr, token.clone());
        async move { rest_join_with(addr, "r", Some(&token), &[(h, v)]).await }
    };
    assert_eq!(
        join("x-forwarded-for", "203.0.113.9, 192.0.2.1").await.0,
        200
    );
    let (st, e) = join("x-forwarded-for", "192.0.2.1").await;
    assert_eq!((st, e["code"].as_str()), (429, Some("join_rate_limited")));
    let (st, e) = join("forwarded", "for=192.0.2.1").await;
    assert_eq!((st, e["code"].as_str()), (429, Some("join_rate_limited")));
    assert_eq!(join("x-forwarded-for", "192.0.2.1, 192.0.2.2").await.0, 200);
    assert_eq!(join("forwarded", "for=\"[2001:db8::7]:443\"").await.0, 200);
    let mut ws = Ws::connect_with(s.addr, &[("x-forwarded-for", "192.0.2.1")])
        .await
        .unwrap();
    ws.send(json!({"type":"join","v":1,"room":"r","token":token}))
        .await;
    ws.expect_error("join_rate_limited").await;
    s.stop().await;

    // Production mode, untrusted peer: every forged address is the same socket peer.
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        joins_per_min_per_ip: 1,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..SignalConfig::default()
    })
    .await;
    let t = Some(token.as_str());
    assert_eq!(
        rest_join_with(s.addr, "r", t, &[("x-forwarded-for", "192.0.2.1")])
            .await
            .0,
        200
    );
    let (st, e) = rest_join_with(s.addr, "r", t, &[("x-forwarded-for", "192.0.2.2")]).await;
    assert_eq!((st, e["code"].as_str()), (429, Some("join_rate_limited")));
    s.stop().await;
}

#[tokio::test]
async fn cors_and_origin_checks_follow_the_allow_list() {
    let token = token_for_any_room();
    let auth = format!("Bearer {token}");
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        allow_origins: vec!["https://app.example".into()],
        ..SignalConfig::default()
    })
    .await;
    let app = ("origin", "https://app.example");
    let evil = ("origin", "https://evil.example");
    let preflight = [
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let (st, head, _) = http_full(
        s.addr,
        "OPTIONS",
        "/v1/rest/join",
        &[app, preflight[0], preflight[1]],
        b"",
    )
    .await;
    assert_eq!(st, 204, "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization, content-type"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-methods: get, post, delete"),
        "{head}"
    );
    assert!(!head.contains("access-control-allow-credentials"), "{head}");
    let (st, head, e) = http_full(
        s.addr,
        "OPTIONS",
        "/v1/rest/sessions/0123456789abcdef/messages",
        &[evil, preflight[0]],
        b"",
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (403, Some("forbidden")));
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let (st, head, v) = http_full(
        s.addr,
        "GET",
        "/v1/ice-servers",
        &[app, ("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");
    let (st, e) = http(
        s.addr,
        "GET",
        "/v1/ice-servers",
        &[evil, ("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (403, Some("forbidden")));
    let (st, e) = rest_join_with(s.addr, "r", Some(&token), &[evil]).await;
    assert_eq!((st, e["code"].as_str()), (403, Some("forbidden")));
    let (st, head, w) = http_full(
        s.addr,
        "POST",
        "/v1/rest/join",
        &[app, ("content-type", "application/json")],
        json!({"type":"join","v":1,"room":"r","token":token})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!((st, w["type"].as_str()), (200, Some("welcome")));
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    // No Origin (not a browser): served, no CORS headers.
    let (st, head, _) = http_full(
        s.addr,
        "GET",
        "/v1/ice-servers",
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(st, 200);
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    // The WebSocket honours the same list; same-origin pages (the demo page) always pass.
    assert_eq!(Ws::connect_with(s.addr, &[evil]).await.err(), Some(403));
    assert!(Ws::connect_with(s.addr, &[app]).await.is_ok());
    let same = format!("http://{}", s.addr);
    assert!(Ws::connect_with(s.addr, &[("origin", &same)]).await.is_ok());
    s.stop().await;

    // Production without a list: any page may use the WebSocket (a token is still needed), but
    // cross-origin REST answers carry no CORS headers and preflights are refused.
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        ..SignalConfig::default()
    })
    .await;
    let (st, head, _) = http_full(
        s.addr,
        "GET",
        "/v1/ice-servers",
        &[evil, ("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(st, 200);
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let (st, _) = http(
        s.addr,
        "OPTIONS",
        "/v1/rest/join",
        &[evil, preflight[0]],
        b"",
    )
    .await;
    assert_eq!(st, 403);
    assert!(Ws::connect_with(s.addr, &[evil]).await.is_ok());
    s.stop().await;

    // Development mode: localhost pages get CORS (a front-end dev server on another port).
    let s = Server::start(SignalConfig::default()).await;
    let local = ("origin", "http://localhost:5173");
    let (st, head, _) = http_full(
        s.addr,
        "OPTIONS",
        "/v1/rest/join",
        &[local, preflight[0]],
        b"",
    )
    .await;
    assert_eq!(st, 204);
    assert!(
        head.contains("access-control-allow-origin: http://localhost:5173"),
        "{head}"
    );
    assert_eq!(
        http(
            s.addr,
            "OPTIONS",
            "/v1/rest/join",
            &[evil, preflight[0]],
            b""
        )
        .await
        .0,
        403
    );
    s.stop().await;

    // "*" would open a developer's local server to every web site: refused at start.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = SignalServer::new(SignalConfig {
        allow_origins: vec!["*".into()],
        ..SignalConfig::default()
    })
    .run(listener, std::future::pending())
    .await
    .expect_err("refused at start");
    assert!(
        err.to_string()
            .contains("\"*\" is refused in development mode"),
        "{err}"
    );
}

#[tokio::test]
async fn hub_limits_from_the_config_take_effect() {
    let s = Server::start(SignalConfig {
        join_timeout_secs: 1,
        max_held_candidates: 1,
        rest_poll_batch: 1,
        mailbox_max_msgs: 4,
        ..SignalConfig::default()
    })
    .await;
    let mut idle = s.ws().await;
    let e = idle.expect_error("join_timeout").await;
    assert_eq!(e["fatal"], true);
    assert_eq!(idle.expect_close().await, (1008, "join_timeout".into()));
    let (mut a, _) = s.join("r", "alice").await;
    let (st, w) = rest_join_with(s.addr, "r", None, &[]).await;
    assert_eq!(st, 200);
    a.recv().await;
    let peer = w["peer"].as_str().unwrap();
    let cand = json!({"type":"candidate","to":peer,"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"});
    a.send(cand.clone()).await;
    a.send(cand).await;
    a.expect_error("candidate_buffer_full").await;
    for i in 0..2 {
        a.send(json!({"type":"data","to":peer,"data":i})).await;
    }
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await["type"], "pong");
    let path = format!(
        "/v1/rest/sessions/{}/messages?after=0",
        w["session"].as_str().unwrap()
    );
    let auth = format!("Bearer {}", w["resumeToken"].as_str().unwrap());
    let (st, v) = http(s.addr, "GET", &path, &[("authorization", &auth)], b"").await;
    assert_eq!(
        (
            st,
            v["messages"].as_array().map(Vec::len),
            v["lastSeq"].as_u64()
        ),
        (200, Some(1), Some(2))
    );
    // Three more unacknowledged messages overflow the 4-message mailbox: the session ends.
    for i in 0..3 {
        a.send(json!({"type":"data","to":peer,"data":i})).await;
    }
    let left = a.recv().await;
    assert_eq!(
        (left["type"].as_str(), left["reason"].as_str()),
        (Some("peer_left"), Some("overflow")),
        "{left}"
    );
    s.stop().await;
}

/// An HS256 token (secret `k3y`) for `room` and `peer`, expiring `exp_in` seconds from now
/// (negative: already expired).
fn token_expiring(room: &str, peer: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        room: room.into(),
        peer: Some(peer.into()),
        perms: None,
        exp: now.saturating_add_signed(exp_in),
        nbf: None,
        iat: None,
        tenant: None,
    };
    mint_hs256(b"k3y", &claims).unwrap()
}

#[tokio::test]
async fn a_deadline_set_by_a_frame_handled_inline_wakes_the_hub_task() {
    // A `join` is handled on its connection's task, not the hub task's; the hub task sleeps on
    // the earliest deadline it knew (this connection's heartbeat check, 30 s away). The token
    // expiring in 2 s must still end the session then, not when the task next wakes.
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        ..SignalConfig::default()
    })
    .await;
    let mut a = s.ws().await;
    a.send(json!({"type":"join","v":1,"room":"r","token":token_expiring("r","alice",2)}))
        .await;
    assert_eq!(a.recv().await["type"], "welcome");
    let e = a.expect_error("token_expired").await;
    assert_eq!(e["fatal"], true, "{e}");
    s.stop().await;
}

#[tokio::test]
async fn refresh_with_an_expired_token_is_fatal_and_closes_the_connection() {
    // Arrange: production mode, alice and bob in one room.
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        ..SignalConfig::default()
    })
    .await;
    let mut a = s.ws().await;
    a.send(json!({"type":"join","v":1,"room":"r","token":token_expiring("r","alice",60)}))
        .await;
    assert_eq!(a.recv().await["type"], "welcome");
    // At join an expired token is not fatal: the connection stays usable.
    let mut b = s.ws().await;
    b.send(json!({"type":"join","v":1,"room":"r","token":token_expiring("r","bob",-60)}))
        .await;
    let e = b.expect_error("token_expired").await;
    assert_eq!(e["fatal"], false, "{e}");
    b.send(json!({"type":"join","v":1,"room":"r","token":token_expiring("r","bob",60)}))
        .await;
    assert_eq!(b.recv().await["type"], "welcome");
    assert_eq!(a.recv().await["type"], "peer_joined");

    // Act: bob refreshes with a token that already expired.
    b.send(json!({"type":"refresh","token":token_expiring("r","bob",-60)}))
        .await;

    // Assert: fatal error, then the close (1008, reason the code); the session ended.
    let e = b.expect_error("token_expired").await;
    assert_eq!(e["fatal"], true, "{e}");
    assert_eq!(b.expect_close().await, (1008, "token_expired".into()));
    let left = a.recv().await;
    assert_eq!(
        (
            left["type"].as_str(),
            left["peer"].as_str(),
            left["reason"].as_str()
        ),
        (Some("peer_left"), Some("bob"), Some("expired")),
        "{left}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_gets_bad_json_before_the_close() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    // Arrange: alice and bob in one room.
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("r", "alice").await;
    let (mut b, w) = s.join("r", "bob").await;
    a.recv().await; // peer_joined

    // Act: a raw text frame whose payload is not UTF-8 (the client API cannot build one).
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    b.inner.send(Message::Frame(bad)).await.unwrap();

    // Assert: `bad_json`, fatal (the transport cannot read past the frame), then close 1007.
    let e = b.expect_error("bad_json").await;
    assert_eq!(e["fatal"], true, "{e}");
    assert_eq!(b.expect_close().await, (1007, "bad_json".into()));
    // The session waits for a resume; alice is untouched.
    let mut b2 = s.ws().await;
    b2.send(json!({"type":"resume","session":w["session"],"resumeToken":w["resumeToken"]}))
        .await;
    let r = b2.recv().await;
    assert_eq!(r["type"], "resumed", "{r}");
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn post_box_query_string_errors_are_json_bad_message() {
    // Arrange: a post-box session.
    let s = Server::start(SignalConfig::default()).await;
    let (st, w) = rest_join_with(s.addr, "r", None, &[]).await;
    assert_eq!(st, 200, "{w}");
    let path = format!(
        "/v1/rest/sessions/{}/messages",
        w["session"].as_str().unwrap()
    );
    let auth = format!("Bearer {}", w["resumeToken"].as_str().unwrap());

    for query in [
        "after=-1",
        "after=x&wait=0",
        "wait=1e3",
        "after=99999999999999999999",
    ] {
        // Act: poll with a query string that does not parse.
        let (st, head, e) = http_full(
            s.addr,
            "GET",
            &format!("{path}?{query}"),
            &[("authorization", &auth)],
            b"",
        )
        .await;

        // Assert: the JSON error body of every other error, HTTP 400.
        assert_eq!(
            (
                st,
                e["type"].as_str(),
                e["code"].as_str(),
                e["fatal"].as_bool()
            ),
            (400, Some("error"), Some("bad_message"), Some(false)),
            "{query}: {e}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
    }
    // A well-formed poll still works.
    let (st, p) = http(
        s.addr,
        "GET",
        &format!("{path}?after=0&wait=0"),
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!((st, p["lastSeq"].as_u64()), (200, Some(0)), "{p}");
    s.stop().await;
}

#[tokio::test]
async fn production_mode_serves_metrics_to_local_scrapers_only() {
    // Arrange: production mode behind a trusted proxy on loopback.
    let s = Server::start(SignalConfig {
        jwt_secret: Some("k3y".into()),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..SignalConfig::default()
    })
    .await;

    // Act + assert: a scraper on this host is served ...
    let (st, head, _) = http_full(s.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(st, 200, "{head}");
    // ... a request relayed by a proxy (a public client) is refused with the JSON error, and counted.
    for h in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "127.0.0.1"),
    ] {
        let (st, e) = http(s.addr, "GET", "/metrics", &[h], b"").await;
        assert_eq!(
            (st, e["code"].as_str()),
            (403, Some("forbidden")),
            "{h:?}: {e}"
        );
    }
    let text = metrics_text(s.addr).await;
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("floe_signal_metrics_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(refused.is_some_and(|n| n >= 3.0), "{text}");
    s.stop().await;

    // Development mode: served as before, proxied or not.
    let s = Server::start(SignalConfig::default()).await;
    let (st, _) = http(
        s.addr,
        "GET",
        "/metrics",
        &[("x-forwarded-for", "203.0.113.7")],
        b"",
    )
    .await;
    assert_eq!(st, 200);
    s.stop().await;
}

// ---- issue 12: connection limits, deadlines, slow readers ---------------------------------

/// A TCP connection to `addr` from local address `from` (127.0.0.x: distinct client IPs).
async fn tcp_from(from: &str, addr: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(T, sock.connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// Whether the server closed `s` (EOF or reset) within `T`, reading and discarding what it sent.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Whether `s` is still open: nothing arrives within 300 ms and no EOF.
async fn still_open(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
        .await
        .is_err()
}

/// The value of the first metric line starting with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn idle_dripping_and_kept_alive_http_connections_meet_the_header_deadline() {
    // Issue 12 finding 1: before, none of these was ever closed by the server.
    let s = Server::start(SignalConfig {
        http_header_timeout_secs: 1,
        ..SignalConfig::default()
    })
    .await;
    // Idle: connects and never sends a byte.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    // Dripping: a byte of a request head every 200 ms, never the blank line.
    let mut drip = TcpStream::connect(s.addr).await.unwrap();
    let dripper = tokio::spawn(async move {
        for b in
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if drip.write_all(&[*b]).await.is_err() {
                return (true, drip);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_millis(1), drip.read(&mut buf)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                return (true, drip);
            }
        }
        (false, drip)
    });
    // Kept alive: one complete request, then silence.
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    assert!(closed_by_server(&mut idle).await, "idle connection kept");
    assert!(
        closed_by_server(&mut kept).await,
        "kept-alive connection kept"
    );
    let (closed, _drip) = dripper.await.unwrap();
    assert!(closed, "dripping connection kept");
    let text = metrics_text(s.addr).await;
    assert!(
        metric(&text, "floe_signal_http_timeouts_total{kind=\"header\"}") >= 3.0,
        "{text}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_dripped_request_body_gets_request_timeout() {
    let s = Server::start(SignalConfig {
        http_request_timeout_secs: 1,
        max_poll_wait_secs: 1,
        ..SignalConfig::default()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        b"POST /v1/rest/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(T, c.read_to_end(&mut buf))
        .await
        .expect("answered and closed in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_globally_at_accept_whatever_they_carry() {
    // Issue 12 finding 1: before, plain HTTP connections counted against no limit at all.
    let s = Server::start(SignalConfig {
        max_connections: Some(5),
        max_connections_per_ip: Some(3),
        ..SignalConfig::default()
    })
    .await;
    // 127.0.0.1: a WebSocket, a parked long-poll's worth of idle HTTP and a plain idle socket.
    let (mut ws, _) = s.join("r", "a").await;
    let mut a2 = tcp_from("127.0.0.1", s.addr).await;
    let mut a3 = tcp_from("127.0.0.1", s.addr).await;
    assert!(still_open(&mut a2).await && still_open(&mut a3).await);
    // The fourth from 127.0.0.1 is closed at once, before any HTTP.
    let mut a4 = tcp_from("127.0.0.1", s.addr).await;
    assert!(closed_by_server(&mut a4).await, "per-IP cap not applied");
    // Another address still gets in, up to the global cap.
    let mut b1 = tcp_from("127.0.0.2", s.addr).await;
    let mut b2 = tcp_from("127.0.0.2", s.addr).await;
    assert!(still_open(&mut b1).await && still_open(&mut b2).await);
    let mut b3 = tcp_from("127.0.0.3", s.addr).await;
    assert!(closed_by_server(&mut b3).await, "global cap not applied");
    // The WebSocket still works, and a slot given back is reusable.
    ws.send(json!({"type":"ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    drop(b1);
    drop(a2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = metrics_text(s.addr).await;
    assert_eq!(
        metric(
            &text,
            "floe_signal_connections_refused_total{reason=\"per_ip\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "floe_signal_connections_refused_total{reason=\"global\"}"
        ),
        1.0,
        "{text}"
    );
    drop(ws);
    s.stop().await;
}

#[tokio::test]
async fn trusted_proxies_are_exempt_from_the_per_ip_connection_cap() {
    let s = Server::start(SignalConfig {
        max_connections: Some(10),
        max_connections_per_ip: Some(1),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..SignalConfig::default()
    })
    .await;
    let mut c: Vec<TcpStream> = Vec::new();
    for _ in 0..3 {
        c.push(tcp_from("127.0.0.1", s.addr).await);
    }
    for x in &mut c {
        assert!(still_open(x).await);
    }
    s.stop().await;
}

#[tokio::test]
async fn a_websocket_dripping_a_never_finished_frame_meets_the_heartbeat_deadline() {
    // Only complete messages reach the hub and reset its heartbeat timer: bytes of a frame that
    // never ends do not. (This held before issue 12 too; the test pins it.)
    let s = Server::start(SignalConfig {
        heartbeat_secs: 1,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = s.join("r", "dripper").await;
    // A masked text frame announcing 256 bytes, then its payload one byte at a time.
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = a.inner.get_mut() else {
        unreachable!("a plain ws:// connection")
    };
    tcp.write_all(&[0x81, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
        .await
        .unwrap();
    let mut sent = 0;
    let closed = loop {
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = a.inner.get_mut() else {
            unreachable!("a plain ws:// connection")
        };
        if sent < 255 && tcp.write_all(b"x").await.is_ok() {
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(200), a.inner.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["code"], "heartbeat_timeout", "{v}");
            }
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(_) => break None,
        }
        assert!(sent < 255, "never closed while dripping");
    };
    assert_eq!(closed, Some(1008));
    s.stop().await;
}

/// Joins `room` as `peer` over a socket with a 4 KiB receive buffer (a reader that falls behind
/// fills it fast).
async fn join_small_window(addr: SocketAddr, room: &str, peer: &str) -> (Ws, Value) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    let (inner, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let mut ws = Ws { inner };
    ws.send(json!({"type":"join","v":1,"room":room,"peer":peer}))
        .await;
    let w = ws.recv().await;
    assert_eq!(w["type"], "welcome", "{w}");
    (ws, w)
}

#[tokio::test]
async fn a_websocket_that_never_reads_is_cut_off_at_the_byte_bound_and_its_queue_freed() {
    // Issue 12 finding 2: a receiver that acknowledges every message unread keeps its mailbox
    // empty; before, only 1024 frames (of up to 256 KiB) bounded its socket queue, and 200
    // messages of 60 KB (12 MB) never reached that bound: nobody was cut off.
    // a sends two messages per round (the data and a ping): the per-connection rate limit,
    // not what this test is about, would drop the pings after its burst.
    let s = Server::start(SignalConfig {
        msgs_per_sec: 1000,
        msg_burst: 1000,
        ..SignalConfig::default()
    })
    .await;
    let (mut a, _) = s.join("slow", "a").await;
    let (mut b, wb) = join_small_window(s.addr, "slow", "b").await;
    let slow = |t: &str| metric(t, "floe_signal_slow_consumers_total");
    let before = slow(&metrics_text(s.addr).await);
    let blob = "x".repeat(60_000);
    let mut cut = false;
    for seq in 1..=200u64 {
        a.send(json!({"type":"data","to":"b","data":blob})).await;
        // a's pong says the hub has numbered and queued the message for b.
        a.send(json!({"type":"ping"})).await;
        while a.recv().await["type"] != "pong" {}
        // b acknowledges exactly what it was sent (it can count), never reading it.
        let ack = json!({"type":"ack","seq":seq});
        if b.inner
            .send(Message::Text(ack.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        // Checked every round: messages for b after its cut-off fill its (unacknowledged)
        // mailbox, and 17 of them would end the session by `mailbox_overflow`.
        if slow(&metrics_text(s.addr).await) > before {
            cut = true;
            break;
        }
    }
    for _ in 0..100 {
        if cut {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        cut = slow(&metrics_text(s.addr).await) > before;
    }
    assert!(
        cut,
        "the reader that never reads was not cut off: {}",
        metrics_text(s.addr).await
    );
    // Its queue was freed at once (other tests' queues hold a few small frames at most).
    let text = metrics_text(s.addr).await;
    assert!(
        metric(&text, "floe_signal_ws_queued_bytes") < 65536.0,
        "{text}"
    );
    // The connection ends; a reader that catches up in time sees slow_consumer and 1008.
    let mut end = None;
    while let Some(m) = tokio::time::timeout(T, b.inner.next()).await.expect("ends") {
        match m {
            Ok(Message::Text(t)) if t.as_str().contains("slow_consumer") => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["fatal"], true, "{v}");
            }
            Ok(Message::Close(f)) => {
                end = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if let Some(end) = end {
        assert_eq!(end, (1008, "slow_consumer".to_string()));
    }
    // The session stays resumable.
    let mut b2 = s.ws().await;
    b2.send(json!({"type":"resume","session":wb["session"],"resumeToken":wb["resumeToken"],"lastSeq":0}))
        .await;
    let r = b2.recv().await;
    assert_eq!(r["type"], "resumed", "{r}");
    s.stop().await;
}

#[tokio::test]
async fn acks_beyond_what_was_sent_are_bad_ack_on_websocket_and_post_box() {
    let s = Server::start(SignalConfig::default()).await;
    let (mut a, _) = s.join("acks", "a").await;
    a.send(json!({"type":"ack","seq":u64::MAX})).await;
    let e = a.expect_error("bad_ack").await;
    assert_eq!(e["fatal"], false);
    let (st, w) = rest_join_with(s.addr, "acks", None, &[]).await;
    assert_eq!(st, 200, "{w}");
    let tok = w["resumeToken"].as_str().unwrap().to_string();
    let path = format!(
        "/v1/rest/sessions/{}/messages?after=18446744073709551615&wait=0",
        w["session"].as_str().unwrap()
    );
    let auth = format!("Bearer {tok}");
    let (st, body) = http(s.addr, "GET", &path, &[("authorization", &auth)], b"").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("bad_ack")),
        "{body}"
    );
    s.stop().await;
}
