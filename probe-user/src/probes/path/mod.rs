//! The path probe behind `netcheck path`: follows a packet from a source namespace (a pod's,
//! or the node's own) to a destination through the kernel's own tables, then tests every hop
//! it can while capture runs.
//!
//! Discovery, through rtnetlink in each namespace:
//! - in the source: the route to the destination, the interface it leaves by and, for a veth,
//!   the ifindex of its peer on the node;
//! - on the node: that peer veth, the bridge it is enslaved to, the node's forwarding decision
//!   for the source's packets (`ip route get DST from SRC iif BRIDGE`), and when the route leads
//!   into a VXLAN device, the neighbour and FDB entries that name the peer's VTEP and underlay
//!   address, and the underlay route to it.
//!
//! Probes, all at once under one deadline: the final TCP connect (or ICMP echo) from the
//! source, the gateway echo, the path MTU from the source, the VXLAN probe and the underlay path
//! MTU to the peer node, and for a destination on the node itself, the same connect from the
//! node (to tell "pods cannot" from "nobody can").

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

pub mod service;

use self::service::ServiceStep;
use super::{Target, icmp, mtu, tcp, vxlan};
use crate::{
    capture::Capture,
    capture::event::KernelEvent,
    discovery::netlink::{self, Link, Route, RouteKind, VxlanDevice},
    netns,
};

/// Where the path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The namespace netcheck runs in (the node).
    Host,
    /// A pod's namespace: a name under /var/run/netns or a path such as /proc/PID/ns/net.
    Netns(String),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub from: Source,
    /// How the source is shown: `host`, the namespace's name, or the pod IP it was found by.
    pub label: String,
    pub dst: Ipv4Addr,
    /// TCP port of the final probe; without one the final probe is an ICMP echo.
    pub port: Option<u16>,
    /// Where to ask the API for the pods and the peer node's name (`None`: do not ask).
    pub api: Option<ApiSpec>,
    /// The port of the netcheck agent on the peer node, asked for what the peer's kernel saw
    /// of this run's packets (`None`: do not ask).
    pub peer_agent: Option<u16>,
}

/// `--kubeconfig` (else the usual places) and the node root it may live under.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub host_root: std::path::PathBuf,
}

/// What the API says about the path's ends, when it answers.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub source_pod: Option<crate::discovery::api::PodInfo>,
    pub destination_pod: Option<crate::discovery::api::PodInfo>,
    /// The peer node's name, by its overlay address.
    pub peer_node: Option<String>,
    /// Why the API could not be asked (a note, never a failure).
    pub unavailable: Option<String>,
}

/// What the source namespace's tables say.
#[derive(Debug, Clone, Default)]
pub struct SourceView {
    pub inode: Option<u64>,
    pub route: Option<Result<Route, String>>,
    /// The interface the route leaves by.
    pub link: Option<Link>,
}

/// What the node's tables say about the path.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub inode: Option<u64>,
    /// The node side of the source's veth.
    pub veth: Option<Link>,
    pub bridge: Option<Link>,
    /// Why the veth was not found, when the source is a pod.
    pub veth_problem: Option<String>,
    /// The node's decision for the packet (forwarded for a pod source, sent for the node).
    pub route: Option<Result<Route, String>>,
    pub route_link: Option<Link>,
    /// The VXLAN device the route leads into, when it does.
    pub overlay: Option<VxlanDevice>,
    pub peer: Option<OverlayPeer>,
    /// What stops the overlay from carrying the packet (no neighbour or FDB entry, device down).
    pub overlay_problems: Vec<String>,
    /// The route and interface the (outer) packets leave the node by.
    pub underlay_route: Option<Result<Route, String>>,
    pub underlay_link: Option<Link>,
}

/// The peer node as the overlay's tables name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPeer {
    /// The peer's VTEP address (flannel: 10.244.N.0), the route's gateway.
    pub vtep: Ipv4Addr,
    pub vtep_mac: String,
    /// The peer's underlay address (the FDB entry's destination).
    pub underlay: Ipv4Addr,
}

/// The final probe from the source.
#[derive(Debug)]
pub enum Final {
    Tcp(tcp::Report),
    Echo(icmp::Echo),
}

#[derive(Debug)]
pub struct Report {
    pub spec: Spec,
    pub source: SourceView,
    pub node: NodeView,
    pub final_probe: Option<Final>,
    /// Echo from the source to its gateway (a pod's cni0 address).
    pub gateway: Option<icmp::Echo>,
    /// Path MTU from the source to the destination.
    pub mtu: Option<mtu::Report>,
    /// VXLAN probe from the node to the peer's VTEP.
    pub vxlan: Option<vxlan::Report>,
    /// Path MTU from the node to the peer's underlay address.
    pub underlay_mtu: Option<mtu::Report>,
    /// For a destination on the node: the same connect from the node itself.
    pub from_node: Option<tcp::Report>,
    pub names: Names,
    /// The Service step, when the destination is a Service IP and port (its hops then lead to
    /// the endpoint kube-proxy chose for the final probe).
    pub service: Option<ServiceStep>,
    /// What the agent on the peer node saw of this run's packets (`None`: not asked, e.g. the
    /// destination is not behind the overlay); `Err` says why it could not be asked.
    pub peer_events: Option<Result<Vec<KernelEvent>, String>>,
    pub elapsed: Duration,
}

impl Report {
    /// The source's address on the path (what the source route picks).
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.source.route.as_ref().and_then(|r| r.as_ref().ok()).and_then(|r| r.source)
    }

    /// Where the packets go after the node's NAT: the endpoint kube-proxy DNATed the final probe
    /// to, else the destination.
    pub fn target(&self) -> Ipv4Addr {
        match self.service.as_ref().and_then(ServiceStep::endpoint) {
            Some(SocketAddr::V4(ep)) => *ep.ip(),
            _ => self.spec.dst,
        }
    }

    /// The port after the node's NAT (a Service's target port may differ from its port).
    pub fn target_port(&self) -> Option<u16> {
        self.service.as_ref().and_then(ServiceStep::endpoint).map(|e| e.port()).or(self.spec.port)
    }

    /// A Service destination whose endpoint is not known (not DNATed, or conntrack unread):
    /// the hops past the node's NAT cannot be told.
    pub fn endpoint_unknown(&self) -> bool {
        self.service.as_ref().is_some_and(|s| s.endpoint().is_none())
    }

    /// Whether the destination is one of the node's own addresses.
    pub fn to_node(&self) -> bool {
        matches!(self.node.route, Some(Ok(Route { kind: RouteKind::Local, .. })))
    }
}

/// Discovers the path, then probes it; the source side runs in the source's namespace.
/// `Err` only when the source namespace cannot be entered.
pub async fn run(spec: Spec, deadline: Duration, capture: Option<Arc<Capture>>) -> crate::error::Result<Report> {
    let started = Instant::now();
    let source_ns = match &spec.from {
        Source::Host => None,
        Source::Netns(ns) => Some(ns.clone()),
    };
    let dst = spec.dst;
    // Read from inside the source's namespace (its inode included).
    let source = netns::run_in(source_ns.clone(), move || source_view(dst)).await?;
    let service = service::detect(&spec, api_budget(deadline).min(deadline / 4)).await;
    let mut report = Report {
        spec,
        source,
        node: NodeView::default(),
        final_probe: None,
        gateway: None,
        mtu: None,
        vxlan: None,
        underlay_mtu: None,
        from_node: None,
        names: Names::default(),
        service,
        peer_events: None,
        elapsed: Duration::ZERO,
    };
    let mut remaining = deadline.saturating_sub(started.elapsed()).max(deadline / 2);
    if let Some(step) = report.service.as_mut() {
        // The final probe goes first, alone: the endpoint kube-proxy picks for it (its
        // conntrack entry's reply source) is where every later hop and probe leads. Half the
        // time is left for those.
        let (capture, port, budget) = (capture.clone(), step.vip.port(), remaining / 2);
        let first = netns::run_in(source_ns.clone(), move || async move {
            tcp::probe(&Target { host: dst.to_string(), port }, budget, capture.as_deref()).await
        })
        .await?;
        step.conntrack = Some(service::entry(first.local, step.vip).await);
        report.final_probe = Some(Final::Tcp(first));
        remaining = deadline.saturating_sub(started.elapsed()).max(deadline / 4);
    }
    let target = report.target();
    report.node = node_view(&report.spec, target, &report.source).await;
    let gateway = match (&report.spec.from, &report.source.route) {
        (Source::Netns(_), Some(Ok(Route { gateway: Some(IpAddr::V4(gw)), .. }))) => Some(*gw),
        _ => None,
    };
    let source_side = {
        let capture = capture.clone();
        let port = if report.final_probe.is_some() { Probe::Done } else { Probe::Final(report.spec.port) };
        netns::run_in(source_ns, move || source_probes(dst, port, target, gateway, remaining, capture))
    };
    let node_side = node_probes(&report, remaining, capture);
    let names = names(&report, remaining.min(api_budget(deadline)));
    let (source_side, node_side, names) = tokio::join!(source_side, node_side, names);
    let (final_probe, gateway, mtu) = source_side?;
    if final_probe.is_some() {
        report.final_probe = final_probe;
    }
    (report.gateway, report.mtu) = (gateway, Some(mtu));
    (report.vxlan, report.underlay_mtu, report.from_node) = node_side;
    report.names = names;
    // The run's own deadline: the agent asks the API server to review the token first (cached
    // for 5 minutes afterwards), two TLS round trips that took longer than 2 s on a slow node.
    report.peer_events = peer_events(&report, started.elapsed(), deadline).await;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// How long the API may take to answer for names and Services: 2 s (a dead API must not hold a
/// healthy run for the whole deadline), or half the deadline when it is longer: a user raising
/// --timeout for a slow API server gets the time (a TCG guest's TLS handshake and three lookups
/// took >2 s).
fn api_budget(deadline: Duration) -> Duration {
    Duration::from_secs(2).max(deadline / 2)
}

/// The final probe still to run (its TCP port, or an echo), or already run.
enum Probe {
    Final(Option<u16>),
    Done,
}

/// The peer agent's events of this run: VXLAN packets between this node and the peer whose
/// inner packet is the source's or the destination's (the peer agent keeps every event about
/// its peers' addresses; see `netcheck agent`).
async fn peer_events(
    report: &Report,
    elapsed: Duration,
    timeout: Duration,
) -> Option<Result<Vec<KernelEvent>, String>> {
    let port = report.spec.peer_agent?;
    let peer = report.node.peer.as_ref()?;
    let local = match &report.node.underlay_route {
        Some(Ok(Route { source: Some(ip), .. })) => Some(*ip),
        _ => None,
    };
    let ends = [report.source_ip(), Some(IpAddr::V4(report.spec.dst)), Some(IpAddr::V4(report.target()))];
    let addr = std::net::SocketAddr::new(IpAddr::V4(peer.underlay), port);
    let since = elapsed + Duration::from_secs(2);
    // The report keeps the reason as text: it is shown as the peer hops' note.
    // The agent checks the token with the API server (TokenReview, then RBAC on /events).
    let token = match &report.spec.api {
        Some(api) => crate::discovery::api::bearer_token(api.kubeconfig.as_deref(), &api.host_root),
        None => Err("no API configured for this run".to_string()),
    };
    let events =
        crate::discovery::peer_agent::fetch(addr, since, local, token.as_deref().map_err(String::as_str), timeout)
            .await
            .map_err(|e| e.to_string());
    Some(events.map(|all| {
        all.into_iter()
            .filter(|e| e.inner.is_some_and(|f| ends.contains(&Some(f.src.ip())) || ends.contains(&Some(f.dst.ip()))))
            .collect()
    }))
}

/// The pods at both ends and the peer node's name, from the API within `timeout`.
async fn names(report: &Report, timeout: Duration) -> Names {
    use crate::discovery::api;
    let Some(spec) = report.spec.api.clone() else { return Names::default() };
    let source_ip = if report.spec.from == Source::Host { None } else { report.source_ip() };
    let dst = IpAddr::V4(report.target());
    let peer = report.node.peer.as_ref().map(|p| IpAddr::V4(p.underlay));
    let asked = async move {
        let client = api::client(spec.kubeconfig.as_deref(), &spec.host_root, timeout).await?;
        let source = async {
            match source_ip {
                Some(ip) => api::pod_by_ip(client.clone(), ip).await,
                None => Ok(None),
            }
        };
        let peer_node = async {
            match peer {
                Some(ip) => crate::discovery::nodes::list(client.clone())
                    .await
                    .map(|(nodes, _)| nodes.into_iter().find(|n| n.overlay_peer() == Some(ip)).map(|n| n.name)),
                None => Ok(None),
            }
        };
        let (source, destination, peer_node) = tokio::join!(source, api::pod_by_ip(client.clone(), dst), peer_node);
        Ok::<_, api::ApiError>(Names {
            source_pod: source?,
            destination_pod: destination?,
            peer_node: peer_node?,
            unavailable: None,
        })
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(names)) => names,
        Ok(Err(e)) => Names { unavailable: Some(e.to_string()), ..Names::default() },
        Err(_) => Names { unavailable: Some(format!("the API did not answer within {timeout:?}")), ..Names::default() },
    }
}

async fn source_view(dst: Ipv4Addr) -> SourceView {
    let route = netlink::route_get(IpAddr::V4(dst), None).await.map_err(|e| e.to_string());
    let link = match &route {
        Ok(Route { oif: Some(oif), .. }) => {
            netlink::links().await.ok().and_then(|l| l.into_iter().find(|l| l.index == *oif))
        }
        _ => None,
    };
    SourceView { inode: netns::current_inode(), route: Some(route), link }
}

/// The node's side of the path to `target` (the destination, or the endpoint it was DNATed to:
/// the node routes the packet after its NAT).
async fn node_view(spec: &Spec, target: Ipv4Addr, source: &SourceView) -> NodeView {
    let mut view = NodeView { inode: netns::current_inode(), ..NodeView::default() };
    let links = netlink::links().await.unwrap_or_default();
    let by_index = |i: u32| links.iter().find(|l| l.index == i).cloned();
    let mut input = None;
    if let Source::Netns(_) = spec.from {
        match &source.link {
            Some(l) if l.kind.as_deref() == Some("veth") && l.peer_netnsid.is_some() => {
                // The peer index is in the node's namespace when the veth leads here: check
                // that the veth found there points back (ifindexes repeat across namespaces).
                let found = l.peer_index.and_then(by_index).filter(|v| {
                    v.kind.as_deref() == Some("veth") && v.peer_index == Some(l.index) && v.peer_netnsid.is_some()
                });
                match found {
                    Some(v) => {
                        view.bridge = v.master.and_then(by_index);
                        view.veth = Some(v);
                    }
                    None => {
                        view.veth_problem = Some(format!(
                            "the peer of the source's {} (ifindex {}) is not in this namespace: run netcheck on the \
                             node that hosts the source",
                            l.name,
                            l.peer_index.unwrap_or_default()
                        ));
                    }
                }
            }
            Some(l) => {
                view.veth_problem =
                    Some(format!("the source leaves by {}, which is not a veth to another namespace", l.name));
            }
            None => view.veth_problem = Some("the source has no route to the destination".into()),
        }
        let iif = view.bridge.as_ref().or(view.veth.as_ref()).map(|l| l.index);
        let src = source.route.as_ref().and_then(|r| r.as_ref().ok()).and_then(|r| r.source);
        input = src.zip(iif);
        if input.is_none() {
            // Without the input side, the node's decision cannot be asked.
            return view;
        }
    }
    let route = netlink::route_get(IpAddr::V4(target), input).await.map_err(|e| e.to_string());
    view.route_link = route.as_ref().ok().and_then(|r| r.oif).and_then(by_index);
    let (gateway, oif) = match &route {
        Ok(r) if r.kind == RouteKind::Unicast => (r.gateway, r.oif),
        _ => (None, None),
    };
    view.route = Some(route);
    let Some(oif) = oif else { return view };
    let overlay = if view.route_link.as_ref().and_then(|l| l.kind.as_deref()) == Some("vxlan") {
        netlink::vxlan_devices().await.ok().and_then(|d| d.into_iter().find(|d| d.index == oif))
    } else {
        None
    };
    let Some(dev) = overlay else {
        // Sent directly on the underlay (e.g. to another node's address).
        view.underlay_link.clone_from(&view.route_link);
        view.underlay_route.clone_from(&view.route);
        return view;
    };
    let next_hop = gateway.unwrap_or(IpAddr::V4(target));
    if !dev.up {
        view.overlay_problems.push(format!("{} is down", dev.name));
    }
    match dev.neighbours.iter().find(|(ip, _)| *ip == next_hop) {
        None => view.overlay_problems.push(format!(
            "{} has no neighbour entry for {next_hop}: the peer VTEP's MAC is unknown (flannel writes it permanent)",
            dev.name
        )),
        Some((_, mac)) => match dev.fdb.iter().find(|(m, _)| m == mac) {
            None => view.overlay_problems.push(format!(
                "{} has no FDB entry for {}: the kernel does not know which node {next_hop} lives on",
                dev.name,
                netlink::format_mac(mac)
            )),
            Some((_, IpAddr::V4(underlay))) => {
                if let IpAddr::V4(vtep) = next_hop {
                    view.peer = Some(OverlayPeer { vtep, vtep_mac: netlink::format_mac(mac), underlay: *underlay });
                }
                let route = netlink::route_get(IpAddr::V4(*underlay), None).await.map_err(|e| e.to_string());
                view.underlay_link = route.as_ref().ok().and_then(|r| r.oif).and_then(by_index);
                view.underlay_route = Some(route);
            }
            Some((_, other)) => view.overlay_problems.push(format!("{} sends to {other}: IPv6 underlay", dev.name)),
        },
    }
    view.overlay = Some(dev);
    view
}

/// The final probe (unless it ran first), the gateway echo and the path MTU (to `target`, past
/// any NAT), from the source's namespace.
async fn source_probes(
    dst: Ipv4Addr,
    probe: Probe,
    target: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    deadline: Duration,
    capture: Option<Arc<Capture>>,
) -> (Option<Final>, Option<icmp::Echo>, mtu::Report) {
    crate::failpoint::crash_if("path-source");
    let final_probe = {
        let capture = capture.clone();
        async move {
            match probe {
                Probe::Final(Some(port)) => {
                    let target = Target { host: dst.to_string(), port };
                    Some(Final::Tcp(tcp::probe(&target, deadline, capture.as_deref()).await))
                }
                Probe::Final(None) => Some(Final::Echo(blocking_echo(dst, deadline, capture).await)),
                Probe::Done => None,
            }
        }
    };
    let gateway_echo = {
        let capture = capture.clone();
        async move {
            match gateway {
                Some(gw) => Some(blocking_echo(gw, deadline, capture).await),
                None => None,
            }
        }
    };
    let path_mtu = mtu::run(mtu::Spec { host: target, max: None, cni_mtu: None }, deadline, capture);
    tokio::join!(final_probe, gateway_echo, path_mtu)
}

async fn blocking_echo(dst: Ipv4Addr, deadline: Duration, capture: Option<Arc<Capture>>) -> icmp::Echo {
    let started = Instant::now();
    tokio::task::spawn_blocking(move || icmp::echo(dst, deadline, capture.as_deref())).await.unwrap_or_else(|e| {
        icmp::Echo {
            dst,
            outcome: icmp::EchoOutcome::Failed(format!("probe thread: {e}")),
            elapsed: started.elapsed(),
            events: Vec::new(),
        }
    })
}

/// VXLAN and underlay MTU to the peer node, and the node's own connect to a local destination.
async fn node_probes(
    report: &Report,
    deadline: Duration,
    capture: Option<Arc<Capture>>,
) -> (Option<vxlan::Report>, Option<mtu::Report>, Option<tcp::Report>) {
    let peer = report.node.peer.clone();
    let overlay = report.node.overlay.clone();
    let tunnel = {
        let capture = capture.clone();
        let peer = peer.clone();
        async move {
            let (peer, dev) = (peer?, overlay?);
            let spec = vxlan::Spec {
                peer: peer.underlay,
                port: dev.port.unwrap_or(probe_common::FLANNEL_VXLAN_PORT),
                vni: None,
                device: Some(dev.name),
            };
            Some(vxlan::run(spec, deadline, capture).await)
        }
    };
    let underlay = {
        let capture = capture.clone();
        async move {
            let peer = peer?;
            Some(mtu::run(mtu::Spec { host: peer.underlay, max: None, cni_mtu: None }, deadline, capture).await)
        }
    };
    let from_node = {
        let wanted = report.spec.from != Source::Host && report.to_node();
        let target = report.target_port().map(|port| Target { host: report.target().to_string(), port });
        async move {
            let target = target.filter(|_| wanted)?;
            Some(tcp::probe(&target, deadline, capture.as_deref()).await)
        }
    };
    tokio::join!(tunnel, underlay, from_node)
}

/// Finds the source's namespace from what was typed: `host`, a pod IP on this node (the
/// namespace attached by a veth that holds it), a namespace name (under /var/run/netns or
/// /run/netns, also under a mounted node root), or a path such as /proc/PID/ns/net.
pub async fn resolve_source(from: &str, root: &std::path::Path) -> Result<(Source, String), String> {
    if from == "host" {
        return Ok((Source::Host, "host".into()));
    }
    if let Ok(ip) = from.parse::<Ipv4Addr>() {
        let found = crate::discovery::pods::find_by_ip(ip, root).await.map_err(|e| format!("--from {from}: {e}"))?;
        let label = format!("{ip} ({})", found.label);
        return Ok((Source::Netns(found.path.display().to_string()), label));
    }
    if from.contains('/') {
        return if std::path::Path::new(from).exists() {
            Ok((Source::Netns(from.to_string()), from.to_string()))
        } else {
            Err(format!("--from {from}: no such file"))
        };
    }
    let mut places = vec![netns::resolve(from), std::path::Path::new("/run/netns").join(from)];
    if root != std::path::Path::new("/") {
        places.extend(["var/run/netns", "run/netns"].iter().map(|d| root.join(d).join(from)));
    }
    if let Some(p) = places.iter().find(|p| p.exists()) {
        return Ok((Source::Netns(p.display().to_string()), from.to_string()));
    }
    let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "--from {from}: no such network namespace (looked at {}; `ip netns list` shows the named ones, or give the \
         pod's IP)",
        looked.join(", ")
    ))
}

/// The destination as typed: `IP` or `IP:PORT` (IPv4).
pub fn parse_destination(input: &str) -> Result<(Ipv4Addr, Option<u16>), String> {
    if let Ok(ip) = input.parse::<Ipv4Addr>() {
        return Ok((ip, None));
    }
    match input.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(sa)) if sa.port() != 0 => Ok((*sa.ip(), Some(sa.port()))),
        Ok(SocketAddr::V4(_)) => Err(format!("{input}: port must be a number from 1 to 65535")),
        Ok(SocketAddr::V6(_)) => Err(format!("{input}: IPv6 paths are not supported yet")),
        Err(_) if input.parse::<std::net::Ipv6Addr>().is_ok() => {
            Err(format!("{input}: IPv6 paths are not supported yet"))
        }
        Err(_) => Err(format!("{input}: expected an IPv4 address, optionally with :PORT (e.g. 10.244.2.5:8080)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(parse_destination("10.244.2.2"), Ok((Ipv4Addr::new(10, 244, 2, 2), None)));
        assert_eq!(parse_destination("10.244.2.2:8080"), Ok((Ipv4Addr::new(10, 244, 2, 2), Some(8080))));
        assert!(parse_destination("10.244.2.2:0").unwrap_err().contains("port"));
        assert!(parse_destination("fd00::1").unwrap_err().contains("IPv6"));
        assert!(parse_destination("[fd00::1]:80").unwrap_err().contains("IPv6"));
        assert!(parse_destination("pod-b:80").unwrap_err().contains("expected an IPv4"));
        assert!(parse_destination("10.244.2.2:99999").is_err());
    }
}
