//! What netcheck reads rather than probes: the node's files (its root as kubeadm and k3s lay it
//! out, PKI, CNI, flannel), the kernel's tables (rtnetlink), certificate files, resolv.conf,
//! the cluster API when one answers, and a peer node's agent. Nothing here sends probe traffic
//! or judges what it read.

pub mod api;
pub mod certs;
pub mod cni;
pub mod conntrack;
pub mod flannel;
pub mod iptables;
pub mod ipvs;
pub mod kube_proxy;
pub mod kube_proxy_ipvs;
pub mod kube_proxy_nft;
pub mod kubeconfig;
pub mod kubelet_config;
pub mod netlink;
pub mod nl_socket;
pub mod node_files;
pub mod node_root;
pub mod nodes;
pub mod peer_agent;
pub mod pki;
pub mod pods;
pub mod prerequisites;
pub mod resolv_conf;
pub mod runtime;
pub mod services;

use std::path::{Path, PathBuf};

/// The node's root filesystem: `--host-root`, else `/host` when it holds a node root (a
/// `kubectl debug node` pod mounts it there), else `/`.
pub fn host_root(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    let debug_mount = Path::new("/host");
    if debug_mount.join("etc/os-release").exists() || debug_mount.join("usr/lib/os-release").exists() {
        return debug_mount.to_path_buf();
    }
    PathBuf::from("/")
}

/// The node's upstream resolvers: the nameservers of the resolv.conf that pods with
/// `dnsPolicy: Default` (CoreDNS among them) get from the kubelet, under a node root mounted
/// somewhere (never `/` itself: there it would be this process's own resolv.conf, which in a pod
/// names the cluster DNS). The kubelet's `resolvConf` setting names that file when the kubelet
/// configuration is known; otherwise systemd-resolved's real list comes before
/// `/etc/resolv.conf` (whose 127.0.0.53 stub the kubelet skips). Loopback servers are left out
/// (the node's own stub, not reachable from CoreDNS).
pub fn node_upstreams(root: &Path, kubelet_resolv_conf: Option<&str>) -> Vec<std::net::IpAddr> {
    if root == Path::new("/") {
        return Vec::new();
    }
    let configured = kubelet_resolv_conf.map(|f| f.trim_start_matches('/')).filter(|f| !f.is_empty());
    let files: Vec<&str> = match configured {
        Some(f) => vec![f],
        None => vec!["run/systemd/resolve/resolv.conf", "etc/resolv.conf"],
    };
    let Ok(node) = node_root::NodeRoot::open(root) else { return Vec::new() };
    for file in files {
        if let Ok(text) = node.read(Path::new(file)) {
            let conf = resolv_conf::ResolvConf::parse(&text);
            let servers: Vec<_> = conf.nameservers.into_iter().filter(|ip| !ip.is_loopback()).collect();
            if !servers.is_empty() {
                return servers;
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_the_node_root_and_skip_the_stub() {
        let root = std::env::temp_dir().join(format!("netcheck-upstreams-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("run/systemd/resolve")).unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        assert!(node_upstreams(&root, None).is_empty(), "the stub alone is no upstream");
        std::fs::write(root.join("run/systemd/resolve/resolv.conf"), "nameserver 192.168.50.53\n").unwrap();
        assert_eq!(node_upstreams(&root, None), vec!["192.168.50.53".parse::<std::net::IpAddr>().unwrap()]);
        assert!(node_upstreams(Path::new("/"), None).is_empty());
        // The kubelet's resolvConf wins: that is the file CoreDNS's pods get.
        std::fs::write(root.join("etc/upstream.conf"), "nameserver 10.0.0.2\n").unwrap();
        let kubelet = Some("/etc/upstream.conf");
        assert_eq!(node_upstreams(&root, kubelet), vec!["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]);
        assert!(node_upstreams(&root, Some("/etc/missing.conf")).is_empty(), "no guessing past the kubelet");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
