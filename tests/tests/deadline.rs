//! Acceptance 6 of the probe suite: every probe ends within `--timeout` (plus the process's own
//! start-up and the capture's load) when its target is black-holed: node n2 drops everything
//! forwarded to pod b, and UDP 8472 arriving on its underlay. And not before: each waits what
//! it waits for nothing answering (most the whole `--timeout`).

use std::time::{Duration, Instant};

use netlab::{Lab, TempDir, needs_root, netcheck};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Process start, BTF parsing and program load (about 0.5 s here), and exit.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn every_probe_ends_within_its_deadline_on_a_black_hole() {
    needs_root("every_probe_ends_within_its_deadline_on_a_black_hole");
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
    // What each probe waits for, nothing answering: most wait out the deadline; the DNS
    // lookup gets half of it when rungs are asked too (they take the rest, so the run still
    // ends at the deadline); the MTU search stops when its first echo gets no answer in two
    // rounds of 500 ms (the path is unreachable: no MTU to measure).
    let full = TIMEOUT;
    let cases: Vec<(&str, &str, Vec<&str>, Duration, Duration)> = vec![
        ("tcp", &a, vec!["check", "tcp", &tcp], full, full),
        ("cert", &a, vec!["check", "cert", &https], full, full),
        ("kubelet", &a, vec!["check", "kubelet", &b], full, full),
        (
            "dns",
            &a,
            vec!["check", "dns", "kubernetes.default", "--resolv-conf", &conf, "--endpoint", &b],
            TIMEOUT / 2,
            full,
        ),
        ("mtu", &a, vec!["check", "mtu", &b], Duration::from_secs(1), Duration::from_secs(1)),
        ("vxlan", &n1, vec!["check", "vxlan", &peer], full, full),
    ];
    let timeout = format!("{}s", TIMEOUT.as_secs());
    let mut runs = Vec::new();
    for (probe, netns, args, waits, ends) in cases {
        let mut all = vec!["--timeout", timeout.as_str()];
        all.extend(args);
        let started = Instant::now();
        let r = netcheck::run_json_in(netns, &all).unwrap();
        runs.push((probe, started.elapsed(), r, waits, ends));
    }
    let report: Vec<String> = runs
        .iter()
        .map(|(probe, took, r, ..)| {
            format!(
                "{probe}: {:.2} s, probe {} ms, {}",
                took.as_secs_f64(),
                r.check()["duration_ms"],
                r.check()["cause"]
            )
        })
        .collect();
    eprintln!("{}", report.join("\n"));
    for (probe, took, r, waits, ends) in &runs {
        assert_eq!(r.code, 1, "{probe} must fail on a black hole: {r:?}");
        assert!(*took < TIMEOUT + SLACK, "{probe} took {took:?} with --timeout {TIMEOUT:?}: {r:?}");
        // Nothing answers a black hole, so nothing ends a probe before its wait: one that ended
        // early gave up on its own, or never waited.
        assert!(took >= ends, "{probe} ended after {took:?}, before {ends:?} (--timeout {TIMEOUT:?}): {r:?}");
        let ms = Duration::from_millis(r.check()["duration_ms"].as_u64().unwrap_or_else(|| panic!("{probe}: {r:?}")));
        assert!(
            *waits <= ms && ms < *waits + Duration::from_millis(250),
            "{probe}: the probe took {ms:?}, it waits {waits:?} (--timeout {TIMEOUT:?}): {r:?}"
        );
    }
}
