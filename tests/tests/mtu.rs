//! `netcheck check mtu` on the lab: pod a (MTU 1450, flannel's default) to pod b across the
//! VXLAN overlay.

use netlab::{Lab, OVERLAY_MTU, TempDir, needs_root, netcheck};
use serde_json::Value;

fn lab() -> Lab {
    let _ = netlab::clean_stale();
    Lab::new().unwrap()
}

fn check(lab: &Lab, subnet_env: Option<&str>) -> netcheck::Run {
    let b = lab.pod("b").ip.to_string();
    let mut args = vec!["--timeout", "3s", "check", "mtu", &b];
    if let Some(p) = subnet_env {
        args.extend(["--subnet-env", p]);
    }
    let r = netcheck::run_json_in(&lab.pod("a").netns, &args).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&r.json).unwrap_or_default());
    r
}

fn mtu(r: &netcheck::Run) -> &Value {
    &r.check()["data"]["mtu"]
}

/// Acceptance 2: a healthy path reports the overlay MTU, which matches flannel's subnet.env.
#[test]
fn healthy_path_reports_the_overlay_mtu() {
    needs_root("healthy_path_reports_the_overlay_mtu");
    let lab = lab();
    let dir = TempDir::new(&format!("mtu-{}", lab.prefix));
    let env = dir.write("subnet.env", &format!("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU={OVERLAY_MTU}\nFLANNEL_IPMASQ=true\n"));
    let r = check(&lab, Some(&env));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "pass");
    assert_eq!(mtu(&r)["path_mtu"], OVERLAY_MTU);
    assert_eq!(mtu(&r)["interface_mtu"], OVERLAY_MTU);
    assert_eq!(mtu(&r)["cni_mtu"], OVERLAY_MTU);
}

/// Whether a `ping -M do` of `size` bytes (IP packet) from `netns` gets an answer: the
/// independent check of the measured value.
fn ping_passes(netns: &str, dst: &str, size: u16) -> bool {
    let data = (size - 28).to_string();
    std::process::Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-n", "-q", "-M", "do", "-c", "2", "-i", "0.2", "-W", "1", "-s", &data, dst,
        ])
        .output()
        .expect("ping (iputils-ping; `cargo xtask setup` installs it)")
        .status
        .success()
}

/// Acceptance 2 and docs/field-cases.md case 6: the switch between the nodes carries smaller frames than
/// the nodes' uplinks and says nothing: a black hole, measured to the byte. tracepath, which
/// trusts ICMP, reports the interface's 1450 instead.
#[test]
fn shrunk_underlay_without_icmp_is_a_black_hole_exact_to_the_byte() {
    needs_root("shrunk_underlay_without_icmp_is_a_black_hole_exact_to_the_byte");
    let lab = lab();
    lab.shrink_switch_mtu(1400).unwrap();
    let r = check(&lab, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "mtu_blackhole", "{r:?}");
    // A veth accepts frames up to MTU + 14 (Ethernet) + 4 (room for a VLAN tag), so 1404-byte
    // outer packets pass the 1400 switch ports: 1404 - 50 bytes of VXLAN = 1354.
    assert_eq!(mtu(&r)["path_mtu"], 1354, "{r:?}");
    assert_eq!(mtu(&r)["exact"], true, "{r:?}");
    assert_eq!(mtu(&r)["signalled"], Value::Null, "{r:?}");
    // The kernel saw the oversized VXLAN packets dropped on n1's uplink.
    let drop = r.evidence("drop");
    assert!(drop.iter().any(|d| d["netns"] == lab.node(1).netns && d["inner"]["proto"] == "icmp"), "{r:?}");
    // Independently: ping with DF gets 1354 through and not 1355.
    let (a, b) = (&lab.pod("a").netns, lab.pod("b").ip.to_string());
    assert!(ping_passes(a, &b, 1354));
    assert!(!ping_passes(a, &b, 1355));
    // tracepath reports what the interface says, not what the path carries.
    let out = std::process::Command::new("timeout")
        .args(["60", "ip", "netns", "exec", a, "tracepath", "-n", "-m", "3", &b])
        .output()
        .expect("tracepath (iputils-tracepath; `cargo xtask setup` installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let pmtu: Vec<u32> =
        text.split("pmtu ").skip(1).filter_map(|rest| rest.split_whitespace().next()?.parse().ok()).collect();
    assert!(!pmtu.is_empty(), "tracepath printed no pmtu: {text}");
    assert!(pmtu.iter().all(|p| *p == OVERLAY_MTU), "tracepath: {text}");
}

/// Acceptance 2: n1's flannel.1 is smaller (1400) than pod a's interface (1450) and n1 says so
/// with ICMP fragmentation-needed: a smaller MTU, not a black hole.
#[test]
fn signalled_smaller_mtu_is_not_a_black_hole() {
    needs_root("signalled_smaller_mtu_is_not_a_black_hole");
    let lab = lab();
    lab.set_overlay_mtu(1, 1400).unwrap();
    let r = check(&lab, None);
    assert_eq!(r.code, 0, "a warning, not a failure: {r:?}");
    assert_eq!(r.check()["status"], "warn", "{r:?}");
    assert_eq!(r.check()["cause"], "mtu_mismatch", "{r:?}");
    assert_eq!(mtu(&r)["path_mtu"], 1400, "{r:?}");
    assert_eq!(mtu(&r)["signalled"]["mtu"], 1400, "{r:?}");
    assert_eq!(mtu(&r)["signalled"]["from"], lab.node(1).gateway().to_string(), "{r:?}");
}
