//! `floe peer chat|send|receive`: a WebRTC peer on the command line (crates/peer).
//!
//! Output contract (stdout, one line each, stable for scripts and tests):
//! `local candidate: <type> <addr> [via turn <udp|tcp|tls>] [base <addr>]`,
//! `remote candidate: <type> <addr>`,
//! `selected pair: local <type> <addr> <-> remote <type> <addr> via <udp|turn-udp|turn-tcp|turn-tls> rtt <ms> ms`,
//! `sent <name> <bytes> bytes sha256 <hex>` (after the receiver confirmed the checksum),
//! `received <name> <bytes> bytes sha256 <hex> verified|unverified`.
//! Progress and diagnostics go to stderr.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use floe_peer::ice_servers::TurnTransport;
use floe_peer::transfer::{self, Checksum, Control, FileAck, FileHeader, Receiving, FILE_CHUNK};
use floe_peer::{connect, Chan, Connection, PeerEvent, PeerOptions, SignalOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Arguments of `floe peer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Chat: lines from stdin go to the other peer, its lines are printed.
    Chat(Common),
    /// Send FILE to the other peer (a `floe peer receive` or the browser demo page).
    Send {
        /// The file to send.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Receive one file from the other peer, verify its SHA-256 and write it.
    Receive {
        /// Where to write: a file path, or a directory for the sender's file name
        /// (default: the sender's file name in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Signalling server base URL.
    #[arg(long, env = "FLOE_SIGNAL", default_value = "http://127.0.0.1:8080")]
    signal: String,
    /// Signalling JWT (production-mode servers; see `floe token`).
    #[arg(long, env = "FLOE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Our peer id (default: assigned by the server or taken from the token).
    #[arg(long)]
    peer_id: Option<String>,
    /// Talk to this peer (default: the first other peer in the room, or the first to join).
    #[arg(long)]
    to: Option<String>,
    /// Trust this PEM certificate (or CA) for `turns:` and `wss://`, besides the system's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Use relayed candidates only (like the browser's iceTransportPolicy "relay").
    #[arg(long)]
    relay_only: bool,
    /// Reach TURN servers only over these transports (udp, tcp, tls; repeatable or
    /// comma-separated; default: every TURN URL the signalling server offers).
    #[arg(long, value_delimiter = ',', value_parser = parse_transport)]
    turn_transport: Vec<TurnTransport>,
    /// An extra ICE server URL (repeatable): `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp|tcp`,
    /// `turns:HOST:PORT`. TURN URLs use --ice-username/--ice-credential.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// Username for the --ice-server TURN URLs.
    #[arg(long)]
    ice_username: Option<String>,
    /// Password for the --ice-server TURN URLs.
    #[arg(long, env = "FLOE_ICE_CREDENTIAL", hide_env_values = true)]
    ice_credential: Option<String>,
    /// Use only the --ice-server URLs, not those the signalling server hands out.
    #[arg(long, requires = "ice_servers")]
    only_ice_servers: bool,
    /// Seconds to wait for another peer to join.
    #[arg(long, default_value_t = 300)]
    wait: u64,
    /// Seconds to establish the connection once the other peer is there.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

impl Common {
    fn options(&self) -> anyhow::Result<PeerOptions> {
        let mut o = PeerOptions::new(SignalOptions {
            url: self.signal.clone(),
            room: self.room.clone(),
            peer: self.peer_id.clone(),
            token: self.token.clone(),
            ca_file: self.ca_file.clone(),
        });
        o.remote = self.to.clone();
        o.relay_only = self.relay_only;
        o.wait_for_peer = Duration::from_secs(self.wait);
        o.turn_transports = self.turn_transport.clone();
        for url in &self.ice_servers {
            let server = floe_peer::ice_servers::parse_url(
                url,
                self.ice_username.as_deref(),
                self.ice_credential.as_deref(),
            )
            .with_context(|| format!("--ice-server {url:?}"))?;
            o.extra_ice_servers.push(server);
        }
        o.replace_ice_servers = self.only_ice_servers;
        Ok(o)
    }
}

fn parse_transport(s: &str) -> Result<TurnTransport, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(TurnTransport::Udp),
        "tcp" => Ok(TurnTransport::Tcp),
        "tls" => Ok(TurnTransport::Tls),
        other => Err(format!("{other:?} is not udp, tcp or tls")),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        match args.action {
            Action::Chat(c) => chat(c).await,
            Action::Send { file, common } => send(&file, common).await,
            Action::Receive { out, common } => receive(out, common).await,
        }
    });
    // A blocking read of stdin (chat) would keep a graceful runtime shutdown waiting forever.
    rt.shutdown_background();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// A connection plus the messages that arrived while it was being established.
struct Established {
    conn: Connection,
    early: std::collections::VecDeque<PeerEvent>,
}

impl Established {
    async fn next_event(&mut self) -> Option<PeerEvent> {
        match self.early.pop_front() {
            Some(ev) => Some(ev),
            None => self.conn.next_event().await,
        }
    }
}

/// Joins, connects, and returns once both data channels are open and a pair is selected.
/// Data that the other side sent meanwhile is kept, in order.
async fn establish(common: &Common) -> anyhow::Result<Established> {
    eprintln!("joining room {:?} at {}", common.room, common.signal);
    let mut conn = connect(common.options()?).await?;
    eprintln!(
        "we are {:?}; connecting to {:?}",
        conn.local_peer, conn.remote_peer
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(common.timeout);
    let mut open = Vec::new();
    let mut selected = false;
    let mut early = std::collections::VecDeque::new();
    while open.len() < 2 || !selected {
        let ev = tokio::time::timeout_at(deadline, conn.next_event())
            .await
            .map_err(|_| {
                anyhow!(
                    "no connection within {} s (see candidates above)",
                    common.timeout
                )
            })?
            .ok_or_else(|| anyhow!("connection task ended"))?;
        match ev {
            PeerEvent::ChannelOpen(c) => open.push(c),
            PeerEvent::Selected(_) => {
                selected = true;
                report(&ev);
            }
            PeerEvent::Closed(r) => bail!("connection closed: {r}"),
            PeerEvent::Message { .. } => early.push_back(ev),
            other => report(&other),
        }
    }
    Ok(Established { conn, early })
}

/// Prints an event line (stdout for the contract lines, stderr for the rest).
fn report(ev: &PeerEvent) {
    match ev {
        PeerEvent::LocalCandidate(c) => println!("local candidate: {c}"),
        PeerEvent::RemoteCandidate(k, a) => println!("remote candidate: {k} {a}"),
        PeerEvent::Selected(p) => println!("selected pair: {p}"),
        PeerEvent::TurnFailed { server, reason } => eprintln!("turn {server}: {reason}"),
        PeerEvent::IceState(s) => eprintln!("ice: {s}"),
        PeerEvent::ChannelOpen(c) => eprintln!("channel open: {c:?}"),
        PeerEvent::Message { .. } => {}
        PeerEvent::Closed(r) => eprintln!("closed: {r}"),
    }
}

async fn chat(common: Common) -> anyhow::Result<()> {
    let mut conn = establish(&common).await?;
    eprintln!("connected; type lines to send, end with Ctrl-D");
    let remote = conn.conn.remote_peer.clone();
    let sender = conn.conn.sender();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(l) => sender.send(Chan::Chat, false, l.into_bytes()).await?,
                None => break,
            },
            ev = conn.next_event() => match ev {
                Some(PeerEvent::Message { chan: Chan::Chat, data, .. }) => {
                    println!("{remote}: {}", String::from_utf8_lossy(&data));
                }
                Some(PeerEvent::Closed(r)) => {
                    eprintln!("closed: {r}");
                    return Ok(());
                }
                None => return Ok(()),
                Some(other) => report(&other),
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), sender.flush()).await;
    conn.conn.close().await;
    Ok(())
}

async fn send(path: &Path, common: Common) -> anyhow::Result<()> {
    // Hash first: the header carries the checksum (floe.js and floe peer verify it).
    let (size, sha256) = hash_file(path).await?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut conn = establish(&common).await?;
    let header = FileHeader {
        kind: "file".into(),
        name: name.clone(),
        size,
        mime: String::new(),
        sha256: Some(sha256.clone()),
    };
    let sender = conn.conn.sender();
    let (ack_tx, mut ack_rx) = mpsc::channel::<FileAck>(1);
    let started = Instant::now();
    let path = path.to_owned();
    let mut upload = tokio::spawn(async move {
        sender
            .send(Chan::File, false, serde_json::to_vec(&header)?)
            .await?;
        let mut file = tokio::fs::File::open(&path).await?;
        let mut progress = Progress::new("sending", &name, size);
        let mut sent = 0u64;
        let mut buf = vec![0u8; FILE_CHUNK];
        loop {
            let n = read_full(&mut file, &mut buf).await?;
            if n == 0 {
                break;
            }
            sender.send(Chan::File, true, buf[..n].to_vec()).await?;
            sent += n as u64;
            progress.update(sent);
        }
        progress.finish();
        anyhow::ensure!(sent == size, "{} changed while sending", path.display());
        anyhow::Ok(())
    });
    let mut upload_done = false;
    let ack = loop {
        tokio::select! {
            r = &mut upload, if !upload_done => {
                r.context("sending task")??;
                upload_done = true;
            }
            ack = ack_rx.recv() => break ack.ok_or_else(|| anyhow!("no acknowledgement"))?,
            ev = conn.next_event() => match ev {
                Some(PeerEvent::Message { chan: Chan::File, binary: false, data }) => {
                    match transfer::parse_control(&String::from_utf8_lossy(&data)) {
                        Ok(Control::Ack(a)) => { let _ = ack_tx.try_send(a); }
                        Ok(Control::Header(_)) => eprintln!("ignoring a file offered by the other side"),
                        Err(e) => eprintln!("{e}"),
                    }
                }
                Some(PeerEvent::Closed(r)) => bail!("connection closed before the receiver confirmed: {r}"),
                None => bail!("connection ended before the receiver confirmed"),
                Some(other) => report(&other),
            }
        }
    };
    if !ack.ok || ack.size != size || !ack.sha256.eq_ignore_ascii_case(&sha256) {
        bail!(
            "the receiver got {} bytes with sha256 {} (ok: {}), we sent {size} bytes with sha256 {sha256}",
            ack.size,
            ack.sha256,
            ack.ok
        );
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    println!("sent {} {size} bytes sha256 {sha256}", ack.name);
    eprintln!(
        "{:.1} MiB/s, confirmed by {}",
        size as f64 / secs / (1 << 20) as f64,
        conn.conn.remote_peer
    );
    conn.conn.close().await;
    Ok(())
}

async fn receive(out: Option<PathBuf>, common: Common) -> anyhow::Result<()> {
    let mut conn = establish(&common).await?;
    eprintln!("connected; waiting for a file");
    let mut state: Option<(Receiving, tokio::fs::File, PathBuf, PathBuf, Progress)> = None;
    loop {
        let ev = conn
            .next_event()
            .await
            .ok_or_else(|| anyhow!("connection ended"))?;
        match ev {
            PeerEvent::Message {
                chan: Chan::File,
                binary: false,
                data,
            } => match transfer::parse_control(&String::from_utf8_lossy(&data)) {
                Ok(Control::Header(h)) => {
                    let target = target_path(out.as_deref(), &h.name);
                    let part = part_path(&target);
                    let file = tokio::fs::File::create(&part)
                        .await
                        .with_context(|| format!("creating {}", part.display()))?;
                    let progress = Progress::new("receiving", &h.name, h.size);
                    let r = Receiving::new(h);
                    let done = r.is_complete();
                    state = Some((r, file, part, target, progress));
                    if done {
                        break;
                    }
                }
                Ok(Control::Ack(_)) => {}
                Err(e) => eprintln!("{e}"),
            },
            PeerEvent::Message {
                chan: Chan::File,
                binary: true,
                data,
            } => {
                let Some((r, file, _, _, progress)) = state.as_mut() else {
                    bail!("{}", transfer::TransferError::NoHeader);
                };
                r.push(&data)?;
                file.write_all(&data).await?;
                progress.update(r.received());
                if r.is_complete() {
                    break;
                }
            }
            PeerEvent::Message {
                chan: Chan::Chat,
                data,
                ..
            } => eprintln!(
                "{}: {}",
                conn.conn.remote_peer,
                String::from_utf8_lossy(&data)
            ),
            PeerEvent::Closed(r) => bail!("connection closed during the transfer: {r}"),
            other => report(&other),
        }
    }
    let Some((r, mut file, part, target, mut progress)) = state else {
        bail!("no file received");
    };
    progress.finish();
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    let (ack, result) = r.finish();
    conn.conn
        .send(Chan::File, false, serde_json::to_vec(&ack)?)
        .await?;
    // The ack must reach the sender before we leave: it says bye once it has it.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = conn.next_event().await {
            if matches!(ev, PeerEvent::Closed(_)) {
                break;
            }
        }
    })
    .await;
    match result {
        Ok(got) => {
            tokio::fs::rename(&part, &target).await?;
            println!(
                "received {} {} bytes sha256 {} {}",
                got.header.name,
                got.header.size,
                got.sha256,
                if got.verified {
                    "verified"
                } else {
                    "unverified"
                }
            );
            eprintln!("wrote {}", target.display());
            conn.conn.close().await;
            Ok(())
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            conn.conn.close().await;
            Err(e.into())
        }
    }
}

fn target_path(out: Option<&Path>, name: &str) -> PathBuf {
    let safe = transfer::safe_file_name(name);
    match out {
        Some(p) if p.is_dir() => p.join(safe),
        Some(p) => p.to_owned(),
        None => PathBuf::from(safe),
    }
}

fn part_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut sum = Checksum::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, sum.hex()))
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = file.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

/// A progress bar on stderr (a line per 10 % when stderr is not a terminal).
#[derive(Debug)]
struct Progress {
    verb: &'static str,
    name: String,
    total: u64,
    started: Instant,
    last_draw: Option<Instant>,
    last_decile: u64,
    tty: bool,
}

impl Progress {
    fn new(verb: &'static str, name: &str, total: u64) -> Self {
        Progress {
            verb,
            name: name.to_owned(),
            total,
            started: Instant::now(),
            last_draw: None,
            last_decile: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        if self.tty {
            if self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
                && done < self.total
            {
                return;
            }
            self.last_draw = Some(Instant::now());
            let width = 30;
            let filled = (pct as usize * width / 100).min(width);
            let rate =
                done as f64 / self.started.elapsed().as_secs_f64().max(1e-3) / (1 << 20) as f64;
            eprint!(
                "\r{} {} [{}{}] {pct:3}% {done}/{} bytes {rate:.1} MiB/s",
                self.verb,
                self.name,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.total
            );
            let _ = std::io::stderr().flush();
        } else {
            let decile = pct / 10;
            if decile > self.last_decile {
                self.last_decile = decile;
                eprintln!(
                    "{} {}: {pct}% ({done}/{} bytes)",
                    self.verb, self.name, self.total
                );
            }
        }
    }

    fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}
