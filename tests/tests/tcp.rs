//! `netcheck check tcp` on the lab: real namespaces, real VXLAN, real iptables faults, the real
//! eBPF capture. Each test builds its own lab (unique names) and removes it when it ends.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netlab::{KUBELET_PORT, Lab, VXLAN_PORT, in_netns, kernel::Tracepoints, needs_root, netcheck, udp_flood};

fn lab() -> Lab {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().expect("lab");
    lab.start_servers().expect("servers");
    lab
}

fn target(ip: impl std::fmt::Display, port: u16) -> String {
    format!("{ip}:{port}")
}

fn tracepoints() -> Tracepoints {
    Tracepoints::running().expect("the kernel's tracepoint formats (tracefs)")
}

/// A netfilter drop: named by the kernel (5.17+), or by the program from the function that
/// freed it (nf_hook_slow) on kernels that pass no reason.
fn assert_netfilter_drop(drop: &serde_json::Value, tp: Tracepoints) {
    assert_eq!(drop["reason"], "NETFILTER_DROP", "{drop}");
    if !tp.drop_reason {
        assert!(drop["reason_note"].as_str().unwrap_or("").contains("nf_hook_slow"), "inferred, and says so: {drop}");
        assert!(drop["location"].as_str().unwrap_or("").starts_with("nf_hook_slow+0x"), "{drop}");
    }
}

/// The SYN to a port nothing listens on, dropped where the kernel found no socket: NO_SOCKET
/// (5.17+), or reason null with tcp_v4_rcv as its location and the note saying why.
fn assert_no_socket_drop(drop: &serde_json::Value, tp: Tracepoints) {
    if tp.drop_reason {
        assert_eq!(drop["reason"], "NO_SOCKET", "{drop}");
    } else {
        assert_eq!(drop["reason"], serde_json::Value::Null, "{drop}");
        assert!(drop["location"].as_str().unwrap_or("").starts_with("tcp_v4_rcv+0x"), "{drop}");
        let note = drop["reason_note"].as_str().unwrap_or("");
        assert!(note.contains("passes no drop reason") && note.contains("no socket"), "{drop}");
    }
}

/// Acceptance 1: healthy pod-to-pod TCP across nodes passes, with no drop evidence.
#[test]
fn healthy_cross_node_pod_to_pod_passes() {
    needs_root("healthy_cross_node_pod_to_pod_passes");
    let lab = lab();
    let r = netcheck::run_json_in(&lab.pod("a").netns, &["check", "tcp", &target(lab.pod("b").ip, 8080)]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "pass", "{r:?}");
    assert_eq!(r.check()["cause"], serde_json::Value::Null);
    assert_eq!(r.json["capture"]["available"], true, "capture must run as root: {r:?}");
    assert!(r.evidence("drop").is_empty(), "{r:?}");
    assert_eq!(r.json["summary"], serde_json::json!({"pass": 1, "warn": 0, "fail": 0, "skip": 0}), "{r:?}");
}

/// Acceptance 2: listener stopped: `refused`, with the RST the kernel sent attached.
#[test]
fn stopped_listener_is_refused_with_the_rst() {
    needs_root("stopped_listener_is_refused_with_the_rst");
    let mut lab = lab();
    lab.stop_servers_on(8080);
    let b = lab.pod("b").clone();
    let tp = tracepoints();
    let r = netcheck::run_json_in(&lab.pod("a").netns, &["check", "tcp", &target(b.ip, 8080)]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    assert!(r.check()["detail"].as_str().unwrap().contains("nothing listens there"), "{r:?}");
    let rsts = r.evidence("rst");
    let sent = rsts.iter().find(|e| e["direction"] == "sent");
    if tp.reset_reason {
        let sent = sent.unwrap_or_else(|| panic!("no RST sent: {r:?}"));
        assert_eq!(sent["netns"], b.netns.as_str(), "the RST comes from the destination pod");
        assert_eq!(sent["reason"], "NO_SOCKET");
        assert_eq!(sent["flow"]["dst"], target(b.ip, 8080));
    } else {
        // Before 6.10 the kernel does not trace a RST sent for a packet without a socket, and
        // the report says so; the SYN's drop in the destination pod shows it.
        assert!(sent.is_none(), "{r:?}");
        let limits = r.json["capture"]["limits"].as_array().unwrap();
        assert!(limits.iter().any(|l| l["feature"] == "no_socket_resets"), "{r:?}");
    }
    let drop = r.evidence("drop").into_iter().find(|e| e["netns"] == b.netns.as_str()).expect("the SYN's drop");
    assert_eq!(drop["flow"]["dst"], target(b.ip, 8080));
    assert_no_socket_drop(drop, tp);
    let received = rsts.iter().find(|e| e["direction"] == "received").unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(received["netns"], lab.pod("a").netns.as_str(), "the client's socket got the RST");
}

/// Acceptance 3: DROP on the destination node: `netfilter_drop` with the drop, its device and
/// namespace attached.
#[test]
fn drop_rule_on_destination_node_is_netfilter_drop() {
    needs_root("drop_rule_on_destination_node_is_netfilter_drop");
    let lab = lab();
    let b = lab.pod("b").clone();
    lab.drop_forwarded_tcp(2, b.ip, 8080).unwrap();
    let r =
        netcheck::run_json_in(&lab.pod("a").netns, &["--timeout", "2s", "check", "tcp", &target(b.ip, 8080)]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["status"], "fail");
    assert_eq!(r.check()["cause"], "netfilter_drop", "{r:?}");
    let drop = r.evidence("drop").into_iter().find(|e| e["reason"] == "NETFILTER_DROP").expect("drop evidence");
    assert_netfilter_drop(drop, tracepoints());
    assert_eq!(drop["netns"], lab.node(2).netns.as_str());
    // FORWARD sees the packet as it arrived: decapsulated on flannel.1.
    assert_eq!(drop["device"], "flannel.1");
    assert_eq!(drop["flow"]["dst"], target(b.ip, 8080));
    // The SYN and its one retransmission (the initial RTO is 1 s) before the 2 s deadline.
    assert_eq!(drop["count"], 2, "{drop}");
    // A black-holed target ends at the deadline.
    let ms = r.check()["duration_ms"].as_u64().unwrap();
    assert!((1900..2500).contains(&ms), "duration {ms} ms for a 2 s deadline");
}

/// No route from the pod: `no_route`, decided locally without sending anything.
#[test]
fn no_route_is_reported_as_such() {
    needs_root("no_route_is_reported_as_such");
    let lab = lab();
    let a = lab.pod("a").clone();
    netlab::run("ip", &["-n", &a.netns, "route", "del", "default"]).unwrap();
    let r = netcheck::run_json_in(&a.netns, &["check", "tcp", &target(lab.pod("b").ip, 8080)]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "no_route", "{r:?}");
    assert!(r.check()["evidence"].as_array().unwrap().is_empty());
}

/// Acceptance 4 (docs/field-cases.md case 1): REJECT icmp-host-prohibited on n1's INPUT for pod sources:
/// from a pod on n1 the kubelet is `unreachable` (with the NETFILTER_DROP), from n2's pod it passes.
#[test]
fn kubelet_rejected_for_pods_on_its_own_node_only() {
    needs_root("kubelet_rejected_for_pods_on_its_own_node_only");
    let lab = lab();
    lab.reject_pods_to_kubelet(1).unwrap();
    let kubelet = target(lab.node(1).underlay_ip, KUBELET_PORT);

    let r = netcheck::run_json_in(&lab.pod("a").netns, &["--timeout", "2s", "check", "tcp", &kubelet]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "unreachable", "{r:?}");
    let drop =
        r.evidence("drop").into_iter().find(|e| e["reason"] == "NETFILTER_DROP").expect("NETFILTER_DROP evidence");
    let tp = tracepoints();
    assert_netfilter_drop(drop, tp);
    assert_eq!(drop["netns"], lab.node(1).netns.as_str());
    let icmp = r.evidence("icmp");
    if tp.icmp_send {
        assert_eq!(icmp.first().map(|i| i["icmp_code"].clone()), Some(10.into()), "ICMP host-prohibited: {r:?}");
    } else {
        // No icmp_send tracepoint: no ICMP evidence, and the report says what is missing.
        assert!(icmp.is_empty(), "{r:?}");
        let limits = r.json["capture"]["limits"].as_array().unwrap();
        assert!(limits.iter().any(|l| l["feature"] == "icmp_errors"), "{r:?}");
        let detail = r.check()["detail"].as_str().unwrap();
        assert!(detail.contains("ICMP errors are not captured on this kernel"), "{detail}");
        assert!(detail.contains("dropped by netfilter"), "{detail}");
    }

    let r = netcheck::run_json_in(&lab.pod("b").netns, &["--timeout", "2s", "check", "tcp", &kubelet]).unwrap();
    assert_eq!(r.code, 0, "from the other node's pod (masqueraded to the node IP) it passes: {r:?}");
    assert_eq!(r.check()["status"], "pass");
}

/// Acceptance 5 (docs/field-cases.md case 4): VXLAN dropped on the peer: the evidence is the drop of the
/// encapsulated packet, outer UDP 8472 and inner flow = the probe's.
#[test]
fn vxlan_dropped_on_peer_names_the_encapsulated_packet() {
    needs_root("vxlan_dropped_on_peer_names_the_encapsulated_packet");
    let lab = lab();
    lab.drop_vxlan(2).unwrap();
    let (a, b) = (lab.pod("a").clone(), lab.pod("b").clone());
    let r = netcheck::run_json_in(&a.netns, &["--timeout", "2s", "check", "tcp", &target(b.ip, 8080)]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "netfilter_drop", "{r:?}");
    let drop = r
        .evidence("drop")
        .into_iter()
        .find(|e| e["inner"].is_object())
        .unwrap_or_else(|| panic!("no encapsulated drop: {r:?}"));
    assert_netfilter_drop(drop, tracepoints());
    assert_eq!(drop["netns"], lab.node(2).netns.as_str());
    assert_eq!(drop["device"], "eth0");
    assert_eq!(drop["flow"]["proto"], "udp");
    assert_eq!(drop["flow"]["dst"], target(lab.node(2).underlay_ip, VXLAN_PORT));
    assert_eq!(drop["inner"]["proto"], "tcp");
    assert_eq!(drop["inner"]["dst"], target(b.ip, 8080));
    assert!(drop["inner"]["src"].as_str().unwrap().starts_with(&format!("{}:", a.ip)));
    assert!(r.check()["detail"].as_str().unwrap().contains("VXLAN"), "{r:?}");
}

/// Acceptance 6: a flood of unrelated drops (same reason, same node, same device) during a
/// probe adds nothing to that probe's evidence.
#[test]
fn background_drops_are_not_attributed() {
    needs_root("background_drops_are_not_attributed");
    // The flood's drops reach every capture on the machine.
    let _machine = netlab::machine_wide("background_drops_are_not_attributed");
    let lab = lab();
    let (a, b, c) = (lab.pod("a").clone(), lab.pod("b").clone(), lab.pod("c").clone());
    lab.drop_forwarded_tcp(2, b.ip, 8080).unwrap();
    lab.iptables(&lab.node(2).netns, &format!("-I FORWARD -d {} -p udp --dport 9999 -j DROP", b.ip)).unwrap();
    let flood_ns = c.netns.clone();
    let flood = std::thread::spawn(move || {
        udp_flood(&flood_ns, SocketAddr::new(b.ip.into(), 9999), 200_000, Duration::from_secs(4)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = netcheck::run_json_in(&a.netns, &["--timeout", "2s", "check", "tcp", &target(b.ip, 8080)]).unwrap();
    let sent = flood.join().unwrap();
    let flood_drops = lab.rule_packets(&lab.node(2).netns, "filter", "FORWARD").unwrap();
    assert!(
        sent > 1000 && flood_drops > 1000,
        "the flood must really drop packets: sent {sent}, dropped {flood_drops}"
    );
    assert_eq!(r.check()["cause"], "netfilter_drop", "{r:?}");
    let evidence = r.check()["evidence"].as_array().unwrap();
    for e in evidence {
        assert_eq!(e["flow"]["proto"], "tcp", "unrelated event attributed: {e}");
        assert_eq!(e["flow"]["dst"], target(b.ip, 8080), "unrelated event attributed: {e}");
    }
    // Only the probe's SYN and its one retransmission, dropped on n2.
    assert_eq!(evidence.len(), 1, "{r:?}");
    assert_eq!(
        (evidence[0]["reason"].as_str(), evidence[0]["count"].as_u64()),
        (Some("NETFILTER_DROP"), Some(2)),
        "{r:?}"
    );
}

/// Acceptance 7: without privileges the probe still works, capture is reported unavailable
/// with the missing capabilities named, and the exit code is unaffected.
#[test]
fn unprivileged_run_still_probes_and_names_missing_capabilities() {
    needs_root("unprivileged_run_still_probes_and_names_missing_capabilities");
    let lab = lab();
    let copy = netcheck::UnprivilegedCopy::new();
    let target = target(lab.pod("b").ip, 8080);
    let out = netlab::unprivileged(&lab.pod("a").netns, &copy.path)
        .args(["-o", "json", "check", "tcp", &target])
        .output()
        .unwrap();
    let r = netcheck::Run::from_output(&out);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "pass");
    assert_eq!(r.json["capture"]["available"], false);
    assert_eq!(r.json["capture"]["missing"], serde_json::json!(["CAP_BPF", "CAP_PERFMON"]), "{r:?}");
    let detail = r.json["capture"]["detail"].as_str().unwrap();

    // The human output says it too, in the same words.
    let out = netlab::unprivileged(&lab.pod("a").netns, &copy.path).args(["check", "tcp", &target]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let said: Vec<&str> = text.lines().filter(|l| l.contains("capture")).collect();
    assert_eq!(said, [format!("capture unavailable: {detail}; probes ran without kernel evidence")], "{text}");
    assert!(detail.contains("CAP_BPF") && detail.contains("CAP_PERFMON"), "{detail}");
}

/// Acceptance 8: `netcheck capture` shows a live drop with its reason name within a second.
#[test]
fn capture_streams_a_live_drop_within_a_second() {
    needs_root("capture_streams_a_live_drop_within_a_second");
    // `netcheck capture` streams every drop on the machine: a flood elsewhere would delay it.
    let _machine = netlab::machine_wide("capture_streams_a_live_drop_within_a_second");
    let lab = lab();
    let b = lab.pod("b").clone();
    let mut child = Command::new(netcheck::binary().unwrap())
        .args(["-o", "json", "capture", "--duration", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it says so on stderr.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("capturing"), "{line}");

    // A SYN to a port nothing listens on in pod b: NO_SOCKET drop plus a RST.
    let dst = SocketAddr::new(b.ip.into(), 7);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let stdout = BufReader::new(child.stdout.take().unwrap());
        for l in stdout.lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v["kind"] == "drop" && v["flow"]["dst"] == dst.to_string() {
                let _ = tx.send((Instant::now(), v));
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    });
    let sent_at = Instant::now();
    let _ = in_netns(&lab.pod("a").netns, move || Ok(TcpStream::connect_timeout(&dst, Duration::from_secs(1))));
    let (seen_at, ev) = rx.recv_timeout(Duration::from_secs(10)).expect("drop not streamed");
    reader.join().unwrap();
    assert_no_socket_drop(&ev, tracepoints());
    assert_eq!(ev["netns"], b.netns.as_str());
    let latency = seen_at.duration_since(sent_at);
    assert!(latency < Duration::from_secs(1) * netlab::time_scale(), "seen after {latency:?}");
}
