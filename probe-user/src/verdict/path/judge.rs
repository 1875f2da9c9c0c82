//! What the probes that cross a hop say of it: the gateway echo of the bridge, the VXLAN echo
//! of the tunnel, the path MTUs of the uplink, the final probe of the destination.

use std::fmt::Write as _;

use super::{
    hops::{Draft, Kind},
    measured,
};
use crate::{
    probes::path::Report,
    verdict::{Cause, Check, Probe, Status, Verdict},
};

/// Hops judged by the probes that cross them.
pub(super) fn judge_probes(report: &Report, probes: &[Check], hops: &mut [Draft]) {
    let find = |probe: Probe| probes.iter().find(|c| c.probe == probe);
    let any_fail_from = |hops: &[Draft], k: Kind| {
        let start = hops.iter().position(|h| h.kind == k).unwrap_or(hops.len());
        hops[start..].iter().any(|h| h.hop.status == Status::Fail)
    };
    let hop = with_hop;
    if let Some(g) = find(Probe::Gateway) {
        match g.status {
            Status::Pass => hop(hops, Kind::Bridge, &mut |h| h.pass(&format!("gateway {} answers", g.target))),
            Status::Fail if !any_fail_from(hops, Kind::Source) => {
                // An echo the node filters while the real traffic crosses is worth a warning,
                // not a broken hop.
                let arrived = find(Probe::Tcp).or_else(|| find(Probe::Icmp)).is_some_and(|f| f.status == Status::Pass);
                let (status, detail) = if arrived {
                    (
                        Status::Warn,
                        format!("gateway {} does not answer an echo ({}), but traffic crosses", g.target, g.detail),
                    )
                } else {
                    (Status::Fail, format!("gateway {}: {}", g.target, g.detail))
                };
                hop(hops, Kind::Bridge, &mut |h| h.judge(Verdict::new(status, g.cause, detail.clone())));
            }
            _ => {}
        }
    }
    if let Some(v) = find(Probe::Vxlan) {
        match v.status {
            Status::Pass => {
                for k in [Kind::Overlay, Kind::Underlay, Kind::PeerUnderlay, Kind::PeerOverlay] {
                    hop(hops, k, &mut |h| h.pass("the VXLAN echo to the peer's VTEP was answered"));
                }
            }
            Status::Fail if v.cause == Some(Cause::VxlanMisconfigured) => {
                hop(hops, Kind::Overlay, &mut |h| h.judge(Verdict::new(Status::Fail, v.cause, v.detail.clone())));
            }
            Status::Fail if !any_fail_from(hops, Kind::Underlay) => {
                let mut side = peer_side(report);
                if matches!(report.peer_events, Some(Ok(_))) {
                    side.push_str(": look at the underlay between");
                }
                let detail = format!("{}; the fault is on the underlay or on the peer node ({side})", v.detail);
                hop(hops, Kind::Underlay, &mut |h| h.judge(Verdict::new(Status::Fail, v.cause, detail.clone())));
            }
            Status::Fail => {
                // The kernel placed the loss further on: the packets left this node.
                hop(hops, Kind::Underlay, &mut |h| h.pass("the encapsulated packets left this node"));
            }
            _ => {}
        }
    }
    judge_mtu(report, probes, hops);
    if let Some(f) = find(Probe::Tcp).or_else(|| find(Probe::Icmp)) {
        let last = hops.last().map_or(Kind::Destination, |h| h.kind);
        match f.status {
            Status::Pass | Status::Warn => {
                hop(hops, last, &mut |h| h.pass(&f.detail));
            }
            Status::Fail if !hops.iter().any(|h| h.hop.status == Status::Fail) => {
                let mut detail = f.detail.clone();
                let overlay = hops.iter().any(|h| h.kind == Kind::Overlay);
                if overlay && find(Probe::Vxlan).is_some_and(|v| v.status == Status::Pass) {
                    detail.push_str(
                        "; the overlay itself carries traffic to the peer node (VXLAN echo answered), so the fault is \
                         past the peer's VTEP",
                    );
                }
                if overlay {
                    // Past the tunnel the packet is in the peer's kernel.
                    let _ = write!(detail, " ({})", peer_side(report));
                }
                hop(hops, last, &mut |h| h.judge(Verdict::new(Status::Fail, f.cause, detail.clone())));
            }
            _ => {}
        }
    }
}

/// What this run has of the peer node's side when its own kernel saw nothing there: on a
/// cluster the peer's drops are in the peer's kernel, which only the peer's agent can ask. Says
/// whether it was asked and what it answered, so a verdict never reads "no drop" where nobody
/// looked.
pub(super) fn peer_side(report: &Report) -> String {
    let peer = report.node.peer.as_ref().map(|p| p.underlay.to_string()).unwrap_or_default();
    match (report.spec.peer_agent, &report.peer_events) {
        (None, _) => "the peer's side is not visible from here: its agent was not asked (--no-peer-agent)".into(),
        (Some(_), None) => "the peer's side is not visible from here: no peer node to ask".into(),
        (Some(_), Some(Err(e))) => format!("the peer's side is not visible from here: its {e}"),
        (Some(port), Some(Ok(_))) => {
            format!("the agent on {peer}:{port} saw no drop of these packets on the peer")
        }
    }
}

/// A hop by kind, changed in place (hops the path does not have are left alone).
pub(super) fn with_hop(hops: &mut [Draft], k: Kind, f: &mut dyn FnMut(&mut Draft)) {
    if let Some(h) = hops.iter_mut().find(|h| h.kind == k) {
        f(h);
    }
}

/// Path MTU: a black hole (or smaller signalled MTU) towards the peer starts on the underlay;
/// one only the source sees is placed on the overlay (or the routing hop without one).
pub(super) fn judge_mtu(report: &Report, probes: &[Check], hops: &mut [Draft]) {
    let find = |probe: Probe| probes.iter().find(|c| c.probe == probe);
    let hop = with_hop;
    let pod_mtu = find(Probe::Mtu).filter(|c| matches!(c.cause, Some(Cause::MtuBlackhole | Cause::MtuMismatch)));
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
    let underlay = find(Probe::UnderlayMtu).filter(|c| matches!(c.status, Status::Fail | Status::Warn));
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
            h.judge(Verdict::new(u.status, u.cause, detail.clone()));
            h.hop.evidence.extend(u.evidence.iter().cloned());
        });
    } else if let Some(m) = pod_mtu {
        let k = if hops.iter().any(|h| h.kind == Kind::Overlay) { Kind::Overlay } else { Kind::Routing };
        let detail = format!("path MTU from the source: {}", m.detail);
        hop(hops, k, &mut |h| h.judge(Verdict::new(m.status, m.cause, detail.clone())));
    }
}
