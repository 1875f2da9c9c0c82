//! Which kernel events belong to a probe: matched on the raw event, before any decoding, so
//! background events cost one comparison each.

use std::net::{IpAddr, SocketAddr};

use probe_common::{Event, Flow, flags};

/// A probe's flow: its protocol, its own (bound) endpoint and the endpoint it dialled.
///
/// An event belongs to the probe when its packet (or the VXLAN packet's inner packet):
/// - carries the probe's local endpoint as source or destination (exact match, and DNAT such
///   as a Service IP rewritten to a pod: the local side is untouched), or
/// - carries the remote endpoint with the probe's local port on the other side (SNAT, such
///   as flannel's masquerade of pod traffic leaving the node, keeps the port).
///
/// Local endpoints are unique while the probe's socket is open, so no other flow matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowMatcher {
    proto: u8,
    local: Endpoint,
    remote: Endpoint,
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
    pub fn tcp(local: SocketAddr, remote: SocketAddr) -> Self {
        Self::new(6, local, remote)
    }

    pub fn udp(local: SocketAddr, remote: SocketAddr) -> Self {
        Self::new(17, local, remote)
    }

    pub fn new(proto: u8, local: SocketAddr, remote: SocketAddr) -> Self {
        Self { proto, local: Endpoint::new(local), remote: Endpoint::new(remote) }
    }

    fn matches_flow(&self, f: &Flow) -> bool {
        if f.proto != self.proto {
            return false;
        }
        let (l, r) = (&self.local, &self.remote);
        l.is_src(f) || l.is_dst(f) || (r.is_dst(f) && f.sport == l.port) || (r.is_src(f) && f.dport == l.port)
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
        FlowMatcher::tcp("10.244.1.2:40000".parse().unwrap(), "10.244.2.2:8080".parse().unwrap())
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
    fn nat_rewrites_still_match() {
        let m = probe();
        // DNAT: a Service IP rewritten to the pod, the local side untouched.
        assert!(m.matches(&event(flow(6, "10.244.1.2:40000", "10.244.3.9:9090"), None)));
        // SNAT (masquerade): our port kept, our address replaced by the node's.
        assert!(m.matches(&event(flow(6, "192.168.50.11:40000", "10.244.2.2:8080"), None)));
        assert!(m.matches(&event(flow(6, "10.244.2.2:8080", "192.168.50.11:40000"), None)));
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
