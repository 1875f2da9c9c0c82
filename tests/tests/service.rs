//! `check service` on the lab (issue 16): a Service in the API stand-in, kube-proxy's
//! iptables-mode rules for it written by the kube-proxy stand-in, real TCP listeners and real
//! dnsmasq CoreDNS pods behind it, conntrack read over ctnetlink. Healthy over TCP and UDP, each
//! probe names the endpoint conntrack says it was DNATed to; each fault gives its own cause on
//! the right endpoint; a stale UDP entry is found and the printed command clears it; without
//! CAP_NET_ADMIN the probes still judge.

mod service_lab;

use std::net::Ipv4Addr;

use netlab::{Programming, needs_root, netcheck};
use serde_json::Value;
use service_lab::{Env, WEB_IP, checks, detail, env, env_in, probes, row, status};

#[test]
fn healthy_service_over_tcp_and_udp_names_each_probes_endpoint() {
    needs_root("healthy_service_over_tcp_and_udp_names_each_probes_endpoint");
    let e = env();
    let r = e.check(1, &["default/web", "--probes", "16"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let targets: Vec<(&str, &str)> =
        rows.iter().map(|c| (c["probe"].as_str().unwrap(), c["target"].as_str().unwrap())).collect();
    let (w1, b) = (format!("{}:8080", e.w1), format!("{}:8080", e.b));
    assert_eq!(
        targets,
        [
            ("service", "default/web:http tcp"),
            ("kube-proxy", "127.0.0.1:10256"),
            ("iptables", "rules 10.96.0.80:80 tcp"),
            ("service", "10.96.0.80:80 tcp"),
            ("endpoint", &*format!("{w1} tcp")),
            ("endpoint", &*format!("{b} tcp")),
        ]
    );
    assert_eq!(detail(&rows[1]), "healthz 200 on 127.0.0.1:10256, mode iptables");
    let rules = detail(&rows[2]);
    assert!(rules.contains(&format!("DNAT to {w1}, {b}")), "{rules}");
    assert!(rules.contains("KUBE-SERVICES → KUBE-SVC-"), "{rules}");
    let seen = probes(&rows[3]);
    assert_eq!(seen.len(), 16, "{:#}", rows[3]);
    for (endpoint, node, pod, answered) in &seen {
        assert!(answered, "{:#}", rows[3]);
        let want = if *endpoint == w1 { ("n1", "default/w1") } else { ("n2", "default/b") };
        assert!(*endpoint == w1 || *endpoint == b, "probe DNATed to {endpoint}: {:#}", rows[3]);
        assert_eq!((node.as_str(), pod.as_str()), want, "{:#}", rows[3]);
    }
    // kube-proxy picks each endpoint with probability 1/2: both are seen in 16 probes (all on
    // one endpoint has probability 2^-15).
    let on_w1 = seen.iter().filter(|p| p.0 == w1).count();
    assert!(on_w1 > 0 && on_w1 < 16, "{:#}", rows[3]);
    assert_eq!(
        detail(&rows[3]),
        format!(
            "16/16 probes answered: → {w1} (pod default/w1 on n1) answered ×{on_w1}; → {b} (pod default/b on n2) \
             answered ×{}",
            16 - on_w1
        )
    );

    // UDP, by address: kube-dns's `dns` port; its DNS queries answered by dnsmasq's CoreDNS.
    let r = e.check(1, &["--udp", "10.96.0.10:53", "--probes", "8"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    assert_eq!(status(row(&rows, "service", "kube-system/kube-dns:dns udp")).0, "pass");
    let vip = row(&rows, "service", "10.96.0.10:53 udp");
    let dns: Vec<String> = e.dns.iter().map(|ip| format!("{ip}:53")).collect();
    let seen = probes(vip);
    assert_eq!(seen.len(), 8, "{vip:#}");
    assert!(seen.iter().all(|p| p.3 && dns.contains(&p.0)), "{vip:#}");
    assert_eq!(status(row(&rows, "conntrack", "conntrack 10.96.0.10:53 udp")), ("pass", ""));
    for d in &dns {
        assert_eq!(status(row(&rows, "endpoint", &format!("{d} udp"))).0, "pass");
    }
}

#[test]
fn each_service_fault_has_its_own_cause() {
    needs_root("each_service_fault_has_its_own_cause");
    let e = env();
    let (w1, b) = (format!("{}:8080", e.w1), format!("{}:8080", e.b));
    let n1 = e.lab.node(1).netns.clone();

    // One endpoint's path broken: n2 drops forwarded TCP to pod b. Partial, placed on b.
    e.lab.drop_forwarded_tcp(2, e.b, 8080).unwrap();
    let r = e.check(1, &["default/web", "--probes", "16"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    assert_eq!(status(vip), ("fail", "partial"), "{vip:#}");
    let n2 = e.lab.node(2).netns.clone();
    assert!(
        detail(vip).contains(&format!(
            "every failure was DNATed to {b} (pod default/b on n2), dropped by netfilter in netns {n2} on flannel.1"
        )),
        "{vip:#}"
    );
    for (endpoint, _, _, answered) in probes(vip) {
        assert_eq!(answered, endpoint == w1, "{vip:#}");
    }
    // Those probes left n1 masqueraded (kube-proxy marks a node's own traffic to a Service IP,
    // KUBE-POSTROUTING masquerades it out of flannel.1), so the drops on n2 above were matched
    // through the translated endpoint the probes' conntrack entries gave.
    let ct = std::process::Command::new("ip")
        .args(["netns", "exec", &n1, "conntrack", "-L", "-p", "tcp", "-d", &WEB_IP.to_string()])
        .output()
        .unwrap();
    let ct = String::from_utf8_lossy(&ct.stdout);
    let masqueraded = format!("src={} dst={} ", e.b, e.lab.node(1).flannel_ip());
    assert!(ct.lines().any(|l| l.contains(&masqueraded)), "no entry with reply {masqueraded:?}: {ct}");
    let direct = row(&rows, "endpoint", &format!("{b} tcp"));
    assert_eq!(status(direct), ("fail", "netfilter_drop"), "{direct:#}");
    assert_eq!(status(row(&rows, "endpoint", &format!("{w1} tcp"))).0, "pass");
    e.lab.iptables(&e.lab.node(2).netns, &format!("-D FORWARD -d {} -p tcp --dport 8080 -j DROP", e.b)).unwrap();

    // kube-proxy has not programmed the Service on n1: no rule, probes never DNATed.
    e.lab.program_kube_proxy(1, &Programming { without: Some("default/web".into()), ..Default::default() }).unwrap();
    let r = e.check(1, &["default/web"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(detail(rules).contains("no KUBE-SERVICES rule matches 10.96.0.80:80 tcp"), "{rules:#}");
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    assert_eq!(status(vip), ("fail", "service_not_programmed"), "{vip:#}");
    assert!(detail(vip).contains("not DNATed"), "{vip:#}");
    assert_eq!(status(row(&rows, "endpoint", &format!("{b} tcp"))).0, "pass");
    e.lab.sync_kube_proxy().unwrap();

    // No endpoint: kube-proxy's REJECT; the Service's own row names it.
    let r = e.check(1, &["default/empty"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    assert_eq!(status(row(&rows, "service", "default/empty:http tcp")), ("fail", "service_no_endpoints"));
    let rules = row(&rows, "iptables", "rules 10.96.0.81:80 tcp");
    assert_eq!(status(rules).0, "pass", "{rules:#}");
    assert!(detail(rules).contains("-j REJECT (\"default/empty:http has no endpoints\")"), "{rules:#}");
    assert_eq!(status(row(&rows, "service", "10.96.0.81:80 tcp")), ("fail", "service_no_endpoints"));

    // A Service the API does not have, by name and by address; a port it does not have.
    for (wanted, target) in
        [("default/none", "default/none"), ("10.96.0.99:80", "10.96.0.99:80"), ("default/web:8443", "default/web:8443")]
    {
        let r = e.check(1, &[wanted]);
        let rows = checks(&r);
        assert_eq!(r.code, 1, "{rows:#?}");
        let svc = row(&rows, "service", target);
        assert_eq!(status(svc), ("fail", "service_not_found"), "{svc:#}");
    }

    // No route for the Service range on the node: never sent, never DNATed.
    netlab::run("ip", &["-n", &n1, "route", "del", netlab::SERVICE_CIDR]).unwrap();
    let r = e.check(1, &["default/web"]);
    let rows = checks(&r);
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    assert_eq!(status(vip), ("fail", "no_route"), "{vip:#}");
    assert_eq!(status(row(&rows, "iptables", "rules 10.96.0.80:80 tcp")).0, "pass");
    netlab::run("ip", &["-n", &n1, "route", "add", netlab::SERVICE_CIDR, "dev", "eth0"]).unwrap();

    // kube-proxy unhealthy on n2 (its healthz answers 503).
    let r = e.check(2, &["default/web"]);
    let rows = checks(&r);
    let kp = row(&rows, "kube-proxy", "127.0.0.1:10256");
    assert_eq!(status(kp), ("fail", "kube_proxy_unhealthy"), "{kp:#}");
    assert_eq!(status(row(&rows, "service", "10.96.0.80:80 tcp")).0, "pass");

    // A KUBE-SEP left for a deleted endpoint: pod w1 is gone from the API and the node (its
    // veth deleted), n1's rules still DNAT to it.
    e.lab.edit_service("default", "web", |s| s.endpoints.retain(|ep| ep.pod != "w1"));
    netlab::run("ip", &["-n", &n1, "link", "del", "vethw1"]).unwrap();
    let stale = Programming { endpoints: Some(("default/web".into(), vec![e.w1, e.b])), ..Default::default() };
    e.lab.program_kube_proxy(1, &stale).unwrap();
    let r = e.check(1, &["default/web", "--probes", "16"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(detail(rules).contains(&format!("DNAT to {w1} which no EndpointSlice lists as ready")), "{rules:#}");
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    assert_eq!(status(vip), ("fail", "service_not_programmed"), "{vip:#}");
    assert!(detail(vip).contains(&format!("DNATed to {w1}, which no EndpointSlice lists as ready")), "{vip:#}");
    assert!(!rows.iter().any(|c| c["target"] == format!("{w1} tcp")), "{rows:#?}");
}

/// The field's CoreDNS-restart black hole: a client's UDP flow to the kube-dns IP stays DNATed
/// to a CoreDNS pod that is gone.
/// A DNS probe of a Service IP from a node is one datagram, masqueraded out of n1 (kube-proxy,
/// `--random-fully`) and dropped on n2 before conntrack could be asked: the capture held the
/// events on n1's other addresses until conntrack named the exact translated endpoint.
#[test]
fn a_masqueraded_dns_probe_is_followed_to_its_drop() {
    needs_root("a_masqueraded_dns_probe_is_followed_to_its_drop");
    let e = env();
    let (n1, n2) = (e.lab.node(1).netns.clone(), e.lab.node(2).netns.clone());
    // kube-dns's CoreDNS pod on n2 unreachable: the probes DNATed to it fail, with its drop.
    e.lab.block_dns_endpoint(2).unwrap();
    let r = e.check(1, &["--udp", "10.96.0.10:53", "--probes", "12"]);
    let rows = checks(&r);
    let vip = row(&rows, "service", "10.96.0.10:53 udp");
    assert_eq!(status(vip), ("fail", "partial"), "{vip:#}");
    assert!(
        detail(vip)
            .contains(&format!("every failure was DNATed to 10.244.2.10:53, dropped by netfilter in netns {n2} on")),
        "{vip:#}"
    );
    // kube-proxy masquerades --random-fully: the probes' ports changed too, so only conntrack
    // could name their flows after the SNAT.
    let ct = std::process::Command::new("ip")
        .args(["netns", "exec", &n1, "conntrack", "-L", "-p", "udp", "-d", "10.96.0.10"])
        .output()
        .unwrap();
    let ct = String::from_utf8_lossy(&ct.stdout);
    let field = |l: &str, name: &str, nth: usize| {
        l.split_whitespace().filter_map(|w| w.strip_prefix(name)).nth(nth).map(str::to_string)
    };
    let moved = ct.lines().filter(|l| l.contains(&format!("dst={} ", e.lab.node(1).flannel_ip()))).any(|l| {
        let (sport, reply_dport) = (field(l, "sport=", 0), field(l, "dport=", 1));
        sport.is_some() && reply_dport.is_some() && sport != reply_dport
    });
    assert!(moved, "no masqueraded entry with a changed port: {ct}");
}

#[test]
fn stale_udp_entry_is_found_and_the_printed_command_clears_it() {
    needs_root("stale_udp_entry_is_found_and_the_printed_command_clears_it");
    let e = env();
    let gone = Ipv4Addr::new(10, 244, 2, 99);
    let old = Programming { endpoints: Some(("kube-system/kube-dns".into(), vec![gone])), ..Default::default() };
    e.lab.program_kube_proxy(1, &old).unwrap();
    // Pod a's resolver sends from one source port (the flow conntrack keeps).
    let a = e.lab.pod("a").netns.clone();
    netlab::in_netns(&a, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:40053")?;
        for _ in 0..3 {
            s.send_to(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", "10.96.0.10:53")?;
        }
        Ok(())
    })
    .unwrap();
    e.lab.sync_kube_proxy().unwrap();
    let r = e.check(1, &["--udp", "kube-system/kube-dns:dns"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    let ct = row(&rows, "conntrack", "conntrack 10.96.0.10:53 udp");
    assert_eq!(status(ct), ("fail", "stale_conntrack"), "{ct:#}");
    let command = "conntrack -D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.2.99";
    assert!(
        detail(ct).contains(&format!("1 DNATed to {gone}, not a serving endpoint: clear with `{command}`")),
        "{ct:#}"
    );
    // The Service itself works again (the rules are right): only the old flow is pinned.
    assert_eq!(status(row(&rows, "service", "10.96.0.10:53 udp")).0, "pass");

    let n1 = e.lab.node(1).netns.clone();
    let mut run = vec!["netns", "exec", &n1];
    run.extend(command.split_whitespace());
    netlab::run("ip", &run).unwrap();
    let r = e.check(1, &["--udp", "kube-system/kube-dns:dns"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    assert_eq!(status(row(&rows, "conntrack", "conntrack 10.96.0.10:53 udp")), ("pass", ""));
}

#[test]
fn without_net_admin_the_probes_still_judge() {
    needs_root("without_net_admin_the_probes_still_judge");
    let e = env();
    let copy = netcheck::UnprivilegedCopy::new();
    let root = e.root.path.display().to_string();
    let r = copy.run_json_in(&e.lab.node(1).netns, &e.args(&root, &["default/web"]));
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules).0, "skip", "{rules:#}");
    assert!(detail(rules).contains("CAP_NET_ADMIN"), "{rules:#}");
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    assert_eq!(status(vip).0, "pass", "{vip:#}");
    assert!(
        detail(vip)
            .contains("the endpoint of each probe is not known: conntrack: reading conntrack needs CAP_NET_ADMIN"),
        "{vip:#}"
    );
    for (endpoint, _, _, answered) in probes(vip) {
        assert!(answered && endpoint.is_empty(), "{vip:#}");
    }
    for ep in [e.w1, e.b] {
        assert_eq!(status(row(&rows, "endpoint", &format!("{ep}:8080 tcp"))).0, "pass");
    }
    // Broken endpoint, still judged by the probes (without conntrack it cannot be placed).
    e.lab.drop_forwarded_tcp(2, e.b, 8080).unwrap();
    let r = copy.run_json_in(&e.lab.node(1).netns, &e.args(&root, &["default/web"]));
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    assert_eq!(status(row(&rows, "endpoint", &format!("{}:8080 tcp", e.b))).0, "fail");
}

/// `netcheck path` from pod a (n1) to a Service, `--kubeconfig` and the node root as `check
/// service` has them.
fn path(e: &Env, dst: &str) -> netcheck::Run {
    let root = e.root.path.display().to_string();
    let timeout = format!("{}s", 3 * netlab::time_scale());
    let a = e.lab.pod("a").netns.clone();
    let args = ["--timeout", &timeout, "--host-root", &root, "--kubeconfig", &e.kubeconfig, "path", "--from", &a, dst];
    let r = netcheck::run_json_in(&e.lab.node(1).netns, &args).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&r.json).unwrap_or_default());
    r
}

fn hops(r: &netcheck::Run) -> Vec<Value> {
    r.check()["hops"].as_array().unwrap_or_else(|| panic!("no hops: {r:?}")).clone()
}

fn hop_names(r: &netcheck::Run) -> Vec<String> {
    hops(r).iter().map(|h| h["name"].as_str().unwrap_or_default().to_string()).collect()
}

fn hop(r: &netcheck::Run, name: &str) -> Value {
    hops(r).into_iter().find(|h| h["name"] == name).unwrap_or_else(|| panic!("no hop {name}: {r:?}"))
}

/// Acceptance 4: the DNAT is a hop of its own, and the hops after it lead to the endpoint the
/// node chose for the final probe: across the overlay to pod b on n2, or to pod w1 on n1's own
/// bridge. n1's rules DNAT to one endpoint at a time, so the run knows which to expect.
#[test]
fn path_to_a_service_shows_the_dnat_and_follows_the_endpoint() {
    needs_root("path_to_a_service_shows_the_dnat_and_follows_the_endpoint");
    let e = env();
    let (w1, b) = (format!("{}:8080", e.w1), format!("{}:8080", e.b));
    let only = |ip: Ipv4Addr| Programming { endpoints: Some(("default/web".into(), vec![ip])), ..Default::default() };

    e.lab.program_kube_proxy(1, &only(e.b)).unwrap();
    let r = path(&e, "10.96.0.80:80");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        hop_names(&r),
        [
            "source",
            "veth",
            "bridge",
            "dnat",
            "routing",
            "overlay",
            "underlay",
            "peer-underlay",
            "peer-overlay",
            "peer-bridge",
            "destination"
        ]
    );
    let dnat = hop(&r, "dnat");
    assert_eq!((dnat["status"].as_str(), dnat["netns"].as_str()), (Some("pass"), Some(&*e.lab.node(1).netns)));
    let d = dnat["detail"].as_str().unwrap();
    assert!(
        d.starts_with(&format!(
            "10.96.0.80:80 -> {b} (pod default/b on n2) by kube-proxy's DNAT (Service default/web;"
        )),
        "{d}"
    );
    assert!(hop(&r, "destination")["detail"].as_str().unwrap().starts_with(&e.b.to_string()), "{r:?}");
    assert_eq!(r.check()["data"]["path"]["destination_pod"]["name"], "b", "{r:?}");
    assert_eq!(r.check()["target"], format!("{} -> 10.96.0.80:80", e.lab.pod("a").netns));
    assert_eq!(
        r.json["verdict"],
        format!("healthy: {} -> 10.96.0.80:80 (DNATed to {b}) crosses 11 hops (4 inferred)", e.lab.pod("a").netns)
    );

    // By name, DNATed to w1 on n1's own bridge: no routing, no overlay.
    e.lab.program_kube_proxy(1, &only(e.w1)).unwrap();
    let r = path(&e, "default/web:http");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(hop_names(&r), ["source", "veth", "bridge", "dnat", "destination"]);
    let d = hop(&r, "dnat")["detail"].as_str().unwrap().to_string();
    assert!(d.starts_with(&format!("10.96.0.80:80 -> {w1} (pod default/w1 on n1)")), "{d}");
    assert!(hop(&r, "destination")["detail"].as_str().unwrap().contains("on the same bridge"), "{r:?}");
    let r = path(&e, "default/nothing");
    assert_eq!((r.code, r.stderr.as_str()), (2, "netcheck: default/nothing: no Service default/nothing in the API\n"));
}

/// The endpoint's own path broken, kube-proxy not programmed, and no CAP_NET_ADMIN: each on the
/// right hop.
#[test]
fn path_to_a_service_places_each_fault() {
    needs_root("path_to_a_service_places_each_fault");
    let e = env();
    let n2 = e.lab.node(2).netns.clone();
    let only_b = Programming { endpoints: Some(("default/web".into(), vec![e.b])), ..Default::default() };
    e.lab.program_kube_proxy(1, &only_b).unwrap();
    e.lab.drop_forwarded_tcp(2, e.b, 8080).unwrap();
    let r = path(&e, "10.96.0.80:80");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(hop(&r, "dnat")["status"], "pass", "{r:?}");
    let broken = hops(&r).into_iter().find(|h| h["status"] == "fail").unwrap();
    assert_eq!((broken["cause"].as_str(), broken["netns"].as_str()), (Some("netfilter_drop"), Some(&*n2)), "{broken}");
    assert!(broken["name"].as_str().unwrap().starts_with("peer-"), "{broken}");
    e.lab.iptables(&n2, &format!("-D FORWARD -d {} -p tcp --dport 8080 -j DROP", e.b)).unwrap();

    // Not programmed on n1: the DNAT hop fails, nothing past it is made up.
    e.lab.program_kube_proxy(1, &Programming { without: Some("default/web".into()), ..Default::default() }).unwrap();
    let r = path(&e, "10.96.0.80:80");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(hop_names(&r), ["source", "veth", "bridge", "dnat", "destination"]);
    let dnat = hop(&r, "dnat");
    assert_eq!(dnat["cause"], "service_not_programmed", "{dnat}");
    let d = dnat["detail"].as_str().unwrap();
    assert!(d.contains("10.96.0.80:80 was not DNATed on this node"), "{d}");
    assert!(d.contains("kube-proxy has not programmed Service default/web on this node"), "{d}");
    assert_eq!(hop(&r, "destination")["inferred"], true);
    e.lab.sync_kube_proxy().unwrap();

    // No endpoint: kube-proxy rejects it.
    let r = path(&e, "10.96.0.81:80");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(hop(&r, "dnat")["cause"], "service_no_endpoints", "{r:?}");

    // The Service IP on a port it does not have.
    let r = path(&e, "10.96.0.80:8443");
    assert_eq!(hop(&r, "dnat")["cause"], "service_not_found", "{r:?}");

    // Without CAP_NET_ADMIN (from the node: entering a pod needs CAP_SYS_ADMIN): the final
    // probe judges, the DNAT hop says what it could not read.
    let copy = netcheck::UnprivilegedCopy::new();
    let root = e.root.path.display().to_string();
    let timeout = format!("{}s", 3 * netlab::time_scale());
    let args = ["--timeout", &timeout, "--host-root", &root, "--kubeconfig", &e.kubeconfig, "path", "10.96.0.80:80"];
    let r = copy.run_json_in(&e.lab.node(1).netns, &args);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(hop_names(&r), ["dnat", "destination"]);
    let dnat = hop(&r, "dnat");
    assert_eq!(dnat["status"], "skip", "{dnat}");
    assert!(dnat["detail"].as_str().unwrap().contains("CAP_NET_ADMIN"), "{dnat}");
    let dst = hop(&r, "destination");
    let want = format!("one of the Service's ready endpoints: {}:8080, {}:8080; connected in ", e.w1, e.b);
    assert!(dst["detail"].as_str().unwrap().starts_with(&want), "{dst}");
}

/// kube-proxy in nftables mode (GA in 1.33): no KUBE-* iptables rule on the node, its `ip
/// kube-proxy` table read with `nft -j` and followed from `service-ips` to each endpoint's
/// `dnat to`; a Service missing from the map, one without endpoints, and `path` through it.
#[test]
fn nftables_mode_rules_are_read_and_followed() {
    needs_root("nftables_mode_rules_are_read_and_followed");
    let e = env_in("nftables");
    let (w1, b) = (format!("{}:8080", e.w1), format!("{}:8080", e.b));
    let r = e.check(1, &["default/web", "--probes", "8"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    assert_eq!(detail(row(&rows, "kube-proxy", "127.0.0.1:10256")), "healthz 200 on 127.0.0.1:10256, mode nftables");
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules).0, "pass", "{rules:#}");
    let d = detail(rules);
    assert!(d.contains("nft (table ip kube-proxy): services → @service-ips → service-"), "{d}");
    assert!(d.contains(&format!("DNAT to {w1}, {b}")), "{d}");
    assert!(!d.contains("iptables-nft"), "the iptables backend holds no rule for it: {d}");
    let vip = row(&rows, "service", "10.96.0.80:80 tcp");
    assert!(probes(vip).iter().all(|p| p.3 && (p.0 == w1 || p.0 == b)), "{vip:#}");

    // Missing from the map on n1: not programmed, and the probes were not DNATed.
    let without = Programming { without: Some("default/web".into()), ..Default::default() };
    e.lab.program_kube_proxy_nft(1, &without).unwrap();
    let r = e.check(1, &["default/web"]);
    let rows = checks(&r);
    let rules = row(&rows, "iptables", "rules 10.96.0.80:80 tcp");
    assert_eq!(status(rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(detail(rules).contains("no element of map service-ips matches 10.96.0.80:80 tcp"), "{rules:#}");
    assert_eq!(status(row(&rows, "service", "10.96.0.80:80 tcp")), ("fail", "service_not_programmed"));
    e.lab.program_kube_proxy_nft(1, &Programming::default()).unwrap();

    // No endpoints: the no-endpoint-services map rejects it, with kube-proxy's comment.
    let r = e.check(1, &["default/empty"]);
    let rows = checks(&r);
    let rules = row(&rows, "iptables", "rules 10.96.0.81:80 tcp");
    assert!(
        detail(rules)
            .contains("nft (table ip kube-proxy): @no-endpoint-services: goto reject-chain (\"default/empty:http\")"),
        "{rules:#}"
    );
    assert_eq!(status(row(&rows, "service", "10.96.0.81:80 tcp")), ("fail", "service_no_endpoints"));

    // path follows the DNAT whichever mode wrote it.
    let only_b = Programming { endpoints: Some(("default/web".into(), vec![e.b])), ..Default::default() };
    e.lab.program_kube_proxy_nft(1, &only_b).unwrap();
    let r = path(&e, "10.96.0.80:80");
    assert_eq!(r.code, 0, "{r:?}");
    let dnat = hop(&r, "dnat");
    assert!(
        dnat["detail"].as_str().unwrap().starts_with(&format!("10.96.0.80:80 -> {b} (pod default/b on n2)")),
        "{dnat}"
    );
    assert_eq!(hop_names(&r).last().map(String::as_str), Some("destination"));
    assert!(hop_names(&r).contains(&"overlay".to_string()), "{r:?}");
}
