//! What a node is: its name, addresses, cluster networks and how its kubelet serves.

use std::net::{Ipv4Addr, SocketAddr};

/// What a node is, as the files under its root and the network around it say.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's name (its hostname; the kubelet registers it).
    pub name: String,
    /// Its InternalIP: the kubelet serves there, flannel's VXLAN device sends from it.
    pub ip: Ipv4Addr,
    /// The API server as the kubelet's kubeconfig names it.
    pub api: SocketAddr,
    pub service_cidr: String,
    /// The API's Service IP (`kubernetes.default`), the first of the Service CIDR.
    pub kubernetes_service: Ipv4Addr,
    /// clusterDNS (the kube-dns Service IP).
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    /// The CoreDNS pods behind it (the kube-dns EndpointSlices).
    pub coredns: Vec<Ipv4Addr>,
    /// FLANNEL_NETWORK.
    pub pod_network: String,
    /// This node's pod subnet's gateway (cni0, FLANNEL_SUBNET's address) and its prefix.
    pub pod_gateway: Ipv4Addr,
    pub pod_prefix: u8,
    /// The node's resolver (systemd-resolved's upstream; CoreDNS forwards there).
    pub upstream: Ipv4Addr,
    pub kubelet_port: u16,
    pub healthz_port: u16,
    /// How long the node has run: its certificates were issued and rotated over that time.
    pub age_days: i64,
    /// kubeadm only: how the kubelet serves (k3s's is always signed by its server CA).
    pub serving: KubeletServing,
}

/// The kubelet's serving certificate on a kubeadm node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeletServing {
    /// kubeadm's default: no `serverTLSBootstrap`, the kubelet makes `kubelet.crt` itself
    /// (self-signed, for its hostname only, one year, never renewed).
    SelfSigned,
    /// `serverTLSBootstrap: true` (kubeadm's documented way for metrics-server): the kubelet
    /// asks the cluster CA through a CSR and rotates `kubelet-server-current.pem`.
    Bootstrapped,
}

impl NodeSpec {
    /// A kubeadm node: Service CIDR 10.96.0.0/12, kube-dns 10.96.0.10, flannel's 10.244.0.0/16.
    pub fn kubeadm(name: &str, ip: Ipv4Addr, api: SocketAddr, subnet: u8) -> Self {
        Self {
            name: name.to_string(),
            ip,
            api,
            service_cidr: "10.96.0.0/12".into(),
            kubernetes_service: Ipv4Addr::new(10, 96, 0, 1),
            cluster_dns: Ipv4Addr::new(10, 96, 0, 10),
            cluster_domain: "cluster.local".into(),
            coredns: vec![Ipv4Addr::new(10, 244, subnet, 10)],
            pod_network: "10.244.0.0/16".into(),
            pod_gateway: Ipv4Addr::new(10, 244, subnet, 1),
            pod_prefix: 24,
            upstream: Ipv4Addr::new(ip.octets()[0], ip.octets()[1], ip.octets()[2], 1),
            kubelet_port: 10250,
            healthz_port: 10248,
            age_days: 500,
            serving: KubeletServing::Bootstrapped,
        }
    }

    /// A k3s node: Service CIDR 10.43.0.0/16, cluster DNS 10.43.0.10, pods 10.42.0.0/16.
    pub fn k3s(name: &str, ip: Ipv4Addr, api: SocketAddr, subnet: u8) -> Self {
        Self {
            service_cidr: "10.43.0.0/16".into(),
            kubernetes_service: Ipv4Addr::new(10, 43, 0, 1),
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            coredns: vec![Ipv4Addr::new(10, 42, subnet, 4)],
            pod_network: "10.42.0.0/16".into(),
            pod_gateway: Ipv4Addr::new(10, 42, subnet, 1),
            age_days: 200,
            ..Self::kubeadm(name, ip, api, subnet)
        }
    }

    /// flannel's VXLAN address on this node (the subnet's network address, /32).
    pub fn vtep(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.pod_gateway.octets();
        Ipv4Addr::new(a, b, c, 0)
    }

    pub(super) fn subnet_env(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            self.pod_network, self.pod_gateway, self.pod_prefix
        )
    }
}

/// Which tool laid the node out, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    KubeadmControlPlane,
    KubeadmWorker,
    K3sServer,
    K3sAgent,
}
