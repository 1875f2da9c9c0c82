//! The network around a layout: a namespace of the node's own or the lab, with stand-ins for
//! the API server, the kubelet and CoreDNS.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{Layout, NodeSpec};
use crate::{Dns, Lab, Server, host, netcheck, pki, servers::serve};

/// A network namespace of the node's own, made by the test (no lab): its uplink holding the
/// node's IP (and, for a worker, the control-plane endpoint's), flannel's VXLAN device (no
/// peers), the cni0 bridge, the Service IPs on kube-ipvs0 with the rest of the Service CIDR
/// routed there, and the stand-ins: the API server (the layout's serving certificate; the
/// kube-dns EndpointSlices and this node), the kubelet (its serving certificate, healthz on
/// 127.0.0.1), CoreDNS (dnsmasq on the Service IP and the endpoints). The uplink, kube-ipvs0
/// and coredns0 are ifb devices (this kernel may have no dummy module): what is routed out
/// of one vanishes, as packets to a Service IP nobody serves do. Removed when dropped.
pub struct SoloNode {
    pub netns: String,
    servers: Vec<Server>,
    dnsmasq: Option<Child>,
}

impl SoloNode {
    /// A namespace with only its loopback up.
    pub fn empty() -> Result<Self> {
        let netns = format!("{}-solo", host::unique_prefix());
        host::add_netns(&netns)?;
        let node = Self { netns, servers: Vec::new(), dnsmasq: None };
        host::ip(&node.netns, "link set lo up")?;
        Ok(node)
    }

    /// The node's network and its stand-ins, for `layout`.
    pub fn serve(layout: &Layout) -> Result<Self> {
        let mut solo = Self::empty()?;
        let n = &layout.node;
        let ns = solo.netns.clone();
        host::ip(&ns, "link add eth0 type ifb")?;
        host::ip(&ns, &format!("addr add {}/24 dev eth0", n.ip))?;
        if let IpAddr::V4(api) = n.api.ip()
            && api != n.ip
            && !api.is_loopback()
        {
            host::ip(&ns, &format!("addr add {api}/32 dev eth0"))?;
        }
        host::ip(&ns, "link set eth0 mtu 1500 up")?;
        // A node forwards its pods' packets (kubeadm's preflight requires it).
        host::sysctl(&ns, "net.ipv4.ip_forward", "1")?;
        host::ip(&ns, &format!("link add flannel.1 type vxlan id 1 local {} dev eth0 dstport 8472 nolearning", n.ip))?;
        host::ip(&ns, &format!("addr add {}/32 dev flannel.1", n.vtep()))?;
        host::ip(&ns, "link set flannel.1 mtu 1450 up")?;
        host::ip(&ns, "link add cni0 type bridge")?;
        host::ip(&ns, &format!("addr add {}/{} dev cni0", n.pod_gateway, n.pod_prefix))?;
        host::ip(&ns, "link set cni0 mtu 1450 up")?;
        host::ip(&ns, "link add kube-ipvs0 type ifb")?;
        host::ip(&ns, &format!("addr add {}/32 dev kube-ipvs0", n.cluster_dns))?;
        host::ip(&ns, &format!("addr add {}/32 dev kube-ipvs0", n.kubernetes_service))?;
        host::ip(&ns, "link set kube-ipvs0 up")?;
        host::ip(&ns, &format!("route add {} dev kube-ipvs0", n.service_cidr))?;
        // The CoreDNS pods (their addresses held here rather than in pod namespaces).
        host::ip(&ns, "link add coredns0 type ifb")?;
        for ip in &n.coredns {
            host::ip(&ns, &format!("addr add {ip}/32 dev coredns0"))?;
        }
        host::ip(&ns, "link set coredns0 up")?;
        let nodes = crate::api::node_list(&[], &[(n.name.clone(), n.ip)]);
        solo.servers.extend(serve_node(&ns, layout, &n.coredns, nodes)?);
        solo.dnsmasq = Some(dnsmasq(&ns, n)?);
        Ok(solo)
    }

    /// `netcheck -o json --netns NETNS --timeout 3s --host-root ROOT --kubeconfig KUBELET_KUBECONFIG node`.
    pub fn run_node(&self, layout: &Layout) -> Result<netcheck::Run> {
        self.run_node_with(layout, &[])
    }

    /// [`Self::run_node`] with more environment variables.
    pub fn run_node_with(&self, layout: &Layout, env: &[(&str, &str)]) -> Result<netcheck::Run> {
        let root = layout.root.display().to_string();
        let kubeconfig = layout.path(&layout.kubelet_kubeconfig).display().to_string();
        let out = Command::new(netcheck::binary()?)
            .args(["-o", "json", "--netns", &self.netns, "--timeout", "3s", "--host-root", &root])
            .args(["--kubeconfig", &kubeconfig, "node"])
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", "/nonexistent")
            .envs(env.iter().copied())
            .output()?;
        Ok(netcheck::Run::from_output(&out))
    }
}

impl Drop for SoloNode {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        host::kill_netns_processes(&self.netns);
        let _ = host::run("ip", &["netns", "del", &self.netns]);
    }
}

/// The API server, kubelet and healthz stand-ins for `layout` inside `netns`.
fn serve_node(netns: &str, layout: &Layout, coredns: &[Ipv4Addr], nodes: String) -> Result<Vec<Server>> {
    let n = &layout.node;
    let api_tls = pki::tls_config(&layout.api_serving)?;
    let slices = crate::api::endpoint_slice_list(coredns);
    let api = serve(netns, n.api, move |s| {
        let (slices, nodes) = (slices.clone(), nodes.clone());
        pki::serve_https_connection(api_tls.clone(), s, move |request| {
            crate::api::api_response(request, &slices, &nodes, &[])
        });
    })?;
    let kubelet_tls = pki::tls_config(&layout.kubelet_serving)?;
    let kubelet = serve(netns, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), n.kubelet_port), move |s| {
        pki::serve_kubelet_connection(kubelet_tls.clone(), s);
    })?;
    let healthz =
        serve(netns, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), n.healthz_port), pki::serve_healthz_connection)?;
    Ok(vec![api, kubelet, healthz])
}

/// CoreDNS as dnsmasq on the cluster DNS Service IP and the endpoints: authoritative for the
/// cluster domain, knowing `kubernetes.default` and `kube-dns.kube-system`.
fn dnsmasq(netns: &str, n: &NodeSpec) -> Result<Child> {
    let d = &n.cluster_domain;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
        .args(["--no-hosts", "--no-resolv", "--cache-size=0", "--pid-file=", "--user=root", "--group=root"])
        .arg("--bind-interfaces")
        .arg(format!("--listen-address={}", n.cluster_dns))
        .args(n.coredns.iter().map(|ip| format!("--listen-address={ip}")))
        .arg(format!("--local=/{d}/"))
        .arg(format!("--host-record=kubernetes.default.svc.{d},{}", n.kubernetes_service))
        .arg(format!("--host-record=kube-dns.kube-system.svc.{d},{}", n.cluster_dns))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting dnsmasq (is it installed? `cargo xtask setup` installs it)")?;
    let target = SocketAddr::new(n.cluster_dns.into(), 53);
    let up = crate::servers::listening(netns, target)?;
    if !up {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        bail!("dnsmasq did not start: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(child)
}

/// The layout's API server (on node n1, `layout.node.api`, listing the lab's nodes and its
/// CoreDNS endpoints) and its kubelet on n1, plus n2's kubelet: `netcheck node` in n1 then
/// checks n2 as a peer (VXLAN, MTU, kubelet). Call after [`Lab::start_dns`]; do not call
/// [`Lab::start_servers`] (n1's kubelet is the layout's).
pub fn serve_on_lab(lab: &mut Lab, layout: &Layout, dns: &Dns) -> Result<()> {
    let netns = lab.node(1).netns.clone();
    let nodes = crate::api::node_list(&lab.nodes, &[]);
    let servers = serve_node(&netns, layout, &dns.endpoints, nodes)?;
    lab.servers.extend(servers);
    lab.serve_kubelet(2, true)
}
