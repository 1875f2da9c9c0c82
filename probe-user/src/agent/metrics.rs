//! The agent's metrics, OpenMetrics through prometheus-client. Cardinality is bounded by what
//! a node has, never by traffic: labels are the probe, the peer node (at most k at a time), the
//! status and cause codes, the certificate file, and for kernel events the kind, device class
//! and reason (enums of the running kernel). No flow, port or pod IP is ever a label.
//!
//! The last cycle's results are a snapshot encoded at scrape time (so a peer that rotates out
//! of the sample leaves no stale series); the kernel's aggregates are read from the eBPF map at
//! scrape time too.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{
    capture::{Aggregate, Capture, Counters},
    verdict::{Check, Data, Status},
};

/// What the last probe cycle found, as the gauges show it.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Checks by (probe, peer, status).
    pub checks: BTreeMap<(&'static str, String, &'static str), i64>,
    /// Failing or warning checks by (probe, peer, cause).
    pub failing: BTreeMap<(&'static str, String, &'static str), i64>,
    /// Path MTU by peer.
    pub mtu: BTreeMap<String, i64>,
    /// Seconds until each certificate expires (negative once expired), by file or endpoint.
    pub cert_expiry: BTreeMap<String, i64>,
    pub problems: i64,
    pub peers_known: i64,
    pub peers_probed: i64,
    /// Nodes the API lists that were not sampled, by why (`not_ready`, `unreachable`,
    /// `deleting`).
    pub peers_skipped: BTreeMap<&'static str, i64>,
    /// Sampled peers whose Node the agent watches.
    pub peers_watched: i64,
    /// Whether a quorum of the sampled peers fails at one hop, and the condition's reason.
    pub path_problem: Option<(bool, String)>,
}

/// Every reason a listed node is not probed ([`crate::discovery::nodes::NodeInfo::unavailable`]):
/// each always has a series, 0 when none.
const SKIP_REASONS: [&str; 3] = ["not_ready", "unreachable", "deleting"];

impl Snapshot {
    /// The gauges of one cycle's checks, labelled with the peer each is about (`Check::peer`).
    pub fn of(checks: &[Check], problems: usize, peers: (usize, usize)) -> Self {
        let mut s = Self {
            problems: count(problems),
            peers_known: count(peers.0),
            peers_probed: count(peers.1),
            ..Self::default()
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for c in checks {
            let peer = c.peer.clone().unwrap_or_default();
            *s.checks.entry((c.probe.as_str(), peer.clone(), status_name(c.status))).or_default() += 1;
            if matches!(c.status, Status::Fail | Status::Warn) {
                let cause = c.cause.map_or("unknown", crate::verdict::Cause::as_str);
                *s.failing.entry((c.probe.as_str(), peer.clone(), cause)).or_default() += 1;
            }
            match &c.data {
                Some(Data::Mtu(m)) => {
                    if let Some(mtu) = m.path_mtu {
                        s.mtu.insert(peer, i64::from(mtu));
                    }
                }
                Some(Data::Cert(cert)) => {
                    if let Ok(at) = humantime::parse_rfc3339_weak(&cert.not_after)
                        && let Ok(at) = at.duration_since(std::time::UNIX_EPOCH)
                    {
                        let left = i64::try_from(at.as_secs()).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0);
                        s.cert_expiry.insert(c.target.clone(), left);
                    }
                }
                _ => {}
            }
        }
        s
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
        Status::Skip => "skip",
    }
}

/// The registry and the handles the agent updates.
pub struct Metrics {
    registry: Registry,
    snapshot: Arc<Mutex<Snapshot>>,
    cycle_seconds: Histogram,
    probe_seconds: Family<[(&'static str, &'static str); 1], Histogram>,
    cycles: Counter,
    missed: Counter,
    pub api: ApiCounters,
}

/// The agent's requests about nodes, counted where they are made ([`super::nodes`]).
#[derive(Clone, Default)]
pub struct ApiCounters {
    /// Lists of every node, by result (`ok`, `error`).
    pub node_lists: Family<[(&'static str, &'static str); 1], Counter>,
    /// Errors of the sampled peers' watches (each followed by kube's backoff, then a list of
    /// that one node).
    pub node_watch_errors: Counter,
}

impl Metrics {
    pub fn new(capture: Option<Arc<Capture>>, capture_detail: Option<String>) -> Self {
        let mut registry = Registry::with_prefix("netcheck");
        let cycle_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 10));
        registry.register_with_unit(
            "probe_cycle_duration",
            "Time one probe cycle took (discovery, every probe, verdicts)",
            Unit::Seconds,
            cycle_seconds.clone(),
        );
        let probe_seconds = Family::<[(&'static str, &'static str); 1], Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 8))
        });
        registry.register_with_unit(
            "probe_duration",
            "Time each check took, by probe",
            Unit::Seconds,
            probe_seconds.clone(),
        );
        let cycles = Counter::default();
        registry.register("probe_cycles", "Probe cycles completed", cycles.clone());
        let missed = Counter::default();
        registry.register(
            "probe_cycles_missed",
            "Cycles skipped because the one before ran past their start",
            missed.clone(),
        );
        let api = ApiCounters::default();
        registry.register(
            "api_node_lists",
            "Lists of every node (at start, and when the FDB names a node the last list lacked), by result",
            api.node_lists.clone(),
        );
        registry.register(
            "api_node_watch_errors",
            "Errors of the watches on the sampled peers' Nodes",
            api.node_watch_errors.clone(),
        );
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
        registry.register_collector(Box::new(KernelCollector { capture, detail: capture_detail }));
        Self { registry, snapshot, cycle_seconds, probe_seconds, cycles, missed, api }
    }

    /// Records a finished cycle.
    pub fn cycle(&self, took: Duration, checks: &[Check], snapshot: Snapshot) {
        self.cycle_seconds.observe(took.as_secs_f64());
        for c in checks.iter().filter(|c| c.status != Status::Skip) {
            #[expect(clippy::cast_precision_loss, reason = "milliseconds of a probe fit an f64 exactly")]
            self.probe_seconds.get_or_create(&[("probe", c.probe.as_str())]).observe(c.duration_ms as f64 / 1000.0);
        }
        self.cycles.inc();
        *self.snapshot.lock().expect("metrics snapshot") = snapshot;
    }

    pub fn missed(&self, n: u64) {
        self.missed.inc_by(n);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition, for clients that do not ask
/// for OpenMetrics (curl, promtool, older scrapers): counters are named with `_total` in their
/// HELP and TYPE lines, and the UNIT and EOF lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if counters.contains(name) { "_total" } else { "" };
            let _ = writeln!(out, "{kind}{name}{suffix} {tail}");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Encodes a gauge family from `(labels, value)` pairs (nothing when empty).
fn gauges<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Resident pages (statm's second field, proc(5)) times the page size.
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    pages.checked_mul(page)
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().expect("metrics snapshot").clone();
        gauges(
            &mut encoder,
            "checks",
            "Checks of the last cycle by probe, peer node (empty: this node) and status (pass, warn, fail, skip)",
            None,
            s.checks
                .iter()
                .map(|((probe, peer, status), n)| ([("probe", *probe), ("peer", peer), ("status", status)], *n)),
        )?;
        gauges(
            &mut encoder,
            "check_failing",
            "Checks of the last cycle that failed or warned, by probe, peer node and cause code",
            None,
            s.failing
                .iter()
                .map(|((probe, peer, cause), n)| ([("probe", *probe), ("peer", peer), ("cause", cause)], *n)),
        )?;
        gauges(
            &mut encoder,
            "path_mtu",
            "Largest packet that crossed the overlay to the peer's VTEP (IP header included)",
            Some(&Unit::Bytes),
            s.mtu.iter().map(|(peer, v)| ([("peer", peer.as_str())], *v)),
        )?;
        gauges(
            &mut encoder,
            "cert_expiry",
            "Time until the certificate expires (negative: expired), by file or endpoint",
            Some(&Unit::Seconds),
            s.cert_expiry.iter().map(|(cert, v)| ([("cert", cert.as_str())], *v)),
        )?;
        if let Some(rss) = resident_bytes() {
            // No labels: encoded on the descriptor itself (a family would print `{}`).
            let metric = encoder.encode_descriptor(
                "agent_resident_memory",
                "The agent's resident memory (VmRSS, read from /proc/self/statm at scrape time)",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            ConstGauge::new(rss).encode(metric)?;
        }
        gauges(
            &mut encoder,
            "problems",
            "Distinct problems the last cycle found",
            None,
            [([("scope", "node")], s.problems)],
        )?;
        gauges(
            &mut encoder,
            "path_problem",
            "1 when a quorum of the sampled peers fails at one hop (the NetworkPathProblem condition), by reason",
            None,
            s.path_problem.iter().map(|(problem, reason)| ([("reason", reason.as_str())], i64::from(*problem))),
        )?;
        gauges(
            &mut encoder,
            "peers",
            "Peer nodes known (FDB and API), probed this cycle (the rendezvous sample) and watched in the API",
            None,
            [
                ([("set", "known")], s.peers_known),
                ([("set", "probed")], s.peers_probed),
                ([("set", "watched")], s.peers_watched),
            ],
        )?;
        gauges(
            &mut encoder,
            "peers_skipped",
            "Nodes the API lists that are not probed because they cannot answer, by reason",
            None,
            SKIP_REASONS.iter().map(|r| ([("reason", *r)], s.peers_skipped.get(r).copied().unwrap_or(0))),
        )
    }
}

struct KernelCollector {
    capture: Option<Arc<Capture>>,
    detail: Option<String>,
}

impl std::fmt::Debug for KernelCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCollector")
            .field("capture", &self.capture.is_some())
            .field("detail", &self.detail)
            .finish()
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = i64::from(self.capture.is_some());
        gauges(
            &mut encoder,
            "capture_up",
            "1 when the eBPF capture is attached; 0 with the reason it is not",
            None,
            [([("reason", self.detail.as_deref().unwrap_or(""))], up)],
        )?;
        let (counters, aggregates): (Counters, Vec<Aggregate>) =
            self.capture.as_ref().map(|c| (c.counters(), c.aggregates())).unwrap_or_default();
        let mut events = encoder.encode_descriptor(
            "kernel_events",
            "Packet drops, TCP resets and ICMP errors the kernel produced, counted in the kernel by kind, device class and reason",
            None,
            MetricType::Counter,
        )?;
        for a in &aggregates {
            let labels = [("kind", a.kind), ("device_class", a.device_class), ("reason", a.reason.as_str())];
            ConstCounter::new(a.count).encode(events.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "capture_lost_events",
                "Events the ring buffer had no room for (lost to userspace, still counted)",
                counters.lost,
            ),
            (
                "capture_sent_events",
                "Events sent to userspace (the probes' own flows and the peers' addresses)",
                counters.sent,
            ),
            (
                "capture_filtered_events",
                "Events kept in the kernel's counters only (not about a probe or peer)",
                counters.filtered,
            ),
            (
                "capture_unwatched_keys",
                "Probe flows and peer addresses the capture filter had no room for (their events stay in the kernel's counters)",
                self.capture.as_ref().map_or(0, |c| c.refused_keys()),
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Cause, Probe, Verdict};

    /// A check as the planner makes it: the ones to 192.168.50.12 are about peer n2.
    fn check(probe: Probe, target: &str, status: Status, cause: Option<Cause>) -> Check {
        let peer = target.starts_with("192.168.50.12").then(|| "n2".to_string());
        let verdict = Verdict::new(status, cause, "");
        Check { peer, ..Check::probed(probe, target.into(), verdict, Duration::from_millis(12), Vec::new()) }
    }

    fn series_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn exposition_is_openmetrics_with_bounded_labels() {
        let m = Metrics::new(None, Some("disabled".into()));
        let checks = vec![
            check(Probe::Vxlan, "192.168.50.12:8472", Status::Fail, Some(Cause::VxlanNoReply)),
            check(Probe::Kubelet, "192.168.50.12:10250", Status::Pass, None),
            check(Probe::Dns, "kubernetes.default", Status::Pass, None),
        ];
        m.cycle(Duration::from_millis(300), &checks, Snapshot::of(&checks, 1, (3, 2)));
        m.missed(1);
        let text = m.encode();
        for line in [
            r#"netcheck_checks{probe="vxlan",peer="n2",status="fail"} 1"#,
            r#"netcheck_checks{probe="dns",peer="",status="pass"} 1"#,
            r#"netcheck_check_failing{probe="vxlan",peer="n2",cause="vxlan_no_reply"} 1"#,
            r#"netcheck_peers{set="probed"} 2"#,
            "netcheck_probe_cycles_total 1",
            "netcheck_probe_cycles_missed_total 1",
            r#"netcheck_capture_up{reason="disabled"} 0"#,
            "# TYPE netcheck_probe_cycle_duration_seconds histogram",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // This process's resident memory, as /proc/self/statm says it.
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("netcheck_agent_resident_memory_bytes "))
            .unwrap_or_else(|| panic!("no RSS in\n{text}"));
        assert!(rss.parse::<i64>().unwrap() > 1 << 20, "{rss}");
        let classic = to_prometheus_text(&text);
        assert!(classic.contains("# HELP netcheck_probe_cycles_total Probe cycles completed."), "{classic}");
        assert!(classic.contains("# TYPE netcheck_probe_cycles_total counter"));
        assert!(classic.contains("# TYPE netcheck_checks gauge"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        assert_eq!(series_lines(&classic), series_lines(&text), "the same samples");
        // A second cycle replaces the first's gauges: a peer no longer probed leaves no series.
        let checks = vec![check(Probe::Dns, "kubernetes.default", Status::Pass, None)];
        m.cycle(Duration::from_millis(300), &checks, Snapshot::of(&checks, 0, (3, 0)));
        let text = m.encode();
        assert!(!text.contains(r#"peer="n2""#), "{text}");
    }
}
