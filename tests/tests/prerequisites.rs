//! `netcheck node`'s netfilter prerequisites on the lab (issue 16, acceptance 6): on the
//! healthy lab every row passes; each fault, injected in n1's namespace, fails its own row and
//! no other; cleared, all pass again. Real sysctls, a real reverse-path filter (the kernel's
//! input route lookup), real iptables in both backends.

use netlab::{Lab, TempDir, needs_root, netcheck};
use serde_json::Value;

fn lab() -> (Lab, TempDir, String) {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let root = TempDir::new(&format!("prereq-root-{}", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig).unwrap();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    (lab, root, kubeconfig)
}

/// The prerequisite rows of `node` on n1: (target, status, cause), and the whole rows.
fn rows(lab: &Lab, root: &TempDir, kubeconfig: &str) -> (Vec<(String, String, String)>, Vec<Value>) {
    let host_root = root.path.display().to_string();
    let args = ["--timeout", "3s", "--host-root", &host_root, "--kubeconfig", kubeconfig, "node"];
    let r = netcheck::run_json_in(&lab.node(1).netns, &args).unwrap();
    let checks: Vec<Value> = r.json["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {}", r.stdout))
        .iter()
        .filter(|c| ["sysctl", "conntrack", "iptables"].contains(&c["probe"].as_str().unwrap_or_default()))
        .cloned()
        .collect();
    let short = checks
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("target"), s("status"), s("cause"))
        })
        .collect();
    (short, checks)
}

const TARGETS: [&str; 9] = [
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables (cni0)",
    "rp_filter cni0",
    "rp_filter flannel.1",
    "rp_filter eth0",
    "nf_conntrack",
    "filter FORWARD (iptables-nft)",
    "filter FORWARD (iptables-legacy)",
    "backends",
];

/// The rows that did not pass.
fn not_passing(rows: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    rows.iter().filter(|(_, s, _)| s != "pass").map(|(t, s, c)| (t.as_str(), s.as_str(), c.as_str())).collect()
}

fn detail<'a>(checks: &'a [Value], target: &str) -> &'a str {
    checks.iter().find(|c| c["target"] == target).and_then(|c| c["detail"].as_str()).unwrap_or_default()
}

#[test]
fn each_netfilter_prerequisite_fails_alone() {
    needs_root("each_netfilter_prerequisite_fails_alone");
    let (lab, root, kc) = lab();
    let (healthy, checks) = rows(&lab, &root, &kc);
    let targets: Vec<&str> = healthy.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(targets, TARGETS, "{checks:#?}");
    assert!(not_passing(&healthy).is_empty(), "{checks:#?}");
    let peer = lab.node(2).underlay_ip;
    assert_eq!(
        detail(&checks, "rp_filter eth0"),
        format!("0 (off): the kernel accepts packets from {peer} (peer n2) on eth0")
    );
    assert_eq!(
        detail(&checks, "rp_filter flannel.1"),
        "0 (off): the kernel accepts packets from 10.244.2.0 (peer n2's VTEP) on flannel.1"
    );
    // flannel's masquerade and the kube-proxy stand-in's Service rules (nat, and filter's jumps).
    let backends = detail(&checks, "backends");
    assert!(
        backends.starts_with("iptables-nft only: ") && backends.ends_with(" rules (tables filter, nat)"),
        "{backends}"
    );

    lab.set_forwarding(1, false).unwrap();
    let (r, checks) = rows(&lab, &root, &kc);
    assert_eq!(not_passing(&r), [("net.ipv4.ip_forward", "fail", "ip_forward_off")], "{checks:#?}");
    assert!(detail(&checks, "net.ipv4.ip_forward").contains("contents are not set to 1"));
    lab.set_forwarding(1, true).unwrap();

    lab.set_bridge_netfilter(1, false).unwrap();
    let (r, checks) = rows(&lab, &root, &kc);
    let row = "net.bridge.bridge-nf-call-iptables (cni0)";
    assert_eq!(not_passing(&r), [(row, "fail", "bridge_netfilter_off")], "{checks:#?}");
    lab.set_bridge_netfilter(1, true).unwrap();

    lab.asymmetric_underlay(1, 2).unwrap();
    let (r, checks) = rows(&lab, &root, &kc);
    assert_eq!(not_passing(&r), [("rp_filter eth0", "fail", "rp_filter_drop")], "{checks:#?}");
    assert!(
        detail(&checks, "rp_filter eth0").contains(&format!(
            "1 (strict): the reverse-path filter drops packets from {peer} (peer n2) arriving on eth0: the kernel's \
             route back to {peer} leaves by eth1, not eth0"
        )),
        "{checks:#?}"
    );
    lab.symmetric_underlay(1).unwrap();

    lab.forward_policy(1, "DROP").unwrap();
    let (r, checks) = rows(&lab, &root, &kc);
    assert_eq!(not_passing(&r), [("filter FORWARD (iptables-nft)", "fail", "forward_drop")], "{checks:#?}");
    assert!(detail(&checks, "filter FORWARD (iptables-nft)").contains("(10.244.1.0/24) either way"));
    // The CNI's accept rules make the same policy harmless.
    lab.accept_pod_forwarding(1).unwrap();
    let (r, checks) = rows(&lab, &root, &kc);
    assert!(not_passing(&r).is_empty(), "{checks:#?}");
    assert!(
        detail(&checks, "filter FORWARD (iptables-nft)").starts_with("policy DROP; 10.244.1.0/24 accepted both ways")
    );
    lab.remove_pod_forwarding(1).unwrap();
    lab.forward_policy(1, "ACCEPT").unwrap();

    lab.legacy_rule(1, true).unwrap();
    let (r, checks) = rows(&lab, &root, &kc);
    assert_eq!(not_passing(&r), [("backends", "warn", "iptables_mixed")], "{checks:#?}");
    assert!(detail(&checks, "backends").contains("iptables-legacy 1 rule (tables nat)"), "{checks:#?}");
    lab.legacy_rule(1, false).unwrap();

    let (r, checks) = rows(&lab, &root, &kc);
    assert!(not_passing(&r).is_empty(), "cleared, all pass again: {checks:#?}");
}
