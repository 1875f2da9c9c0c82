//! kube-proxy's rules for one Service port, read back from the kernel's ruleset in the
//! iptables mode (either backend): `KUBE-SERVICES` matches the cluster IP and port and jumps to
//! the Service's chain (`KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`), which picks a `KUBE-SEP-` chain per
//! endpoint whose DNAT names the endpoint (k/k pkg/proxy/iptables/proxier.go). A Service
//! without endpoints has no nat chains but a filter-table REJECT ("has no endpoints").
//!
//! A NodePort is `KUBE-NODEPORTS` (the tail of nat `KUBE-SERVICES` for local destinations)
//! matching the protocol and port and jumping to `KUBE-EXT-`. Under `externalTrafficPolicy:
//! Local` that chain sends pods and the node itself (`-s CLUSTER_CIDR`, `--src-type LOCAL`) to
//! the cluster-wide `KUBE-SVC-` and everyone else to `KUBE-SVL-` with the node's own endpoints;
//! with none, filter `KUBE-EXTERNAL-SERVICES` drops the port ("has no local endpoints").
//!
//! Rules are followed by their matches and jumps, never found by chain names or comments:
//! comments are dropped above 1000 endpoints (`largeClusterMode`), and chain names are hashes
//! netcheck recomputes only to say which chain kube-proxy would have written.

use std::net::{IpAddr, SocketAddr};

use sha2::Digest as _;

use super::{
    conntrack::L4,
    iptables::{Backend, Ruleset},
};

/// What the ruleset does with new connections to one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Programmed {
    /// DNATed to these endpoints, through these chains (`KUBE-SERVICES` first).
    Endpoints { backend: Backend, chains: Vec<String>, endpoints: Vec<SocketAddr> },
    /// Rejected or dropped in the filter table: kube-proxy's rule for a Service without
    /// (local) endpoints, with its comment.
    Rejected { backend: Backend, target: String, comment: Option<String> },
    /// Rules that packets never reach: an IPVS virtual server whose address is not local.
    Unreachable { backend: Backend, why: String },
    /// No rule matches the address and port.
    Missing,
}

/// kube-proxy's chain name for a Service port (`prefix` `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`,
/// `KUBE-FW-`): 16 base32 characters of SHA-256 of the port name and the lower-case protocol
/// (`portProtoHash`, k/k pkg/proxy/iptables/proxier.go).
pub fn service_chain(prefix: &str, port_name: &str, l4: L4) -> String {
    format!("{prefix}{}", hash16(&format!("{port_name}{}", l4.as_str())))
}

/// kube-proxy's `KUBE-SEP-` chain for one endpoint (`servicePortEndpointChainName`).
pub fn endpoint_chain(port_name: &str, l4: L4, endpoint: SocketAddr) -> String {
    format!("KUBE-SEP-{}", hash16(&format!("{port_name}{}{endpoint}", l4.as_str())))
}

fn hash16(input: &str) -> String {
    let digest = sha2::Sha256::digest(input.as_bytes());
    data_encoding::BASE32.encode(&digest)[..16].to_string()
}

/// Jumps followed at most this deep (kube-proxy's deepest is SERVICES → EXT → SVC → SEP).
const MAX_DEPTH: usize = 6;

/// What `set` (one backend's ruleset) does with a new `l4` connection to `vip`.
pub fn iptables_rules(set: &Ruleset, backend: Backend, vip: SocketAddr, l4: L4) -> Programmed {
    if let Some(nat) = set.table("nat")
        && let Some(services) = nat.chain("KUBE-SERVICES")
    {
        for rule in &services.rules {
            if !matches_vip(rule, vip, l4) {
                continue;
            }
            let Some(next) = rule.target() else { continue };
            let mut chains = vec!["KUBE-SERVICES".to_string()];
            let mut endpoints = Vec::new();
            follow(set, next, 0, &mut chains, &mut endpoints);
            return Programmed::Endpoints { backend, chains, endpoints };
        }
    }
    if let Some(filter) = set.table("filter") {
        for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"] {
            let Some(c) = filter.chain(chain) else { continue };
            if let Some(rule) = c.rules.iter().find(|r| matches_vip(r, vip, l4)) {
                return Programmed::Rejected {
                    backend,
                    target: rule.target().unwrap_or("?").to_string(),
                    comment: comment(rule),
                };
            }
        }
    }
    Programmed::Missing
}

/// What `set` does with a new `l4` connection from another host to this node's `node_port`:
/// the endpoints external traffic is DNATed to (the short-circuits for pods and the node itself
/// are not followed), or the filter table's DROP/REJECT for the port.
pub fn iptables_node_port(set: &Ruleset, backend: Backend, node_port: u16, l4: L4) -> Programmed {
    let mut found = None;
    if let Some(nat) = set.table("nat")
        && let Some(ports) = nat.chain("KUBE-NODEPORTS")
    {
        // The localhost variant (`-d 127.0.0.0/8`) is for 127.0.0.1:PORT only.
        let rule = ports.rules.iter().find(|r| matches_port(r, node_port, l4) && r.value("-d").is_none());
        if let Some(next) = rule.and_then(|r| r.target()) {
            let mut chains = vec!["KUBE-NODEPORTS".to_string()];
            let mut endpoints = Vec::new();
            follow_from(set, next, 0, &mut chains, &mut endpoints, true);
            if !endpoints.is_empty() {
                return Programmed::Endpoints { backend, chains, endpoints };
            }
            found = Some(Programmed::Endpoints { backend, chains, endpoints });
        }
    }
    if let Some(c) = set.table("filter").and_then(|t| t.chain("KUBE-EXTERNAL-SERVICES"))
        && let Some(rule) = c.rules.iter().find(|r| matches_port(r, node_port, l4) && r.value("-d").is_none())
    {
        return Programmed::Rejected {
            backend,
            target: rule.target().unwrap_or("?").to_string(),
            comment: comment(rule),
        };
    }
    found.unwrap_or(Programmed::Missing)
}

/// Follows `chain`'s jumps, collecting DNAT destinations (kube-proxy's mark chains add none).
fn follow(set: &Ruleset, chain: &str, depth: usize, chains: &mut Vec<String>, endpoints: &mut Vec<SocketAddr>) {
    follow_from(set, chain, depth, chains, endpoints, false);
}

/// [`follow`]; `external` skips jumps taken only for a source (`-s`, `--src-type LOCAL`): the
/// paths of pods and of the node itself, not of a client elsewhere.
fn follow_from(
    set: &Ruleset,
    chain: &str,
    depth: usize,
    chains: &mut Vec<String>,
    endpoints: &mut Vec<SocketAddr>,
    external: bool,
) {
    if depth > MAX_DEPTH || chains.iter().any(|c| c == chain) {
        return;
    }
    let Some(c) = set.table("nat").and_then(|t| t.chain(chain)) else { return };
    chains.push(chain.to_string());
    for rule in &c.rules {
        if external && (rule.value("-s").is_some() || rule.args.iter().any(|a| a == "--src-type")) {
            continue;
        }
        match rule.target() {
            Some("DNAT") => {
                if let Some(to) = rule.value("--to-destination").and_then(|d| d.parse::<SocketAddr>().ok())
                    && !endpoints.contains(&to)
                {
                    endpoints.push(to);
                }
            }
            Some(next) if next.starts_with("KUBE-") && next != "KUBE-MARK-MASQ" => {
                follow_from(set, next, depth + 1, chains, endpoints, external);
            }
            _ => {}
        }
    }
}

/// Whether a rule matches new connections to `vip` over `l4`: its destination (`-d IP/32`),
/// protocol and destination port.
fn matches_vip(rule: &super::iptables::Rule, vip: SocketAddr, l4: L4) -> bool {
    let dst = rule.value("-d").map(|d| d.strip_suffix("/32").or_else(|| d.strip_suffix("/128")).unwrap_or(d));
    let ip_ok = dst.and_then(|d| d.parse::<IpAddr>().ok()) == Some(vip.ip());
    let proto_ok = rule.value("-p") == Some(l4.as_str());
    let port_ok = rule.value("--dport").and_then(|p| p.parse::<u16>().ok()) == Some(vip.port());
    ip_ok && proto_ok && port_ok
}

/// Whether a rule matches new `l4` connections to port `port` (a NodePort rule has no `-d`).
fn matches_port(rule: &super::iptables::Rule, port: u16, l4: L4) -> bool {
    rule.value("-p") == Some(l4.as_str()) && rule.value("--dport").and_then(|p| p.parse::<u16>().ok()) == Some(port)
}

fn comment(rule: &super::iptables::Rule) -> Option<String> {
    let at = rule.args.iter().position(|a| a == "--comment")?;
    rule.args.get(at + 1).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::iptables::parse;

    /// The names kube-proxy's own tests expect (k/k pkg/proxy/iptables/proxier_test.go).
    #[test]
    fn chain_names_are_kube_proxys() {
        assert_eq!(service_chain("KUBE-SVC-", "ns1/svc1:p80", L4::Tcp), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", L4::Tcp, "10.180.0.1:80".parse().unwrap()),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    /// A ruleset as kube-proxy writes it (layout of proxier_test.go's expected dumps), two
    /// endpoints, a Service without endpoints, and the mark chains.
    const SAVE: &str = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.42/32 --dport 80 -j REJECT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-OTHER - [0:0]
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41/32 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41/32 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j KUBE-SEP-OTHER
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-OTHER -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
COMMIT
"#;

    #[test]
    fn rules_are_followed_from_the_vip_to_each_endpoint() {
        let set = parse(SAVE).unwrap();
        let got = iptables_rules(&set, Backend::Nft, "172.30.0.41:80".parse().unwrap(), L4::Tcp);
        assert_eq!(
            got,
            Programmed::Endpoints {
                backend: Backend::Nft,
                chains: vec![
                    "KUBE-SERVICES".into(),
                    "KUBE-SVC-XPGD46QRK7WJZT7O".into(),
                    "KUBE-SEP-SXIVWICOYRO3J4NJ".into(),
                    "KUBE-SEP-OTHER".into()
                ],
                endpoints: vec!["10.180.0.1:80".parse().unwrap(), "10.180.0.2:80".parse().unwrap()],
            }
        );
        // The same address over UDP, or another port, matches nothing.
        assert_eq!(iptables_rules(&set, Backend::Nft, "172.30.0.41:80".parse().unwrap(), L4::Udp), Programmed::Missing);
        assert_eq!(iptables_rules(&set, Backend::Nft, "172.30.0.41:81".parse().unwrap(), L4::Tcp), Programmed::Missing);
    }

    /// NodePorts as kube-proxy writes them (proxier.go): svc3 under `externalTrafficPolicy:
    /// Local` with one endpoint on this node, svc4 under Local with none here, svc5 Cluster.
    const NODEPORTS: &str = r#"*filter
:KUBE-EXTERNAL-SERVICES - [0:0]
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns4/svc4:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30004 -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-3 - [0:0]
:KUBE-SVC-3 - [0:0]
:KUBE-SVL-3 - [0:0]
:KUBE-SEP-3A - [0:0]
:KUBE-SEP-3B - [0:0]
:KUBE-EXT-4 - [0:0]
:KUBE-SVC-4 - [0:0]
:KUBE-SEP-4A - [0:0]
:KUBE-EXT-5 - [0:0]
:KUBE-SVC-5 - [0:0]
:KUBE-SEP-5A - [0:0]
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 30003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-3
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 30003 -j KUBE-EXT-3
-A KUBE-NODEPORTS -m comment --comment ns4/svc4:p80 -m tcp -p tcp --dport 30004 -j KUBE-EXT-4
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m udp -p udp --dport 30005 -j KUBE-EXT-5
-A KUBE-EXT-3 -m comment --comment "pod traffic for ns3/svc3:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-3
-A KUBE-EXT-3 -m comment --comment "masquerade LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-3 -m comment --comment "route LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-3
-A KUBE-EXT-3 -j KUBE-SVL-3
-A KUBE-SVC-3 -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-3A
-A KUBE-SVC-3 -m comment --comment "ns3/svc3:p80 -> 10.180.1.3:80" -j KUBE-SEP-3B
-A KUBE-SVL-3 -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-3A
-A KUBE-SEP-3A -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-3B -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.3:80
-A KUBE-EXT-4 -m comment --comment "pod traffic for ns4/svc4:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-4
-A KUBE-EXT-4 -m comment --comment "route LOCAL traffic for ns4/svc4:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-4
-A KUBE-SVC-4 -m comment --comment "ns4/svc4:p80 -> 10.180.1.4:80" -j KUBE-SEP-4A
-A KUBE-SEP-4A -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.4:80
-A KUBE-EXT-5 -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-5 -j KUBE-SVC-5
-A KUBE-SVC-5 -m comment --comment "ns5/svc5:p80 -> 10.180.1.5:80" -j KUBE-SEP-5A
-A KUBE-SEP-5A -m comment --comment ns5/svc5:p80 -m udp -p udp -j DNAT --to-destination 10.180.1.5:80
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
"#;

    #[test]
    fn node_ports_follow_external_traffic() {
        let set = parse(NODEPORTS).unwrap();
        let np = |port, l4| iptables_node_port(&set, Backend::Nft, port, l4);
        let eps = |v: &[&str]| v.iter().map(|e| e.parse().unwrap()).collect::<Vec<SocketAddr>>();
        // Local with an endpoint here: only it, through KUBE-SVL- (not the pods' short-circuit).
        assert_eq!(
            np(30003, L4::Tcp),
            Programmed::Endpoints {
                backend: Backend::Nft,
                chains: vec!["KUBE-NODEPORTS".into(), "KUBE-EXT-3".into(), "KUBE-SVL-3".into(), "KUBE-SEP-3A".into()],
                endpoints: eps(&["10.180.0.3:80"]),
            }
        );
        // Local without one: the filter table's DROP, with kube-proxy's comment.
        assert_eq!(
            np(30004, L4::Tcp),
            Programmed::Rejected {
                backend: Backend::Nft,
                target: "DROP".into(),
                comment: Some("ns4/svc4:p80 has no local endpoints".into())
            }
        );
        // Cluster: every endpoint, over the port's own protocol only.
        assert!(
            matches!(np(30005, L4::Udp), Programmed::Endpoints { endpoints, .. } if endpoints == eps(&["10.180.1.5:80"]))
        );
        assert_eq!(np(30005, L4::Tcp), Programmed::Missing);
        assert_eq!(np(30006, L4::Tcp), Programmed::Missing);
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_in_filter() {
        let set = parse(SAVE).unwrap();
        assert_eq!(
            iptables_rules(&set, Backend::Legacy, "172.30.0.42:80".parse().unwrap(), L4::Tcp),
            Programmed::Rejected {
                backend: Backend::Legacy,
                target: "REJECT".into(),
                comment: Some("ns2/svc2:p80 has no endpoints".into())
            }
        );
    }
}
