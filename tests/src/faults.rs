//! The faults the lab injects: netfilter rules (DROP, REJECT, VXLAN), MTU changes, lost FDB
//! entries, blocked DNS; and the counters that show the rules really matched.

use super::*;

impl Lab {
    /// Fault: the CoreDNS pod on `node` is unreachable (its node drops DNS forwarded to it).
    pub fn block_dns_endpoint(&self, node: u8) -> Result<()> {
        let ip = Ipv4Addr::new(10, 244, node, 10);
        for proto in ["udp", "tcp"] {
            iptables(&self.node(node).netns, &format!("-I FORWARD -d {ip} -p {proto} --dport 53 -j DROP"))?;
        }
        Ok(())
    }

    /// Fault, signalled: node `node`'s flannel.1 gets a smaller MTU than its pods (a CNI MTU
    /// changed on the overlay but not in the pods). The node, forwarding a pod's oversized DF
    /// packet into flannel.1, answers with ICMP fragmentation-needed: PMTUD works.
    pub fn set_overlay_mtu(&self, node: u8, mtu: u32) -> Result<()> {
        ip(&self.node(node).netns, &format!("link set flannel.1 mtu {mtu}"))
    }

    /// Fault, silent (a black hole): the switch between the nodes carries only `mtu`-byte
    /// frames while the nodes' uplinks keep 1500, as when a provider's network is smaller than
    /// the node's interface says. Bigger frames are dropped on the way and nobody sends ICMP.
    pub fn shrink_switch_mtu(&self, mtu: u32) -> Result<()> {
        for node in &self.nodes {
            ip(&self.switch, &format!("link set n{} mtu {mtu}", node.index))?;
        }
        Ok(())
    }

    /// Runs an iptables command in a lab namespace (faults are injected this way).
    pub fn iptables(&self, netns: &str, args: &str) -> Result<()> {
        iptables(netns, args)
    }

    /// Fault: the destination node silently drops TCP to a pod port (FORWARD DROP).
    pub fn drop_forwarded_tcp(&self, node: u8, dst: Ipv4Addr, port: u16) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-I FORWARD -d {dst} -p tcp --dport {port} -j DROP"))
    }

    /// Fault (docs/field-cases.md case 1): the node's INPUT rejects pod sources to the kubelet with
    /// icmp-host-prohibited, while node IPs are allowed.
    pub fn reject_pods_to_kubelet(&self, node: u8) -> Result<()> {
        iptables(
            &self.node(node).netns,
            &format!(
                "-I INPUT -s {POD_CIDR} -p tcp --dport {KUBELET_PORT} -j REJECT --reject-with icmp-host-prohibited"
            ),
        )
    }

    /// Fault (docs/field-cases.md case 4): the node drops VXLAN (UDP 8472) arriving on its underlay.
    pub fn drop_vxlan(&self, node: u8) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-I INPUT -i eth0 -p udp --dport {VXLAN_PORT} -j DROP"))
    }

    /// Clears [`Self::drop_vxlan`].
    pub fn allow_vxlan(&self, node: u8) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-D INPUT -i eth0 -p udp --dport {VXLAN_PORT} -j DROP"))
    }

    /// Fault: node `node` loses its FDB entry for `peer` (as when flannel's subnet watch
    /// missed the peer): frames for the peer's VTEP MAC have nowhere to go.
    pub fn delete_fdb(&self, node: u8, peer: u8) -> Result<()> {
        let p = self.node(peer).clone();
        run(
            "bridge",
            &[
                "-n",
                &self.node(node).netns,
                "fdb",
                "del",
                &p.vtep_mac,
                "dev",
                "flannel.1",
                "dst",
                &p.underlay_ip.to_string(),
                "self",
            ],
        )
    }

    /// Fault (issue 16): node `node` stops forwarding (`net.ipv4.ip_forward=0`), or forwards again.
    pub fn set_forwarding(&self, node: u8, on: bool) -> Result<()> {
        sysctl(&self.node(node).netns, "net.ipv4.ip_forward", if on { "1" } else { "0" })
    }

    /// Fault: bridged frames on node `node` skip iptables (`bridge-nf-call-iptables=0`, a
    /// per-namespace setting since 5.3), or pass it again.
    pub fn set_bridge_netfilter(&self, node: u8, on: bool) -> Result<()> {
        sysctl(&self.node(node).netns, "net.bridge.bridge-nf-call-iptables", if on { "1" } else { "0" })
    }

    /// Fault: a multi-homed node whose route back to `peer`'s underlay address leaves by a
    /// second NIC (`eth1`, one end of a veth pair inside the node: the host kernel has no dummy driver) while the peer's packets arrive on `eth0`, with the
    /// strict reverse-path filter on `eth0`: the kernel drops the peer's VXLAN packets.
    pub fn asymmetric_underlay(&self, node: u8, peer: u8) -> Result<()> {
        let ns = &self.node(node).netns;
        ip(ns, "link add eth1 type veth peer name eth1p")?;
        ip(ns, "addr add 192.168.60.1/24 dev eth1")?;
        ip(ns, "link set eth1p up")?;
        ip(ns, "link set eth1 up")?;
        ip(ns, &format!("route add {}/32 dev eth1", self.node(peer).underlay_ip))?;
        sysctl(ns, "net.ipv4.conf.eth0.rp_filter", "1")
    }

    /// Clears [`Self::asymmetric_underlay`].
    pub fn symmetric_underlay(&self, node: u8) -> Result<()> {
        let ns = &self.node(node).netns;
        sysctl(ns, "net.ipv4.conf.eth0.rp_filter", "0")?;
        ip(ns, "link del eth1")
    }

    /// Fault: the filter FORWARD policy of node `node` (as Docker sets it to DROP), in the nft
    /// backend (the lab's `iptables`).
    pub fn forward_policy(&self, node: u8, policy: &str) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-P FORWARD {policy}"))
    }

    /// The CNI's accept rules for the pod network in FORWARD (flanneld's, both directions).
    pub fn accept_pod_forwarding(&self, node: u8) -> Result<()> {
        let ns = &self.node(node).netns;
        iptables(ns, "-N NC-FWD")?;
        iptables(ns, "-A FORWARD -j NC-FWD")?;
        iptables(ns, &format!("-A NC-FWD -s {POD_CIDR} -j ACCEPT"))?;
        iptables(ns, &format!("-A NC-FWD -d {POD_CIDR} -j ACCEPT"))
    }

    /// Clears [`Self::accept_pod_forwarding`].
    pub fn remove_pod_forwarding(&self, node: u8) -> Result<()> {
        let ns = &self.node(node).netns;
        iptables(ns, "-D FORWARD -j NC-FWD")?;
        iptables(ns, "-F NC-FWD")?;
        iptables(ns, "-X NC-FWD")
    }

    /// Fault: a rule in the iptables-legacy backend beside the nft one (an old tool or image
    /// still on legacy), `add` or delete it.
    pub fn legacy_rule(&self, node: u8, add: bool) -> Result<()> {
        let op = if add { "-A" } else { "-D" };
        let rule = format!("{op} POSTROUTING -s {POD_CIDR} -j RETURN");
        let mut args = vec!["netns", "exec", &self.node(node).netns, "iptables-legacy", "-w", "-t", "nat"];
        args.extend(rule.split_whitespace());
        run("ip", &args)
    }

    /// Packets counted by the first rule of a chain (to prove a fault really fired).
    pub fn rule_packets(&self, netns: &str, table: &str, chain: &str) -> Result<u64> {
        let out = output("ip", &["netns", "exec", netns, "iptables", "-t", table, "-L", chain, "-v", "-n", "-x"])?;
        out.lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("no rule in chain")
    }
}
