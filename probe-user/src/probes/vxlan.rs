//! VXLAN datapath probe, run from a node's namespace. It reads the local VXLAN device (VNI,
//! port, MAC, address) with its FDB and neighbour entries to find the peer's VTEP the way the
//! kernel would, reports what is missing, then sends a real encapsulated packet: an ICMP echo
//! from this node's VTEP address to the peer's, wrapped in VXLAN by hand and sent over UDP to
//! the peer's underlay address. The peer's kernel decapsulates it and answers through its own
//! overlay route, so the echo reply proves both directions of the tunnel.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use pnet_base::MacAddr;
use pnet_packet::{
    MutablePacket, Packet,
    ethernet::{EtherTypes, MutableEthernetPacket},
    icmp::{IcmpPacket, IcmpTypes, echo_request::MutableEchoRequestPacket},
    ip::IpNextHeaderProtocols,
    ipv4::{self, MutableIpv4Packet},
};

use super::icmp::{self, Answer, Pinger};
use crate::{
    capture::{Capture, FlowMatcher, Watch, event::KernelEvent},
    discovery::netlink::{Mac, VxlanDevice, format_mac},
};

#[derive(Debug, Clone)]
pub struct Spec {
    /// The peer node's underlay address (its VTEP's outer address).
    pub peer: Ipv4Addr,
    /// Expected UDP port (flannel: 8472).
    pub port: u16,
    /// Expected VNI, when given.
    pub vni: Option<u32>,
    /// The VXLAN device to use (default: the only one, or flannel.1).
    pub device: Option<String>,
}

/// Where the probe goes, as the local kernel's tables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub local_mac: Mac,
    pub local_vtep: Ipv4Addr,
    pub peer_mac: Mac,
    pub peer_vtep: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The peer's VTEP answered through the overlay.
    Reply {
        rtt: Duration,
    },
    NoReply,
    /// The local configuration cannot carry traffic to the peer (each problem named).
    Misconfigured(Vec<String>),
    /// Reading the configuration or receiving the reply needs a privilege.
    NoPrivilege(String),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Report {
    pub spec: Spec,
    pub plan: Option<Plan>,
    pub outcome: Outcome,
    pub probes: u8,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
}

/// What the device's tables say about the peer, or every reason they cannot carry to it.
pub fn plan(spec: &Spec, devices: &[VxlanDevice]) -> Result<Plan, Vec<String>> {
    let dev = match &spec.device {
        Some(name) => devices.iter().find(|d| &d.name == name).ok_or_else(|| {
            let have: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            vec![format!("no VXLAN device {name} in this namespace (VXLAN devices here: {have:?})")]
        })?,
        None => match devices {
            [] => return Err(vec!["no VXLAN device in this namespace (flannel's is flannel.1)".into()]),
            [one] => one,
            many => many.iter().find(|d| d.name == "flannel.1").ok_or_else(|| {
                let have: Vec<&str> = many.iter().map(|d| d.name.as_str()).collect();
                vec![format!("several VXLAN devices ({have:?}): name one with --device")]
            })?,
        },
    };
    let mut problems = Vec::new();
    let name = &dev.name;
    if !dev.up {
        problems.push(format!("{name} is down"));
    }
    let vni = dev.vni.unwrap_or_default();
    if let Some(want) = spec.vni
        && dev.vni != Some(want)
    {
        problems.push(format!("{name} has VNI {vni}, expected {want}"));
    }
    let port = dev.port.unwrap_or_default();
    if port != spec.port {
        problems.push(format!("{name} sends to UDP port {port}, expected {}", spec.port));
    }
    let local_vtep = dev.addresses.first().copied();
    if local_vtep.is_none() {
        problems.push(format!("{name} has no IPv4 address (flannel gives it the node's VTEP address)"));
    }
    let peer_mac = dev.fdb.iter().find(|(_, ip)| *ip == IpAddr::V4(spec.peer)).map(|(mac, _)| *mac);
    if peer_mac.is_none() {
        problems.push(format!(
            "{name} has no FDB entry for {peer}: the kernel does not know which MAC lives behind that node, so nothing \
             is sent there (flannel writes `bridge fdb append <peer VTEP MAC> dev {name} dst {peer}`)",
            peer = spec.peer
        ));
    }
    let peer_vtep = peer_mac.and_then(|mac| {
        dev.neighbours.iter().find_map(|(ip, m)| match ip {
            IpAddr::V4(v4) if *m == mac => Some(*v4),
            _ => None,
        })
    });
    if let (Some(mac), None) = (peer_mac, peer_vtep) {
        problems.push(format!(
            "{name} has no neighbour entry with MAC {}: the peer's VTEP address cannot be resolved (flannel writes \
             `ip neigh replace <peer VTEP IP> lladdr {} dev {name}`)",
            format_mac(&mac),
            format_mac(&mac)
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    match (local_vtep, peer_mac, peer_vtep, dev.mac) {
        (Some(local_vtep), Some(peer_mac), Some(peer_vtep), Some(local_mac)) => {
            Ok(Plan { device: name.clone(), vni, port, local_mac, local_vtep, peer_mac, peer_vtep })
        }
        _ => Err(vec![format!("{name} has no MAC address")]),
    }
}

/// The UDP payload: a VXLAN header (RFC 7348) and the inner Ethernet frame carrying an ICMP
/// echo request from our VTEP address to the peer's.
pub fn encapsulate(plan: &Plan, id: u16, seq: u16) -> Vec<u8> {
    const ICMP_LEN: usize = 8 + 56;
    const IP_LEN: usize = 20 + ICMP_LEN;
    let mut out = vec![0u8; 8 + 14 + IP_LEN];
    out[0] = 0x08; // I flag: the VNI is valid
    out[4..7].copy_from_slice(&plan.vni.to_be_bytes()[1..4]);
    let mut frame = MutableEthernetPacket::new(&mut out[8..]).expect("room for a frame");
    frame.set_destination(MacAddr::from(plan.peer_mac));
    frame.set_source(MacAddr::from(plan.local_mac));
    frame.set_ethertype(EtherTypes::Ipv4);
    let mut ip = MutableIpv4Packet::new(frame.payload_mut()).expect("room for IPv4");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length(u16::try_from(IP_LEN).unwrap_or(u16::MAX));
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Icmp);
    ip.set_source(plan.local_vtep);
    ip.set_destination(plan.peer_vtep);
    {
        let mut echo = MutableEchoRequestPacket::new(ip.payload_mut()).expect("room for ICMP");
        echo.set_icmp_type(IcmpTypes::EchoRequest);
        echo.set_identifier(id);
        echo.set_sequence_number(seq);
        let checksum = pnet_packet::icmp::checksum(&IcmpPacket::new(echo.packet()).expect("ICMP"));
        echo.set_checksum(checksum);
    }
    let checksum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(checksum);
    out
}

pub async fn run(spec: Spec, deadline: Duration, capture: Option<Arc<Capture>>) -> Report {
    let started = Instant::now();
    let devices = match crate::discovery::netlink::vxlan_devices().await {
        Ok(d) => d,
        Err(e) => {
            let outcome = Outcome::Failed(format!("reading VXLAN devices: {e}"));
            return Report { spec, plan: None, outcome, probes: 0, elapsed: started.elapsed(), events: Vec::new() };
        }
    };
    let plan = match plan(&spec, &devices) {
        Ok(p) => p,
        Err(problems) => {
            let outcome = Outcome::Misconfigured(problems);
            return Report { spec, plan: None, outcome, probes: 0, elapsed: started.elapsed(), events: Vec::new() };
        }
    };
    let remaining = deadline.saturating_sub(started.elapsed());
    let fallback = spec.clone();
    let joined = tokio::task::spawn_blocking(move || send_and_wait(&spec, &plan, remaining, capture.as_deref())).await;
    match joined {
        Ok(mut r) => {
            r.elapsed = started.elapsed();
            r
        }
        Err(e) => {
            let outcome = Outcome::Failed(format!("probe thread: {e}"));
            Report { spec: fallback, plan: None, outcome, probes: 0, elapsed: started.elapsed(), events: Vec::new() }
        }
    }
}

/// Up to three encapsulated echoes, a third of the time each; the first reply ends it.
fn send_and_wait(spec: &Spec, plan: &Plan, deadline: Duration, capture: Option<&Capture>) -> Report {
    let started = Instant::now();
    let mut report = Report {
        spec: spec.clone(),
        plan: Some(plan.clone()),
        outcome: Outcome::NoReply,
        probes: 0,
        elapsed: Duration::ZERO,
        events: Vec::new(),
    };
    let id = super::fresh_id();
    // Receiving the echo reply (the kernel delivers it to raw sockets) needs CAP_NET_RAW.
    let pinger = match Pinger::new(plan.peer_vtep, id) {
        Ok(p) => p,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            report.outcome =
                Outcome::NoPrivilege(format!("receiving the reply needs a raw ICMP socket: CAP_NET_RAW ({e})"));
            return report;
        }
        Err(e) => {
            report.outcome = Outcome::Failed(format!("raw ICMP socket: {e}"));
            return report;
        }
    };
    let peer = SocketAddr::new(IpAddr::V4(spec.peer), plan.port);
    let socket = match super::tcp::source_address(peer).and_then(|src| UdpSocket::bind(SocketAddr::new(src, 0))) {
        Ok(s) => s,
        Err(e) => {
            report.outcome = Outcome::Failed(format!("UDP socket towards {peer}: {e}"));
            return report;
        }
    };
    let watches: Vec<Watch<'_>> = capture
        .map(|c| {
            let mut w = vec![c.watch(FlowMatcher::new(1, SocketAddr::new(IpAddr::V4(plan.local_vtep), id)))];
            if let Ok(local) = socket.local_addr() {
                w.push(c.watch(FlowMatcher::udp(local)));
            }
            w
        })
        .unwrap_or_default();
    let round = deadline / 3;
    for seq in 1..=3u16 {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let sent_at = Instant::now();
        if let Err(e) = socket.send_to(&encapsulate(plan, id, seq), peer) {
            report.outcome = Outcome::Failed(format!("sending to {peer}: {e}"));
            break;
        }
        report.probes += 1;
        let until = sent_at + round.min(left);
        let mut answered = false;
        while let Some(wait) = until.checked_duration_since(Instant::now()) {
            if let Some((_, Answer::Reply)) = pinger.recv(wait) {
                report.outcome = Outcome::Reply { rtt: sent_at.elapsed() };
                answered = true;
                break;
            }
        }
        if answered {
            break;
        }
    }
    let mut events: Vec<KernelEvent> = watches.into_iter().flat_map(Watch::finish).collect();
    events.sort_by_key(|e| e.ts_ns);
    events.dedup_by(|a, b| a.ts_ns == b.ts_ns && a.kind == b.kind && a.flow == b.flow);
    report.events = icmp::without_delivered_replies(events, plan.local_vtep);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> VxlanDevice {
        VxlanDevice {
            name: "flannel.1".into(),
            index: 4,
            vni: Some(1),
            port: Some(8472),
            local: Some("192.168.50.11".parse().unwrap()),
            mtu: Some(1450),
            mac: Some([2, 0xfa, 0, 0, 0, 1]),
            up: true,
            addresses: vec!["10.244.1.0".parse().unwrap()],
            fdb: vec![([2, 0xfa, 0, 0, 0, 2], "192.168.50.12".parse().unwrap())],
            neighbours: vec![("10.244.2.0".parse().unwrap(), [2, 0xfa, 0, 0, 0, 2])],
        }
    }

    fn spec() -> Spec {
        Spec { peer: "192.168.50.12".parse().unwrap(), port: 8472, vni: Some(1), device: None }
    }

    #[test]
    fn the_peer_is_found_through_fdb_and_neighbour_entries() {
        let p = plan(&spec(), &[device()]).unwrap();
        assert_eq!(p.peer_vtep, "10.244.2.0".parse::<Ipv4Addr>().unwrap());
        assert_eq!((p.vni, p.port, p.device.as_str()), (1, 8472, "flannel.1"));
    }

    #[test]
    fn every_missing_piece_is_named() {
        let mut d = device();
        d.fdb.clear();
        let problems = plan(&spec(), &[d]).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("no FDB entry for 192.168.50.12"), "{problems:?}");

        let mut d = device();
        d.vni = Some(2);
        d.port = Some(4789);
        d.neighbours.clear();
        let problems = plan(&spec(), &[d]).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("VNI 2, expected 1"));
        assert!(problems[1].contains("port 4789, expected 8472"));
        assert!(problems[2].contains("no neighbour entry with MAC 02:fa:00:00:00:02"));

        assert!(plan(&spec(), &[]).is_err());
        let named = Spec { device: Some("vxlan0".into()), ..spec() };
        assert!(plan(&named, &[device()]).unwrap_err()[0].contains("no VXLAN device vxlan0"));
    }

    #[test]
    fn the_encapsulated_packet_is_well_formed() {
        use pnet_packet::{ethernet::EthernetPacket, ipv4::Ipv4Packet};
        let p = plan(&spec(), &[device()]).unwrap();
        let bytes = encapsulate(&p, 0x1234, 7);
        assert_eq!(&bytes[..8], &[0x08, 0, 0, 0, 0, 0, 1, 0]);
        let frame = EthernetPacket::new(&bytes[8..]).unwrap();
        assert_eq!(frame.get_destination(), MacAddr::new(2, 0xfa, 0, 0, 0, 2));
        let ip = Ipv4Packet::new(frame.payload()).unwrap();
        assert_eq!(ip.get_destination(), p.peer_vtep);
        assert_eq!(ipv4::checksum(&ip), ip.get_checksum());
        let echo = pnet_packet::icmp::echo_request::EchoRequestPacket::new(ip.payload()).unwrap();
        assert_eq!((echo.get_identifier(), echo.get_sequence_number()), (0x1234, 7));
    }
}
