//! `node`'s netfilter prerequisites: each a row, failed in the words the tool that checks it
//! prints (kubeadm's preflight for forwarding and bridge netfilter, the kernel's log for a full
//! conntrack table), with what it breaks for pods and Services.

use std::{fmt::Write as _, net::Ipv4Addr};

use super::{Cause, Check, Probe, Verdict};
use crate::discovery::{
    iptables::{Backend, ReadError, Reading, Ruleset, Table},
    prerequisites::{BridgeNetfilter, Conntrack, Readings, RpAnswer, RpFilter},
};

/// Every row, in a fixed order; `pods` is this node's pod subnet when known (the FORWARD rules
/// are judged against it).
pub fn verdicts(r: &Readings, pods: Option<(Ipv4Addr, u8)>) -> Vec<Check> {
    let mut out = vec![ip_forward(&r.ip_forward)];
    if let Some((bridge, state)) = &r.bridge_netfilter {
        out.push(bridge_netfilter(bridge, state));
    }
    out.extend(r.rp_filter.iter().map(rp_filter));
    out.extend(r.unknown.iter().map(|(device, why)| {
        Check::file(Probe::Sysctl, format!("rp_filter {device}"), Verdict::skip(format!("not checked: {why}")))
    }));
    out.push(conntrack(&r.conntrack));
    if let Some(value) = &r.ipvs_conntrack {
        out.push(ipvs_conntrack(value));
    }
    out.extend(iptables(&r.iptables, pods));
    out
}

const PREFLIGHT: &str = "kubeadm's preflight";

fn ip_forward(value: &Result<u8, String>) -> Check {
    let target = "net.ipv4.ip_forward".to_string();
    let verdict = match value {
        Ok(1) => Verdict::pass("1: the node forwards its pods' packets"),
        Ok(v) => Verdict::fail(
            Cause::IpForwardOff,
            format!(
                "{v}: [ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are \
                 not set to 1 ({PREFLIGHT}): the kernel answers pods' packets for other nodes and for Services' \
                 endpoints elsewhere with ICMP host unreachable instead of forwarding them"
            ),
        ),
        Err(e) => Verdict::skip(format!("not checked: {e}")),
    };
    Check::file(Probe::Sysctl, target, verdict)
}

/// Only in IPVS mode: kube-proxy's IPVS proxier sets it at start (`sysctlVSConnTrack`, k/k
/// pkg/proxy/ipvs/proxier.go); IPVS skips netfilter's conntrack for its connections without it
/// (`ip_vs_nfct.c`), so no MASQUERADE applies to them.
fn ipvs_conntrack(value: &Result<u8, String>) -> Check {
    let target = "net.ipv4.vs.conntrack".to_string();
    let verdict = match value {
        Ok(1) => Verdict::pass("1: netfilter tracks what IPVS NATs, so kube-proxy's masquerade applies"),
        Ok(v) => Verdict::fail(
            Cause::IpvsConntrackOff,
            format!(
                "{v}, with IPVS virtual servers (kube-proxy's IPVS mode, which sets it to 1 when it starts): \
                 netfilter does not track what IPVS NATs, so KUBE-POSTROUTING's masquerade never applies and the \
                 node's own connections to Service IPs and NodePort traffic from other hosts get no answer"
            ),
        ),
        Err(e) => Verdict::skip(format!("not checked: {e}")),
    };
    Check::file(Probe::Sysctl, target, verdict)
}

fn bridge_netfilter(bridge: &str, state: &BridgeNetfilter) -> Check {
    let target = format!("net.bridge.bridge-nf-call-iptables ({bridge})");
    let effect = format!(
        "frames between pods on {bridge} skip iptables, so a Service's reply from a pod on this node's bridge is \
         not un-NATed and the client pod drops it (a Service works from other nodes only)"
    );
    let file = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let verdict = match state {
        BridgeNetfilter::CallIptables(1) => Verdict::pass(format!("1: frames bridged on {bridge} pass iptables")),
        BridgeNetfilter::CallIptables(v) => Verdict::fail(
            Cause::BridgeNetfilterOff,
            format!(
                "{v}: [ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: {file} contents are not set \
                 to 1 ({PREFLIGHT} before 1.30): {effect}"
            ),
        ),
        BridgeNetfilter::NotLoaded => Verdict::fail(
            Cause::BridgeNetfilterOff,
            format!(
                "br_netfilter is not loaded: [ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: {file} \
                 does not exist ({PREFLIGHT} before 1.30): {effect}; `modprobe br_netfilter` and list it in \
                 /etc/modules-load.d"
            ),
        ),
        BridgeNetfilter::Unreadable(e) => Verdict::skip(format!("not checked: {e}")),
    };
    Check::file(Probe::Sysctl, target, verdict)
}

fn mode_name(mode: Option<u8>) -> String {
    match mode {
        Some(0) => "0 (off)".into(),
        Some(1) => "1 (strict)".into(),
        Some(2) => "2 (loose)".into(),
        Some(v) => v.to_string(),
        None => "unknown".into(),
    }
}

fn rp_filter(r: &RpFilter) -> Check {
    let a = &r.arrival;
    let target = format!("rp_filter {}", a.device);
    let mode = mode_name(r.mode);
    let verdict = match &r.answer {
        RpAnswer::Accepted => Verdict::pass(format!(
            "{mode}: the kernel accepts packets from {} ({}) on {}",
            a.source, a.sender, a.device
        )),
        RpAnswer::Dropped { back_via } => {
            let back = back_via.as_deref().map_or_else(
                || format!("the kernel has no route back to {} by {}", a.source, a.device),
                |d| format!("the kernel's route back to {} leaves by {d}, not {}", a.source, a.device),
            );
            Verdict::fail(
                Cause::RpFilterDrop,
                format!(
                    "{mode}: the reverse-path filter drops packets from {} ({}) arriving on {}: {back} (the \
                     effective mode is the larger of net.ipv4.conf.all.rp_filter and net.ipv4.conf.{}.rp_filter; \
                     2, loose, accepts asymmetric paths)",
                    a.source, a.sender, a.device, a.device
                ),
            )
        }
        RpAnswer::NotChecked(why) => Verdict::skip(format!("{mode}: not checked: {why}")),
    };
    Check::file(Probe::Sysctl, target, verdict)
}

/// The fill at which the row warns: kube-proxy sizes the table for its node, so a table this
/// full is one burst from dropping.
const CONNTRACK_WARN_PERCENT: u64 = 90;

fn conntrack(reading: &Result<Option<Conntrack>, String>) -> Check {
    let target = "nf_conntrack".to_string();
    let verdict = match reading {
        Err(e) => Verdict::skip(format!("not checked: {e}")),
        Ok(None) => Verdict::pass("nf_conntrack is not loaded: nothing is tracked, no table to fill"),
        Ok(Some(ct)) => {
            let percent = ct.count.saturating_mul(100).checked_div(ct.max).unwrap_or(100);
            let mut d = format!("{} of {} entries ({percent}%)", ct.count, ct.max);
            let counters: Vec<String> = [
                (ct.drop, "packets dropped for want of an entry"),
                (ct.early_drop, "entries evicted early"),
                (ct.insert_failed, "inserts failed (races of parallel packets, often UDP DNS)"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            if !counters.is_empty() {
                let _ = write!(d, "; since boot: {}", counters.join(", "));
            }
            if ct.max > 0 && ct.count >= ct.max {
                Verdict::fail(
                    Cause::ConntrackFull,
                    format!(
                        "{d}: the table is full; new connections are dropped and the kernel logs \"nf_conntrack: \
                         table full, dropping packet\" (raise net.netfilter.nf_conntrack_max, kube-proxy's \
                         conntrack.maxPerCore)"
                    ),
                )
            } else if percent >= CONNTRACK_WARN_PERCENT {
                Verdict::warn(Cause::ConntrackFull, format!("{d}: the table is nearly full"))
            } else {
                Verdict::pass(d)
            }
        }
    };
    Check::file(Probe::Conntrack, target, verdict)
}

fn iptables(reading: &Reading, pods: Option<(Ipv4Addr, u8)>) -> Vec<Check> {
    if let (Err(ReadError::NoCapability), Err(ReadError::NoCapability)) = (&reading.nft, &reading.legacy) {
        let skip = Verdict::skip(format!("not checked: {}", ReadError::NoCapability));
        return vec![Check::file(Probe::Iptables, "filter FORWARD".into(), skip)];
    }
    let mut out = Vec::new();
    for (backend, set, other) in
        [(Backend::Nft, &reading.nft, &reading.legacy), (Backend::Legacy, &reading.legacy, &reading.nft)]
    {
        let target = format!("filter FORWARD ({})", backend.tool());
        let verdict = match set {
            Err(e) => Verdict::skip(format!("not checked: {e}")),
            Ok(set) => forward(set, other.as_ref().ok(), backend, pods),
        };
        out.push(Check::file(Probe::Iptables, target, verdict));
    }
    out.push(Check::file(Probe::Iptables, "backends".into(), backends(reading)));
    out
}

/// A CIDR of a rule (`10.244.0.0/16`, or an address alone) that holds all of `pods`.
fn covers(cidr: &str, pods: (Ipv4Addr, u8)) -> bool {
    let (ip, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u8>()) else { return false };
    if len > pods.1 || len > 32 {
        return false;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    u32::from(ip) & mask == u32::from(pods.0) & mask
}

/// Which directions of pod traffic the chain accepts before anything drops it: (from pods, to
/// pods), with the rule that accepted each.
fn accepts(table: &Table, chain: &str, pods: (Ipv4Addr, u8), depth: u8) -> (Option<String>, Option<String>) {
    let (mut from, mut to) = (None, None);
    let Some(walked) = table.chain(chain) else { return (None, None) };
    for rule in &walked.rules {
        let shown = || format!("-A {chain} {}", rule.args.join(" "));
        let Some(target) = rule.target() else { continue };
        let others = rule.other_matches(&["-s", "-d"]);
        if !others.is_empty() {
            continue;
        }
        let (src, dst) = (rule.value("-s"), rule.value("-d"));
        let any = src.is_none() && dst.is_none();
        match target {
            "ACCEPT" => {
                if from.is_none() && (any || (dst.is_none() && src.is_some_and(|c| covers(c, pods)))) {
                    from = Some(shown());
                }
                if to.is_none() && (any || (src.is_none() && dst.is_some_and(|c| covers(c, pods)))) {
                    to = Some(shown());
                }
            }
            "DROP" | "REJECT" if any => break,
            user if depth < 8 && any && table.chain(user).is_some() => {
                let (f, t) = accepts(table, user, pods, depth + 1);
                from = from.or(f);
                to = to.or(t);
            }
            _ => {}
        }
        if from.is_some() && to.is_some() {
            break;
        }
    }
    (from, to)
}

fn forward(set: &Ruleset, other: Option<&Ruleset>, backend: Backend, pods: Option<(Ipv4Addr, u8)>) -> Verdict {
    let Some(filter) = set.table("filter") else {
        return Verdict::pass("no filter table: nothing here filters forwarded packets");
    };
    let policy = filter.chain("FORWARD").and_then(|c| c.policy.as_deref()).unwrap_or("ACCEPT");
    if policy != "DROP" {
        return Verdict::pass(format!("policy {policy}"));
    }
    let Some(pods) = pods else {
        return Verdict::warn(
            Cause::ForwardDrop,
            "policy DROP, and this node's pod subnet is unknown (no subnet.env, no bridge address): its accept rules \
             were not judged",
        );
    };
    let subnet = format!("{}/{}", pods.0, pods.1);
    match accepts(filter, "FORWARD", pods, 0) {
        (Some(from), Some(to)) => {
            let rules = if from == to { from } else { format!("{from}; {to}") };
            Verdict::pass(format!("policy DROP; {subnet} accepted both ways: {rules}"))
        }
        (from, to) => {
            let missing = match (from, to) {
                (None, None) => "either way",
                (None, Some(_)) => "from pods",
                _ => "to pods",
            };
            let mut d = format!(
                "policy DROP and no rule accepts this node's pods ({subnet}) {missing}: the kernel drops what pods send \
                 to other nodes and what reaches them from there (NETFILTER_DROP at FORWARD); the CNI's accept rules \
                 (flanneld's FLANNEL-FWD, -s and -d of the pod network) are missing"
            );
            if let Some(other_filter) = other.and_then(|o| o.table("filter"))
                && let (Some(_), Some(_)) = accepts(other_filter, "FORWARD", pods, 0)
            {
                let other_tool = if backend == Backend::Nft { Backend::Legacy } else { Backend::Nft }.tool();
                let _ = write!(
                    d,
                    "; they are in {other_tool}, but a packet must pass both backends' FORWARD chains and this one's \
                     policy drops it"
                );
            }
            Verdict::fail(Cause::ForwardDrop, d)
        }
    }
}

/// Where kubelet (1.24+) marks the backend it uses (kubernetes-sigs/iptables-wrappers reads it).
const HINT: &str = "KUBE-IPTABLES-HINT";

fn backends(reading: &Reading) -> Verdict {
    let describe = |set: &Ruleset| {
        let used = |t: &&Table| {
            t.chains.iter().any(|c| !c.rules.is_empty() || c.policy.as_deref().is_some_and(|p| p != "ACCEPT"))
        };
        let tables: Vec<&str> = set.tables.iter().filter(used).map(|t| t.name.as_str()).collect();
        let n = set.rule_count();
        format!("{n} rule{} (tables {})", if n == 1 { "" } else { "s" }, tables.join(", "))
    };
    let hinted = |set: &Ruleset| set.table("mangle").and_then(|t| t.chain(HINT)).is_some();
    match (&reading.nft, &reading.legacy) {
        (Ok(nft), Ok(legacy)) if !nft.is_empty() && !legacy.is_empty() => {
            let hint = match (hinted(nft), hinted(legacy)) {
                (true, false) => format!("; the kubelet uses iptables-nft ({HINT} in its mangle table)"),
                (false, true) => format!("; the kubelet uses iptables-legacy ({HINT} in its mangle table)"),
                _ => String::new(),
            };
            Verdict::warn(
                Cause::IptablesMixed,
                format!(
                    "rules in both backends: iptables-nft holds {}, iptables-legacy {}{hint}: the kernel applies both, \
                     while `iptables` shows one; a component on the other backend (a CNI, Docker, a firewall) adds \
                     rules nobody sees",
                    describe(nft),
                    describe(legacy)
                ),
            )
        }
        (Ok(nft), Ok(legacy)) if legacy.is_empty() && !nft.is_empty() => {
            Verdict::pass(format!("iptables-nft only: {}", describe(nft)))
        }
        (Ok(nft), Ok(legacy)) if nft.is_empty() && !legacy.is_empty() => {
            Verdict::pass(format!("iptables-legacy only: {}", describe(legacy)))
        }
        (Ok(_), Ok(_)) => Verdict::pass("no rules in either backend"),
        (Err(e), _) | (_, Err(e)) => Verdict::skip(format!("not checked: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{iptables::parse, prerequisites::Arrival};
    use crate::verdict::Status;

    const PODS: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 1, 0), 24);

    fn reading(nft: &str, legacy: &str) -> Reading {
        Reading { nft: Ok(parse(nft).unwrap()), legacy: Ok(parse(legacy).unwrap()) }
    }

    fn healthy() -> Readings {
        Readings {
            ip_forward: Ok(1),
            bridge_netfilter: Some(("cni0".into(), BridgeNetfilter::CallIptables(1))),
            rp_filter: vec![RpFilter {
                arrival: Arrival {
                    device: "eth0".into(),
                    source: Ipv4Addr::new(192, 168, 50, 12),
                    sender: "peer n2".into(),
                },
                mode: Some(1),
                answer: RpAnswer::Accepted,
            }],
            unknown: Vec::new(),
            conntrack: Ok(Some(Conntrack { count: 120, max: 262_144, ..Conntrack::default() })),
            ipvs_conntrack: None,
            iptables: reading(FLANNEL, ""),
        }
    }

    const FLANNEL: &str = "*filter\n:FORWARD DROP [0:0]\n:FLANNEL-FWD - [0:0]\n\
        -A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
        -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
        -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\nCOMMIT\n";

    fn by_target<'a>(checks: &'a [Check], target: &str) -> &'a Check {
        checks.iter().find(|c| c.target == target).unwrap_or_else(|| panic!("no {target} in {checks:?}"))
    }

    #[test]
    fn a_healthy_node_passes_every_row() {
        let checks = verdicts(&healthy(), Some(PODS));
        let rows: Vec<(&str, Status)> = checks.iter().map(|c| (c.target.as_str(), c.status)).collect();
        assert_eq!(
            rows,
            [
                ("net.ipv4.ip_forward", Status::Pass),
                ("net.bridge.bridge-nf-call-iptables (cni0)", Status::Pass),
                ("rp_filter eth0", Status::Pass),
                ("nf_conntrack", Status::Pass),
                ("filter FORWARD (iptables-nft)", Status::Pass),
                ("filter FORWARD (iptables-legacy)", Status::Pass),
                ("backends", Status::Pass),
            ]
        );
        assert_eq!(by_target(&checks, "nf_conntrack").detail, "120 of 262144 entries (0%)");
        assert_eq!(
            by_target(&checks, "filter FORWARD (iptables-nft)").detail,
            "policy DROP; 10.244.1.0/24 accepted both ways: -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \
             flanneld forward -j ACCEPT; -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT"
        );
    }

    #[test]
    fn each_broken_prerequisite_fails_alone() {
        let failing = |r: &Readings| -> Vec<(String, Option<Cause>)> {
            verdicts(r, Some(PODS))
                .into_iter()
                .filter(|c| c.status != Status::Pass)
                .map(|c| (c.target, c.cause))
                .collect()
        };
        let mut r = healthy();
        r.ip_forward = Ok(0);
        assert_eq!(failing(&r), [("net.ipv4.ip_forward".into(), Some(Cause::IpForwardOff))]);
        let mut r = healthy();
        r.bridge_netfilter = Some(("cni0".into(), BridgeNetfilter::NotLoaded));
        assert_eq!(
            failing(&r),
            [("net.bridge.bridge-nf-call-iptables (cni0)".into(), Some(Cause::BridgeNetfilterOff))]
        );
        let mut r = healthy();
        r.rp_filter[0].answer = RpAnswer::Dropped { back_via: Some("nc-alt".into()) };
        assert_eq!(failing(&r), [("rp_filter eth0".into(), Some(Cause::RpFilterDrop))]);
        let d = &verdicts(&r, Some(PODS))[2].detail;
        assert!(d.contains("the kernel's route back to 192.168.50.12 leaves by nc-alt, not eth0"), "{d}");
        let mut r = healthy();
        r.conntrack = Ok(Some(Conntrack { count: 65_536, max: 65_536, drop: 12, ..Conntrack::default() }));
        assert_eq!(failing(&r), [("nf_conntrack".into(), Some(Cause::ConntrackFull))]);
        let d = &verdicts(&r, Some(PODS))[3].detail;
        assert!(d.starts_with("65536 of 65536 entries (100%); since boot: 12 packets dropped"), "{d}");
        let mut r = healthy();
        r.iptables = reading("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n", "");
        assert_eq!(failing(&r), [("filter FORWARD (iptables-nft)".into(), Some(Cause::ForwardDrop))]);
        // IPVS mode: its row only there, failing alone when the sysctl is 0.
        let mut r = healthy();
        r.ipvs_conntrack = Some(Ok(1));
        assert!(failing(&r).is_empty());
        assert!(verdicts(&r, Some(PODS)).iter().any(|c| c.target == "net.ipv4.vs.conntrack"));
        r.ipvs_conntrack = Some(Ok(0));
        assert_eq!(failing(&r), [("net.ipv4.vs.conntrack".into(), Some(Cause::IpvsConntrackOff))]);
    }

    #[test]
    fn a_drop_policy_in_the_other_backend_fails_that_backend() {
        // Docker on iptables-legacy set FORWARD to DROP; flannel's accept rules are in nft.
        let mut r = healthy();
        r.iptables =
            reading(FLANNEL, "*filter\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n");
        let checks = verdicts(&r, Some(PODS));
        let legacy = by_target(&checks, "filter FORWARD (iptables-legacy)");
        assert_eq!((legacy.status, legacy.cause), (Status::Fail, Some(Cause::ForwardDrop)));
        assert!(legacy.detail.contains("either way"), "{}", legacy.detail);
        assert!(legacy.detail.contains("they are in iptables-nft, but a packet must pass both"), "{}", legacy.detail);
        let mixed = by_target(&checks, "backends");
        assert_eq!((mixed.status, mixed.cause), (Status::Warn, Some(Cause::IptablesMixed)));
        assert_eq!(by_target(&checks, "filter FORWARD (iptables-nft)").status, Status::Pass);
    }

    #[test]
    fn accept_rules_must_cover_the_pods_and_come_before_a_drop() {
        let judge = |rules: &str| {
            let set = parse(&format!("*filter\n:FORWARD DROP [0:0]\n{rules}COMMIT\n")).unwrap();
            let v = forward(&set, None, Backend::Nft, Some(PODS));
            (v.status, v.detail)
        };
        // Another node's subnet only, or an interface-bound rule: not this node's pods.
        let (s, d) = judge("-A FORWARD -s 10.244.2.0/24 -j ACCEPT\n-A FORWARD -d 10.244.0.0/16 -j ACCEPT\n");
        assert_eq!(s, Status::Fail);
        assert!(d.contains("10.244.1.0/24) from pods"), "{d}");
        let (s, _) = judge("-A FORWARD -i cni0 -j ACCEPT\n-A FORWARD -o cni0 -j ACCEPT\n");
        assert_eq!(s, Status::Fail, "an interface match is not judged as covering the pods");
        let (s, _) =
            judge("-A FORWARD -j DROP\n-A FORWARD -s 10.244.0.0/16 -j ACCEPT\n-A FORWARD -d 10.244.0.0/16 -j ACCEPT\n");
        assert_eq!(s, Status::Fail, "accept rules after an unconditional drop are never reached");
        let (s, _) = judge("-A FORWARD -j ACCEPT\n");
        assert_eq!(s, Status::Pass);
        assert!(covers("10.244.1.0/24", PODS) && covers("0.0.0.0/0", PODS) && !covers("10.244.1.0/25", PODS));
        assert!(!covers("not-a-cidr", PODS) && !covers("10.244.1.7", PODS));
    }

    #[test]
    fn without_net_admin_the_iptables_row_names_it() {
        let mut r = healthy();
        r.iptables = Reading { nft: Err(ReadError::NoCapability), legacy: Err(ReadError::NoCapability) };
        let checks = verdicts(&r, Some(PODS));
        let row = by_target(&checks, "filter FORWARD");
        assert_eq!(row.status, Status::Skip);
        assert_eq!(row.detail, "not checked: reading iptables rules needs CAP_NET_ADMIN, which this process lacks");
    }
}
