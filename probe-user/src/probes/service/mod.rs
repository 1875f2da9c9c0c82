//! `check service`: a Service port walked the way an operator does it by hand. The Service and
//! its EndpointSlices from the API; kube-proxy's health and mode; its rules for the port (iptables
//! mode in both backends, nftables mode, IPVS mode); the Service IP probed several times, each probe's endpoint read from
//! the conntrack entry of its own tuple (the reply's source after the DNAT); each endpoint probed
//! directly; for UDP the Service IP's conntrack entries that point at no endpoint; and for a
//! NodePort Service its port on this node and on other nodes ([`nodeport`]).
//!
//! UDP is probed with a DNS query (a Service over UDP is nearly always DNS): any DNS answer,
//! whatever its code, is the endpoint answering.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::rr::{Name, RecordType};
use kube::Client;

use super::{
    Target,
    dns::{
        Discover,
        query::{self, Transport},
    },
    kubelet, tcp,
};
use crate::{
    capture::{Capture, event::KernelEvent},
    discovery::{
        conntrack::{self, CtError, Entry, L4, Tuple4},
        iptables::{self, Backend, ReadError},
        ipvs,
        kube_proxy::{self, Programmed},
        kube_proxy_ipvs, kube_proxy_nft,
        services::{self, ServicePort, Wanted},
    },
};

/// kube-proxy's metrics port (`/proxyMode`), bound to 127.0.0.1 by default, and its health port
/// (`/healthz`), bound to every address (k/k pkg/proxy/apis/config/v1alpha1/defaults.go).
pub mod nodeport;

pub const KUBE_PROXY_METRICS_PORT: u16 = 10249;
pub const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;

#[derive(Debug, Clone)]
pub struct Spec {
    pub wanted: Wanted,
    /// The protocol asked for (`--udp`); by default the Service port's, else TCP.
    pub l4: Option<L4>,
    /// Probes of the Service IP (kube-proxy picks an endpoint per connection).
    pub probes: usize,
    /// Other nodes whose NodePort is probed besides this node's.
    pub node_port_peers: usize,
    pub discover: Option<Discover>,
}

/// What one probe got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Answered,
    Refused,
    TimedOut,
    /// No route: nothing was sent (and so nothing was DNATed).
    NoRoute(String),
    Failed(String),
}

impl Answer {
    pub fn ok(&self) -> bool {
        *self == Self::Answered
    }
}

/// One probe: its flow, what it got, the kernel's events and its conntrack entry.
#[derive(Debug)]
pub struct Attempt {
    pub local: Option<SocketAddr>,
    pub answer: Answer,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
    /// The entry of the probe's own tuple (`None` when the table had none).
    pub conntrack: Option<Result<Option<Entry>, String>>,
}

impl Attempt {
    /// Where conntrack says the DNAT sent this probe.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.conntrack.as_ref()?.as_ref().ok()?.as_ref()?.dnat_to()
    }
}

/// kube-proxy as it answers on this node.
#[derive(Debug, Clone)]
pub struct KubeProxy {
    pub mode: Result<String, String>,
    pub healthz: Result<(u16, String), String>,
}

/// One backend's rules for the port.
#[derive(Debug, Clone)]
pub struct Rules {
    pub backend: Backend,
    pub programmed: Result<Programmed, ReadError>,
}

#[derive(Debug)]
pub struct Report {
    pub wanted: Wanted,
    pub service: Result<ServicePort, String>,
    /// The API answered and has no such Service or port (not: the API could not be asked).
    pub absent: bool,
    pub vip: Option<SocketAddr>,
    pub l4: L4,
    pub kube_proxy: KubeProxy,
    /// The backends that hold rules (an unused one is left out), or why none could be read.
    pub rules: Vec<Rules>,
    pub vip_probes: Vec<Attempt>,
    pub endpoint_probes: Vec<(SocketAddr, Attempt)>,
    /// UDP: the Service IP's entries whose reply comes from no endpoint (kube-proxy deletes
    /// these after each sync; one left pins clients to a deleted pod).
    pub stale: Option<Result<Vec<Entry>, String>>,
    /// A NodePort Service: kube-proxy's rules for the port on this node (as [`Self::rules`]),
    /// and the port probed on this node and others.
    pub node_port_rules: Vec<Rules>,
    pub node_ports: Option<nodeport::NodePorts>,
    pub elapsed: Duration,
}

pub async fn run(spec: Spec, deadline: Duration, capture: Option<Arc<Capture>>) -> Report {
    let started = Instant::now();
    let (service, client, absent) = match find(&spec, deadline / 4).await {
        Ok((p, c)) => (Ok(p), Some(c), false),
        Err((e, absent)) => (Err(e), None, absent),
    };
    let node_port = service.as_ref().ok().and_then(|p| p.node_port);
    let (vip, l4) = match (&service, &spec.wanted) {
        (Ok(p), _) => (p.vip(), spec.l4.unwrap_or(p.l4)),
        (Err(_), Wanted::Address(a)) => (Some(*a), spec.l4.unwrap_or(L4::Tcp)),
        (Err(_), Wanted::Named { .. }) => (None, spec.l4.unwrap_or(L4::Tcp)),
    };
    let budget = deadline.saturating_sub(started.elapsed());
    let kube_proxy = async {
        let (mode, healthz) = tokio::join!(
            kubelet::get(Ipv4Addr::LOCALHOST.into(), KUBE_PROXY_METRICS_PORT, "/proxyMode", budget / 2),
            kubelet::get(Ipv4Addr::LOCALHOST.into(), KUBE_PROXY_HEALTHZ_PORT, "/healthz", budget / 2),
        );
        let mode = match mode {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
            Err(e) => Err(e),
        };
        KubeProxy { mode, healthz }
    };
    let rules = async {
        match vip {
            Some(vip) => read_rules(vip, l4, node_port, budget / 2).await,
            None => (Vec::new(), Vec::new()),
        }
    };
    let probes = async {
        let Some(vip) = vip else { return Vec::new() };
        let each = (0..spec.probes.max(1)).map(|_| attempt(vip, l4, budget / 2, capture.clone(), true));
        futures_util::future::join_all(each).await
    };
    let (kube_proxy, (rules, node_port_rules), vip_probes) = tokio::join!(kube_proxy, rules, probes);
    // Every endpoint the API lists, else every one the rules DNAT to.
    let mut targets: Vec<SocketAddr> = match &service {
        Ok(p) => p.endpoints.iter().map(|e| e.addr).collect(),
        Err(_) => Vec::new(),
    };
    if targets.is_empty() {
        for r in &rules {
            if let Ok(Programmed::Endpoints { endpoints, .. }) = &r.programmed {
                targets.extend(endpoints.iter().filter(|e| !targets.contains(e)).copied().collect::<Vec<_>>());
            }
        }
    }
    let remaining = deadline.saturating_sub(started.elapsed());
    let direct = targets.iter().map(|t| attempt(*t, l4, remaining, capture.clone(), false));
    let node_ports = async {
        match (&service, client, node_port) {
            (Ok(port), Some(client), Some(np)) => {
                Some(nodeport::run(port, np, client, spec.node_port_peers, remaining, capture.clone()).await)
            }
            _ => None,
        }
    };
    let (direct, node_ports) = tokio::join!(futures_util::future::join_all(direct), node_ports);
    let endpoint_probes = targets.iter().copied().zip(direct).collect();
    let stale = match (vip, l4, &service) {
        (Some(vip), L4::Udp, Ok(port)) => {
            let own: Vec<SocketAddr> = vip_probes.iter().filter_map(|a| a.local).collect();
            Some(stale(vip, port, &own, remaining).await)
        }
        _ => None,
    };
    Report {
        wanted: spec.wanted,
        service,
        absent,
        vip,
        l4,
        kube_proxy,
        rules,
        vip_probes,
        endpoint_probes,
        stale,
        node_port_rules,
        node_ports,
        elapsed: started.elapsed(),
    }
}

/// kube-proxy's rules on this node for the Service port and for its NodePort: every iptables
/// backend that holds them, and its nftables table when it has one.
async fn read_rules(vip: SocketAddr, l4: L4, node_port: Option<u16>, budget: Duration) -> (Vec<Rules>, Vec<Rules>) {
    let (reading, nft, ipvs) = tokio::join!(iptables::read(budget), kube_proxy_nft::read(budget), ipvs::read(budget));
    let mut found = rules(&reading, |set, b| kube_proxy::iptables_rules(set, b, vip, l4));
    let mut np_found = match node_port {
        Some(np) => rules(&reading, |set, b| kube_proxy::iptables_node_port(set, b, np, l4)),
        None => Vec::new(),
    };
    match nft {
        Ok(Some(table)) => {
            np_found.retain(|r| !matches!(r.programmed, Ok(Programmed::Missing)));
            if let Some(np) = node_port {
                let programmed = Ok(kube_proxy_nft::node_port(&table, np, l4));
                np_found.push(Rules { backend: Backend::NftablesMode, programmed });
            }
            // kube-proxy's table is there: it runs in nftables mode, and iptables' backends
            // (flannel's rules, say) matter only where they hold something for this Service.
            found.retain(|r| !matches!(r.programmed, Ok(Programmed::Missing)));
            found
                .push(Rules { backend: Backend::NftablesMode, programmed: Ok(kube_proxy_nft::rules(&table, vip, l4)) });
        }
        // No table (kube-proxy in another mode), or no nft to read one with: iptables says.
        Ok(None) | Err(ReadError::NoTool { .. } | ReadError::NoCapability) => {}
        Err(e) => found.push(Rules { backend: Backend::NftablesMode, programmed: Err(e) }),
    }
    match ipvs {
        // Virtual servers: kube-proxy runs in IPVS mode, whose iptables rules (ipset matches)
        // hold no per-Service DNAT; the table is read without CAP_NET_ADMIN too (procfs), so
        // iptables' unread backends do not stop the verdict.
        Ok(Some(table)) if !table.services.is_empty() => {
            let ipvs_mode =
                |r: &Rules| matches!(r.programmed, Ok(Programmed::Endpoints { .. } | Programmed::Rejected { .. }));
            found.retain(ipvs_mode);
            np_found.retain(ipvs_mode);
            let local = super::nat::local_addresses();
            let backend = kube_proxy_ipvs::backend(&table);
            let programmed = kube_proxy_ipvs::rules(&table, vip, l4, local.contains(&vip.ip()));
            found.push(Rules { backend, programmed: Ok(programmed) });
            if let Some(np) = node_port {
                np_found.push(Rules { backend, programmed: Ok(kube_proxy_ipvs::node_port(&table, &local, np, l4)) });
            }
        }
        // No IPVS, or an empty table (ip_vs loaded by something else): not IPVS mode.
        Ok(_) | Err(ReadError::NoCapability) => {}
        Err(e) => found.push(Rules { backend: Backend::Ipvs { procfs: false }, programmed: Err(e) }),
    }
    // A backend that holds no rule for this Service beside one that does is the one
    // kube-proxy does not use (a node keeps flannel's iptables rules in nftables mode).
    for set in [&mut found, &mut np_found] {
        if set.iter().any(|r| matches!(r.programmed, Ok(Programmed::Endpoints { .. } | Programmed::Rejected { .. }))) {
            set.retain(|r| !matches!(r.programmed, Ok(Programmed::Missing)));
        }
    }
    (found, np_found)
}

/// The Service port and the API's client, or why not and whether the API said it has none.
async fn find(spec: &Spec, budget: Duration) -> Result<(ServicePort, Client), (String, bool)> {
    let Some(d) = &spec.discover else { return Err(("no Kubernetes API asked (--no-api)".into(), false)) };
    let asked = async {
        let client = match &d.client {
            Some(c) => c.clone(),
            None => crate::discovery::api::client(d.kubeconfig.as_deref(), &d.host_root, budget)
                .await
                .map_err(|e| (crate::error::chain(&e), false))?,
        };
        let port = services::find(client.clone(), &spec.wanted, spec.l4).await.map_err(|e| {
            let absent = matches!(e, services::FindError::NoService(_) | services::FindError::NoPort(_));
            (crate::error::chain(&e), absent)
        })?;
        Ok((port, client))
    };
    tokio::time::timeout(budget, asked).await.unwrap_or_else(|_| Err(("the API did not answer in time".into(), false)))
}

/// What each iptables backend's ruleset does, as `follow` reads it.
fn rules(reading: &iptables::Reading, follow: impl Fn(&iptables::Ruleset, Backend) -> Programmed) -> Vec<Rules> {
    let mut out = Vec::new();
    for (backend, set) in [(Backend::Nft, &reading.nft), (Backend::Legacy, &reading.legacy)] {
        match set {
            Ok(set) if set.is_empty() => {}
            Ok(set) => out.push(Rules { backend, programmed: Ok(follow(set, backend)) }),
            // A backend whose tool is absent holds nothing netcheck can read; say so only when
            // no backend could be read at all.
            Err(ReadError::NoTool { .. }) => {}
            Err(e) => out.push(Rules { backend, programmed: Err(e.clone()) }),
        }
    }
    if out.is_empty()
        && let (Err(e), _) | (_, Err(e)) = (&reading.nft, &reading.legacy)
    {
        out.push(Rules { backend: Backend::Nft, programmed: Err(e.clone()) });
    }
    out
}

/// One probe of `to`; `via_nat` reads the probe's conntrack entry after it.
pub(crate) async fn attempt(
    to: SocketAddr,
    l4: L4,
    deadline: Duration,
    capture: Option<Arc<Capture>>,
    via_nat: bool,
) -> Attempt {
    let started = Instant::now();
    let (local, answer, events) = match l4 {
        L4::Tcp => {
            let r =
                tcp::probe(&Target { host: to.ip().to_string(), port: to.port() }, deadline, capture.as_deref()).await;
            let answer = match r.outcome {
                tcp::Outcome::Connected => Answer::Answered,
                tcp::Outcome::TimedOut => Answer::TimedOut,
                tcp::Outcome::NoRoute(e) => Answer::NoRoute(e.to_string()),
                tcp::Outcome::Failed(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Answer::Refused,
                tcp::Outcome::Failed(e) | tcp::Outcome::Unresolved(e) => Answer::Failed(e.to_string()),
            };
            (r.local, answer, r.events)
        }
        L4::Udp => {
            let name = Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap_or_else(|_| Name::root());
            let q = query::query(to, &name, RecordType::A, Transport::Udp, deadline, capture.as_deref()).await;
            let answer = match &q.outcome {
                o if o.is_answer() || o.is_error_rcode() => Answer::Answered,
                query::Outcome::Truncated => Answer::Answered,
                query::Outcome::TimedOut => Answer::TimedOut,
                query::Outcome::PortRefused => Answer::Refused,
                query::Outcome::NoRoute(e) => Answer::NoRoute(e.clone()),
                other => Answer::Failed(other.to_string()),
            };
            (q.local, answer, q.events)
        }
    };
    let elapsed = started.elapsed();
    let conntrack = match (via_nat, local) {
        (true, Some(src)) => {
            let orig = Tuple4 { l4, src, dst: to };
            let got = tokio::task::spawn_blocking(move || conntrack::get(&orig, Duration::from_secs(1)))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            Some(got)
        }
        _ => None,
    };
    Attempt { local, answer, elapsed, events, conntrack }
}

/// The Service IP's UDP entries answered by no endpoint of the port (not counting the probes'
/// own, from `own`).
async fn stale(
    vip: SocketAddr,
    port: &ServicePort,
    own: &[SocketAddr],
    deadline: Duration,
) -> Result<Vec<Entry>, String> {
    let ip = vip.ip();
    let entries = tokio::task::spawn_blocking(move || {
        conntrack::to_address(ip, L4::Udp, deadline.max(Duration::from_millis(200)))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e: CtError| e.to_string())?;
    let serving: Vec<IpAddr> = port.endpoints.iter().filter(|e| e.serving).map(|e| e.addr.ip()).collect();
    Ok(entries
        .into_iter()
        .filter(|e| e.orig.dst.port() == vip.port() && !own.contains(&e.orig.src))
        .filter(|e| !serving.contains(&e.answered_by().ip()))
        .collect())
}
