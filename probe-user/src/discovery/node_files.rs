//! What a node's own files say, read under the host root: the kubelet's configuration
//! (clusterDNS, clusterDomain, healthz), the API server the kubelet talks to (its kubeconfig),
//! and flannel's subnet.env. Every file is optional; what is missing or
//! unreadable is remembered as a note, never an error.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::flannel::{SUBNET_ENV, SubnetEnv};

/// kubeadm's kubelet configuration file.
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// The kubelet's kubeconfig: kubeadm, then k3s's agent.
pub const KUBELET_KUBECONFIGS: &[&str] =
    &["etc/kubernetes/kubelet.conf", "var/lib/rancher/k3s/agent/kubelet.kubeconfig"];

/// The fields of a KubeletConfiguration netcheck uses (kubelet.config.k8s.io/v1beta1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfig {
    #[serde(default, rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub cluster_domain: Option<String>,
    pub healthz_port: Option<u16>,
    pub port: Option<u16>,
    pub resolv_conf: Option<String>,
}

impl KubeletConfig {
    pub fn parse(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// clusterDNS entries that are IP addresses.
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        self.cluster_dns.iter().filter_map(|s| s.trim().parse().ok()).collect()
    }
}

/// The API server, as the kubelet's kubeconfig names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    /// `host:port` (host as in the URL: a name or an IP, IPv6 in brackets).
    pub address: String,
    pub kubeconfig: PathBuf,
}

/// Everything found under a host root.
#[derive(Debug, Clone, Default)]
pub struct NodeFiles {
    pub root: PathBuf,
    pub kubelet: Option<KubeletConfig>,
    pub api_server: Option<ApiServer>,
    pub subnet_env: Option<(SubnetEnv, PathBuf)>,
    /// What could not be learnt, and why.
    pub notes: Vec<String>,
}

/// Reads the node's files under `root`.
pub fn read(root: &Path) -> NodeFiles {
    let mut files = NodeFiles { root: root.to_path_buf(), ..NodeFiles::default() };
    let kubelet_path = root.join(KUBELET_CONFIG);
    match std::fs::read_to_string(&kubelet_path) {
        Ok(text) => match KubeletConfig::parse(&text) {
            Ok(c) => files.kubelet = Some(c),
            Err(e) => files.notes.push(format!("{}: not a kubelet configuration ({e})", kubelet_path.display())),
        },
        Err(e) => files.notes.push(format!("{}: {e}", kubelet_path.display())),
    }
    let kubeconfigs: Vec<PathBuf> = KUBELET_KUBECONFIGS.iter().map(|p| root.join(p)).collect();
    match kubeconfigs.iter().find(|p| p.is_file()) {
        Some(path) => match api_server(path) {
            Ok(a) => files.api_server = Some(a),
            Err(e) => files.notes.push(format!("{}: {e}", path.display())),
        },
        None => files.notes.push(format!(
            "no kubelet kubeconfig under {} ({})",
            root.display(),
            KUBELET_KUBECONFIGS.join(", ")
        )),
    }
    let env_path = root.join(SUBNET_ENV);
    match SubnetEnv::read(&env_path) {
        Ok(env) => files.subnet_env = Some((env, env_path)),
        Err(e) => files.notes.push(crate::error::chain(&e)),
    }
    files
}

impl NodeFiles {
    /// Why `root` holds nothing of a Kubernetes node, when it does not: no kubelet
    /// configuration, no kubelet kubeconfig and no CNI configuration. Any one of them makes it a
    /// node (perhaps a broken one), whose checks then run.
    pub fn not_a_node(&self) -> Option<String> {
        let cni = super::cni::CONF_DIRS.iter().any(|d| !super::cni::config_files(&self.root.join(d)).is_empty());
        (self.kubelet.is_none() && self.api_server.is_none() && !cni).then(|| {
            format!(
                "no Kubernetes node under {} (no kubelet configuration at {KUBELET_CONFIG}, no kubelet kubeconfig at {}, \
                 no CNI configuration in {}); give the node's root with --host-root",
                self.root.display(),
                KUBELET_KUBECONFIGS.join(" or "),
                super::cni::CONF_DIRS.join(" or ")
            )
        })
    }
}

/// Why a kubeconfig names no API server netcheck can dial.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no cluster for the current context")]
    NoCluster,
    #[error("the cluster has no server")]
    NoServer,
    #[error("{0}: not an https:// URL")]
    NotHttps(String),
    #[error("{0}: no host")]
    NoHost(String),
}

/// The server of the kubeconfig's current context (or its only cluster).
pub fn api_server(path: &Path) -> Result<ApiServer, ServerError> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(ServerError::Kubeconfig)?;
    let cluster_name = kc
        .current_context
        .as_ref()
        .and_then(|name| kc.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = match cluster_name {
        Some(name) => kc.clusters.iter().find(|c| c.name == name),
        None => kc.clusters.first(),
    }
    .and_then(|c| c.cluster.as_ref())
    .ok_or(ServerError::NoCluster)?;
    let server = cluster.server.as_deref().ok_or(ServerError::NoServer)?;
    Ok(ApiServer { address: host_port(server)?, kubeconfig: path.to_path_buf() })
}

/// `host:port` of an `https://host[:port][/path]` URL (443 when the port is left out).
pub fn host_port(url: &str) -> Result<String, ServerError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| ServerError::NotHttps(url.to_string()))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ServerError::NoHost(url.to_string()));
    }
    let has_port = if authority.starts_with('[') { authority.contains("]:") } else { authority.contains(':') };
    Ok(if has_port { authority.to_string() } else { format!("{authority}:443") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_configuration_fields() {
        let c = KubeletConfig::parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\n\
             clusterDomain: cluster.local\nhealthzBindAddress: 127.0.0.1\nhealthzPort: 10248\n\
             resolvConf: /run/systemd/resolve/resolv.conf\nrotateCertificates: true\n",
        )
        .unwrap();
        assert_eq!(c.dns_servers(), vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.cluster_domain.as_deref(), Some("cluster.local"));
        assert_eq!(c.healthz_port, Some(10248));
        assert!(KubeletConfig::parse("clusterDNS: 7").is_err());
    }

    #[test]
    fn an_empty_root_is_not_a_node_and_any_part_of_one_is() {
        let root = std::env::temp_dir().join(format!("netcheck-not-a-node-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let why = read(&root).not_a_node().unwrap();
        assert!(why.starts_with(&format!("no Kubernetes node under {}", root.display())), "{why}");
        std::fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
        std::fs::write(root.join("etc/cni/net.d/10-flannel.conflist"), "{}").unwrap();
        assert_eq!(read(&root).not_a_node(), None, "a CNI configuration alone is a (broken) node");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn server_urls() {
        assert_eq!(host_port("https://192.168.50.11:6443").unwrap(), "192.168.50.11:6443");
        assert_eq!(host_port("https://api.example/k8s").unwrap(), "api.example:443");
        assert_eq!(host_port("https://[fd00::1]:6443/").unwrap(), "[fd00::1]:6443");
        assert!(host_port("http://x:80").is_err());
        assert!(host_port("https:///").is_err());
    }
}
