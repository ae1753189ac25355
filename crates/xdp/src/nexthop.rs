//! Next hops for the program's `nexthops` map, read from the kernel's IPv4 main routing table
//! (`/proc/net/route`) and neighbour table (`/proc/net/arp`) of floe's network namespace.
//!
//! bpf_fib_lookup() would do this in the program, but it answers only where IP forwarding is
//! enabled on the interface, and floe never changes the host's sysctls. Policy routing
//! (`ip rule`) is not looked at: such hosts get the main table's answer (docs/xdp.md).

use std::net::Ipv4Addr;

/// `struct nexthop` in `bpf/turn_relay.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextHop {
    pub(crate) ifindex: u32,
    pub(crate) dmac: [u8; 6],
    pub(crate) smac: [u8; 6],
    pub(crate) mtu: u16,
}

impl NextHop {
    pub(crate) fn to_bytes(self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[4..10].copy_from_slice(&self.dmac);
        b[10..16].copy_from_slice(&self.smac);
        b[16..18].copy_from_slice(&self.mtu.to_ne_bytes());
        b
    }
}

/// One interface the program may send out of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) ifindex: u32,
}

/// Why a destination has no next hop (its packets take the user-space relay meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unresolved {
    /// No route in the main table.
    NoRoute,
    /// The route leaves through an interface XDP is not attached to.
    OtherInterface,
    /// The neighbour (the destination or its gateway) has no complete ARP entry yet.
    NoNeighbour,
    /// The interface's MAC address or MTU could not be read.
    Interface,
}

/// The next hop towards `dst`, from the tables' current text.
pub(crate) fn resolve(
    dst: Ipv4Addr,
    routes: &str,
    arp: &str,
    interfaces: &[Interface],
    read_sys: &dyn Fn(&str, &str) -> Option<String>,
) -> Result<NextHop, Unresolved> {
    let (iface, gateway) = route(dst, routes).ok_or(Unresolved::NoRoute)?;
    let ifc = interfaces
        .iter()
        .find(|i| i.name == iface)
        .ok_or(Unresolved::OtherInterface)?;
    let via = gateway.unwrap_or(dst);
    let dmac = neighbour(via, &iface, arp).ok_or(Unresolved::NoNeighbour)?;
    let smac = read_sys(&iface, "address")
        .and_then(|s| parse_mac(s.trim()))
        .ok_or(Unresolved::Interface)?;
    let mtu = read_sys(&iface, "mtu")
        .and_then(|s| s.trim().parse::<u16>().ok())
        .ok_or(Unresolved::Interface)?;
    Ok(NextHop {
        ifindex: ifc.ifindex,
        dmac,
        smac,
        mtu,
    })
}

/// A `/proc/net/route` address: the __be32 printed as a host-order hex number.
fn hex_ip(s: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(s, 16)
        .ok()
        .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
}

/// The interface and gateway (if any) of the most specific up route to `dst` (lowest metric
/// among equally specific ones).
fn route(dst: Ipv4Addr, table: &str) -> Option<(String, Option<Ipv4Addr>)> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let mut best: Option<(u32, u32, String, Option<Ipv4Addr>)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(net), Some(gw), Some(mask)) = (hex_ip(f[1]), hex_ip(f[2]), hex_ip(f[7])) else {
            continue;
        };
        let (Ok(flags), Ok(metric)) = (u32::from_str_radix(f[3], 16), f[6].parse::<u32>()) else {
            continue;
        };
        let mask_bits = u32::from(mask);
        if flags & RTF_UP == 0 || u32::from(dst) & mask_bits != u32::from(net) {
            continue;
        }
        let prefix = mask_bits.count_ones();
        let better = match &best {
            None => true,
            Some((p, m, _, _)) => prefix > *p || (prefix == *p && metric < *m),
        };
        if better {
            let gateway = (flags & RTF_GATEWAY != 0).then_some(gw);
            best = Some((prefix, metric, f[0].to_owned(), gateway));
        }
    }
    best.map(|(_, _, iface, gw)| (iface, gw))
}

/// The MAC of a complete (ATF_COM) ARP entry for `ip` on `iface`.
fn neighbour(ip: Ipv4Addr, iface: &str, table: &str) -> Option<[u8; 6]> {
    const ATF_COM: u32 = 0x2;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != iface || f[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        (flags & ATF_COM != 0).then(|| parse_mac(f[3])).flatten()
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101000B\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0001000B\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0002000B\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
11.0.2.2         0x1         0x2         aa:bb:cc:dd:ee:02     *        eth1
11.0.1.1         0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0
11.0.2.9         0x1         0x0         00:00:00:00:00:00     *        eth1
";

    fn ifaces() -> Vec<Interface> {
        ["eth0", "eth1"]
            .iter()
            .zip(1..)
            .map(|(n, i)| Interface {
                name: (*n).to_owned(),
                ifindex: i,
            })
            .collect()
    }

    fn sys(iface: &str, file: &str) -> Option<String> {
        Some(match (iface, file) {
            ("eth0", "address") => "02:00:00:00:00:10\n".to_owned(),
            ("eth1", "address") => "02:00:00:00:00:11\n".to_owned(),
            (_, "mtu") => "1500\n".to_owned(),
            _ => return None,
        })
    }

    #[test]
    fn directly_connected_gateway_routed_and_unresolved() {
        let r = |ip: [u8; 4]| resolve(Ipv4Addr::from(ip), ROUTES, ARP, &ifaces(), &sys);
        let direct = r([11, 0, 2, 2]).unwrap();
        assert_eq!(
            (direct.ifindex, direct.dmac, direct.smac[5], direct.mtu),
            (2, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02], 0x11, 1500)
        );
        // The default route's gateway 11.0.1.1 on eth0.
        let via_gw = r([11, 9, 9, 9]).unwrap();
        assert_eq!((via_gw.ifindex, via_gw.dmac[5]), (1, 0x01));
        // An incomplete ARP entry, and none at all.
        assert_eq!(r([11, 0, 2, 9]), Err(Unresolved::NoNeighbour));
        assert_eq!(r([11, 0, 2, 3]), Err(Unresolved::NoNeighbour));
        let only_eth0 = &ifaces()[..1];
        assert_eq!(
            resolve(Ipv4Addr::new(11, 0, 2, 2), ROUTES, ARP, only_eth0, &sys),
            Err(Unresolved::OtherInterface)
        );
        assert_eq!(
            resolve(Ipv4Addr::new(11, 0, 2, 2), "Iface\n", ARP, &ifaces(), &sys),
            Err(Unresolved::NoRoute)
        );
    }
}
