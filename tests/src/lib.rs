//! The network lab: a flannel-style two-node cluster in network namespaces.
//!
//! ```text
//!            underlay switch (ns <p>-ul, bridge br0, 192.168.50.0/24)
//!              |                                   |
//!   node n1 (ns <p>-n1) eth0 .11          node n2 (ns <p>-n2) eth0 .12
//!     flannel.1 10.244.1.0/32 (VXLAN VNI 1, UDP 8472)   flannel.1 10.244.2.0/32
//!     cni0 10.244.1.1/24                                cni0 10.244.2.1/24
//!      |-- veth -- pod (ns <p>-n1-<pod>) 10.244.1.N      |-- veth -- pod 10.244.2.N
//! ```
//!
//! Routes, neighbour and FDB entries are written the way flannel's vxlan backend writes them;
//! each node masquerades pod traffic leaving the pod network, as flannel's iptables rules do.
//! Everything lives in namespaces named after a prefix unique to this process and lab, so labs
//! run in parallel; dropping the [`Lab`] deletes them (also when a test panics), and
//! [`clean_stale`] removes what a killed process left behind.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::sched::{CloneFlags, setns};

pub mod agent;
mod api;
pub mod api_nodes;
pub mod btf;
pub mod deploy;
mod faults;
mod host;
pub mod kernel;
mod kube_proxy;
mod kube_proxy_ipvs;
mod kube_proxy_nft;
pub mod layouts;
pub mod netcheck;
pub mod pki;
mod servers;
pub mod split;

use self::servers::serve;
pub use self::{
    api::{ADMIN_TOKEN, NO_RIGHTS_TOKEN},
    host::*,
    kube_proxy::{LabEndpoint, LabPort, LabService, Programming},
    kube_proxy_ipvs::IpvsProgramming,
    servers::{http_get, http_get_as},
};

/// flannel's defaults (see docs/field-cases.md).
pub const VXLAN_PORT: u16 = 8472;
pub const VNI: u32 = 1;
pub const OVERLAY_MTU: u32 = 1450;
pub const UNDERLAY_MTU: u32 = 1500;
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const KUBELET_PORT: u16 = 10250;
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;
pub const API_PORT: u16 = 6443;
/// kubeadm's kube-dns Service IP.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The upstream resolver CoreDNS forwards to (a host on the underlay).
pub const UPSTREAM_DNS_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 53);
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// What the lab's DNS knows: a cluster name (CoreDNS) and an external one (the upstream).
pub const CLUSTER_NAME: (&str, Ipv4Addr) = ("kubernetes.default.svc.cluster.local", Ipv4Addr::new(10, 96, 0, 1));
pub const EXTERNAL_NAME: (&str, Ipv4Addr) = ("www.example.com", Ipv4Addr::new(203, 0, 113, 10));

pub(crate) const NETNS_DIR: &str = "/var/run/netns";
/// Every lab namespace starts with this, then the owner's pid: `nclab<pid>x<n>-...`.
const NAME_PREFIX: &str = "nclab";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A node of the lab (index 1 or 2).
#[derive(Debug, Clone)]
pub struct Node {
    pub index: u8,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: String,
}

impl Node {
    pub fn pod_subnet(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }
    pub fn flannel_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 0)
    }
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 1)
    }
    /// The node's name (as a kubelet would register it).
    pub fn name(&self) -> String {
        format!("n{}", self.index)
    }

    /// Node `index` of the lab `prefix`: its namespace, underlay address and VTEP MAC.
    fn of(prefix: &str, index: u8) -> Self {
        Self {
            index,
            netns: format!("{prefix}-n{index}"),
            underlay_ip: Ipv4Addr::new(192, 168, 50, 10 + index),
            vtep_mac: format!("02:fa:00:00:00:0{index}"),
        }
    }

    /// The node's own devices, once its namespace has an `eth0` on the underlay: the address,
    /// flannel.1, cni0, forwarding and flannel's masquerade rule.
    fn configure(&self) -> Result<()> {
        let ns = &self.netns;
        ip(ns, "link set lo up")?;
        ip(ns, &format!("addr add {}/24 dev eth0", self.underlay_ip))?;
        ip(ns, &format!("link set eth0 mtu {UNDERLAY_MTU} up"))?;
        ip(
            ns,
            &format!(
                "link add flannel.1 type vxlan id {VNI} local {} dev eth0 dstport {VXLAN_PORT} nolearning",
                self.underlay_ip
            ),
        )?;
        ip(ns, &format!("link set flannel.1 address {} mtu {OVERLAY_MTU} up", self.vtep_mac))?;
        ip(ns, &format!("addr add {}/32 dev flannel.1", self.flannel_ip()))?;
        ip(ns, "link add cni0 type bridge")?;
        ip(ns, &format!("addr add {}/24 dev cni0", self.gateway()))?;
        ip(ns, &format!("link set cni0 mtu {OVERLAY_MTU} up"))?;
        sysctl(ns, "net.ipv4.ip_forward", "1")?;
        // flannel: masquerade pod traffic that leaves the pod network.
        iptables(ns, &format!("-t nat -A POSTROUTING -s {POD_CIDR} ! -d {POD_CIDR} -j MASQUERADE"))
    }

    /// flannel's vxlan backend towards every other node of `nodes`: a route per peer subnet via
    /// the peer's VTEP address (onlink), a permanent neighbour entry for it and an FDB entry
    /// pointing at the peer's underlay IP.
    fn wire_overlay(&self, nodes: &[Node]) -> Result<()> {
        let ns = &self.netns;
        for peer in nodes.iter().filter(|p| p.index != self.index) {
            ip(ns, &format!("route add {} via {} dev flannel.1 onlink", peer.pod_subnet(), peer.flannel_ip()))?;
            ip(ns, &format!("neigh add {} lladdr {} dev flannel.1 nud permanent", peer.flannel_ip(), peer.vtep_mac))?;
            let (mac, dst) = (peer.vtep_mac.as_str(), peer.underlay_ip.to_string());
            run("bridge", &["-n", ns, "fdb", "append", mac, "dev", "flannel.1", "dst", &dst, "self", "permanent"])?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub netns: String,
    pub node: u8,
    pub ip: Ipv4Addr,
}

/// A server running on a thread inside a lab namespace; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Lab {
    pub prefix: String,
    pub switch: String,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    /// The lab's cluster CA; it signs the kubelets' serving certificates.
    pub pki: pki::Pki,
    /// Nodes the API stand-in lists beyond the lab's own: (name, InternalIP on loopback).
    pub synthetic_nodes: Vec<(String, Ipv4Addr)>,
    /// The writes the API stand-in received, in order: "PATCH /path" or "POST /path", then the body.
    pub api_writes: Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    /// How the API stand-in's Nodes look (set before [`Self::serve_api`]).
    pub api_nodes: api_nodes::ApiNodes,
    /// Every request the API stand-in answered, in order, with the bytes it sent.
    pub api_requests: Arc<std::sync::Mutex<Vec<api_nodes::ApiRequest>>>,
    /// The Services the API stand-in serves and the kube-proxy stand-in programs.
    pub services: Arc<std::sync::Mutex<Vec<LabService>>>,
    servers: Vec<Server>,
    /// Daemons (dnsmasq) running inside lab namespaces, by name; killed when dropped.
    daemons: Vec<(String, std::process::Child)>,
    keep: bool,
}

/// The lab's cluster DNS (see [`Lab::start_dns`]).
#[derive(Debug, Clone)]
pub struct Dns {
    pub service: Ipv4Addr,
    /// The CoreDNS pods behind the Service: one per node.
    pub endpoints: Vec<Ipv4Addr>,
    pub upstream: Ipv4Addr,
}

impl Lab {
    /// Two nodes, pod `a` (10.244.1.2) and `c` (10.244.1.3) on n1, pod `b` (10.244.2.2) on n2.
    pub fn new() -> Result<Self> {
        Self::with_prefix(&unique_prefix())
    }

    pub fn with_prefix(prefix: &str) -> Result<Self> {
        Self::with_prefix_nodes(prefix, 2)
    }

    /// `count` nodes (2 to 9) and the same pods: `a` and `c` on n1, `b` on n2.
    pub fn with_nodes(count: u8) -> Result<Self> {
        Self::with_prefix_nodes(&unique_prefix(), count)
    }

    fn with_prefix_nodes(prefix: &str, count: u8) -> Result<Self> {
        if !(2..=9).contains(&count) {
            bail!("a lab has 2 to 9 nodes, not {count}");
        }
        let mut lab = Self::empty(prefix, Vec::new())?;
        lab.build(count).with_context(|| format!("building lab {prefix}"))?;
        Ok(lab)
    }

    /// A lab named `prefix` knowing `nodes`, with nothing built yet.
    fn empty(prefix: &str, nodes: Vec<Node>) -> Result<Self> {
        Ok(Self {
            prefix: prefix.to_string(),
            switch: format!("{prefix}-ul"),
            nodes,
            pods: Vec::new(),
            pki: pki::Pki::new("netcheck-lab-ca")?,
            synthetic_nodes: Vec::new(),
            api_writes: Arc::default(),
            api_nodes: api_nodes::ApiNodes::default(),
            api_requests: Arc::default(),
            services: Arc::default(),
            servers: Vec::new(),
            daemons: Vec::new(),
            keep: false,
        })
    }

    fn build(&mut self, count: u8) -> Result<()> {
        let sw = self.switch.clone();
        add_netns(&sw)?;
        ip(&sw, "link add br0 type bridge")?;
        ip(&sw, "link set br0 up")?;
        ip(&sw, "link set lo up")?;
        for index in 1..=count {
            let node = Node::of(&self.prefix, index);
            add_netns(&node.netns)?;
            ip(&sw, &format!("link add n{index} type veth peer name eth0 netns {}", node.netns))?;
            ip(&sw, &format!("link set n{index} master br0 up"))?;
            node.configure()?;
            self.nodes.push(node);
        }
        for node in &self.nodes {
            node.wire_overlay(&self.nodes)?;
        }
        self.add_pod(1, "a", 2)?;
        self.add_pod(2, "b", 2)?;
        self.add_pod(1, "c", 3)?;
        Ok(())
    }

    /// A pod namespace on a node's cni0, with address 10.244.<node>.<host>.
    pub fn add_pod(&mut self, node: u8, name: &str, host: u8) -> Result<Pod> {
        let n = self.node(node).clone();
        let pod = Pod {
            name: name.to_string(),
            netns: format!("{}-n{node}-{name}", self.prefix),
            node,
            ip: Ipv4Addr::new(10, 244, node, host),
        };
        add_netns(&pod.netns)?;
        let veth = format!("veth{name}");
        ip(&n.netns, &format!("link add {veth} type veth peer name eth0 netns {}", pod.netns))?;
        ip(&n.netns, &format!("link set {veth} master cni0 mtu {OVERLAY_MTU} up"))?;
        ip(&pod.netns, "link set lo up")?;
        ip(&pod.netns, &format!("addr add {}/24 dev eth0", pod.ip))?;
        ip(&pod.netns, &format!("link set eth0 mtu {OVERLAY_MTU} up"))?;
        ip(&pod.netns, &format!("route add default via {}", n.gateway()))?;
        self.pods.push(pod.clone());
        Ok(pod)
    }

    pub fn node(&self, index: u8) -> &Node {
        self.nodes.iter().find(|n| n.index == index).expect("lab node")
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).expect("lab pod")
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.switch.clone()];
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v.extend(self.pods.iter().map(|p| p.netns.clone()));
        v
    }

    /// Leaves the namespaces in place when dropped (for `xtask lab up`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Deletes every namespace of a lab by its prefix.
    pub fn destroy(prefix: &str) -> Result<()> {
        for name in list_netns()? {
            if name.starts_with(&format!("{prefix}-")) {
                kill_netns_processes(&name);
                let _ = run("ip", &["netns", "del", &name]);
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.servers.clear();
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep {
            let _ = Self::destroy(&self.prefix);
        }
    }
}
