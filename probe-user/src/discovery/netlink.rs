//! Network state of the current namespace, read through rtnetlink (what `ip -d link`,
//! `ip addr`, `ip neigh` and `bridge fdb` print): VXLAN devices with their VNI, port, local
//! address, MTU, MAC, addresses, FDB and neighbour entries.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    address::AddressAttribute,
    link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
};

/// A MAC address.
pub type Mac = [u8; 6];

pub fn format_mac(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A VXLAN device as the kernel knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub index: u32,
    pub vni: Option<u32>,
    /// Destination UDP port (flannel: 8472; IANA: 4789).
    pub port: Option<u16>,
    /// The underlay address it sends from.
    pub local: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: bool,
    /// Its own IPv4 addresses (flannel: the node's VTEP address, 10.244.N.0/32).
    pub addresses: Vec<Ipv4Addr>,
    /// FDB: which underlay IP a MAC is sent to.
    pub fdb: Vec<(Mac, IpAddr)>,
    /// Neighbour entries: which MAC an overlay IP has.
    pub neighbours: Vec<(IpAddr, Mac)>,
}

/// Every VXLAN device of the current network namespace.
pub async fn vxlan_devices() -> std::io::Result<Vec<VxlanDevice>> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let result = read(&handle).await;
    task.abort();
    result.map_err(|e| std::io::Error::other(format!("netlink: {e}")))
}

async fn read(handle: &rtnetlink::Handle) -> Result<Vec<VxlanDevice>, rtnetlink::Error> {
    let mut devices = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await? {
        let mut dev = VxlanDevice { index: link.header.index, ..VxlanDevice::default() };
        let mut is_vxlan = false;
        dev.up = link.header.flags.contains(netlink_packet_route::link::LinkFlags::Up);
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => dev.name.clone_from(n),
                LinkAttribute::Mtu(m) => dev.mtu = Some(*m),
                LinkAttribute::Address(a) => dev.mac = a.as_slice().try_into().ok(),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                            LinkInfo::Data(InfoData::Vxlan(v)) => {
                                for x in v {
                                    match x {
                                        InfoVxlan::Id(id) => dev.vni = Some(*id),
                                        InfoVxlan::Port(p) => dev.port = Some(*p),
                                        InfoVxlan::Local(l) => dev.local = Some(*l),
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if is_vxlan {
            devices.push(dev);
        }
    }
    for dev in &mut devices {
        let mut addrs = handle.address().get().set_link_index_filter(dev.index).execute();
        while let Some(a) = addrs.try_next().await? {
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(v4)) = attr
                    && !dev.addresses.contains(v4)
                {
                    dev.addresses.push(*v4);
                }
            }
        }
    }
    let mut fdb = handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    while let Some(n) = fdb.try_next().await? {
        if let Some(dev) = devices.iter_mut().find(|d| d.index == n.header.ifindex)
            && let (Some(mac), Some(ip)) = (lladdr(&n), destination(&n))
        {
            dev.fdb.push((mac, ip));
        }
    }
    let mut neigh = handle.neighbours().get().set_address_family(AddressFamily::Inet).execute();
    while let Some(n) = neigh.try_next().await? {
        if let Some(dev) = devices.iter_mut().find(|d| d.index == n.header.ifindex)
            && let (Some(mac), Some(ip)) = (lladdr(&n), destination(&n))
        {
            dev.neighbours.push((ip, mac));
        }
    }
    Ok(devices)
}

fn lladdr(n: &NeighbourMessage) -> Option<Mac> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

fn destination(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // FDB entries (family AF_BRIDGE) carry the VTEP address as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}
