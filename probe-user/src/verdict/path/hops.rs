//! The hops of a path as the node's own tables describe them: the pod's side, the node's
//! forwarding decision, and the overlay to the peer (inferred: one node cannot see another's
//! tables).

use std::fmt::Write as _;

use crate::{
    discovery::netlink::{Link, Route, RouteKind},
    probes::path::{Report, Source},
    verdict::{Cause, Hop, Status, Verdict},
};

/// Which hop a piece of the path is: the order is the packet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Source,
    Veth,
    Bridge,
    /// A Service IP's DNAT to an endpoint (kube-proxy's rules, seen in conntrack).
    Dnat,
    Routing,
    Input,
    Overlay,
    Underlay,
    PeerUnderlay,
    PeerOverlay,
    PeerBridge,
    Destination,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Veth => "veth",
            Self::Bridge => "bridge",
            Self::Dnat => "dnat",
            Self::Routing => "routing",
            Self::Input => "input",
            Self::Overlay => "overlay",
            Self::Underlay => "underlay",
            Self::PeerUnderlay => "peer-underlay",
            Self::PeerOverlay => "peer-overlay",
            Self::PeerBridge => "peer-bridge",
            Self::Destination => "destination",
        }
    }
}

/// A hop while it is being judged.
pub(super) struct Draft {
    pub(super) kind: Kind,
    pub(super) hop: Hop,
    /// Set once something decided the status.
    pub(super) judged: bool,
    /// The netfilter chain packets meet at this hop (FORWARD, INPUT, OUTPUT), for places.
    pub(super) chain: Option<&'static str>,
}

impl Draft {
    pub(super) fn new(
        kind: Kind,
        netns: Option<String>,
        device: Option<&Link>,
        inferred: bool,
        detail: String,
    ) -> Self {
        Self {
            kind,
            hop: Hop {
                name: kind.name().to_string(),
                netns,
                device: device.map(|l| l.name.clone()),
                status: Status::Pass,
                cause: None,
                inferred,
                detail,
                evidence: Vec::new(),
            },
            judged: false,
            chain: None,
        }
    }

    pub(super) fn judge(&mut self, Verdict { status, cause, detail }: Verdict) {
        if self.judged && self.hop.status >= status {
            return;
        }
        self.hop.status = status;
        self.hop.cause = cause;
        self.hop.detail = detail;
        self.judged = true;
    }

    pub(super) fn pass(&mut self, why: &str) {
        if !self.judged {
            if !self.hop.detail.is_empty() {
                self.hop.detail.push_str("; ");
            }
            self.hop.detail.push_str(why);
            self.judged = true;
        }
    }

    /// Where the hop is, for people: "n2 eth0", "n1 INPUT", or empty when nothing is known.
    pub(super) fn location(&self) -> String {
        let what = self.hop.device.as_deref().or(self.chain);
        match (&self.hop.netns, what) {
            (Some(ns), Some(w)) => format!("{ns} {w}"),
            (Some(ns), None) => ns.clone(),
            (None, Some(w)) => w.to_string(),
            (None, None) => String::new(),
        }
    }
}
pub(super) fn ok_route(route: Option<&Result<Route, String>>) -> Option<&Route> {
    route.and_then(|r| r.as_ref().ok())
}

/// The hop list, from what discovery found; each hop starts with what the tables say. `nat` is
/// the Service step's hops, after the pod's side.
pub(super) fn draft_hops(report: &Report, from: &str, node_netns: &str, nat: Vec<Draft>) -> Vec<Draft> {
    let node = &report.node;
    let node_ns = Some(node_netns.to_string());
    let mut hops = Vec::new();
    if let Source::Netns(_) = report.spec.from {
        pod_side(report, from, node_ns.as_ref(), &mut hops);
    }
    hops.extend(nat);
    if report.endpoint_unknown() {
        // Past the NAT the packet goes to an endpoint this run cannot name: no hop is made up.
        return hops;
    }
    let to_bridge = node.bridge.is_some()
        && ok_route(node.route.as_ref()).and_then(|r| r.oif) == node.bridge.as_ref().map(|b| b.index);
    if !to_bridge {
        hops.push(routing_hop(report, node_ns.as_ref()));
    }
    if report.to_node() {
        let mut i =
            Draft::new(Kind::Input, node_ns, None, false, format!("local delivery to {} (INPUT)", report.target()));
        i.chain = Some("INPUT");
        hops.push(i);
        return hops;
    }
    if let Some(dev) = &node.overlay {
        let link = node.route_link.as_ref();
        let mut o = Draft::new(Kind::Overlay, node_ns.clone(), link, false, String::new());
        o.hop.detail = match &node.peer {
            Some(p) => format!(
                "{} VNI {} port {}: {} is at {} on node {}",
                dev.name,
                dev.vni.unwrap_or_default(),
                dev.port.unwrap_or_default(),
                p.vtep,
                p.vtep_mac,
                p.underlay
            ),
            None => dev.name.clone(),
        };
        if !node.overlay_problems.is_empty() {
            o.judge(Verdict::fail(Cause::VxlanMisconfigured, node.overlay_problems.join("; ")));
        }
        hops.push(o);
    }
    // The node itself to a pod on its own bridge: the bridge is the last hop before the pod.
    let node_to_bridge = !to_bridge
        && report.spec.from == Source::Host
        && node.route_link.as_ref().is_some_and(|l| l.kind.as_deref() == Some("bridge"));
    if node_to_bridge {
        let mut b = Draft::new(Kind::Bridge, node_ns.clone(), node.route_link.as_ref(), false, String::new());
        if let Some(l) = &node.route_link {
            b.hop.detail = format!("{} has {}", l.name, addresses(l));
        }
        hops.push(b);
    }
    if node.overlay.is_none() && (to_bridge || node_to_bridge) {
        hops.push(Draft::new(
            Kind::Destination,
            None,
            None,
            true,
            format!("{} on the same bridge", destination(report)),
        ));
        return hops;
    }
    let mut u = Draft::new(Kind::Underlay, node_ns, node.underlay_link.as_ref(), false, String::new());
    if let Some(l) = &node.underlay_link {
        u.hop.detail = describe_route(ok_route(node.underlay_route.as_ref()), l);
        if !l.up || !l.lower_up {
            u.judge(Verdict::fail(Cause::NoRoute, format!("{} is {}", l.name, link_state(l))));
        }
    }
    if let Some(Err(e)) = &node.underlay_route {
        u.judge(Verdict::fail(Cause::NoRoute, format!("no underlay route to the peer: {e}")));
    }
    hops.push(u);
    if let Some(peer) = &node.peer {
        let underlay = match &report.names.peer_node {
            Some(name) => format!("{name} ({})", peer.underlay),
            None => peer.underlay.to_string(),
        };
        hops.push(Draft::new(Kind::PeerUnderlay, None, None, true, format!("node {underlay} receives VXLAN")));
        hops.push(Draft::new(Kind::PeerOverlay, None, None, true, format!("its VTEP {} decapsulates", peer.vtep)));
        hops.push(Draft::new(Kind::PeerBridge, None, None, true, "its bridge to the destination pod".into()));
    }
    hops.push(Draft::new(Kind::Destination, None, None, true, destination(report)));
    hops
}

/// The node's routing decision (and the netfilter chain the packet meets there).
pub(super) fn routing_hop(report: &Report, node_ns: Option<&String>) -> Draft {
    let node = &report.node;
    let mut r = Draft::new(Kind::Routing, node_ns.cloned(), None, false, String::new());
    r.chain = Some(if report.spec.from == Source::Host { "OUTPUT" } else { "FORWARD" });
    match &node.route {
        Some(Err(e)) => {
            r.judge(Verdict::fail(Cause::NoRoute, format!("the node has no route to {}: {e}", report.target())));
        }
        Some(Ok(route)) => {
            r.hop.detail = match (&node.route_link, route.kind) {
                (_, RouteKind::Local) => {
                    format!("{} is this node's own address: delivered locally", report.target())
                }
                (Some(l), RouteKind::Unicast) => describe_route(Some(route), l),
                _ => String::new(),
            };
            if matches!(route.kind, RouteKind::Reject(_)) {
                r.judge(Verdict::fail(
                    Cause::NoRoute,
                    format!("the node routes {} to {}", report.target(), reject_name(route)),
                ));
            }
        }
        None => {
            r.hop.inferred = true;
            r.hop.detail = "the node's decision could not be asked (source side unknown)".into();
        }
    }
    r
}

/// The pod's side: its interface, the veth on the node and the bridge.
pub(super) fn pod_side(report: &Report, from: &str, node_ns: Option<&String>, hops: &mut Vec<Draft>) {
    let node_ns = node_ns.cloned();
    let (src, node) = (&report.source, &report.node);
    let mut h = Draft::new(Kind::Source, Some(from.to_string()), src.link.as_ref(), false, String::new());
    match &src.route {
        Some(Err(e)) => {
            h.judge(Verdict::fail(Cause::NoRoute, format!("no route to {} in {from}: {e}", report.spec.dst)));
        }
        Some(Ok(r)) if matches!(r.kind, RouteKind::Reject(_)) => {
            h.judge(Verdict::fail(Cause::NoRoute, format!("{from} routes {} to {}", report.spec.dst, reject_name(r))));
        }
        _ => {}
    }
    if let Some(l) = &src.link {
        h.hop.detail = describe_route(ok_route(src.route.as_ref()), l);
        if !l.up || !l.lower_up {
            h.judge(Verdict::fail(Cause::NoRoute, format!("{} in {from} is {}", l.name, link_state(l))));
        }
    }
    hops.push(h);
    let mut v = Draft::new(Kind::Veth, node_ns.clone(), node.veth.as_ref(), node.veth.is_none(), String::new());
    if let Some(problem) = &node.veth_problem {
        v.hop.detail.clone_from(problem);
    }
    if let Some(l) = &node.veth {
        v.hop.detail = format!("peer of the source's {}", src.link.as_ref().map_or("interface", |s| s.name.as_str()));
        if !l.up {
            v.judge(Verdict::fail(Cause::NoRoute, format!("{} on the node is {}", l.name, link_state(l))));
        }
    }
    hops.push(v);
    if node.veth.is_some() {
        let mut b = Draft::new(Kind::Bridge, node_ns.clone(), node.bridge.as_ref(), false, String::new());
        match &node.bridge {
            Some(l) => {
                b.hop.detail = format!("{} has {}", l.name, addresses(l));
                if !l.up {
                    b.judge(Verdict::fail(Cause::NoRoute, format!("bridge {} is {}", l.name, link_state(l))));
                }
            }
            None => b.hop.detail = "the veth is not enslaved to a bridge".into(),
        }
        hops.push(b);
    }
}

/// The destination's address, with the pod behind it when the API named one.
pub(super) fn destination(report: &Report) -> String {
    match &report.names.destination_pod {
        Some(pod) => format!("{} ({pod})", report.target()),
        None => report.target().to_string(),
    }
}

pub(super) fn reject_name(r: &Route) -> &'static str {
    match r.kind {
        RouteKind::Reject(n) => n,
        _ => "a route",
    }
}

pub(super) fn link_state(l: &Link) -> &'static str {
    if !l.up {
        "down"
    } else if !l.lower_up {
        "up without carrier (its peer is down)"
    } else {
        "up"
    }
}

pub(super) fn addresses(l: &Link) -> String {
    if l.addresses.is_empty() {
        return "no IPv4 address".into();
    }
    l.addresses.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>().join(", ")
}

pub(super) fn describe_route(route: Option<&Route>, link: &Link) -> String {
    let mut d = format!("{} ({}, MTU {})", link.name, addresses(link), link.mtu.unwrap_or_default());
    if let Some(r) = route {
        match r.gateway {
            Some(gw) => {
                let _ = write!(d, ", via {gw}");
            }
            None => d.push_str(", on-link"),
        }
    }
    d
}
