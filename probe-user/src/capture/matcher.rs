//! Which kernel events belong to a probe: matched on the raw event, before any decoding, so
//! background events cost one comparison each.

use std::net::{IpAddr, SocketAddr};

use probe_common::{Event, Flow, flags};

/// A probe's flow: its protocol, its own (bound) endpoint, and that endpoint after SNAT.
///
/// An event belongs to the probe when its packet (or the VXLAN packet's inner packet) carries
/// the probe's local endpoint as source or destination: the exact flow in both directions, and
/// DNAT such as a Service IP rewritten to a pod (the local side is untouched). Local endpoints
/// are unique while the probe's socket is open, so no other flow matches.
///
/// After SNAT (kube-proxy's masquerade of a node's traffic to a Service, flannel's of pod
/// traffic leaving the pod network) the local endpoint is gone from the packet. Guessing it
/// from "remote endpoint + our port" would also match other clients using the same port, so
/// it is not done; the probe instead reads its own conntrack entry once the first packet is
/// out and gives the reply tuple's destination, the exact translated endpoint, as
/// [`Self::translated`] (see `probes::nat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowMatcher {
    proto: u8,
    local: Endpoint,
    translated: Option<Endpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Endpoint {
    family: u8,
    addr: [u8; 16],
    port: u16,
}

impl Endpoint {
    fn new(sa: SocketAddr) -> Self {
        let mut addr = [0u8; 16];
        let family = match sa.ip() {
            IpAddr::V4(v4) => {
                addr[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                addr = v6.octets();
                6
            }
        };
        Self { family, addr, port: sa.port() }
    }

    fn is_src(&self, f: &Flow) -> bool {
        f.family == self.family && f.saddr == self.addr && f.sport == self.port
    }

    fn is_dst(&self, f: &Flow) -> bool {
        f.family == self.family && f.daddr == self.addr && f.dport == self.port
    }
}

impl FlowMatcher {
    pub fn tcp(local: SocketAddr) -> Self {
        Self::new(6, local)
    }

    pub fn udp(local: SocketAddr) -> Self {
        Self::new(17, local)
    }

    pub fn new(proto: u8, local: SocketAddr) -> Self {
        Self { proto, local: Endpoint::new(local), translated: None }
    }

    /// The IP protocol number.
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The same flow, also matched by the local endpoint SNAT rewrote it to.
    #[must_use]
    pub fn translated(self, to: SocketAddr) -> Self {
        Self { translated: Some(Endpoint::new(to)), ..self }
    }

    fn matches_flow(&self, f: &Flow) -> bool {
        if f.proto != self.proto {
            return false;
        }
        self.local.is_src(f) || self.local.is_dst(f) || self.translated.is_some_and(|t| t.is_src(f) || t.is_dst(f))
    }

    /// The kernel-side filter's key for this flow's local endpoint.
    pub fn watch_key(&self) -> probe_common::WatchKey {
        Self::key(self.proto, &self.local)
    }

    /// The filter's key for the translated endpoint, once known.
    pub fn translated_key(&self) -> Option<probe_common::WatchKey> {
        self.translated.as_ref().map(|t| Self::key(self.proto, t))
    }

    fn key(proto: u8, e: &Endpoint) -> probe_common::WatchKey {
        probe_common::WatchKey { addr: e.addr, port: e.port, proto, _pad: 0 }
    }

    /// Whether the event's packet (or its VXLAN packet's inner one) carries `ip` as source or
    /// destination, over this flow's protocol, on any port.
    pub fn touches(&self, ev: &Event, ip: IpAddr) -> bool {
        let at = Endpoint::new(SocketAddr::new(ip, 0));
        let on =
            |f: &Flow| f.proto == self.proto && f.family == at.family && (f.saddr == at.addr || f.daddr == at.addr);
        (ev.flags & flags::HAS_FLOW != 0 && on(&ev.outer)) || (ev.flags & flags::HAS_INNER != 0 && on(&ev.inner))
    }

    pub fn matches(&self, ev: &Event) -> bool {
        (ev.flags & flags::HAS_FLOW != 0 && self.matches_flow(&ev.outer))
            || (ev.flags & flags::HAS_INNER != 0 && self.matches_flow(&ev.inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(proto: u8, src: &str, dst: &str) -> Flow {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (es, ed) = (Endpoint::new(s), Endpoint::new(d));
        Flow { saddr: es.addr, daddr: ed.addr, sport: es.port, dport: ed.port, family: es.family, proto, _pad: [0; 2] }
    }

    fn event(outer: Flow, inner: Option<Flow>) -> Event {
        Event {
            ts_ns: 0,
            location: 0,
            kind: 1,
            reason: 0,
            ifindex: 0,
            netns: 0,
            flags: flags::HAS_FLOW | if inner.is_some() { flags::HAS_INNER } else { 0 },
            len: 0,
            dev: [0; 16],
            outer,
            inner: inner.unwrap_or_default(),
        }
    }

    fn probe() -> FlowMatcher {
        FlowMatcher::tcp("10.244.1.2:40000".parse().unwrap())
    }

    #[test]
    fn both_directions_match() {
        let m = probe();
        assert!(m.matches(&event(flow(6, "10.244.1.2:40000", "10.244.2.2:8080"), None)));
        assert!(m.matches(&event(flow(6, "10.244.2.2:8080", "10.244.1.2:40000"), None)));
    }

    #[test]
    fn vxlan_inner_flow_matches() {
        let outer = flow(17, "192.168.50.11:33000", "192.168.50.12:8472");
        let inner = flow(6, "10.244.1.2:40000", "10.244.2.2:8080");
        assert!(probe().matches(&event(outer, Some(inner))));
        // The same outer packet without the probe's inner flow does not.
        let other = flow(6, "10.244.1.3:40000", "10.244.2.2:8080");
        assert!(!probe().matches(&event(outer, Some(other))));
    }

    #[test]
    fn dnat_still_matches_snat_does_not() {
        let m = probe();
        // DNAT: a Service IP rewritten to the pod, the local side untouched.
        assert!(m.matches(&event(flow(6, "10.244.1.2:40000", "10.244.3.9:9090"), None)));
        assert!(m.matches(&event(flow(6, "10.244.3.9:9090", "10.244.1.2:40000"), None)));
        // After SNAT our address is gone: indistinguishable from another client with our port.
        assert!(!m.matches(&event(flow(6, "192.168.50.11:40000", "10.244.2.2:8080"), None)));
        // Until conntrack names the translated endpoint: then both directions match, and
        // another client's flow on the same port does not.
        let t = m.translated("192.168.50.11:40000".parse().unwrap());
        assert!(t.matches(&event(flow(6, "192.168.50.11:40000", "10.244.2.2:8080"), None)));
        assert!(t.matches(&event(flow(6, "10.244.2.2:8080", "192.168.50.11:40000"), None)));
        assert!(!t.matches(&event(flow(6, "192.168.50.12:40000", "10.244.2.2:8080"), None)));
        assert_eq!(t.watch_key(), m.watch_key());
        assert_ne!(t.translated_key(), Some(m.watch_key()));
        assert_eq!(m.translated_key(), None);
    }

    #[test]
    fn unrelated_flows_do_not_match() {
        let m = probe();
        assert!(!m.matches(&event(flow(17, "10.244.1.2:40000", "10.244.2.2:8080"), None)), "other protocol");
        assert!(!m.matches(&event(flow(6, "10.244.1.2:40001", "10.244.2.2:8080"), None)), "other local port");
        assert!(!m.matches(&event(flow(6, "10.9.9.9:1234", "10.244.2.2:8080"), None)), "same server, other client");
        let mut no_flow = event(flow(6, "10.244.1.2:40000", "10.244.2.2:8080"), None);
        no_flow.flags = 0;
        assert!(!m.matches(&no_flow), "no parsed flow");
    }
}
