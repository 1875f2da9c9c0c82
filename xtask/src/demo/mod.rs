//! `cargo xtask demo`: the fault scenarios of docs/field-cases.md on the lab, each with the
//! command an operator would type and netcheck's real answer.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use netlab::{EXTERNAL_NAME, KUBELET_PORT, Lab, TempDir};

mod compare;
pub use compare::Netcheck;

fn fresh_lab() -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_servers()?;
    lab.start_dns()?;
    Ok(lab)
}

/// `check dns NAME` from pod a with a pod's resolv.conf and the whole ladder.
fn show_dns(bin: &Netcheck, lab: &Lab, name: &str) -> Result<()> {
    let dir = TempDir::new(&format!("demo-{}", lab.prefix));
    let conf = dir.write("resolv.conf", &Lab::pod_resolv_conf());
    let endpoints: Vec<String> = [1u8, 2].iter().map(|n| format!("10.244.{n}.10")).collect();
    let upstream = netlab::UPSTREAM_DNS_IP.to_string();
    let mut args = vec!["--timeout", "2s", "check", "dns", name, "--resolv-conf", &conf];
    for e in &endpoints {
        args.extend(["--endpoint", e.as_str()]);
    }
    args.extend(["--upstream", upstream.as_str()]);
    println!("(pod a's resolv.conf: {})", Lab::pod_resolv_conf().trim().replace('\n', "; "));
    show(bin, &lab.pod("a").netns, &args)
}

fn show(bin: &Netcheck, netns: &str, args: &[&str]) -> Result<()> {
    println!("$ netcheck --netns {netns} {}", args.join(" "));
    let out = Command::new(bin).arg("--netns").arg(netns).args(args).output().context("run netcheck")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!("(exit code {})\n", out.status.code().unwrap_or(-1));
    bin.compare(netns, args)
}

pub fn run(bin: &Netcheck) -> Result<()> {
    if !netlab::is_root() {
        bail!("the demo builds network namespaces: run it as root");
    }
    let _ = netlab::clean_stale();
    println!("lab: two flannel-style nodes (VXLAN VNI 1, UDP 8472) in network namespaces;");
    println!(
        "     pod a 10.244.1.2 and pod c 10.244.1.3 on n1 (192.168.50.11), pod b 10.244.2.2 on n2 (192.168.50.12)"
    );

    scenario(
        "1. healthy: pod a (n1) -> pod b (n2) across the overlay",
        |_| Ok(()),
        |lab| show(bin, &lab.pod("a").netns, &["check", "tcp", &pod_b(lab)]),
    )?;
    scenario(
        "2. the listener in pod b stopped (docs/field-cases.md case 8: nothing listens)",
        |lab| {
            lab.stop_servers_on(8080);
            Ok(())
        },
        |lab| show(bin, &lab.pod("a").netns, &["check", "tcp", &pod_b(lab)]),
    )?;
    scenario(
        "3. n2 silently DROPs forwarded TCP to pod b",
        |lab| lab.drop_forwarded_tcp(2, lab.pod("b").ip, 8080),
        |lab| show(bin, &lab.pod("a").netns, &["--timeout", "2s", "check", "tcp", &pod_b(lab)]),
    )?;
    scenario(
        "4. n1 REJECTs pod sources to its kubelet (docs/field-cases.md case 1): pods on n1 fail, pods on n2 pass",
        |lab| lab.reject_pods_to_kubelet(1),
        |lab| {
            let kubelet = format!("{}:{KUBELET_PORT}", lab.node(1).underlay_ip);
            show(bin, &lab.pod("a").netns, &["--timeout", "2s", "check", "tcp", &kubelet])?;
            show(bin, &lab.pod("b").netns, &["--timeout", "2s", "check", "tcp", &kubelet])
        },
    )?;
    scenario(
        "5. n2 drops VXLAN (UDP 8472) on its underlay (docs/field-cases.md case 4): TCP sees a timeout, netcheck names the overlay",
        |lab| lab.drop_vxlan(2),
        |lab| {
            show(bin, &lab.pod("a").netns, &["--timeout", "2s", "check", "tcp", &pod_b(lab)])?;
            show(bin, &lab.pod("a").netns, &["-o", "json", "--timeout", "2s", "check", "tcp", &pod_b(lab)])
        },
    )?;
    scenario(
        "6. netcheck capture: live drops with the kernel's reason names",
        |_| Ok(()),
        |lab| {
            let host = lab.pod("b").ip.to_string();
            println!(
                "$ netcheck capture --duration 3s --host {host}   (meanwhile pod a connects to a closed port of pod b)"
            );
            let child = Command::new(bin)
                .args(["capture", "--duration", "3s", "--host", &host])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_millis(1500));
            let closed = SocketAddr::new(lab.pod("b").ip.into(), 7);
            netlab::in_netns(&lab.pod("a").netns, move || {
                Ok(TcpStream::connect_timeout(&closed, Duration::from_secs(1)).is_ok())
            })?;
            let out = child.wait_with_output()?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            Ok(())
        },
    )?;
    scenario(
        "7. the kubelet's serving certificate has no IP SAN (docs/field-cases.md case 2); checked from the other node",
        |lab| {
            lab.stop_servers_on(KUBELET_PORT);
            lab.serve_kubelet(1, false)
        },
        |lab| show(bin, &lab.node(2).netns, &["check", "kubelet", &lab.node(1).underlay_ip.to_string()]),
    )?;
    scenario(
        "8. unprivileged (`kubectl debug node` without --profile=sysadmin): probes run, capture says what it lacks",
        |_| Ok(()),
        |lab| {
            let target = pod_b(lab);
            println!(
                "$ setpriv --reuid=65534 --inh-caps=-all --bounding-set=-all netcheck check tcp {target}   (in pod a)"
            );
            let out = netlab::unprivileged(&lab.pod("a").netns, &bin.path).args(["check", "tcp", &target]).output()?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            println!("(exit code {})", out.status.code().unwrap_or(-1));
            Ok(())
        },
    )?;
    dns_scenarios(bin)?;
    mtu_and_vxlan_scenarios(bin)?;
    bin.verdict()
}

/// Why a scenario's details vary from run to run (see `Netcheck::varying`).
const RANDOM_ENDPOINT: &str = "kube-proxy's rules pick a CoreDNS endpoint at random per query";
const ICMP_RATELIMIT: &str = "the kernel rate-limits port unreachables per destination (icmp_ratelimit)";

fn dns_scenarios(bin: &Netcheck) -> Result<()> {
    scenario(
        "9. DNS, healthy: a short name through the search list (ndots:5), then every rung of the ladder",
        |_| Ok(()),
        |lab| show_dns(bin, lab, "kubernetes.default"),
    )?;
    scenario(
        "10. one CoreDNS replica unreachable (docs/field-cases.md case 5): the Service answers only sometimes",
        |lab| lab.block_dns_endpoint(2),
        |lab| bin.varying(RANDOM_ENDPOINT, || show_dns(bin, lab, "kubernetes.default")),
    )?;
    scenario(
        "11. the upstream resolver is down: cluster names resolve, external names fail at the upstream rung",
        |lab| {
            lab.stop_upstream_dns();
            Ok(())
        },
        |lab| {
            show_dns(bin, lab, "kubernetes.default")?;
            bin.varying(ICMP_RATELIMIT, || show_dns(bin, lab, EXTERNAL_NAME.0))
        },
    )?;
    scenario(
        "12. a pod dials the kubelet by node name (docs/field-cases.md case 3): node names are not in cluster DNS",
        |_| Ok(()),
        |lab| {
            let dir = TempDir::new(&format!("demo-kubelet-{}", lab.prefix));
            let conf = dir.write("resolv.conf", &Lab::pod_resolv_conf());
            show(bin, &lab.pod("a").netns, &["check", "kubelet", &lab.node(1).name(), "--resolv-conf", &conf])
        },
    )
}

fn mtu_and_vxlan_scenarios(bin: &Netcheck) -> Result<()> {
    scenario(
        "13. path MTU, healthy: pod a -> pod b carries flannel's 1450",
        |_| Ok(()),
        |lab| show(bin, &lab.pod("a").netns, &["check", "mtu", &lab.pod("b").ip.to_string()]),
    )?;
    scenario(
        "14. the switch between the nodes carries smaller frames and says nothing (docs/field-cases.md case 6): a black hole",
        |lab| lab.shrink_switch_mtu(1400),
        |lab| {
            let b = lab.pod("b").ip.to_string();
            show(bin, &lab.pod("a").netns, &["check", "mtu", &b])?;
            println!("$ tracepath -n -m 3 {b}   (in pod a, for comparison: it trusts ICMP)");
            let out = Command::new("timeout")
                .args(["60", "ip", "netns", "exec", &lab.pod("a").netns, "tracepath", "-n", "-m", "3", &b])
                .output()?;
            println!("{}", String::from_utf8_lossy(&out.stdout));
            Ok(())
        },
    )?;
    scenario(
        "15. n1's flannel.1 is smaller than its pods' MTU: signalled with ICMP, not a black hole",
        |lab| lab.set_overlay_mtu(1, 1400),
        |lab| show(bin, &lab.pod("a").netns, &["check", "mtu", &lab.pod("b").ip.to_string()]),
    )?;
    scenario(
        "16. VXLAN from node n1 to n2: healthy, then UDP 8472 dropped on n2 (docs/field-cases.md case 4)",
        |_| Ok(()),
        |lab| {
            let peer = lab.node(2).underlay_ip.to_string();
            show(bin, &lab.node(1).netns, &["check", "vxlan", &peer])?;
            lab.drop_vxlan(2)?;
            show(bin, &lab.node(1).netns, &["--timeout", "2s", "check", "vxlan", &peer])
        },
    )?;
    scenario(
        "17. n1 lost its FDB entry for n2: the VXLAN device cannot send there",
        |lab| lab.delete_fdb(1, 2),
        |lab| show(bin, &lab.node(1).netns, &["check", "vxlan", &lab.node(2).underlay_ip.to_string()]),
    )?;
    scenario(
        "18. netcheck node on n1: everything discovery finds, at once (node root as kubeadm and flannel leave it)",
        |_| Ok(()),
        |lab| show_node(bin, lab),
    )?;
    scenario(
        "19. netcheck node on n1 with the CoreDNS pod on n2 blocked: three checks see it, one problem",
        |lab| lab.block_dns_endpoint(2),
        |lab| bin.varying(RANDOM_ENDPOINT, || show_node(bin, lab)),
    )?;
    path_scenarios(bin)?;
    agent_scenarios(bin)
}

/// `netcheck node` on n1 with the API stand-in and a node root as kubeadm and flannel leave it.
fn show_node(bin: &Netcheck, lab: &mut Lab) -> Result<()> {
    let kubeconfig = lab.serve_api(1, &[Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(10, 244, 2, 10)])?;
    let root = TempDir::new(&format!("demo-node-{}", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig)?;
    let host_root = root.path.display().to_string();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    show(bin, &lab.node(1).netns, &["--host-root", &host_root, "--kubeconfig", &kubeconfig, "node"])
}

/// `netcheck path` run on node n1 from pod a's namespace, as on a node with `--from cni-...`.
fn show_path(bin: &Netcheck, lab: &Lab, dst: &str) -> Result<()> {
    let from = lab.pod("a").netns.clone();
    show(bin, &lab.node(1).netns, &["--timeout", "2s", "path", "--from", &from, dst])
}

fn path_scenarios(bin: &Netcheck) -> Result<()> {
    scenario(
        "20. path, healthy: pod a (n1) -> pod b (n2), hop by hop",
        |_| Ok(()),
        |lab| show_path(bin, lab, &pod_b(lab)),
    )?;
    scenario(
        "21. path with UDP 8472 dropped on n2 (docs/field-cases.md case 4): the first broken hop and the kernel's word for it",
        |lab| lab.drop_vxlan(2),
        |lab| show_path(bin, lab, &pod_b(lab)),
    )?;
    scenario(
        "22. path from pod a to its own node's kubelet, pod sources rejected (docs/field-cases.md case 1)",
        |lab| lab.reject_pods_to_kubelet(1),
        |lab| show_path(bin, lab, &format!("{}:{KUBELET_PORT}", lab.node(1).underlay_ip)),
    )?;
    scenario(
        "23. path with the switch carrying 1400-byte frames (docs/field-cases.md case 6): where the black hole starts",
        |lab| lab.shrink_switch_mtu(1400),
        |lab| show_path(bin, lab, &pod_b(lab)),
    )
}

/// Agents on both nodes (2 s interval) with their node roots and the API stand-in.
fn start_agents(bin: &Netcheck, lab: &mut Lab, dirs: &mut Vec<TempDir>) -> Result<Vec<netlab::agent::Agent>> {
    let kubeconfig = lab.serve_api(1, &[Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(10, 244, 2, 10)])?;
    let mut agents = Vec::new();
    for n in [1u8, 2] {
        let root = TempDir::new(&format!("demo-agent-{}-{n}", lab.prefix));
        lab.write_host_root(n, &root, &kubeconfig)?;
        let host_root = root.path.display().to_string();
        let kc = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
        let addr = SocketAddr::new(lab.node(n).underlay_ip.into(), netlab::agent::AGENT_PORT);
        let global = ["--timeout", "2s", "--host-root", host_root.as_str(), "--kubeconfig", kc.as_str()];
        let name = lab.node(n).name();
        let args = ["--interval", "2s", "--node-name", name.as_str()];
        println!(
            "$ netcheck --netns {} {} agent --listen {addr} {}",
            lab.node(n).netns,
            global.join(" "),
            args.join(" ")
        );
        let mut agent = netlab::agent::Agent::start_binary(&bin.path, &lab.node(n).netns, addr, &global, &args, &[])?;
        agent.wait_ready(Duration::from_secs(30))?;
        agents.push(agent);
        dirs.push(root);
    }
    Ok(agents)
}

/// The agent's metrics an operator looks at first.
fn show_metrics(agent: &netlab::agent::Agent) -> Result<()> {
    println!("$ curl -s http://{}/metrics | grep -E 'checks|check_failing|path_problem|NETFILTER_DROP'", agent.addr);
    let (_, text) = agent.get("/metrics")?;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let wanted = [
            "netcheck_checks{probe=\"vxlan\"",
            "netcheck_checks{probe=\"kubelet\",peer=\"n",
            "netcheck_check_failing",
            "netcheck_path_problem",
            "NETFILTER_DROP",
        ];
        if wanted.iter().any(|w| line.contains(w)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn agent_scenarios(bin: &Netcheck) -> Result<()> {
    scenario(
        "24. the DaemonSet's agent: metrics while healthy, then UDP 8472 dropped on n2",
        |_| Ok(()),
        |lab| {
            let mut dirs = Vec::new();
            let agents = start_agents(bin, lab, &mut dirs)?;
            show_metrics(&agents[0])?;
            println!(
                "(iptables -I INPUT -i eth0 -p udp --dport 8472 -j DROP on n2; three intervals later: a change shows \
                 once two cycles running see it)"
            );
            lab.drop_vxlan(2)?;
            std::thread::sleep(Duration::from_secs(7));
            show_metrics(&agents[0])?;
            println!("(what the agent on n1 wrote to the API:)");
            for (request, body) in lab.api_writes.lock().map_err(|_| anyhow::anyhow!("api writes"))?.iter() {
                let what = if request.starts_with("PATCH") { &body["status"]["conditions"][0] } else { body };
                println!("{request}: {} {} {}", what["type"], what["reason"], what["message"]);
            }
            Ok(())
        },
    )?;
    scenario(
        "25. path on n1 without its own capture (as in a cluster), asking n2's agent what n2's kernel saw \
         (with the kubeconfig's token, which n2's agent has the API server review)",
        |_| Ok(()),
        |lab| {
            let mut dirs = Vec::new();
            let _agents = start_agents(bin, lab, &mut dirs)?;
            lab.drop_vxlan(2)?;
            let from = lab.pod("a").netns.clone();
            let kubeconfig = dirs[0].path.join("etc/kubernetes/kubelet.conf").display().to_string();
            let args =
                ["--no-capture", "--timeout", "2s", "--kubeconfig", &kubeconfig, "path", "--from", &from, &pod_b(lab)];
            show(bin, &lab.node(1).netns, &args)
        },
    )
}

fn pod_b(lab: &Lab) -> String {
    format!("{}:8080", lab.pod("b").ip)
}

/// One scenario on a lab of its own, removed afterwards.
fn scenario(
    title: &str,
    fault: impl FnOnce(&mut Lab) -> Result<()>,
    show: impl FnOnce(&mut Lab) -> Result<()>,
) -> Result<()> {
    println!("\n=== {title} ===");
    let mut lab = fresh_lab()?;
    fault(&mut lab)?;
    show(&mut lab)
}

/// `cargo xtask lab up`: the lab and its servers until Ctrl-C.
pub fn lab_up() -> Result<()> {
    if !netlab::is_root() {
        bail!("the lab builds network namespaces: run it as root");
    }
    let _ = netlab::clean_stale();
    let lab = fresh_lab()?;
    println!("lab {} is up:", lab.prefix);
    for ns in lab.namespaces() {
        println!("  {ns}");
    }
    for p in &lab.pods {
        println!("pod {} on n{}: {} (netns {})", p.name, p.node, p.ip, p.netns);
    }
    println!("servers: pod b 8080/tcp; on each node the HTTPS kubelet on 10250 and its healthz on 127.0.0.1:10248");
    println!(
        "DNS: kube-dns Service {} -> CoreDNS (dnsmasq) pods dns1 10.244.1.10, dns2 10.244.2.10 -> upstream {}",
        netlab::DNS_SERVICE_IP,
        netlab::UPSTREAM_DNS_IP
    );
    println!("a pod's resolv.conf: {}", Lab::pod_resolv_conf().trim().replace('\n', "; "));
    println!("try: netcheck --netns {} check tcp {}:8080", lab.pod("a").netns, lab.pod("b").ip);
    println!("Ctrl-C removes it.");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    let _ = rx.recv();
    drop(lab);
    println!("lab removed");
    Ok(())
}

fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = tx.send(());
    });
    Ok(())
}
