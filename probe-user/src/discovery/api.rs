//! The Kubernetes API, when a kubeconfig or an in-cluster service account is at hand. Read
//! only, and optional: when it cannot be reached, what it would have told is a note, not an
//! error. RBAC needed: `list` on `endpointslices.discovery.k8s.io` in kube-system.

use std::{net::IpAddr, path::Path, time::Duration};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client, Config, api::ListParams, config::KubeConfigOptions};

/// The cluster DNS Service's namespace and name (kubeadm and k3s both call it kube-dns).
pub const DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");

/// A client from `--kubeconfig`, else `$KUBECONFIG`/`~/.kube/config`, else the pod's service
/// account; every request bounded by `timeout`. A kubeconfig under the node root `root` has
/// its absolute file references read from there (see [`super::read_kubeconfig`]).
pub async fn client(kubeconfig: Option<&Path>, root: &Path, timeout: Duration) -> Result<Client, String> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = super::read_kubeconfig(path, root).map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(|e| e.to_string())?
        }
        None => Config::infer().await.map_err(|e| format!("no kubeconfig or in-cluster service account ({e})"))?,
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| e.to_string())
}

/// The addresses of the Service's ready endpoints, from its EndpointSlices.
pub async fn service_endpoints(client: Client, (namespace, service): (&str, &str)) -> Result<Vec<IpAddr>, String> {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let slices =
        api.list(&params).await.map_err(|e| format!("listing EndpointSlices of {namespace}/{service}: {e}"))?;
    Ok(ready_addresses(&slices.items))
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
