//! Per-hop path verdicts: the hops the path probe discovered, each judged by the node's
//! tables, by the probes that cross it and by the kernel events placed on it (by namespace and
//! device), then one line naming the first broken hop.

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use super::{Cause, Check, Data, Evidence, Hop, Status, mtu, tcp_verdict, vxlan};
use crate::{
    capture::event::{Direction, EventKind, KernelEvent},
    discovery::netlink::{Link, Route, RouteKind},
    probes::{
        icmp::{self, Answer, EchoOutcome},
        path::{Final, Report, Source},
    },
};

/// `data.path` of the check's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct PathData {
    pub source_ip: Option<IpAddr>,
    /// The pods at both ends, when the API named them.
    pub source_pod: Option<crate::discovery::api::PodInfo>,
    pub destination_pod: Option<crate::discovery::api::PodInfo>,
    /// Why the API was not asked or did not answer (names are then missing, nothing else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_note: Option<String>,
    /// The peer node the overlay leads to, as its tables name it.
    pub peer: Option<PeerData>,
    /// Largest packet the source gets to the destination (its path MTU).
    pub path_mtu: Option<u16>,
    /// Largest packet the node gets to the peer's underlay address.
    pub underlay_mtu: Option<u16>,
    /// What the netcheck agent on the peer node was asked, and what it said (events it saw
    /// are in the peer hops' evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_agent: Option<String>,
    /// Every probe the path ran, with its own verdict.
    pub probes: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerData {
    /// The node's name from the API.
    pub node: Option<String>,
    pub vtep: std::net::Ipv4Addr,
    pub vtep_mac: String,
    pub underlay: std::net::Ipv4Addr,
}

/// Which hop a piece of the path is: the order is the packet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Source,
    Veth,
    Bridge,
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
    fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Veth => "veth",
            Self::Bridge => "bridge",
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
struct Draft {
    kind: Kind,
    hop: Hop,
    /// Set once something decided the status.
    judged: bool,
    /// The netfilter chain packets meet at this hop (FORWARD, INPUT, OUTPUT), for places.
    chain: Option<&'static str>,
}

impl Draft {
    fn new(kind: Kind, netns: Option<String>, device: Option<&Link>, inferred: bool, detail: String) -> Self {
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

    fn judge(&mut self, status: Status, cause: Option<Cause>, detail: String) {
        if self.judged && self.hop.status >= status {
            return;
        }
        self.hop.status = status;
        self.hop.cause = cause;
        self.hop.detail = detail;
        self.judged = true;
    }

    fn pass(&mut self, why: &str) {
        if !self.judged {
            if !self.hop.detail.is_empty() {
                self.hop.detail.push_str("; ");
            }
            self.hop.detail.push_str(why);
            self.judged = true;
        }
    }

    /// Where the hop is, for people: "n2 eth0", "n1 INPUT", or empty when nothing is known.
    fn place(&self) -> String {
        let what = self.hop.device.as_deref().or(self.chain);
        match (&self.hop.netns, what) {
            (Some(ns), Some(w)) => format!("{ns} {w}"),
            (Some(ns), None) => ns.clone(),
            (None, Some(w)) => w.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// The path's check (with hops) and the one-line verdict naming the first broken hop.
pub fn verdict(report: &Report, capture_on: bool, node_netns: &str) -> (Check, String) {
    let from = report.spec.label.clone();
    let dst = match report.spec.port {
        Some(p) => format!("{}:{p}", report.spec.dst),
        None => report.spec.dst.to_string(),
    };
    let mut hops = draft_hops(report, &from, node_netns);
    let probes = probe_checks(report, capture_on);

    // What the kernel saw, placed by namespace and device.
    let mut all_evidence = Vec::new();
    for check in probes.iter().filter(|c| matches!(c.probe, "tcp" | "icmp" | "vxlan")) {
        for e in &check.evidence {
            if e.event.kind == EventKind::Drop && !is_fault(&e.event) {
                continue;
            }
            let kind = place(report, &hops, &e.event);
            if let Some(h) = hops.iter_mut().find(|h| h.kind == kind)
                && !h.hop.evidence.contains(e)
            {
                h.hop.evidence.push(e.clone());
            }
            if !all_evidence.contains(e) {
                all_evidence.push(e.clone());
            }
        }
    }
    let peer_agent = add_peer_events(report, &mut hops, &mut all_evidence);
    // A TCP probe refused with ICMP unreachable (EHOSTUNREACH): the kernel answered even when
    // it cannot trace the ICMP error it sent (no icmp_send before 6.10).
    let unreachable = probes.iter().any(|c| c.probe == "tcp" && c.cause == Some(Cause::Unreachable));
    for h in &mut hops {
        if let Some((status, cause, what, flow)) = judge_evidence(&h.hop.evidence, unreachable) {
            // The kernel saw this hop: where it saw it is no longer inferred.
            if h.hop.inferred
                && let Some(ev) = h.hop.evidence.iter().find(|e| is_fault(&e.event))
            {
                h.hop.netns = Some(ev.event.netns.clone());
                h.hop.device.clone_from(&ev.event.device);
                h.hop.inferred = false;
            }
            let detail = format!("{what} on {}{flow}", h.place());
            h.judge(status, cause, detail);
        }
    }
    judge_probes(report, &probes, &mut hops);
    let first_broken = hops.iter().position(|h| h.hop.status == Status::Fail);
    let arrived = probes
        .iter()
        .find(|c| matches!(c.probe, "tcp" | "icmp"))
        .is_some_and(|c| matches!(c.status, Status::Pass | Status::Warn));
    for (i, h) in hops.iter_mut().enumerate() {
        match first_broken {
            Some(f) if i > f && !h.judged && !arrived => {
                h.hop.status = Status::Skip;
                h.hop.detail = "not reached: the path breaks before this hop".into();
            }
            _ => h.pass("traffic crossed it"),
        }
    }
    let line = summary_line(report, &hops, &probes, &from, &dst);
    let status = hops.iter().map(|h| h.hop.status).filter(|s| *s != Status::Skip).max().unwrap_or(Status::Pass);
    let cause = first_broken
        .and_then(|f| hops[f].hop.cause)
        .or_else(|| hops.iter().find(|h| h.hop.status == Status::Warn).and_then(|h| h.hop.cause));
    let data = PathData {
        source_ip: report.source_ip(),
        source_pod: report.names.source_pod.clone(),
        destination_pod: report.names.destination_pod.clone(),
        api_note: report.names.unavailable.clone(),
        peer: report.node.peer.as_ref().map(|p| PeerData {
            node: report.names.peer_node.clone(),
            vtep: p.vtep,
            vtep_mac: p.vtep_mac.clone(),
            underlay: p.underlay,
        }),
        path_mtu: measured(report.mtu.as_ref()),
        underlay_mtu: measured(report.underlay_mtu.as_ref()),
        peer_agent,
        probes,
    };
    let check = Check {
        hops: hops.into_iter().map(|h| h.hop).collect(),
        data: Some(Data::Path(data)),
        ..Check::probed("path", format!("{from} -> {dst}"), (status, cause, line.clone()), report.elapsed, all_evidence)
    };
    (check, line)
}

/// Places the faults the peer node's agent saw of this run on the peer's hops (those this
/// kernel saw as well, as in a lab whose nodes share one kernel, are already placed), and says
/// what the agent answered.
fn add_peer_events(report: &Report, hops: &mut [Draft], all: &mut Vec<Evidence>) -> Option<String> {
    let answer = report.peer_events.as_ref()?;
    let agent = report.spec.peer_agent.unwrap_or_default();
    let peer = report.node.peer.as_ref().map(|p| p.underlay.to_string()).unwrap_or_default();
    let events = match answer {
        Ok(events) => events,
        Err(e) => return Some(format!("not asked: {e}")),
    };
    let mut placed = 0;
    for e in Evidence::fold(events.clone()) {
        if !is_fault(&e.event) || all.iter().any(|x| super::same(&x.event, &e.event)) {
            continue;
        }
        let kind = place_remote(&e.event);
        if let Some(h) = hops.iter_mut().find(|h| h.kind == kind) {
            h.hop.evidence.push(e.clone());
            placed += 1;
        }
        all.push(e);
    }
    Some(format!("the agent on {peer}:{agent} saw {} event(s) of this run, {placed} not seen here", events.len()))
}

/// Which peer hop an event the peer's agent saw belongs to: a VXLAN packet outside the VXLAN
/// device is on the underlay; otherwise the device says (VXLAN device, bridge or a pod's
/// host-side veth, else the pod).
fn place_remote(ev: &KernelEvent) -> Kind {
    let dev = ev.device.as_deref().unwrap_or("");
    let overlay = dev.starts_with("flannel") || dev.starts_with("vxlan");
    if ev.inner.is_some() && !overlay {
        Kind::PeerUnderlay
    } else if overlay {
        Kind::PeerOverlay
    } else if dev.starts_with("cni") || dev.starts_with("veth") || dev == "cbr0" {
        Kind::PeerBridge
    } else {
        Kind::Destination
    }
}

fn measured(report: Option<&crate::probes::mtu::Report>) -> Option<u16> {
    match report?.outcome {
        crate::probes::mtu::Outcome::Measured { path_mtu, .. } => Some(path_mtu),
        _ => None,
    }
}

fn ok_route(route: Option<&Result<Route, String>>) -> Option<&Route> {
    route.and_then(|r| r.as_ref().ok())
}

/// The hop list, from what discovery found; each hop starts with what the tables say.
fn draft_hops(report: &Report, from: &str, node_netns: &str) -> Vec<Draft> {
    let node = &report.node;
    let node_ns = Some(node_netns.to_string());
    let mut hops = Vec::new();
    if let Source::Netns(_) = report.spec.from {
        pod_side(report, from, node_ns.as_ref(), &mut hops);
    }
    let to_bridge = node.bridge.is_some()
        && ok_route(node.route.as_ref()).and_then(|r| r.oif) == node.bridge.as_ref().map(|b| b.index);
    if !to_bridge {
        hops.push(routing_hop(report, node_ns.as_ref()));
    }
    if report.to_node() {
        let mut i =
            Draft::new(Kind::Input, node_ns, None, false, format!("local delivery to {} (INPUT)", report.spec.dst));
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
            o.judge(Status::Fail, Some(Cause::VxlanMisconfigured), node.overlay_problems.join("; "));
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
            u.judge(Status::Fail, Some(Cause::NoRoute), format!("{} is {}", l.name, link_state(l)));
        }
    }
    if let Some(Err(e)) = &node.underlay_route {
        u.judge(Status::Fail, Some(Cause::NoRoute), format!("no underlay route to the peer: {e}"));
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
fn routing_hop(report: &Report, node_ns: Option<&String>) -> Draft {
    let node = &report.node;
    let mut r = Draft::new(Kind::Routing, node_ns.cloned(), None, false, String::new());
    r.chain = Some(if report.spec.from == Source::Host { "OUTPUT" } else { "FORWARD" });
    match &node.route {
        Some(Err(e)) => {
            r.judge(Status::Fail, Some(Cause::NoRoute), format!("the node has no route to {}: {e}", report.spec.dst));
        }
        Some(Ok(route)) => {
            r.hop.detail = match (&node.route_link, route.kind) {
                (_, RouteKind::Local) => {
                    format!("{} is this node's own address: delivered locally", report.spec.dst)
                }
                (Some(l), RouteKind::Unicast) => describe_route(Some(route), l),
                _ => String::new(),
            };
            if matches!(route.kind, RouteKind::Reject(_)) {
                r.judge(
                    Status::Fail,
                    Some(Cause::NoRoute),
                    format!("the node routes {} to {}", report.spec.dst, reject_name(route)),
                );
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
fn pod_side(report: &Report, from: &str, node_ns: Option<&String>, hops: &mut Vec<Draft>) {
    let node_ns = node_ns.cloned();
    let (src, node) = (&report.source, &report.node);
    let mut h = Draft::new(Kind::Source, Some(from.to_string()), src.link.as_ref(), false, String::new());
    match &src.route {
        Some(Err(e)) => {
            h.judge(Status::Fail, Some(Cause::NoRoute), format!("no route to {} in {from}: {e}", report.spec.dst));
        }
        Some(Ok(r)) if matches!(r.kind, RouteKind::Reject(_)) => {
            h.judge(
                Status::Fail,
                Some(Cause::NoRoute),
                format!("{from} routes {} to {}", report.spec.dst, reject_name(r)),
            );
        }
        _ => {}
    }
    if let Some(l) = &src.link {
        h.hop.detail = describe_route(ok_route(src.route.as_ref()), l);
        if !l.up || !l.lower_up {
            h.judge(Status::Fail, Some(Cause::NoRoute), format!("{} in {from} is {}", l.name, link_state(l)));
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
            v.judge(Status::Fail, Some(Cause::NoRoute), format!("{} on the node is {}", l.name, link_state(l)));
        }
    }
    hops.push(v);
    if node.veth.is_some() {
        let mut b = Draft::new(Kind::Bridge, node_ns.clone(), node.bridge.as_ref(), false, String::new());
        match &node.bridge {
            Some(l) => {
                b.hop.detail = format!("{} has {}", l.name, addresses(l));
                if !l.up {
                    b.judge(Status::Fail, Some(Cause::NoRoute), format!("bridge {} is {}", l.name, link_state(l)));
                }
            }
            None => b.hop.detail = "the veth is not enslaved to a bridge".into(),
        }
        hops.push(b);
    }
}

/// The destination's address, with the pod behind it when the API named one.
fn destination(report: &Report) -> String {
    match &report.names.destination_pod {
        Some(pod) => format!("{} ({pod})", report.spec.dst),
        None => report.spec.dst.to_string(),
    }
}

fn reject_name(r: &Route) -> &'static str {
    match r.kind {
        RouteKind::Reject(n) => n,
        _ => "a route",
    }
}

fn link_state(l: &Link) -> &'static str {
    if !l.up {
        "down"
    } else if !l.lower_up {
        "up without carrier (its peer is down)"
    } else {
        "up"
    }
}

fn addresses(l: &Link) -> String {
    if l.addresses.is_empty() {
        return "no IPv4 address".into();
    }
    l.addresses.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>().join(", ")
}

fn describe_route(route: Option<&Route>, link: &Link) -> String {
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

/// Each probe's own verdict, in a stable order.
fn probe_checks(report: &Report, capture_on: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    match &report.final_probe {
        Some(Final::Tcp(r)) => checks.push(tcp_verdict(r, capture_on)),
        Some(Final::Echo(e)) => checks.push(echo_verdict(e, capture_on)),
        None => {}
    }
    if let Some(g) = &report.gateway {
        checks.push(Check { probe: "gateway", ..echo_verdict(g, capture_on) });
    }
    if let Some(v) = &report.vxlan {
        checks.push(vxlan::verdict(v, capture_on));
    }
    if let Some(m) = &report.mtu {
        checks.push(mtu::verdict(m, capture_on));
    }
    if let Some(m) = &report.underlay_mtu {
        checks.push(Check { probe: "underlay-mtu", ..mtu::verdict(m, capture_on) });
    }
    if let Some(t) = &report.from_node {
        checks.push(Check { probe: "from-node", ..tcp_verdict(t, capture_on) });
    }
    checks
}

/// An ICMP echo's check.
pub fn echo_verdict(echo: &icmp::Echo, capture_on: bool) -> Check {
    let evidence = Evidence::fold(echo.events.clone());
    let unseen = if capture_on { "no drop seen on this machine" } else { "capture unavailable" };
    let verdict = match &echo.outcome {
        EchoOutcome::Answered { answer: Answer::Reply, rtt } => {
            (Status::Pass, None, format!("echo answered in {:.1} ms", rtt.as_secs_f64() * 1000.0))
        }
        EchoOutcome::Answered { answer: Answer::Unreachable { code, from }, .. } => {
            (Status::Fail, Some(Cause::Unreachable), format!("ICMP destination unreachable (code {code}) from {from}"))
        }
        EchoOutcome::Answered { .. } => match judge_evidence(&evidence, false) {
            Some((status, cause, what, flow)) => (status, cause, format!("no echo reply: {what}{flow}")),
            None => (Status::Fail, Some(Cause::Timeout), format!("no echo reply ({unseen})")),
        },
        EchoOutcome::NoPrivilege(why) => (Status::Skip, None, format!("not sent: {why}")),
        EchoOutcome::NoRoute(e) => (Status::Fail, Some(Cause::NoRoute), format!("no route: {e}")),
        EchoOutcome::Failed(e) => (Status::Fail, Some(Cause::ProbeError), e.clone()),
    };
    Check::probed("icmp", echo.dst.to_string(), verdict, echo.elapsed, evidence)
}

/// Whether an event says the kernel stopped the probe's packets (as opposed to what it
/// received). QUEUE_PURGE is a probe's own socket closing with a reply still queued (raw
/// sockets get copies of every echo reply): delivered, not lost.
fn is_fault(ev: &KernelEvent) -> bool {
    match ev.kind {
        EventKind::Drop => ev.reason.as_deref() != Some("QUEUE_PURGE"),
        EventKind::Rst | EventKind::Icmp => ev.direction == Some(Direction::Sent),
    }
}

/// The status the placed evidence gives a hop (a drop, an ICMP error or a reset sent there):
/// status, cause, what happened and the flow it happened to.
fn judge_evidence(evidence: &[Evidence], unreachable: bool) -> Option<(Status, Option<Cause>, String, String)> {
    let faults: Vec<&Evidence> = evidence.iter().filter(|e| is_fault(&e.event)).collect();
    let netfilter = faults.iter().find(|e| e.event.reason.as_deref() == Some("NETFILTER_DROP"));
    let pick = faults.iter().find(|e| e.event.kind == EventKind::Icmp).or(netfilter).or_else(|| faults.first())?;
    let ev = &pick.event;
    let (cause, what) = match ev.kind {
        EventKind::Icmp => {
            let name = ev.reason.as_deref().unwrap_or("icmp");
            // A REJECT drops the packet and answers with ICMP: name both.
            if netfilter.is_some() {
                (Cause::Unreachable, format!("rejected by netfilter (ICMP {name})"))
            } else {
                (Cause::Unreachable, format!("answered with ICMP {name}"))
            }
        }
        EventKind::Rst if ev.reason.as_deref() == Some("NO_SOCKET") => {
            (Cause::Refused, "refused: nothing listens (the kernel sent a TCP RST, NO_SOCKET)".to_string())
        }
        EventKind::Rst => (Cause::Refused, "reset (TCP RST sent)".to_string()),
        EventKind::Drop => match ev.reason.as_deref() {
            // A netfilter drop the probe saw answered with ICMP unreachable is a REJECT.
            Some("NETFILTER_DROP") if unreachable => {
                (Cause::Unreachable, "rejected by netfilter (the probe got ICMP unreachable)".to_string())
            }
            Some("NETFILTER_DROP") => (Cause::NetfilterDrop, "dropped by netfilter".to_string()),
            Some(r) => (Cause::KernelDrop, format!("dropped by the kernel ({r})")),
            None => (Cause::KernelDrop, "dropped by the kernel".to_string()),
        },
    };
    let shown = netfilter.filter(|_| ev.kind == EventKind::Icmp).map_or(ev, |n| &n.event);
    let mut flow = String::new();
    if let Some(f) = &shown.flow {
        if let Some(inner) = &shown.inner {
            let _ = write!(flow, ": VXLAN UDP {} to {} carrying {inner}", f.dst.port(), f.dst.ip());
        } else {
            let _ = write!(flow, ": {f}");
        }
    }
    let count: u32 = faults.iter().map(|e| e.count).sum();
    if count > 1 {
        let _ = write!(flow, " ({count} events)");
    }
    Some((Status::Fail, Some(cause), what, flow))
}

/// The hop an event belongs to, by the namespace and device the kernel reported.
fn place(report: &Report, hops: &[Draft], ev: &KernelEvent) -> Kind {
    let ns = u64::from(ev.netns_inode);
    let dev = ev.device.as_deref();
    let named = |l: Option<&Link>| l.is_some_and(|l| Some(l.name.as_str()) == dev);
    let node = &report.node;
    let netfilter = ev.reason.as_deref() == Some("NETFILTER_DROP") || ev.kind != EventKind::Drop;
    let has = |k: Kind| hops.iter().any(|h| h.kind == k);
    let or_last = |k: Kind| if has(k) { k } else { hops.last().map_or(Kind::Destination, |h| h.kind) };
    if report.spec.from != Source::Host && report.source.inode == Some(ns) {
        return Kind::Source;
    }
    if node.inode == Some(ns) {
        if report.to_node() && netfilter {
            return Kind::Input;
        }
        if ev.inner.is_some() {
            return or_last(Kind::Underlay);
        }
        if named(node.veth.as_ref()) && !netfilter {
            return Kind::Veth;
        }
        let route_bridge = node.route_link.as_ref().filter(|l| l.kind.as_deref() == Some("bridge"));
        if (named(node.bridge.as_ref()) || named(route_bridge)) && !netfilter {
            return or_last(Kind::Bridge);
        }
        if dev.is_some() && node.overlay.as_ref().map(|o| o.name.as_str()) == dev {
            return or_last(Kind::Overlay);
        }
        if named(node.underlay_link.as_ref()) && !netfilter {
            return or_last(Kind::Underlay);
        }
        return or_last(if report.to_node() { Kind::Input } else { Kind::Routing });
    }
    // Another namespace on this kernel: the peer's side (or the destination) when they share it.
    if ev.inner.is_some() || named(node.underlay_link.as_ref()) {
        return or_last(Kind::PeerUnderlay);
    }
    if dev.is_some() && node.overlay.as_ref().map(|o| o.name.as_str()) == dev {
        return or_last(Kind::PeerOverlay);
    }
    if named(node.bridge.as_ref()) || dev.is_some_and(|d| d.starts_with("veth")) {
        return or_last(Kind::PeerBridge);
    }
    or_last(Kind::Destination)
}

/// Hops judged by the probes that cross them.
fn judge_probes(report: &Report, probes: &[Check], hops: &mut [Draft]) {
    let find = |name: &str| probes.iter().find(|c| c.probe == name);
    let any_fail_from = |hops: &[Draft], k: Kind| {
        let start = hops.iter().position(|h| h.kind == k).unwrap_or(hops.len());
        hops[start..].iter().any(|h| h.hop.status == Status::Fail)
    };
    let hop = with_hop;
    if let Some(g) = find("gateway") {
        match g.status {
            Status::Pass => hop(hops, Kind::Bridge, &mut |h| h.pass(&format!("gateway {} answers", g.target))),
            Status::Fail if !any_fail_from(hops, Kind::Source) => {
                // An echo the node filters while the real traffic crosses is worth a warning,
                // not a broken hop.
                let arrived = find("tcp").or_else(|| find("icmp")).is_some_and(|f| f.status == Status::Pass);
                let (status, detail) = if arrived {
                    (
                        Status::Warn,
                        format!("gateway {} does not answer an echo ({}), but traffic crosses", g.target, g.detail),
                    )
                } else {
                    (Status::Fail, format!("gateway {}: {}", g.target, g.detail))
                };
                hop(hops, Kind::Bridge, &mut |h| h.judge(status, g.cause, detail.clone()));
            }
            _ => {}
        }
    }
    if let Some(v) = find("vxlan") {
        match v.status {
            Status::Pass => {
                for k in [Kind::Overlay, Kind::Underlay, Kind::PeerUnderlay, Kind::PeerOverlay] {
                    hop(hops, k, &mut |h| h.pass("the VXLAN echo to the peer's VTEP was answered"));
                }
            }
            Status::Fail if v.cause == Some(Cause::VxlanMisconfigured) => {
                hop(hops, Kind::Overlay, &mut |h| h.judge(Status::Fail, v.cause, v.detail.clone()));
            }
            Status::Fail if !any_fail_from(hops, Kind::Underlay) => {
                let detail = format!(
                    "{}; the fault is on the underlay or on the peer node (its side is not visible from here)",
                    v.detail
                );
                hop(hops, Kind::Underlay, &mut |h| h.judge(Status::Fail, v.cause, detail.clone()));
            }
            Status::Fail => {
                // The kernel placed the loss further on: the packets left this node.
                hop(hops, Kind::Underlay, &mut |h| h.pass("the encapsulated packets left this node"));
            }
            _ => {}
        }
    }
    judge_mtu(report, probes, hops);
    if let Some(f) = find("tcp").or_else(|| find("icmp")) {
        let last = hops.last().map_or(Kind::Destination, |h| h.kind);
        match f.status {
            Status::Pass | Status::Warn => {
                hop(hops, last, &mut |h| h.pass(&f.detail));
            }
            Status::Fail if !hops.iter().any(|h| h.hop.status == Status::Fail) => {
                let mut detail = f.detail.clone();
                if hops.iter().any(|h| h.kind == Kind::Overlay)
                    && find("vxlan").is_some_and(|v| v.status == Status::Pass)
                {
                    detail.push_str(
                        "; the overlay itself carries traffic to the peer node (VXLAN echo answered), so the fault is \
                         past the peer's VTEP",
                    );
                }
                hop(hops, last, &mut |h| h.judge(Status::Fail, f.cause, detail.clone()));
            }
            _ => {}
        }
    }
}

/// A hop by kind, changed in place (hops the path does not have are left alone).
fn with_hop(hops: &mut [Draft], k: Kind, f: &mut dyn FnMut(&mut Draft)) {
    if let Some(h) = hops.iter_mut().find(|h| h.kind == k) {
        f(h);
    }
}

/// Path MTU: a black hole (or smaller signalled MTU) towards the peer starts on the underlay;
/// one only the source sees is placed on the overlay (or the routing hop without one).
fn judge_mtu(report: &Report, probes: &[Check], hops: &mut [Draft]) {
    let find = |name: &str| probes.iter().find(|c| c.probe == name);
    let hop = with_hop;
    let pod_mtu = find("mtu").filter(|c| matches!(c.cause, Some(Cause::MtuBlackhole | Cause::MtuMismatch)));
    let pod_note = |d: &mut String| {
        if let (Some(c), Some(mtu)) = (pod_mtu, measured(report.mtu.as_ref())) {
            let iface = report.mtu.as_ref().and_then(|m| m.interface.clone());
            let how = if c.cause == Some(Cause::MtuBlackhole) { "silently " } else { "" };
            let _ = write!(d, "; from the source, packets over {mtu} bytes are {how}lost");
            if let Some((name, m)) = iface {
                let _ = write!(d, " ({name} there has MTU {m})");
            }
        }
    };
    let underlay = find("underlay-mtu").filter(|c| matches!(c.status, Status::Fail | Status::Warn));
    if let Some(u) = underlay.filter(|u| matches!(u.cause, Some(Cause::MtuBlackhole | Cause::MtuMismatch))) {
        let mut detail = match (u.cause, report.underlay_mtu.as_ref()) {
            (Some(Cause::MtuBlackhole), Some(m)) => {
                let (iface, iface_mtu) = m.interface.clone().unwrap_or_else(|| ("the interface".into(), 0));
                format!(
                    "MTU black hole towards the peer {}: packets over {} bytes vanish without ICMP \
                     fragmentation-needed ({iface} has MTU {iface_mtu})",
                    u.target,
                    measured(Some(m)).unwrap_or_default()
                )
            }
            _ => format!("to the peer {}: {}", u.target, u.detail),
        };
        pod_note(&mut detail);
        hop(hops, Kind::Underlay, &mut |h| {
            h.judge(u.status, u.cause, detail.clone());
            h.hop.evidence.extend(u.evidence.iter().cloned());
        });
    } else if let Some(m) = pod_mtu {
        let k = if hops.iter().any(|h| h.kind == Kind::Overlay) { Kind::Overlay } else { Kind::Routing };
        let detail = format!("path MTU from the source: {}", m.detail);
        hop(hops, k, &mut |h| h.judge(m.status, m.cause, detail.clone()));
    }
}

/// The one line: the first broken hop and why, or that the path is healthy.
fn summary_line(report: &Report, hops: &[Draft], probes: &[Check], from: &str, dst: &str) -> String {
    let Some(broken) = hops.iter().find(|h| h.hop.status == Status::Fail) else {
        let inferred = hops.iter().filter(|h| h.hop.inferred).count();
        let mut line = format!("healthy: {from} -> {dst} crosses {} hops ({inferred} inferred)", hops.len());
        if let Some(w) = hops.iter().find(|h| h.hop.status == Status::Warn) {
            let _ = write!(line, ", with a warning on {} ({}): {}", w.hop.name, w.place(), w.hop.detail);
        }
        return line;
    };
    let place = broken.place();
    let mut line = if place.is_empty() || broken.hop.detail.contains(&place) {
        format!("{}: {}", broken.hop.name, broken.hop.detail)
    } else {
        format!("{} ({place}): {}", broken.hop.name, broken.hop.detail)
    };
    if broken.kind == Kind::Input
        && let Some(node_probe) = probes.iter().find(|c| c.probe == "from-node")
    {
        let who = if report.spec.from == Source::Host { "this node" } else { "pods on this node" };
        if node_probe.status == Status::Pass {
            let _ = write!(line, ": {who} cannot reach {dst} while the node itself can");
        } else {
            let _ = write!(line, ": the node itself cannot reach {dst} either ({})", node_probe.detail);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        time::Duration,
    };

    use super::*;
    use crate::{
        capture::event::{FlowView, Proto},
        discovery::netlink::VxlanDevice,
        probes::{
            Target,
            path::{NodeView, Peer, SourceView, Spec},
            tcp,
        },
    };

    const POD_NS: u64 = 10;
    const NODE_NS: u64 = 20;
    const PEER_NS: u32 = 30;
    const DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);

    fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            up: true,
            lower_up: true,
            mtu: Some(1450),
            ..Link::default()
        }
    }

    fn route(kind: RouteKind, oif: u32, gateway: Option<Ipv4Addr>) -> Route {
        Route { kind, oif: Some(oif), gateway: gateway.map(IpAddr::V4), source: Some(SRC.into()), table: 254 }
    }

    fn tcp_report(outcome: tcp::Outcome, events: Vec<KernelEvent>) -> tcp::Report {
        tcp::Report {
            target: Target { host: DST.to_string(), port: 8080 },
            local: Some(SocketAddr::new(SRC.into(), 40000)),
            remote: Some(SocketAddr::new(DST.into(), 8080)),
            outcome,
            elapsed: Duration::from_millis(5),
            events,
            icmp_unseen: None,
        }
    }

    /// Pod a on n1 to pod b on n2 over flannel.1, as the lab has it.
    fn pod_to_pod(final_probe: tcp::Report) -> Report {
        let mut eth0 = link(2, "eth0", Some("veth"));
        (eth0.peer_index, eth0.peer_netnsid) = (Some(7), Some(0));
        let mut veth = link(7, "vetha", Some("veth"));
        (veth.peer_index, veth.peer_netnsid, veth.master) = (Some(2), Some(1), Some(5));
        let overlay = VxlanDevice {
            name: "flannel.1".into(),
            index: 4,
            vni: Some(1),
            port: Some(8472),
            up: true,
            ..VxlanDevice::default()
        };
        Report {
            spec: Spec {
                from: Source::Netns("/run/netns/pod-a".into()),
                label: "pod-a".into(),
                dst: DST,
                port: Some(8080),
                api: None,
                peer_agent: None,
            },
            source: SourceView {
                inode: Some(POD_NS),
                route: Some(Ok(route(RouteKind::Unicast, 2, Some(Ipv4Addr::new(10, 244, 1, 1))))),
                link: Some(eth0),
            },
            node: NodeView {
                inode: Some(NODE_NS),
                veth: Some(veth),
                bridge: Some(link(5, "cni0", Some("bridge"))),
                route: Some(Ok(route(RouteKind::Unicast, 4, Some(Ipv4Addr::new(10, 244, 2, 0))))),
                route_link: Some(link(4, "flannel.1", Some("vxlan"))),
                overlay: Some(overlay),
                peer: Some(Peer {
                    vtep: Ipv4Addr::new(10, 244, 2, 0),
                    vtep_mac: "02:fa:00:00:00:02".into(),
                    underlay: Ipv4Addr::new(192, 168, 50, 12),
                }),
                underlay_route: Some(Ok(route(RouteKind::Unicast, 3, None))),
                underlay_link: Some(link(3, "eth0", None)),
                ..NodeView::default()
            },
            final_probe: Some(Final::Tcp(final_probe)),
            gateway: None,
            mtu: None,
            vxlan: None,
            underlay_mtu: None,
            from_node: None,
            names: crate::probes::path::Names::default(),
            peer_events: None,
            elapsed: Duration::from_millis(10),
        }
    }

    fn drop_event(netns: u32, device: &str, vxlan: bool) -> KernelEvent {
        let inner = FlowView {
            proto: Proto::Tcp,
            src: SocketAddr::new(SRC.into(), 40000),
            dst: SocketAddr::new(DST.into(), 8080),
        };
        let outer = FlowView {
            proto: Proto::Udp,
            src: "192.168.50.11:33000".parse().unwrap(),
            dst: "192.168.50.12:8472".parse().unwrap(),
        };
        KernelEvent {
            kind: EventKind::Drop,
            reason: Some("NETFILTER_DROP".into()),
            reason_note: None,
            location: None,
            direction: None,
            icmp_type: None,
            icmp_code: None,
            device: Some(device.into()),
            netns: format!("ns{netns}"),
            netns_inode: netns,
            flow: Some(if vxlan { outer } else { inner }),
            inner: vxlan.then_some(inner),
            ts_ns: 1,
            from_socket: false,
        }
    }

    fn names(check: &Check) -> Vec<&str> {
        check.hops.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn healthy_path_lists_every_hop_and_passes() {
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![])), true, "n1");
        assert_eq!(
            names(&check),
            [
                "source",
                "veth",
                "bridge",
                "routing",
                "overlay",
                "underlay",
                "peer-underlay",
                "peer-overlay",
                "peer-bridge",
                "destination"
            ]
        );
        assert!(check.hops.iter().all(|h| h.status == Status::Pass), "{check:?}");
        assert_eq!(check.hops[1].netns.as_deref(), Some("n1"));
        assert_eq!(check.hops[1].device.as_deref(), Some("vetha"));
        assert!(check.hops[6..].iter().all(|h| h.inferred));
        assert!(line.starts_with("healthy: pod-a -> 10.244.2.2:8080 crosses 10 hops (4 inferred)"), "{line}");
    }

    #[test]
    fn a_vxlan_drop_in_another_namespace_lands_on_the_peer_underlay() {
        let events = vec![drop_event(PEER_NS, "eth0", true)];
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::TimedOut, events)), true, "n1");
        let failed = check.hops.iter().find(|h| h.status == Status::Fail).unwrap();
        assert_eq!(failed.name, "peer-underlay");
        assert_eq!(failed.netns.as_deref(), Some("ns30"));
        assert!(!failed.inferred);
        assert_eq!(check.cause, Some(Cause::NetfilterDrop));
        assert_eq!(
            line,
            "peer-underlay: dropped by netfilter on ns30 eth0: VXLAN UDP 8472 to 192.168.50.12 carrying tcp \
             10.244.1.2:40000 -> 10.244.2.2:8080"
        );
        // Nothing got through: the hops after the break were not reached.
        assert_eq!(check.hops.last().unwrap().status, Status::Skip);
    }

    #[test]
    fn a_forward_drop_on_the_node_lands_on_routing() {
        let events = vec![drop_event(u32::try_from(NODE_NS).unwrap(), "cni0", false)];
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::TimedOut, events)), true, "n1");
        let failed = check.hops.iter().find(|h| h.status == Status::Fail).unwrap();
        assert_eq!(failed.name, "routing", "{check:?}");
        assert!(line.starts_with("routing: dropped by netfilter on n1 FORWARD: tcp 10.244.1.2:40000"), "{line}");
    }

    #[test]
    fn a_purged_reply_queue_is_not_a_fault() {
        let mut purge = drop_event(u32::try_from(NODE_NS).unwrap(), "cni0", false);
        purge.reason = Some("QUEUE_PURGE".into());
        let (check, _) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![purge])), true, "n1");
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check.evidence.is_empty() && check.hops.iter().all(|h| h.evidence.is_empty()), "{check:?}");
    }

    #[test]
    fn a_timeout_without_evidence_fails_the_destination() {
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![])), false, "n1");
        let failed = check.hops.iter().position(|h| h.status == Status::Fail).unwrap();
        assert_eq!(check.hops[failed].name, "destination");
        assert!(check.hops[..failed].iter().all(|h| h.status == Status::Pass));
        assert_eq!(check.cause, Some(Cause::Timeout));
        assert!(line.starts_with("destination: no answer"), "{line}");
    }

    #[test]
    fn a_reject_on_the_node_fails_input_and_compares_with_the_node() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![]));
        let mut reject = drop_event(u32::try_from(NODE_NS).unwrap(), "cni0", false);
        reject.flow = Some(FlowView {
            proto: Proto::Tcp,
            src: SocketAddr::new(SRC.into(), 40000),
            dst: "192.168.50.11:10250".parse().unwrap(),
        });
        report.spec.dst = Ipv4Addr::new(192, 168, 50, 11);
        report.spec.port = Some(10250);
        report.node.route = Some(Ok(route(RouteKind::Local, 1, None)));
        report.node.route_link = Some(link(1, "lo", None));
        report.final_probe = Some(Final::Tcp(tcp_report(tcp::Outcome::TimedOut, vec![reject])));
        report.from_node = Some(tcp_report(tcp::Outcome::Connected, vec![]));
        let (check, line) = verdict(&report, true, "n1");
        assert_eq!(names(&check), ["source", "veth", "bridge", "routing", "input"]);
        assert_eq!(check.hops[4].status, Status::Fail);
        assert!(
            line.ends_with("pods on this node cannot reach 192.168.50.11:10250 while the node itself can"),
            "{line}"
        );
    }

    #[test]
    fn a_filtered_gateway_echo_is_a_warning_when_traffic_crosses() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![]));
        report.gateway = Some(icmp::Echo {
            dst: Ipv4Addr::new(10, 244, 1, 1),
            outcome: EchoOutcome::Answered { answer: Answer::Silent, rtt: Duration::from_secs(1) },
            elapsed: Duration::from_secs(1),
            events: vec![],
        });
        let (check, line) = verdict(&report, true, "n1");
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert_eq!(check.hops[2].status, Status::Warn);
        assert!(line.contains("with a warning on bridge"), "{line}");
        report.final_probe = Some(Final::Tcp(tcp_report(tcp::Outcome::TimedOut, vec![])));
        let (check, _) = verdict(&report, true, "n1");
        assert_eq!(check.hops[2].status, Status::Fail, "{check:?}");
    }

    #[test]
    fn the_node_to_a_pod_on_its_own_bridge() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![]));
        report.spec.from = Source::Host;
        report.spec.label = "host".into();
        report.node = NodeView {
            inode: Some(NODE_NS),
            route: Some(Ok(route(RouteKind::Unicast, 5, None))),
            route_link: Some(link(5, "cni0", Some("bridge"))),
            ..NodeView::default()
        };
        let (check, _) = verdict(&report, true, "n1");
        assert_eq!(names(&check), ["routing", "bridge", "destination"]);
        assert_eq!(check.hops[1].device.as_deref(), Some("cni0"));
        assert_eq!(check.status, Status::Pass);
    }

    #[test]
    fn a_missing_fdb_entry_fails_the_overlay() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![]));
        report.node.peer = None;
        report.node.overlay_problems = vec!["flannel.1 has no FDB entry for 02:fa:00:00:00:02".into()];
        let (check, line) = verdict(&report, true, "n1");
        assert_eq!(check.cause, Some(Cause::VxlanMisconfigured));
        assert!(line.starts_with("overlay (n1 flannel.1): flannel.1 has no FDB entry"), "{line}");
    }
}
