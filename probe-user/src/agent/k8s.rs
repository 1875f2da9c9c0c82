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
    discovery::api::ApiError,
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

/// Why the node condition or its Event was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("no API client: {0}")]
    NoClient(String),
    #[error("patch node {node} status: {source}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("create event: {0}")]
    Event(#[source] kube::Error),
}

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
    pub async fn observe(&mut self, client: Client, j: &Judgement) -> Result<(), WriteError> {
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
            .map_err(|source| WriteError::Patch { node: self.node.clone(), source })?;
        if self.last.is_some() || j.problem {
            let events: Api<Event> = Api::namespaced(client, "default");
            events.create(&PostParams::default(), &event(&self.node, j, now)).await.map_err(WriteError::Event)?;
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
