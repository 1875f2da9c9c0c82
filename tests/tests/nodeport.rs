//! `check service` on a NodePort Service in the lab (issue 16): kube-proxy's `KUBE-NODEPORTS`,
//! `KUBE-EXT-`/`KUBE-SVL-` chains and `KUBE-POSTROUTING` masquerade written by the stand-in, the
//! NodePort probed from a node on its own address and on the other node's. Under
//! `externalTrafficPolicy: Cluster` both nodes answer; under `Local` the node without an
//! endpoint drops it for other hosts, a named cause and not a failure, while its own
//! connections still get through; a node whose forwarding to the endpoint is broken fails with
//! the drop on that node; rules missing on this node fail the rules and its own NodePort.

mod service_lab;

use std::net::{Ipv4Addr, SocketAddr};

use netlab::{LabEndpoint, LabPort, LabService, Programming, needs_root};
use serde_json::Value;
use service_lab::{Env, checks, detail, env_in, row, status};

const SHOP_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 90);
const NODE_PORT: u16 = 30080;

/// The lab of `service_lab` with `default/shop`: a NodePort Service whose only endpoint is pod
/// w1 on n1, under `externalTrafficPolicy` Local when `local`.
fn shop(local: bool) -> Env {
    shop_in("iptables", local)
}

/// [`shop`] with kube-proxy in `mode` (`iptables` or `nftables`).
fn shop_in(mode: &'static str, local: bool) -> Env {
    let e = env_in(mode);
    e.lab.add_service(LabService {
        namespace: "default".into(),
        name: "shop".into(),
        cluster_ip: SHOP_IP,
        ports: vec![LabPort {
            name: "http".into(),
            port: 80,
            udp: false,
            target_port: 8080,
            node_port: Some(NODE_PORT),
        }],
        endpoints: vec![LabEndpoint { ip: e.w1, node: 1, pod: "w1".into(), ready: true }],
        external_local: local,
    });
    for node in [1, 2] {
        if mode == "nftables" {
            e.lab.program_kube_proxy_nft(node, &Programming::default()).unwrap();
        } else {
            e.lab.program_kube_proxy(node, &Programming::default()).unwrap();
        }
    }
    e
}

/// The NodePort rows: (target, status, cause).
fn node_ports(rows: &[Value]) -> Vec<(String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    rows.iter()
        .filter(|c| c["probe"] == "nodeport")
        .map(|c| (s(&c["target"]), s(&c["status"]), s(&c["cause"])))
        .collect()
}

fn target(e: &Env, node: u8) -> String {
    format!("n{node} {}:{NODE_PORT} tcp", e.lab.node(node).underlay_ip)
}

#[test]
fn cluster_policy_node_ports_answer_on_every_node() {
    needs_root("cluster_policy_node_ports_answer_on_every_node");
    let e = shop(false);
    let w1 = SocketAddr::new(e.w1.into(), 8080);
    let r = e.check(1, &["default/shop"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", &format!("rules nodeport {NODE_PORT} tcp"));
    assert_eq!(status(rules), ("pass", ""), "{rules:#}");
    assert!(detail(rules).contains("KUBE-NODEPORTS → KUBE-EXT-"), "{rules:#}");
    assert!(detail(rules).ends_with(&format!("DNAT to {w1}")), "{rules:#}");
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 1), "pass".into(), String::new()), (target(&e, 2), "pass".into(), String::new())]
    );
    // This node's own probe is DNATed here, and conntrack names where.
    assert_eq!(
        detail(row(&rows, "nodeport", &target(&e, 1))),
        format!(
            "this node's NodePort answered, DNATed to {w1} (pod default/w1 on n1) (externalTrafficPolicy Cluster, 1 \
             ready endpoint on n1)"
        )
    );
}

#[test]
fn local_policy_without_a_local_endpoint_is_a_named_cause_not_a_failure() {
    needs_root("local_policy_without_a_local_endpoint_is_a_named_cause_not_a_failure");
    let e = shop(true);
    // From n1 (the endpoint's node): n2's NodePort drops it by design.
    let r = e.check(1, &["default/shop"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 1), "pass".into(), String::new()), (target(&e, 2), "pass".into(), "no_local_endpoint".into())]
    );
    let n2 = detail(row(&rows, "nodeport", &target(&e, 2)));
    assert!(
        n2.starts_with(
            "no answer, as designed: externalTrafficPolicy Local and no ready endpoint on n2, so kube-proxy on n2 drops"
        ),
        "{n2}"
    );
    let rules = row(&rows, "iptables", &format!("rules nodeport {NODE_PORT} tcp"));
    assert_eq!(status(rules), ("pass", ""), "{rules:#}");
    assert!(detail(rules).contains("→ KUBE-SVL-"), "{rules:#}");

    // From n2: its rules drop the port for other hosts (kube-proxy's comment quoted), and its
    // own connection still reaches w1 on n1 (kube-proxy's "route LOCAL traffic").
    let r = e.check(2, &["default/shop"]);
    let rows = checks(&r);
    // The lab's kube-proxy on n2 answers its healthz unhealthy; nothing else fails.
    let failing: Vec<&Value> = rows.iter().filter(|c| c["status"] == "fail").map(|c| &c["probe"]).collect();
    assert_eq!((r.code, failing), (1, vec![&Value::from("kube-proxy")]), "{rows:#?}");
    let rules = row(&rows, "iptables", &format!("rules nodeport {NODE_PORT} tcp"));
    assert_eq!(status(rules), ("pass", "no_local_endpoint"), "{rules:#}");
    assert!(
        detail(rules).contains("filter KUBE-EXTERNAL-SERVICES -j DROP (\"default/shop:http has no local endpoints\")"),
        "{rules:#}"
    );
    // n2's own NodePort first, then n1 (the endpoint's node).
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 2), "pass".into(), String::new()), (target(&e, 1), "pass".into(), String::new())]
    );
    assert!(detail(row(&rows, "nodeport", &target(&e, 2))).contains("DNATed to"), "{rows:#?}");
}

#[test]
fn a_broken_node_port_is_placed_on_its_node() {
    needs_root("a_broken_node_port_is_placed_on_its_node");
    let e = shop(false);
    // n2 DNATs its NodePort to w1 on n1, then its FORWARD drops it: n2's NodePort fails with
    // the drop on n2; n1's own still answers.
    e.lab.drop_forwarded_tcp(2, e.w1, 8080).unwrap();
    let r = e.check(1, &["default/shop"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 1), "pass".into(), String::new()), (target(&e, 2), "fail".into(), "node_port_failed".into())]
    );
    let n2 = detail(row(&rows, "nodeport", &target(&e, 2)));
    let ns2 = e.lab.node(2).netns.clone();
    assert!(n2.starts_with("the NodePort on n2: no answer: dropped by netfilter in netns "), "{n2}");
    assert!(n2.contains(&ns2) && n2.contains("any node forwards it to an endpoint"), "{n2}");
    e.lab.iptables(&ns2, &format!("-D FORWARD -d {} -p tcp --dport 8080 -j DROP", e.w1)).unwrap();

    // kube-proxy on n1 has not programmed the Service: the rules fail, and n1's own NodePort
    // is refused (nothing DNATs it, nothing listens); n2's still answers.
    e.lab.program_kube_proxy(1, &Programming { without: Some("default/shop".into()), ..Default::default() }).unwrap();
    let r = e.check(1, &["default/shop"]);
    let rows = checks(&r);
    assert_eq!(r.code, 1, "{rows:#?}");
    let rules = row(&rows, "iptables", &format!("rules nodeport {NODE_PORT} tcp"));
    assert_eq!(status(rules), ("fail", "service_not_programmed"), "{rules:#}");
    assert!(detail(rules).contains(&format!("no KUBE-NODEPORTS rule matches tcp dport {NODE_PORT}")), "{rules:#}");
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 1), "fail".into(), "node_port_failed".into()), (target(&e, 2), "pass".into(), String::new())]
    );
    assert!(detail(row(&rows, "nodeport", &target(&e, 1))).contains("refused"), "{rows:#?}");
}

#[test]
fn without_net_admin_the_node_ports_are_still_probed() {
    needs_root("without_net_admin_the_node_ports_are_still_probed");
    let e = shop(true);
    let copy = netlab::netcheck::UnprivilegedCopy::new();
    let root = e.root.path.display().to_string();
    let r = copy.run_json_in(&e.lab.node(1).netns, &e.args(&root, &["default/shop"]));
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", &format!("rules nodeport {NODE_PORT} tcp"));
    assert_eq!(status(rules).0, "skip", "{rules:#}");
    assert!(detail(rules).contains("CAP_NET_ADMIN"), "{rules:#}");
    // The probes judge as with it: n2's drop by design is still told from a failure (by the
    // API's endpoints), only the endpoint n1 DNATed its own probe to is not named.
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 1), "pass".into(), String::new()), (target(&e, 2), "pass".into(), "no_local_endpoint".into())]
    );
    assert!(!detail(row(&rows, "nodeport", &target(&e, 1))).contains("DNATed"), "{rows:#?}");
}

#[test]
fn nftables_mode_node_ports_are_read_and_judged() {
    needs_root("nftables_mode_node_ports_are_read_and_judged");
    let e = shop_in("nftables", true);
    let w1 = SocketAddr::new(e.w1.into(), 8080);
    let rules_target = format!("rules nodeport {NODE_PORT} tcp");
    // On n1 (the endpoint's node): service-nodeports → external- → local- → w1.
    let r = e.check(1, &["default/shop"]);
    let rows = checks(&r);
    assert_eq!(r.code, 0, "{rows:#?}");
    let rules = row(&rows, "iptables", &rules_target);
    assert_eq!(status(rules), ("pass", ""), "{rules:#}");
    let d = detail(rules);
    assert!(d.starts_with("nft (table ip kube-proxy): services → @service-nodeports → external-"), "{d}");
    assert!(d.contains("→ local-") && d.ends_with(&format!("DNAT to {w1}")), "{d}");
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 1), "pass".into(), String::new()), (target(&e, 2), "pass".into(), "no_local_endpoint".into())]
    );
    // On n2: the port's no-endpoint-nodeports element, kube-proxy's comment quoted.
    let r = e.check(2, &["default/shop"]);
    let rows = checks(&r);
    let rules = row(&rows, "iptables", &rules_target);
    assert_eq!(status(rules), ("pass", "no_local_endpoint"), "{rules:#}");
    assert!(
        detail(rules).starts_with("nft (table ip kube-proxy): @no-endpoint-nodeports: drop (\"default/shop:http\")"),
        "{rules:#}"
    );
    assert_eq!(
        node_ports(&rows),
        [(target(&e, 2), "pass".into(), String::new()), (target(&e, 1), "pass".into(), String::new())]
    );
}
