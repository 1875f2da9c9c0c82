//! Per-hop path verdicts: the hops the path probe discovered ([`hops`]), each judged by the
//! node's tables, by the probes that cross it ([`judge`]) and by the kernel events placed on it
//! by namespace and device ([`evidence`]), then one line naming the first broken hop.

mod evidence;
mod hops;
mod judge;
mod service;

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use self::{
    evidence::{Fault, add_peer_events, hop_for_event, is_fault, judge_evidence},
    hops::{Draft, Kind, draft_hops},
    judge::judge_probes,
};
use super::{Cause, Check, Data, Evidence, Probe, Status, Verdict, mtu, tcp_verdict, vxlan};
use crate::{
    capture::event::EventKind,
    probes::{
        icmp::{self, Answer, EchoOutcome},
        path::{Final, Report, Source},
    },
};

/// `data.path` of the check's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct PathData {
    pub source_ip: Option<IpAddr>,
    /// The pods at both ends, when the API named them.
    pub source_pod: Option<crate::discovery::api::PodInfo>,
    pub destination_pod: Option<crate::discovery::api::PodInfo>,
    /// Why the API was not asked or did not answer (names are then missing, nothing else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_note: Option<String>,
    /// The peer node the overlay leads to, as its tables name it.
    pub peer: Option<PeerData>,
    /// Largest packet the source gets to the destination (its path MTU).
    pub path_mtu: Option<u16>,
    /// Largest packet the node gets to the peer's underlay address.
    pub underlay_mtu: Option<u16>,
    /// What the netcheck agent on the peer node was asked, and what it said (events it saw
    /// are in the peer hops' evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_agent: Option<String>,
    /// Every probe the path ran, with its own verdict.
    pub probes: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerData {
    /// The node's name from the API.
    pub node: Option<String>,
    pub vtep: std::net::Ipv4Addr,
    pub vtep_mac: String,
    pub underlay: std::net::Ipv4Addr,
}
/// The path's check (with hops) and the one-line verdict naming the first broken hop.
pub fn verdict(report: &Report, capture_on: bool, node_netns: &str) -> (Check, String) {
    let from = report.spec.label.clone();
    let dst = match report.spec.port {
        Some(p) => format!("{}:{p}", report.spec.dst),
        None => report.spec.dst.to_string(),
    };
    let nat = report.service.as_ref().map_or_else(Vec::new, |step| {
        let mut nat = vec![service::dnat_hop(report, step, Some(&node_netns.to_string()))];
        if report.endpoint_unknown() {
            nat.push(service::unknown_endpoint(step));
        }
        nat
    });
    let mut hops = draft_hops(report, &from, node_netns, nat);
    let probes = probe_checks(report, capture_on);

    // What the kernel saw, placed by namespace and device.
    let mut all_evidence = Vec::new();
    for check in probes.iter().filter(|c| matches!(c.probe, Probe::Tcp | Probe::Icmp | Probe::Vxlan)) {
        for e in &check.evidence {
            if e.event.kind == EventKind::Drop && !is_fault(&e.event) {
                continue;
            }
            let kind = hop_for_event(report, &hops, &e.event);
            if let Some(h) = hops.iter_mut().find(|h| h.kind == kind)
                && !h.hop.evidence.contains(e)
            {
                h.hop.evidence.push(e.clone());
            }
            if !all_evidence.contains(e) {
                all_evidence.push(e.clone());
            }
        }
    }
    let peer_agent = add_peer_events(report, &mut hops, &mut all_evidence);
    // A TCP probe refused with ICMP unreachable (EHOSTUNREACH): the kernel answered even when
    // it cannot trace the ICMP error it sent (no icmp_send before 6.10).
    let unreachable = probes.iter().any(|c| c.probe == Probe::Tcp && c.cause == Some(Cause::Unreachable));
    for h in &mut hops {
        if let Some(Fault { cause, what, flow }) = judge_evidence(&h.hop.evidence, unreachable) {
            // The kernel saw this hop: where it saw it is no longer inferred.
            if h.hop.inferred
                && let Some(ev) = h.hop.evidence.iter().find(|e| is_fault(&e.event))
            {
                h.hop.netns = Some(ev.event.netns.clone());
                h.hop.device.clone_from(&ev.event.device);
                h.hop.inferred = false;
            }
            let detail = format!("{what} on {}{flow}", h.location());
            h.judge(Verdict::fail(cause, detail));
        }
    }
    judge_probes(report, &probes, &mut hops);
    let first_broken = hops.iter().position(|h| h.hop.status == Status::Fail);
    let arrived = probes
        .iter()
        .find(|c| matches!(c.probe, Probe::Tcp | Probe::Icmp))
        .is_some_and(|c| matches!(c.status, Status::Pass | Status::Warn));
    for (i, h) in hops.iter_mut().enumerate() {
        match first_broken {
            Some(f) if i > f && !h.judged && !arrived => {
                h.hop.status = Status::Skip;
                h.hop.detail = "not reached: the path breaks before this hop".into();
            }
            _ => h.pass("traffic crossed it"),
        }
    }
    let line = summary_line(report, &hops, &probes, &from, &dst);
    let status = hops.iter().map(|h| h.hop.status).filter(|s| *s != Status::Skip).max().unwrap_or(Status::Pass);
    let cause = first_broken
        .and_then(|f| hops[f].hop.cause)
        .or_else(|| hops.iter().find(|h| h.hop.status == Status::Warn).and_then(|h| h.hop.cause));
    let data = PathData {
        source_ip: report.source_ip(),
        source_pod: report.names.source_pod.clone(),
        destination_pod: report.names.destination_pod.clone(),
        api_note: report.names.unavailable.clone(),
        peer: report.node.peer.as_ref().map(|p| PeerData {
            node: report.names.peer_node.clone(),
            vtep: p.vtep,
            vtep_mac: p.vtep_mac.clone(),
            underlay: p.underlay,
        }),
        path_mtu: measured(report.mtu.as_ref()),
        underlay_mtu: measured(report.underlay_mtu.as_ref()),
        peer_agent,
        probes,
    };
    let check = Check {
        hops: hops.into_iter().map(|h| h.hop).collect(),
        data: Some(Data::Path(data)),
        ..Check::probed(
            Probe::Path,
            format!("{from} -> {dst}"),
            Verdict::new(status, cause, line.clone()),
            report.elapsed,
            all_evidence,
        )
    };
    (check, line)
}
pub(super) fn measured(report: Option<&crate::probes::mtu::Report>) -> Option<u16> {
    match report?.outcome {
        crate::probes::mtu::Outcome::Measured { path_mtu, .. } => Some(path_mtu),
        _ => None,
    }
}
/// Each probe's own verdict, in a stable order.
fn probe_checks(report: &Report, capture_on: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    match &report.final_probe {
        Some(Final::Tcp(r)) => checks.push(tcp_verdict(r, capture_on)),
        Some(Final::Echo(e)) => checks.push(echo_verdict(e, capture_on)),
        None => {}
    }
    if let Some(g) = &report.gateway {
        checks.push(Check { probe: Probe::Gateway, ..echo_verdict(g, capture_on) });
    }
    if let Some(v) = &report.vxlan {
        checks.push(vxlan::verdict(v, capture_on));
    }
    if let Some(m) = &report.mtu {
        checks.push(mtu::verdict(m, capture_on));
    }
    if let Some(m) = &report.underlay_mtu {
        checks.push(Check { probe: Probe::UnderlayMtu, ..mtu::verdict(m, capture_on) });
    }
    if let Some(t) = &report.from_node {
        checks.push(Check { probe: Probe::FromNode, ..tcp_verdict(t, capture_on) });
    }
    checks
}

/// An ICMP echo's check.
pub fn echo_verdict(echo: &icmp::Echo, capture_on: bool) -> Check {
    let evidence = Evidence::fold(echo.events.clone());
    let unseen = if capture_on { super::NO_DROP_SEEN } else { "capture unavailable" };
    let verdict = match &echo.outcome {
        EchoOutcome::Answered { answer: Answer::Reply, rtt } => {
            Verdict::pass(format!("echo answered in {:.1} ms", rtt.as_secs_f64() * 1000.0))
        }
        EchoOutcome::Answered { answer: Answer::Unreachable { code, from }, .. } => {
            Verdict::fail(Cause::Unreachable, format!("ICMP destination unreachable (code {code}) from {from}"))
        }
        EchoOutcome::Answered { .. } => match judge_evidence(&evidence, false) {
            Some(Fault { cause, what, flow }) => Verdict::fail(cause, format!("no echo reply: {what}{flow}")),
            None => Verdict::fail(Cause::Timeout, format!("no echo reply ({unseen})")),
        },
        EchoOutcome::NoPrivilege(why) => Verdict::skip(format!("not sent: {why}")),
        EchoOutcome::NoRoute(e) => Verdict::fail(Cause::NoRoute, format!("no route: {e}")),
        EchoOutcome::Failed(e) => Verdict::fail(Cause::ProbeError, e.clone()),
    };
    Check::probed(Probe::Icmp, echo.dst.to_string(), verdict, echo.elapsed, evidence)
}
/// The one line: the first broken hop and why, or that the path is healthy.
fn summary_line(report: &Report, hops: &[Draft], probes: &[Check], from: &str, dst: &str) -> String {
    let Some(broken) = hops.iter().find(|h| h.hop.status == Status::Fail) else {
        let inferred = hops.iter().filter(|h| h.hop.inferred).count();
        let dnat = match report.service.as_ref().and_then(crate::probes::path::service::ServiceStep::endpoint) {
            Some(ep) => format!(" (DNATed to {ep})"),
            None => String::new(),
        };
        let mut line = format!("healthy: {from} -> {dst}{dnat} crosses {} hops ({inferred} inferred)", hops.len());
        if let Some(w) = hops.iter().find(|h| h.hop.status == Status::Warn) {
            let _ = write!(line, ", with a warning on {} ({}): {}", w.hop.name, w.location(), w.hop.detail);
        }
        return line;
    };
    let place = broken.location();
    let mut line = if place.is_empty() || broken.hop.detail.contains(&place) {
        format!("{}: {}", broken.hop.name, broken.hop.detail)
    } else {
        format!("{} ({place}): {}", broken.hop.name, broken.hop.detail)
    };
    if broken.kind == Kind::Input
        && let Some(node_probe) = probes.iter().find(|c| c.probe == Probe::FromNode)
    {
        let who = if report.spec.from == Source::Host { "this node" } else { "pods on this node" };
        if node_probe.status == Status::Pass {
            let _ = write!(line, ": {who} cannot reach {dst} while the node itself can");
        } else {
            let _ = write!(line, ": the node itself cannot reach {dst} either ({})", node_probe.detail);
        }
    }
    line
}
#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        time::Duration,
    };

    use super::*;
    use crate::{
        capture::event::{FlowView, KernelEvent, Proto},
        discovery::netlink::{Link, Route, RouteKind, VxlanDevice},
        probes::{
            Target,
            path::{NodeView, OverlayPeer, SourceView, Spec},
            tcp,
        },
    };

    const POD_NS: u64 = 10;
    const NODE_NS: u64 = 20;
    const PEER_NS: u32 = 30;
    const DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);

    fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            up: true,
            lower_up: true,
            mtu: Some(1450),
            ..Link::default()
        }
    }

    fn route(kind: RouteKind, oif: u32, gateway: Option<Ipv4Addr>) -> Route {
        Route { kind, oif: Some(oif), gateway: gateway.map(IpAddr::V4), source: Some(SRC.into()), table: 254 }
    }

    fn tcp_report(outcome: tcp::Outcome, events: Vec<KernelEvent>) -> tcp::Report {
        tcp::Report {
            target: Target { host: DST.to_string(), port: 8080 },
            local: Some(SocketAddr::new(SRC.into(), 40000)),
            remote: Some(SocketAddr::new(DST.into(), 8080)),
            outcome,
            elapsed: Duration::from_millis(5),
            events,
            icmp_unseen: None,
        }
    }

    /// Pod a on n1 to pod b on n2 over flannel.1, as the lab has it.
    fn pod_to_pod(final_probe: tcp::Report) -> Report {
        let mut eth0 = link(2, "eth0", Some("veth"));
        (eth0.peer_index, eth0.peer_netnsid) = (Some(7), Some(0));
        let mut veth = link(7, "vetha", Some("veth"));
        (veth.peer_index, veth.peer_netnsid, veth.master) = (Some(2), Some(1), Some(5));
        let overlay = VxlanDevice {
            name: "flannel.1".into(),
            index: 4,
            vni: Some(1),
            port: Some(8472),
            up: true,
            ..VxlanDevice::default()
        };
        Report {
            spec: Spec {
                from: Source::Netns("/run/netns/pod-a".into()),
                label: "pod-a".into(),
                dst: DST,
                port: Some(8080),
                api: None,
                peer_agent: None,
            },
            source: SourceView {
                inode: Some(POD_NS),
                route: Some(Ok(route(RouteKind::Unicast, 2, Some(Ipv4Addr::new(10, 244, 1, 1))))),
                link: Some(eth0),
            },
            node: NodeView {
                inode: Some(NODE_NS),
                veth: Some(veth),
                bridge: Some(link(5, "cni0", Some("bridge"))),
                route: Some(Ok(route(RouteKind::Unicast, 4, Some(Ipv4Addr::new(10, 244, 2, 0))))),
                route_link: Some(link(4, "flannel.1", Some("vxlan"))),
                overlay: Some(overlay),
                peer: Some(OverlayPeer {
                    vtep: Ipv4Addr::new(10, 244, 2, 0),
                    vtep_mac: "02:fa:00:00:00:02".into(),
                    underlay: Ipv4Addr::new(192, 168, 50, 12),
                }),
                underlay_route: Some(Ok(route(RouteKind::Unicast, 3, None))),
                underlay_link: Some(link(3, "eth0", None)),
                ..NodeView::default()
            },
            final_probe: Some(Final::Tcp(final_probe)),
            gateway: None,
            mtu: None,
            vxlan: None,
            underlay_mtu: None,
            from_node: None,
            names: crate::probes::path::Names::default(),
            service: None,
            peer_events: None,
            elapsed: Duration::from_millis(10),
        }
    }

    fn drop_event(netns: u32, device: &str, vxlan: bool) -> KernelEvent {
        let inner = FlowView {
            proto: Proto::Tcp,
            src: SocketAddr::new(SRC.into(), 40000),
            dst: SocketAddr::new(DST.into(), 8080),
        };
        let outer = FlowView {
            proto: Proto::Udp,
            src: "192.168.50.11:33000".parse().unwrap(),
            dst: "192.168.50.12:8472".parse().unwrap(),
        };
        KernelEvent {
            kind: EventKind::Drop,
            reason: Some("NETFILTER_DROP".into()),
            reason_note: None,
            location: None,
            direction: None,
            icmp_type: None,
            icmp_code: None,
            device: Some(device.into()),
            netns: format!("ns{netns}"),
            netns_inode: netns,
            flow: Some(if vxlan { outer } else { inner }),
            inner: vxlan.then_some(inner),
            ts_ns: 1,
            from_socket: false,
        }
    }

    fn names(check: &Check) -> Vec<&str> {
        check.hops.iter().map(|h| h.name.as_str()).collect()
    }

    /// Pod a to the Service 10.96.0.80:80 whose endpoints are `ready`; the final probe's
    /// conntrack entry says `dnat_to` (`None`: not DNATed).
    fn to_service(ready: &[&str], dnat_to: Option<&str>, conntrack: bool) -> Report {
        use crate::{
            discovery::{
                conntrack::{Entry, L4, Tuple4},
                services::{Endpoint, ServicePort},
            },
            probes::path::service::ServiceStep,
        };
        let vip: SocketAddr = "10.96.0.80:80".parse().unwrap();
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![]));
        report.spec.dst = Ipv4Addr::new(10, 96, 0, 80);
        report.spec.port = Some(80);
        let endpoint = |a: &&str| Endpoint {
            addr: a.parse().unwrap(),
            ready: true,
            serving: true,
            terminating: false,
            node: Some("n2".into()),
            pod: Some("default/b".into()),
        };
        let local = SocketAddr::new(SRC.into(), 40000);
        let reply_src = dnat_to.map_or(vip, |d| d.parse().unwrap());
        let entry = Entry {
            orig: Tuple4 { l4: L4::Tcp, src: local, dst: vip },
            reply: Tuple4 { l4: L4::Tcp, src: reply_src, dst: local },
            // IPS_DST_NAT (include/uapi/linux/netfilter/nf_conntrack_common.h).
            status: if dnat_to.is_some() { 1 << 5 } else { 0 },
            timeout: Some(120),
        };
        report.service = Some(ServiceStep {
            vip,
            port: Some(ServicePort {
                namespace: "default".into(),
                service: "web".into(),
                port_name: Some("http".into()),
                l4: L4::Tcp,
                cluster_ip: Some(vip.ip()),
                port: 80,
                node_port: None,
                external_local: false,
                endpoints: ready.iter().map(endpoint).collect(),
            }),
            wrong_port: None,
            found_by: vec!["the API's Service default/web".into()],
            rules: None,
            api_note: None,
            conntrack: Some(if conntrack {
                Ok(Some(entry))
            } else {
                Err("reading conntrack needs CAP_NET_ADMIN, which this process lacks".into())
            }),
        });
        report
    }

    #[test]
    fn a_service_path_has_the_dnat_hop_and_judges_it() {
        // DNATed to its ready endpoint: the hop passes, the hops after it are the endpoint's.
        let (check, _) = verdict(&to_service(&["10.244.2.2:8080"], Some("10.244.2.2:8080"), true), true, "n1");
        assert_eq!(names(&check)[..5], ["source", "veth", "bridge", "dnat", "routing"]);
        let dnat = &check.hops[3];
        assert_eq!((dnat.status, dnat.netns.as_deref()), (Status::Pass, Some("n1")));
        assert!(
            dnat.detail.starts_with(
                "10.96.0.80:80 -> 10.244.2.2:8080 (pod default/b on n2) by kube-proxy's DNAT (Service default/web; \
                 the final probe's conntrack entry: 10.244.1.2:40000 -> 10.96.0.80:80, reply from 10.244.2.2:8080)"
            ),
            "{}",
            dnat.detail
        );
        assert_eq!(check.status, Status::Pass);

        // DNATed to an address that is no ready endpoint: stale rules.
        let (check, line) = verdict(&to_service(&["10.244.2.3:8080"], Some("10.244.2.2:8080"), true), true, "n1");
        assert_eq!(check.hops[3].cause, Some(Cause::ServiceNotProgrammed));
        assert!(line.starts_with("dnat (n1 nat PREROUTING): 10.96.0.80:80 was DNATed to 10.244.2.2:8080"), "{line}");

        // Not DNATed, with ready endpoints: not programmed; without any: no endpoints. Nothing
        // past the NAT is made up.
        let (check, _) = verdict(&to_service(&["10.244.2.2:8080"], None, true), true, "n1");
        assert_eq!(names(&check), ["source", "veth", "bridge", "dnat", "destination"]);
        assert_eq!(check.hops[3].cause, Some(Cause::ServiceNotProgrammed));
        assert!(check.hops[4].inferred);
        let (check, _) = verdict(&to_service(&[], None, true), true, "n1");
        assert_eq!(check.hops[3].cause, Some(Cause::ServiceNoEndpoints));

        // Conntrack not readable: a skip naming why, the destination one of the endpoints.
        let (check, _) = verdict(&to_service(&["10.244.2.2:8080"], Some("10.244.2.2:8080"), false), true, "n1");
        assert_eq!(names(&check), ["source", "veth", "bridge", "dnat", "destination"]);
        assert_eq!(check.hops[3].status, Status::Skip);
        assert!(check.hops[3].detail.contains("CAP_NET_ADMIN"), "{}", check.hops[3].detail);
        assert_eq!(check.hops[4].detail, "one of the Service's ready endpoints: 10.244.2.2:8080; connected in 5 ms");
        assert_eq!(check.status, Status::Pass);
    }

    #[test]
    fn healthy_path_lists_every_hop_and_passes() {
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![])), true, "n1");
        assert_eq!(
            names(&check),
            [
                "source",
                "veth",
                "bridge",
                "routing",
                "overlay",
                "underlay",
                "peer-underlay",
                "peer-overlay",
                "peer-bridge",
                "destination"
            ]
        );
        assert!(check.hops.iter().all(|h| h.status == Status::Pass), "{check:?}");
        assert_eq!(check.hops[1].netns.as_deref(), Some("n1"));
        assert_eq!(check.hops[1].device.as_deref(), Some("vetha"));
        assert!(check.hops[6..].iter().all(|h| h.inferred));
        assert!(line.starts_with("healthy: pod-a -> 10.244.2.2:8080 crosses 10 hops (4 inferred)"), "{line}");
    }

    #[test]
    fn a_vxlan_drop_in_another_namespace_lands_on_the_peer_underlay() {
        let events = vec![drop_event(PEER_NS, "eth0", true)];
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::TimedOut, events)), true, "n1");
        let failed = check.hops.iter().find(|h| h.status == Status::Fail).unwrap();
        assert_eq!(failed.name, "peer-underlay");
        assert_eq!(failed.netns.as_deref(), Some("ns30"));
        assert!(!failed.inferred);
        assert_eq!(check.cause, Some(Cause::NetfilterDrop));
        assert_eq!(
            line,
            "peer-underlay: dropped by netfilter on ns30 eth0: VXLAN UDP 8472 to 192.168.50.12 carrying tcp \
             10.244.1.2:40000 -> 10.244.2.2:8080"
        );
        // Nothing got through: the hops after the break were not reached.
        assert_eq!(check.hops.last().unwrap().status, Status::Skip);
    }

    #[test]
    fn a_forward_drop_on_the_node_lands_on_routing() {
        let events = vec![drop_event(u32::try_from(NODE_NS).unwrap(), "cni0", false)];
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::TimedOut, events)), true, "n1");
        let failed = check.hops.iter().find(|h| h.status == Status::Fail).unwrap();
        assert_eq!(failed.name, "routing", "{check:?}");
        assert!(line.starts_with("routing: dropped by netfilter on n1 FORWARD: tcp 10.244.1.2:40000"), "{line}");
    }

    #[test]
    fn a_purged_reply_queue_is_not_a_fault() {
        let mut purge = drop_event(u32::try_from(NODE_NS).unwrap(), "cni0", false);
        purge.reason = Some("QUEUE_PURGE".into());
        let (check, _) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![purge])), true, "n1");
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check.evidence.is_empty() && check.hops.iter().all(|h| h.evidence.is_empty()), "{check:?}");
    }

    #[test]
    fn a_timeout_without_evidence_fails_the_destination() {
        let (check, line) = verdict(&pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![])), false, "n1");
        let failed = check.hops.iter().position(|h| h.status == Status::Fail).unwrap();
        assert_eq!(check.hops[failed].name, "destination");
        assert!(check.hops[..failed].iter().all(|h| h.status == Status::Pass));
        assert_eq!(check.cause, Some(Cause::Timeout));
        assert!(line.starts_with("destination: no answer"), "{line}");
        // Past the tunnel, on a cluster, only the peer's agent could have seen it.
        let unasked = " (the peer's side is not visible from here: its agent was not asked (--no-peer-agent))";
        assert!(line.ends_with(unasked), "{line}");
    }

    #[test]
    fn a_reject_on_the_node_fails_input_and_compares_with_the_node() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![]));
        let mut reject = drop_event(u32::try_from(NODE_NS).unwrap(), "cni0", false);
        reject.flow = Some(FlowView {
            proto: Proto::Tcp,
            src: SocketAddr::new(SRC.into(), 40000),
            dst: "192.168.50.11:10250".parse().unwrap(),
        });
        report.spec.dst = Ipv4Addr::new(192, 168, 50, 11);
        report.spec.port = Some(10250);
        report.node.route = Some(Ok(route(RouteKind::Local, 1, None)));
        report.node.route_link = Some(link(1, "lo", None));
        report.final_probe = Some(Final::Tcp(tcp_report(tcp::Outcome::TimedOut, vec![reject])));
        report.from_node = Some(tcp_report(tcp::Outcome::Connected, vec![]));
        let (check, line) = verdict(&report, true, "n1");
        assert_eq!(names(&check), ["source", "veth", "bridge", "routing", "input"]);
        assert_eq!(check.hops[4].status, Status::Fail);
        assert!(
            line.ends_with("pods on this node cannot reach 192.168.50.11:10250 while the node itself can"),
            "{line}"
        );
    }

    #[test]
    fn a_filtered_gateway_echo_is_a_warning_when_traffic_crosses() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![]));
        report.gateway = Some(icmp::Echo {
            dst: Ipv4Addr::new(10, 244, 1, 1),
            outcome: EchoOutcome::Answered { answer: Answer::Silent, rtt: Duration::from_secs(1) },
            elapsed: Duration::from_secs(1),
            events: vec![],
        });
        let (check, line) = verdict(&report, true, "n1");
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert_eq!(check.hops[2].status, Status::Warn);
        assert!(line.contains("with a warning on bridge"), "{line}");
        report.final_probe = Some(Final::Tcp(tcp_report(tcp::Outcome::TimedOut, vec![])));
        let (check, _) = verdict(&report, true, "n1");
        assert_eq!(check.hops[2].status, Status::Fail, "{check:?}");
    }

    #[test]
    fn the_node_to_a_pod_on_its_own_bridge() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::Connected, vec![]));
        report.spec.from = Source::Host;
        report.spec.label = "host".into();
        report.node = NodeView {
            inode: Some(NODE_NS),
            route: Some(Ok(route(RouteKind::Unicast, 5, None))),
            route_link: Some(link(5, "cni0", Some("bridge"))),
            ..NodeView::default()
        };
        let (check, _) = verdict(&report, true, "n1");
        assert_eq!(names(&check), ["routing", "bridge", "destination"]);
        assert_eq!(check.hops[1].device.as_deref(), Some("cni0"));
        assert_eq!(check.status, Status::Pass);
    }

    #[test]
    fn a_missing_fdb_entry_fails_the_overlay() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![]));
        report.node.peer = None;
        report.node.overlay_problems = vec!["flannel.1 has no FDB entry for 02:fa:00:00:00:02".into()];
        let (check, line) = verdict(&report, true, "n1");
        assert_eq!(check.cause, Some(Cause::VxlanMisconfigured));
        assert!(line.starts_with("overlay (n1 flannel.1): flannel.1 has no FDB entry"), "{line}");
    }

    /// The peer's side of a verdict this kernel could not see: whether its agent was asked,
    /// and what it answered (never a bare "no drop" where nobody looked).
    #[test]
    fn the_peer_side_says_whether_its_agent_was_asked() {
        let mut report = pod_to_pod(tcp_report(tcp::Outcome::TimedOut, vec![]));
        let side = |r: &Report| judge::peer_side(r);
        assert_eq!(
            side(&report),
            "the peer's side is not visible from here: its agent was not asked (--no-peer-agent)"
        );
        report.spec.peer_agent = Some(9472);
        report.peer_events = Some(Err("agent at 192.168.50.12:9472: refused, HTTP 401 Unauthorized".into()));
        assert_eq!(
            side(&report),
            "the peer's side is not visible from here: its agent at 192.168.50.12:9472: refused, HTTP 401 Unauthorized"
        );
        report.peer_events = Some(Ok(vec![]));
        assert_eq!(side(&report), "the agent on 192.168.50.12:9472 saw no drop of these packets on the peer");
        report.peer_events = None;
        assert_eq!(side(&report), "the peer's side is not visible from here: no peer node to ask");
    }
}
