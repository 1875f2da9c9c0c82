//! Verdicts: a probe's outcome and the kernel's evidence for its flow, turned into a status, a
//! cause code and one line a person reads.

pub mod cert;
pub mod cni;
pub mod dns;
pub mod kubelet;
pub mod mtu;
pub mod path;
pub mod prerequisites;
pub mod problems;
pub mod service;
mod tcp;
pub mod vxlan;

use std::fmt::Write as _;

use serde::Serialize;

pub use self::tcp::tcp_verdict;
use crate::capture::event::{EventKind, KernelEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// How a verdict says the kernel showed no drop for its flow. When the capture lost events in the
/// same run, the report adds that the evidence is incomplete ([`evidence_incomplete`]).
pub const NO_DROP_SEEN: &str = "no drop seen on this machine";

/// `NO_DROP_SEEN` in a detail, qualified: `lost` kernel events did not reach netcheck (ring
/// buffer full) and `unwatched` flows or addresses were left out of the capture filter (its map
/// full), so a drop may have happened unseen.
pub fn evidence_incomplete(detail: &str, lost: u64, unwatched: u64) -> String {
    let mut why = Vec::new();
    if lost > 0 {
        why.push(format!("{lost} kernel events lost, the ring buffer was full"));
    }
    if unwatched > 0 {
        why.push(format!("{unwatched} flows or addresses not watched, the capture filter was full"));
    }
    if why.is_empty() {
        return detail.to_string();
    }
    detail.replace(NO_DROP_SEEN, &format!("{NO_DROP_SEEN}; evidence incomplete: {}", why.join("; ")))
}

/// What a check ran: its `probe` in JSON and the `probe` label of the agent's metrics, both
/// spelled by [`Probe::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    Tcp,
    Dns,
    Mtu,
    Vxlan,
    Cert,
    Kubelet,
    /// `node`'s reading of the kubelet's configuration (its flags, files and drop-ins).
    KubeletConfig,
    KubeletHealthz,
    Apiserver,
    Cni,
    /// `node`'s VXLAN devices (a skipped check when they cannot be read).
    Overlay,
    Path,
    /// An echo of `path` (to the destination when it has no port).
    Icmp,
    /// `path`'s echo to the pod's gateway.
    Gateway,
    /// `path`'s MTU probe of the underlay, node to peer node.
    UnderlayMtu,
    /// `path`'s TCP probe from the node's own namespace.
    FromNode,
    /// `node`'s kernel settings: forwarding, bridge netfilter, the reverse-path filter.
    Sysctl,
    /// `node`'s conntrack table.
    Conntrack,
    /// `node`'s iptables rules (both backends); `check service`'s kube-proxy rules for a port.
    Iptables,
    /// `check service`: the Service in the API, and its IP probed through kube-proxy's DNAT.
    Service,
    /// `check service`: kube-proxy's health and mode.
    KubeProxy,
    /// `check service`: one endpoint probed directly.
    Endpoint,
    /// `check service`: a NodePort on one node.
    NodePort,
}

impl Probe {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Dns => "dns",
            Self::Mtu => "mtu",
            Self::Vxlan => "vxlan",
            Self::Cert => "cert",
            Self::Kubelet => "kubelet",
            Self::KubeletConfig => "kubelet-config",
            Self::KubeletHealthz => "kubelet-healthz",
            Self::Apiserver => "apiserver",
            Self::Cni => "cni",
            Self::Overlay => "overlay",
            Self::Path => "path",
            Self::Icmp => "icmp",
            Self::Gateway => "gateway",
            Self::UnderlayMtu => "underlay-mtu",
            Self::FromNode => "from-node",
            Self::Sysctl => "sysctl",
            Self::Conntrack => "conntrack",
            Self::Iptables => "iptables",
            Self::Service => "service",
            Self::KubeProxy => "kube-proxy",
            Self::Endpoint => "endpoint",
            Self::NodePort => "nodeport",
        }
    }
}

impl Serialize for Probe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check concluded: its status, the cause code and the line a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub cause: Option<Cause>,
    pub detail: String,
}

impl Verdict {
    pub fn new(status: Status, cause: Option<Cause>, detail: impl Into<String>) -> Self {
        Self { status, cause, detail: detail.into() }
    }

    pub fn pass(detail: impl Into<String>) -> Self {
        Self::new(Status::Pass, None, detail)
    }

    /// Not judged (nothing to check, or the probe could not run here), with why.
    pub fn skip(detail: impl Into<String>) -> Self {
        Self::new(Status::Skip, None, detail)
    }

    pub fn warn(cause: Cause, detail: impl Into<String>) -> Self {
        Self::new(Status::Warn, Some(cause), detail)
    }

    pub fn fail(cause: Cause, detail: impl Into<String>) -> Self {
        Self::new(Status::Fail, Some(cause), detail)
    }
}

/// Cause codes (stable: scripts match on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The peer (or something on the way) answered with a TCP RST.
    Refused,
    /// No answer within the deadline and no kernel evidence of why.
    Timeout,
    /// An ICMP destination-unreachable came back (incl. host/admin prohibited).
    Unreachable,
    /// No route from the probing namespace.
    NoRoute,
    /// The kernel says netfilter dropped the probe's packets.
    NetfilterDrop,
    /// The kernel dropped the probe's packets for another reason (named in the evidence).
    KernelDrop,
    /// The target's name did not resolve.
    DnsError,
    /// The probe could not run (e.g. a socket error).
    ProbeError,
    /// The certificate's notAfter has passed.
    CertExpired,
    /// The certificate expires within the warning window (`--warn-days`).
    CertExpiring,
    /// The certificate's notBefore is still ahead.
    CertNotYetValid,
    /// The chain does not lead to the given CA.
    CertUntrusted,
    /// The certificate is not valid for the name or IP dialled.
    CertNameMismatch,
    /// The TLS handshake failed before a certificate could be judged.
    TlsHandshake,
    /// A certificate a file names could not be read (missing file, bad base64 or PEM).
    CertUnreadable,
    /// The kubelet answered its health check with something other than `200 ok`.
    KubeletUnhealthy,
    /// The name does not exist (every expansion of the search list answered NXDOMAIN).
    Nxdomain,
    /// The name exists but has no record of the type asked.
    Nodata,
    /// The DNS server answered SERVFAIL (e.g. CoreDNS could not reach its upstream).
    Servfail,
    /// No DNS answer within the deadline and no kernel evidence of why.
    DnsTimeout,
    /// Some queries or endpoints answer and some do not: lookups fail intermittently.
    Partial,
    /// Packets above a size vanish without an ICMP fragmentation-needed (a path MTU black hole).
    MtuBlackhole,
    /// The path MTU is smaller than the interface or CNI MTU assumes (signalled correctly).
    MtuMismatch,
    /// An encapsulated echo to the peer's VTEP got no reply.
    VxlanNoReply,
    /// The local VXLAN device cannot carry traffic to the peer (no FDB or neighbour entry,
    /// wrong VNI or port, device down).
    VxlanMisconfigured,
    /// The node's CNI setup cannot give pods a network (no configuration, a plugin binary
    /// missing, flannel's subnet.env missing, the bridge holding another subnet's address).
    CniMisconfigured,
    /// A configuration file the kubelet reads (its `--config`, a drop-in, kubeadm's
    /// config.yaml) is unreadable, not a regular file or not a KubeletConfiguration.
    KubeletMisconfigured,
    /// `net.ipv4.ip_forward` is not 1: the node does not forward its pods' packets.
    IpForwardOff,
    /// Pods sit on a bridge and br_netfilter is not loaded or `bridge-nf-call-iptables` is 0.
    BridgeNetfilterOff,
    /// IPVS holds virtual servers (kube-proxy's IPVS mode) and `net.ipv4.vs.conntrack` is 0:
    /// netfilter does not track what IPVS NATs, so kube-proxy's masquerade never applies.
    IpvsConntrackOff,
    /// The reverse-path filter drops packets the node receives from its pods or peers.
    RpFilterDrop,
    /// The conntrack table is full (fail) or nearly full (warn).
    ConntrackFull,
    /// A FORWARD chain's policy is DROP and no rule accepts the node's pods.
    ForwardDrop,
    /// Both iptables backends hold rules.
    IptablesMixed,
    /// The API has no such Service, or the Service no such port.
    ServiceNotFound,
    /// The Service has no ready endpoint in its EndpointSlices.
    ServiceNoEndpoints,
    /// kube-proxy has not programmed the Service on this node: its rules are missing, or they
    /// DNAT to addresses that are not the Service's ready endpoints.
    ServiceNotProgrammed,
    /// kube-proxy's `/healthz` does not answer healthy.
    KubeProxyUnhealthy,
    /// Probes DNATed to an endpoint failed, or the endpoint probed directly did.
    EndpointFailed,
    /// A UDP conntrack entry for the Service IP points at an address that is no longer an endpoint.
    StaleConntrack,
    /// A node's NodePort does not answer although it should (any node under
    /// `externalTrafficPolicy: Cluster`, a node with an endpoint under `Local`, this node always).
    NodePortFailed,
    /// Not a failure: under `externalTrafficPolicy: Local` a node without a ready endpoint of its
    /// own drops its NodePort for clients elsewhere, by design.
    NoLocalEndpoint,
    /// netcheck itself failed while checking (a crash in the check): a failure, never a gap.
    InternalError,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::NoRoute => "no_route",
            Self::NetfilterDrop => "netfilter_drop",
            Self::KernelDrop => "kernel_drop",
            Self::DnsError => "dns_error",
            Self::ProbeError => "probe_error",
            Self::CertExpired => "cert_expired",
            Self::CertExpiring => "cert_expiring",
            Self::CertNotYetValid => "cert_not_yet_valid",
            Self::CertUntrusted => "cert_untrusted",
            Self::CertNameMismatch => "cert_name_mismatch",
            Self::TlsHandshake => "tls_handshake",
            Self::CertUnreadable => "cert_unreadable",
            Self::KubeletUnhealthy => "kubelet_unhealthy",
            Self::Nxdomain => "nxdomain",
            Self::Nodata => "nodata",
            Self::Servfail => "servfail",
            Self::DnsTimeout => "dns_timeout",
            Self::Partial => "partial",
            Self::MtuBlackhole => "mtu_blackhole",
            Self::MtuMismatch => "mtu_mismatch",
            Self::VxlanNoReply => "vxlan_no_reply",
            Self::VxlanMisconfigured => "vxlan_misconfigured",
            Self::CniMisconfigured => "cni_misconfigured",
            Self::KubeletMisconfigured => "kubelet_misconfigured",
            Self::IpForwardOff => "ip_forward_off",
            Self::BridgeNetfilterOff => "bridge_netfilter_off",
            Self::IpvsConntrackOff => "ipvs_conntrack_off",
            Self::RpFilterDrop => "rp_filter_drop",
            Self::ConntrackFull => "conntrack_full",
            Self::ForwardDrop => "forward_drop",
            Self::IptablesMixed => "iptables_mixed",
            Self::ServiceNotFound => "service_not_found",
            Self::ServiceNoEndpoints => "service_no_endpoints",
            Self::ServiceNotProgrammed => "service_not_programmed",
            Self::KubeProxyUnhealthy => "kube_proxy_unhealthy",
            Self::EndpointFailed => "endpoint_failed",
            Self::StaleConntrack => "stale_conntrack",
            Self::NodePortFailed => "node_port_failed",
            Self::NoLocalEndpoint => "no_local_endpoint",
            Self::InternalError => "internal_error",
        }
    }
}

/// A kernel event attached to a check; identical events (e.g. a SYN and its retransmissions
/// dropped by the same rule) are folded into one with a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    #[serde(flatten)]
    pub event: KernelEvent,
    pub count: u32,
}

impl Evidence {
    /// Folds identical events, keeping the order they first happened in.
    pub fn fold(events: Vec<KernelEvent>) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for ev in events {
            if let Some(e) = out.iter_mut().find(|e| same(&e.event, &ev)) {
                e.count += 1;
            } else {
                out.push(Self { event: ev, count: 1 });
            }
        }
        out
    }
}

/// Same event, for folding. For VXLAN packets the outer source port is ignored: Linux derives
/// it from the inner flow's hash, which TCP changes on every retransmission timeout, so the
/// retransmitted SYNs of one probe leave with different outer ports.
pub(crate) fn same(a: &KernelEvent, b: &KernelEvent) -> bool {
    let outer_same = match (&a.flow, &b.flow, &a.inner) {
        (Some(x), Some(y), Some(_)) => x.proto == y.proto && x.src.ip() == y.src.ip() && x.dst == y.dst,
        _ => a.flow == b.flow,
    };
    a.kind == b.kind
        && a.reason == b.reason
        && a.location == b.location
        && a.direction == b.direction
        && a.device == b.device
        && a.netns_inode == b.netns_inode
        && a.inner == b.inner
        && outer_same
}

/// A hop of a path (filled by `netcheck path`; other checks have none).
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// source, veth, bridge, routing, input, overlay, underlay, peer-underlay, peer-overlay,
    /// peer-bridge, destination.
    pub name: String,
    pub netns: Option<String>,
    pub device: Option<String>,
    pub status: Status,
    pub cause: Option<Cause>,
    /// Not visible from here (the peer's side): judged only by probes and evidence.
    pub inferred: bool,
    pub detail: String,
    pub evidence: Vec<Evidence>,
}

/// One check's result: the unit of the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub probe: Probe,
    pub target: String,
    pub status: Status,
    pub cause: Option<Cause>,
    pub detail: String,
    pub duration_ms: u64,
    pub evidence: Vec<Evidence>,
    pub hops: Vec<Hop>,
    /// What a probe measured beyond the verdict (e.g. `{"dns": {...}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    /// The peer node the check is about (its name), set by the job that probed it: the agent's
    /// `peer` label and quorum read it. Not in the JSON, whose `target` already names it.
    #[serde(skip)]
    pub peer: Option<String>,
}

/// Probe-specific results, keyed by probe in JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Data {
    Dns(dns::DnsData),
    Mtu(mtu::MtuData),
    Vxlan(vxlan::VxlanData),
    Path(path::PathData),
    Cert(cert::CertData),
    Service(service::ServiceData),
}

impl Check {
    /// A probe's check: its verdict, how long it took and what the kernel saw; no hops or data.
    pub fn probed(
        probe: Probe,
        target: String,
        Verdict { status, cause, detail }: Verdict,
        elapsed: std::time::Duration,
        evidence: Vec<Evidence>,
    ) -> Self {
        Self {
            probe,
            target,
            status,
            cause,
            detail,
            duration_ms: millis(elapsed),
            evidence,
            hops: Vec::new(),
            data: None,
            peer: None,
        }
    }

    /// A check that sent nothing (a file was read): no duration, evidence or hops.
    pub fn file(probe: Probe, target: String, verdict: Verdict) -> Self {
        Self::probed(probe, target, verdict, std::time::Duration::ZERO, Vec::new())
    }
}

/// Whole milliseconds, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Drops in the evidence, first the ones netfilter made.
pub(crate) fn drops(evidence: &[Evidence]) -> impl Iterator<Item = &Evidence> {
    evidence.iter().filter(|e| e.event.kind == EventKind::Drop)
}

/// "dropped by netfilter in netns n2 on flannel.1 (2 packets)" and the like.
pub(crate) fn describe_drop(e: &Evidence) -> String {
    let ev = &e.event;
    let mut s = match (ev.reason.as_deref(), ev.location_function()) {
        (Some("NETFILTER_DROP"), _) => "dropped by netfilter".to_string(),
        (Some(reason), _) => format!("dropped by the kernel ({reason})"),
        // A kernel that records no reason (before 5.17): where, and what that place drops for.
        (None, Some(function)) => match crate::capture::location::candidates(function) {
            Some(causes) => format!("dropped by the kernel in {function} (no reason recorded: {causes})"),
            None => format!("dropped by the kernel in {function} (no reason recorded)"),
        },
        (None, None) => "dropped by the kernel (no reason recorded)".to_string(),
    };
    let _ = write!(s, " in netns {}", ev.netns);
    if let Some(dev) = &ev.device {
        let _ = write!(s, " on {dev}");
    }
    if let (Some(outer), Some(_)) = (&ev.flow, &ev.inner) {
        let _ = write!(s, ", as VXLAN {} {} -> {}", outer.proto, outer.src, outer.dst);
    }
    if e.count > 1 {
        let _ = write!(s, " ({} packets)", e.count);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{Direction, EventKind};

    pub(crate) fn ev(kind: EventKind, reason: &str, netns: &str) -> KernelEvent {
        KernelEvent {
            kind,
            reason: Some(reason.to_string()),
            reason_note: None,
            location: None,
            direction: (kind != EventKind::Drop).then_some(Direction::Sent),
            icmp_type: None,
            icmp_code: None,
            device: Some("eth0".into()),
            netns: netns.into(),
            netns_inode: 1,
            flow: None,
            inner: None,
            ts_ns: 0,
            from_socket: false,
        }
    }

    #[test]
    fn identical_events_fold_with_a_count() {
        let a = ev(EventKind::Drop, "NETFILTER_DROP", "n2");
        let b = ev(EventKind::Rst, "NOT_SPECIFIED", "n2");
        let folded = Evidence::fold(vec![a.clone(), b, a.clone(), a]);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[0].count, 3);
        assert_eq!(folded[1].count, 1);
        let json = serde_json::to_value(&folded[0]).unwrap();
        assert_eq!(json["reason"], "NETFILTER_DROP");
        assert_eq!(json["count"], 3);
        assert_eq!(describe_drop(&folded[0]), "dropped by netfilter in netns n2 on eth0 (3 packets)");
    }

    #[test]
    fn vxlan_retransmissions_fold_despite_new_outer_ports() {
        use crate::capture::event::{FlowView, Proto};
        let flow = |s: &str, d: &str, proto| FlowView { proto, src: s.parse().unwrap(), dst: d.parse().unwrap() };
        let mut a = ev(EventKind::Drop, "NETFILTER_DROP", "n2");
        a.flow = Some(flow("192.168.50.11:39629", "192.168.50.12:8472", Proto::Udp));
        a.inner = Some(flow("10.244.1.2:38165", "10.244.2.2:8080", Proto::Tcp));
        let mut b = a.clone();
        b.flow = Some(flow("192.168.50.11:55421", "192.168.50.12:8472", Proto::Udp));
        assert_eq!(Evidence::fold(vec![a.clone(), b]).len(), 1);
        // Without an inner flow the ports are the flow's identity.
        a.inner = None;
        let mut c = a.clone();
        c.flow = Some(flow("192.168.50.11:1", "192.168.50.12:8472", Proto::Udp));
        assert_eq!(Evidence::fold(vec![a, c]).len(), 2);
    }
}
