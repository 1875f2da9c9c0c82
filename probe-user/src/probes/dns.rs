//! DNS probe. A name is first resolved the way a pod's resolver does it (resolv.conf: search
//! list, `ndots`, servers in order), recording every expansion asked and what came back. Then
//! each rung of the cluster's DNS ladder is asked directly, over UDP and TCP: the configured
//! servers (the kube-dns Service IP), the CoreDNS endpoints behind it and the upstream
//! resolvers CoreDNS forwards to.
//!
//! Every query leaves from a socket bound to a known local endpoint, so the kernel's drops,
//! resets and ICMP errors of exactly that query become its evidence, also after a Service IP
//! was DNATed to an endpoint (the local side is untouched).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UdpSocket,
};

use super::{
    Target,
    tcp::{self, source_address},
};
use crate::capture::{Capture, FlowMatcher, Watch, event::KernelEvent};

pub const PORT: u16 = 53;

pub use crate::discovery::resolv_conf::{ResolvConf, check_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// What one query got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with records of the type asked (as text: addresses, names).
    Answer(Vec<String>),
    /// NOERROR without records of the type asked.
    NoData,
    NxDomain,
    ServFail,
    Refused,
    /// Another response code (FORMERR, NOTIMP, ...).
    Rcode(String),
    /// A UDP answer with TC set: the full answer needs TCP.
    Truncated,
    /// No answer within the deadline.
    TimedOut,
    /// ICMP port unreachable (UDP) or a RST (TCP): nothing listens there.
    PortRefused,
    /// ICMP host/network unreachable or prohibited came back.
    Unreachable(String),
    /// No route from this namespace (nothing was sent).
    NoRoute(String),
    /// A local netfilter rule refused the packet (EPERM).
    Blocked,
    /// The answer was not DNS, or another local error.
    Failed(String),
}

impl Outcome {
    /// The server answered for the name (positively or negatively): the server works.
    pub fn is_answer(&self) -> bool {
        matches!(self, Self::Answer(_) | Self::NoData | Self::NxDomain)
    }

    /// The server itself answered, with an error code.
    pub fn is_error_rcode(&self) -> bool {
        matches!(self, Self::ServFail | Self::Refused | Self::Rcode(_))
    }

    /// A short stable word for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Answer(_) => "answer",
            Self::NoData => "nodata",
            Self::NxDomain => "nxdomain",
            Self::ServFail => "servfail",
            Self::Refused => "refused",
            Self::Rcode(_) => "rcode",
            Self::Truncated => "truncated",
            Self::TimedOut => "timeout",
            Self::PortRefused => "port_unreachable",
            Self::Unreachable(_) => "unreachable",
            Self::NoRoute(_) => "no_route",
            Self::Blocked => "blocked",
            Self::Failed(_) => "error",
        }
    }

    fn from_io(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Self::PortRefused,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Self::Unreachable(e.to_string()),
            Some(libc::EPERM) => Self::Blocked,
            Some(libc::ETIMEDOUT) => Self::TimedOut,
            _ => Self::Failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answer(records) => write!(f, "{}", records.join(", ")),
            Self::NoData => f.write_str("no records of that type (NODATA)"),
            Self::NxDomain => f.write_str("NXDOMAIN"),
            Self::ServFail => f.write_str("SERVFAIL"),
            Self::Refused => f.write_str("REFUSED"),
            Self::Rcode(r) => f.write_str(r),
            Self::Truncated => f.write_str("truncated (TC): needs TCP"),
            Self::TimedOut => f.write_str("no answer"),
            Self::PortRefused => f.write_str("port unreachable: nothing listens there"),
            Self::Unreachable(e) | Self::NoRoute(e) | Self::Failed(e) => f.write_str(e),
            Self::Blocked => f.write_str("blocked by netfilter on this host"),
        }
    }
}

/// One query and what the kernel saw of it.
#[derive(Debug, Clone)]
pub struct QueryReport {
    pub server: SocketAddr,
    pub name: Name,
    pub transport: Transport,
    pub local: Option<SocketAddr>,
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
}

/// Asks `server` for `name`/`rtype` once over `transport`, within `deadline`.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    transport: Transport,
    deadline: Duration,
    capture: Option<&Capture>,
) -> QueryReport {
    let started = Instant::now();
    let id = super::fresh_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let (local, outcome, events, elapsed) = match msg.to_vec() {
        Ok(wire) => match transport {
            Transport::Udp => udp(server, &wire, id, deadline, capture).await,
            Transport::Tcp => tcp_query(server, &wire, id, deadline, capture).await,
        },
        Err(e) => (None, Outcome::Failed(format!("building the query: {e}")), Vec::new(), started.elapsed()),
    };
    QueryReport { server, name: name.clone(), transport, local, outcome, elapsed, events }
}

/// Local endpoint, outcome, the kernel's events, and how long the exchange took.
type Sent = (Option<SocketAddr>, Outcome, Vec<KernelEvent>, Duration);

async fn udp(server: SocketAddr, wire: &[u8], id: u16, deadline: Duration, capture: Option<&Capture>) -> Sent {
    let started = Instant::now();
    let local_ip = match source_address(server) {
        Ok(ip) => ip,
        Err(e) => return (None, Outcome::NoRoute(e.to_string()), Vec::new(), started.elapsed()),
    };
    let socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => return (None, Outcome::from_io(&e), Vec::new(), started.elapsed()),
    };
    let local = socket.local_addr().ok();
    let watch = local.and_then(|l| capture.map(|c| c.watch(FlowMatcher::udp(l))));
    let exchange = async {
        // A connected socket: ICMP errors for the flow come back as errors of recv.
        socket.connect(server).await?;
        socket.send(wire).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).await?;
            if let Some(outcome) = parse_response(&buf[..n], id) {
                return Ok::<_, io::Error>(outcome);
            }
        }
    };
    let remaining = deadline.saturating_sub(started.elapsed());
    let outcome = match tokio::time::timeout(remaining, exchange).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::from_io(&e),
        Err(_) => Outcome::TimedOut,
    };
    let elapsed = started.elapsed();
    (local, outcome, watch.map(Watch::finish_in_task).unwrap_or_default(), elapsed)
}

async fn tcp_query(server: SocketAddr, wire: &[u8], id: u16, deadline: Duration, capture: Option<&Capture>) -> Sent {
    let started = Instant::now();
    let target = Target { host: server.ip().to_string(), port: server.port() };
    let (report, stream) = tcp::connect(&target, deadline, capture).await;
    let Some(mut stream) = stream else {
        let outcome = match report.outcome {
            tcp::Outcome::TimedOut => Outcome::TimedOut,
            tcp::Outcome::NoRoute(e) => Outcome::NoRoute(e.to_string()),
            tcp::Outcome::Failed(e) | tcp::Outcome::Unresolved(e) => Outcome::from_io(&e),
            tcp::Outcome::Connected => Outcome::Failed("connected without a stream".into()),
        };
        return (report.local, outcome, report.events, report.elapsed);
    };
    let exchange_started = Instant::now();
    let exchange = async {
        let len = u16::try_from(wire.len()).map_err(|_| io::Error::other("query too long"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(wire);
        stream.write_all(&framed).await?;
        loop {
            let n = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(n)];
            stream.read_exact(&mut buf).await?;
            if let Some(outcome) = parse_response(&buf, id) {
                return Ok::<_, io::Error>(outcome);
            }
        }
    };
    let remaining = deadline.saturating_sub(started.elapsed());
    let outcome = match tokio::time::timeout(remaining, exchange).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Outcome::Failed("the server closed the connection without answering".into())
        }
        Ok(Err(e)) => Outcome::from_io(&e),
        Err(_) => Outcome::TimedOut,
    };
    // The handshake's time plus the exchange's, without the wait for the kernel's events.
    (report.local, outcome, report.events, report.elapsed + exchange_started.elapsed())
}

/// The outcome a response carries; `None` when it is not the answer to query `id`.
pub fn parse_response(buf: &[u8], id: u16) -> Option<Outcome> {
    let Ok(msg) = Message::from_vec(buf) else {
        return (buf.len() >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id)
            .then(|| Outcome::Failed("an answer that is not valid DNS".into()));
    };
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return None;
    }
    let qtype = msg.queries.first().map(Query::query_type);
    Some(match msg.metadata.response_code {
        ResponseCode::NoError if msg.metadata.truncation && msg.answers.is_empty() => Outcome::Truncated,
        ResponseCode::NoError => {
            let records: Vec<String> = msg
                .answers
                .iter()
                .filter(|r| Some(r.record_type()) == qtype)
                .map(|r| r.data.ip_addr().map_or_else(|| r.data.to_string(), |ip| ip.to_string()))
                .collect();
            if records.is_empty() { Outcome::NoData } else { Outcome::Answer(records) }
        }
        ResponseCode::NXDomain => Outcome::NxDomain,
        ResponseCode::ServFail => Outcome::ServFail,
        ResponseCode::Refused => Outcome::Refused,
        other => Outcome::Rcode(format!("{other:?}").to_uppercase()),
    })
}

/// The resolver's walk: every query it made, in order, and which one answered.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub queries: Vec<QueryReport>,
    /// Index in `queries` of the answer (records, or NODATA for the last name).
    pub answered: Option<usize>,
    /// The walk stopped because the budget ran out.
    pub out_of_time: bool,
}

impl Lookup {
    pub fn answer(&self) -> Option<&QueryReport> {
        self.answered.and_then(|i| self.queries.get(i))
    }
}

/// Resolves like glibc: for each expansion, the servers in order (`attempts` rounds). An
/// NXDOMAIN or NODATA moves to the next expansion, SERVFAIL or REFUSED to the next server; when
/// no server answered at all the resolver gives up (it does not try further expansions).
pub async fn lookup(
    conf: &ResolvConf,
    expansions: &[Name],
    rtype: RecordType,
    budget: Duration,
    capture: Option<&Capture>,
) -> Lookup {
    let started = Instant::now();
    let mut out = Lookup::default();
    for name in expansions {
        let mut heard_back = false;
        let mut decided = false;
        for _round in 0..conf.attempts {
            for server in &conf.nameservers {
                let remaining = budget.saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    out.out_of_time = true;
                    return out;
                }
                let server = SocketAddr::new(*server, PORT);
                // Each round gets its share of the budget, so a retry (which a Service may send to
                // another endpoint) still fits, as it does in a pod's resolver.
                let per_query = conf.timeout.min(budget / conf.attempts).min(remaining);
                let mut r = query(server, name, rtype, Transport::Udp, per_query, capture).await;
                if r.outcome == Outcome::Truncated {
                    // As resolvers do: the same question again over TCP.
                    out.queries.push(r);
                    let remaining = budget.saturating_sub(started.elapsed());
                    r = query(server, name, rtype, Transport::Tcp, conf.timeout.min(remaining), capture).await;
                }
                let outcome = r.outcome.clone();
                out.queries.push(r);
                match outcome {
                    Outcome::Answer(_) => {
                        out.answered = Some(out.queries.len() - 1);
                        return out;
                    }
                    Outcome::NxDomain | Outcome::NoData => {
                        heard_back = true;
                        decided = true;
                        break;
                    }
                    o if o.is_error_rcode() => heard_back = true,
                    _ => {}
                }
            }
            if decided || heard_back {
                break;
            }
        }
        if !heard_back {
            return out;
        }
    }
    // Every expansion was answered negatively: the last NODATA (if any) is the answer.
    out
}

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

/// Where the API is: `--kubeconfig`, else the usual places (see `discovery::api::client`).
#[derive(Debug, Clone, Default)]
pub struct Discover {
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The node root the kubeconfig may live under (its absolute references are rebased).
    pub host_root: std::path::PathBuf,
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
            let client = crate::discovery::api::client(d.kubeconfig.as_deref(), &d.host_root, budget).await?;
            crate::discovery::api::service_endpoints(client, crate::discovery::api::DNS_SERVICE).await
        };
        Some(tokio::time::timeout(budget, asked).await.unwrap_or_else(|_| Err("the API did not answer in time".into())))
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
        Some(Err(why)) => Some(why),
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

    fn response(id: u16, rcode: ResponseCode, answer: Option<&str>) -> Vec<u8> {
        use hickory_proto::rr::{RData, Record, rdata::A};
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let name = Name::from_ascii("a.example.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        if let Some(ip) = answer {
            m.add_answer(Record::from_rdata(name, 30, RData::A(A(ip.parse().unwrap()))));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn responses_are_read_by_id_and_code() {
        assert_eq!(
            parse_response(&response(7, ResponseCode::NoError, Some("10.0.0.9")), 7),
            Some(Outcome::Answer(vec!["10.0.0.9".into()]))
        );
        assert_eq!(parse_response(&response(7, ResponseCode::NoError, None), 7), Some(Outcome::NoData));
        assert_eq!(parse_response(&response(7, ResponseCode::NXDomain, None), 7), Some(Outcome::NxDomain));
        assert_eq!(parse_response(&response(7, ResponseCode::ServFail, None), 7), Some(Outcome::ServFail));
        assert_eq!(parse_response(&response(8, ResponseCode::NoError, None), 7), None);
        assert_eq!(parse_response(&[0, 7, 1], 7), Some(Outcome::Failed("an answer that is not valid DNS".into())));
        assert_eq!(parse_response(&[], 7), None);
    }
}
