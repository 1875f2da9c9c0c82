//! The lab `check service` and its NodePort tests share: a web Service (pods w1 on n1 and b on
//! n2) and an empty one in the API stand-in, kube-proxy's rules on both nodes, and readers of
//! the JSON rows.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};

use netlab::{IpvsProgramming, Lab, LabEndpoint, LabPort, LabService, Programming, TempDir, netcheck};
use serde_json::Value;

pub const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 80);
pub const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 81);

pub struct Env {
    pub lab: Lab,
    pub root: TempDir,
    pub kubeconfig: String,
    /// The web Service's endpoints: pod w1 on n1, pod b on n2.
    pub w1: Ipv4Addr,
    pub b: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    /// `--timeout`: 6 s, scaled under emulation (the kernel-matrix guests).
    pub timeout: String,
}

pub fn web_port() -> LabPort {
    LabPort { name: "http".into(), port: 80, udp: false, target_port: 8080, node_port: None }
}

pub fn env() -> Env {
    env_in("iptables")
}

/// The lab with kube-proxy in `mode` (`iptables`; `nftables`: its own table, no KUBE-*
/// iptables rules; `ipvs`: virtual servers, in a kernel with IP_VS) on both nodes.
pub fn env_in(mode: &'static str) -> Env {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    let w1 = lab.add_pod(1, "w1", 20).unwrap();
    lab.serve_tcp(&w1.netns, SocketAddr::new(w1.ip.into(), 8080)).unwrap();
    let b = lab.pod("b").ip;
    lab.add_service(LabService {
        namespace: "default".into(),
        name: "web".into(),
        cluster_ip: WEB_IP,
        ports: vec![web_port()],
        endpoints: vec![
            LabEndpoint { ip: w1.ip, node: 1, pod: "w1".into(), ready: true },
            LabEndpoint { ip: b, node: 2, pod: "b".into(), ready: true },
        ],
        external_local: false,
    });
    lab.add_service(LabService {
        namespace: "default".into(),
        name: "empty".into(),
        cluster_ip: EMPTY_IP,
        ports: vec![web_port()],
        endpoints: Vec::new(),
        external_local: false,
    });
    for node in [1, 2] {
        match mode {
            "nftables" => lab.program_kube_proxy_nft(node, &Programming::default()).unwrap(),
            "ipvs" => lab.program_kube_proxy_ipvs(node, &IpvsProgramming::default()).unwrap(),
            _ => lab.program_kube_proxy(node, &Programming::default()).unwrap(),
        }
        lab.serve_kube_proxy_in_mode(node, node == 1, mode).unwrap();
    }
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let root = TempDir::new(&format!("service-root-{}", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig).unwrap();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let timeout = format!("{}s", 6 * netlab::time_scale());
    Env { lab, root, kubeconfig, w1: w1.ip, b, dns: dns.endpoints, timeout }
}

impl Env {
    pub fn args<'a>(&'a self, root: &'a str, service: &[&'a str]) -> Vec<&'a str> {
        let mut args =
            vec!["--timeout", &self.timeout, "--host-root", root, "--kubeconfig", &self.kubeconfig, "check", "service"];
        args.extend_from_slice(service);
        args
    }

    /// `check service ARGS` from node `node`'s namespace, as root.
    pub fn check(&self, node: u8, service: &[&str]) -> netcheck::Run {
        let root = self.root.path.display().to_string();
        netcheck::run_json_in(&self.lab.node(node).netns, &self.args(&root, service)).unwrap()
    }
}

pub fn checks(r: &netcheck::Run) -> Vec<Value> {
    r.json["checks"].as_array().unwrap_or_else(|| panic!("no checks: {r:?}")).clone()
}

/// The row of `probe` whose target is `target`.
pub fn row<'a>(rows: &'a [Value], probe: &str, target: &str) -> &'a Value {
    rows.iter()
        .find(|c| c["probe"] == probe && c["target"] == target)
        .unwrap_or_else(|| panic!("no {probe} row {target:?} in {rows:#?}"))
}

pub fn status(c: &Value) -> (&str, &str) {
    (c["status"].as_str().unwrap_or_default(), c["cause"].as_str().unwrap_or_default())
}

pub fn detail(c: &Value) -> &str {
    c["detail"].as_str().unwrap_or_default()
}

/// The Service IP row's probes: (endpoint, node, pod, answered).
pub fn probes(c: &Value) -> Vec<(String, String, String, bool)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    c["data"]["service"]["probes"]
        .as_array()
        .unwrap_or_else(|| panic!("no data.service.probes: {c:#}"))
        .iter()
        .map(|p| (s(&p["endpoint"]), s(&p["node"]), s(&p["pod"]), p["answered"] == true))
        .collect()
}
