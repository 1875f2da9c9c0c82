//! What a cycle says of this node's paths, for the `NetworkPathProblem` condition
//! ([`super::condition`] writes it).
//!
//! The quorum: each cycle probes k sampled peers. When a majority of them fail at the same
//! hop (VXLAN, path MTU or kubelet), the fault is on this node's side of that hop (a fault
//! on one peer's side fails only that peer), so this node gets the condition, naming the hop,
//! the peers and the kernel's reason. Fewer failures than a quorum are the peers' own problems:
//! their agents see them from their side. The condition is cleared (False) when the quorum no
//! longer fails.

use crate::{
    jobs::node_checks::PeerNode,
    verdict::{Check, Probe, Status},
};

pub const CONDITION: &str = "NetworkPathProblem";

/// The hops judged across peers: probe, the hop's name in messages, the condition's reason.
const HOPS: [(Probe, &str, &str); 3] = [
    (Probe::Vxlan, "VXLAN overlay", "OverlayBroken"),
    (Probe::Mtu, "path MTU", "MtuBlackhole"),
    (Probe::Kubelet, "kubelet", "KubeletUnreachable"),
];

/// What one cycle says about this node's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub problem: bool,
    pub reason: String,
    pub message: String,
}

/// Majority of `k` (at least one).
pub fn quorum(k: usize) -> usize {
    k / 2 + 1
}

/// The judgement of one cycle's checks against the peers probed; a check about a peer names it
/// (`Check::peer`), this node's own checks do not count.
pub fn judge(checks: &[Check], probed: &[PeerNode]) -> Judgement {
    let k = probed.len();
    let mut worst: Option<(usize, Judgement)> = None;
    for (probe, hop, reason) in HOPS {
        let mut failing: Vec<(&str, String)> = Vec::new();
        for c in checks.iter().filter(|c| c.probe == probe && c.status == Status::Fail) {
            let Some(peer) = c.peer.as_deref() else { continue };
            if failing.iter().any(|(p, _)| *p == peer) {
                continue;
            }
            let cause = c.cause.map_or("failed", crate::verdict::Cause::as_str);
            failing.push((peer, format!("{peer} ({cause}: {})", crate::output::cut(&c.detail, 160))));
        }
        if k > 0 && failing.len() >= quorum(k) && worst.as_ref().is_none_or(|(n, _)| failing.len() > *n) {
            let each: Vec<&str> = failing.iter().map(|(_, s)| s.as_str()).collect();
            let message = format!("{hop} to {} of {k} sampled peers fails: {}", failing.len(), each.join("; "));
            worst = Some((failing.len(), Judgement { problem: true, reason: reason.into(), message }));
        }
    }
    worst.map_or_else(
        || Judgement {
            problem: false,
            reason: "NetworkPathsHealthy".into(),
            message: format!("VXLAN, path MTU and kubelet pass to a quorum of {k} sampled peers"),
        },
        |(_, j)| j,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::verdict::{Cause, Verdict};

    fn peer(name: &str, ip: &str) -> PeerNode {
        PeerNode { name: name.into(), underlay: ip.parse().unwrap(), vtep: None }
    }

    /// A check as the planner makes it: about a peer when its address is one.
    fn check(probe: Probe, target: &str, status: Status) -> Check {
        let cause = (status == Status::Fail).then_some(Cause::NetfilterDrop);
        let peer = Some(name_of(target)).filter(|n| !n.is_empty());
        Check {
            peer,
            ..Check::probed(probe, target.into(), Verdict::new(status, cause, "dropped"), Duration::ZERO, Vec::new())
        }
    }

    fn name_of(target: &str) -> String {
        match target.split(':').next() {
            Some("10.0.0.2") => "n2".into(),
            Some("10.0.0.3") => "n3".into(),
            Some("10.0.0.4") => "n4".into(),
            _ => String::new(),
        }
    }

    #[test]
    fn a_majority_of_peers_failing_one_hop_is_this_nodes_problem() {
        let peers = [peer("n2", "10.0.0.2"), peer("n3", "10.0.0.3"), peer("n4", "10.0.0.4")];
        assert_eq!((quorum(1), quorum(2), quorum(3), quorum(5)), (1, 2, 2, 3));
        let one = [
            check(Probe::Vxlan, "10.0.0.2:8472", Status::Fail),
            check(Probe::Vxlan, "10.0.0.3:8472", Status::Pass),
            check(Probe::Vxlan, "10.0.0.4:8472", Status::Pass),
        ];
        let j = judge(&one, &peers);
        assert!(!j.problem, "one peer of three is that peer's problem: {j:?}");
        let two = [
            check(Probe::Vxlan, "10.0.0.2:8472", Status::Fail),
            check(Probe::Vxlan, "10.0.0.3:8472", Status::Fail),
            check(Probe::Kubelet, "10.0.0.2:10250", Status::Fail),
            check(Probe::Dns, "kubernetes.default", Status::Fail),
        ];
        let j = judge(&two, &peers);
        assert!(j.problem);
        assert_eq!(j.reason, "OverlayBroken");
        assert!(
            j.message.starts_with("VXLAN overlay to 2 of 3 sampled peers fails: n2 (netfilter_drop: dropped); n3"),
            "{}",
            j.message
        );
        // Node-local checks (DNS here) never make a quorum on their own.
        let local = [
            check(Probe::Dns, "kubernetes.default", Status::Fail),
            check(Probe::Kubelet, "10.0.0.9:10250", Status::Fail),
        ];
        assert!(!judge(&local, &peers).problem);
        assert!(!judge(&two, &[]).problem, "no peers probed, no quorum");
    }
}
