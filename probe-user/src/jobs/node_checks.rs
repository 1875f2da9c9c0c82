//! `netcheck node`: every check that concerns the node netcheck runs on, planned from what
//! discovery finds (the node's files under the host root, its VXLAN device's FDB and neighbour
//! entries, the API when reachable), then run concurrently like any `check`.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use super::Job;
use crate::{
    discovery::{
        self,
        netlink::{Mac, VxlanDevice},
        node_files::NodeFiles,
        node_root::NodeRoot,
        nodes::NodeInfo,
    },
    probes::{Target, dns, kubelet, mtu, vxlan},
    verdict::{Check, Probe, Verdict},
};

/// A peer node: its name (the API's; its underlay address when only the FDB knows it), the
/// address its VXLAN traffic goes to, and its VTEP (overlay address) when the neighbour table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    pub name: String,
    pub underlay: Ipv4Addr,
    pub vtep: Option<Ipv4Addr>,
}

/// The agent's choice of peers: `k` of them for the node named `node` in `epoch`
/// (see [`super::sampling`]). Without it every peer is checked.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub node: String,
    pub k: usize,
    pub epoch: u64,
}

/// Where a plan takes the API's nodes from.
#[derive(Clone, Copy)]
pub enum ApiNodes<'a> {
    /// Listed now (the one-shot `node`).
    List,
    /// The agent's: the nodes that can answer, and the overlay addresses of those that cannot
    /// (NotReady, deleting), which are not probed even where the FDB names them; and its
    /// client, which the checks use rather than making their own.
    Given { available: &'a [NodeInfo], unavailable: &'a [Ipv4Addr], client: Option<&'a kube::Client> },
}

/// The jobs for this node and the peers they concern.
pub struct Planned {
    pub jobs: Vec<Job>,
    /// Every peer discovery found (FDB and API).
    pub known: Vec<PeerNode>,
    /// The peers the jobs check (all known ones unless sampled).
    pub probed: Vec<PeerNode>,
}

/// The jobs for this node, and a `skip` check for each thing discovery could not find.
pub async fn plan(
    root: &Path,
    kubeconfig: Option<&Path>,
    timeout: Duration,
    sampling: Option<&Sampling>,
    api: ApiNodes<'_>,
) -> Planned {
    let node = match discovery::node_root::NodeRoot::open(root) {
        Ok(node) => node,
        Err(e) => {
            let why = format!("the host root cannot be opened: {e}");
            let check =
                Check::file(Probe::Cni, "node".into(), Verdict::fail(crate::verdict::Cause::InternalError, why));
            return Planned { jobs: vec![Job::Done(vec![check])], known: Vec::new(), probed: Vec::new() };
        }
    };
    let files = discovery::node_files::read(&node);
    plan_read(&node, files, kubeconfig, timeout, sampling, api).await
}

/// [`plan`] with the root open and its files read (`netcheck node` reads them first, to tell
/// whether there is a node there at all).
pub async fn plan_read(
    node: &NodeRoot,
    files: NodeFiles,
    kubeconfig: Option<&Path>,
    timeout: Duration,
    sampling: Option<&Sampling>,
    api: ApiNodes<'_>,
) -> Planned {
    let root = node.path();
    let listing = async {
        match api {
            ApiNodes::List => (api_nodes(root, kubeconfig, timeout.min(Duration::from_secs(2))).await, Vec::new()),
            ApiNodes::Given { available, unavailable, .. } => (overlay_peers(available), unavailable.to_vec()),
        }
    };
    // At once: the API's nodes (peers the FDB has lost are found this way), the VXLAN devices
    // and the links (the CNI bridge).
    let ((api_nodes, unavailable), devices, links) =
        tokio::join!(listing, discovery::netlink::vxlan_devices(), discovery::netlink::links());
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    let devices = match devices {
        Ok(d) => d,
        Err(e) => {
            skipped.push((Probe::Overlay, format!("VXLAN devices not read: {e}")));
            Vec::new()
        }
    };
    let client = match api {
        ApiNodes::Given { client, .. } => client.cloned(),
        ApiNodes::List => None,
    };
    if let Some(spec) = dns_spec(&files, kubeconfig, client) {
        jobs.push(Job::Dns(Box::new(spec)));
    } else {
        // Why, from the kubelet's side: a file it could not read first, then what was missing.
        let setup = &files.kubelet_setup;
        let why = match (setup.problems.first(), setup.notes.first()) {
            (Some(problem), _) => problem.clone(),
            (None, _) if files.kubelet.is_some() => "the kubelet's configuration sets none".to_string(),
            (None, Some(missing)) => missing.clone(),
            (None, None) => "no kubelet configuration found".to_string(),
        };
        skipped.push((Probe::Dns, format!("no clusterDNS: {why}")));
    }
    match &files.api_server {
        Some(api) => match Target::parse(&api.address) {
            Ok(target) => {
                let roots = discovery::certs::kubeconfig_items(&api.kubeconfig, root, None)
                    .ok()
                    .and_then(|items| items.into_iter().find(|i| !i.client))
                    .and_then(|i| i.certs.ok())
                    .map(Arc::new);
                jobs.push(Job::ApiServer { target, roots });
            }
            Err(e) => skipped.push((Probe::Apiserver, e.to_string())),
        },
        None => skipped.push((Probe::Apiserver, "no kubelet kubeconfig names the API server".to_string())),
    }
    let kubelet_port = files.kubelet.as_ref().and_then(|k| k.port).unwrap_or(kubelet::PORT);
    let healthz_port = files.kubelet.as_ref().and_then(|k| k.healthz_port).unwrap_or(kubelet::HEALTHZ_PORT);
    let overlay = devices.iter().find(|d| d.name == "flannel.1").or_else(|| devices.first());
    match overlay.and_then(|d| d.local) {
        Some(local) => jobs.push(kubelet_job(local, kubelet_port, healthz_port)),
        None => {
            skipped
                .push((Probe::Kubelet, "this node's address is unknown (no VXLAN device with a local address)".into()));
        }
    }
    let (mut known, mut probed) = (Vec::new(), Vec::new());
    match overlay {
        Some(dev) => {
            known = peers(dev, &api_nodes, &unavailable);
            probed = match sampling {
                Some(s) => super::sampling::sample(&s.node, &known, |p| p.name.as_str(), s.k, s.epoch)
                    .into_iter()
                    .cloned()
                    .collect(),
                None => known.clone(),
            };
            jobs.extend(peer_jobs(dev, &files, &probed, kubelet_port, healthz_port));
        }
        None => skipped.push((Probe::Vxlan, "no VXLAN device in this namespace: no peers to check".into())),
    }
    // The CNI setup, judged against the bridge as the kernel has it.
    let links = links.unwrap_or_default();
    jobs.push(Job::Done(vec![crate::verdict::kubelet::configuration(&files.kubelet_setup)]));
    let cni = discovery::cni::read_in(node, &files.cni_dirs);
    let env = files.subnet_env.as_ref().map(|(e, _)| e);
    jobs.push(Job::Done(vec![crate::verdict::cni::verdict(&cni, env, root, &links)]));
    jobs.push(prerequisites_job(&cni, env, &links, overlay, &probed));
    jobs.extend(super::pki_jobs(node, root, files.kubelet_setup.config.client_ca_file()));
    if !skipped.is_empty() {
        let checks = skipped
            .into_iter()
            .map(|(probe, why)| Check::file(probe, "node".into(), Verdict::skip(format!("not checked: {why}"))))
            .collect();
        jobs.push(Job::Done(checks));
    }
    Planned { jobs, known, probed }
}

/// The netfilter prerequisites, asked of the devices packets reach this node by: the pod
/// bridge (from a pod of this node), the overlay (from a peer's VTEP) and the underlay (from a
/// peer's address), the first probed peer standing for all.
fn prerequisites_job(
    cni: &discovery::cni::Found,
    env: Option<&discovery::flannel::SubnetEnv>,
    links: &[discovery::netlink::Link],
    overlay: Option<&VxlanDevice>,
    probed: &[PeerNode],
) -> Job {
    use discovery::prerequisites::{Arrival, Spec};
    let mut spec = Spec::default();
    let bridge = cni
        .config
        .as_ref()
        .ok()
        .and_then(|c| c.plugins.iter().find_map(discovery::cni::Plugin::bridge_device))
        .and_then(|name| links.iter().find(|l| l.name == name));
    let subnet =
        env.and_then(|e| e.subnet.as_deref()).and_then(parse_cidr).or_else(|| bridge?.addresses.first().copied());
    let pods = subnet.map(|(ip, len)| (network(ip, len), len));
    if let Some(bridge) = bridge {
        spec.bridge = Some(bridge.name.clone());
        match (bridge.addresses.first(), pods) {
            (Some((gateway, _)), Some(pods)) => spec.arrivals.push(Arrival {
                device: bridge.name.clone(),
                source: pod_address(*gateway, pods),
                sender: "a pod of this node".into(),
            }),
            _ => spec.unknown.push((bridge.name.clone(), format!("{} has no pod subnet address", bridge.name))),
        }
    }
    if let Some(dev) = overlay {
        match probed.iter().find(|p| p.vtep.is_some()) {
            Some(peer) => spec.arrivals.push(Arrival {
                device: dev.name.clone(),
                source: peer.vtep.unwrap_or(Ipv4Addr::UNSPECIFIED),
                sender: format!("peer {}'s VTEP", peer.name),
            }),
            None => spec.unknown.push((dev.name.clone(), "no peer's overlay address is known".into())),
        }
        let underlay = dev.local.and_then(|local| links.iter().find(|l| l.addresses.iter().any(|(a, _)| *a == local)));
        match (underlay, probed.first()) {
            (Some(link), Some(peer)) => spec.arrivals.push(Arrival {
                device: link.name.clone(),
                source: peer.underlay,
                sender: format!("peer {}", peer.name),
            }),
            (Some(link), None) => spec.unknown.push((link.name.clone(), "no peer is known".into())),
            (None, _) => {
                spec.unknown.push(("underlay".into(), format!("no device holds {}'s local address", dev.name)));
            }
        }
    }
    Job::Prerequisites { spec, pods }
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip.parse().ok()?, len))
}

fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    Ipv4Addr::from(u32::from(ip) & mask)
}

/// An address of the pod subnet that is not the gateway's: the one after it, or before it
/// at the subnet's end.
fn pod_address(gateway: Ipv4Addr, (subnet, len): (Ipv4Addr, u8)) -> Ipv4Addr {
    let after = Ipv4Addr::from(u32::from(gateway).wrapping_add(1));
    let broadcast = Ipv4Addr::from(u32::from(subnet) | !(u32::MAX << (32 - u32::from(len.min(31)))));
    if len < 31 && network(after, len) == subnet && after != broadcast {
        after
    } else {
        Ipv4Addr::from(u32::from(gateway).wrapping_sub(1))
    }
}

/// The cluster DNS as a pod on this node sees it: clusterDNS and clusterDomain from the
/// kubelet's configuration, the kubelet's search list and ndots:5.
fn dns_spec(files: &NodeFiles, kubeconfig: Option<&Path>, client: Option<kube::Client>) -> Option<dns::Spec> {
    let k = files.kubelet.as_ref()?;
    let servers = k.dns_servers();
    if servers.is_empty() {
        return None;
    }
    let domain = k.cluster_domain.clone().unwrap_or_else(|| "cluster.local".into());
    let conf = dns::ResolvConf {
        nameservers: servers,
        search: vec![format!("default.svc.{domain}"), format!("svc.{domain}"), domain.clone()],
        ndots: 5,
        timeout: Duration::from_secs(5),
        attempts: 2,
        ignored: Vec::new(),
    };
    Some(dns::Spec {
        upstreams: discovery::node_upstreams(&files.root, k.resolv_conf.as_deref()),
        cluster_domain: domain,
        discover: Some(dns::Discover {
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            host_root: files.root.clone(),
            client,
        }),
        ..dns::Spec::new("kubernetes.default", conf)
    })
}

fn kubelet_job(ip: Ipv4Addr, port: u16, healthz_port: u16) -> Job {
    Job::Kubelet {
        target: Target { host: ip.to_string(), port },
        healthz_port,
        resolver: None,
        self_signed_warns: true,
    }
}

/// The API's nodes and where they take VXLAN traffic (flannel's public IP, else the InternalIP);
/// empty when the API cannot be asked (the DNS check's endpoints row already says why).
async fn api_nodes(root: &Path, kubeconfig: Option<&Path>, timeout: Duration) -> Vec<(String, Ipv4Addr)> {
    let listed = async {
        let client = discovery::api::client(kubeconfig, root, timeout).await?;
        discovery::nodes::list(client).await
    };
    match tokio::time::timeout(timeout, listed).await {
        Ok(Ok((nodes, _))) => overlay_peers(&nodes),
        Ok(Err(e)) => {
            tracing::debug!("nodes not listed from the API: {e}");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// Each node's name and the IPv4 address its VXLAN traffic goes to.
fn overlay_peers(nodes: &[NodeInfo]) -> Vec<(String, Ipv4Addr)> {
    nodes
        .iter()
        .filter_map(|n| match n.overlay_peer() {
            Some(IpAddr::V4(v4)) => Some((n.name.clone(), v4)),
            _ => None,
        })
        .collect()
}

/// The peers: the VXLAN device's FDB destinations and the API's nodes (so a peer the FDB lost
/// is still checked), named by the API where it knows them, with the VTEP the neighbour table
/// maps to each; none at an `unavailable` address.
fn peers(dev: &VxlanDevice, api_nodes: &[(String, Ipv4Addr)], unavailable: &[Ipv4Addr]) -> Vec<PeerNode> {
    let mut underlays: Vec<Ipv4Addr> = dev
        .fdb
        .iter()
        .filter_map(|(_, ip)| match ip {
            IpAddr::V4(v4) if Some(*v4) != dev.local && !v4.is_unspecified() && !v4.is_multicast() => Some(*v4),
            _ => None,
        })
        .collect();
    underlays.extend(api_nodes.iter().map(|(_, ip)| *ip).filter(|ip| Some(*ip) != dev.local));
    let unavailable: std::collections::HashSet<&Ipv4Addr> = unavailable.iter().collect();
    underlays.retain(|ip| !unavailable.contains(ip));
    underlays.sort_unstable();
    underlays.dedup();
    // By address, once: a flannel node's FDB has an entry per peer, so a scan per peer would
    // be quadratic in the cluster's size (25 M comparisons a cycle at 5,000 nodes).
    let names: std::collections::HashMap<Ipv4Addr, &str> =
        api_nodes.iter().rev().map(|(n, ip)| (*ip, n.as_str())).collect();
    let neighbours: std::collections::HashMap<&Mac, Ipv4Addr> = dev
        .neighbours
        .iter()
        .rev()
        .filter_map(|(ip, mac)| match ip {
            IpAddr::V4(v4) => Some((mac, *v4)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut macs: std::collections::HashMap<Ipv4Addr, &Mac> = std::collections::HashMap::new();
    for (mac, ip) in &dev.fdb {
        if let IpAddr::V4(v4) = ip {
            macs.entry(*v4).or_insert(mac);
        }
    }
    underlays
        .into_iter()
        .map(|underlay| {
            let name = names.get(&underlay).map_or_else(|| underlay.to_string(), |n| (*n).to_string());
            let vtep = macs.get(&underlay).and_then(|mac| neighbours.get(mac)).copied();
            PeerNode { name, underlay, vtep }
        })
        .collect()
}

/// For each peer: the tunnel, the path MTU to its VTEP and its kubelet.
fn peer_jobs(
    dev: &VxlanDevice,
    files: &NodeFiles,
    peers: &[PeerNode],
    kubelet_port: u16,
    healthz_port: u16,
) -> Vec<Job> {
    let cni_mtu = files.subnet_env.as_ref().and_then(|(env, path)| env.mtu.map(|m| (m, path.clone())));
    let mut jobs = Vec::new();
    for peer in peers {
        let mut push = |job| jobs.push(Job::Peer { name: peer.name.clone(), job: Box::new(job) });
        push(Job::Vxlan(vxlan::Spec {
            peer: peer.underlay,
            port: dev.port.unwrap_or(probe_common::FLANNEL_VXLAN_PORT),
            vni: dev.vni,
            device: Some(dev.name.clone()),
        }));
        if let Some(vtep) = peer.vtep {
            push(Job::Mtu(mtu::Spec { host: vtep, max: None, cni_mtu: cni_mtu.clone() }));
        }
        push(kubelet_job(peer.underlay, kubelet_port, healthz_port));
    }
    jobs
}
