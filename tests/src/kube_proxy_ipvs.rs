//! kube-proxy's IPVS mode in the lab, written the way its IPVS proxier writes it
//! (k/k pkg/proxy/ipvs/proxier.go): every Service IP bound to the dummy device `kube-ipvs0`; a
//! virtual server per Service IP, port and protocol (scheduler `rr`) with a NATed (`-m`) real
//! server per ready endpoint; a NodePort as a virtual server on the node's address (only the
//! node's own endpoints under `externalTrafficPolicy: Local`); `net.ipv4.vs.conntrack=1`, so
//! netfilter keeps tracking what IPVS NATs and the masquerade applies; and the iptables rules of
//! this mode, which match ipsets (`KUBE-CLUSTER-IP`, `KUBE-NODE-PORT-TCP|UDP`) to mark traffic for
//! `KUBE-POSTROUTING`'s masquerade, with no per-Service DNAT. The virtual servers are loaded with
//! `ipvsadm -R`, the sets with `ipset restore`, the rules with `iptables-restore --noflush`.
//!
//! The host's kernel (6.18 here) has no IP_VS: this runs in the kernel-matrix guests, whose
//! Debian kernels ship `ip_vs.ko` (`cargo xtask kernels`, tests/tests/ipvs.rs).

use std::fmt::Write as _;

use super::*;
use crate::kube_proxy::{LabPort, LabService, Programming};

/// What the IPVS stand-in writes on one node: the Services as [`Programming`] says, and the
/// Service IPs left off `kube-ipvs0` (the fault "virtual server there, address not bound").
#[derive(Debug, Clone, Default)]
pub struct IpvsProgramming {
    pub rules: Programming,
    pub unbound: Vec<Ipv4Addr>,
}

/// `-t` or `-u`, as ipvsadm names the protocol.
fn flag(p: &LabPort) -> &'static str {
    if p.udp { "-u" } else { "-t" }
}

/// The `ipvsadm -R` input of node `node` (its address `node_ip`) for `services`.
pub fn virtual_servers(services: &[LabService], how: &Programming, node: u8, node_ip: Ipv4Addr) -> String {
    let mut text = String::new();
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        if how.without.as_deref() == Some(key.as_str()) {
            continue;
        }
        for p in &svc.ports {
            let eps = how.endpoints_of(svc, &key, node);
            let mut server = |addr: SocketAddr, eps: &[Ipv4Addr]| {
                let _ = writeln!(text, "-A {} {addr} -s rr", flag(p));
                for ip in eps {
                    let _ = writeln!(text, "-a {} {addr} -r {ip}:{} -m -w 1", flag(p), p.target_port);
                }
            };
            let all: Vec<Ipv4Addr> = eps.iter().map(|e| e.0).collect();
            server(SocketAddr::new(svc.cluster_ip.into(), p.port), &all);
            if let Some(np) = p.node_port {
                let local: Vec<Ipv4Addr> = eps.iter().filter(|e| e.1).map(|e| e.0).collect();
                server(SocketAddr::new(node_ip.into(), np), if svc.external_local { &local } else { &all });
            }
        }
    }
    text
}

/// The `ipset -exist restore` input: the sets this mode's iptables rules match.
fn sets(services: &[LabService]) -> String {
    let mut text = String::from(
        "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\nflush KUBE-CLUSTER-IP\n\
         create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\nflush KUBE-NODE-PORT-TCP\n\
         create KUBE-NODE-PORT-UDP bitmap:port range 0-65535\nflush KUBE-NODE-PORT-UDP\n",
    );
    for svc in services {
        for p in &svc.ports {
            let proto = if p.udp { "udp" } else { "tcp" };
            let _ = writeln!(text, "add KUBE-CLUSTER-IP {},{proto}:{}", svc.cluster_ip, p.port);
            if let Some(np) = p.node_port {
                let _ = writeln!(text, "add KUBE-NODE-PORT-{} {np}", proto.to_ascii_uppercase());
            }
        }
    }
    text
}

/// This mode's iptables rules (the parts the lab's traffic goes through): mark what is not
/// from a pod and goes to a Service IP, and NodePort traffic, for the masquerade.
fn iptables_rules() -> String {
    let chains = ["KUBE-SERVICES", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"];
    let mut nat: Vec<String> = chains.iter().map(|c| format!(":{c} - [0:0]")).collect();
    nat.extend([
        format!(
            "-A KUBE-SERVICES ! -s {POD_CIDR} -m comment --comment \"Kubernetes service cluster ip + port for \
             masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"
        ),
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".into(),
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT".into(),
        "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m \
         set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ"
            .into(),
        "-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m \
         set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ"
            .into(),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE \
         --random-fully"
            .into(),
    ]);
    format!(
        "*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\nCOMMIT\n*nat\n{}\nCOMMIT\n",
        nat.join("\n")
    )
}

impl Lab {
    /// Switches node `node`'s kube-proxy to IPVS mode (its nftables table deleted, its iptables
    /// rules replaced by this mode's) and writes its virtual servers, sets and `kube-ipvs0`.
    pub fn program_kube_proxy_ipvs(&self, node: u8, how: &IpvsProgramming) -> Result<()> {
        let ns = self.node(node).netns.clone();
        let node_ip = self.node(node).underlay_ip;
        let services = self.services.lock().expect("services").clone();
        let _ = Command::new("ip").args(["netns", "exec", &ns, "nft", "delete", "table", "ip", "kube-proxy"]).output();
        // ip_vs registers /proc/net/ip_vs in every namespace when it loads (the guests' /init
        // loads it: `cargo xtask kernels`); without it there is nothing to stand in for.
        if !std::path::Path::new("/proc/net/ip_vs").exists() {
            bail!(
                "this kernel has no IP_VS (module ip_vs not loaded, /proc/net/ip_vs absent): tests/tests/ipvs.rs runs in the kernel-matrix guests"
            );
        }
        pipe_in(&ns, "sysctl", &["-qw", "net.ipv4.vs.conntrack=1"], "")?;
        pipe_in(&ns, "ipset", &["-exist", "restore"], &sets(&services))?;
        self.restore_kube_proxy(node, &iptables_rules())?;
        if ip(&ns, "link show kube-ipvs0").is_err() {
            ip(&ns, "link add kube-ipvs0 type dummy")?;
        }
        ip(&ns, "addr flush dev kube-ipvs0")?;
        for svc in services.iter().filter(|s| !how.unbound.contains(&s.cluster_ip)) {
            ip(&ns, &format!("addr add {}/32 dev kube-ipvs0", svc.cluster_ip))?;
        }
        pipe_in(&ns, "ipvsadm", &["-C"], "")?;
        pipe_in(&ns, "ipvsadm", &["-R"], &virtual_servers(&services, &how.rules, node, node_ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_proxy::LabEndpoint;

    #[test]
    fn virtual_servers_are_written_as_ipvsadm_saves_them() {
        let svc = LabService {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, 80),
            ports: vec![LabPort {
                name: "http".into(),
                port: 80,
                udp: false,
                target_port: 8080,
                node_port: Some(31000),
            }],
            endpoints: vec![
                LabEndpoint { ip: Ipv4Addr::new(10, 244, 1, 20), node: 1, pod: "w1".into(), ready: true },
                LabEndpoint { ip: Ipv4Addr::new(10, 244, 2, 10), node: 2, pod: "b".into(), ready: true },
            ],
            external_local: true,
        };
        let text = virtual_servers(&[svc], &Programming::default(), 1, Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(
            text,
            "-A -t 10.96.0.80:80 -s rr\n-a -t 10.96.0.80:80 -r 10.244.1.20:8080 -m -w 1\n\
             -a -t 10.96.0.80:80 -r 10.244.2.10:8080 -m -w 1\n-A -t 192.168.50.11:31000 -s rr\n\
             -a -t 192.168.50.11:31000 -r 10.244.1.20:8080 -m -w 1\n"
        );
    }
}
