//! The agent at cluster scale, on the lab and the API stand-in: what it asks of the API server
//! (one paginated list, then watches on its sampled peers only), which peers it skips, and, on a
//! lab of four nodes with an agent on each, that only the node whose side of a hop is broken
//! takes the `NetworkPathProblem` condition.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use netlab::{
    Lab, TempDir,
    agent::{AGENT_PORT, Agent},
    needs_root,
};

/// A node root per lab node, its kubelet kubeconfig naming the API stand-in on n1.
fn roots(lab: &Lab, kubeconfig: &str) -> Vec<TempDir> {
    lab.nodes
        .iter()
        .map(|n| {
            let root = TempDir::new(&format!("cluster-root-{}-{}", lab.prefix, n.index));
            lab.write_host_root(n.index, &root, kubeconfig).unwrap();
            root
        })
        .collect()
}

fn start_agent(lab: &Lab, roots: &[TempDir], n: u8, agent: &[&str]) -> Agent {
    let root = &roots[usize::from(n - 1)];
    let host_root = root.path.display().to_string();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let global = ["--timeout", "1s", "--host-root", &host_root, "--kubeconfig", &kubeconfig];
    let name = lab.node(n).name();
    let mut args = vec!["--node-name", name.as_str()];
    args.extend_from_slice(agent);
    let addr = SocketAddr::new(lab.node(n).underlay_ip.into(), AGENT_PORT);
    Agent::start_binary(&netlab::netcheck::binary().unwrap(), &lab.node(n).netns, addr, &global, &args, &[]).unwrap()
}

fn cycles(agent: &Agent) -> f64 {
    let (_, text) = agent.get("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("netcheck_probe_cycles_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The agent at cluster scale: one list of every node, in pages, at start; then a watch on each
/// sampled peer only (field selector), held open; nothing per cycle. Of 250 more nodes the
/// API lists, 200 are NotReady: none is sampled, and the metrics say how many were skipped.
#[test]
fn the_agent_lists_nodes_once_and_watches_only_its_sampled_peers() {
    needs_root("the_agent_lists_nodes_once_and_watches_only_its_sampled_peers");
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    lab.add_synthetic_nodes(250);
    let not_ready: Vec<String> = (0..250).filter(|i| i % 5 != 0).map(|i| format!("peer-{i:05}")).collect();
    lab.api_nodes.not_ready = not_ready.clone();
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let roots = roots(&lab, &kubeconfig);
    // A rotation of 23 h: the sample does not change during the test (a 1-in-4000 chance).
    let mut agent = start_agent(&lab, &roots, 1, &["--interval", "2s", "--jitter", "0", "--rotate", "23h"]);
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    while cycles(&agent) < 4.0 {
        assert!(started.elapsed() < Duration::from_mins(1), "4 cycles not done");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, text) = agent.get("/metrics").unwrap();
    for line in [
        r#"netcheck_peers_skipped{reason="not_ready"} 200"#,
        r#"netcheck_peers_skipped{reason="deleting"} 0"#,
        r#"netcheck_peers{set="probed"} 3"#,
        r#"netcheck_peers{set="watched"} 3"#,
        r#"netcheck_api_node_lists_total{result="ok"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    // The peers probed (by their VXLAN rows' addresses), none of them NotReady.
    let (_, report) = agent.get_authorized("/report").unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let name_of = |target: &str| {
        let ip = target.split(':').next().unwrap_or_default().to_string();
        let lab_nodes = lab.nodes.iter().map(|n| (n.name(), n.underlay_ip));
        lab.synthetic_nodes.iter().cloned().chain(lab_nodes).find(|(_, a)| a.to_string() == ip).map(|(n, _)| n)
    };
    let mut probed: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["probe"] == "vxlan")
        .filter_map(|c| name_of(c["target"].as_str().unwrap_or_default()))
        .collect();
    probed.sort();
    probed.dedup();
    assert_eq!(probed.len(), 3, "{report}");
    assert!(probed.iter().all(|p| !not_ready.contains(p)), "a NotReady node sampled: {probed:?}");

    let requests = lab.api_requests.lock().unwrap().clone();
    let summary: Vec<String> = requests.iter().map(|r| format!("{} {} ({} B)", r.method, r.target, r.bytes)).collect();
    // 252 nodes (n1, n2 and 250 more), 100 a page: three pages, once.
    let pages: Vec<&String> = requests.iter().filter(|r| r.is_full_node_list()).map(|r| &r.target).collect();
    assert_eq!(pages.len(), 3, "{summary:#?}");
    assert!(pages.iter().all(|t| t.contains("limit=100")), "{pages:?}");
    assert!(pages[1].contains("continue=100") && pages[2].contains("continue=200"), "{pages:?}");
    // One watch per sampled peer, still open (none re-opened: no read deadline cuts them).
    let selected = |r: &netlab::api_nodes::ApiRequest| {
        r.target
            .split_once("fieldSelector=metadata.name%3D")
            .map(|(_, rest)| rest.split('&').next().unwrap_or_default().to_string())
    };
    let mut watches: Vec<String> = requests.iter().filter(|r| r.is_watch()).filter_map(selected).collect();
    watches.sort();
    assert_eq!(watches, probed, "{summary:#?}");
    // Each watch began with a list of its one node.
    let singles = requests.iter().filter(|r| !r.is_watch() && selected(r).is_some()).count();
    assert_eq!(singles, 3, "{summary:#?}");
}

/// Four nodes, an agent on each, k = 3 (every other node sampled; a quorum is 2 of 3), and a
/// fifth node in the API that is NotReady. VXLAN dropped as it arrives on n3: n3's probes to all
/// three peers fail (their answers are dropped), so n3 takes `NetworkPathProblem=True` naming
/// the overlay; every other node sees one peer of three fail (n3), no quorum, and keeps False.
/// Clearing the drop clears n3's condition. The NotReady node is never sampled.
#[test]
fn only_the_broken_node_takes_the_condition() {
    needs_root("only_the_broken_node_takes_the_condition");
    let _ = netlab::clean_stale();
    let mut lab = Lab::with_nodes(4).unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    lab.add_synthetic_nodes(1);
    lab.api_nodes.not_ready = vec!["peer-00000".into()];
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let roots = roots(&lab, &kubeconfig);
    let mut agents: Vec<Agent> =
        (1..=4).map(|n| start_agent(&lab, &roots, n, &["--interval", "2s", "--jitter", "0"])).collect();
    for agent in &mut agents {
        agent.wait_ready(Duration::from_secs(30)).unwrap();
    }
    // The condition each node was last given, from the stand-in's writes.
    let last = |node: &str| -> Option<(String, String)> {
        let path = format!("PATCH /api/v1/nodes/{node}/status");
        lab.api_writes.lock().unwrap().iter().rev().find(|(p, _)| *p == path).map(|(_, body)| {
            let c = &body["status"]["conditions"][0];
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(40), "{what}: {:#?}", lab.api_writes.lock().unwrap());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let names = ["n1", "n2", "n3", "n4"];
    wait("every node healthy", &|| names.iter().all(|n| last(n).is_some_and(|(s, _)| s == "False")));
    for agent in &agents {
        let (_, text) = agent.get("/metrics").unwrap();
        for line in [r#"netcheck_peers_skipped{reason="not_ready"} 1"#, r#"netcheck_peers{set="probed"} 3"#] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    lab.drop_vxlan(3).unwrap();
    wait("n3 broken", &|| last("n3").is_some_and(|(s, _)| s == "True"));
    let (_, message) = last("n3").unwrap();
    assert!(message.starts_with("VXLAN overlay to 3 of 3 sampled peers fails: "), "{message}");
    for peer in ["n1", "n2", "n4"] {
        assert!(message.contains(&format!("{peer} (vxlan_no_reply")), "{message}");
    }
    // Three more cycles of every agent: nobody else takes it.
    let at: Vec<f64> = agents.iter().map(cycles).collect();
    wait("three more cycles", &|| agents.iter().zip(&at).all(|(a, c)| cycles(a) >= c + 3.0));
    for node in ["n1", "n2", "n4"] {
        assert_eq!(last(node).map(|(s, _)| s), Some("False".into()), "{node} took the condition");
    }

    lab.allow_vxlan(3).unwrap();
    wait("n3 cleared", &|| last("n3").is_some_and(|(s, _)| s == "False"));
    for node in ["n1", "n2", "n4"] {
        let trues = lab
            .api_writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, b)| {
                *p == format!("PATCH /api/v1/nodes/{node}/status") && b["status"]["conditions"][0]["status"] == "True"
            })
            .count();
        assert_eq!(trues, 0, "{node} was given the condition at some point");
    }
}
