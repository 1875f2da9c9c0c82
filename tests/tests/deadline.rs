//! Acceptance 6 of the probe suite: every probe ends within `--timeout` (plus the process's own
//! start-up and the capture's load) when its target is black-holed: node n2 drops everything
//! forwarded to pod b, and UDP 8472 arriving on its underlay.

use std::time::{Duration, Instant};

use netlab::{Lab, TempDir, netcheck, require_root};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Process start, BTF parsing and program load (about 0.5 s here), and exit.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn every_probe_ends_within_its_deadline_on_a_black_hole() {
    if !require_root("every_probe_ends_within_its_deadline_on_a_black_hole") {
        return;
    }
    let _ = netlab::clean_stale();
    let lab = Lab::new().unwrap();
    let b = lab.pod("b").ip.to_string();
    lab.iptables(&lab.node(2).netns, &format!("-I FORWARD -d {b} -j DROP")).unwrap();
    lab.drop_vxlan(2).unwrap();
    let dir = TempDir::new(&format!("deadline-{}", lab.prefix));
    let conf = dir.write("resolv.conf", &format!("nameserver {b}\nsearch svc.cluster.local\noptions ndots:5\n"));
    let (a, n1) = (lab.pod("a").netns.clone(), lab.node(1).netns.clone());
    let peer = lab.node(2).underlay_ip.to_string();
    let (tcp, https) = (format!("{b}:8080"), format!("{b}:443"));
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("tcp", &a, vec!["check", "tcp", &tcp]),
        ("cert", &a, vec!["check", "cert", &https]),
        ("kubelet", &a, vec!["check", "kubelet", &b]),
        ("dns", &a, vec!["check", "dns", "kubernetes.default", "--resolv-conf", &conf, "--endpoint", &b]),
        ("mtu", &a, vec!["check", "mtu", &b]),
        ("vxlan", &n1, vec!["check", "vxlan", &peer]),
    ];
    let timeout = format!("{}s", TIMEOUT.as_secs());
    let mut report = Vec::new();
    for (probe, netns, args) in cases {
        let mut all = vec!["--timeout", timeout.as_str()];
        all.extend(args);
        let started = Instant::now();
        let r = netcheck::run_json_in(netns, &all).unwrap();
        let took = started.elapsed();
        report.push(format!("{probe}: {:.2} s, {}", took.as_secs_f64(), r.check()["cause"]));
        assert_eq!(r.code, 1, "{probe} must fail on a black hole: {r:?}");
        assert!(took < TIMEOUT + SLACK, "{probe} took {took:?} with --timeout {TIMEOUT:?}: {r:?}");
    }
    eprintln!("{}", report.join("\n"));
}
