//! The kernel's IPVS table (what `ipvsadm -Ln` prints): virtual servers and their real
//! servers, read over generic netlink (family `IPVS`: `IPVS_CMD_GET_SERVICE` dumped, then
//! `IPVS_CMD_GET_DEST` per service; include/uapi/linux/ip_vs.h). Every IPVS generic netlink
//! command is `GENL_ADMIN_PERM` (net/netfilter/ipvs/ip_vs_ctl.c), so without CAP_NET_ADMIN the
//! table is read from `/proc/net/ip_vs` instead, which any process may read
//! (`ip_vs_info_seq_show`, same file) and which holds the same services and destinations
//! (addresses in hex). Both are the calling thread's network namespace's.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlaBuffer, NlasIterator,
    ParseableParametrized,
};
use netlink_packet_generic::{
    GenlFamily, GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_sys::protocols::NETLINK_GENERIC;

use super::{
    conntrack::L4,
    iptables::ReadError,
    nl_socket::{self, NlError},
};

/// Where the table was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Netlink,
    Procfs,
}

/// How IPVS forwards to a real server (`IP_VS_CONN_F_FWD_MASK` values; `ipvsadm` prints
/// Masq, Local, Tunnel, Route, Bypass). kube-proxy uses `Masq` (NAT) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    Masq,
    Local,
    Tunnel,
    Route,
    Bypass,
    Other(String),
}

impl Forward {
    fn from_method(m: u32) -> Self {
        match m & 0x7 {
            0 => Self::Masq,
            1 => Self::Local,
            2 => Self::Tunnel,
            3 => Self::Route,
            4 => Self::Bypass,
            other => Self::Other(other.to_string()),
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            "Masq" => Self::Masq,
            "Local" => Self::Local,
            "Tunnel" => Self::Tunnel,
            "Route" => Self::Route,
            "Bypass" => Self::Bypass,
            other => Self::Other(other.to_string()),
        }
    }
}

/// A real server of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    pub addr: SocketAddr,
    pub forward: Forward,
    /// 0: quiesced; kube-proxy sets it on a terminating endpoint's real server, which keeps its
    /// connections until they end but gets no new ones (k/k pkg/proxy/ipvs/graceful_termination.go).
    pub weight: u32,
    pub active: u32,
    pub inactive: u32,
}

/// A virtual server: an address, port and protocol (or a firewall mark), its scheduler and its
/// real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// `None` for a protocol that is neither TCP nor UDP (SCTP), or a firewall-mark service.
    pub l4: Option<L4>,
    /// `None` for a firewall-mark service.
    pub addr: Option<SocketAddr>,
    pub fwmark: Option<u32>,
    pub scheduler: String,
    /// Seconds of session affinity (`IP_VS_SVC_F_PERSISTENT`: a Service's `ClientIP`).
    pub persistent: Option<u32>,
    pub real: Vec<RealServer>,
}

/// The namespace's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub source: Source,
    pub services: Vec<VirtualServer>,
}

impl Table {
    /// The virtual server of `l4` on `addr`.
    pub fn find(&self, addr: SocketAddr, l4: L4) -> Option<&VirtualServer> {
        self.services.iter().find(|s| s.addr == Some(addr) && s.l4 == Some(l4))
    }
}

const TOOL_NETLINK: &str = "IPVS generic netlink";
const TOOL_PROC: &str = "/proc/net/ip_vs";
const PROC_IP_VS: &str = "/proc/net/ip_vs";

/// The table, or `None` when this kernel has no IPVS (no family `IPVS` and no
/// `/proc/net/ip_vs`: module `ip_vs` not loaded).
pub async fn read(deadline: Duration) -> Result<Option<Table>, ReadError> {
    let read = tokio::task::spawn_blocking(move || read_now(deadline));
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ReadError::Failed { tool: TOOL_NETLINK, why: e.to_string() }),
        Err(_) => Err(ReadError::Failed { tool: TOOL_NETLINK, why: format!("no answer within {deadline:?}") }),
    }
}

/// [`read`] on the calling thread (blocking).
pub fn read_now(deadline: Duration) -> Result<Option<Table>, ReadError> {
    if !crate::privileges::net_admin() {
        return read_proc();
    }
    match read_netlink(deadline) {
        Ok(Some(t)) => Ok(Some(t)),
        Ok(None) => read_proc(),
        Err(e) => Err(e),
    }
}

/// The table from `/proc/net/ip_vs` (no capability needed), or `None` without IPVS.
pub fn read_proc() -> Result<Option<Table>, ReadError> {
    match std::fs::read_to_string(PROC_IP_VS) {
        Ok(text) => parse_proc(&text).map(Some).map_err(|error| ReadError::Unparsable { tool: TOOL_PROC, error }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReadError::Failed { tool: TOOL_PROC, why: e.to_string() }),
    }
}

// include/uapi/linux/ip_vs.h
const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;
const IPVS_CMD_NEW_SERVICE: u8 = 1;
const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IP_VS_SVC_F_PERSISTENT: u32 = 0x1;
// include/uapi/linux/socket.h, include/uapi/linux/in.h (the attributes are u16).
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

/// One IPVS generic netlink message: its command and top-level attributes, kept raw (nested
/// ones are decoded by the readers below).
#[derive(Debug, Clone)]
struct IpvsMessage {
    cmd: u8,
    attrs: Vec<DefaultNla>,
    raw: Vec<(u16, Vec<u8>)>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Self { cmd: header.cmd, attrs: Vec::new(), raw: attributes(buf)? })
    }
}

/// `(type, value)` of each attribute in `buf` (the nested and byte-order flags masked off).
fn attributes(buf: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, DecodeError> {
    NlasIterator::new(buf).map(|nla| nla.map(|n: NlaBuffer<&[u8]>| (n.kind(), n.value().to_vec()))).collect()
}

fn nl_error(e: NlError) -> ReadError {
    let why = match e {
        NlError::Timeout(d) => format!("no answer within {d:?}"),
        NlError::Io(e) => e.to_string(),
        NlError::Decode(e) => return ReadError::Unparsable { tool: TOOL_NETLINK, error: e },
        NlError::Kernel(libc::EPERM) => return ReadError::NoCapability,
        NlError::Kernel(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
    };
    ReadError::Failed { tool: TOOL_NETLINK, why }
}

/// The family's id, or `None` when the kernel has no family `IPVS`.
fn family_id(deadline: Duration) -> Result<Option<u16>, ReadError> {
    let mut ask = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.into())],
    });
    ask.finalize();
    match nl_socket::exchange(NETLINK_GENERIC, ask, NLM_F_REQUEST | NLM_F_ACK, deadline) {
        Ok(answers) => Ok(answers.into_iter().find_map(|m| {
            m.payload.nlas.iter().find_map(|a| if let GenlCtrlAttrs::FamilyId(id) = a { Some(*id) } else { None })
        })),
        // genl_ctrl's answer for a family nobody registered (net/netlink/genetlink.c).
        Err(NlError::Kernel(libc::ENOENT)) => Ok(None),
        Err(e) => Err(nl_error(e)),
    }
}

fn ipvs_exchange(id: u16, cmd: u8, attrs: Vec<DefaultNla>, deadline: Duration) -> Result<Vec<IpvsMessage>, ReadError> {
    let mut m = GenlMessage::from_payload(IpvsMessage { cmd, attrs, raw: Vec::new() });
    m.set_resolved_family_id(id);
    m.finalize();
    let answers = nl_socket::exchange(NETLINK_GENERIC, m, NLM_F_REQUEST | NLM_F_DUMP, deadline).map_err(nl_error)?;
    Ok(answers.into_iter().map(|m| m.payload).collect())
}

fn read_netlink(deadline: Duration) -> Result<Option<Table>, ReadError> {
    let Some(id) = family_id(deadline)? else { return Ok(None) };
    let mut services = Vec::new();
    for m in ipvs_exchange(id, IPVS_CMD_GET_SERVICE, Vec::new(), deadline)? {
        if m.cmd != IPVS_CMD_NEW_SERVICE {
            continue;
        }
        for (kind, value) in &m.raw {
            if *kind != IPVS_CMD_ATTR_SERVICE {
                continue;
            }
            let attrs = attributes(value).map_err(|e| decode(&e))?;
            let (mut service, key) = service(&attrs).map_err(|e| decode(&e))?;
            let asked = vec![DefaultNla::new(IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, key)];
            for d in ipvs_exchange(id, IPVS_CMD_GET_DEST, asked, deadline)? {
                if d.cmd != IPVS_CMD_NEW_DEST {
                    continue;
                }
                for (kind, value) in &d.raw {
                    if *kind == IPVS_CMD_ATTR_DEST {
                        let attrs = attributes(value).map_err(|e| decode(&e))?;
                        service.real.push(real_server(&attrs, service.addr).map_err(|e| decode(&e))?);
                    }
                }
            }
            services.push(service);
        }
    }
    Ok(Some(Table { source: Source::Netlink, services }))
}

fn decode(e: &dyn std::fmt::Display) -> ReadError {
    ReadError::Unparsable { tool: TOOL_NETLINK, error: e.to_string() }
}

fn value(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<&[u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice())
}

fn u16_ne(v: Option<&[u8]>) -> Option<u16> {
    Some(u16::from_ne_bytes(v?.get(..2)?.try_into().ok()?))
}

fn u16_be(v: Option<&[u8]>) -> Option<u16> {
    Some(u16::from_be_bytes(v?.get(..2)?.try_into().ok()?))
}

fn u32_ne(v: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_ne_bytes(v?.get(..4)?.try_into().ok()?))
}

/// A `union nf_inet_addr` (16 bytes; an IPv4 address in the first 4).
fn address(af: u16, v: Option<&[u8]>) -> Option<IpAddr> {
    let v = v?;
    match af {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v.get(..4)?).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v.get(..16)?).ok()?))),
        _ => None,
    }
}

fn l4(protocol: u16) -> Option<L4> {
    match protocol {
        IPPROTO_TCP => Some(L4::Tcp),
        IPPROTO_UDP => Some(L4::Udp),
        _ => None,
    }
}

/// A service from its `IPVS_SVC_ATTR_*`, and the attributes that name it in a
/// `IPVS_CMD_GET_DEST` (family and address, port and protocol; or family and mark), emitted.
fn service(attrs: &[(u16, Vec<u8>)]) -> Result<(VirtualServer, Vec<u8>), String> {
    let af = u16_ne(value(attrs, IPVS_SVC_ATTR_AF)).ok_or("a service without IPVS_SVC_ATTR_AF")?;
    let fwmark = u32_ne(value(attrs, IPVS_SVC_ATTR_FWMARK)).filter(|m| *m != 0);
    let protocol = u16_ne(value(attrs, IPVS_SVC_ATTR_PROTOCOL)).unwrap_or(0);
    let port = u16_be(value(attrs, IPVS_SVC_ATTR_PORT)).unwrap_or(0);
    let ip = address(af, value(attrs, IPVS_SVC_ATTR_ADDR));
    let scheduler = value(attrs, IPVS_SVC_ATTR_SCHED_NAME)
        .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_string())
        .unwrap_or_default();
    let flags = u32_ne(value(attrs, IPVS_SVC_ATTR_FLAGS)).unwrap_or(0);
    let persistent =
        (flags & IP_VS_SVC_F_PERSISTENT != 0).then(|| u32_ne(value(attrs, IPVS_SVC_ATTR_TIMEOUT)).unwrap_or(0));
    let mut key: Vec<DefaultNla> = vec![DefaultNla::new(IPVS_SVC_ATTR_AF, af.to_ne_bytes().to_vec())];
    let addr = match (fwmark, ip) {
        (Some(mark), _) => {
            key.push(DefaultNla::new(IPVS_SVC_ATTR_FWMARK, mark.to_ne_bytes().to_vec()));
            None
        }
        (None, Some(ip)) => {
            key.push(DefaultNla::new(IPVS_SVC_ATTR_PROTOCOL, protocol.to_ne_bytes().to_vec()));
            key.push(DefaultNla::new(
                IPVS_SVC_ATTR_ADDR,
                value(attrs, IPVS_SVC_ATTR_ADDR).unwrap_or_default().to_vec(),
            ));
            key.push(DefaultNla::new(IPVS_SVC_ATTR_PORT, port.to_be_bytes().to_vec()));
            Some(SocketAddr::new(ip, port))
        }
        (None, None) => return Err(format!("a service of family {af} without an address or mark")),
    };
    let mut emitted = vec![0; key.as_slice().buffer_len()];
    key.as_slice().emit(&mut emitted);
    let vs = VirtualServer { l4: l4(protocol), addr, fwmark, scheduler, persistent, real: Vec::new() };
    Ok((vs, emitted))
}

/// A destination from its `IPVS_DEST_ATTR_*` (its family defaults to its service's: the
/// attribute is from 4.3).
fn real_server(attrs: &[(u16, Vec<u8>)], service: Option<SocketAddr>) -> Result<RealServer, String> {
    let service_af = match service {
        Some(SocketAddr::V6(_)) => AF_INET6,
        _ => AF_INET,
    };
    let af = u16_ne(value(attrs, IPVS_DEST_ATTR_ADDR_FAMILY)).unwrap_or(service_af);
    let ip = address(af, value(attrs, IPVS_DEST_ATTR_ADDR)).ok_or("a destination without an address")?;
    let port = u16_be(value(attrs, IPVS_DEST_ATTR_PORT)).unwrap_or(0);
    Ok(RealServer {
        addr: SocketAddr::new(ip, port),
        forward: Forward::from_method(u32_ne(value(attrs, IPVS_DEST_ATTR_FWD_METHOD)).unwrap_or(0)),
        weight: u32_ne(value(attrs, IPVS_DEST_ATTR_WEIGHT)).unwrap_or(0),
        active: u32_ne(value(attrs, IPVS_DEST_ATTR_ACTIVE_CONNS)).unwrap_or(0),
        inactive: u32_ne(value(attrs, IPVS_DEST_ATTR_INACT_CONNS)).unwrap_or(0),
    })
}

/// `/proc/net/ip_vs`: three header lines, then a line per service (`TCP  0A600050:0050 rr `,
/// `persistent TIMEOUT MASK` after it with affinity; `FWM  00000001 rr ` for a mark; IPv6 as
/// `[addr]:PORT`) followed by its destinations (`  -> 0AF40114:1F90      Masq    1      0 0`).
pub fn parse_proc(text: &str) -> Result<Table, String> {
    let mut services: Vec<VirtualServer> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] | ["IP", "Virtual", ..] | ["Prot", ..] | ["->", "RemoteAddress:Port", ..] => {}
            ["->", addr, forward, weight, active, inactive, ..] => {
                let vs = services.last_mut().ok_or_else(|| format!("a destination before any service: {line:?}"))?;
                let number = |s: &str| s.parse::<u32>().map_err(|e| format!("{s:?} in {line:?}: {e}"));
                vs.real.push(RealServer {
                    addr: hex_socket(addr).ok_or_else(|| format!("address {addr:?} in {line:?}"))?,
                    forward: Forward::from_name(forward),
                    weight: number(weight)?,
                    active: number(active)?,
                    inactive: number(inactive)?,
                });
            }
            [proto, addr, scheduler, rest @ ..] => {
                let persistent = rest
                    .iter()
                    .position(|f| *f == "persistent")
                    .and_then(|i| rest.get(i + 1))
                    .map(|t| t.parse::<u32>().map_err(|e| format!("timeout {t:?} in {line:?}: {e}")))
                    .transpose()?;
                let (l4, addr, fwmark) = match *proto {
                    "FWM" => {
                        let mark = u32::from_str_radix(addr, 16).map_err(|e| format!("mark {addr:?}: {e}"))?;
                        (None, None, Some(mark))
                    }
                    p => {
                        let sa = hex_socket(addr).ok_or_else(|| format!("address {addr:?} in {line:?}"))?;
                        (
                            match p {
                                "TCP" => Some(L4::Tcp),
                                "UDP" => Some(L4::Udp),
                                _ => None,
                            },
                            Some(sa),
                            None,
                        )
                    }
                };
                let scheduler = (*scheduler).to_string();
                services.push(VirtualServer { l4, addr, fwmark, scheduler, persistent, real: Vec::new() });
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    Ok(Table { source: Source::Procfs, services })
}

/// `0A600050:0050` (IPv4 and port in hex, host order as printed) or `[2001:0db8:…]:0050`.
fn hex_socket(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse().ok()?),
        None => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?)),
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/ip_vs` as `ip_vs_info_seq_show` prints it (trailing blanks included): a TCP
    /// service with a quiesced real server, a UDP one with affinity, and a mark service.
    const PROC: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600050:0050 rr 
  -> 0AF40114:1F90      Masq    1      0          3         
  -> 0AF4020A:1F90      Masq    0      1          0         
UDP  0A60000A:0035 rr persistent 10800 FFFFFFFF
  -> 0AF4020A:0035      Masq    1      0          0         
FWM  00000001 rr 
";

    #[test]
    fn proc_lists_services_with_their_real_servers() {
        let t = parse_proc(PROC).unwrap();
        assert_eq!(t.services.len(), 3);
        let web = t.find("10.96.0.80:80".parse().unwrap(), L4::Tcp).unwrap();
        assert_eq!(web.scheduler, "rr");
        assert_eq!(web.persistent, None);
        let addrs: Vec<(String, u32)> = web.real.iter().map(|r| (r.addr.to_string(), r.weight)).collect();
        assert_eq!(addrs, [("10.244.1.20:8080".to_string(), 1), ("10.244.2.10:8080".to_string(), 0)]);
        assert_eq!(web.real[0].forward, Forward::Masq);
        assert_eq!(web.real[0].inactive, 3);
        let dns = t.find("10.96.0.10:53".parse().unwrap(), L4::Udp).unwrap();
        assert_eq!(dns.persistent, Some(10800));
        assert_eq!(t.services[2].fwmark, Some(1));
        assert_eq!(t.services[2].addr, None);
    }

    #[test]
    fn proc_garbage_is_an_error_not_a_panic() {
        assert!(parse_proc("  -> 0AF40114:1F90 Masq 1 0 0\n").is_err());
        assert!(parse_proc("TCP  zz:0050 rr\n").is_err());
        assert!(parse_proc("TCP\n").is_err());
        assert_eq!(parse_proc("").unwrap().services, Vec::new());
    }

    #[test]
    fn an_ipv6_proc_address_parses() {
        assert_eq!(
            hex_socket("[2001:0db8:0000:0000:0000:0000:0000:0001]:0050"),
            Some("[2001:db8::1]:80".parse().unwrap())
        );
    }

    fn nla(kind: u16, value: &[u8]) -> (u16, Vec<u8>) {
        (kind, value.to_vec())
    }

    /// A service and a destination decoded from attributes laid out as the kernel fills them
    /// (`ip_vs_genl_fill_service`, `ip_vs_genl_fill_dest`: a 16-byte address, a big-endian
    /// port, host-order numbers), and the GET_DEST key naming the service.
    #[test]
    fn netlink_attributes_decode_as_the_kernel_fills_them() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 96, 0, 80]);
        let attrs = vec![
            nla(IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes()),
            nla(IPVS_SVC_ATTR_PROTOCOL, &IPPROTO_TCP.to_ne_bytes()),
            nla(IPVS_SVC_ATTR_ADDR, &addr),
            nla(IPVS_SVC_ATTR_PORT, &80u16.to_be_bytes()),
            nla(IPVS_SVC_ATTR_SCHED_NAME, b"rr\0"),
            nla(IPVS_SVC_ATTR_FLAGS, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            nla(IPVS_SVC_ATTR_TIMEOUT, &10800u32.to_ne_bytes()),
        ];
        let (vs, key) = service(&attrs).unwrap();
        assert_eq!(vs.addr, Some("10.96.0.80:80".parse().unwrap()));
        assert_eq!(vs.l4, Some(L4::Tcp));
        assert_eq!(vs.scheduler, "rr");
        assert_eq!(vs.persistent, Some(10800));
        let kinds: Vec<u16> = attributes(&key).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [IPVS_SVC_ATTR_AF, IPVS_SVC_ATTR_PROTOCOL, IPVS_SVC_ATTR_ADDR, IPVS_SVC_ATTR_PORT]);
        let mut rs = [0u8; 16];
        rs[..4].copy_from_slice(&[10, 244, 2, 10]);
        let dest = vec![
            nla(IPVS_DEST_ATTR_ADDR, &rs),
            nla(IPVS_DEST_ATTR_PORT, &8080u16.to_be_bytes()),
            nla(IPVS_DEST_ATTR_FWD_METHOD, &0u32.to_ne_bytes()),
            nla(IPVS_DEST_ATTR_WEIGHT, &0u32.to_ne_bytes()),
            nla(IPVS_DEST_ATTR_ACTIVE_CONNS, &2u32.to_ne_bytes()),
        ];
        let r = real_server(&dest, vs.addr).unwrap();
        assert_eq!((r.addr, r.forward, r.weight, r.active), ("10.244.2.10:8080".parse().unwrap(), Forward::Masq, 0, 2));
        assert!(service(&[nla(IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes())]).is_err());
        assert!(real_server(&[], None).is_err());
    }
}
