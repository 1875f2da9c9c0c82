//! The agent's view of the cluster's nodes, at a cost to the API server that does not grow with
//! the cluster: one client for the agent's life, one paginated list of every node at start,
//! and then a watch on each *sampled* peer only (field selector `metadata.name`).
//!
//! Why not a watch on every node: each kubelet rewrites its Node's status at least every
//! `nodeStatusReportFrequency` (5 min by default) even when nothing changed, and every write
//! reaches every watcher of all Nodes as a full object (tens of KB). At 5,000 nodes that is
//! ~17 objects a second into every agent, N² across the cluster. Watching the k sampled peers
//! costs k watches, whatever N is.
//!
//! The list is taken again only when the VXLAN FDB (the kernel's own list of peers, which
//! flannel keeps for every node) names an underlay address the list did not have: a node
//! joined. At most once per [`RELIST_EVERY`]; failed lists are retried with a doubling,
//! jittered backoff.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;

use super::metrics::ApiCounters;
use crate::discovery::{
    self,
    nodes::{NodeInfo, SlimNode},
};

/// The shortest time between two lists of every node after the first.
pub const RELIST_EVERY: Duration = Duration::from_mins(10);
/// How long one list of every node may take (5,000 nodes: 50 pages).
const LIST_DEADLINE: Duration = Duration::from_mins(1);
/// Backoff after a failed list: from 1 s, doubling, at most 5 min.
const BACKOFF_MAX: Duration = Duration::from_mins(5);

/// What the API said of the nodes so far.
#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<String, NodeInfo>,
}

/// The nodes as the agent knows them, and the watches that keep the sampled ones current.
pub struct Directory {
    client: Option<Client>,
    /// Why there is no client (no kubeconfig, no service account).
    no_client: Option<String>,
    state: Arc<Mutex<State>>,
    listing: Option<JoinHandle<Result<Vec<NodeInfo>, String>>>,
    listed: Option<Instant>,
    retry_at: Instant,
    backoff: crate::time::Backoff,
    counters: ApiCounters,
    watches: BTreeMap<String, JoinHandle<()>>,
}

/// The nodes for one cycle.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    /// Nodes that can answer a probe.
    pub available: Vec<NodeInfo>,
    /// The overlay addresses of the nodes that cannot (left out of the FDB's peers too).
    pub unavailable: Vec<Ipv4Addr>,
    /// Nodes left out, by reason (`not_ready`, `unreachable`, `deleting`).
    pub skipped: BTreeMap<&'static str, usize>,
}

impl Directory {
    /// With the agent's one client (`None`, and why, when the API cannot be reached from here).
    pub fn new(client: Option<Client>, no_client: String, counters: ApiCounters) -> Self {
        Self {
            no_client: client.is_none().then_some(no_client),
            client,
            state: Arc::default(),
            listing: None,
            listed: None,
            retry_at: Instant::now(),
            backoff: crate::time::Backoff::new(Duration::from_secs(1), BACKOFF_MAX),
            counters,
            watches: BTreeMap::new(),
        }
    }

    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// Why the agent has no API client, if it has none.
    pub fn no_client(&self) -> Option<&str> {
        self.no_client.as_deref()
    }

    /// The nodes for a cycle. Starts a list when none was made yet, or when `fdb` (the
    /// underlays the kernel knows) names one the list lacks and the last list is
    /// [`RELIST_EVERY`] old; a list under way is waited for up to `wait` (the first cycle
    /// waits, so its peers have names).
    pub async fn nodes(&mut self, fdb: &[Ipv4Addr], wait: Duration) -> Nodes {
        self.collect_list(Duration::ZERO).await;
        // Whether the FDB names an address the list lacks: looked at only when a list could be
        // due (one set of the list's addresses, not a scan of it per FDB entry).
        let now = Instant::now();
        let unknown = self.listed.is_some_and(|at| now.duration_since(at) >= RELIST_EVERY) && {
            let state = self.state.lock().expect("node directory");
            let known: std::collections::HashSet<IpAddr> =
                state.nodes.values().filter_map(NodeInfo::overlay_peer).collect();
            fdb.iter().any(|ip| !known.contains(&IpAddr::V4(*ip)))
        };
        if list_due(self.listed, self.retry_at, unknown, now) && self.listing.is_none() {
            self.start_list();
        }
        if self.listed.is_none() {
            self.collect_list(wait).await;
        }
        self.snapshot()
    }

    fn start_list(&mut self) {
        let Some(client) = self.client.clone() else { return };
        self.listing = Some(tokio::spawn(async move {
            match tokio::time::timeout(LIST_DEADLINE, discovery::nodes::list(client)).await {
                Ok(Ok((nodes, _))) => Ok(nodes),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("listing nodes: no answer in {} s", LIST_DEADLINE.as_secs())),
            }
        }));
    }

    /// Takes a finished list (waiting up to `wait` for one under way).
    async fn collect_list(&mut self, wait: Duration) {
        let Some(handle) = self.listing.as_mut() else { return };
        let joined = if handle.is_finished() {
            handle.await
        } else if wait.is_zero() {
            return;
        } else {
            match tokio::time::timeout(wait, handle).await {
                Ok(joined) => joined,
                Err(_) => return,
            }
        };
        self.listing = None;
        match joined {
            Ok(Ok(nodes)) => {
                let mut state = self.state.lock().expect("node directory");
                // The watched peers' entries are as current as the list's: both replace.
                state.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
                self.listed = Some(Instant::now());
                self.backoff.reset();
                self.counters.node_lists.get_or_create(&[("result", "ok")]).inc();
                tracing::debug!(nodes = state.nodes.len(), "nodes listed");
            }
            Ok(Err(e)) => self.list_failed(&e),
            Err(e) => self.list_failed(&format!("listing nodes: {e}")),
        }
    }

    fn list_failed(&mut self, why: &str) {
        self.counters.node_lists.get_or_create(&[("result", "error")]).inc();
        let wait = self.backoff.wait();
        self.retry_at = Instant::now() + wait;
        tracing::warn!("nodes not listed: {why}; again in {wait:?}");
    }

    fn snapshot(&self) -> Nodes {
        let state = self.state.lock().expect("node directory");
        let mut out = Nodes::default();
        for node in state.nodes.values() {
            match node.unavailable() {
                None => out.available.push(node.clone()),
                Some(reason) => {
                    *out.skipped.entry(reason).or_default() += 1;
                    if let Some(IpAddr::V4(ip)) = node.overlay_peer() {
                        out.unavailable.push(ip);
                    }
                }
            }
        }
        out
    }

    /// Keeps a watch on each of `names` (the sampled peers the API knows), and on no other.
    pub fn follow(&mut self, names: &[String]) {
        self.watches.retain(|name, task| {
            let keep = names.contains(name) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let Some(client) = self.client.clone() else { return };
        for name in names {
            if !self.watches.contains_key(name) {
                let errors = self.counters.node_watch_errors.clone();
                let task = tokio::spawn(watch_one(client.clone(), name.clone(), self.state.clone(), errors));
                self.watches.insert(name.clone(), task);
            }
        }
    }

    /// How many peers are watched now.
    pub fn followed(&self) -> usize {
        self.watches.len()
    }
}

/// Whether to list every node now: never listed (and the backoff over), or the FDB names an
/// address the list lacks, the list is [`RELIST_EVERY`] old and the backoff over.
fn list_due(listed: Option<Instant>, retry_at: Instant, unknown: bool, now: Instant) -> bool {
    now >= retry_at && listed.is_none_or(|at| unknown && now.duration_since(at) >= RELIST_EVERY)
}

impl Drop for Directory {
    fn drop(&mut self) {
        for task in self.watches.values() {
            task.abort();
        }
        if let Some(listing) = &self.listing {
            listing.abort();
        }
    }
}

/// Keeps `name`'s entry current from a watch on that one node (kube's watcher: a list of it,
/// then a watch from that resourceVersion; on 410 or an error, listed again after kube's
/// default backoff, 0.8 s doubling to 30 s, jittered).
async fn watch_one(client: Client, name: String, state: Arc<Mutex<State>>, errors: Counter) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(Api::<SlimNode>::all(client), config).default_backoff().boxed();
    let mut seen = false;
    while let Some(event) = events.next().await {
        let mut state = state.lock().expect("node directory");
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::InitApply(node) | watcher::Event::Apply(node)) => {
                seen = true;
                state.nodes.insert(name.clone(), NodeInfo::from(&node));
            }
            Ok(watcher::Event::Delete(_)) => {
                state.nodes.remove(&name);
            }
            // Listed again and not there: deleted while the watch was down.
            Ok(watcher::Event::InitDone) => {
                if !seen {
                    state.nodes.remove(&name);
                }
            }
            Err(e) => {
                errors.inc();
                tracing::debug!("watch of node {name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_again_only_for_a_new_address_and_not_often() {
        let t0 = Instant::now();
        let later = t0 + RELIST_EVERY;
        assert!(list_due(None, t0, false, t0), "never listed");
        assert!(!list_due(None, t0 + Duration::from_secs(4), false, t0), "backing off");
        assert!(!list_due(Some(t0), t0, false, later), "nothing new in the FDB");
        assert!(!list_due(Some(t0), t0, true, t0 + Duration::from_secs(599)), "new, but listed under 10 min ago");
        assert!(list_due(Some(t0), t0, true, later));
    }

    #[test]
    fn failed_lists_back_off_doubling_to_five_minutes() {
        let mut d = Directory::new(None, "no kubeconfig".into(), ApiCounters::default());
        assert!(d.client().is_none() && d.no_client().is_some());
        let mut waits = Vec::new();
        for _ in 0..12 {
            let before = Instant::now();
            d.list_failed("refused");
            waits.push(d.retry_at.duration_since(before));
        }
        // 1 s, 2 s, 4 s ... each with up to half again of jitter, then 5 min at most (+ jitter).
        assert!(waits[0] >= Duration::from_secs(1) && waits[0] < Duration::from_millis(1600), "{waits:?}");
        assert!(waits[3] >= Duration::from_secs(8) && waits[3] < Duration::from_secs(13), "{waits:?}");
        assert!(waits[11] >= BACKOFF_MAX && waits[11] < BACKOFF_MAX * 3 / 2, "{waits:?}");
        assert_eq!(d.counters.node_lists.get_or_create(&[("result", "error")]).get(), 12);
    }
}
