//! Kernel events on hops: which hop an event belongs to (by the namespace and device the
//! kernel reported, or by what the peer's agent saw), whether it is a fault, and what it says.

use std::fmt::Write as _;

use super::hops::{Draft, Kind};
use crate::{
    capture::event::{Direction, EventKind, KernelEvent},
    discovery::netlink::Link,
    probes::path::{Report, Source},
    verdict::{Cause, Evidence, same},
};

/// Whether an event says the kernel stopped the probe's packets (as opposed to what it
/// received). QUEUE_PURGE is a probe's own socket closing with a reply still queued (raw
/// sockets get copies of every echo reply): delivered, not lost.
pub(super) fn is_fault(ev: &KernelEvent) -> bool {
    match ev.kind {
        EventKind::Drop => ev.reason.as_deref() != Some("QUEUE_PURGE"),
        EventKind::Rst | EventKind::Icmp => ev.direction == Some(Direction::Sent),
    }
}

/// A fault the kernel saw at a hop, which fails it.
pub(super) struct Fault {
    pub cause: Cause,
    /// What happened, e.g. "dropped by netfilter".
    pub what: String,
    /// The flow it happened to (": tcp a -> b", with the event count), or nothing.
    pub flow: String,
}

/// The fault the placed evidence shows at a hop (a drop, an ICMP error or a reset sent there).
pub(super) fn judge_evidence(evidence: &[Evidence], unreachable: bool) -> Option<Fault> {
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
    Some(Fault { cause, what, flow })
}

/// The hop an event belongs to, by the namespace and device the kernel reported.
pub(super) fn hop_for_event(report: &Report, hops: &[Draft], ev: &KernelEvent) -> Kind {
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
/// Places the faults the peer node's agent saw of this run on the peer's hops (those this
/// kernel saw as well, as in a lab whose nodes share one kernel, are already placed), and says
/// what the agent answered.
pub(super) fn add_peer_events(report: &Report, hops: &mut [Draft], all: &mut Vec<Evidence>) -> Option<String> {
    let answer = report.peer_events.as_ref()?;
    let agent = report.spec.peer_agent.unwrap_or_default();
    let peer = report.node.peer.as_ref().map(|p| p.underlay.to_string()).unwrap_or_default();
    let events = match answer {
        Ok(events) => events,
        Err(e) => return Some(format!("no events: {e}")),
    };
    let mut placed = 0;
    for e in Evidence::fold(events.clone()) {
        if !is_fault(&e.event) || all.iter().any(|x| same(&x.event, &e.event)) {
            continue;
        }
        let kind = peer_hop_for_event(&e.event);
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
pub(super) fn peer_hop_for_event(ev: &KernelEvent) -> Kind {
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
