//! `netcheck node` on the lab: node n1's namespace with a node root written the way kubeadm
//! and flannel leave it, the lab's DNS and an API stand-in on n1.

use netlab::{Lab, TempDir, needs_root, netcheck};
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
    needs_root("healthy_node_passes_every_check_it_finds");
    let (lab, root) = lab();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let r = run_node(&lab, &root, &kubeconfig);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let probes: Vec<&str> = checks(&r).iter().filter_map(|c| c["probe"].as_str()).collect();
    for probe in ["dns", "apiserver", "kubelet", "kubelet-healthz", "vxlan", "mtu", "cert", "cni"] {
        assert!(probes.contains(&probe), "{probe} missing: {probes:?}");
    }
    let failed: Vec<&Value> = checks(&r).iter().filter(|c| c["status"] == "fail" || c["status"] == "warn").collect();
    assert!(failed.is_empty(), "{failed:?}");
    // The only skip: upstreams are not asked for a cluster name.
    let skipped: Vec<&Value> = checks(&r).iter().filter(|c| c["status"] == "skip").collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["target"], format!("upstream {}:53", netlab::UPSTREAM_DNS_IP), "{skipped:?}");
    let peer = lab.node(2).underlay_ip.to_string();
    assert!(checks(&r).iter().any(|c| c["probe"] == "vxlan" && c["target"] == format!("{peer}:8472")));
    assert!(checks(&r).iter().any(|c| c["probe"] == "kubelet" && c["target"] == format!("{peer}:10250")));
    assert!(checks(&r).iter().any(|c| c["probe"] == "dns" && c["target"] == "endpoint 10.244.2.10:53"));
}

/// Issue 4 acceptance 7 (the privileges part): without capabilities `node` still runs what it
/// can and says what it skipped and why.
#[test]
fn unprivileged_node_runs_what_it_can() {
    needs_root("unprivileged_node_runs_what_it_can");
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
        // One of each, to the one peer (n2).
        let skipped: Vec<&Value> = checks(&r).iter().filter(|c| c["probe"] == probe).collect();
        assert_eq!(skipped.len(), 1, "{probe}: {r:?}");
        assert!(
            skipped.iter().all(|c| c["status"] == "skip" && c["detail"].as_str().unwrap().contains("CAP_NET_RAW")),
            "{r:?}"
        );
    }
}

/// Issue 4 acceptance 6: a node root from the lab with three faults: the kubelet's client
/// certificate expires in 10 days (found as a PEM file and through kubeadm's kubelet.conf,
/// which names it by an absolute path on the node), the kubelet serves a certificate without
/// its IP address, and one CoreDNS endpoint is blocked. Each problem is reported once, with its
/// code; nothing else fails.
#[test]
fn faulty_node_reports_each_problem_once() {
    needs_root("faulty_node_reports_each_problem_once");
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    let b = lab.pod("b").clone();
    lab.serve_tcp(&b.netns, std::net::SocketAddr::new(b.ip.into(), 8080)).unwrap();
    lab.serve_kubelet(1, false).unwrap();
    lab.serve_kubelet(2, true).unwrap();
    let dns = lab.start_dns().unwrap();
    let token_kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let root = TempDir::new(&format!("node-root-{}", lab.prefix));
    lab.write_host_root(1, &root, &token_kubeconfig).unwrap();
    let serving = lab.pki.serving("n1", &["n1"], &[]).unwrap();
    root.write("var/lib/kubelet/pki/kubelet.crt", &serving.cert_pem);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let client = lab.pki.client("system:node:n1", (now - 355 * 86_400, now + 10 * 86_400)).unwrap();
    root.write("var/lib/kubelet/pki/kubelet-client-current.pem", &format!("{}{}", client.cert_pem, client.key_pem));
    let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
    let kubelet_conf = token_kubeconfig
        .replace("token: lab-token", &format!("client-certificate: {pem}\n    client-key: {pem}"))
        .replace("name: netcheck", "name: system:node:n1")
        .replace("user: netcheck", "user: system:node:n1");
    let kubeconfig = root.write("etc/kubernetes/kubelet.conf", &kubelet_conf);
    lab.block_dns_endpoint(2).unwrap();

    let r = run_node(&lab, &root, &kubeconfig);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let problems = r.json["problems"].as_array().unwrap_or_else(|| panic!("no problems list: {}", r.stdout));
    let codes: Vec<&str> = problems.iter().map(|p| p["cause"].as_str().unwrap()).collect();
    eprintln!("{}", serde_json::to_string_pretty(problems).unwrap());
    assert_eq!(problems.len(), 3, "{codes:?}");
    for code in ["cert_expiring", "cert_name_mismatch"] {
        assert_eq!(codes.iter().filter(|c| **c == code).count(), 1, "{code}: {codes:?}");
    }
    let dns_problem = problems.iter().find(|p| p["subject"].as_str().unwrap().contains("10.244.2.10")).unwrap();
    assert!(["dns_timeout", "netfilter_drop"].contains(&dns_problem["cause"].as_str().unwrap()), "{dns_problem}");
    // Every check that did not pass belongs to exactly one problem; nothing else fails.
    let covered = |i: usize| problems.iter().filter(|p| p["checks"].as_array().unwrap().contains(&i.into())).count();
    for (i, c) in checks(&r).iter().enumerate() {
        match c["status"].as_str().unwrap() {
            "fail" | "warn" => assert_eq!(covered(i), 1, "check {i} {c}"),
            _ => assert_eq!(covered(i), 0, "check {i} {c}"),
        }
    }
}

/// Issue 4 acceptance 7 (the API and BTF parts): no kubeconfig or service account for the API,
/// and a kernel BTF that cannot be read (hidden by an empty file in a private mount
/// namespace). `node` still runs every probe, capture says BTF is missing, the CoreDNS
/// endpoints are a skip naming the API, and nothing fails.
#[test]
fn node_without_api_or_btf_runs_what_it_can() {
    needs_root("node_without_api_or_btf_runs_what_it_can");
    let (lab, root) = lab();
    let host_root = root.path.display().to_string();
    let bin = netcheck::binary().unwrap();
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind /dev/null /sys/kernel/btf/vmlinux && exec \"$@\"", "sh"])
        .arg(&bin)
        .args(["-o", "json", "--netns", &lab.node(1).netns, "--timeout", "3s", "--host-root", &host_root, "node"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let r = netcheck::Run::from_output(&out);
    eprintln!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json["capture"]["available"], false);
    assert_eq!(r.json["capture"]["missing"], serde_json::json!(["BTF"]));
    let endpoints = checks(&r).iter().find(|c| c["target"] == "endpoints of kube-system/kube-dns").unwrap();
    assert_eq!(endpoints["status"], "skip");
    let why = endpoints["detail"].as_str().unwrap();
    assert!(why.contains("not discovered from the API") && why.contains("no kubeconfig"), "{why}");
    for (probe, n) in [("apiserver", 1), ("kubelet", 2), ("kubelet-healthz", 1), ("vxlan", 1), ("mtu", 1)] {
        let found: Vec<&Value> = checks(&r).iter().filter(|c| c["probe"] == probe).collect();
        assert!(found.len() == n && found.iter().all(|c| c["status"] == "pass"), "{probe}: {found:?}");
    }
    assert!(checks(&r).iter().all(|c| c["status"] != "fail" && c["status"] != "warn"), "{r:?}");
    assert!(r.json.get("problems").is_none(), "{r:?}");
}

/// The CNI part of `node`: the bridge still holds an earlier pod subnet's gateway (flannel gave
/// the node a new subnet): the bridge plugin's own error, before any pod is scheduled there.
#[test]
fn cni_bridge_holding_another_subnet_fails() {
    needs_root("cni_bridge_holding_another_subnet_fails");
    let (lab, root) = lab();
    root.write(
        "run/flannel/subnet.env",
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\n",
    );
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let r = run_node(&lab, &root, &kubeconfig);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let cni = checks(&r).iter().find(|c| c["probe"] == "cni").unwrap();
    assert_eq!(cni["cause"], "cni_misconfigured", "{cni}");
    let detail = cni["detail"].as_str().unwrap();
    assert!(
        detail
            .starts_with("failed to set bridge addr: \"cni0\" already has an IP address different from 10.244.9.1/24"),
        "{detail}"
    );
    assert!(detail.contains("10.244.1.1/24"), "{detail}");
    let problems = r.json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
}

/// Peers come from the VXLAN FDB and from the API's nodes: when n1's FDB lost n2 (flannel
/// missed it), only the API still names n2, and its VXLAN check says what is missing.
#[test]
fn a_peer_the_fdb_lost_is_found_through_the_api() {
    needs_root("a_peer_the_fdb_lost_is_found_through_the_api");
    let (lab, root) = lab();
    lab.delete_fdb(1, 2).unwrap();
    let peer = lab.node(2).underlay_ip;
    let vxlan_to_peer = |r: &netcheck::Run| {
        checks(r).iter().find(|c| c["probe"] == "vxlan" && c["target"] == format!("{peer}:8472")).cloned()
    };
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let r = run_node(&lab, &root, &kubeconfig);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let vxlan = vxlan_to_peer(&r).unwrap_or_else(|| panic!("no VXLAN check for {peer}: {}", r.stdout));
    assert_eq!(vxlan["cause"], "vxlan_misconfigured", "{vxlan}");
    assert!(vxlan["detail"].as_str().unwrap().contains(&format!("no FDB entry for {peer}")), "{vxlan}");
    // Without the API, the FDB alone does not know n2 exists.
    let host_root = root.path.display().to_string();
    let args = ["--timeout", "3s", "--host-root", &host_root, "--kubeconfig", "/nonexistent", "node"];
    let r = netcheck::run_json_in(&lab.node(1).netns, &args).unwrap();
    assert!(vxlan_to_peer(&r).is_none(), "{}", r.stdout);
}

/// Issue 5 (NPD plugin mode, first part): `netcheck npd node` speaks node-problem-detector's
/// custom plugin protocol: one line on stdout of at most max_output_length bytes, exit 0 OK,
/// 1 problem, 2 unknown.
#[test]
fn npd_mode_follows_the_custom_plugin_protocol() {
    needs_root("npd_mode_follows_the_custom_plugin_protocol");
    let (lab, root) = lab();
    let host_root = root.path.display().to_string();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let npd = |netns: &str| {
        let args = ["--timeout", "2s", "--host-root", &host_root, "--kubeconfig", &kubeconfig, "npd", "node"];
        let out = std::process::Command::new(netcheck::binary().unwrap())
            .args(["--netns", netns])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
        assert!(stdout.trim_end().len() <= 80, "{stdout:?}");
        (out.status.code(), stdout)
    };
    let n1 = lab.node(1).netns.clone();
    let (code, line) = npd(&n1);
    assert_eq!(code, Some(0));
    // The same run as JSON says how many checks passed.
    let r = run_node(&lab, &root, &kubeconfig);
    let passed = r.json["summary"]["pass"].as_u64().unwrap();
    assert_eq!(passed, checks(&r).len() as u64 - 1, "all but the upstream's skip: {}", r.stdout);
    assert_eq!(line.trim_end(), format!("ok: {passed} checks passed"));
    lab.drop_vxlan(2).unwrap();
    let (code, line) = npd(&n1);
    assert_eq!(code, Some(1));
    // The first problem (n2's CoreDNS pod, behind the dropped VXLAN) and how many more (two:
    // more than one is counted). Its detail is cut to fit 80 bytes.
    let line = line.trim_end();
    let cause = ["netfilter_drop", "dns_timeout"].into_iter().find(|c| line.starts_with(&format!("{c}: ")));
    let cause = cause.unwrap_or_else(|| panic!("{line}"));
    assert!(line.starts_with(&format!("{cause}: CoreDNS endpoint 10.244.2.10:53 (+2 more): ")), "{line}");
    assert!(line.len() == 80 && line.ends_with("..."), "cut to 80 bytes: {line}");
    let (code, line) = npd("netcheck-no-such-netns");
    assert_eq!(code, Some(2));
    assert_eq!(
        line.trim_end(),
        "unknown: network namespace \"netcheck-no-such-netns\": cannot open /var/run/net...",
        "the error, cut to 80 bytes"
    );
}
