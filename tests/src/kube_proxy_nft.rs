//! kube-proxy's nftables mode in the lab: the same Services written the way its nftables
//! proxier writes them (k/k pkg/proxy/nftables/proxier.go): one `table ip kube-proxy` with the
//! `service-ips` verdict map dispatched from the nat hooks, a `service-` chain per Service port
//! choosing an endpoint with `numgen random mod N vmap`, an `endpoint-` chain per endpoint ending
//! in `dnat to`, and the `no-endpoint-services` map rejecting a port without endpoints from the
//! filter hooks; NodePorts in the `service-nodeports` map (dispatched for local destinations)
//! through an `external-` chain (`local-` for `externalTrafficPolicy: Local`), and
//! `no-endpoint-nodeports` dropping the port on a node without a local endpoint; the
//! `masquerading` chain in nat postrouting. Loaded with `nft -f` in one transaction, as
//! kube-proxy's knftables does.

use sha2::Digest as _;

use super::{Ipv4Addr, Lab, POD_CIDR, Result, pipe_in};
use crate::kube_proxy::{LabPort, LabService, Programming};

/// kube-proxy's chain name: `PREFIX-HASH8-BASE`, HASH8 the first 8 characters of base32(SHA-256
/// of BASE) (`hashAndTruncate`, pkg/proxy/nftables/proxier.go).
fn chain(prefix: &str, base: &str) -> String {
    let hash = data_encoding::BASE32.encode(&sha2::Sha256::digest(base.as_bytes()));
    format!("{prefix}-{}-{base}", &hash[..8])
}

/// The `nft -f` input kube-proxy on node `node` would write for `services` (the table deleted
/// and written again in one transaction; only NodePorts differ between nodes).
pub fn rules(services: &[LabService], how: &Programming, node: u8) -> String {
    let mut t = Tables::default();
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        if how.without.as_deref() == Some(key.as_str()) {
            continue;
        }
        for p in &svc.ports {
            let eps = how.endpoints_of(svc, &key, node);
            t.port(svc, &key, p, &eps);
        }
    }
    t.finish()
}

/// The table's chains and map elements, as kube-proxy's nftables proxier accumulates them.
#[derive(Default)]
struct Tables {
    chains: Vec<String>,
    service_ips: Vec<String>,
    no_endpoints: Vec<String>,
    node_ports: Vec<String>,
    no_endpoint_node_ports: Vec<String>,
}

impl Tables {
    /// One Service port whose ready endpoints are `eps` (address, on this node).
    fn port(&mut self, svc: &LabService, key: &str, p: &LabPort, eps: &[(Ipv4Addr, bool)]) {
        let proto = if p.udp { "udp" } else { "tcp" };
        let element = format!("{} . {proto} . {}", svc.cluster_ip, p.port);
        let port_name = if p.name.is_empty() { format!("{key}:") } else { format!("{key}:{}", p.name) };
        let local: Vec<Ipv4Addr> = eps.iter().filter(|e| e.1).map(|e| e.0).collect();
        let external = if svc.external_local { !local.is_empty() } else { !eps.is_empty() };
        if let Some(np) = p.node_port
            && !external
        {
            let verdict = if eps.is_empty() { "goto reject-chain" } else { "drop" };
            self.no_endpoint_node_ports.push(format!("{proto} . {np} comment \"{port_name}\" : {verdict}"));
        }
        if eps.is_empty() {
            self.no_endpoints.push(format!("{element} comment \"{port_name}\" : goto reject-chain"));
            return;
        }
        let base = format!("{key}/{proto}/{}", p.name);
        let svc_chain = chain("service", &base);
        let all: Vec<Ipv4Addr> = eps.iter().map(|e| e.0).collect();
        let masq = format!(
            "ip daddr {} {proto} dport {} ip saddr != {POD_CIDR} jump mark-for-masquerade",
            svc.cluster_ip, p.port
        );
        self.pick(&svc_chain, &base, p, &all, Some(&masq));
        self.service_ips.push(format!("{element} : goto {svc_chain}"));
        let Some(np) = p.node_port else { return };
        let ext = chain("external", &base);
        let body = if svc.external_local {
            // Pods and the node itself short-circuit to the cluster-wide chain; other clients
            // get only this node's endpoints (none: the no-endpoint-nodeports drop).
            let mut body = vec![
                format!("ip saddr {POD_CIDR} goto {svc_chain}"),
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local goto {svc_chain}"),
            ];
            if external {
                let local_chain = chain("local", &base);
                self.pick(&local_chain, &base, p, &local, None);
                body.push(format!("goto {local_chain}"));
            }
            body
        } else {
            vec!["jump mark-for-masquerade".to_string(), format!("goto {svc_chain}")]
        };
        self.chains.push(format!("  chain {ext} {{\n    {}\n  }}", body.join("\n    ")));
        self.node_ports.push(format!("{proto} . {np} : goto {ext}"));
    }

    /// `chain` picking one of `eps` at random (after `first`), and each one's `endpoint-`
    /// chain (once).
    fn pick(&mut self, chain_name: &str, base: &str, p: &LabPort, eps: &[Ipv4Addr], first: Option<&str>) {
        let proto = if p.udp { "udp" } else { "tcp" };
        let mut picks = Vec::new();
        for (i, ip) in eps.iter().enumerate() {
            let ep_chain = chain("endpoint", &format!("{base}__{ip}/{}", p.target_port));
            let text = format!(
                "  chain {ep_chain} {{\n    ip saddr {ip} jump mark-for-masquerade\n    meta l4proto {proto} dnat to \
                 {ip}:{}\n  }}",
                p.target_port
            );
            if !self.chains.contains(&text) {
                self.chains.push(text);
            }
            picks.push(format!("{i} : goto {ep_chain}"));
        }
        let first = first.map_or(String::new(), |f| format!("    {f}\n"));
        self.chains.push(format!(
            "  chain {chain_name} {{\n{first}    numgen random mod {} vmap {{ {} }}\n  }}",
            eps.len(),
            picks.join(", ")
        ));
    }

    fn finish(self) -> String {
        let elements = |map: &str, items: &[String]| {
            if items.is_empty() {
                String::new()
            } else {
                format!("add element ip kube-proxy {map} {{ {} }}\n", items.join(", "))
            }
        };
        let map = |name: &str, key: &str| format!("  map {name} {{\n    type {key} : verdict\n  }}\n");
        let base = |name: &str, kind: &str, hook: &str, priority: &str, body: &str| {
            format!(
                "  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;\n    {body}\n  }}\n"
            )
        };
        let services = "ip daddr . meta l4proto . th dport vmap @service-ips";
        let service_check = "ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services";
        let node_port_check = "ct state new fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports";
        let mut text = String::from(
            "add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n  comment \"rules for kube-proxy\"\n",
        );
        let addr_key = "ipv4_addr . inet_proto . inet_service";
        let port_key = "inet_proto . inet_service";
        text.push_str(&map("service-ips", addr_key));
        text.push_str(&map("no-endpoint-services", addr_key));
        text.push_str(&map("service-nodeports", port_key));
        text.push_str(&map("no-endpoint-nodeports", port_key));
        text.push_str("  chain reject-chain {\n    reject\n  }\n");
        text.push_str("  chain mark-for-masquerade {\n    meta mark set meta mark | 0x4000\n  }\n");
        text.push_str(
            "  chain masquerading {\n    meta mark & 0x00004000 == 0 return\n    meta mark set meta mark ^ 0x00004000\n    \
             masquerade fully-random\n  }\n",
        );
        // kube-proxy's `services` chain: the Service IPs, then NodePorts on local addresses
        // other than 127.0.0.0/8.
        text.push_str("  chain services {\n    ");
        text.push_str(services);
        text.push_str(
            "\n    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n  }\n",
        );
        text.push_str("  chain service-endpoints-check {\n    ");
        text.push_str(service_check);
        text.push_str("\n  }\n  chain nodeport-endpoints-check {\n    ");
        text.push_str(node_port_check);
        text.push_str("\n  }\n");
        text.push_str(&base("nat-prerouting", "nat", "prerouting", "-100", "jump services"));
        text.push_str(&base("nat-output", "nat", "output", "-100", "jump services"));
        text.push_str(&base("nat-postrouting", "nat", "postrouting", "100", "jump masquerading"));
        text.push_str(&base(
            "filter-input",
            "filter",
            "input",
            "-110",
            "jump nodeport-endpoints-check\n    jump service-endpoints-check",
        ));
        text.push_str(&base("filter-forward", "filter", "forward", "-110", "jump service-endpoints-check"));
        text.push_str(&base("filter-output", "filter", "output", "-110", "jump service-endpoints-check"));
        text.push_str(&self.chains.join("\n"));
        text.push_str("\n}\n");
        text.push_str(&elements("service-ips", &self.service_ips));
        text.push_str(&elements("no-endpoint-services", &self.no_endpoints));
        text.push_str(&elements("service-nodeports", &self.node_ports));
        text.push_str(&elements("no-endpoint-nodeports", &self.no_endpoint_node_ports));
        text
    }
}

impl Lab {
    /// Switches node `node`'s kube-proxy to nftables mode: its iptables KUBE-SERVICES chains
    /// emptied (a restore of the iptables layout without Services), then its nftables table
    /// written with `nft -f`.
    pub fn program_kube_proxy_nft(&self, node: u8, how: &Programming) -> Result<()> {
        let ns = self.node(node).netns.clone();
        self.restore_kube_proxy(node, &crate::kube_proxy::rules(&[], &Programming::default(), node))?;
        let services = self.services.lock().expect("services").clone();
        let text = rules(&services, how, node);
        pipe_in(&ns, "nft", &["-f", "-"], &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_are_hashed_as_kube_proxy_hashes_them() {
        let name = chain("service", "ns1/svc1/tcp/p80");
        assert!(name.starts_with("service-") && name.ends_with("-ns1/svc1/tcp/p80"), "{name}");
        assert_eq!(name.len(), "service-".len() + 8 + 1 + "ns1/svc1/tcp/p80".len());
    }
}
