//! The node condition `NetworkPathProblem` and its Events, written the way
//! node-problem-detector writes its conditions (condition/manager.go, problemclient): a change
//! is a change of status *or reason* (a new message alone is not, log_monitor.go); the
//! condition is written on a change and again every heartbeat period (NPD's
//! `--k8s-exporter-heartbeat-period`, 5 min) with a fresh `lastHeartbeatTime` and the same
//! `lastTransitionTime`; a failed write is retried with a doubling, jittered backoff, not every
//! cycle. Before any of that, hysteresis: a new state must be seen in two cycles running to be
//! shown, so one lost probe neither raises nor clears the condition.
//!
//! Events, only on a change: a repeat of an Event sent in the last 10 minutes (the same type
//! and reasons) updates that Event's `count` and `lastTimestamp` instead of creating another,
//! as client-go's EventCorrelator does (tools/record/events_cache.go).
//!
//! RBAC: `patch` on `nodes/status`, `create` and `patch` on `events` in `default`
//! (deploy/base/rbac.yaml). Without an API the agent runs on and only its metrics say what it found.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, Node, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

use super::quorum::{CONDITION, Judgement};

/// How often the condition is written when nothing changes (NPD's default heartbeat period).
pub const HEARTBEAT: Duration = Duration::from_mins(5);
/// Cycles running a new state must be seen in before it is shown.
pub const CONFIRM: u32 = 2;
/// How long an Event is updated rather than sent again.
const EVENT_SERIES: Duration = Duration::from_mins(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_mins(5);

/// Why the node condition or its Event was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("patch node {node} status: {source}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("create event: {0}")]
    Event(#[source] kube::Error),
    #[error("update event {name}: {source}")]
    EventUpdate {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the API has of the condition, as last written.
#[derive(Debug, Clone)]
struct Written {
    problem: bool,
    reason: String,
    transition: Timestamp,
    at: Instant,
}

/// An Event sent, to update on a repeat.
#[derive(Debug, Clone)]
struct Sent {
    key: (bool, String),
    name: String,
    count: i32,
    at: Instant,
}

/// Keeps the condition and Events as NPD would.
pub struct Reporter {
    node: String,
    heartbeat: Duration,
    shown: Option<Judgement>,
    /// A state differing from the one shown, and how many cycles running it was seen.
    pending: Option<(Judgement, u32)>,
    written: Option<Written>,
    retry_at: Option<Instant>,
    backoff: crate::time::Backoff,
    sent: Vec<Sent>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Status or reason changed (an Event went with it, except for the first healthy write).
    Change,
    /// The same state again, its heartbeat refreshed.
    Heartbeat,
}

impl Reporter {
    pub fn new(node: &str, heartbeat: Duration) -> Self {
        Self {
            node: node.to_string(),
            heartbeat,
            shown: None,
            pending: None,
            written: None,
            retry_at: None,
            backoff: crate::time::Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            sent: Vec::new(),
        }
    }

    /// Folds one cycle's judgement in and returns the state shown: the first healthy one at
    /// once (the condition exists from the start), any other change once seen [`CONFIRM`]
    /// cycles running; the same state with a new message is that state, messages updated.
    pub fn observe(&mut self, j: Judgement) -> Option<&Judgement> {
        let same = |a: &Judgement, b: &Judgement| a.problem == b.problem && a.reason == b.reason;
        match &self.shown {
            None if !j.problem => {
                self.shown = Some(j);
                self.pending = None;
            }
            Some(shown) if same(shown, &j) => {
                self.shown = Some(j);
                self.pending = None;
            }
            _ => {
                let seen = match &self.pending {
                    Some((p, n)) if same(p, &j) => n + 1,
                    _ => 1,
                };
                if seen >= CONFIRM {
                    self.shown = Some(j);
                    self.pending = None;
                } else {
                    self.pending = Some((j, seen));
                }
            }
        }
        self.shown.as_ref()
    }

    /// The state shown, once there is one.
    pub fn shown(&self) -> Option<&Judgement> {
        self.shown.as_ref()
    }

    /// Whether the condition is to be written now: the shown state's status or reason differs
    /// from what was written, or the heartbeat is due; never while backing off.
    pub fn due(&self, now: Instant) -> Option<Wrote> {
        let shown = self.shown.as_ref()?;
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        match &self.written {
            Some(w) if w.problem == shown.problem && w.reason == shown.reason => {
                (now.duration_since(w.at) >= self.heartbeat).then_some(Wrote::Heartbeat)
            }
            _ => Some(Wrote::Change),
        }
    }

    /// Writes what [`Self::due`] says; on a change, the Event too. A failure backs off.
    pub async fn write(&mut self, client: &Client) -> Result<Option<Wrote>, WriteError> {
        let now = Instant::now();
        let Some(what) = self.due(now) else { return Ok(None) };
        let result = self.write_now(client, what, now).await;
        match &result {
            Ok(()) => {
                self.retry_at = None;
                self.backoff.reset();
            }
            Err(_) => self.failed(now),
        }
        result.map(|()| Some(what))
    }

    /// After a failed write: wait the backoff (doubling to 5 min, up to half again of jitter).
    pub fn failed(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff.wait());
    }

    async fn write_now(&mut self, client: &Client, what: Wrote, now: Instant) -> Result<(), WriteError> {
        let Some(j) = self.shown.clone() else { return Ok(()) };
        let stamp = Timestamp::now();
        let transition = match (&self.written, what) {
            (Some(w), Wrote::Heartbeat) => w.transition,
            _ => stamp,
        };
        let status = if j.problem { "True" } else { "False" };
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": CONDITION,
            "status": status,
            "reason": j.reason,
            "message": j.message,
            "lastHeartbeatTime": stamp.to_string(),
            "lastTransitionTime": transition.to_string(),
        }]}});
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .patch_status(&self.node, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|source| WriteError::Patch { node: self.node.clone(), source })?;
        let first = self.written.is_none();
        self.written = Some(Written { problem: j.problem, reason: j.reason.clone(), transition, at: now });
        // An Event on every change but the first healthy write (nothing changed for anyone).
        if what == Wrote::Change && (!first || j.problem) {
            self.event(client, &j, stamp, now).await?;
        }
        Ok(())
    }

    async fn event(
        &mut self,
        client: &Client,
        j: &Judgement,
        stamp: Timestamp,
        now: Instant,
    ) -> Result<(), WriteError> {
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        self.sent.retain(|s| now.duration_since(s.at) < EVENT_SERIES);
        let key = (j.problem, j.reason.clone());
        if let Some(sent) = self.sent.iter_mut().find(|s| s.key == key) {
            sent.count += 1;
            sent.at = now;
            let patch = serde_json::json!({
                "count": sent.count,
                "lastTimestamp": stamp.to_string(),
                "message": event_message(j),
            });
            let name = sent.name.clone();
            if let Err(source) = events.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                // Gone (the API server's event TTL) or refused: the next change sends a new one.
                self.sent.retain(|s| s.name != name);
                return Err(WriteError::EventUpdate { name, source });
            }
            return Ok(());
        }
        let created =
            events.create(&PostParams::default(), &event(&self.node, j, stamp)).await.map_err(WriteError::Event)?;
        if let Some(name) = created.metadata.name {
            self.sent.push(Sent { key, name, count: 1, at: now });
        }
        Ok(())
    }
}

fn event_message(j: &Judgement) -> String {
    format!("{}: {}", j.reason, j.message)
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
        message: Some(event_message(j)),
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
    use super::*;

    fn j(problem: bool, reason: &str, message: &str) -> Judgement {
        Judgement { problem, reason: reason.into(), message: message.into() }
    }

    #[test]
    fn a_change_shows_after_two_cycles_and_a_blip_never() {
        let mut r = Reporter::new("n1", HEARTBEAT);
        let healthy = j(false, "NetworkPathsHealthy", "ok");
        let broken = j(true, "OverlayBroken", "VXLAN overlay to 2 of 3");
        assert_eq!(r.observe(healthy.clone()), Some(&healthy), "the first healthy state at once");
        assert_eq!(r.due(Instant::now()), Some(Wrote::Change));
        // One failing cycle: still healthy.
        let reason = |r: &mut Reporter, j: &Judgement| r.observe(j.clone()).unwrap().reason.clone();
        assert_eq!(reason(&mut r, &broken), "NetworkPathsHealthy");
        assert_eq!(reason(&mut r, &healthy), "NetworkPathsHealthy");
        assert_eq!(reason(&mut r, &broken), "NetworkPathsHealthy");
        // The second one running shows it, with the latest message.
        let broken_more = j(true, "OverlayBroken", "VXLAN overlay to 3 of 3");
        assert_eq!(r.observe(broken_more.clone()), Some(&broken_more));
        // Another hop is another state: two cycles again.
        let mtu = j(true, "MtuBlackhole", "path MTU");
        assert_eq!(reason(&mut r, &mtu), "OverlayBroken");
        assert_eq!(reason(&mut r, &mtu), "MtuBlackhole");
        // Clearing takes two passing cycles too.
        assert!(r.observe(healthy.clone()).unwrap().problem);
        assert!(!r.observe(healthy).unwrap().problem);
    }

    #[test]
    fn a_first_problem_waits_for_its_confirmation() {
        let mut r = Reporter::new("n1", HEARTBEAT);
        r.observe(j(true, "OverlayBroken", "x"));
        assert!(r.shown().is_none());
        assert_eq!(r.due(Instant::now()), None, "nothing to write yet");
        r.observe(j(true, "OverlayBroken", "x"));
        assert_eq!(r.due(Instant::now()), Some(Wrote::Change));
    }

    #[test]
    fn heartbeats_and_backoff() {
        let mut r = Reporter::new("n1", Duration::from_mins(1));
        let t0 = Instant::now();
        r.observe(j(false, "NetworkPathsHealthy", "ok"));
        r.written = Some(Written {
            problem: false,
            reason: "NetworkPathsHealthy".into(),
            transition: Timestamp::UNIX_EPOCH,
            at: t0,
        });
        assert_eq!(r.due(t0 + Duration::from_secs(59)), None, "up to date");
        assert_eq!(r.due(t0 + Duration::from_mins(1)), Some(Wrote::Heartbeat));
        // A new message alone is no change.
        r.observe(j(false, "NetworkPathsHealthy", "other words"));
        assert_eq!(r.due(t0 + Duration::from_secs(1)), None);
        // A failed write (the heartbeat due at t1) waits 1 s (+ up to half of it), then 2 s ...
        let t1 = t0 + Duration::from_mins(1);
        r.failed(t1);
        assert_eq!(r.due(t1 + Duration::from_millis(900)), None, "backing off");
        assert_eq!(r.due(t1 + Duration::from_millis(1600)), Some(Wrote::Heartbeat));
        r.failed(t0);
        let wait = r.retry_at.unwrap().duration_since(t0);
        assert!(wait >= Duration::from_secs(2) && wait < Duration::from_secs(3), "{wait:?}");
    }

    #[test]
    fn events_name_the_node_and_the_change() {
        let j = j(true, "OverlayBroken", "VXLAN overlay to 1 of 1");
        let e = event("n1", &j, Timestamp::UNIX_EPOCH);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some(CONDITION));
        assert_eq!(e.involved_object.name.as_deref(), Some("n1"));
        assert_eq!(e.message.as_deref(), Some("OverlayBroken: VXLAN overlay to 1 of 1"));
        let ok = Judgement { problem: false, ..j };
        assert_eq!(event("n1", &ok, Timestamp::UNIX_EPOCH).reason.as_deref(), Some("NetworkPathRecovered"));
    }
}
