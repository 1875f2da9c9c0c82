//! `check service` and `path` with kube-proxy in IPVS mode (issue 16): the stand-in binds the
//! Service IPs to `kube-ipvs0`, writes virtual servers with `ipvsadm -R` and this mode's ipset
//! matches and masquerade, and netcheck reads the table back over generic netlink (from
//! `/proc/net/ip_vs` without CAP_NET_ADMIN), compares it with the EndpointSlices and follows
//! each probe through IPVS's NAT by its conntrack entry.
//!
//! The host's kernel has no IP_VS: these run in the kernel-matrix guests (`cargo xtask
//! kernels`), built only with the `guest` feature, and fail where the kernel lacks it.

mod service_lab;

use std::{net::SocketAddr, process::Command};

use netlab::{IpvsProgramming, LabEndpoint, LabPort, LabService, Programming, needs_root, netcheck};
use service_lab::{Env, WEB_IP, checks, detail, env_in, probes, row, status};

fn env() -> Env {
    env_in("ipvs")
}

/// `ipvsadm -Ln` of node `node`: what an operator compares netcheck's row with.
fn ipvsadm(e: &Env, node: u8) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &e.lab.node(node).netns, "ipvsadm", "-Ln"])
        .output()
        .expect("ipvsadm (apt: ipvsadm)");
    assert!(out.status.success(), "ipvsadm -Ln: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn healthy_ipvs_service_names_each_probes_real_server() {
    needs_root("healthy_ipvs_service_names_each_probes_real_server");
    let e = env();
    let (w1, b) = (format!("{}:8080", e.w1), format!("{}:8080", e.b));
    let listed = ipvsadm(&e, 1);
    assert!(listed.contains(&format!("TCP  {WEB_IP}:80 rr")) && listed.contains(&format!("-> {w1}")), "{listed}");

    let r = e.check(1, &["default/web", "--probes", "12"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    assert_eq!(detail(row(&rows, "kube-proxy", "127.0.0.1:10256")), "healthz 200 on 127.0.0.1:10256, mode ipvs");
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules), ("pass", ""), "{rules:#}");
    assert_eq!(
        detail(rules),
        format!("IPVS (generic netlink): virtual server TCP 10.96.0.80:80 (rr) → DNAT to {w1}, {b}"),
        "{rules:#}"
    );
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    let seen = probes(vip);
    assert_eq!(seen.len(), 12, "{vip:#}");
    for (endpoint, node, pod, answered) in &seen {
        assert!(answered, "{vip:#}");
        let want = if *endpoint == w1 { ("n1", "default/w1") } else { ("n2", "default/b") };
        assert!(*endpoint == w1 || *endpoint == b, "probe NATed to {endpoint:?}: {vip:#}");
        assert_eq!((node.as_str(), pod.as_str()), want, "{vip:#}");
    }
    // rr alternates between the two real servers: both are seen.
    let on_w1 = seen.iter().filter(|p| p.0 == w1).count();
    assert!(on_w1 > 0 && on_w1 < 12, "{vip:#}");

    // UDP: kube-dns's virtual server, each query's CoreDNS read from its conntrack entry.
    let r = e.check(1, &["--udp", "10.96.0.10:53", "--probes", "6"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", "rules 10.96.0.10:53 udp");
    assert!(detail(rules).starts_with("IPVS (generic netlink): virtual server UDP 10.96.0.10:53 (rr)"), "{rules:#}");
    let vip = row(&rows, "service", "10.96.0.10:53 udp");
    let dns: Vec<String> = e.dns.iter().map(|ip| format!("{ip}:53")).collect();
    let seen = probes(vip);
    assert_eq!(seen.len(), 6, "{vip:#}");
    assert!(seen.iter().all(|p| p.3 && dns.contains(&p.0)), "{vip:#}");
}

#[test]
fn each_ipvs_fault_has_its_own_cause() {
    needs_root("each_ipvs_fault_has_its_own_cause");
    let e = env();
    let run = |how: IpvsProgramming| {
        e.lab.program_kube_proxy_ipvs(1, &how).unwrap();
        let r = e.check(1, &["default/web"]);
        let rows = checks(&r);
        (
            r.code,
            row(&rows, "iptables", "rules 10.96.0.80:80 tcp").clone(),
            row(&rows, "service", "10.96.0.80:80 tcp").clone(),
        )
    };

    // No virtual server for the Service: not programmed, and the Service IP is not answered.
    let without = Programming { without: Some("default/web".into()), ..Default::default() };
    let (code, rules, vip) = run(IpvsProgramming { rules: without, ..Default::default() });
    assert_eq!(code, 1);
    assert_eq!(status(&rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(
        detail(&rules).contains("IPVS (generic netlink): no virtual server matches 10.96.0.80:80 tcp"),
        "{rules:#}"
    );
    assert_eq!(status(&vip).0, "fail", "{vip:#}");

    // A real server left for a deleted endpoint (and the ready ones missing).
    let gone = std::net::Ipv4Addr::new(10, 244, 2, 99);
    let stale = Programming { endpoints: Some(("default/web".into(), vec![gone])), ..Default::default() };
    let (code, rules, _) = run(IpvsProgramming { rules: stale, ..Default::default() });
    assert_eq!(code, 1);
    assert_eq!(status(&rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(
        detail(&rules).contains(&format!(
            "IPVS (generic netlink): DNAT to {gone}:8080 which no EndpointSlice lists as ready; no rule for ready \
             endpoint {}:8080, {}:8080",
            e.w1, e.b
        )),
        "{rules:#}"
    );

    // The virtual server is there but its address is not on kube-ipvs0: IPVS never sees it.
    let (code, rules, _) = run(IpvsProgramming { unbound: vec![WEB_IP], ..Default::default() });
    assert_eq!(code, 1);
    assert_eq!(status(&rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(detail(&rules).contains("this node holds no address 10.96.0.80 (kube-proxy binds"), "{rules:#}");

    // Programmed again: healthy.
    let (code, rules, vip) = run(IpvsProgramming::default());
    assert_eq!((code, status(&rules).0, status(&vip).0), (0, "pass", "pass"), "{rules:#} {vip:#}");
}

/// Without CAP_NET_ADMIN the table comes from `/proc/net/ip_vs`, with the same verdict.
#[test]
fn without_net_admin_ipvs_is_read_from_procfs() {
    needs_root("without_net_admin_ipvs_is_read_from_procfs");
    let e = env();
    let copy = netcheck::UnprivilegedCopy::new();
    let root = e.root.path.display().to_string();
    let r = copy.run_json_in(&e.lab.node(1).netns, &e.args(&root, &["default/web"]));
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules), ("pass", ""), "{rules:#}");
    assert_eq!(
        detail(rules),
        format!("IPVS (/proc/net/ip_vs): virtual server TCP 10.96.0.80:80 (rr) → DNAT to {}:8080, {}:8080", e.w1, e.b),
        "{rules:#}"
    );
    // A stale real server is found without the capability too.
    let stale = Programming { endpoints: Some(("default/web".into(), vec![e.w1])), ..Default::default() };
    e.lab.program_kube_proxy_ipvs(1, &IpvsProgramming { rules: stale, ..Default::default() }).unwrap();
    let r = copy.run_json_in(&e.lab.node(1).netns, &e.args(&root, &["default/web"]));
    let rows = checks(&r);
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(detail(rules).contains(&format!("no rule for ready endpoint {}:8080", e.b)), "{rules:#}");
}

#[test]
fn ipvs_path_and_node_ports_are_followed() {
    needs_root("ipvs_path_and_node_ports_are_followed");
    let e = env();
    // Only b on n2 as real server: the path crosses the overlay to it.
    let only_b = Programming { endpoints: Some(("default/web".into(), vec![e.b])), ..Default::default() };
    e.lab.program_kube_proxy_ipvs(1, &IpvsProgramming { rules: only_b, ..Default::default() }).unwrap();
    let root = e.root.path.display().to_string();
    let timeout = format!("{}s", 3 * netlab::time_scale());
    let a = e.lab.pod("a").netns.clone();
    let args = [
        "--timeout",
        &timeout,
        "--host-root",
        &root,
        "--kubeconfig",
        &e.kubeconfig,
        "path",
        "--from",
        &a,
        "10.96.0.80:80",
    ];
    let r = netcheck::run_json_in(&e.lab.node(1).netns, &args).unwrap();
    let hops = r.check()["hops"].as_array().cloned().unwrap_or_default();
    let dnat = hops.iter().find(|h| h["name"] == "dnat").unwrap_or_else(|| panic!("no dnat hop: {r:?}"));
    let d = dnat["detail"].as_str().unwrap_or_default();
    assert!(d.starts_with(&format!("10.96.0.80:80 -> {}:8080 (pod default/b on n2)", e.b)), "{d}");
    assert_eq!(hops.last().unwrap()["name"], "destination", "{r:?}");

    // A NodePort Service (Cluster policy): a virtual server on each node's address.
    let w1 = SocketAddr::new(e.w1.into(), 8080);
    e.lab.add_service(LabService {
        namespace: "default".into(),
        name: "shop".into(),
        cluster_ip: std::net::Ipv4Addr::new(10, 96, 0, 90),
        ports: vec![LabPort { name: "http".into(), port: 80, udp: false, target_port: 8080, node_port: Some(30080) }],
        endpoints: vec![LabEndpoint { ip: e.w1, node: 1, pod: "w1".into(), ready: true }],
        external_local: false,
    });
    for node in [1, 2] {
        e.lab.program_kube_proxy_ipvs(node, &IpvsProgramming::default()).unwrap();
    }
    let r = e.check(1, &["default/shop"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", "rules nodeport 30080 tcp");
    assert_eq!(
        detail(rules),
        format!("IPVS (generic netlink): virtual server TCP {}:30080 (rr) → DNAT to {w1}", e.lab.node(1).underlay_ip),
        "{rules:#}"
    );
    for node in [1, 2] {
        let target = format!("n{node} {}:30080 tcp", e.lab.node(node).underlay_ip);
        assert_eq!(status(row(&rows, "nodeport", &target)), ("pass", ""), "{rows:#?}");
    }
}

/// `node` in IPVS mode: the `net.ipv4.vs.conntrack` row passes as kube-proxy sets it, is the
/// only row that fails when it is 0, and passes again when set back.
#[test]
fn node_judges_ipvs_conntrack_in_ipvs_mode() {
    needs_root("node_judges_ipvs_conntrack_in_ipvs_mode");
    let e = env();
    let root = e.root.path.display().to_string();
    let ns = e.lab.node(1).netns.clone();
    let rows = || {
        let args = ["--timeout", &e.timeout, "--host-root", &root, "--kubeconfig", &e.kubeconfig, "node"];
        let r = netcheck::run_json_in(&ns, &args).unwrap();
        let all = r.json["checks"].as_array().cloned().unwrap_or_else(|| panic!("no checks: {}", r.stdout));
        all.into_iter().filter(|c| c["probe"] == "sysctl").collect::<Vec<_>>()
    };
    let sysctl = |value: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "sysctl", "-qw", &format!("net.ipv4.vs.conntrack={value}")])
            .status()
            .unwrap();
        assert!(out.success());
    };
    let failing = |rows: &[serde_json::Value]| -> Vec<(String, String)> {
        rows.iter()
            .filter(|c| c["status"] != "pass")
            .map(|c| (c["target"].as_str().unwrap_or_default().to_string(), status(c).1.to_string()))
            .collect()
    };
    let got = rows();
    let vs = row(&got, "sysctl", "net.ipv4.vs.conntrack");
    assert_eq!(status(vs), ("pass", ""), "{vs:#}");
    // What else the guest lacks (br_netfilter is not loaded there) fails before and after alike.
    let before = failing(&got);
    sysctl("0");
    let mut after = failing(&rows());
    after.retain(|f| !before.contains(f));
    assert_eq!(after, [("net.ipv4.vs.conntrack".to_string(), "ipvs_conntrack_off".to_string())]);
    sysctl("1");
    assert_eq!(status(row(&rows(), "sysctl", "net.ipv4.vs.conntrack")), ("pass", ""));
}
