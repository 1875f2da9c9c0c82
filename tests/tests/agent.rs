//! `netcheck agent` on the lab: agents in the nodes' namespaces, scraped over HTTP and by a
//! real Prometheus, faults injected with iptables, stopped with SIGTERM.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use netlab::{
    Lab, TempDir,
    agent::{AGENT_PORT, Agent, Prometheus},
    needs_root,
};

struct Node {
    root: TempDir,
    kubeconfig: String,
}

fn lab() -> (Lab, Vec<Node>) {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let mut nodes = Vec::new();
    for n in [1, 2] {
        let root = TempDir::new(&format!("agent-root-{}-{n}", lab.prefix));
        lab.write_host_root(n, &root, &kubeconfig).unwrap();
        let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
        nodes.push(Node { root, kubeconfig });
    }
    (lab, nodes)
}

fn start_agent(lab: &Lab, nodes: &[Node], n: u8, timeout: &str, agent: &[&str]) -> Agent {
    start_agent_with(lab, nodes, n, timeout, agent, &[])
}

fn start_agent_with(lab: &Lab, nodes: &[Node], n: u8, timeout: &str, agent: &[&str], env: &[(&str, &str)]) -> Agent {
    let node = &nodes[usize::from(n - 1)];
    let host_root = node.root.path.display().to_string();
    let global = ["--timeout", timeout, "--host-root", &host_root, "--kubeconfig", &node.kubeconfig];
    let name = lab.node(n).name();
    let mut args = vec!["--node-name", name.as_str()];
    args.extend_from_slice(agent);
    let addr = SocketAddr::new(lab.node(n).underlay_ip.into(), AGENT_PORT);
    Agent::start_binary(&netlab::netcheck::binary().unwrap(), &lab.node(n).netns, addr, &global, &args, env).unwrap()
}

/// `/events` and `/report` hold the node's traffic and setup: a token the API server knows, of a
/// user RBAC allows, or nothing (kube-rbac-proxy's answers); `/metrics` and the health
/// endpoints stay open (Prometheus and the kubelet send no token).
fn assert_events_and_report_need_a_token(agent: &Agent) {
    let as_user = |path: &str, token: Option<&str>| netlab::http_get_as(&agent.netns, agent.addr, path, token).unwrap();
    for path in ["/events?since=60s", "/report"] {
        let (status, body) = as_user(path, None);
        assert_eq!((status, body.as_str()), (401, "Unauthorized: no bearer token\n"), "{path}");
        let (status, body) = as_user(path, Some("forged-token"));
        assert_eq!((status, body.as_str()), (401, "Unauthorized: invalid bearer token\n"), "{path}");
        let (status, body) = as_user(path, Some(netlab::NO_RIGHTS_TOKEN));
        let bare = path.split('?').next().unwrap();
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body, format!("Forbidden (user=nobody verb=get path={bare}: no RBAC policy matched)\n"));
    }
    // /metrics and the health endpoints stay open (Prometheus and the kubelet need no token).
    assert_eq!(agent.get("/metrics").unwrap().0, 200);
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
}

/// `/events` paged as the API pages its lists: the newest `limit`, then `continue` for older
/// ones (`all`: how many one unpaged request gave).
fn assert_events_are_paged(agent: &Agent, all: usize) {
    let page = |query: &str| -> serde_json::Value {
        let (status, body) = agent.get_authorized(&format!("/events?since=60s&host=192.168.50.12{query}")).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    assert!(all >= 2, "{all} events");
    let newest = page("&limit=1");
    assert_eq!(newest["events"].as_array().map(Vec::len), Some(1), "{newest}");
    assert!(newest["remaining"].as_u64().is_some_and(|n| n >= 1), "{newest}");
    let token = newest["continue"].as_str().expect("a continue token").to_string();
    let older = page(&format!("&limit=1&continue={token}"));
    assert_eq!(older["events"].as_array().map(Vec::len), Some(1), "{older}");
    assert!(older["events"][0]["time"].as_str() <= newest["events"][0]["time"].as_str(), "{older} then {newest}");
    assert_eq!(agent.get_authorized("/events?limit=0").unwrap().0, 400);
}

/// Series lines of an exposition (not comments), by metric name and labels.
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s))
        .collect()
}

fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed:\n{said}\n{text}");
    assert!(said.trim().is_empty(), "promtool has remarks:\n{said}");
}

/// IDs of the BPF programs a process holds, from its file descriptors' fdinfo.
fn bpf_program_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        if let Ok(info) = std::fs::read_to_string(entry.path()) {
            ids.extend(
                info.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|v| v.trim().parse::<u32>().ok()),
            );
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn pinned() -> Vec<String> {
    std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Issue 5 acceptance 2 and 6: the exposition passes `promtool check metrics`, names the peer
/// and its checks, does not grow with traffic or drops, the kernel's counters count a drop
/// flood without sending it to userspace, `/events` has the peer's drops; SIGTERM stops the
/// agent within 2 s with exit 0, its programs detached and nothing pinned.
#[test]
fn agent_exposition_is_valid_bounded_and_sigterm_leaves_nothing() {
    needs_root("agent_exposition_is_valid_bounded_and_sigterm_leaves_nothing");
    // Its 120,000-datagram flood is dropped in the kernel: every capture on the machine sees it.
    let _machine = netlab::machine_wide("agent_exposition_is_valid_bounded_and_sigterm_leaves_nothing");
    let (lab, nodes) = lab();
    let pinned_before = pinned();
    let mut agent = start_agent(&lab, &nodes, 1, "2s", &["--interval", "2s"]);
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    let programs = bpf_program_ids(agent.pid());
    assert!(programs.len() >= 3, "capture's programs are loaded: {programs:?}");
    assert_eq!(agent.get("/healthz").unwrap().0, 200);

    let (status, text) = agent.get("/metrics").unwrap();
    assert_eq!(status, 200);
    for line in [
        r#"netcheck_checks{probe="vxlan",peer="n2",status="pass"} 1"#,
        r#"netcheck_checks{probe="kubelet",peer="n2",status="pass"} 1"#,
        r#"netcheck_peers{set="probed"} 1"#,
        r#"netcheck_capture_up{reason=""} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(!text.contains(r#"status="fail""#), "a healthy lab fails nothing:\n{text}");
    promtool_check(&text);

    // Background traffic and drops: UDP to closed ports of a pod and of the node (NO_SOCKET
    // drops on a veth and on the bridge, ICMP port unreachable), then more of the same kind to
    // other ports: the second round must add no series, whatever its volume.
    let flood = |dst: &str, count: u64| {
        let sent = netlab::udp_flood(&lab.pod("a").netns, dst.parse().unwrap(), count, Duration::from_secs(5)).unwrap();
        assert!(sent > count / 2, "{sent}");
    };
    flood("10.244.2.2:9", 10_000);
    flood("192.168.50.11:19", 10_000);
    std::thread::sleep(Duration::from_secs(3));
    let (_, after_first) = agent.get("/metrics").unwrap();
    flood("10.244.2.2:7", 50_000);
    flood("192.168.50.11:21", 50_000);
    std::thread::sleep(Duration::from_secs(3));
    let (_, after_second) = agent.get("/metrics").unwrap();
    // Series from the flood: NO_SOCKET drops and port-unreachable errors. Other kernel series
    // may appear between two scrapes (the probes' own resets) and are bounded the same way.
    // The flood crosses veths, bridges and the overlay, never loopback (where other tests'
    // probes to closed ports show up).
    let from_flood = |s: &&str| {
        !s.starts_with("netcheck_kernel_events")
            || ((s.contains("NO_SOCKET") || s.contains("3/3")) && !s.contains(r#"device_class="loopback""#))
    };
    let (first, second): (Vec<&str>, Vec<&str>) = (
        series(&after_first).into_iter().filter(from_flood).collect(),
        series(&after_second).into_iter().filter(from_flood).collect(),
    );
    assert_eq!(first, second, "series changed with traffic:\n{after_first}\n---\n{after_second}");
    let value = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    let drops = value(&after_second, r#"netcheck_kernel_events_total{kind="drop""#);
    assert!(drops >= 100_000.0, "the kernel counted the flood's drops: {drops}\n{after_second}");
    let filtered = value(&after_second, "netcheck_capture_filtered_events_total");
    assert!(filtered >= 100_000.0, "and kept them out of userspace: {filtered}");
    promtool_check(&after_second);

    // VXLAN dropped on n2: n1's probe fails and the drops of the peer's address reach /events.
    lab.drop_vxlan(2).unwrap();
    let started = Instant::now();
    let failing = r#"netcheck_checks{probe="vxlan",peer="n2",status="fail"} 1"#;
    while !agent.get("/metrics").unwrap().1.lines().any(|l| l == failing) {
        assert!(started.elapsed() < Duration::from_secs(15), "VXLAN failure not in the metrics");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_events_and_report_need_a_token(&agent);
    let (status, body) = agent.get_authorized("/events?since=60s&host=192.168.50.12").unwrap();
    assert_eq!(status, 200, "{body}");
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events["node"], "n1");
    let netfilter: Vec<&serde_json::Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["reason"] == "NETFILTER_DROP").collect();
    assert!(!netfilter.is_empty(), "{body}");
    assert!(netfilter.iter().all(|e| e["flow"]["dst"] == "192.168.50.12:8472"), "{body}");
    assert_eq!(agent.get_authorized("/events?since=soon").unwrap().0, 400);
    assert_events_are_paged(&agent, events["events"].as_array().unwrap().len());
    let (status, report) = agent.get_authorized("/report").unwrap();
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    // Everything behind n2's dropped VXLAN: its CoreDNS pod (a timeout, or the drop when the
    // evidence names it), the VXLAN echo, the MTU search towards its pods.
    let problems: Vec<(&str, &str)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["subject"].as_str()?, p["cause"].as_str()?)))
        .collect();
    assert_eq!(problems.len(), 3, "{report}");
    assert_eq!(problems[0].0, "CoreDNS endpoint 10.244.2.10:53", "{report}");
    assert!(["netfilter_drop", "dns_timeout"].contains(&problems[0].1), "{report}");
    assert_eq!(problems[1..], [("vxlan 192.168.50.12:8472", "vxlan_no_reply"), ("mtu 10.244.2.0", "netfilter_drop")]);

    let (code, took) = agent.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5)).unwrap();
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The kernel frees a program whose last reference is gone from a work queue: shortly after.
    let gone = Instant::now();
    loop {
        let loaded: Vec<u32> = aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.id()).collect();
        if programs.iter().all(|id| !loaded.contains(id)) {
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(2), "programs still loaded: {programs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("programs unloaded {:?} after the exit", gone.elapsed());
    assert_eq!(pinned(), pinned_before, "nothing pinned");
}

/// Issue 5 acceptance 1: agents on both lab nodes, scraped by Debian's Prometheus every second:
/// PromQL shows the VXLAN failure within two intervals of injecting it, with the kernel's
/// NETFILTER_DROP count rising, and the recovery within two intervals of clearing it.
#[test]
fn prometheus_sees_the_vxlan_failure_and_its_recovery() {
    needs_root("prometheus_sees_the_vxlan_failure_and_its_recovery");
    let (lab, nodes) = lab();
    let interval = Duration::from_secs(5);
    let agent_args = ["--interval", "5s", "--jitter", "0.1"];
    let mut agents: Vec<Agent> = [1, 2].iter().map(|n| start_agent(&lab, &nodes, *n, "2s", &agent_args)).collect();
    for a in &mut agents {
        a.wait_ready(Duration::from_secs(30)).unwrap();
    }
    let targets: Vec<SocketAddr> = agents.iter().map(|a| a.addr).collect();
    let prom_addr = SocketAddr::new(lab.node(1).underlay_ip.into(), 9090);
    let prometheus = Prometheus::start(&lab.node(1).netns, prom_addr, &targets).unwrap();
    let passing = r#"sum by (instance) (netcheck_checks{probe="vxlan",status="pass"})"#;
    prometheus
        .wait_for(passing, Duration::from_secs(20), |r| r.len() == 2 && r.iter().all(|(_, v)| *v >= 1.0))
        .unwrap();

    lab.drop_vxlan(2).unwrap();
    let failing = r#"sum by (instance) (netcheck_checks{probe="vxlan",status="fail"})"#;
    let took =
        prometheus.wait_for(failing, 2 * interval, |r| r.len() == 2 && r.iter().all(|(_, v)| *v >= 1.0)).unwrap();
    eprintln!("VXLAN failure visible in Prometheus after {took:?}");
    let netfilter = r#"increase(netcheck_kernel_events_total{kind="drop",reason="NETFILTER_DROP"}[1m])"#;
    prometheus.wait_for(netfilter, interval, |r| r.iter().map(|(_, v)| v).sum::<f64>() > 0.0).unwrap();
    let cause = r#"netcheck_check_failing{probe="vxlan",peer="n2"}"#;
    let r = prometheus.query(cause).unwrap();
    // n1's agent is the one with peer n2: its echo through the overlay gets no reply.
    let causes: Vec<(&str, &str)> =
        r.iter().filter_map(|(labels, _)| Some((labels["instance"].as_str()?, labels["cause"].as_str()?))).collect();
    assert_eq!(causes, [(targets[0].to_string().as_str(), "vxlan_no_reply")], "{r:?}");

    lab.allow_vxlan(2).unwrap();
    // Recovered: the fail series are gone (each cycle replaces the last one's gauges).
    let took = prometheus.wait_for(failing, 2 * interval, |r| r.iter().all(|(_, v)| *v == 0.0)).unwrap();
    eprintln!("recovery visible after {took:?}");
    prometheus.wait_for(passing, interval, |r| r.len() == 2 && r.iter().all(|(_, v)| *v >= 1.0)).unwrap();
}

/// Issue 5 acceptance 7 (the Kubernetes part): the agent writes the NetworkPathProblem node
/// condition and Events to the API (here the lab's stand-in, answering as the API server
/// does), on changes only: False at start (no Event), True with a Warning Event naming the
/// hop, the peer and the kernel's reason when VXLAN to its one sampled peer (a quorum of one)
/// breaks, False with a Normal Event when it recovers.
#[test]
fn node_condition_and_events_follow_the_quorum() {
    needs_root("node_condition_and_events_follow_the_quorum");
    let (lab, nodes) = lab();
    let mut agent = start_agent(&lab, &nodes, 1, "2s", &["--interval", "2s"]);
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    let writes = |n: usize| -> Vec<(String, serde_json::Value)> {
        let started = Instant::now();
        loop {
            let w = lab.api_writes.lock().unwrap().clone();
            if w.len() >= n || started.elapsed() > Duration::from_secs(20) {
                return w;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let condition = |body: &serde_json::Value| body["status"]["conditions"][0].clone();
    let w = writes(1);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "PATCH /api/v1/nodes/n1/status");
    assert_eq!(condition(&w[0].1)["type"], "NetworkPathProblem");
    assert_eq!(condition(&w[0].1)["status"], "False");

    lab.drop_vxlan(2).unwrap();
    let w = writes(3);
    assert_eq!(w.len(), 3, "{w:?}");
    let c = condition(&w[1].1);
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("True"), Some("OverlayBroken")), "{c}");
    let message = c["message"].as_str().unwrap();
    assert!(message.starts_with("VXLAN overlay to 1 of 1 sampled peers fails: n2 (vxlan_no_reply: "), "{message}");
    assert!(message.contains("dropped by netfilter"), "the kernel's reason: {message}");
    assert_eq!(w[2].0, "POST /api/v1/namespaces/default/events");
    assert_eq!(w[2].1["type"], "Warning");
    assert_eq!(w[2].1["reason"], "NetworkPathProblem");
    assert_eq!(w[2].1["involvedObject"]["kind"], "Node");
    assert_eq!(w[2].1["involvedObject"]["name"], "n1");

    lab.allow_vxlan(2).unwrap();
    let w = writes(5);
    assert_eq!(w.len(), 5, "{w:?}");
    assert_eq!(condition(&w[3].1)["status"], "False");
    assert_eq!(w[4].1["type"], "Normal");
    assert_eq!(w[4].1["reason"], "NetworkPathRecovered");
    // Nothing more while nothing changes.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.api_writes.lock().unwrap().len(), 5);
    // The same fault again within 10 minutes: the condition, and the Warning Event's count
    // raised on the Event already sent (a PATCH of it), not a second Event.
    lab.drop_vxlan(2).unwrap();
    let w = writes(7);
    assert_eq!(w.len(), 7, "{w:?}");
    assert_eq!(condition(&w[5].1)["status"], "True");
    assert_eq!(w[6].0, "PATCH /api/v1/namespaces/default/events/n1.netcheck.17a2b3c4d5e6f708");
    assert_eq!(w[6].1["count"], 2, "{:?}", w[6]);
    lab.allow_vxlan(2).unwrap();
    let w = writes(9);
    assert_eq!(w.len(), 9, "{w:?}");
    assert_eq!(condition(&w[7].1)["status"], "False");
    assert_eq!((w[8].0.starts_with("PATCH /api/v1/namespaces/default/events/"), &w[8].1["count"]), (true, &2.into()));
    let (_, text) = agent.get("/metrics").unwrap();
    assert!(text.lines().any(|l| l == r#"netcheck_path_problem{reason="NetworkPathsHealthy"} 0"#), "{text}");
}

/// Cross-node correlation: `netcheck path` on n1, its own capture off (as on a real cluster,
/// where n1's kernel cannot see n2's), asks the agent on n2 what n2's kernel saw of the run's
/// VXLAN packets and places the drop on the peer-underlay hop, in n2's namespace on eth0.
#[test]
fn path_places_the_peer_agents_drops_on_the_peer_hops() {
    needs_root("path_places_the_peer_agents_drops_on_the_peer_hops");
    let (lab, nodes) = lab();
    let mut agent = start_agent(&lab, &nodes, 2, "2s", &["--interval", "2s"]);
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    lab.drop_vxlan(2).unwrap();
    let (a, b) = (lab.pod("a").clone(), lab.pod("b").clone());
    // The user's kubeconfig (its token is the API stand-in's admin's): shown to the peer agent,
    // which has the API server review it.
    let kubeconfig = nodes[0].kubeconfig.clone();
    let run = |global: &[&str], extra: &[&str]| {
        let dst = format!("{}:8080", b.ip);
        let mut args = vec!["--no-capture", "--timeout", "2s"];
        args.extend_from_slice(global);
        args.extend(["path", "--from", &a.netns, &dst]);
        args.extend_from_slice(extra);
        let r = netlab::netcheck::run_json_in(&lab.node(1).netns, &args).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&r.json).unwrap());
        r
    };
    let r = run(&["--kubeconfig", &kubeconfig], &[]);
    assert_eq!(r.code, 1);
    let hops = r.check()["hops"].as_array().unwrap();
    let first = hops.iter().find(|h| h["status"] == "fail").unwrap();
    assert_eq!(first["name"], "peer-underlay", "{first}");
    assert_eq!(first["inferred"], false);
    assert_eq!(first["netns"], lab.node(2).netns.as_str());
    assert_eq!(first["device"], "eth0");
    assert!(first["evidence"].as_array().unwrap().iter().any(|e| e["reason"] == "NETFILTER_DROP"), "{first}");
    assert!(
        r.json["verdict"].as_str().unwrap().starts_with("peer-underlay: dropped by netfilter"),
        "{}",
        r.json["verdict"]
    );
    let note = r.check()["data"]["path"]["peer_agent"].as_str().unwrap();
    assert!(note.starts_with("the agent on 192.168.50.12:9472 saw"), "{note}");

    // Without a token the peer agent refuses, and the output says so (and why there was none).
    let r = run(&[], &[]);
    let hops = r.check()["hops"].as_array().unwrap();
    assert!(hops.iter().all(|h| h["evidence"].as_array().is_none_or(Vec::is_empty)), "no evidence without a token");
    let note = r.check()["data"]["path"]["peer_agent"].as_str().unwrap();
    assert!(
        note.contains("refused, HTTP 401 Unauthorized: Unauthorized: no bearer token (netcheck had no token to send: no --kubeconfig, and no service account token"),
        "{note}"
    );

    // Without the peer's agent the same run only knows the packets did not arrive.
    let r = run(&["--kubeconfig", &kubeconfig], &["--no-peer-agent"]);
    let hops = r.check()["hops"].as_array().unwrap();
    assert!(hops.iter().all(|h| h["evidence"].as_array().is_none_or(Vec::is_empty)), "no evidence without the agent");
    assert!(r.check()["data"]["path"]["peer_agent"].is_null());
}

/// Without any privilege (as nobody, every capability dropped) the agent still probes on its
/// interval and serves its metrics: capture is down with the capabilities it lacked named, the
/// checks that need none pass, and the ones that need CAP_NET_RAW are skips, not failures.
#[test]
fn unprivileged_agent_probes_and_says_what_it_lacks() {
    needs_root("unprivileged_agent_probes_and_says_what_it_lacks");
    let (lab, nodes) = lab();
    let copy = netlab::netcheck::UnprivilegedCopy::new();
    let addr = SocketAddr::new(lab.node(1).underlay_ip.into(), AGENT_PORT);
    let host_root = nodes[0].root.path.display().to_string();
    let mut child = netlab::unprivileged(&lab.node(1).netns, &copy.path)
        .args(["--timeout", "2s", "--host-root", &host_root, "--kubeconfig", &nodes[0].kubeconfig])
        .args(["agent", "--interval", "2s", "--node-name", "n1", "--listen", &addr.to_string()])
        .spawn()
        .unwrap();
    let netns = lab.node(1).netns.clone();
    let ready = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(netlab::http_get(&netns, addr, "/readyz"), Ok((200, _)))
    });
    let metrics = netlab::http_get(&netns, addr, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "agent not ready");
    let (_, text) = metrics.unwrap();
    let up: Vec<&str> = text.lines().filter(|l| l.starts_with("netcheck_capture_up")).collect();
    assert_eq!(up, [r#"netcheck_capture_up{reason="capture needs CAP_BPF, CAP_PERFMON (missing here)"} 0"#], "{text}");
    assert!(text.contains(r#"netcheck_checks{probe="kubelet",peer="n2",status="pass"} 1"#), "{text}");
    assert!(text.contains(r#"netcheck_checks{probe="vxlan",peer="n2",status="skip"} 1"#), "{text}");
    assert!(!text.contains(r#"status="fail""#), "{text}");
}

/// A check that crashes in the agent is a failed metric of its probe and peer (cause
/// `internal_error`), never a gap in the series, and the agent goes on: forced in the VXLAN
/// probe of the peer with the debug build's failpoint (`NETCHECK_FAILPOINT=crash:vxlan`; a
/// release `NETCHECK_BIN` has none, and this test fails on it).
#[test]
fn a_crashed_check_is_a_failed_metric() {
    needs_root("a_crashed_check_is_a_failed_metric");
    // Its agent's probes are kernel events every capture on the machine counts (the exposition
    // test's series must not change under it).
    let _machine = netlab::machine_wide("a_crashed_check_is_a_failed_metric");
    let (lab, nodes) = lab();
    let mut agent = start_agent_with(
        &lab,
        &nodes,
        1,
        "2s",
        &["--interval", "2s", "--jitter", "0", "--no-node-condition"],
        &[("NETCHECK_FAILPOINT", "crash:vxlan")],
    );
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    // Two cycles: the crash does not stop the agent's loop.
    let cycles = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("netcheck_probe_cycles_total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no cycle count:\n{text}"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10) * netlab::time_scale();
    let text = loop {
        let (status, text) = agent.get("/metrics").unwrap();
        assert_eq!(status, 200);
        if cycles(&text) >= 2 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "fewer than 2 cycles in 10 s:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for line in [
        r#"netcheck_checks{probe="vxlan",peer="n2",status="fail"} 1"#,
        r#"netcheck_check_failing{probe="vxlan",peer="n2",cause="internal_error"} 1"#,
        r#"netcheck_checks{probe="kubelet",peer="n2",status="pass"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let failing: Vec<&str> = text.lines().filter(|l| l.starts_with("netcheck_check_failing{")).collect();
    assert_eq!(failing, [r#"netcheck_check_failing{probe="vxlan",peer="n2",cause="internal_error"} 1"#], "{text}");
    promtool_check(&text);
}

/// Never starved: 200 idle connections held open from a pod (no request sent) take 8 slots of
/// that source and an overflow that only answers health checks; the kubelet's liveness probe
/// (from the node's own address) still gets `/healthz` at once, a scrape still gets
/// `/metrics`, and a request from the crowding pod past its share gets 503, not a hang.
#[test]
fn idle_connections_do_not_starve_health_checks() {
    needs_root("idle_connections_do_not_starve_health_checks");
    let (lab, nodes) = lab();
    let mut agent = start_agent(&lab, &nodes, 1, "2s", &["--interval", "2s"]);
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    let addr = SocketAddr::new(lab.node(1).underlay_ip.into(), AGENT_PORT);
    let pod = lab.pod("a").netns.clone();
    let idle = netlab::in_netns(&pod, move || {
        let mut held = Vec::new();
        for _ in 0..200 {
            held.push(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?);
        }
        Ok(held)
    })
    .unwrap();
    assert_eq!(idle.len(), 200);
    std::thread::sleep(Duration::from_millis(200));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let (status, _) = agent.get(path).unwrap();
        let took = started.elapsed();
        assert_eq!(status, 200, "{path} under 200 idle connections");
        assert!(took < Duration::from_secs(2), "{path} took {took:?}");
    }
    // From the crowding pod itself: past its 8 connections, /report is refused with 503 (the
    // overflow reads the request and answers), or the connection is closed; never a hang.
    let started = Instant::now();
    let answered = netlab::http_get(&pod, addr, "/report");
    assert!(started.elapsed() < Duration::from_secs(3), "{answered:?} after {:?}", started.elapsed());
    if let Ok((status, body)) = &answered {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body, "too many connections; try again\n");
    }
    drop(idle);
}

/// Evidence the capture filter had no room for is said, never a quiet "no drop seen": the API
/// lists 16,500 more nodes, so the agent's peer addresses alone (one key each, two for n2) are
/// more than the filter's 16,384 keys, and the probes' own flows find no room either. n2 drops
/// DNS forwarded to its CoreDNS pod: the one kernel of the lab sees that drop, but the DNS
/// probe's flow is not in the filter, so the event never reaches the agent. The refused keys
/// are counted (the report's `capture.unwatched`, a metric), and every check of the cycle that
/// saw no drop, that DNS endpoint's among them, says its evidence is incomplete, with the count.
#[test]
fn a_full_capture_filter_is_counted_and_said() {
    const MORE: usize = 16_500;
    needs_root("a_full_capture_filter_is_counted_and_said");
    // Its probes to the more nodes' loopback addresses are resets and drops every capture on
    // the machine counts (the exposition test compares its kernel series between scrapes).
    let _machine = netlab::machine_wide("a_full_capture_filter_is_counted_and_said");
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    lab.block_dns_endpoint(2).unwrap();
    lab.add_synthetic_nodes(MORE);
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let root = TempDir::new(&format!("agent-root-{}-full", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig).unwrap();
    let node = Node { kubeconfig: root.path.join("etc/kubernetes/kubelet.conf").display().to_string(), root };
    let mut agent = start_agent(&lab, std::slice::from_ref(&node), 1, "2s", &["--interval", "3s"]);
    agent.wait_ready(Duration::from_mins(2)).unwrap();
    // The first cycles may run before the list of 16,502 nodes is in (it goes on alongside):
    // a cycle that began after it is the one to read.
    let metric = |name: &str| -> f64 {
        let (_, text) = agent.get("/metrics").unwrap();
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    let started = Instant::now();
    while metric(r#"netcheck_api_node_lists_total{result="ok"} "#) < 1.0 {
        assert!(started.elapsed() < Duration::from_mins(2), "the nodes were not listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed_at = metric("netcheck_probe_cycles_total ");
    while metric("netcheck_probe_cycles_total ") < listed_at + 2.0 {
        assert!(started.elapsed() < Duration::from_mins(3), "no cycle after the list");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = agent.get_authorized("/report").unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    // n2's underlay and VTEP, and each more node's underlay: at least this many had no room.
    let keys = u64::try_from(MORE).unwrap() + 2;
    let unwatched = report["capture"]["unwatched"].as_u64().unwrap_or(0);
    assert!(unwatched >= keys - 16_384, "unwatched {unwatched}: {}", report["capture"]);
    let checks = report["checks"].as_array().unwrap();
    let unseen: Vec<&str> = checks
        .iter()
        .filter_map(|c| c["detail"].as_str())
        .filter(|d| d.contains("no drop seen on this machine"))
        .collect();
    let blocked = checks.iter().find(|c| c["target"] == "endpoint 10.244.2.10:53").expect("the blocked endpoint's row");
    assert_eq!(blocked["status"], "fail", "{blocked}");
    assert_eq!(blocked["evidence"].as_array().map(Vec::len), Some(0), "its drop never reached the agent: {blocked}");
    assert!(blocked["detail"].as_str().is_some_and(|d| unseen.contains(&d)), "{blocked}");
    let said = format!("evidence incomplete: {unwatched} flows or addresses not watched, the capture filter was full");
    assert!(unseen.iter().all(|d| d.contains(&said)), "{said} in {unseen:#?}");
    let (_, text) = agent.get("/metrics").unwrap();
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("netcheck_capture_unwatched_keys_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(total.is_some_and(|t| t >= keys - 16_384), "{total:?}");
}

/// Issue 17 acceptance 2: Debian's Prometheus scraping both agents evaluates
/// deploy/alerts/netcheck.rules.yaml. Healthy, nothing fires or is pending; the VXLAN fault on n2
/// fires NetcheckOverlayBroken naming node n1 and peer n2 within its `for:` (2m) plus two
/// intervals; cleared, it resolves within two intervals.
#[test]
fn alert_rules_fire_on_the_vxlan_fault_and_resolve() {
    needs_root("alert_rules_fire_on_the_vxlan_fault_and_resolve");
    let (lab, nodes) = lab();
    let interval = Duration::from_secs(5);
    let agent_args = ["--interval", "5s", "--jitter", "0.1"];
    let mut agents: Vec<Agent> = [1, 2].iter().map(|n| start_agent(&lab, &nodes, *n, "2s", &agent_args)).collect();
    for a in &mut agents {
        a.wait_ready(Duration::from_secs(30)).unwrap();
    }
    let rules = netlab::deploy::dir().join("alerts/netcheck.rules.yaml");
    let targets = [(agents[0].addr, "n1"), (agents[1].addr, "n2")];
    let prom_addr = SocketAddr::new(lab.node(1).underlay_ip.into(), 9090);
    let prometheus = Prometheus::start_with_rules(&lab.node(1).netns, prom_addr, &targets, &[&rules]).unwrap();
    assert_eq!(prometheus.rule_names().unwrap().len(), 14, "the rule file's 14 alerts loaded");
    // Healthy: after a few cycles nothing is pending or firing.
    prometheus
        .wait_for(r#"sum by (node) (netcheck_checks{probe="vxlan",status="pass"})"#, Duration::from_secs(30), |r| {
            r.len() == 2
        })
        .unwrap();
    std::thread::sleep(3 * interval);
    // Nothing firing or pending, except kernel drops by reason: the lab's nodes share the
    // host's kernel, so its kernel-wide counters also count what the suite's other tests drop
    // (their injected faults). That alert's `for:` is 10m: it cannot fire within this test.
    let alerts = prometheus.query(r#"ALERTS{alertname!="NetcheckKernelDropsRising"}"#).unwrap();
    assert!(alerts.is_empty(), "the healthy lab raises alerts: {alerts:?}");
    // Issue 17 acceptance 3: every panel's query of the dashboard returns series, healthy...
    let panels = dashboard_queries();
    assert_eq!(panels.len(), 12, "{panels:?}");
    for (title, expr) in &panels {
        assert!(!prometheus.query(expr).unwrap().is_empty(), "healthy: panel {title:?} ({expr}) has no series");
    }

    lab.drop_vxlan(2).unwrap();
    let overlay = r#"ALERTS{alertname="NetcheckOverlayBroken",alertstate="firing"}"#;
    // `for:` plus two intervals, plus a scrape and an evaluation (1 s each).
    let deadline = Duration::from_mins(2) + 2 * interval + Duration::from_secs(2);
    let took = prometheus.wait_for(overlay, deadline, |r| !r.is_empty()).unwrap();
    eprintln!("NetcheckOverlayBroken firing {took:?} after the fault");
    let firing: Vec<(String, String, String)> = prometheus
        .query(overlay)
        .unwrap()
        .iter()
        .map(|(l, _)| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (s("node"), s("peer"), s("severity"))
        })
        .collect();
    let mut firing = firing;
    firing.sort();
    // The fault drops VXLAN arriving at n2: n1's echoes to n2 and the replies to n2's own
    // (which fire too once they have failed for 2m: not always by now).
    let n1_n2 = ("n1".to_string(), "n2".to_string(), "critical".to_string());
    let n2_n1 = ("n2".to_string(), "n1".to_string(), "critical".to_string());
    assert!(firing.contains(&n1_n2) && firing.iter().all(|f| *f == n1_n2 || *f == n2_n1), "{firing:?}");
    // ... and under the fault.
    for (title, expr) in &panels {
        assert!(!prometheus.query(expr).unwrap().is_empty(), "VXLAN fault: panel {title:?} ({expr}) has no series");
    }
    let matrix = prometheus.query(&panels[2].1).unwrap();
    assert!(
        matrix.iter().any(|(l, v)| l["node"] == "n1" && l["peer"] == "n2" && l["probe"] == "vxlan" && *v > 0.5),
        "{matrix:?}"
    );
    // Other alerts it may fire are its consequences: each node reaches the other's CoreDNS pod
    // through the broken overlay (DNS partial), and with one peer each, that peer is a quorum
    // failing at one hop (the node's path problem).
    let others = prometheus.query(r#"ALERTS{alertname!="NetcheckOverlayBroken",alertstate="firing"}"#).unwrap();
    assert!(
        others.iter().all(|(l, _)| ["NetcheckDnsFailing", "NetcheckNodePathProblem"]
            .contains(&l["alertname"].as_str().unwrap_or_default())),
        "the VXLAN fault fires other alerts: {others:?}"
    );

    lab.allow_vxlan(2).unwrap();
    let took = prometheus.wait_for(overlay, 2 * interval + Duration::from_secs(2), <[_]>::is_empty).unwrap();
    eprintln!("NetcheckOverlayBroken resolved {took:?} after clearing");
    prometheus.wait_for(r#"ALERTS{alertstate="firing"}"#, 2 * interval, <[_]>::is_empty).unwrap();
}

/// Each panel's title and query in deploy/dashboard/netcheck.json, the template variables
/// (`$node`, `$peer`) as Grafana sends them with "All" chosen (their `allValue`, `.*`).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = netlab::deploy::dir().join("dashboard/netcheck.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$node", ".*").replace("$peer", ".*");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}
