//! floe's XDP fast path for the TURN relay (`docs/xdp.md`): loads the eBPF program built from
//! `bpf/turn_relay.c`, attaches it to network interfaces and mirrors live channels into its
//! maps.
//!
//! The program relays, for UDP allocations over UDP, IPv4, in both directions: RFC 8656 §12
//! ChannelData, §11 Send indications (client → peer) and Data indications (peer → client, built
//! in the program), and relay-to-relay between two allocations of the server; it passes
//! everything else to the kernel stack (and so to floe's user-space relay) unchanged. The TURN
//! state machine stays the source of truth: the shell calls [`XdpRelay::channel_up`] /
//! [`XdpRelay::channel_down`] for floe-turn's `ChannelRelayUp`/`Down` events and
//! [`XdpRelay::permission_up`] / [`XdpRelay::permission_down`] for `PermissionRelayUp`/`Down`,
//! so an entry lives exactly as long as the channel or permission and the allocation.
//!
//! Loading needs CAP_BPF and CAP_NET_ADMIN (or root); the program detaches when the
//! [`XdpRelay`] is dropped or the process exits (it is attached through a BPF link).

use std::collections::HashMap as StdMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::sync::Mutex;

use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

mod keys;
mod nexthop;

pub use keys::{ChannelKey, PeerKey};

/// The object built from `bpf/turn_relay.c` by `build.rs` (empty when clang was missing).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/turn_relay.o"));

/// The program's name in the object (its C function).
const PROGRAM: &str = "floe_turn_relay";

/// Interfaces the program may be attached to and send out of.
pub const MAX_INTERFACES: usize = 8;

/// `BPF_NOEXIST`: insert only when the key is new (keeps an entry's counters on a refresh).
const BPF_NOEXIST: u64 = 1;

/// Whether this build carries the eBPF object (clang was found at build time).
pub fn supported() -> bool {
    !OBJECT.is_empty()
}

/// `--xdp`: where to attach the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// No XDP: every packet takes the user-space relay (the default).
    #[default]
    Off,
    /// Native XDP on each interface that supports it; on failure (no driver support, no
    /// privileges, no eBPF object) that interface, or all, stay on the user-space relay.
    Auto,
    /// Native (driver) XDP, or an error.
    Native,
    /// Generic (skb) XDP, or an error: works on any interface, saves less.
    Generic,
}

impl XdpMode {
    /// The flag value.
    pub fn label(self) -> &'static str {
        match self {
            XdpMode::Off => "off",
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(XdpMode::Off),
            "auto" => Ok(XdpMode::Auto),
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            other => Err(format!(
                "unknown XDP mode {other:?} (expected off, auto, native or generic)"
            )),
        }
    }
}

/// Why the fast path could not be set up or updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    /// This binary was built without clang, so it has no eBPF object.
    #[error("this floe was built without XDP support (clang was missing at build time)")]
    NotBuilt,
    /// No interface was named.
    #[error("XDP needs at least one --xdp-interface")]
    NoInterface,
    /// More interfaces than the program's array holds.
    #[error("at most {MAX_INTERFACES} XDP interfaces are supported")]
    TooManyInterfaces,
    /// The kernel refused the object or the program (no CAP_BPF, verifier).
    #[error("cannot load the XDP program: {0}")]
    Load(String),
    /// The program could not be attached to an interface.
    #[error("cannot attach XDP ({mode}) to {interface}: {reason}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode tried.
        mode: &'static str,
        /// The kernel's answer.
        reason: String,
    },
    /// A map update failed.
    #[error("XDP map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The error.
        #[source]
        source: MapError,
    },
}

/// What happened on one interface at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The interface name.
    pub interface: String,
    /// `Ok(mode)` with "native" or "generic"; `Err(reason)` when it stays on user space.
    pub outcome: Result<&'static str, String>,
}

/// Packet and byte counts of the fast path, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// ChannelData and Send indications relayed client → peer: packets.
    pub to_peer_packets: u64,
    /// Application bytes relayed client → peer (without the ChannelData or STUN headers).
    pub to_peer_bytes: u64,
    /// Datagrams relayed peer → client (as ChannelData or Data indications): packets.
    pub to_client_packets: u64,
    /// Application bytes relayed peer → client.
    pub to_client_bytes: u64,
}

/// Indexes into the program's `stats` per-CPU array (see the enum in `bpf/turn_relay.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stat {
    /// ChannelData relayed client → peer.
    ToPeer = 0,
    /// Datagrams relayed peer → client.
    ToClient = 1,
    /// A known flow passed to user space: no route or unresolved neighbour.
    PassNoRoute = 2,
    /// A known flow passed to user space: bigger than the egress MTU.
    PassTooBig = 3,
    /// A known channel passed to user space: the ChannelData length does not match.
    PassLength = 4,
    /// `bpf_redirect` failed.
    RedirectFailed = 5,
    /// Send indications relayed client → peer (counted in [`Counters::to_peer_packets`] too).
    SendToPeer = 6,
    /// Datagrams relayed peer → client as Data indications (in
    /// [`Counters::to_client_packets`] too).
    DataToClient = 7,
    /// A Send indication of a shape the program does not rewrite (other attributes such as
    /// FINGERPRINT, DATA before XOR-PEER-ADDRESS, an IPv6 peer, non-zero padding): passed to
    /// user space.
    PassSendFormat = 8,
    /// No room at either end of the frame for a Data indication: passed to user space.
    PassTail = 9,
    /// Data indications built by moving the data towards the head (no tailroom for the
    /// padding; veth frames of local senders): relayed, at a higher cost.
    DataShifted = 10,
    /// Relay-to-relay: a client's data to another of our relayed addresses handed to that
    /// allocation's client at once (ChannelData or Data indication).
    RelayToRelay = 11,
}

/// What next hops are computed from (see `nexthop.rs`).
struct Tables {
    routes: String,
    arp: String,
    /// (interface, "address" or "mtu") -> the sysfs file's text.
    sys: StdMap<(String, &'static str), String>,
}

/// The next hop of one destination IP: how many channels use it, and what is in the map.
#[derive(Debug, Clone, Copy)]
struct Dest {
    refs: usize,
    hop: Option<nexthop::NextHop>,
}

struct Maps {
    chans: HashMap<MapData, [u8; 16], [u8; 32]>,
    peers: HashMap<MapData, [u8; 12], [u8; 32]>,
    stats: PerCpuArray<MapData, u64>,
    nexthops: HashMap<MapData, [u8; 4], [u8; 20]>,
    perms: HashMap<MapData, [u8; 16], [u8; 24]>,
    dperms: HashMap<MapData, [u8; 12], [u8; 32]>,
    /// Client and peer IPs of the live entries, with their next hops.
    dests: StdMap<Ipv4Addr, Dest>,
    /// Counts of entries already removed (their map values are gone).
    retired: Counters,
    /// Which relayed address each live entry belongs to, and the counts already reported by
    /// [`XdpRelay::take_usage`] (keyed by map and key).
    owners: StdMap<EntryKey, Owner>,
    /// Counts of removed entries not yet reported by [`XdpRelay::take_usage`], by relayed
    /// address.
    pending: StdMap<SocketAddr, Counters>,
}

/// A live map entry: which map, and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EntryKey {
    /// `chans` (client → peer, ChannelData).
    Chan([u8; 16]),
    /// `peers` (peer → client, ChannelData).
    Peer([u8; 12]),
    /// `perms` (client → peer, Send indications).
    Perm([u8; 16]),
    /// `dperms` (peer → client, Data indications).
    DPerm([u8; 12]),
}

impl EntryKey {
    /// Whether the entry counts client → peer traffic.
    fn to_peer(self) -> bool {
        matches!(self, EntryKey::Chan(_) | EntryKey::Perm(_))
    }
}

/// The owner of a live map entry and what of its counters was reported.
#[derive(Debug, Clone, Copy)]
struct Owner {
    relay: SocketAddr,
    seen: (u64, u64),
}

impl Counters {
    /// Adds `packets` and `bytes` in one direction.
    fn add(&mut self, to_peer: bool, packets: u64, bytes: u64) {
        if to_peer {
            self.to_peer_packets += packets;
            self.to_peer_bytes += bytes;
        } else {
            self.to_client_packets += packets;
            self.to_client_bytes += bytes;
        }
    }
}

/// The loaded and attached fast path. Dropping it detaches the program.
pub struct XdpRelay {
    maps: Mutex<Maps>,
    attached: Vec<Attached>,
    /// The interfaces it is attached to: the only ones it sends out of.
    interfaces: Vec<nexthop::Interface>,
    /// Keeps the program (and its links) alive.
    _ebpf: Ebpf,
}

impl fmt::Debug for XdpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpRelay")
            .field("attached", &self.attached)
            .finish()
    }
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> XdpError {
    move |source| XdpError::Map { map, source }
}

/// Takes the program's map `name` out of `ebpf` as its typed handle `T`.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, XdpError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    ebpf.take_map(name)
        .ok_or_else(|| XdpError::Load(format!("no {name} map")))?
        .try_into()
        .map_err(map_err(name))
}

/// The interface's index, from sysfs.
fn ifindex(interface: &str) -> Result<u32, String> {
    if interface.contains('/') || interface.starts_with('.') {
        return Err("not an interface name".to_owned());
    }
    let path = format!("/sys/class/net/{interface}/ifindex");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("no such interface ({e})"))?;
    text.trim()
        .parse()
        .map_err(|e| format!("bad ifindex in {path}: {e}"))
}

impl XdpRelay {
    /// Loads the program and attaches it to `interfaces` in `mode` (not [`XdpMode::Off`]).
    ///
    /// [`XdpMode::Auto`] tries native XDP on each interface and leaves those that refuse on
    /// the user-space relay (an error only when none attached); native and generic fail on the
    /// first interface that refuses.
    pub fn attach(mode: XdpMode, interfaces: &[String]) -> Result<XdpRelay, XdpError> {
        if !supported() {
            return Err(XdpError::NotBuilt);
        }
        if interfaces.is_empty() {
            return Err(XdpError::NoInterface);
        }
        if interfaces.len() > MAX_INTERFACES {
            return Err(XdpError::TooManyInterfaces);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(error_chain(&e)))?;
        let chans = take_map(&mut ebpf, "chans")?;
        let peers = take_map(&mut ebpf, "peers")?;
        let stats = take_map(&mut ebpf, "stats")?;
        let nexthops = take_map(&mut ebpf, "nexthops")?;
        let perms = take_map(&mut ebpf, "perms")?;
        let dperms = take_map(&mut ebpf, "dperms")?;
        let program = load_program(&mut ebpf)?;
        let (flags, label) = match mode {
            XdpMode::Generic => (XdpFlags::SKB_MODE, "generic"),
            _ => (XdpFlags::DRV_MODE, "native"),
        };
        let mut attached = Vec::new();
        let mut up = Vec::new();
        for interface in interfaces {
            let outcome = ifindex(interface).and_then(|index| {
                program
                    .attach(interface, flags)
                    .map(|_| index)
                    .map_err(|e| error_chain(&e))
            });
            match outcome {
                Ok(ifindex) => {
                    up.push(nexthop::Interface {
                        name: interface.clone(),
                        ifindex,
                    });
                    attached.push(Attached {
                        interface: interface.clone(),
                        outcome: Ok(label),
                    });
                }
                Err(reason) if mode == XdpMode::Auto => attached.push(Attached {
                    interface: interface.clone(),
                    outcome: Err(reason),
                }),
                Err(reason) => {
                    return Err(XdpError::Attach {
                        interface: interface.clone(),
                        mode: label,
                        reason,
                    })
                }
            }
        }
        if up.is_empty() {
            let reasons: Vec<String> = attached
                .iter()
                .filter_map(|a| {
                    a.outcome
                        .as_ref()
                        .err()
                        .map(|r| format!("{}: {r}", a.interface))
                })
                .collect();
            return Err(XdpError::Attach {
                interface: interfaces.join(","),
                mode: label,
                reason: reasons.join("; "),
            });
        }
        Ok(XdpRelay {
            maps: Mutex::new(Maps {
                chans,
                peers,
                stats,
                nexthops,
                perms,
                dperms,
                dests: StdMap::new(),
                retired: Counters::default(),
                owners: StdMap::new(),
                pending: StdMap::new(),
            }),
            attached,
            interfaces: up,
            _ebpf: ebpf,
        })
    }

    /// What was attached where (and why not), for the start-up log.
    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is one
        // syscall), so a poisoned lock is safe to use.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts relaying a channel in the kernel (idempotent: a refresh keeps its counters).
    /// Returns `Ok(false)` for channels the program does not handle (IPv6, which user space
    /// keeps relaying).
    pub fn channel_up(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        relay: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    ) -> Result<bool, XdpError> {
        let Some((ck, cv, pk, pv)) = keys::entries(client, server, relay, peer, channel) else {
            return Ok(false);
        };
        let mut m = self.maps();
        if m.chans.get(&ck.0, 0).is_err() {
            for ip in [keys::ip_of(client), keys::ip_of(peer)]
                .into_iter()
                .flatten()
            {
                self.add_dest(&mut m, ip)?;
            }
        }
        // The peer -> client entry first: a peer's answer must not reach user space after the
        // client's first datagram left through XDP (it would still be relayed, only slower).
        insert_new(&mut m.peers, pk.0, pv, "peers")?;
        insert_new(&mut m.chans, ck.0, cv, "chans")?;
        m.own(EntryKey::Peer(pk.0), relay);
        m.own(EntryKey::Chan(ck.0), relay);
        Ok(true)
    }

    /// Stops relaying a channel in the kernel at once; its counts move to the retired totals.
    pub fn channel_down(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        relay: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    ) -> Result<(), XdpError> {
        let Some((ck, _, pk, _)) = keys::entries(client, server, relay, peer, channel) else {
            return Ok(());
        };
        let mut m = self.maps();
        if let Ok(v) = m.chans.get(&ck.0, 0) {
            let (p, b) = keys::tail_counts(&v);
            m.retired.to_peer_packets += p;
            m.retired.to_peer_bytes += b;
            m.disown(EntryKey::Chan(ck.0), (p, b));
            for ip in [keys::ip_of(client), keys::ip_of(peer)]
                .into_iter()
                .flatten()
            {
                self.drop_dest(&mut m, ip)?;
            }
        }
        if let Ok(v) = m.peers.get(&pk.0, 0) {
            let (p, b) = keys::tail_counts(&v);
            m.retired.to_client_packets += p;
            m.retired.to_client_bytes += b;
            m.disown(EntryKey::Peer(pk.0), (p, b));
        }
        // (Entries whose value could not be read are forgotten too.)
        m.owners.remove(&EntryKey::Chan(ck.0));
        m.owners.remove(&EntryKey::Peer(pk.0));
        remove(&mut m.chans, &ck.0, "chans")?;
        remove(&mut m.peers, &pk.0, "peers")?;
        Ok(())
    }

    /// Starts relaying Send indications from `client` to `peer` and datagrams from `peer` to
    /// `relay` (as Data indications, when no channel carries them) in the kernel. Idempotent: a
    /// refresh keeps the counters. `Ok(false)` for permissions the program does not handle
    /// (IPv6, wildcard addresses), which user space keeps relaying.
    pub fn permission_up(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        relay: SocketAddr,
        peer: IpAddr,
    ) -> Result<bool, XdpError> {
        let Some((k, v, dk, dv)) = keys::permission_entries(client, server, relay, peer) else {
            return Ok(false);
        };
        let mut m = self.maps();
        if m.perms.get(&k, 0).is_err() {
            for ip in [keys::ip_of(client), keys::ip_of(SocketAddr::new(peer, 0))]
                .into_iter()
                .flatten()
            {
                self.add_dest(&mut m, ip)?;
            }
        }
        // Peer -> client first, as for channels.
        insert_new(&mut m.dperms, dk, dv, "dperms")?;
        insert_new(&mut m.perms, k, v, "perms")?;
        m.own(EntryKey::DPerm(dk), relay);
        m.own(EntryKey::Perm(k), relay);
        Ok(true)
    }

    /// Stops relaying for a permission in the kernel at once; its counts move to the retired
    /// totals.
    pub fn permission_down(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        relay: SocketAddr,
        peer: IpAddr,
    ) -> Result<(), XdpError> {
        let Some((k, _, dk, _)) = keys::permission_entries(client, server, relay, peer) else {
            return Ok(());
        };
        let mut m = self.maps();
        if let Ok(v) = m.perms.get(&k, 0) {
            let (p, b) = keys::tail_counts(&v);
            m.retired.to_peer_packets += p;
            m.retired.to_peer_bytes += b;
            m.disown(EntryKey::Perm(k), (p, b));
            for ip in [keys::ip_of(client), keys::ip_of(SocketAddr::new(peer, 0))]
                .into_iter()
                .flatten()
            {
                self.drop_dest(&mut m, ip)?;
            }
        }
        if let Ok(v) = m.dperms.get(&dk, 0) {
            let (p, b) = keys::tail_counts(&v);
            m.retired.to_client_packets += p;
            m.retired.to_client_bytes += b;
            m.disown(EntryKey::DPerm(dk), (p, b));
        }
        m.owners.remove(&EntryKey::Perm(k));
        m.owners.remove(&EntryKey::DPerm(dk));
        remove(&mut m.perms, &k, "perms")?;
        remove(&mut m.dperms, &dk, "dperms")?;
        Ok(())
    }

    fn add_dest(&self, m: &mut Maps, ip: Ipv4Addr) -> Result<(), XdpError> {
        if let Some(d) = m.dests.get_mut(&ip) {
            d.refs += 1;
            return Ok(());
        }
        m.dests.insert(ip, Dest { refs: 1, hop: None });
        self.resolve_one(m, ip)
    }

    fn drop_dest(&self, m: &mut Maps, ip: Ipv4Addr) -> Result<(), XdpError> {
        let Some(d) = m.dests.get_mut(&ip) else {
            return Ok(());
        };
        d.refs -= 1;
        if d.refs == 0 {
            m.dests.remove(&ip);
            remove(&mut m.nexthops, &ip.octets(), "nexthops")?;
        }
        Ok(())
    }

    /// Looks up `ip`'s next hop again and updates the map when it changed.
    fn resolve_one(&self, m: &mut Maps, ip: Ipv4Addr) -> Result<(), XdpError> {
        let tables = self.tables();
        self.apply_hop(m, ip, &tables)
    }

    /// The routes, neighbours and interface addresses and MTUs, read once.
    fn tables(&self) -> Tables {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let mut sys = StdMap::new();
        for i in &self.interfaces {
            for file in ["address", "mtu"] {
                let text = read(&format!("/sys/class/net/{}/{file}", i.name));
                sys.insert((i.name.clone(), file), text);
            }
        }
        Tables {
            routes: read("/proc/net/route"),
            arp: read("/proc/net/arp"),
            sys,
        }
    }

    fn apply_hop(&self, m: &mut Maps, ip: Ipv4Addr, tables: &Tables) -> Result<(), XdpError> {
        let sys = |iface: &str, file: &str| tables.sys.get(&(iface.to_owned(), file)).cloned();
        let hop = nexthop::resolve(ip, &tables.routes, &tables.arp, &self.interfaces, &sys).ok();
        let Some(d) = m.dests.get_mut(&ip) else {
            return Ok(());
        };
        if d.hop == hop {
            return Ok(());
        }
        d.hop = hop;
        match hop {
            Some(h) => m
                .nexthops
                .insert(ip.octets(), h.to_bytes(), 0)
                .map_err(map_err("nexthops")),
            None => remove(&mut m.nexthops, &ip.octets(), "nexthops"),
        }
    }

    /// Re-reads the routes and neighbours for every client and peer IP in use: adds next hops
    /// that became known (the user-space relay's sends resolve neighbours), updates changed
    /// ones, removes vanished ones (their packets take the user-space relay). Call it about
    /// once a second.
    pub fn refresh_next_hops(&self) -> Result<(), XdpError> {
        let tables = self.tables();
        let mut m = self.maps();
        let ips: Vec<Ipv4Addr> = m.dests.keys().copied().collect();
        for ip in ips {
            self.apply_hop(&mut m, ip, &tables)?;
        }
        Ok(())
    }

    /// Destination IPs in use, and how many of them have a next hop in the map.
    pub fn next_hops(&self) -> (usize, usize) {
        let m = self.maps();
        let resolved = m.dests.values().filter(|d| d.hop.is_some()).count();
        (m.dests.len(), resolved)
    }

    /// Entries in the client → peer and peer → client maps.
    pub fn entries(&self) -> (usize, usize) {
        let m = self.maps();
        (m.chans.keys().count(), m.peers.keys().count())
    }

    /// Entries in the permission maps (Send indications, Data indications).
    pub fn permission_entries(&self) -> (usize, usize) {
        let m = self.maps();
        (m.perms.keys().count(), m.dperms.keys().count())
    }

    /// Packets and bytes relayed by the program since it was loaded: the per-channel and
    /// per-permission counters of live entries plus those of removed ones.
    pub fn counters(&self) -> Counters {
        let m = self.maps();
        let mut c = m.retired;
        let (mut tp, mut tc) = ((0, 0), (0, 0));
        add_counts(&mut tp, m.chans.iter().flatten().map(|(_, v)| v));
        add_counts(&mut tp, m.perms.iter().flatten().map(|(_, v)| v));
        add_counts(&mut tc, m.peers.iter().flatten().map(|(_, v)| v));
        add_counts(&mut tc, m.dperms.iter().flatten().map(|(_, v)| v));
        c.to_peer_packets += tp.0;
        c.to_peer_bytes += tp.1;
        c.to_client_packets += tc.0;
        c.to_client_bytes += tc.1;
        c
    }

    /// What the program relayed since the last call, by relayed address (the allocation it
    /// belongs to): the growth of every live entry's counters plus the last counts of entries
    /// removed since. One map lookup per live entry; call it every polling interval (the shell:
    /// 200 ms) and charge the results to the allocations.
    pub fn take_usage(&self) -> StdMap<SocketAddr, Counters> {
        let mut guard = self.maps();
        let m = &mut *guard;
        let mut usage = std::mem::take(&mut m.pending);
        for (key, owner) in m.owners.iter_mut() {
            let counts = match key {
                EntryKey::Chan(k) => m.chans.get(k, 0).map(|v| keys::tail_counts(&v)),
                EntryKey::Peer(k) => m.peers.get(k, 0).map(|v| keys::tail_counts(&v)),
                EntryKey::Perm(k) => m.perms.get(k, 0).map(|v| keys::tail_counts(&v)),
                EntryKey::DPerm(k) => m.dperms.get(k, 0).map(|v| keys::tail_counts(&v)),
            };
            let Ok((p, b)) = counts else {
                continue;
            };
            let (dp, db) = (
                p.saturating_sub(owner.seen.0),
                b.saturating_sub(owner.seen.1),
            );
            if dp == 0 && db == 0 {
                continue;
            }
            owner.seen = (p, b);
            usage
                .entry(owner.relay)
                .or_default()
                .add(key.to_peer(), dp, db);
        }
        usage
    }

    /// One of the program's global counters, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> u64 {
        let m = self.maps();
        m.stats
            .get(&(stat as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// Loads the program into the kernel (the verifier checks it) without attaching it anywhere.
pub fn verify() -> Result<(), XdpError> {
    if !supported() {
        return Err(XdpError::NotBuilt);
    }
    let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(error_chain(&e)))?;
    load_program(&mut ebpf).map(|_| ())
}

/// Loads the XDP program of `ebpf` into the kernel (the verifier runs here).
fn load_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| XdpError::Load(format!("no program {PROGRAM}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))?;
    program
        .load()
        .map_err(|e| XdpError::Load(error_chain(&e)))?;
    Ok(program)
}

impl Maps {
    /// Records that the live entry `key` belongs to the allocation relaying from `relay` (kept
    /// as it was when the entry already existed: a refresh keeps its counters).
    fn own(&mut self, key: EntryKey, relay: SocketAddr) {
        self.owners.entry(key).or_insert(Owner {
            relay,
            seen: (0, 0),
        });
    }

    /// Forgets the removed entry `key`, keeping its last unreported counts for
    /// [`XdpRelay::take_usage`].
    fn disown(&mut self, key: EntryKey, (packets, bytes): (u64, u64)) {
        let Some(o) = self.owners.remove(&key) else {
            return;
        };
        let (dp, db) = (
            packets.saturating_sub(o.seen.0),
            bytes.saturating_sub(o.seen.1),
        );
        if dp > 0 || db > 0 {
            self.pending
                .entry(o.relay)
                .or_default()
                .add(key.to_peer(), dp, db);
        }
    }
}

/// Adds the (packets, bytes) counters of map values to `sum`.
fn add_counts<const N: usize>(sum: &mut (u64, u64), values: impl Iterator<Item = [u8; N]>) {
    for v in values {
        let (p, b) = keys::tail_counts(&v);
        sum.0 += p;
        sum.1 += b;
    }
}

fn insert_new<const K: usize, const V: usize>(
    map: &mut HashMap<MapData, [u8; K], [u8; V]>,
    key: [u8; K],
    value: [u8; V],
    name: &'static str,
) -> Result<(), XdpError> {
    match map.insert(key, value, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc_eexist()) => {
            Ok(())
        }
        Err(source) => Err(XdpError::Map { map: name, source }),
    }
}

fn remove<const K: usize, const V: usize>(
    map: &mut HashMap<MapData, [u8; K], [u8; V]>,
    key: &[u8; K],
    name: &'static str,
) -> Result<(), XdpError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(source) => Err(XdpError::Map { map: name, source }),
    }
}

/// EEXIST on Linux.
const fn libc_eexist() -> i32 {
    17
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An IPv4 socket address, if `a` is one (IPv4-mapped IPv6 counts).
pub(crate) fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(v) => Some(v),
        SocketAddr::V6(v) => v
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, v.port())),
    }
}
