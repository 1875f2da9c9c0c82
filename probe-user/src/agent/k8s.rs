//! The agent's writes to the Kubernetes API: the node condition `NetworkPathProblem` and an
//! Event when it changes.
//!
//! The quorum: each cycle probes k sampled peers. When a majority of them fail at the same
//! hop (VXLAN, path MTU or kubelet), the fault is on this node's side of that hop (a fault
//! on one peer's side fails only that peer), so this node gets the condition, naming the hop,
//! the peers and the kernel's reason. Fewer failures than a quorum are the peers' own problems:
//! their agents see them from their side. The condition is cleared (False) when the quorum no
//! longer fails. Writes happen on changes only (and once at start), never per cycle.
//!
//! RBAC: `patch` on `nodes/status`, `create` on `events` (deploy/rbac.yaml). Without an API the
//! agent runs on and only its metrics say what it found.

use k8s_openapi::{
    api::core::v1::{Event, EventSource, Node, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

use crate::{
    correlation::{Check, Status},
    jobs::node::Peer,
};

pub const CONDITION: &str = "NetworkPathProblem";

/// The hops judged across peers: probe, the hop's name in messages, the condition's reason.
const HOPS: [(&str, &str, &str); 3] = [
    ("vxlan", "VXLAN overlay", "OverlayBroken"),
    ("mtu", "path MTU", "MtuBlackhole"),
    ("kubelet", "kubelet", "KubeletUnreachable"),
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

/// The judgement of one cycle's checks against the peers probed; `peer_of` names the peer a
/// check's target belongs to (empty: this node's own check).
pub fn judge(checks: &[Check], probed: &[Peer], peer_of: &dyn Fn(&str) -> String) -> Judgement {
    let k = probed.len();
    let mut worst: Option<(usize, Judgement)> = None;
    for (probe, hop, reason) in HOPS {
        let mut failing: Vec<String> = Vec::new();
        for c in checks.iter().filter(|c| c.probe == probe && c.status == Status::Fail) {
            let peer = peer_of(&c.target);
            if peer.is_empty() || failing.iter().any(|f| f.starts_with(&format!("{peer} "))) {
                continue;
            }
            let cause = c.cause.map_or("failed", crate::correlation::Cause::as_str);
            failing.push(format!("{peer} ({cause}: {})", crate::output::cut(&c.detail, 160)));
        }
        if k > 0 && failing.len() >= quorum(k) && worst.as_ref().is_none_or(|(n, _)| failing.len() > *n) {
            let message = format!("{hop} to {} of {k} sampled peers fails: {}", failing.len(), failing.join("; "));
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

/// Writes the condition and Events as the judgement changes.
pub struct Reporter {
    node: String,
    last: Option<bool>,
}

impl Reporter {
    pub fn new(node: &str) -> Self {
        Self { node: node.to_string(), last: None }
    }

    /// Whether `j` would be written (its state differs from the last one written).
    pub fn changes(&self, j: &Judgement) -> bool {
        self.last != Some(j.problem)
    }

    /// Writes when the judgement's state differs from the last one written (or nothing was
    /// written yet); an Event on every change after the first write, and on a first problem.
    pub async fn observe(&mut self, client: Client, j: &Judgement) -> Result<(), String> {
        if !self.changes(j) {
            return Ok(());
        }
        let now = Timestamp::now();
        let status = if j.problem { "True" } else { "False" };
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": CONDITION,
            "status": status,
            "reason": j.reason,
            "message": j.message,
            "lastHeartbeatTime": now.to_string(),
            "lastTransitionTime": now.to_string(),
        }]}});
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .patch_status(&self.node, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|e| format!("patch node {} status: {e}", self.node))?;
        if self.last.is_some() || j.problem {
            let events: Api<Event> = Api::namespaced(client, "default");
            events
                .create(&PostParams::default(), &event(&self.node, j, now))
                .await
                .map_err(|e| format!("create event: {e}"))?;
        }
        self.last = Some(j.problem);
        Ok(())
    }
}

/// The Event for a change, on the Node object (namespace default, as the kubelet's are).
pub fn event(node: &str, j: &Judgement, now: Timestamp) -> Event {
    let (kind, reason) = if j.problem { ("Warning", CONDITION) } else { ("Normal", "NetworkPathRecovered") };
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node}.netcheck.")),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.into()),
            uid: Some(node.into()),
            api_version: Some("v1".into()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(format!("{}: {}", j.reason, j.message)),
        type_: Some(kind.into()),
        source: Some(EventSource { component: Some("netcheck".into()), host: Some(node.into()) }),
        reporting_component: Some("netcheck".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some("Probe".into()),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::correlation::Cause;

    fn peer(name: &str, ip: &str) -> Peer {
        Peer { name: name.into(), underlay: ip.parse().unwrap(), vtep: None }
    }

    fn check(probe: &'static str, target: &str, status: Status) -> Check {
        let cause = (status == Status::Fail).then_some(Cause::NetfilterDrop);
        Check::probed(probe, target.into(), (status, cause, "dropped".into()), Duration::ZERO, Vec::new())
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
            check("vxlan", "10.0.0.2:8472", Status::Fail),
            check("vxlan", "10.0.0.3:8472", Status::Pass),
            check("vxlan", "10.0.0.4:8472", Status::Pass),
        ];
        let j = judge(&one, &peers, &name_of);
        assert!(!j.problem, "one peer of three is that peer's problem: {j:?}");
        let two = [
            check("vxlan", "10.0.0.2:8472", Status::Fail),
            check("vxlan", "10.0.0.3:8472", Status::Fail),
            check("kubelet", "10.0.0.2:10250", Status::Fail),
            check("dns", "kubernetes.default", Status::Fail),
        ];
        let j = judge(&two, &peers, &name_of);
        assert!(j.problem);
        assert_eq!(j.reason, "OverlayBroken");
        assert!(
            j.message.starts_with("VXLAN overlay to 2 of 3 sampled peers fails: n2 (netfilter_drop: dropped); n3"),
            "{}",
            j.message
        );
        // Node-local checks (DNS here) never make a quorum on their own.
        let local =
            [check("dns", "kubernetes.default", Status::Fail), check("kubelet", "10.0.0.9:10250", Status::Fail)];
        assert!(!judge(&local, &peers, &name_of).problem);
        assert!(!judge(&two, &[], &name_of).problem, "no peers probed, no quorum");
    }

    #[test]
    fn events_name_the_node_and_the_change() {
        let j = Judgement { problem: true, reason: "OverlayBroken".into(), message: "VXLAN overlay to 1 of 1".into() };
        let e = event("n1", &j, Timestamp::UNIX_EPOCH);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some(CONDITION));
        assert_eq!(e.involved_object.name.as_deref(), Some("n1"));
        assert_eq!(e.message.as_deref(), Some("OverlayBroken: VXLAN overlay to 1 of 1"));
        let ok = Judgement { problem: false, ..j };
        assert_eq!(event("n1", &ok, Timestamp::UNIX_EPOCH).reason.as_deref(), Some("NetworkPathRecovered"));
    }
}
