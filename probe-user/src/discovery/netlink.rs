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

/// Runs `ask` over a new rtnetlink connection of the calling thread's namespace.
async fn with_connection<T, Fut>(ask: impl FnOnce(rtnetlink::Handle) -> Fut) -> std::io::Result<T>
where
    Fut: std::future::Future<Output = Result<T, rtnetlink::Error>>,
{
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let result = ask(handle).await;
    task.abort();
    result.map_err(|e| match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(format!("netlink: {other}")),
    })
}

/// Every VXLAN device of the current network namespace.
pub async fn vxlan_devices() -> std::io::Result<Vec<VxlanDevice>> {
    with_connection(|h| async move { read(&h).await }).await
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

/// An interface of the current namespace, with what the path needs to follow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `veth`, `bridge`, `vxlan`, ... (`None` for a plain device such as a NIC or `lo`).
    pub kind: Option<String>,
    /// Administratively up (`ip link set up`).
    pub up: bool,
    /// Carrier: for a veth, whether its peer is up too.
    pub lower_up: bool,
    pub mtu: Option<u32>,
    /// The bridge it is enslaved to.
    pub master: Option<u32>,
    /// For a veth: its peer's ifindex, in the namespace `peer_netnsid` names (or this one).
    pub peer_index: Option<u32>,
    /// Set when the peer lives in another namespace (its id as this namespace knows it).
    pub peer_netnsid: Option<i32>,
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// Every interface of the current namespace with its IPv4 addresses.
pub async fn links() -> std::io::Result<Vec<Link>> {
    with_connection(|h| async move { read_links(&h).await }).await
}

async fn read_links(handle: &rtnetlink::Handle) -> Result<Vec<Link>, rtnetlink::Error> {
    use netlink_packet_route::link::LinkFlags;
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await? {
        let flags = msg.header.flags;
        let mut link = Link {
            index: msg.header.index,
            up: flags.contains(LinkFlags::Up),
            lower_up: flags.contains(LinkFlags::LowerUp),
            ..Link::default()
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                LinkAttribute::Controller(m) => link.master = Some(*m),
                LinkAttribute::Link(i) => link.peer_index = Some(*i),
                LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(kind_name(k)),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        out.push(link);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(a) = addrs.try_next().await? {
        if let Some(link) = out.iter_mut().find(|l| l.index == a.header.index) {
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(v4)) = attr
                    && !link.addresses.iter().any(|(x, _)| x == v4)
                {
                    link.addresses.push((*v4, a.header.prefix_len));
                }
            }
        }
    }
    Ok(out)
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Veth => "veth".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// What the kernel's routing decision is for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    /// The output interface's index.
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// The source address the kernel picks.
    pub source: Option<IpAddr>,
    pub table: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Sent on (directly or through a gateway).
    Unicast,
    /// Delivered to this namespace (the destination is one of its addresses).
    Local,
    /// `unreachable`, `prohibit`, `blackhole` or another type that sends nothing.
    Reject(&'static str),
}

/// `ip route get DST [from SRC iif DEV]`: the decision for a packet this namespace sends, or
/// (with `input`) one it receives from `SRC` on interface `iif` and forwards. `Err` carries
/// the kernel's answer when there is no route (e.g. "Network is unreachable").
pub async fn route_get(dst: IpAddr, input: Option<(IpAddr, u32)>) -> std::io::Result<Route> {
    with_connection(|h| async move { get_route(&h, dst, input).await }).await
}

async fn get_route(
    handle: &rtnetlink::Handle,
    dst: IpAddr,
    input: Option<(IpAddr, u32)>,
) -> Result<Route, rtnetlink::Error> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
    let mut msg = RouteMessage::default();
    msg.header.address_family = if dst.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
    if let Some((src, iif)) = input {
        msg.header.source_prefix_length = if src.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Source(RouteAddress::from(src)));
        msg.attributes.push(RouteAttribute::Iif(iif));
    }
    let mut answers = handle.route().get(msg).execute();
    let answer = answers.try_next().await?.ok_or(rtnetlink::Error::RequestFailed)?;
    let address = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let mut route = Route {
        kind: match answer.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local | RouteType::Broadcast => RouteKind::Local,
            RouteType::BlackHole => RouteKind::Reject("blackhole"),
            RouteType::Unreachable => RouteKind::Reject("unreachable"),
            RouteType::Prohibit => RouteKind::Reject("prohibit"),
            _ => RouteKind::Reject("not unicast"),
        },
        oif: None,
        gateway: None,
        source: None,
        table: u32::from(answer.header.table),
    };
    for attr in &answer.attributes {
        match attr {
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Gateway(g) => route.gateway = address(g),
            RouteAttribute::PrefSource(s) => route.source = address(s),
            RouteAttribute::Table(t) => route.table = *t,
            _ => {}
        }
    }
    Ok(route)
}
