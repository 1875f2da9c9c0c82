//! kube-proxy's IPVS mode read back from the kernel's IPVS table (k/k pkg/proxy/ipvs/proxier.go):
//! a virtual server per Service IP, port and protocol (scheduler `rr` by default, persistent
//! for `sessionAffinity: ClientIP`) whose real servers are the endpoints, NATed (`Masq`); a
//! terminating endpoint's real server stays with weight 0 until its connections end. The
//! Service IP is bound to the dummy device `kube-ipvs0`: IPVS sees only packets routed to a
//! local address (its hooks are LOCAL_IN and, for the node's own sockets, LOCAL_OUT), so a
//! virtual server whose address is not local never sees a pod's packets. A NodePort is a
//! virtual server per node address and the port. The iptables rules of this mode (ipset
//! matches for masquerading and filtering) carry no per-Service DNAT and are not read here.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use super::{
    conntrack::L4,
    iptables::Backend,
    ipvs::{Source, Table, VirtualServer},
    kube_proxy::Programmed,
};

pub fn backend(table: &Table) -> Backend {
    Backend::Ipvs { procfs: table.source == Source::Procfs }
}

/// What the IPVS table does with new `l4` connections to `vip`; `vip_local`: whether the
/// address is one of this namespace's (kube-proxy binds it to `kube-ipvs0`).
pub fn rules(table: &Table, vip: SocketAddr, l4: L4, vip_local: bool) -> Programmed {
    let backend = backend(table);
    let Some(vs) = table.find(vip, l4) else { return Programmed::Missing };
    if !vip_local {
        return Programmed::Unreachable {
            backend,
            why: format!(
                "this node holds no address {} (kube-proxy binds every Service IP to kube-ipvs0): packets to it \
                 are routed past IPVS",
                vip.ip()
            ),
        };
    }
    endpoints(backend, &[vs])
}

/// What the table does with new `l4` connections from another host to `node_port` on this
/// node's addresses `local` (one virtual server per node address; those on loopback are
/// for `localhost:NODEPORT` only).
pub fn node_port(table: &Table, local: &[IpAddr], node_port: u16, l4: L4) -> Programmed {
    let found: Vec<&VirtualServer> = table
        .services
        .iter()
        .filter(|s| {
            s.l4 == Some(l4)
                && s.addr.is_some_and(|a| a.port() == node_port && !a.ip().is_loopback() && local.contains(&a.ip()))
        })
        .collect();
    if found.is_empty() {
        return Programmed::Missing;
    }
    endpoints(backend(table), &found)
}

/// The real servers new connections go to (weight above 0), each virtual server described as
/// `ipvsadm -Ln` shows it, with its quiesced real servers.
fn endpoints(backend: Backend, found: &[&VirtualServer]) -> Programmed {
    let mut chains = Vec::new();
    let mut endpoints = Vec::new();
    for vs in found {
        let mut text = format!(
            "virtual server {} {} ({}{})",
            vs.l4.map_or("?", L4::as_str).to_uppercase(),
            vs.addr.map_or_else(|| "?".into(), |a| a.to_string()),
            vs.scheduler,
            vs.persistent.map(|t| format!(", persistent {t} s")).unwrap_or_default()
        );
        // The kernel lists real servers newest first (`list_add_rcu` in `__ip_vs_update_dest`,
        // ip_vs_ctl.c); the order means nothing to `rr`, so they are shown sorted.
        let mut real: Vec<_> = vs.real.iter().collect();
        real.sort_by_key(|r| r.addr);
        let quiesced: Vec<String> = real.iter().filter(|r| r.weight == 0).map(|r| r.addr.to_string()).collect();
        if !quiesced.is_empty() {
            let _ = write!(text, " with weight 0 (terminating, no new connections): {}", quiesced.join(", "));
        }
        chains.push(text);
        for r in real.iter().filter(|r| r.weight > 0) {
            if !endpoints.contains(&r.addr) {
                endpoints.push(r.addr);
            }
        }
    }
    Programmed::Endpoints { backend, chains, endpoints }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ipvs::parse_proc;

    const TABLE: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600050:0050 rr 
  -> 0AF40114:1F90      Masq    1      0          0         
  -> 0AF4020A:1F90      Masq    0      0          0         
TCP  C0A8320B:7918 rr 
  -> 0AF40114:1F90      Masq    1      0          0         
TCP  7F000001:7918 rr 
  -> 0AF40114:1F90      Masq    1      0          0         
";

    fn table() -> Table {
        parse_proc(TABLE).unwrap()
    }

    #[test]
    fn a_virtual_server_gives_its_weighted_real_servers() {
        let vip = "10.96.0.80:80".parse().unwrap();
        match rules(&table(), vip, L4::Tcp, true) {
            Programmed::Endpoints { backend, chains, endpoints } => {
                assert_eq!(backend, Backend::Ipvs { procfs: true });
                assert_eq!(endpoints, ["10.244.1.20:8080".parse().unwrap()]);
                assert_eq!(
                    chains,
                    ["virtual server TCP 10.96.0.80:80 (rr) with weight 0 (terminating, no new connections): \
                      10.244.2.10:8080"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rules(&table(), vip, L4::Udp, true), Programmed::Missing);
        assert_eq!(rules(&table(), "10.96.0.81:80".parse().unwrap(), L4::Tcp, true), Programmed::Missing);
    }

    #[test]
    fn a_service_ip_not_bound_here_is_unreachable() {
        let got = rules(&table(), "10.96.0.80:80".parse().unwrap(), L4::Tcp, false);
        assert!(matches!(&got, Programmed::Unreachable { why, .. } if why.contains("kube-ipvs0")), "{got:?}");
    }

    #[test]
    fn a_node_port_is_read_on_this_nodes_addresses() {
        let n1: IpAddr = "192.168.50.11".parse().unwrap();
        let local = [n1, "127.0.0.1".parse().unwrap()];
        match node_port(&table(), &local, 31000, L4::Tcp) {
            Programmed::Endpoints { endpoints, chains, .. } => {
                assert_eq!(endpoints, ["10.244.1.20:8080".parse().unwrap()]);
                assert_eq!(chains, ["virtual server TCP 192.168.50.11:31000 (rr)"]);
            }
            other => panic!("{other:?}"),
        }
        // Another node's address is not this node's NodePort.
        assert_eq!(node_port(&table(), &["192.168.50.12".parse().unwrap()], 31000, L4::Tcp), Programmed::Missing);
    }
}
