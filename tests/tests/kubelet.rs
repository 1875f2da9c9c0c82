//! `netcheck check kubelet` on the lab: the HTTPS kubelet on each node's 10250 (serving
//! certificate from the lab CA) and its plain-HTTP healthz on the node's 127.0.0.1:10248.

use netlab::{Lab, TempDir, needs_root, netcheck};

fn lab(ip_san: bool) -> Lab {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.serve_kubelet(1, ip_san).unwrap();
    lab
}

/// The lab CA in a file, for `--ca`.
fn ca_file(lab: &Lab) -> (TempDir, String) {
    let dir = TempDir::new(&format!("kubelet-ca-{}", lab.prefix));
    let path = dir.write("ca.crt", &lab.pki.ca_pem());
    (dir, path)
}

/// Acceptance 5, healthy: from the peer node (endpoint only) and on the node itself (endpoint
/// and its local /healthz).
#[test]
fn healthy_kubelet_from_peer_and_from_its_node() {
    needs_root("healthy_kubelet_from_peer_and_from_its_node");
    let lab = lab(true);
    let (_dir, ca) = ca_file(&lab);
    let ip = lab.node(1).underlay_ip.to_string();
    let r = netcheck::run_json_in(&lab.node(2).netns, &["check", "kubelet", &ip, "--ca", &ca]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "no healthz from another node: {r:?}");
    assert_eq!(checks[0]["probe"], "kubelet");
    assert_eq!(checks[0]["status"], "pass");

    let r = netcheck::run_json_in(&lab.node(1).netns, &["check", "kubelet", &ip, "--ca", &ca]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{r:?}");
    assert_eq!(checks[1]["probe"], "kubelet-healthz");
    assert_eq!(checks[1]["target"], "127.0.0.1:10248/healthz");
    assert_eq!(checks[1]["status"], "pass");
}

/// Acceptance 5, docs/field-cases.md case 2: the serving certificate has no IP SAN.
#[test]
fn kubelet_certificate_without_ip_san() {
    needs_root("kubelet_certificate_without_ip_san");
    let lab = lab(false);
    let ip = lab.node(1).underlay_ip.to_string();
    let r = netcheck::run_json_in(&lab.node(2).netns, &["check", "kubelet", &ip]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "cert_name_mismatch", "{r:?}");
    assert!(r.check()["detail"].as_str().unwrap().contains("doesn't contain any IP SANs"), "{r:?}");
}

/// Acceptance 5, docs/field-cases.md case 1: the node rejects pod sources; its own pods fail with the
/// REJECT named, the other node's pods pass.
#[test]
fn pods_on_the_node_rejected() {
    needs_root("pods_on_the_node_rejected");
    let lab = lab(true);
    lab.reject_pods_to_kubelet(1).unwrap();
    let ip = lab.node(1).underlay_ip.to_string();
    let r = netcheck::run_json_in(&lab.pod("a").netns, &["--timeout", "2s", "check", "kubelet", &ip]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "unreachable", "{r:?}");
    let detail = r.check()["detail"].as_str().unwrap();
    assert!(detail.contains("admits node IPs but not pod IPs"), "{detail}");
    assert!(r.evidence("drop").iter().any(|d| d["reason"] == "NETFILTER_DROP"), "{r:?}");

    let r = netcheck::run_json_in(&lab.pod("b").netns, &["--timeout", "2s", "check", "kubelet", &ip]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
}

/// Acceptance 5, docs/field-cases.md case 8: the kubelet is down; on its node both ports say so.
#[test]
fn kubelet_down() {
    needs_root("kubelet_down");
    let mut lab = lab(true);
    lab.stop_servers_on(netlab::KUBELET_PORT);
    let ip = lab.node(1).underlay_ip.to_string();
    let r = netcheck::run_json_in(&lab.node(1).netns, &["check", "kubelet", &ip]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks[0]["cause"], "refused", "{r:?}");
    assert_eq!(checks[1]["cause"], "refused", "{r:?}");
    assert!(checks[1]["detail"].as_str().unwrap().contains("healthz port"), "{r:?}");
}

/// docs/field-cases.md case 3: from a pod, the node's name goes through cluster DNS (resolv.conf search
/// list, the kube-dns Service), where node names do not exist.
#[test]
fn node_name_does_not_resolve_through_cluster_dns() {
    needs_root("node_name_does_not_resolve_through_cluster_dns");
    let mut lab = lab(true);
    lab.start_dns().unwrap();
    let dir = TempDir::new(&format!("kubelet-dns-{}", lab.prefix));
    let conf = dir.write("resolv.conf", &Lab::pod_resolv_conf());
    let name = lab.node(1).name();
    let r = netcheck::run_json_in(&lab.pod("a").netns, &["check", "kubelet", &name, "--resolv-conf", &conf]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{r:?}");
    assert_eq!((checks[0]["probe"].as_str(), checks[0]["cause"].as_str()), (Some("dns"), Some("nxdomain")), "{r:?}");
    let kubelet = &checks[1];
    assert_eq!(kubelet["probe"], "kubelet");
    assert_eq!(kubelet["cause"], "nxdomain");
    let detail = kubelet["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("dial tcp: lookup {name} on {}:53: no such host", netlab::DNS_SERVICE_IP)),
        "{detail}"
    );
    assert!(detail.contains(&format!("{name}.default.svc.cluster.local. (NXDOMAIN)")), "{detail}");
}
