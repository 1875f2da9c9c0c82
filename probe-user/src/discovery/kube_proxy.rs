//! kube-proxy's rules for one Service port, read back from the kernel's ruleset in the
//! iptables mode (either backend): `KUBE-SERVICES` matches the cluster IP and port and jumps to
//! the Service's chain (`KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`), which picks a `KUBE-SEP-` chain per
//! endpoint whose DNAT names the endpoint (k/k pkg/proxy/iptables/proxier.go). A Service
//! without endpoints has no nat chains but a filter-table REJECT ("has no endpoints").
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

/// Follows `chain`'s jumps, collecting DNAT destinations (kube-proxy's mark chains add none).
fn follow(set: &Ruleset, chain: &str, depth: usize, chains: &mut Vec<String>, endpoints: &mut Vec<SocketAddr>) {
    if depth > MAX_DEPTH || chains.iter().any(|c| c == chain) {
        return;
    }
    let Some(c) = set.table("nat").and_then(|t| t.chain(chain)) else { return };
    chains.push(chain.to_string());
    for rule in &c.rules {
        match rule.target() {
            Some("DNAT") => {
                if let Some(to) = rule.value("--to-destination").and_then(|d| d.parse::<SocketAddr>().ok())
                    && !endpoints.contains(&to)
                {
                    endpoints.push(to);
                }
            }
            Some(next) if next.starts_with("KUBE-") && next != "KUBE-MARK-MASQ" => {
                follow(set, next, depth + 1, chains, endpoints);
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
