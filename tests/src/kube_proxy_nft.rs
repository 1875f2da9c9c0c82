//! kube-proxy's nftables mode in the lab: the same Services written the way its nftables
//! proxier writes them (k/k pkg/proxy/nftables/proxier.go): one `table ip kube-proxy` with the
//! `service-ips` verdict map dispatched from the nat hooks, a `service-` chain per Service port
//! choosing an endpoint with `numgen random mod N vmap`, an `endpoint-` chain per endpoint ending
//! in `dnat to`, and the `no-endpoint-services` map rejecting a port without endpoints from the
//! filter hooks. Loaded with `nft -f` in one transaction, as kube-proxy's knftables does.

use sha2::Digest as _;

use super::*;
use crate::kube_proxy::{LabService, Programming};

/// kube-proxy's chain name: `PREFIX-HASH8-BASE`, HASH8 the first 8 characters of base32(SHA-256
/// of BASE) (`hashAndTruncate`, pkg/proxy/nftables/proxier.go).
fn chain(prefix: &str, base: &str) -> String {
    let hash = data_encoding::BASE32.encode(&sha2::Sha256::digest(base.as_bytes()));
    format!("{prefix}-{}-{base}", &hash[..8])
}

/// The `nft -f` input for `services` (the table deleted and written again in one transaction).
pub fn rules(services: &[LabService], how: &Programming) -> String {
    let mut chains = Vec::new();
    let mut service_ips = Vec::new();
    let mut no_endpoints = Vec::new();
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        if how.without.as_deref() == Some(key.as_str()) {
            continue;
        }
        for p in &svc.ports {
            let proto = if p.udp { "udp" } else { "tcp" };
            let eps: Vec<Ipv4Addr> = match &how.endpoints {
                Some((s, ips)) if *s == key => ips.clone(),
                _ => svc.endpoints.iter().filter(|e| e.ready).map(|e| e.ip).collect(),
            };
            let element = format!("{} . {proto} . {}", svc.cluster_ip, p.port);
            let port_name = if p.name.is_empty() { format!("{key}:") } else { format!("{key}:{}", p.name) };
            if eps.is_empty() {
                no_endpoints.push(format!("{element} comment \"{port_name}\" : goto reject-chain"));
                continue;
            }
            let base = format!("{key}/{proto}/{}", p.name);
            let svc_chain = chain("service", &base);
            let mut picks = Vec::new();
            for (i, ip) in eps.iter().enumerate() {
                let ep_chain = chain("endpoint", &format!("{base}__{ip}/{}", p.target_port));
                chains.push(format!(
                    "  chain {ep_chain} {{\n    ip saddr {ip} jump mark-for-masquerade\n    meta l4proto {proto} dnat to \
                     {ip}:{}\n  }}",
                    p.target_port
                ));
                picks.push(format!("{i} : goto {ep_chain}"));
            }
            chains.push(format!(
                "  chain {svc_chain} {{\n    ip daddr {} {proto} dport {} ip saddr != {POD_CIDR} jump \
                 mark-for-masquerade\n    numgen random mod {} vmap {{ {} }}\n  }}",
                svc.cluster_ip,
                p.port,
                eps.len(),
                picks.join(", ")
            ));
            service_ips.push(format!("{element} : goto {svc_chain}"));
        }
    }
    let elements = |map: &str, items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!("add element ip kube-proxy {map} {{ {} }}\n", items.join(", "))
        }
    };
    let dispatch = "ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services";
    format!(
        "add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {{\n  comment \"rules for kube-proxy\"\n  \
         map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n  }}\n  map no-endpoint-services \
         {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n  }}\n  chain reject-chain {{\n    reject\n  }}\n  \
         chain mark-for-masquerade {{\n    meta mark set meta mark | 0x4000\n  }}\n  chain services {{\n    ip daddr . \
         meta l4proto . th dport vmap @service-ips\n  }}\n  chain nat-prerouting {{\n    type nat hook prerouting \
         priority -100; policy accept;\n    jump services\n  }}\n  chain nat-output {{\n    type nat hook output \
         priority -100; policy accept;\n    jump services\n  }}\n  chain filter-forward {{\n    type filter hook \
         forward priority -110; policy accept;\n    {dispatch}\n  }}\n  chain filter-output {{\n    type filter hook \
         output priority -110; policy accept;\n    {dispatch}\n  }}\n{}\n}}\n{}{}",
        chains.join("\n"),
        elements("service-ips", &service_ips),
        elements("no-endpoint-services", &no_endpoints)
    )
}

impl Lab {
    /// Switches node `node`'s kube-proxy to nftables mode: its iptables KUBE-SERVICES chains
    /// emptied (a restore of the iptables layout without Services), then its nftables table
    /// written with `nft -f`.
    pub fn program_kube_proxy_nft(&self, node: u8, how: &Programming) -> Result<()> {
        let ns = self.node(node).netns.clone();
        self.restore_kube_proxy(node, &crate::kube_proxy::rules(&[], &Programming::default()))?;
        let services = self.services.lock().expect("services").clone();
        let text = rules(&services, how);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("nft (apt: nftables)")?;
        child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft -f in {ns}: {}\n{text}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
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
