//! `netcheck agent`: the node check on an interval, as a DaemonSet runs it.
//!
//! Each cycle plans the node's checks with k peers chosen by rendezvous hashing ([`sampling`]),
//! runs them with capture attached and records the verdicts as metrics. Capture stays loaded
//! for the agent's life in `watched_only` mode: every drop, reset and ICMP error is counted in
//! the kernel by kind, device class and reason, and only the events of the agent's own probe
//! flows and of its peers' addresses reach userspace (a drop flood costs no wake-ups). Those
//! events are kept for a window and served at `/events`, so a one-shot `netcheck path` on
//! another node can ask what this node's kernel saw.
//!
//! Cycles start on a fixed grid (`interval`) plus a random delay of up to `jitter` of it, so
//! agents started together do not probe in lockstep; a cycle that overruns the next start
//! skips it and counts it as missed. SIGTERM or SIGINT stops probing, detaches the programs
//! (nothing is pinned) and exits 0.

pub mod auth;
mod condition;
pub mod events;
pub mod http;
mod metrics;
mod nodes;
mod quorum;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;

use crate::{
    capture::{self, Capture},
    error::AnyResult,
    jobs::{
        CertOptions,
        node_checks::{self, Sampling},
        sampling,
    },
    output::Document,
    verdict,
};

/// The agent's settings (see `netcheck agent --help`).
#[derive(Debug, Clone)]
pub struct Options {
    pub interval: Duration,
    /// Largest random delay added to a cycle's start, as a fraction of the interval.
    pub jitter: f64,
    pub listen: SocketAddr,
    /// Peers probed per cycle (k).
    pub peers: usize,
    /// How often the sample of peers changes.
    pub rotate: Duration,
    pub node_name: String,
    pub warn_days: u32,
    /// How long kernel events are kept for `/events`.
    pub window: Duration,
    /// Stop after this many cycles (tests and benchmarks).
    pub cycles: Option<u64>,
    pub timeout: Duration,
    pub no_capture: bool,
    pub vxlan_port: u16,
    pub host_root: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    /// Write the node condition and Events (when the API is reachable).
    pub node_condition: bool,
    /// Which endpoints need a token.
    pub access: auth::Access,
}

/// What the HTTP endpoints read.
pub(crate) struct Shared {
    node: String,
    metrics: metrics::Metrics,
    recent: Arc<Mutex<events::Recent>>,
    ready: AtomicBool,
    /// When the loop last started or finished a cycle.
    heartbeat: Mutex<Instant>,
    stale_after: Duration,
    last_report: Mutex<Option<String>>,
    capture: capture::Status,
    window: Duration,
    /// Who may read `/events` and `/report`.
    guard: auth::Guard,
}

impl Shared {
    /// Why the loop counts as stalled, if it does.
    fn stalled(&self) -> Option<String> {
        let since = self.heartbeat.lock().expect("heartbeat").elapsed();
        (since > self.stale_after).then(|| format!("no probe cycle for {}s", since.as_secs()))
    }
}

/// Runs the agent until SIGTERM/SIGINT (or `cycles`); the exit code is 0 unless it could not start.
pub fn run(opts: &Options) -> AnyResult<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Handlers first: a SIGTERM while capture loads still ends in an orderly exit 0.
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = runtime.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    // Bind first: a port in use is an environment error (exit 2) before anything loads.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(opts.listen))
        .map_err(|e| format!("listen on {}: {e}", opts.listen))?;
    let capture = if opts.no_capture {
        Err(capture::Unavailable {
            missing: Vec::new(),
            detail: "disabled by --no-capture".into(),
            kernel: None,
            hooks: Vec::new(),
        })
    } else {
        Capture::start(capture::Options { vxlan_port: opts.vxlan_port, watched_only: true, snat_candidates: false })
            .map(Arc::new)
    };
    let (capture, status) = match capture {
        Ok(c) => {
            let s = c.status();
            (Some(c), s)
        }
        Err(u) => {
            tracing::warn!("capture unavailable: {}", u.detail);
            (None, capture::Status::unavailable(&u))
        }
    };
    let recent = Arc::new(Mutex::new(events::Recent::new(opts.window)));
    let collector = match &capture {
        Some(c) => Some(events::collect(c.subscribe(), recent.clone())?),
        None => None,
    };
    // One API client for the agent's life: the nodes, the condition, the token reviews.
    let (client, no_client) = match runtime.block_on(crate::discovery::api::watching_client(
        opts.kubeconfig.as_deref(),
        &opts.host_root,
        opts.timeout,
    )) {
        Ok(c) => (Some(c), String::new()),
        Err(e) => {
            tracing::info!("no Kubernetes API for the agent: {e}; peers come from the FDB alone");
            (None, e.to_string())
        }
    };
    let shared = Arc::new(Shared {
        node: opts.node_name.clone(),
        metrics: metrics::Metrics::new(capture.clone(), status.detail.clone()),
        recent,
        ready: AtomicBool::new(false),
        heartbeat: Mutex::new(Instant::now()),
        stale_after: opts.interval * 3 + opts.timeout * 2 + Duration::from_secs(10),
        last_report: Mutex::new(None),
        capture: status,
        window: opts.window,
        guard: auth::Guard::new(client.clone(), &no_client, opts.access),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    runtime.spawn(http::serve(listener, shared.clone(), stop_rx.clone()));
    tracing::info!(listen = %opts.listen, node = %opts.node_name, "agent started");
    let stopped_by = runtime.block_on(async {
        tokio::select! {
            signal = stop_signal(signals) => signal,
            () = probe_loop(opts, &shared, capture.clone(), stop_rx, (client, no_client)) => "cycles done",
        }
    });
    tracing::info!("agent stopping: {stopped_by}");
    let _ = stop_tx.send(true);
    // Probes in flight are dropped; one blocked in a system call is abandoned with its thread
    // (it may hold the capture: the programs then detach when the process exits, a moment
    // later, as they are never pinned).
    runtime.shutdown_timeout(Duration::from_millis(300));
    drop(shared);
    drop(capture);
    // The events thread ends with the capture; it is not waited for.
    drop(collector);
    Ok(0)
}

async fn stop_signal((mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal)) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Cycles on the interval grid with jitter until `cycles` are done (or forever).
async fn probe_loop(
    opts: &Options,
    shared: &Shared,
    capture: Option<Arc<Capture>>,
    stop: watch::Receiver<bool>,
    (client, no_client): (Option<kube::Client>, String),
) {
    let started = Instant::now();
    let mut tick = started;
    let mut done = 0u64;
    let mut reporter = opts.node_condition.then(|| condition::Reporter::new(&opts.node_name, condition::HEARTBEAT));
    // One API client for the agent's life; the nodes from one list and the sampled peers' watches.
    let mut directory = nodes::Directory::new(client, no_client, shared.metrics.api.clone());
    let mut fdb: Vec<Ipv4Addr> = Vec::new();
    let seed = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()) ^ d.as_secs());
    loop {
        let delay = jitter(opts.interval, opts.jitter, seed, done);
        tokio::time::sleep_until((tick + delay).into()).await;
        if *stop.borrow() {
            return;
        }
        *shared.heartbeat.lock().expect("heartbeat") = Instant::now();
        fdb = cycle(opts, shared, capture.clone(), reporter.as_mut(), &mut directory, &fdb).await;
        *shared.heartbeat.lock().expect("heartbeat") = Instant::now();
        shared.ready.store(true, Ordering::Relaxed);
        done += 1;
        if opts.cycles.is_some_and(|n| done >= n) {
            return;
        }
        tick += opts.interval;
        let mut missed = 0;
        while tick + opts.interval <= Instant::now() {
            tick += opts.interval;
            missed += 1;
        }
        if missed > 0 {
            tracing::warn!("probe cycle overran: {missed} start(s) skipped");
            shared.metrics.missed(missed);
        }
    }
}

/// A random delay in `[0, fraction × interval)`, different for every agent and cycle.
fn jitter(interval: Duration, fraction: f64, seed: u64, cycle: u64) -> Duration {
    let max = interval.mul_f64(fraction.clamp(0.0, 1.0));
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    let r = sampling::weight(&[&seed.to_le_bytes(), &cycle.to_le_bytes()]);
    Duration::from_nanos(r % nanos)
}

/// One probe cycle: plan with sampled peers, run, record. `fdb`: the peers' underlay addresses
/// the last cycle found (a new one makes the directory list the nodes again); returns this
/// cycle's.
async fn cycle(
    opts: &Options,
    shared: &Shared,
    capture: Option<Arc<Capture>>,
    reporter: Option<&mut condition::Reporter>,
    directory: &mut nodes::Directory,
    fdb: &[Ipv4Addr],
) -> Vec<Ipv4Addr> {
    let started = Instant::now();
    let now_secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sampling =
        Sampling { node: opts.node_name.clone(), k: opts.peers, epoch: now_secs / opts.rotate.as_secs().max(1) };
    let nodes = directory.nodes(fdb, opts.timeout).await;
    let api = node_checks::ApiNodes::Given {
        available: &nodes.available,
        unavailable: &nodes.unavailable,
        client: directory.client(),
    };
    let planned =
        node_checks::plan(&opts.host_root, opts.kubeconfig.as_deref(), opts.timeout, Some(&sampling), api).await;
    // The sampled peers the API knows are watched; the others are not.
    let followed: Vec<String> = planned
        .probed
        .iter()
        .filter(|p| nodes.available.iter().any(|n| n.name == p.name))
        .map(|p| p.name.clone())
        .collect();
    directory.follow(&followed);
    if let Some(c) = &capture {
        // Events about any known peer reach userspace (for /events), not only the sampled ones.
        let addresses: Vec<IpAddr> =
            planned.known.iter().flat_map(|p| [Some(p.underlay), p.vtep]).flatten().map(IpAddr::V4).collect();
        c.watch_addresses(&addresses);
    }
    let cert_options = CertOptions { warn_days: opts.warn_days, ..CertOptions::default() };
    let lost_before = capture.as_ref().map_or(0, |c| c.counters().lost);
    if let Some(c) = &capture {
        // The cycle's unwatched keys: the peers' addresses still without room, and the
        // probes' flows refused from now on.
        c.new_window();
    }
    let checks = crate::jobs::run_jobs(planned.jobs, &cert_options, opts.timeout, capture.clone(), false).await;
    let mut status = capture.as_ref().map_or_else(|| shared.capture.clone(), |c| c.status());
    // The report's losses are this cycle's: a loss hours ago does not make today's "no drop
    // seen" incomplete (the cumulative count is the capture metric's).
    status.lost = status.lost.saturating_sub(lost_before);
    let mut report = Document::new(checks, status);
    report.problems = verdict::problems::problems(&report.checks);
    let judgement = quorum::judge(&report.checks, &planned.probed);
    let mut snapshot =
        metrics::Snapshot::of(&report.checks, report.problems.len(), (planned.known.len(), planned.probed.len()));
    snapshot.peers_watched = i64::try_from(directory.followed()).unwrap_or(i64::MAX);
    snapshot.peers_skipped =
        nodes.skipped.iter().map(|(reason, n)| (*reason, i64::try_from(*n).unwrap_or(i64::MAX))).collect();
    match reporter {
        // The state shown (two cycles running confirm a change), and written as NPD would.
        Some(reporter) => {
            snapshot.path_problem = reporter.observe(judgement).map(|j| (j.problem, j.reason.clone()));
            write_condition(opts, reporter, directory).await;
        }
        None => snapshot.path_problem = Some((judgement.problem, judgement.reason.clone())),
    }
    shared.metrics.cycle(started.elapsed(), &report.checks, snapshot);
    *shared.last_report.lock().expect("last report") = Some(report.to_json());
    tracing::debug!(took = ?started.elapsed(), checks = report.checks.len(), problems = report.problems.len(), "cycle");
    planned.known.iter().map(|p| p.underlay).collect()
}

/// Writes the node condition when it is due (a change, or its heartbeat), within twice the
/// probe deadline.
async fn write_condition(opts: &Options, reporter: &mut condition::Reporter, directory: &nodes::Directory) {
    let Some(client) = directory.client() else {
        if reporter.due(Instant::now()).is_some() {
            tracing::warn!("node condition not written: no API client: {}", directory.no_client().unwrap_or_default());
            reporter.failed(Instant::now());
        }
        return;
    };
    match tokio::time::timeout(opts.timeout * 2, reporter.write(client)).await {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(wrote))) => {
            let shown = reporter.shown().map(|j| (j.problem, j.reason.clone())).unwrap_or_default();
            tracing::info!(problem = shown.0, reason = %shown.1, ?wrote, "node condition {} written", quorum::CONDITION);
        }
        Ok(Err(e)) => tracing::warn!("node condition not written: {e}"),
        Err(_) => {
            reporter.failed(Instant::now());
            tracing::warn!("node condition not written: the API did not answer in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound_and_varies() {
        let interval = Duration::from_secs(30);
        let delays: Vec<Duration> = (0..100).map(|c| jitter(interval, 0.2, 42, c)).collect();
        assert!(delays.iter().all(|d| *d < Duration::from_secs(6)));
        let mut unique = delays.clone();
        unique.sort();
        unique.dedup();
        assert!(unique.len() > 90, "delays repeat: {}", unique.len());
        assert_ne!(jitter(interval, 0.2, 1, 0), jitter(interval, 0.2, 2, 0), "agents differ");
        assert_eq!(jitter(interval, 0.0, 42, 3), Duration::ZERO);
    }
}
