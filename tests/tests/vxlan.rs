//! `netcheck check vxlan` on the lab: from node n1's namespace, an encapsulated echo to n2's
//! VTEP (10.244.2.0 behind 192.168.50.12:8472, VNI 1), answered through the overlay.

use netlab::{Lab, VNI, VXLAN_PORT, needs_root, netcheck};
use serde_json::Value;

fn lab() -> Lab {
    let _ = netlab::clean_stale();
    Lab::new().unwrap()
}

fn check(lab: &Lab, from: u8, to: u8) -> netcheck::Run {
    let peer = lab.node(to).underlay_ip.to_string();
    let vni = VNI.to_string();
    let r = netcheck::run_json_in(&lab.node(from).netns, &["--timeout", "2s", "check", "vxlan", &peer, "--vni", &vni])
        .unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&r.json).unwrap_or_default());
    r
}

fn data(r: &netcheck::Run) -> &Value {
    &r.check()["data"]["vxlan"]
}

/// Acceptance 3: healthy in both directions; the peer's VTEP is found through FDB and
/// neighbour entries.
#[test]
fn healthy_overlay_answers_both_ways() {
    needs_root("healthy_overlay_answers_both_ways");
    let lab = lab();
    for (from, to) in [(1, 2), (2, 1)] {
        let r = check(&lab, from, to);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.check()["status"], "pass");
        assert_eq!(r.check()["target"], format!("{}:{VXLAN_PORT}", lab.node(to).underlay_ip));
        assert_eq!(data(&r)["peer_vtep"], lab.node(to).flannel_ip().to_string());
        assert_eq!(data(&r)["peer_vtep_mac"], lab.node(to).vtep_mac);
        assert_eq!(data(&r)["vni"], VNI);
        assert!(r.evidence("drop").is_empty(), "{r:?}");
    }
}

/// Acceptance 3, docs/field-cases.md case 4: UDP 8472 dropped on the peer: no reply, and the kernel's
/// NETFILTER_DROP of the encapsulated echo on n2 is the evidence.
#[test]
fn vxlan_dropped_on_the_peer_is_no_reply_with_the_drop() {
    needs_root("vxlan_dropped_on_the_peer_is_no_reply_with_the_drop");
    let lab = lab();
    lab.drop_vxlan(2).unwrap();
    let r = check(&lab, 1, 2);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "vxlan_no_reply", "{r:?}");
    let drops = r.evidence("drop");
    let drop =
        drops.iter().find(|d| d["reason"] == "NETFILTER_DROP").unwrap_or_else(|| panic!("no NETFILTER_DROP: {r:?}"));
    assert_eq!(drop["netns"], lab.node(2).netns);
    assert_eq!(drop["flow"]["dst"], format!("{}:{VXLAN_PORT}", lab.node(2).underlay_ip));
    assert_eq!(drop["inner"]["proto"], "icmp");
    assert_eq!(drop["inner"]["dst"].as_str().unwrap().split(':').next(), Some("10.244.2.0"));
    assert!(r.check()["detail"].as_str().unwrap().contains("dropped by netfilter in netns"), "{r:?}");
    assert!(lab.rule_packets(&lab.node(2).netns, "filter", "INPUT").unwrap() > 0);
}

/// Acceptance 3: n1 lost its FDB entry for n2: misconfigured, named, nothing sent.
#[test]
fn missing_fdb_entry_is_misconfigured() {
    needs_root("missing_fdb_entry_is_misconfigured");
    let lab = lab();
    lab.delete_fdb(1, 2).unwrap();
    let r = check(&lab, 1, 2);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "vxlan_misconfigured", "{r:?}");
    let detail = r.check()["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("flannel.1 has no FDB entry for {}", lab.node(2).underlay_ip)), "{detail}");
    assert_eq!(data(&r)["probes"], 0);
    // From n2 the tables are complete and the echo reaches n1, but n1's reply has no FDB
    // entry to leave by: the kernel drops it there, on flannel.1 (NO_TX_TARGET on 6.x).
    let r = check(&lab, 2, 1);
    assert_eq!(r.check()["cause"], "vxlan_no_reply", "{r:?}");
    let drops = r.evidence("drop");
    assert!(drops.iter().any(|d| d["netns"] == lab.node(1).netns && d["device"] == "flannel.1"), "{r:?}");
}
