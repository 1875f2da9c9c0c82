//! The Kubernetes API, when a kubeconfig or an in-cluster service account is at hand. Read
//! only, and optional: when it cannot be reached, what it would have told is a note, not an
//! error. RBAC needed: `list` on `endpointslices.discovery.k8s.io` in kube-system, and on
//! `nodes` and `pods` (cluster-wide; pods are asked by IP only).

use std::{net::IpAddr, path::Path, time::Duration};

use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{Api, Client, Config, api::ListParams, config::KubeConfigOptions};

/// Why the API could not be asked; each keeps the client's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    ReadKubeconfig(#[from] super::kubeconfig::KubeconfigError),
    /// A file the kubeconfig names could not be read (inside the node root for the node's own).
    #[error("{}: {reference} → {source}", path.display())]
    Reference {
        path: std::path::PathBuf,
        reference: String,
        #[source]
        source: std::sync::Arc<super::node_root::RootError>,
    },
    #[error("{0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no kubeconfig or in-cluster service account ({0})")]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("{0}")]
    Client(#[source] kube::Error),
    #[error("the API did not answer in time")]
    Timeout,
    /// A list request failed; `what` names the objects asked for.
    #[error("listing {what}: {source}")]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl ApiError {
    fn list(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::List { what, source }
    }
}

/// The cluster DNS Service's namespace and name (kubeadm and k3s both call it kube-dns).
pub const DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");

/// A client from `--kubeconfig`, else `$KUBECONFIG`/`~/.kube/config`, else the pod's service
/// account; every request bounded by `timeout`. A kubeconfig under the node root `root` has
/// its file references read inside that root (see [`super::kubeconfig::read`]).
pub async fn client(kubeconfig: Option<&Path>, root: &Path, timeout: Duration) -> Result<Client, ApiError> {
    let mut config = config(kubeconfig, root).await?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(ApiError::Client)
}

/// A client for the agent's life, whose watches stay open: connecting and writing bounded by
/// `timeout`, reading not (a watch is silent for minutes; the server ends it after its
/// `timeoutSeconds`, and kube's watcher reopens one silent past that). Each request that is
/// not a watch is bounded by its caller.
pub async fn watching_client(kubeconfig: Option<&Path>, root: &Path, timeout: Duration) -> Result<Client, ApiError> {
    let mut config = config(kubeconfig, root).await?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = None;
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(ApiError::Client)
}

async fn config(kubeconfig: Option<&Path>, root: &Path) -> Result<Config, ApiError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = super::kubeconfig::read(path, root)?;
            // kube's client would open a reference left unread itself, in this process's
            // filesystem: not the node's file.
            let used = current_references(&kc.config);
            if let Some((reference, source)) = kc.unread.iter().find(|(r, _)| used.contains(&r.as_str())) {
                let (path, reference, source) = (path.to_path_buf(), reference.clone(), source.clone());
                return Err(ApiError::Reference { path, reference, source });
            }
            Config::from_custom_kubeconfig(kc.config, &KubeConfigOptions::default())
                .await
                .map_err(ApiError::Kubeconfig)?
        }
        None => Config::infer().await.map_err(ApiError::NoConfig)?,
    };
    Ok(config)
}

/// Where a pod's service account token is mounted.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The bearer token netcheck can show another party (a peer node's agent, which asks the API
/// server whose it is): the kubeconfig's current user's (`token` or `tokenFile`), else the pod's
/// service account token. `Err` says why there is none.
pub fn bearer_token(kubeconfig: Option<&Path>, root: &Path) -> Result<String, String> {
    use secrecy::ExposeSecret as _;
    let Some(path) = kubeconfig else {
        return super::node_root::read_file(Path::new(SERVICE_ACCOUNT_TOKEN))
            .map(|t| String::from_utf8_lossy(&t).trim().to_string())
            .map_err(|e| format!("no --kubeconfig, and no service account token ({e})"));
    };
    let kc = super::kubeconfig::read(path, root).map_err(|e| e.to_string())?;
    let config = &kc.config;
    let user = current_context(config).and_then(|c| current_user(config, c));
    let Some(user) = user else { return Err(format!("{}: no user in the current context", path.display())) };
    if let Some(token) = user.token.as_ref().map(|t| t.expose_secret().trim().to_string()).filter(|t| !t.is_empty()) {
        return Ok(token);
    }
    let why = if user.client_certificate.is_some() || user.client_certificate_data.is_some() {
        "authenticates with a client certificate, which only the API server can check"
    } else if user.exec.is_some() || user.auth_provider.is_some() {
        "gets its token from a plugin, which netcheck does not run"
    } else {
        "has no token"
    };
    Err(format!("{}: the current user {why}; give a kubeconfig with a token (a service account's)", path.display()))
}

fn current_context(config: &kube::config::Kubeconfig) -> Option<&kube::config::Context> {
    let name = config.current_context.as_ref()?;
    config.contexts.iter().find(|c| &c.name == name)?.context.as_ref()
}

fn current_user<'a>(
    config: &'a kube::config::Kubeconfig,
    context: &kube::config::Context,
) -> Option<&'a kube::config::AuthInfo> {
    let name = context.user.as_ref()?;
    config.auth_infos.iter().find(|a| &a.name == name)?.auth_info.as_ref()
}

/// The file references of the current context's user and cluster: the only ones kube's client
/// opens (another context's stale reference does not stop it).
fn current_references(config: &kube::config::Kubeconfig) -> Vec<&str> {
    let Some(context) = current_context(config) else {
        return Vec::new();
    };
    let user = current_user(config, context);
    let cluster = config.clusters.iter().find(|c| c.name == context.cluster).and_then(|c| c.cluster.as_ref());
    let mut refs: Vec<&str> = Vec::new();
    if let Some(u) = user {
        refs.extend([&u.client_certificate, &u.client_key, &u.token_file].into_iter().flatten().map(String::as_str));
    }
    if let Some(c) = cluster {
        refs.extend(c.certificate_authority.as_deref());
    }
    refs
}

/// The addresses of the Service's ready endpoints, from its EndpointSlices.
pub async fn service_endpoints(client: Client, (namespace, service): (&str, &str)) -> Result<Vec<IpAddr>, ApiError> {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let slices = api.list(&params).await.map_err(ApiError::list(format!("EndpointSlices of {namespace}/{service}")))?;
    Ok(ready_addresses(&slices.items))
}

/// A pod as the API knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
}

impl std::fmt::Display for PodInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}/{}", self.namespace, self.name)?;
        if let Some(n) = &self.node {
            write!(f, " on node {n}")?;
        }
        Ok(())
    }
}

/// The pod behind an IP (host-network pods excluded: they share their node's IP).
pub async fn pod_by_ip(client: Client, ip: IpAddr) -> Result<Option<PodInfo>, ApiError> {
    let api: Api<Pod> = Api::all(client);
    let params = ListParams::default().fields(&format!("status.podIP={ip}"));
    let pods = api.list(&params).await.map_err(ApiError::list(format!("pods with IP {ip}")))?;
    Ok(pods.items.iter().find(|p| !p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)).map(|p| PodInfo {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
    }))
}

/// Ready (or not known to be unready) endpoint addresses, once each, in order.
pub fn ready_addresses(slices: &[EndpointSlice]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter().flatten() {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &endpoint.addresses {
                if let Ok(ip) = a.parse::<IpAddr>()
                    && !out.contains(&ip)
                {
                    out.push(ip);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_endpoints_of_every_slice() {
        let json = serde_json::json!({
            "metadata": {"name": "kube-dns-x"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.10"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.10"]},
                {"addresses": ["10.244.3.10"], "conditions": {"ready": false}},
                {"addresses": ["10.244.1.10", "not-an-ip"]}
            ]
        });
        let slice: EndpointSlice = serde_json::from_value(json).unwrap();
        let ips: Vec<String> = ready_addresses(&[slice]).iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.244.1.10", "10.244.2.10"]);
    }
}
