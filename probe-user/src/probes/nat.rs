//! A probe's flow after this node's NAT. kube-proxy masquerades a node's own traffic to a
//! Service (`KUBE-MARK-MASQ` for a source outside the cluster CIDR) and NodePort traffic under
//! `externalTrafficPolicy: Cluster`; flannel masquerades pod traffic leaving the pod network.
//! Past the SNAT the packet no longer carries the probe's local endpoint, so a drop on the next
//! node would not be matched to the probe. The flow's own conntrack entry says exactly what the
//! endpoint became: the reply tuple's destination.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::{
    capture::Watch,
    discovery::conntrack::{self, L4, Tuple4},
};

/// When a TCP probe's entry is read: its SYN has left by then (the entry is confirmed in
/// POSTROUTING, net/netfilter/nf_conntrack_core.c `__nf_conntrack_confirm`), and a probe that
/// is answered sooner needs no attribution. Its retransmissions carry the translated endpoint.
pub const TCP_LOOKUP_AFTER: Duration = Duration::from_millis(10);

/// Beside a probe: `after` its first packet left, reads the conntrack entry of `local` →
/// `remote` and, when the reply goes to another endpoint than `local`, gives it to `watch`.
/// Never completes (run it in a `select!` with the probe). Without CAP_NET_ADMIN or conntrack
/// nothing is added: the probe's events are then those of its untranslated packets only.
pub async fn follow<T>(
    watch: Option<&Watch<'_>>,
    l4: L4,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    after: Duration,
) -> T {
    if let (Some(watch), Some(local)) = (watch, local) {
        tokio::time::sleep(after).await;
        settle(watch, l4, local, remote).await;
    }
    std::future::pending().await
}

/// After a probe (before its watch is finished): the lookup [`follow`] makes, for a probe that
/// ended before it could (a loaded node, a deadline shorter than the lookup). The entry outlives
/// the probe, and a watch's candidates still hold their events; a watch already translated is
/// left as it is.
pub async fn settle(watch: &Watch<'_>, l4: L4, local: SocketAddr, remote: SocketAddr) {
    if !crate::privileges::net_admin() {
        return;
    }
    let orig = Tuple4 { l4, src: local, dst: remote };
    let entry = tokio::task::spawn_blocking(move || conntrack::get(&orig, Duration::from_millis(500))).await;
    if let Ok(Ok(Some(entry))) = entry
        && let Some(to) = translated(&entry, local)
    {
        watch.translated(to);
    }
}

/// Where a masquerade may put a flow from `local`, known before it is sent (for a probe whose
/// one packet may be dropped before [`follow`] can look): this namespace's other addresses of
/// its family. MASQUERADE takes the egress device's address (net/netfilter/nf_nat_masquerade.c);
/// the port it may change (kube-proxy masquerades `--random-fully`). Empty without
/// CAP_NET_ADMIN (no lookup would tell their flows apart).
pub fn candidates(local: SocketAddr) -> Vec<IpAddr> {
    if !crate::privileges::net_admin() {
        return Vec::new();
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in local_addresses() {
        if ip.is_ipv4() == local.is_ipv4() && !ip.is_loopback() && ip != local.ip() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// This network namespace's addresses, read once.
pub(crate) fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|ifa| {
            let a = ifa.address?;
            match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::from(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::from(v6.ip())),
                _ => None,
            }
        })
        .collect()
}

/// The local endpoint after SNAT, from the entry of a flow sent from `local`.
fn translated(entry: &conntrack::Entry, local: SocketAddr) -> Option<SocketAddr> {
    (entry.reply.dst != local).then_some(entry.reply.dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(orig: (&str, &str), reply: (&str, &str)) -> conntrack::Entry {
        let t = |(s, d): (&str, &str)| Tuple4 { l4: L4::Tcp, src: s.parse().unwrap(), dst: d.parse().unwrap() };
        conntrack::Entry { orig: t(orig), reply: t(reply), status: 0, timeout: None }
    }

    #[test]
    fn the_translated_endpoint_is_the_replys_destination() {
        let local: SocketAddr = "192.168.50.11:40000".parse().unwrap();
        // DNAT only (a Service IP to a pod): the reply comes back to the probe's own endpoint.
        let dnat = entry(("192.168.50.11:40000", "10.96.0.80:80"), ("10.244.2.5:8080", "192.168.50.11:40000"));
        assert_eq!(translated(&dnat, local), None);
        // DNAT and masquerade out of flannel.1: the pod answers the node's flannel address.
        let snat = entry(("192.168.50.11:40000", "10.96.0.80:80"), ("10.244.2.5:8080", "10.244.1.0:40000"));
        assert_eq!(translated(&snat, local), Some("10.244.1.0:40000".parse().unwrap()));
    }
}
