//! What a node's own files say, read under the host root: the kubelet's configuration
//! (clusterDNS, clusterDomain, healthz), the API server the kubelet talks to (its kubeconfig),
//! and flannel's subnet.env. Every file is optional; what is missing or
//! unreadable is remembered as a note, never an error.

use std::path::{Path, PathBuf};

use super::{
    flannel::{SUBNET_ENV, SubnetEnv},
    kubelet_config::KubeletSetup,
    node_root::NodeRoot,
};

pub use super::kubelet_config::{KUBELET_CONFIG, KUBELET_KUBECONFIGS, KubeletConfig};

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
    /// The kubelet's configuration, when any source of it was found.
    pub kubelet: Option<KubeletConfig>,
    /// Where the kubelet's settings came from (its process, files, drop-ins).
    pub kubelet_setup: KubeletSetup,
    pub api_server: Option<ApiServer>,
    pub subnet_env: Option<(SubnetEnv, PathBuf)>,
    /// Where the container runtime takes CNI configurations and plugins from.
    pub cni_dirs: super::cni::Dirs,
    /// A CNI configuration file is there (read or not).
    pub cni: bool,
    /// What could not be learnt, and why.
    pub notes: Vec<String>,
}

/// Reads the node's files under `root`.
pub fn read(root: &NodeRoot) -> NodeFiles {
    let mut files = NodeFiles { root: root.path().to_path_buf(), ..NodeFiles::default() };
    let setup = super::kubelet_config::read(root);
    files.notes.extend(setup.notes.iter().cloned());
    if !setup.files.is_empty() || setup.pid.is_some() {
        files.kubelet = Some(setup.config.clone());
    }
    match setup.kubeconfig.as_deref() {
        Some(path) => match api_server(root, path) {
            Ok(a) => files.api_server = Some(a),
            // A kubeconfig that could not be read names itself.
            Err(e @ ServerError::Kubeconfig(_)) => files.notes.push(e.to_string()),
            Err(e) => files.notes.push(format!("{}: {e}", root.shown(path).display())),
        },
        None => files.notes.push(format!(
            "no kubelet kubeconfig under {} ({})",
            root.path().display(),
            KUBELET_KUBECONFIGS.join(", ")
        )),
    }
    match root.read_to_string(Path::new(SUBNET_ENV)) {
        Ok(text) => files.subnet_env = Some((SubnetEnv::parse(&text), root.shown(Path::new(SUBNET_ENV)))),
        Err(e) => files.notes.push(e.to_string()),
    }
    files.kubelet_setup = setup;
    files.cni_dirs = super::cni::dirs(root);
    files.cni = files.cni_dirs.conf.iter().any(|d| !super::cni::config_files(root, d).is_empty());
    files
}

impl NodeFiles {
    /// The CNI configuration folders looked in, as the node names them.
    fn conf_dirs(&self) -> String {
        let dirs: Vec<String> =
            self.cni_dirs.conf.iter().map(|d| Path::new("/").join(d).display().to_string()).collect();
        dirs.join(" or ")
    }

    /// Why `root` holds nothing of a Kubernetes node, when it does not: no kubelet
    /// configuration, no kubelet kubeconfig and no CNI configuration. Any one of them makes it a
    /// node (perhaps a broken one), whose checks then run.
    pub fn not_a_node(&self) -> Option<String> {
        (self.kubelet_setup.is_empty() && self.api_server.is_none() && !self.cni).then(|| {
            format!(
                "no Kubernetes node under {} (no kubelet configuration at {KUBELET_CONFIG}, no kubelet kubeconfig at {}, \
                 no CNI configuration in {}); give the node's root with --host-root",
                self.root.display(),
                KUBELET_KUBECONFIGS.join(" or "),
                self.conf_dirs()
            )
        })
    }
}

/// Why a kubeconfig names no API server netcheck can dial.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Kubeconfig(#[source] super::kubeconfig::KubeconfigError),
    #[error("no cluster for the current context")]
    NoCluster,
    #[error("the cluster has no server")]
    NoServer,
    #[error("{0}: not an https:// URL")]
    NotHttps(String),
    #[error("{0}: no host")]
    NoHost(String),
}

/// The server of the kubeconfig's current context (or its only cluster), `path` inside the node.
pub fn api_server(root: &NodeRoot, path: &Path) -> Result<ApiServer, ServerError> {
    let shown = root.shown(path);
    let kc = super::kubeconfig::read(&shown, root.path()).map_err(ServerError::Kubeconfig)?.config;
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
    Ok(ApiServer { address: host_port(server)?, kubeconfig: shown })
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
    use std::net::IpAddr;

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
        let node = NodeRoot::open(&root).unwrap();
        let why = read(&node).not_a_node().unwrap();
        assert!(why.starts_with(&format!("no Kubernetes node under {}", root.display())), "{why}");
        std::fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
        std::fs::write(root.join("etc/cni/net.d/10-flannel.conflist"), "{}").unwrap();
        assert_eq!(read(&node).not_a_node(), None, "a CNI configuration alone is a (broken) node");
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
