//! The conntrack table over ctnetlink (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`):
//! the entry of one flow, asked by its original tuple, which says where a Service's DNAT sent
//! it (the reply tuple's source is the endpoint), and the entries to one address (a Service IP),
//! among them the stale ones kube-proxy should have deleted. Every nfnetlink request needs
//! CAP_NET_ADMIN in the network namespace (`nfnetlink_rcv` answers -EPERM without it,
//! net/netfilter/nfnetlink.c). The table is the calling thread's network namespace's.
//!
//! One request, one answer (or a dump's parts), over [`nl_socket`]'s blocking socket.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status, Tuple},
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::nl_socket::{self, NlError};

/// A transport protocol conntrack tracks by ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Self::Tcp => Protocol::Tcp,
            Self::Udp => Protocol::Udp,
        }
    }
}

impl std::fmt::Display for L4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One direction of a connection: protocol, source, destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple4 {
    pub l4: L4,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A conntrack entry: the original direction (as the first packet left its sender) and the
/// reply direction (as the answer is expected back: after a DNAT its source is the endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple4,
    pub reply: Tuple4,
    /// `IPS_*` bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
    pub status: u32,
    /// Seconds until the entry expires.
    pub timeout: Option<u32>,
}

impl Entry {
    /// Where a DNAT sent the flow: the reply's source when it is not the original destination.
    /// Read from the tuples, not from `IPS_DST_NAT`: IPVS (kube-proxy's IPVS mode, with
    /// `net.ipv4.vs.conntrack=1`) rewrites the reply tuple to the real server without setting
    /// that bit (`ip_vs_update_conntrack`, net/netfilter/ipvs/ip_vs_nfct.c).
    pub fn dnat_to(&self) -> Option<SocketAddr> {
        (self.reply.src != self.orig.dst).then_some(self.reply.src)
    }

    /// The peer that answers this flow: the endpoint after a DNAT, else the original destination.
    pub fn answered_by(&self) -> SocketAddr {
        self.reply.src
    }

    /// Whether a reply was ever seen (`conntrack -L` prints `[UNREPLIED]` otherwise).
    pub fn replied(&self) -> bool {
        self.status & Status::SeenReply.bits() != 0
    }
}

/// Why the table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CtError {
    #[error("reading conntrack needs CAP_NET_ADMIN, which this process lacks")]
    NoCapability,
    /// `nf_conntrack_netlink` is not loaded and could not be (no ctnetlink subsystem).
    #[error("the kernel has no ctnetlink (module nf_conntrack_netlink): {0}")]
    NoCtnetlink(#[source] io::Error),
    #[error("ctnetlink did not answer within {0:?}")]
    Timeout(Duration),
    #[error("ctnetlink: {0}")]
    Io(#[source] io::Error),
    #[error("ctnetlink answered what does not decode: {0}")]
    Decode(String),
}

/// The entry whose original tuple is `orig`, or `None` when the table has none.
pub fn get(orig: &Tuple4, deadline: Duration) -> Result<Option<Entry>, CtError> {
    if !crate::privileges::net_admin() {
        return Err(CtError::NoCapability);
    }
    let request = ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(orig))]);
    match exchange(request, family(orig.src.ip()), NLM_F_REQUEST | NLM_F_ACK, deadline) {
        Ok(mut entries) => Ok(entries.pop()),
        Err(CtError::Io(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every entry of one protocol whose original destination is `ip`: a dump, filtered here (the
/// kernel's own filter, `CTA_FILTER` of 5.8, is not in the crate's attributes; the entries a
/// node holds are read in one pass either way).
pub fn to_address(ip: IpAddr, l4: L4, deadline: Duration) -> Result<Vec<Entry>, CtError> {
    if !crate::privileges::net_admin() {
        return Err(CtError::NoCapability);
    }
    let entries = exchange(ConntrackMessage::Get(Vec::new()), family(ip), NLM_F_REQUEST | NLM_F_DUMP, deadline)?;
    Ok(entries.into_iter().filter(|e| e.orig.l4 == l4 && e.orig.dst.ip() == ip).collect())
}

fn family(ip: IpAddr) -> NetfilterProtoFamily {
    if ip.is_ipv4() { NetfilterProtoFamily::IPv4 } else { NetfilterProtoFamily::IPv6 }
}

fn tuple_attrs(t: &Tuple4) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![IPTuple::SourceAddress(t.src.ip()), IPTuple::DestinationAddress(t.dst.ip())]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(t.l4.protocol()),
            ProtoTuple::SourcePort(t.src.port()),
            ProtoTuple::DestinationPort(t.dst.port()),
        ]),
    ]
}

/// Sends one request and collects the entries answered until the ack, the dump's end or an error.
fn exchange(
    request: ConntrackMessage,
    family: NetfilterProtoFamily,
    flags: u16,
    deadline: Duration,
) -> Result<Vec<Entry>, CtError> {
    let message = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), request);
    let answers = nl_socket::exchange(NETLINK_NETFILTER, message, flags, deadline).map_err(|e| match e {
        NlError::Timeout(d) => CtError::Timeout(d),
        NlError::Io(e) => CtError::Io(e),
        NlError::Decode(e) => CtError::Decode(e),
        NlError::Kernel(errno) => kernel_error(errno),
    })?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m.inner {
            NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) => entry(&attrs),
            _ => None,
        })
        .collect())
}

fn kernel_error(errno: i32) -> CtError {
    match errno {
        libc::EPERM => CtError::NoCapability,
        // nfnetlink answers a subsystem it has no handler for (module absent) with EINVAL or
        // EOPNOTSUPP (nfnetlink_rcv_msg, net/netfilter/nfnetlink.c).
        libc::EOPNOTSUPP | libc::EINVAL => CtError::NoCtnetlink(io::Error::from_raw_os_error(errno)),
        _ => CtError::Io(io::Error::from_raw_os_error(errno)),
    }
}

/// An entry from a `IPCTNL_MSG_CT_NEW` message's attributes (a GET's answer and a dump's parts
/// both come as NEW); `None` for a protocol conntrack does not track by ports.
fn entry(attrs: &[ConntrackAttribute]) -> Option<Entry> {
    let (mut orig, mut reply, mut status, mut timeout) = (None, None, 0, None);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t),
            ConntrackAttribute::CtaStatus(s) => status = s.bits(),
            ConntrackAttribute::CtaTimeout(t) => timeout = Some(*t),
            _ => {}
        }
    }
    Some(Entry { orig: orig?, reply: reply?, status, timeout })
}

fn tuple(parts: &[Tuple]) -> Option<Tuple4> {
    let (mut src, mut dst, mut l4, mut sport, mut dport) = (None, None, None, None, None);
    for p in parts {
        match p {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(Protocol::Tcp) => l4 = Some(L4::Tcp),
                        ProtoTuple::Protocol(Protocol::Udp) => l4 = Some(L4::Udp),
                        ProtoTuple::SourcePort(port) => sport = Some(*port),
                        ProtoTuple::DestinationPort(port) => dport = Some(*port),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple4 { l4: l4?, src: SocketAddr::new(src?, sport?), dst: SocketAddr::new(dst?, dport?) })
}

/// The `conntrack` command that deletes the entries of `l4` to `orig_dst` answered by
/// `answered_by` (a deleted endpoint): printed for the operator, never run.
pub fn delete_command(l4: L4, orig_dst: SocketAddr, answered_by: IpAddr) -> String {
    format!(
        "conntrack -D -p {l4} --orig-dst {} --orig-port-dst {} --reply-src {answered_by}",
        orig_dst.ip(),
        orig_dst.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(l4: L4, src: &str, dst: &str) -> Tuple4 {
        Tuple4 { l4, src: src.parse().unwrap(), dst: dst.parse().unwrap() }
    }

    /// An entry is read back from the attributes the kernel sends (built with the crate's own
    /// emitter, so the nesting is the kernel's: CTA_TUPLE_ORIG > CTA_TUPLE_IP, CTA_TUPLE_PROTO).
    #[test]
    fn a_dnat_entry_names_its_endpoint() {
        let orig = t(L4::Udp, "192.168.50.11:40000", "10.96.0.10:53");
        let reply = t(L4::Udp, "10.244.2.10:53", "192.168.50.11:40000");
        let attrs = vec![
            ConntrackAttribute::CtaTupleOrig(tuple_attrs(&orig)),
            ConntrackAttribute::CtaTupleReply(tuple_attrs(&reply)),
            ConntrackAttribute::CtaStatus(Status::DstNat | Status::Confirmed),
            ConntrackAttribute::CtaTimeout(29),
        ];
        let e = entry(&attrs).unwrap();
        assert_eq!(e.dnat_to(), Some("10.244.2.10:53".parse().unwrap()));
        assert!(!e.replied());
        assert_eq!(e.timeout, Some(29));
        // IPVS's entry: the reply tuple rewritten, IPS_DST_NAT not set.
        let ipvs = Entry { status: Status::SeenReply.bits(), ..e.clone() };
        assert_eq!(ipvs.dnat_to(), Some("10.244.2.10:53".parse().unwrap()));
        // A flow only masqueraded: the reply comes from the original destination.
        let snat = Entry {
            reply: t(L4::Udp, "10.96.0.10:53", "10.244.1.1:61000"),
            status: (Status::SrcNat | Status::SeenReply).bits(),
            ..e.clone()
        };
        assert_eq!(snat.dnat_to(), None);
        assert_eq!(snat.answered_by(), "10.96.0.10:53".parse().unwrap());
    }

    #[test]
    fn an_icmp_entry_is_not_a_port_flow() {
        let attrs = vec![ConntrackAttribute::CtaTupleOrig(vec![
            Tuple::Ip(vec![IPTuple::SourceAddress("10.0.0.1".parse().unwrap())]),
            Tuple::Proto(vec![ProtoTuple::Protocol(Protocol::Icmp)]),
        ])];
        assert_eq!(entry(&attrs), None);
    }

    #[test]
    fn the_delete_command_names_the_flow_and_the_dead_endpoint() {
        assert_eq!(
            delete_command(L4::Udp, "10.96.0.10:53".parse().unwrap(), "10.244.9.10".parse().unwrap()),
            "conntrack -D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.9.10"
        );
    }
}
