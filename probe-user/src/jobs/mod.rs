//! The work both front ends run: a check command's or the node's jobs, each a probe and its
//! verdict, run concurrently with capture attached. `cli` plans them from a command line, the
//! agent from discovery on every cycle.

pub mod guard;
pub mod node_checks;
pub mod path;
pub mod sampling;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use guard::{Subject, guarded};
use rustls::pki_types::CertificateDer;

use crate::{
    capture::{self, Capture},
    discovery,
    probes::{Target, cert, dns, kubelet, mtu, tcp, vxlan},
    verdict::{self, Probe},
};

/// One unit of work of a `check` command; a PEM file yields a check per certificate.
pub enum Job {
    Tcp(Target),
    CertEndpoint(Target),
    CertFile(PathBuf, Vec<CertificateDer<'static>>),
    Kubeconfig(PathBuf, Vec<discovery::certs::KubeconfigItem>),
    /// Judged while planning (e.g. a discovered file that could not be read).
    Done(Vec<verdict::Check>),
    Kubelet {
        target: Target,
        healthz_port: u16,
        resolver: Option<Arc<dns::ResolvConf>>,
        /// `node`'s: the kubelet's own self-signed certificate is a warning (see
        /// [`verdict::kubelet::endpoint`]).
        self_signed_warns: bool,
    },
    Dns(Box<dns::Spec>),
    /// The API server's endpoint, judged against the kubeconfig's CA.
    ApiServer {
        target: Target,
        roots: Option<Arc<Vec<CertificateDer<'static>>>>,
    },
    Mtu(mtu::Spec),
    Vxlan(vxlan::Spec),
    /// `node`'s netfilter prerequisites, judged against the node's pod subnet when known.
    Prerequisites {
        spec: discovery::prerequisites::Spec,
        pods: Option<(std::net::Ipv4Addr, u8)>,
    },
    /// `check service`: a Service port through kube-proxy.
    Service(Box<crate::probes::service::Spec>),
    /// A job about a peer node: its checks carry the peer's name (`Check::peer`).
    Peer {
        name: String,
        job: Box<Job>,
    },
}

/// Options of `check cert`, shared by its jobs.
#[derive(Clone, Default)]
pub struct CertOptions {
    pub server_name: Option<String>,
    pub roots: Option<Arc<Vec<CertificateDer<'static>>>>,
    pub warn_days: u32,
}

/// A certificate file that could not be read: a failed check, not a usage error.
fn unreadable(path: &Path, e: &crate::error::Error) -> Job {
    Job::Done(vec![verdict::Check::file(
        verdict::Probe::Cert,
        path.display().to_string(),
        verdict::Verdict::fail(verdict::Cause::CertUnreadable, crate::error::chain(e)),
    )])
}

/// The node's certificate files; what cannot be read is a failed check, not a usage error.
pub fn node_pki_jobs(root: &Path) -> Vec<Job> {
    let node = match discovery::node_root::NodeRoot::open(root) {
        Ok(node) => node,
        Err(e) => return vec![unreadable(root, &e.into())],
    };
    let kubelet = discovery::kubelet_config::read(&node);
    pki_jobs(&node, root, kubelet.config.client_ca_file())
}

/// [`node_pki_jobs`] of an open root, client certificates judged against the kubelet's
/// `clientCAFile` (a path inside the root) when it names one.
pub(crate) fn pki_jobs(node: &discovery::node_root::NodeRoot, root: &Path, client_ca_file: Option<&str>) -> Vec<Job> {
    let found = discovery::pki::scan(node);
    // The cluster's client CA as the kubelet names it, read inside the root.
    let client_ca = client_ca_file
        .and_then(|f| node.read(Path::new(f)).ok())
        .and_then(|pem| discovery::certs::pem_certificates(&pem).ok());
    if found.is_empty() {
        let detail = format!("no kubeadm, kubelet or k3s certificates under {}", root.display());
        return vec![Job::Done(vec![verdict::Check::file(
            verdict::Probe::Cert,
            format!("node PKI ({})", root.display()),
            verdict::Verdict::skip(detail),
        )])];
    }
    found
        .into_iter()
        .map(|f| {
            let shown = node.shown(f.inside());
            match f {
                discovery::pki::Found::Pem(p) => {
                    match node.read(&p).map_err(Into::into).and_then(|b| discovery::certs::pem_file(&shown, &b)) {
                        Ok(certs) => Job::CertFile(shown, certs),
                        Err(e) => unreadable(&shown, &e),
                    }
                }
                discovery::pki::Found::Kubeconfig(_) => {
                    match discovery::certs::kubeconfig_items(&shown, root, client_ca.as_deref()) {
                        Ok(items) => Job::Kubeconfig(shown, items),
                        Err(e) => unreadable(&shown, &e),
                    }
                }
            }
        })
        .collect()
}

/// Loads the capture unless told not to; its absence is reported, never fatal.
pub fn start_capture(disabled: bool, opts: capture::Options) -> (Option<Arc<Capture>>, capture::Status) {
    if disabled {
        return (None, capture::Status::off("disabled by --no-capture"));
    }
    match Capture::start(opts) {
        Ok(c) => {
            let s = c.status();
            (Some(Arc::new(c)), s)
        }
        Err(u) => (None, capture::Status::unavailable(&u)),
    }
}

/// Runs the jobs, concurrently unless `one_by_one` (kept for measuring what concurrency
/// saves); checks come out in job order either way. A job that crashes is a failed check
/// (`internal_error`), never a missing one.
pub async fn run_jobs(
    jobs: Vec<Job>,
    cert_options: &CertOptions,
    deadline: Duration,
    capture: Option<Arc<Capture>>,
    one_by_one: bool,
) -> Vec<verdict::Check> {
    let runs = jobs.into_iter().map(|job| {
        let subject = job.subject();
        let (capture, opts) = (capture.clone(), cert_options.clone());
        (subject, run_job(job, opts, deadline, capture))
    });
    guarded(runs.collect(), one_by_one).await
}

impl Job {
    fn subject(&self) -> Subject {
        let (probe, target) = match self {
            Self::Tcp(t) => (Probe::Tcp, t.to_string()),
            Self::CertEndpoint(t) => (Probe::Cert, t.to_string()),
            Self::CertFile(p, _) | Self::Kubeconfig(p, _) => (Probe::Cert, p.display().to_string()),
            Self::Done(checks) => checks.first().map_or((Probe::Cert, String::new()), |c| (c.probe, c.target.clone())),
            Self::Kubelet { target, .. } => (Probe::Kubelet, target.to_string()),
            Self::Dns(spec) => (Probe::Dns, spec.name.clone()),
            Self::ApiServer { target, .. } => (Probe::Apiserver, target.to_string()),
            Self::Mtu(spec) => (Probe::Mtu, spec.host.to_string()),
            Self::Vxlan(spec) => (Probe::Vxlan, format!("{}:{}", spec.peer, spec.port)),
            Self::Prerequisites { .. } => (Probe::Sysctl, "node".to_string()),
            Self::Service(spec) => (Probe::Service, spec.wanted.to_string()),
            Self::Peer { name, job } => {
                let mut inner = job.subject();
                inner.peer = Some(name.clone());
                return inner;
            }
        };
        Subject { probe, target, peer: None }
    }
}

/// One job's probes and verdicts.
async fn run_job(
    job: Job,
    opts: CertOptions,
    deadline: Duration,
    capture: Option<Arc<Capture>>,
) -> Vec<verdict::Check> {
    #[cfg(debug_assertions)]
    crate::failpoint::crash_if(job.subject().probe.as_str());
    let capture_on = capture.is_some();
    match job {
        Job::Tcp(target) => {
            vec![verdict::tcp_verdict(&tcp::probe(&target, deadline, capture.as_deref()).await, capture_on)]
        }
        Job::CertEndpoint(target) => {
            let report = cert::fetch(&target, opts.server_name.as_deref(), deadline, capture.as_deref()).await;
            let roots = opts.roots.as_deref().map(Vec::as_slice);
            vec![verdict::cert::endpoint_verdict(Probe::Cert, report, roots, opts.warn_days, capture_on)]
        }
        Job::CertFile(path, certs) => {
            let roots = opts.roots.as_deref().map(Vec::as_slice);
            verdict::cert::file_verdicts(&path, &certs, roots, opts.warn_days)
        }
        Job::Kubeconfig(path, items) => verdict::cert::kubeconfig_verdicts(&path, items, opts.warn_days),
        Job::Done(checks) => checks,
        Job::Kubelet { target, healthz_port, resolver, self_signed_warns } => {
            let started = Instant::now();
            let mut checks = Vec::new();
            let (mut dial, mut server_name) = (target.clone(), None);
            if let (Some(conf), None) = (resolver, target.ip()) {
                // Half the deadline for the name, the rest for the kubelet.
                let (lookup, ip) = resolve(&target.host, &conf, deadline / 2, capture.clone(), capture_on).await;
                let Some(ip) = ip else {
                    let failed = verdict::kubelet::unresolved(&target, &lookup);
                    return vec![lookup, failed];
                };
                checks.push(lookup);
                dial = Target { host: ip.to_string(), port: target.port };
                server_name = Some(target.host.clone());
            }
            let remaining = deadline.saturating_sub(started.elapsed());
            let report = cert::fetch(&dial, server_name.as_deref(), remaining, capture.as_deref()).await;
            let roots = opts.roots.as_deref().map(Vec::as_slice);
            checks.push(verdict::kubelet::endpoint(report, roots, opts.warn_days, capture_on, self_signed_warns));
            if dial.ip().is_some_and(kubelet::is_local) {
                let h = kubelet::healthz(healthz_port, deadline).await;
                checks.push(verdict::kubelet::healthz(healthz_port, &h));
            }
            checks
        }
        Job::Mtu(spec) => vec![verdict::mtu::verdict(&mtu::run(spec, deadline, capture).await, capture_on)],
        Job::Vxlan(spec) => {
            vec![verdict::vxlan::verdict(&vxlan::run(spec, deadline, capture).await, capture_on)]
        }
        Job::ApiServer { target, roots } => {
            let report = cert::fetch(&target, None, deadline, capture.as_deref()).await;
            let roots = roots.as_deref().map(Vec::as_slice);
            vec![verdict::cert::endpoint_verdict(Probe::Apiserver, report, roots, opts.warn_days, capture_on)]
        }
        Job::Dns(spec) => verdict::dns::verdicts(&dns::run(*spec, deadline, capture).await, capture_on),
        Job::Prerequisites { spec, pods } => {
            verdict::prerequisites::verdicts(&discovery::prerequisites::read(&spec, deadline).await, pods)
        }
        Job::Service(spec) => {
            verdict::service::verdicts(&crate::probes::service::run(*spec, deadline, capture).await, capture_on)
        }
        Job::Peer { name, job } => {
            let mut checks = Box::pin(run_job(*job, opts, deadline, capture)).await;
            for c in &mut checks {
                c.peer = Some(name.clone());
            }
            checks
        }
    }
}

/// A name resolved through netcheck's resolver (as a pod would): the lookup's check and the
/// first address answered.
async fn resolve(
    name: &str,
    conf: &dns::ResolvConf,
    budget: Duration,
    capture: Option<Arc<Capture>>,
    capture_on: bool,
) -> (verdict::Check, Option<std::net::IpAddr>) {
    let report = dns::run(dns::Spec::new(name, conf.clone()), budget, capture).await;
    let ip = report.lookup.answer().and_then(|a| match &a.outcome {
        dns::Outcome::Answer(records) => records.iter().find_map(|r| r.parse().ok()),
        _ => None,
    });
    let lookup = verdict::dns::verdicts(&report, capture_on).swap_remove(0);
    (lookup, ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Check, Verdict};

    #[tokio::test]
    async fn a_peers_checks_carry_its_name_and_the_nodes_own_do_not() {
        let done = |target: &str| Job::Done(vec![Check::file(Probe::Vxlan, target.into(), Verdict::pass("ok"))]);
        let jobs = vec![
            Job::Peer { name: "n2".into(), job: Box::new(done("192.168.50.12:8472")) },
            done("local"),
            Job::Peer { name: "192.168.50.13".into(), job: Box::new(done("192.168.50.13:8472")) },
        ];
        let checks = run_jobs(jobs, &CertOptions::default(), Duration::from_secs(1), None, false).await;
        let peers: Vec<_> = checks.iter().map(|c| (c.target.as_str(), c.peer.as_deref())).collect();
        assert_eq!(
            peers,
            [("192.168.50.12:8472", Some("n2")), ("local", None), ("192.168.50.13:8472", Some("192.168.50.13"))]
        );
    }
}
