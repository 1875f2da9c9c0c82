//! `netcheck node` on the lab: node n1's namespace with a node root written the way kubeadm
//! and flannel leave it, the lab's DNS and an API stand-in on n1.

use netlab::{Lab, TempDir, netcheck, require_root};
use serde_json::Value;

fn lab() -> (Lab, TempDir) {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let root = TempDir::new(&format!("node-root-{}", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig).unwrap();
    (lab, root)
}

fn run_node(lab: &Lab, root: &TempDir, kubeconfig: &str) -> netcheck::Run {
    let host_root = root.path.display().to_string();
    let args = ["--timeout", "3s", "--host-root", &host_root, "--kubeconfig", kubeconfig, "node"];
    let r = netcheck::run_json_in(&lab.node(1).netns, &args).unwrap();
    eprintln!("{}", r.stdout);
    r
}

fn checks(r: &netcheck::Run) -> &Vec<Value> {
    r.json["checks"].as_array().unwrap()
}

/// Issue 4 acceptance 5 (first part): on a healthy lab node everything found passes: cluster
/// DNS with both CoreDNS endpoints from the API, the API server, the local kubelet and its
/// healthz, VXLAN, MTU and kubelet of the peer, and the node's certificates.
#[test]
fn healthy_node_passes_every_check_it_finds() {
    if !require_root("healthy_node_passes_every_check_it_finds") {
        return;
    }
    let (lab, root) = lab();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let r = run_node(&lab, &root, &kubeconfig);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let probes: Vec<&str> = checks(&r).iter().filter_map(|c| c["probe"].as_str()).collect();
    for probe in ["dns", "apiserver", "kubelet", "kubelet-healthz", "vxlan", "mtu", "cert"] {
        assert!(probes.contains(&probe), "{probe} missing: {probes:?}");
    }
    let failed: Vec<&Value> = checks(&r).iter().filter(|c| c["status"] == "fail" || c["status"] == "warn").collect();
    assert!(failed.is_empty(), "{failed:?}");
    // The only skip: upstreams are not asked for a cluster name.
    let skipped: Vec<&Value> = checks(&r).iter().filter(|c| c["status"] == "skip").collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0]["target"].as_str().unwrap().starts_with("upstream "), "{skipped:?}");
    let peer = lab.node(2).underlay_ip.to_string();
    assert!(checks(&r).iter().any(|c| c["probe"] == "vxlan" && c["target"] == format!("{peer}:8472")));
    assert!(checks(&r).iter().any(|c| c["probe"] == "kubelet" && c["target"] == format!("{peer}:10250")));
    assert!(checks(&r).iter().any(|c| c["probe"] == "dns" && c["target"] == "endpoint 10.244.2.10:53"));
}

/// Issue 4 acceptance 7 (the privileges part): without capabilities `node` still runs what it
/// can and says what it skipped and why.
#[test]
fn unprivileged_node_runs_what_it_can() {
    if !require_root("unprivileged_node_runs_what_it_can") {
        return;
    }
    let (lab, root) = lab();
    let copy = netcheck::UnprivilegedCopy::new();
    let host_root = root.path.display().to_string();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let r = copy.run_json_in(&lab.node(1).netns, &["--host-root", &host_root, "--kubeconfig", &kubeconfig, "node"]);
    eprintln!("{}", r.stdout);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json["capture"]["available"], false);
    let status = |probe: &str| -> Vec<String> {
        checks(&r).iter().filter(|c| c["probe"] == probe).map(|c| c["status"].as_str().unwrap().to_string()).collect()
    };
    assert!(status("dns").iter().any(|s| s == "pass"), "{r:?}");
    assert_eq!(status("apiserver"), ["pass"]);
    for probe in ["mtu", "vxlan"] {
        let skipped: Vec<&Value> = checks(&r).iter().filter(|c| c["probe"] == probe).collect();
        assert!(!skipped.is_empty(), "{probe}: {r:?}");
        assert!(
            skipped.iter().all(|c| c["status"] == "skip" && c["detail"].as_str().unwrap().contains("CAP_NET_RAW")),
            "{r:?}"
        );
    }
}
