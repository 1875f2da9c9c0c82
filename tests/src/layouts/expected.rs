//! What `netcheck node` should report: its rows, read from a run or expected of a layout, and
//! which files under a root it judges.

use std::path::Path;

use super::Layout;
use crate::netcheck;

/// One row `netcheck node` should print: probe, target (file targets inside the root, e.g.
/// `/etc/kubernetes/kubelet.conf (user default-auth client certificate)`), status and cause.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub probe: String,
    pub target: String,
    pub status: String,
    pub cause: Option<String>,
}

impl Row {
    pub fn new(probe: &str, target: impl Into<String>, status: &str, cause: Option<&str>) -> Self {
        Self { probe: probe.into(), target: target.into(), status: status.into(), cause: cause.map(Into::into) }
    }

    pub fn pass(probe: &str, target: impl Into<String>) -> Self {
        Self::new(probe, target, "pass", None)
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.probe, self.target, self.status)?;
        if let Some(c) = &self.cause {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// The rows of a `netcheck node -o json` run, targets under `root` shown inside it.
pub fn rows(r: &netcheck::Run, root: &Path) -> Vec<Row> {
    let root = root.display().to_string();
    let root = root.trim_end_matches('/');
    // The netfilter prerequisites are the namespace's, not the root's: tests/tests/
    // prerequisites.rs judges them on the lab.
    let netns_rows = ["sysctl", "conntrack", "iptables"];
    let mut rows: Vec<Row> = r.json["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|c| !netns_rows.contains(&c["probe"].as_str().unwrap_or_default()))
                .map(|c| {
                    let target = c["target"].as_str().unwrap_or_default();
                    let target = match target.strip_prefix(root) {
                        Some(rest) if rest.starts_with('/') && !root.is_empty() => rest.to_string(),
                        _ => target.to_string(),
                    };
                    Row {
                        probe: c["probe"].as_str().unwrap_or_default().to_string(),
                        target,
                        status: c["status"].as_str().unwrap_or_default().to_string(),
                        cause: c["cause"].as_str().map(ToString::to_string),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    rows
}

impl Layout {
    /// What `netcheck node` should report when run against [`SoloNode`](super::SoloNode)'s stand-ins (and, on
    /// the lab, for this node's own checks): the cluster DNS ladder, the API server, the
    /// kubelet and its health, the CNI setup and every certificate.
    pub fn expected(&self) -> Vec<Row> {
        let n = &self.node;
        // A clusterDNS nothing serves: no answer (the Service CIDR's unknown addresses vanish).
        let dns = if self.kubelet_dns == n.cluster_dns {
            Row::pass("dns", format!("server {}:53", n.cluster_dns))
        } else {
            Row::new("dns", format!("server {}:53", self.kubelet_dns), "fail", Some("dns_timeout"))
        };
        let lookup = if self.kubelet_dns == n.cluster_dns {
            Row::pass("dns", "kubernetes.default")
        } else {
            Row::new("dns", "kubernetes.default", "fail", Some("dns_timeout"))
        };
        let mut rows = vec![
            lookup,
            dns,
            // Upstreams are not asked for a cluster name.
            Row::new("dns", format!("upstream {}:53", n.upstream), "skip", None),
            Row::pass("apiserver", n.api.to_string()),
            // The kubelet's own self-signed certificate has no IP SAN: a warning on a node that
            // works (metrics-server would fail to verify it by IP).
            match n.serving {
                super::KubeletServing::SelfSigned => {
                    Row::new("kubelet", format!("{}:{}", n.ip, n.kubelet_port), "warn", Some("cert_name_mismatch"))
                }
                super::KubeletServing::Bootstrapped => Row::pass("kubelet", format!("{}:{}", n.ip, n.kubelet_port)),
            },
            Row::pass("kubelet-healthz", format!("127.0.0.1:{}/healthz", n.healthz_port)),
            // The settings read from the kubelet's configuration (no kubelet process here).
            Row::pass("kubelet-config", "kubelet configuration"),
            Row::pass("cni", self.cni_config.clone()),
        ];
        rows.extend(n.coredns.iter().map(|ip| Row::pass("dns", format!("endpoint {ip}:53"))));
        // A planted problem's row replaces the healthy one of the same check.
        for row in self.files.iter().filter(|r| !self.superseded.contains(&r.target)) {
            rows.retain(|r| !(r.probe == row.probe && r.target == row.target));
            rows.push(row.clone());
        }
        rows.sort();
        rows
    }

    /// `target` under the name [`Layout::expected`] gives it (a symlink's target's).
    pub fn canonical(&self, target: &str) -> String {
        match self.aliases.iter().find(|(link, _)| link == target) {
            Some((_, file)) => file.clone(),
            None => target.to_string(),
        }
    }

    /// Sets what is expected of one row (by probe and target).
    pub(super) fn expect(&mut self, probe: &str, target: &str, status: &str, cause: Option<&str>) {
        match self.files.iter_mut().find(|r| r.probe == probe && r.target == target) {
            Some(row) => *row = Row::new(probe, target, status, cause),
            None => self.files.push(Row::new(probe, target, status, cause)),
        }
    }
}

/// Where `netcheck check cert --node-pki` (and `node`) looks for PEM files (docs/commands.md):
/// `*.crt`, and `*.pem` without "key" in the name, directly in these folders.
const PEM_DIRS: &[&str] = &[
    "/etc/kubernetes/pki",
    "/etc/kubernetes/pki/etcd",
    "/var/lib/kubelet/pki",
    "/var/lib/rancher/k3s/server/tls",
    "/var/lib/rancher/k3s/server/tls/etcd",
    "/var/lib/rancher/k3s/agent",
];

pub(super) fn judged_pem(inside: &str) -> bool {
    let (dir, name) = inside.rsplit_once('/').expect("an absolute path");
    let ext = |e: &str| Path::new(name).extension().is_some_and(|x| x.eq_ignore_ascii_case(e));
    PEM_DIRS.contains(&dir) && (ext("crt") || ext("pem") && !name.contains("key"))
}

pub(super) fn judged_kubeconfig(inside: &str) -> bool {
    let (dir, name) = inside.rsplit_once('/').expect("an absolute path");
    let ext = |e: &str| Path::new(name).extension().is_some_and(|x| x.eq_ignore_ascii_case(e));
    (dir == "/etc/kubernetes" && ext("conf"))
        || (dir == "/var/lib/rancher/k3s/agent" && ext("kubeconfig"))
        || inside == "/etc/rancher/k3s/k3s.yaml"
}
