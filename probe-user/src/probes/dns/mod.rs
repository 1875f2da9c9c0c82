//! DNS probe. A name is first resolved the way a pod's resolver does it (resolv.conf: search
//! list, `ndots`, servers in order), recording every expansion asked and what came back. Then
//! each rung of the cluster's DNS ladder is asked directly, over UDP and TCP: the configured
//! servers (the kube-dns Service IP), the CoreDNS endpoints behind it and the upstream
//! resolvers CoreDNS forwards to.
//!
//! Every query leaves from a socket bound to a known local endpoint, so the kernel's drops,
//! resets and ICMP errors of exactly that query become its evidence, also after a Service IP
//! was DNATed to an endpoint (the local side is untouched).

mod lookup;
pub(crate) mod query;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::rr::{Name, RecordType};
use serde::Serialize;

use crate::capture::Capture;

pub const PORT: u16 = 53;

pub use self::{
    lookup::{Lookup, lookup},
    query::{Outcome, QueryReport, Transport, parse_response, query},
};
pub use crate::discovery::resolv_conf::{ResolvConf, check_name};

/// Which part of the DNS path a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A server the resolver is configured with (the kube-dns Service IP).
    Server,
    /// A CoreDNS pod behind the Service.
    Endpoint,
    /// A resolver CoreDNS forwards to.
    Upstream,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Endpoint => "endpoint",
            Self::Upstream => "upstream",
        }
    }

    /// Queries per transport: a Service is sampled more (its DNAT picks an endpoint per flow).
    pub fn samples(self) -> (usize, usize) {
        match self {
            Self::Server => (4, 2),
            Self::Endpoint | Self::Upstream => (2, 1),
        }
    }
}

/// A rung of the ladder: one server asked directly.
#[derive(Debug, Clone)]
pub struct Rung {
    pub role: Role,
    pub server: SocketAddr,
    pub name: Name,
    /// Why it was not asked (e.g. upstreams for a cluster name).
    pub skipped: Option<String>,
    pub queries: Vec<QueryReport>,
}

/// What `check dns NAME` asks.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub rtype: RecordType,
    pub conf: ResolvConf,
    pub servers: Vec<IpAddr>,
    pub endpoints: Vec<IpAddr>,
    pub upstreams: Vec<IpAddr>,
    pub cluster_domain: String,
    /// Ask the Kubernetes API for the CoreDNS endpoints (when none were given).
    pub discover: Option<Discover>,
}

/// Where the API is: `--kubeconfig`, else the usual places (see `discovery::api::client`); or
/// a client made already (the agent's, for its life).
#[derive(Clone, Default)]
pub struct Discover {
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The node root the kubeconfig may live under (its absolute references are rebased).
    pub host_root: std::path::PathBuf,
    pub client: Option<kube::Client>,
}

impl std::fmt::Debug for Discover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discover")
            .field("kubeconfig", &self.kubeconfig)
            .field("host_root", &self.host_root)
            .field("client", &self.client.as_ref().map(|_| "given"))
            .finish()
    }
}

/// Everything the verdicts need.
#[derive(Debug, Clone)]
pub struct Report {
    pub spec: Spec,
    pub expansions: Vec<Name>,
    pub lookup: Lookup,
    pub rungs: Vec<Rung>,
    pub elapsed: Duration,
    /// Why the API gave no endpoints, when it was asked and could not.
    pub discovery_failed: Option<String>,
}

impl Spec {
    /// An A lookup of `name` with `conf` and nothing else: no extra servers, endpoints,
    /// upstreams or API discovery, cluster domain `cluster.local`.
    pub fn new(name: &str, conf: ResolvConf) -> Self {
        Self {
            name: name.to_string(),
            rtype: RecordType::A,
            conf,
            servers: Vec::new(),
            endpoints: Vec::new(),
            upstreams: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            discover: None,
        }
    }

    /// The servers asked as the `server` rung: resolv.conf's and `--server`'s, once each.
    pub fn server_rungs(&self) -> Vec<IpAddr> {
        let mut v = self.conf.nameservers.clone();
        for s in &self.servers {
            if !v.contains(s) {
                v.push(*s);
            }
        }
        v
    }
}

/// The name the rungs ask: the expansion that answered, else the first one no server answered
/// negatively (where the walk stopped), else the first expansion.
fn rung_name(expansions: &[Name], lookup: &Lookup) -> Option<Name> {
    if let Some(a) = lookup.answer() {
        return Some(a.name.clone());
    }
    let negative = |n: &Name| lookup.queries.iter().any(|q| &q.name == n && matches!(q.outcome, Outcome::NxDomain));
    expansions.iter().find(|n| !negative(n)).or_else(|| expansions.first()).cloned()
}

/// Whether `name` lies in the cluster's own domain (CoreDNS answers it without upstreams).
pub fn in_domain(name: &Name, domain: &str) -> bool {
    let n = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let d = domain.trim_matches('.').to_ascii_lowercase();
    !d.is_empty() && (n == d || n.ends_with(&format!(".{d}")))
}

/// Runs the lookup, then every rung at once; all within `deadline`.
pub async fn run(spec: Spec, deadline: Duration, capture: Option<Arc<Capture>>) -> Report {
    let started = Instant::now();
    let expansions = spec.conf.expansions(&spec.name).unwrap_or_default();
    let has_rungs = !spec.server_rungs().is_empty()
        || !spec.endpoints.is_empty()
        || spec.discover.is_some()
        || !spec.upstreams.is_empty();
    // Half the time for the resolver's walk, the rest (at least half) for the rungs.
    let budget = if has_rungs { deadline / 2 } else { deadline };
    // The API is asked while the resolver walks (both within the first half).
    let discovery = async {
        let d = spec.discover.as_ref()?;
        let asked = async {
            let client = match &d.client {
                Some(c) => c.clone(),
                None => crate::discovery::api::client(d.kubeconfig.as_deref(), &d.host_root, budget).await?,
            };
            crate::discovery::api::service_endpoints(client, crate::discovery::api::DNS_SERVICE).await
        };
        Some(tokio::time::timeout(budget, asked).await.unwrap_or(Err(crate::discovery::api::ApiError::Timeout)))
    };
    let (lookup, discovered) =
        tokio::join!(lookup(&spec.conf, &expansions, spec.rtype, budget, capture.as_deref()), discovery);
    let mut spec = spec;
    let discovery_failed = match discovered {
        Some(Ok(ips)) if !ips.is_empty() => {
            spec.endpoints = ips;
            None
        }
        Some(Ok(_)) => Some("the kube-dns Service has no ready endpoints in its EndpointSlices".to_string()),
        Some(Err(why)) => Some(why.to_string()),
        None => None,
    };
    let name = rung_name(&expansions, &lookup);
    let mut rungs = Vec::new();
    if let Some(name) = name {
        let mut by_rung = std::collections::BTreeMap::new();
        let remaining = deadline.saturating_sub(started.elapsed());
        let mut planned: Vec<(Role, IpAddr)> = spec.server_rungs().into_iter().map(|s| (Role::Server, s)).collect();
        planned.extend(spec.endpoints.iter().map(|e| (Role::Endpoint, *e)));
        planned.extend(spec.upstreams.iter().map(|u| (Role::Upstream, *u)));
        let mut set = tokio::task::JoinSet::new();
        for (i, (role, ip)) in planned.into_iter().enumerate() {
            let server = SocketAddr::new(ip, PORT);
            if role == Role::Upstream && in_domain(&name, &spec.cluster_domain) {
                let why = format!("not asked: {} names are the cluster DNS's own", spec.cluster_domain);
                by_rung.insert(i, Rung { role, server, name: name.clone(), skipped: Some(why), queries: Vec::new() });
                continue;
            }
            let (udp_n, tcp_n) = role.samples();
            let transports =
                std::iter::repeat_n(Transport::Udp, udp_n).chain(std::iter::repeat_n(Transport::Tcp, tcp_n));
            for t in transports {
                let (name, capture, rtype) = (name.clone(), capture.clone(), spec.rtype);
                set.spawn(async move {
                    let q = query(server, &name, rtype, t, remaining, capture.as_deref()).await;
                    (i, role, q)
                });
            }
        }
        while let Some(joined) = set.join_next().await {
            if let Ok((i, role, q)) = joined {
                by_rung
                    .entry(i)
                    .or_insert_with(|| Rung {
                        role,
                        server: q.server,
                        name: q.name.clone(),
                        skipped: None,
                        queries: vec![],
                    })
                    .queries
                    .push(q);
            }
        }
        rungs = by_rung.into_values().collect();
        for r in &mut rungs {
            // UDP first, then TCP, each in the order they were sent.
            r.queries.sort_by_key(|q| (q.transport == Transport::Tcp, q.local.map(|l| l.port())));
        }
    }
    Report { spec, expansions, lookup, rungs, elapsed: started.elapsed(), discovery_failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_domain_membership() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        assert!(in_domain(&n("kubernetes.default.svc.cluster.local."), "cluster.local"));
        assert!(!in_domain(&n("www.example.com."), "cluster.local"));
        assert!(!in_domain(&n("notcluster.local."), "cluster.local"));
    }
}
