//! `netcheck check dns` on the lab: two dnsmasq "CoreDNS" pods behind the kube-dns Service IP
//! (DNATed by each node as kube-proxy does) and an upstream resolver on the underlay; the
//! client is pod `a` with a pod's resolv.conf (search list, ndots:5).

use netlab::{CLUSTER_NAME, Dns, EXTERNAL_NAME, Lab, TempDir, needs_root, netcheck};
use serde_json::Value;

fn lab() -> (Lab, Dns, TempDir, String) {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    let dns = lab.start_dns().unwrap();
    let dir = TempDir::new(&format!("dns-{}", lab.prefix));
    let conf = dir.write("resolv.conf", &Lab::pod_resolv_conf());
    (lab, dns, dir, conf)
}

/// `check dns NAME` from pod a with the whole ladder: the Service (from resolv.conf), both
/// endpoints and the upstream.
fn check(lab: &Lab, dns: &Dns, conf: &str, name: &str) -> netcheck::Run {
    let mut args = vec!["--timeout", "3s", "check", "dns", name, "--resolv-conf", conf];
    let endpoints: Vec<String> = dns.endpoints.iter().map(ToString::to_string).collect();
    for e in &endpoints {
        args.extend(["--endpoint", e]);
    }
    let upstream = dns.upstream.to_string();
    args.extend(["--upstream", &upstream]);
    let r = netcheck::run_json_in(&lab.pod("a").netns, &args).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&r.json).unwrap_or_default());
    r
}

fn by_target<'a>(r: &'a netcheck::Run, target: &str) -> &'a Value {
    r.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == target)
        .unwrap_or_else(|| panic!("{target}: {r:?}"))
}

/// Acceptance 1: a short cluster name resolves through the search list, every rung answers
/// over UDP and TCP, and the upstream is not asked for a cluster name.
#[test]
fn healthy_cluster_and_external_names() {
    needs_root("healthy_cluster_and_external_names");
    let (lab, dns, _dir, conf) = lab();
    let r = check(&lab, &dns, &conf, "kubernetes.default");
    assert_eq!(r.code, 0, "{r:?}");
    let lookup = r.check();
    assert_eq!(lookup["target"], "kubernetes.default");
    assert_eq!(lookup["status"], "pass");
    let queries = lookup["data"]["dns"]["queries"].as_array().unwrap();
    // ndots:5: the first search domain is asked (NXDOMAIN) before the one that answers.
    assert_eq!(queries[0]["name"], "kubernetes.default.default.svc.cluster.local.");
    assert_eq!(queries[0]["result"], "nxdomain");
    let last = queries.last().unwrap();
    assert_eq!(last["name"], format!("{}.", CLUSTER_NAME.0));
    assert_eq!(last["answer"][0], CLUSTER_NAME.1.to_string());
    let service = by_target(&r, &format!("server {}:53", dns.service));
    assert_eq!(service["status"], "pass", "{r:?}");
    assert!(service["detail"].as_str().unwrap().contains("udp 4/4, tcp 2/2"), "{r:?}");
    for e in &dns.endpoints {
        assert_eq!(by_target(&r, &format!("endpoint {e}:53"))["status"], "pass", "{r:?}");
    }
    assert_eq!(by_target(&r, &format!("upstream {}:53", dns.upstream))["status"], "skip", "{r:?}");

    let r = check(&lab, &dns, &conf, EXTERNAL_NAME.0);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "pass");
    let queries = r.check()["data"]["dns"]["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 4, "three search domains, then the name as it is: {r:?}");
    assert_eq!(queries[3]["answer"][0], EXTERNAL_NAME.1.to_string());
    assert_eq!(by_target(&r, &format!("upstream {}:53", dns.upstream))["status"], "pass", "{r:?}");

    // Without --upstream, the node's resolv.conf under --host-root names the upstream.
    let root = TempDir::new(&format!("dns-root-{}", lab.prefix));
    std::fs::create_dir_all(root.path.join("etc")).unwrap();
    root.write("etc/resolv.conf", &format!("nameserver {}\n", dns.upstream));
    let host_root = root.path.display().to_string();
    let args = [
        "--host-root",
        &host_root,
        "check",
        "dns",
        EXTERNAL_NAME.0,
        "--resolv-conf",
        &conf,
        "--endpoint",
        "10.244.1.10",
    ];
    let r = netcheck::run_json_in(&lab.pod("a").netns, &args).unwrap();
    assert_eq!(by_target(&r, &format!("upstream {}:53", dns.upstream))["status"], "pass", "{r:?}");
}

/// Acceptance 1: NXDOMAIN, with every expansion that was asked listed.
#[test]
fn nxdomain_lists_the_expansions() {
    needs_root("nxdomain_lists_the_expansions");
    let (lab, dns, _dir, conf) = lab();
    let r = check(&lab, &dns, &conf, "nosuch.default");
    assert_eq!(r.code, 1, "{r:?}");
    let lookup = r.check();
    assert_eq!(lookup["status"], "fail");
    assert_eq!(lookup["cause"], "nxdomain");
    let detail = lookup["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("lookup nosuch.default on {}:53: no such host", dns.service)), "{detail}");
    for expansion in [
        "nosuch.default.default.svc.cluster.local.",
        "nosuch.default.svc.cluster.local.",
        "nosuch.default.cluster.local.",
        "nosuch.default.",
    ] {
        assert!(detail.contains(&format!("{expansion} (NXDOMAIN)")), "{expansion}: {detail}");
    }
    // The servers themselves work: NXDOMAIN is an answer.
    assert_eq!(by_target(&r, &format!("server {}:53", dns.service))["status"], "pass", "{r:?}");
}

/// Acceptance 1, docs/field-cases.md case 5: one CoreDNS replica unreachable. Its rung fails with the
/// netfilter drop as evidence; the Service rung is `partial` and names it.
#[test]
fn one_blocked_endpoint_is_partial_and_named() {
    needs_root("one_blocked_endpoint_is_partial_and_named");
    let (lab, dns, _dir, conf) = lab();
    lab.block_dns_endpoint(2).unwrap();
    let blocked = dns.endpoints[1];
    let r = check(&lab, &dns, &conf, "kubernetes.default");
    assert_eq!(r.code, 1, "{r:?}");
    let endpoint = by_target(&r, &format!("endpoint {blocked}:53"));
    assert_eq!(endpoint["status"], "fail");
    assert_eq!(endpoint["cause"], "netfilter_drop", "{r:?}");
    let drops: Vec<&Value> = endpoint["evidence"].as_array().unwrap().iter().filter(|e| e["kind"] == "drop").collect();
    assert!(drops.iter().any(|d| d["reason"] == "NETFILTER_DROP" && d["netns"] == lab.node(2).netns), "{r:?}");
    assert_eq!(by_target(&r, &format!("endpoint {}:53", dns.endpoints[0]))["status"], "pass", "{r:?}");
    let service = by_target(&r, &format!("server {}:53", dns.service));
    assert_eq!(service["cause"], "partial", "{r:?}");
    assert!(service["detail"].as_str().unwrap().contains(&format!("endpoint {blocked}:53 behind it")), "{r:?}");
    // The lookup names the failing rung, whichever endpoint its own queries reached.
    let lookup = r.check();
    assert_ne!(lookup["status"], "pass", "{r:?}");
    if lookup["status"] == "warn" {
        // Resolved this time (its queries reached the healthy replica): intermittent.
        assert_eq!(lookup["cause"], "partial", "{r:?}");
    }
    assert!(lookup["detail"].as_str().unwrap().contains(&format!("failing rung: endpoint {blocked}:53")), "{r:?}");
}

/// Acceptance 1: the upstream is down. Cluster names still pass; an external name fails with
/// SERVFAIL and the upstream rung is named.
#[test]
fn upstream_down_fails_only_external_names() {
    needs_root("upstream_down_fails_only_external_names");
    let (mut lab, dns, _dir, conf) = lab();
    lab.stop_upstream_dns();
    let r = check(&lab, &dns, &conf, "kubernetes.default");
    assert_eq!(r.code, 0, "{r:?}");

    let r = check(&lab, &dns, &conf, EXTERNAL_NAME.0);
    assert_eq!(r.code, 1, "{r:?}");
    let upstream = by_target(&r, &format!("upstream {}:53", dns.upstream));
    assert_eq!(upstream["status"], "fail", "{r:?}");
    assert_eq!(upstream["cause"], "refused", "{r:?}");
    let lookup = r.check();
    assert_eq!(lookup["status"], "fail");
    assert!(
        lookup["detail"].as_str().unwrap().contains(&format!("failing rung: upstream {}:53", dns.upstream)),
        "{r:?}"
    );
}

/// Without `--endpoint` the CoreDNS endpoints come from the kube-dns Service's EndpointSlices
/// (the API stand-in answers the real request with the API's JSON); a blocked one is named as
/// before. Without an API the endpoints are a `skip` that says why.
#[test]
fn endpoints_are_discovered_from_the_api() {
    needs_root("endpoints_are_discovered_from_the_api");
    let (mut lab, dns, dir, conf) = lab();
    let kubeconfig = dir.write("kubeconfig", &lab.serve_api(1, &dns.endpoints).unwrap());
    lab.block_dns_endpoint(2).unwrap();
    let blocked = dns.endpoints[1];
    let args =
        ["--timeout", "3s", "--kubeconfig", &kubeconfig, "check", "dns", "kubernetes.default", "--resolv-conf", &conf];
    let r = netcheck::run_json_in(&lab.pod("a").netns, &args).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&r.json).unwrap_or_default());
    assert_eq!(by_target(&r, &format!("endpoint {}:53", dns.endpoints[0]))["status"], "pass", "{r:?}");
    assert_eq!(by_target(&r, &format!("endpoint {blocked}:53"))["cause"], "netfilter_drop", "{r:?}");
    assert_eq!(by_target(&r, &format!("server {}:53", dns.service))["cause"], "partial", "{r:?}");

    let missing = dir.path.join("absent").display().to_string();
    let args = ["--kubeconfig", &missing, "check", "dns", "kubernetes.default", "--resolv-conf", &conf];
    let r = netcheck::run_json_in(&lab.pod("c").netns, &args).unwrap();
    let skip = by_target(&r, "endpoints of kube-system/kube-dns");
    assert_eq!(skip["status"], "skip", "{r:?}");
    assert_eq!(
        skip["detail"],
        format!(
            "not discovered from the API: {missing}: No such file or directory (os error 2); --endpoint asks CoreDNS \
             pods directly"
        )
        .as_str(),
        "{r:?}"
    );
    assert!(
        r.json["checks"].as_array().unwrap().iter().all(|c| !c["target"].as_str().unwrap().starts_with("endpoint "))
    );
}
