//! The probe suite without privileges (an unprivileged `kubectl debug node` pod): what needs
//! nothing runs, what needs a capability is skipped naming it, and nothing fails for it.

use netlab::{Lab, TempDir, needs_root, netcheck::UnprivilegedCopy};

#[test]
fn probes_run_or_name_the_capability_they_lack() {
    needs_root("probes_run_or_name_the_capability_they_lack");
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_dns().unwrap();
    let copy = UnprivilegedCopy::new();
    let dir = TempDir::new(&format!("unpriv-{}", lab.prefix));
    let conf = dir.write("resolv.conf", &Lab::pod_resolv_conf());
    let a = lab.pod("a").netns.clone();

    // DNS needs nothing.
    let r = copy.run_json_in(&a, &["check", "dns", "kubernetes.default", "--resolv-conf", &conf]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "pass", "{r:?}");
    assert_eq!(r.json["capture"]["available"], false);

    // The path MTU needs a raw ICMP socket.
    let b = lab.pod("b").ip.to_string();
    let r = copy.run_json_in(&a, &["check", "mtu", &b]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "skip", "{r:?}");
    assert!(r.check()["detail"].as_str().unwrap().contains("CAP_NET_RAW"), "{r:?}");

    // VXLAN: the tables are read (netlink needs nothing), the echo's reply needs CAP_NET_RAW.
    let peer = lab.node(2).underlay_ip.to_string();
    let r = copy.run_json_in(&lab.node(1).netns, &["check", "vxlan", &peer]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "skip", "{r:?}");
    assert!(r.check()["detail"].as_str().unwrap().contains("CAP_NET_RAW"), "{r:?}");
    assert_eq!(r.check()["data"]["vxlan"]["peer_vtep"], lab.node(2).flannel_ip().to_string(), "{r:?}");

    // A broken table is still found without privileges.
    lab.delete_fdb(1, 2).unwrap();
    let r = copy.run_json_in(&lab.node(1).netns, &["check", "vxlan", &peer]);
    assert_eq!(r.check()["cause"], "vxlan_misconfigured", "{r:?}");
}
