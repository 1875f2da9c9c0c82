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
pub mod deploy;
pub mod kernel;
pub mod netcheck;
pub mod pki;

/// flannel's defaults (see shared/FIELD.md).
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
        let mut lab = Self {
            prefix: prefix.to_string(),
            switch: format!("{prefix}-ul"),
            nodes: Vec::new(),
            pods: Vec::new(),
            pki: pki::Pki::new("netcheck-lab-ca")?,
            synthetic_nodes: Vec::new(),
            api_writes: Arc::default(),
            servers: Vec::new(),
            daemons: Vec::new(),
            keep: false,
        };
        lab.build().with_context(|| format!("building lab {prefix}"))?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let sw = self.switch.clone();
        add_netns(&sw)?;
        ip(&sw, "link add br0 type bridge")?;
        ip(&sw, "link set br0 up")?;
        ip(&sw, "link set lo up")?;
        for index in [1u8, 2] {
            let node = Node {
                index,
                netns: format!("{}-n{index}", self.prefix),
                underlay_ip: Ipv4Addr::new(192, 168, 50, 10 + index),
                vtep_mac: format!("02:fa:00:00:00:0{index}"),
            };
            let ns = &node.netns;
            add_netns(ns)?;
            ip(&sw, &format!("link add n{index} type veth peer name eth0 netns {ns}"))?;
            ip(&sw, &format!("link set n{index} master br0 up"))?;
            ip(ns, "link set lo up")?;
            ip(ns, &format!("addr add {}/24 dev eth0", node.underlay_ip))?;
            ip(ns, &format!("link set eth0 mtu {UNDERLAY_MTU} up"))?;
            ip(
                ns,
                &format!(
                    "link add flannel.1 type vxlan id {VNI} local {} dev eth0 dstport {VXLAN_PORT} nolearning",
                    node.underlay_ip
                ),
            )?;
            ip(ns, &format!("link set flannel.1 address {} mtu {OVERLAY_MTU} up", node.vtep_mac))?;
            ip(ns, &format!("addr add {}/32 dev flannel.1", node.flannel_ip()))?;
            ip(ns, "link add cni0 type bridge")?;
            ip(ns, &format!("addr add {}/24 dev cni0", node.gateway()))?;
            ip(ns, &format!("link set cni0 mtu {OVERLAY_MTU} up"))?;
            sysctl(ns, "net.ipv4.ip_forward", "1")?;
            // flannel: masquerade pod traffic that leaves the pod network.
            iptables(ns, &format!("-t nat -A POSTROUTING -s {POD_CIDR} ! -d {POD_CIDR} -j MASQUERADE"))?;
            self.nodes.push(node);
        }
        // flannel's vxlan backend: a route per peer subnet via the peer's VTEP address (onlink),
        // a permanent neighbour entry for it and an FDB entry pointing at the peer's underlay IP.
        for node in &self.nodes {
            for peer in self.nodes.iter().filter(|p| p.index != node.index) {
                let ns = &node.netns;
                ip(ns, &format!("route add {} via {} dev flannel.1 onlink", peer.pod_subnet(), peer.flannel_ip()))?;
                ip(
                    ns,
                    &format!("neigh add {} lladdr {} dev flannel.1 nud permanent", peer.flannel_ip(), peer.vtep_mac),
                )?;
                run(
                    "bridge",
                    &[
                        "-n",
                        ns,
                        "fdb",
                        "append",
                        &peer.vtep_mac,
                        "dev",
                        "flannel.1",
                        "dst",
                        &peer.underlay_ip.to_string(),
                        "self",
                        "permanent",
                    ],
                )?;
            }
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

    /// A TCP listener (accepts and closes) inside `netns`. Returns its index for `stop_server`.
    /// A TCP listener inside `netns` that accepts and closes (enough for a connect probe).
    pub fn serve_tcp(&mut self, netns: &str, addr: SocketAddr) -> Result<()> {
        self.servers.push(serve(netns, addr, drop)?);
        Ok(())
    }

    /// An HTTPS "kubelet" on the node's 10250 with a serving certificate from the lab CA for
    /// the node's name and (when `ip_san`) its underlay IP.
    pub fn serve_kubelet(&mut self, node: u8, ip_san: bool) -> Result<()> {
        let n = self.node(node).clone();
        let name = n.name();
        let ips: Vec<IpAddr> = if ip_san { vec![n.underlay_ip.into()] } else { Vec::new() };
        let leaf = self.pki.serving(&name, &[&name], &ips)?;
        let config = pki::tls_config(&leaf)?;
        let addr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), KUBELET_PORT);
        self.servers.push(serve(&n.netns, addr, move |s| pki::serve_kubelet_connection(config.clone(), s))?);
        // healthzBindAddress: plain HTTP on the node's loopback.
        let healthz = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), KUBELET_HEALTHZ_PORT);
        self.servers.push(serve(&n.netns, healthz, pki::serve_healthz_connection)?);
        Ok(())
    }

    /// The listener in pod `b` on 8080, and the HTTPS kubelet (with IP SAN) on each node.
    pub fn start_servers(&mut self) -> Result<()> {
        let b = self.pod("b").clone();
        self.serve_tcp(&b.netns, SocketAddr::new(b.ip.into(), 8080))?;
        for index in [1, 2] {
            self.serve_kubelet(index, true)?;
        }
        Ok(())
    }

    /// The cluster DNS as kubeadm sets it up, with dnsmasq standing in for CoreDNS:
    /// - a CoreDNS pod on each node (10.244.N.10), authoritative for cluster.local (unknown
    ///   names are NXDOMAIN) and forwarding everything else to the upstream, without a cache;
    /// - the upstream resolver on the underlay (192.168.50.53), knowing www.example.com;
    /// - the kube-dns Service IP 10.96.0.10, DNATed by each node to a random endpoint the way
    ///   kube-proxy's iptables mode does (UDP and TCP 53).
    pub fn start_dns(&mut self) -> Result<Dns> {
        let up = format!("{}-up", self.prefix);
        add_netns(&up)?;
        ip(&self.switch, &format!("link add up0 type veth peer name eth0 netns {up}"))?;
        ip(&self.switch, "link set up0 master br0 up")?;
        ip(&up, "link set lo up")?;
        ip(&up, &format!("addr add {UPSTREAM_DNS_IP}/24 dev eth0"))?;
        ip(&up, "link set eth0 up")?;
        let (external, external_ip) = EXTERNAL_NAME;
        self.dnsmasq(
            "upstream",
            &up,
            UPSTREAM_DNS_IP,
            // Authoritative for every name: what it does not know is NXDOMAIN, as on the Internet.
            &["--local=/#/", &format!("--host-record={external},{external_ip}")],
        )?;
        let mut endpoints = Vec::new();
        for node in [1u8, 2] {
            let pod = self.add_pod(node, &format!("dns{node}"), 10)?;
            let (cluster, cluster_ip) = CLUSTER_NAME;
            self.dnsmasq(
                &format!("coredns-{node}"),
                &pod.netns,
                pod.ip,
                &[
                    &format!("--local=/{CLUSTER_DOMAIN}/"),
                    &format!("--host-record={cluster},{cluster_ip}"),
                    &format!("--host-record=kube-dns.kube-system.svc.{CLUSTER_DOMAIN},{DNS_SERVICE_IP}"),
                    &format!("--server={UPSTREAM_DNS_IP}"),
                ],
            )?;
            endpoints.push(pod.ip);
        }
        for node in &self.nodes {
            let ns = &node.netns;
            // Nodes reach Service IPs through their default route (kube-proxy DNATs in OUTPUT,
            // then the packet is routed again); the lab has no default route, so the Service
            // CIDR gets one of its own.
            ip(ns, &format!("route add {SERVICE_CIDR} dev eth0"))?;
            iptables(ns, "-t nat -N KUBE-SVC-DNS")?;
            iptables(
                ns,
                &format!(
                    "-t nat -A KUBE-SVC-DNS -m statistic --mode random --probability 0.5 -j DNAT --to-destination {}",
                    endpoints[0]
                ),
            )?;
            iptables(ns, &format!("-t nat -A KUBE-SVC-DNS -j DNAT --to-destination {}", endpoints[1]))?;
            for proto in ["udp", "tcp"] {
                for chain in ["PREROUTING", "OUTPUT"] {
                    iptables(
                        ns,
                        &format!("-t nat -A {chain} -d {DNS_SERVICE_IP}/32 -p {proto} --dport 53 -j KUBE-SVC-DNS"),
                    )?;
                }
            }
        }
        Ok(Dns { service: DNS_SERVICE_IP, endpoints, upstream: UPSTREAM_DNS_IP })
    }

    /// `count` more nodes for the API stand-in to list (call before [`Self::serve_api`]), named
    /// `peer-NNNNN`, their InternalIPs on loopback (127.1.0.0/16), where each lab node's kubelet
    /// stand-in (bound to every address) answers them.
    pub fn add_synthetic_nodes(&mut self, count: usize) {
        for i in 0..count {
            let ip =
                Ipv4Addr::new(127, 1, u8::try_from(i / 250).unwrap_or(u8::MAX), u8::try_from(i % 250 + 1).unwrap_or(1));
            self.synthetic_nodes.push((format!("peer-{i:05}"), ip));
        }
    }

    /// A stand-in for the Kubernetes API on node `node`'s 6443 (HTTPS, serving certificate from
    /// the lab CA with the node's IP): it answers the requests netcheck makes, the kube-dns
    /// Service's EndpointSlices (a list of `endpoints`), the nodes (the lab's, with their
    /// InternalIPs) and the pod behind an IP (the lab's pods so far, namespace `default`), in the
    /// API's JSON shape, and 404 (a Status) to anything else. Returns a kubeconfig for it (token user).
    pub fn serve_api(&mut self, node: u8, endpoints: &[Ipv4Addr]) -> Result<String> {
        let n = self.node(node).clone();
        let leaf = self.pki.serving("kube-apiserver", &["kubernetes"], &[n.underlay_ip.into()])?;
        let config = pki::tls_config(&leaf)?;
        let body = endpoint_slice_list(endpoints);
        let nodes = node_list(&self.nodes, &self.synthetic_nodes);
        let pods = self.pods.clone();
        let addr = SocketAddr::new(n.underlay_ip.into(), API_PORT);
        let writes = self.api_writes.clone();
        self.servers.push(serve(&n.netns, addr, move |s| {
            let (body, nodes, pods, writes) = (body.clone(), nodes.clone(), pods.clone(), writes.clone());
            pki::serve_https_connection(config.clone(), s, move |request| {
                if let Some(written) = api_write(request, &nodes) {
                    writes.lock().expect("api writes").push(written.0);
                    return written.1;
                }
                api_response(request, &body, &nodes, &pods)
            });
        })?);
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.pki.ca_pem());
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{addr}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: netcheck\n  user:\n    token: lab-token\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: netcheck\ncurrent-context: lab\n"
        ))
    }

    /// A node root for node `node` in `dir`, as kubeadm and flannel leave it: the kubelet's
    /// config.yaml (clusterDNS, clusterDomain, healthz), its kubeconfig naming the API server
    /// on n1 with the lab CA, flannel's subnet.env, the node's resolv.conf (the upstream) and
    /// the kubelet's serving certificate under var/lib/kubelet/pki.
    pub fn write_host_root(&self, node: u8, dir: &TempDir, kubeconfig: &str) -> Result<()> {
        let n = self.node(node);
        for folder in ["var/lib/kubelet/pki", "etc/kubernetes", "run/flannel", "etc"] {
            std::fs::create_dir_all(dir.path.join(folder))?;
        }
        dir.write(
            "var/lib/kubelet/config.yaml",
            &format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS:\n- {DNS_SERVICE_IP}\n\
                 clusterDomain: {CLUSTER_DOMAIN}\nhealthzBindAddress: 127.0.0.1\nhealthzPort: {KUBELET_HEALTHZ_PORT}\n"
            ),
        );
        dir.write("etc/kubernetes/kubelet.conf", kubeconfig);
        dir.write(
            "run/flannel/subnet.env",
            &format!(
                "FLANNEL_NETWORK={POD_CIDR}\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU={OVERLAY_MTU}\nFLANNEL_IPMASQ=true\n",
                n.gateway()
            ),
        );
        dir.write("etc/resolv.conf", &format!("nameserver {UPSTREAM_DNS_IP}\n"));
        // flannel's CNI configuration (as its DaemonSet installs it) and the plugin binaries
        // it names (empty files: only their presence is checked).
        std::fs::create_dir_all(dir.path.join("etc/cni/net.d"))?;
        std::fs::create_dir_all(dir.path.join("opt/cni/bin"))?;
        dir.write(
            "etc/cni/net.d/10-flannel.conflist",
            "{\n  \"name\": \"cbr0\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    { \"type\": \"flannel\", \
             \"delegate\": { \"hairpinMode\": true, \"isDefaultGateway\": true } },\n    { \"type\": \"portmap\", \
             \"capabilities\": { \"portMappings\": true } }\n  ]\n}\n",
        );
        for plugin in ["flannel", "portmap", "bridge", "loopback"] {
            dir.write(&format!("opt/cni/bin/{plugin}"), "");
        }
        let name = n.name();
        let serving = self.pki.serving(&name, &[&name], &[n.underlay_ip.into()])?;
        dir.write("var/lib/kubelet/pki/kubelet.crt", &serving.cert_pem);
        Ok(())
    }

    /// A pod's resolv.conf as the kubelet writes it (ClusterFirst, namespace default).
    pub fn pod_resolv_conf() -> String {
        format!(
            "nameserver {DNS_SERVICE_IP}\nsearch default.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
        )
    }

    /// Fault: the CoreDNS pod on `node` is unreachable (its node drops DNS forwarded to it).
    pub fn block_dns_endpoint(&self, node: u8) -> Result<()> {
        let ip = Ipv4Addr::new(10, 244, node, 10);
        for proto in ["udp", "tcp"] {
            iptables(&self.node(node).netns, &format!("-I FORWARD -d {ip} -p {proto} --dport 53 -j DROP"))?;
        }
        Ok(())
    }

    /// Fault: the upstream resolver is down (its host answers with ICMP port unreachable).
    pub fn stop_upstream_dns(&mut self) {
        self.daemons.retain_mut(|(name, child)| {
            if name == "upstream" {
                let _ = child.kill();
                let _ = child.wait();
                false
            } else {
                true
            }
        });
    }

    /// dnsmasq on `addr`:53 inside `netns`: no config file, no hosts file, no cache, no
    /// resolv.conf; `extra` says what it knows and where it forwards.
    fn dnsmasq(&mut self, name: &str, netns: &str, addr: Ipv4Addr, extra: &[&str]) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--no-hosts", "--no-resolv", "--cache-size=0", "--pid-file=", "--user=root", "--group=root"])
            .args(["--bind-interfaces", &format!("--listen-address={addr}")])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().context("starting dnsmasq (is it installed? `cargo xtask setup` installs it)")?;
        // Ready when it answers on TCP 53 (it binds UDP and TCP together).
        let target = SocketAddr::new(addr.into(), 53);
        let ns = netns.to_string();
        let up = in_netns(&ns, move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(false)
        })?;
        if !up {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!("dnsmasq {name} did not start: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        self.daemons.push((name.to_string(), child));
        Ok(())
    }

    /// Fault, signalled: node `node`'s flannel.1 gets a smaller MTU than its pods (a CNI MTU
    /// changed on the overlay but not in the pods). The node, forwarding a pod's oversized DF
    /// packet into flannel.1, answers with ICMP fragmentation-needed: PMTUD works.
    pub fn set_overlay_mtu(&self, node: u8, mtu: u32) -> Result<()> {
        ip(&self.node(node).netns, &format!("link set flannel.1 mtu {mtu}"))
    }

    /// Fault, silent (a black hole): the switch between the nodes carries only `mtu`-byte
    /// frames while the nodes' uplinks keep 1500, as when a provider's network is smaller than
    /// the node's interface says. Bigger frames are dropped on the way and nobody sends ICMP.
    pub fn shrink_switch_mtu(&self, mtu: u32) -> Result<()> {
        for node in &self.nodes {
            ip(&self.switch, &format!("link set n{} mtu {mtu}", node.index))?;
        }
        Ok(())
    }

    /// Stops every server listening on `port` (the "listener stopped" fault; the kubelet's
    /// healthz port goes with 10250, as when the kubelet stops).
    pub fn stop_servers_on(&mut self, port: u16) {
        let also = if port == KUBELET_PORT { KUBELET_HEALTHZ_PORT } else { port };
        self.servers.retain(|s| s.addr.port() != port && s.addr.port() != also);
    }

    /// Runs an iptables command in a lab namespace (faults are injected this way).
    pub fn iptables(&self, netns: &str, args: &str) -> Result<()> {
        iptables(netns, args)
    }

    /// Fault: the destination node silently drops TCP to a pod port (FORWARD DROP).
    pub fn drop_forwarded_tcp(&self, node: u8, dst: Ipv4Addr, port: u16) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-I FORWARD -d {dst} -p tcp --dport {port} -j DROP"))
    }

    /// Fault (FIELD.md case 1): the node's INPUT rejects pod sources to the kubelet with
    /// icmp-host-prohibited, while node IPs are allowed.
    pub fn reject_pods_to_kubelet(&self, node: u8) -> Result<()> {
        iptables(
            &self.node(node).netns,
            &format!(
                "-I INPUT -s {POD_CIDR} -p tcp --dport {KUBELET_PORT} -j REJECT --reject-with icmp-host-prohibited"
            ),
        )
    }

    /// Fault (FIELD.md case 4): the node drops VXLAN (UDP 8472) arriving on its underlay.
    pub fn drop_vxlan(&self, node: u8) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-I INPUT -i eth0 -p udp --dport {VXLAN_PORT} -j DROP"))
    }

    /// Clears [`Self::drop_vxlan`].
    pub fn allow_vxlan(&self, node: u8) -> Result<()> {
        iptables(&self.node(node).netns, &format!("-D INPUT -i eth0 -p udp --dport {VXLAN_PORT} -j DROP"))
    }

    /// Fault: node `node` loses its FDB entry for `peer` (as when flannel's subnet watch
    /// missed the peer): frames for the peer's VTEP MAC have nowhere to go.
    pub fn delete_fdb(&self, node: u8, peer: u8) -> Result<()> {
        let p = self.node(peer).clone();
        run(
            "bridge",
            &[
                "-n",
                &self.node(node).netns,
                "fdb",
                "del",
                &p.vtep_mac,
                "dev",
                "flannel.1",
                "dst",
                &p.underlay_ip.to_string(),
                "self",
            ],
        )
    }

    /// Packets counted by the first rule of a chain (to prove a fault really fired).
    pub fn rule_packets(&self, netns: &str, table: &str, chain: &str) -> Result<u64> {
        let out = output("ip", &["netns", "exec", netns, "iptables", "-t", table, "-L", chain, "-v", "-n", "-x"])?;
        out.lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("no rule in chain")
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

/// The kube-dns Service's EndpointSlices as `GET .../endpointslices?labelSelector=...` returns
/// them (discovery.k8s.io/v1).
fn endpoint_slice_list(endpoints: &[Ipv4Addr]) -> String {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    serde_json::json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": "1042"},
        "items": [{
            "metadata": {
                "name": "kube-dns-7x2kq",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"}
            },
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
            ]
        }]
    })
    .to_string()
}

/// The lab's nodes as the API lists them (name, InternalIP, podCIDR, Ready).
fn node_list(nodes: &[Node], synthetic: &[(String, Ipv4Addr)]) -> String {
    let lab = nodes.iter().map(|n| (n.name(), n.underlay_ip, n.pod_subnet()));
    let more = synthetic
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| (name.clone(), *ip, format!("10.{}.{}.0/24", 100 + i / 256, i % 256)));
    let items: Vec<serde_json::Value> = lab
        .chain(more)
        .map(|(name, ip, cidr)| {
            serde_json::json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": ip.to_string()},
                        {"type": "Hostname", "address": name}
                    ],
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            })
        })
        .collect();
    serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1043"}, "items": items})
        .to_string()
}

/// The lab's pods whose IP a `status.podIP=` field selector in the request names, as a PodList
/// (namespace `default`, on their node).
fn pod_list(request: &str, pods: &[Pod]) -> String {
    let wanted = request.split_once("status.podIP%3D").and_then(|(_, rest)| {
        let ip: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        ip.parse::<Ipv4Addr>().ok()
    });
    let items: Vec<serde_json::Value> = pods
        .iter()
        .filter(|p| Some(p.ip) == wanted)
        .map(|p| {
            serde_json::json!({
                "metadata": {"name": p.name, "namespace": "default"},
                "spec": {"nodeName": format!("n{}", p.node), "containers": [{"name": "c"}]},
                "status": {"podIP": p.ip.to_string()}
            })
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1044"}, "items": items})
        .to_string()
}

/// A write the agent makes (its node condition, an Event): recorded, and answered the way the
/// API server answers (the patched Node; the created Event with its server-set metadata).
fn api_write(request: &[u8], nodes: &str) -> Option<((String, serde_json::Value), Vec<u8>)> {
    let text = String::from_utf8_lossy(request);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?);
    let path = path.split('?').next()?.to_string();
    if method != "PATCH" && method != "POST" {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let (status, answer) =
        if let Some(name) = path.strip_prefix("/api/v1/nodes/").and_then(|p| p.strip_suffix("/status")) {
            let list: serde_json::Value = serde_json::from_str(nodes).ok()?;
            let mut node = list["items"].as_array()?.iter().find(|n| n["metadata"]["name"] == name)?.clone();
            node["apiVersion"] = "v1".into();
            node["kind"] = "Node".into();
            node["metadata"]["resourceVersion"] = "1044".into();
            if let Some(conditions) = body["status"]["conditions"].as_array() {
                let mut all = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
                all.extend(conditions.iter().cloned());
                node["status"]["conditions"] = all.into();
            }
            ("200 OK", node)
        } else if path == "/api/v1/namespaces/default/events" {
            let mut event = body.clone();
            let prefix = event["metadata"]["generateName"].as_str().unwrap_or("event.").to_string();
            event["metadata"]["name"] = format!("{prefix}17a2b3c4d5e6f708").into();
            event["metadata"]["uid"] = "6f1c2d3e-0000-4000-8000-000000000001".into();
            event["metadata"]["resourceVersion"] = "1045".into();
            event["metadata"]["creationTimestamp"] = "2026-11-23T00:00:00Z".into();
            ("201 Created", event)
        } else {
            return None;
        };
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    Some(((format!("{method} {path}"), body), response.into_bytes()))
}

fn api_response(request: &[u8], endpoint_slices: &str, nodes: &str, pods: &[Pod]) -> Vec<u8> {
    let wanted = b"GET /apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices?";
    let (status, body) = if request.starts_with(wanted)
        && String::from_utf8_lossy(request).contains("kubernetes.io%2Fservice-name%3Dkube-dns")
    {
        ("200 OK", endpoint_slices.to_string())
    } else if request.starts_with(b"GET /api/v1/nodes?") || request.starts_with(b"GET /api/v1/nodes ") {
        ("200 OK", nodes.to_string())
    } else if request.starts_with(b"GET /api/v1/pods?") {
        ("200 OK", pod_list(&String::from_utf8_lossy(request), pods))
    } else {
        let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
        ("404 Not Found", status.to_string())
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `count` UDP datagrams from inside `netns` to `dst`, spread over at most `max_time`
/// (bounded in count and time). Used to make background drops.
pub fn udp_flood(netns: &str, dst: SocketAddr, count: u64, max_time: Duration) -> Result<u64> {
    in_netns(netns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let started = Instant::now();
        let payload = [0u8; 64];
        let mut sent = 0;
        while sent < count && started.elapsed() < max_time {
            if sock.send_to(&payload, dst).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })
}

/// `GET path` over HTTP/1.1 from inside `netns` (bounded: 5 s to connect, read and write):
/// the status code and the body.
pub fn http_get(netns: &str, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status code")?;
        let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
    })
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs `f` on a thread that has entered `netns` (sockets it makes live there).
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let path = Path::new(NETNS_DIR).join(netns);
    std::thread::spawn(move || {
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// A listener inside `netns`; each accepted connection goes to `handle` on a thread of its own.
fn serve(netns: &str, addr: SocketAddr, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Result<Server> {
    let handle = Arc::new(handle);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let path = Path::new(NETNS_DIR).join(netns);
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let bound = (|| -> Result<TcpListener> {
            let file = File::open(&path)?;
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    std::thread::spawn(move || handle(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().context("server thread")??;
    Ok(Server { addr, stop, thread: Some(thread) })
}

/// A prefix unique to this process and lab: `nclab<pid>x<n>`.
pub fn unique_prefix() -> String {
    format!("{NAME_PREFIX}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Removes lab namespaces whose owning process is gone (a killed test, a crashed xtask).
pub fn clean_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_netns()? {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = !pid.is_empty() && Path::new("/proc").join(&pid).exists();
        if !alive || pid.is_empty() {
            kill_netns_processes(&name);
            let _ = run("ip", &["netns", "del", &name]);
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Names of every named network namespace on the machine.
pub fn list_netns() -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return Ok(Vec::new()) };
    Ok(entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
}

/// Kills what still runs inside a lab namespace (a daemon whose lab was killed).
fn kill_netns_processes(name: &str) {
    if let Ok(pids) = output("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn add_netns(name: &str) -> Result<()> {
    run("ip", &["netns", "add", name])
}

fn ip(netns: &str, args: &str) -> Result<()> {
    let mut v = vec!["-n", netns];
    v.extend(args.split_whitespace());
    run("ip", &v)
}

fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    run("ip", &["netns", "exec", netns, "sysctl", "-qw", &format!("{key}={value}")])
}

fn iptables(netns: &str, args: &str) -> Result<()> {
    let mut v = vec!["netns", "exec", netns, "iptables", "-w"];
    v.extend(args.split_whitespace());
    run("ip", &v)
}

/// `program` run inside `netns` as nobody, with every capability dropped (what an unprivileged
/// `kubectl debug` pod gets): `ip netns exec NETNS setpriv ... -- PROGRAM`.
pub fn unprivileged(netns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(program);
    cmd
}

/// A scratch folder under the system temp dir, removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    /// `netcheck-<name>-<pid>`, created empty.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("netcheck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }

    /// Writes `text` to `name` inside (folders must exist) and returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path.join(name);
        std::fs::write(&p, text).expect("temp file");
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).map(|_| ())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup` installs it)"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How much slower than the project's own machine this one runs: `cargo xtask kernels` sets
/// `NETLAB_TIME_SCALE` for guests emulated with TCG. Latency bounds in tests multiply by it.
pub fn time_scale() -> u32 {
    std::env::var("NETLAB_TIME_SCALE").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
}

/// The lab needs root: a test that cannot run fails, it never passes quietly (`cargo xtask
/// test` runs as root). Returns true so callers keep their `if !require_root(..)` guard.
pub fn require_root(test: &str) -> bool {
    assert!(nix::unistd::geteuid().is_root(), "{test} needs root (network namespaces, iptables, eBPF): run it as root");
    true
}
