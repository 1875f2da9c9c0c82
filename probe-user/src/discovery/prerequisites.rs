//! The kernel settings a node's pod network stands on, read in the network namespace netcheck
//! runs in (procfs's `/proc/sys/net` and `/proc/net` are the reader's namespace): forwarding,
//! bridge netfilter, the reverse-path filter (asked of the kernel's own input route lookup),
//! the conntrack table's fill, and the iptables rules of both backends.

use std::{net::Ipv4Addr, time::Duration};

use super::{iptables, netlink};

/// What to ask the reverse-path filter: a packet from `source` arriving on `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub device: String,
    pub source: Ipv4Addr,
    /// Who sends from `source`, for the row ("a pod of this node", "peer n2's VTEP").
    pub sender: String,
}

/// What the node's plan knows of its devices.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The bridge pods sit on (`cni0`), when the CNI uses one and it exists.
    pub bridge: Option<String>,
    /// Packets the node receives: from its pods on the bridge, from peers over the overlay and
    /// the underlay.
    pub arrivals: Vec<Arrival>,
    /// Devices whose arrivals could not be named, and why (no peer known, ...).
    pub unknown: Vec<(String, String)>,
}

/// `net.bridge.bridge-nf-call-iptables` as the namespace has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeNetfilter {
    /// `/proc/sys/net/bridge` is absent: br_netfilter is not loaded.
    NotLoaded,
    CallIptables(u8),
    Unreadable(String),
}

/// The kernel's answer for one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpAnswer {
    Accepted,
    /// The input route lookup failed with EXDEV: the reverse path leaves by another device
    /// (`back_via`, when the output lookup names one).
    Dropped {
        back_via: Option<String>,
    },
    NotChecked(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpFilter {
    pub arrival: Arrival,
    /// The effective mode: the larger of `conf/all` and `conf/DEVICE` (Documentation/
    /// networking/ip-sysctl.rst, rp_filter).
    pub mode: Option<u8>,
    pub answer: RpAnswer,
}

/// The conntrack table: its fill and the per-CPU counters of `/proc/net/stat/nf_conntrack`,
/// summed over CPUs (cumulative since boot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conntrack {
    pub count: u64,
    pub max: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub insert_failed: u64,
}

#[derive(Debug, Clone)]
pub struct Readings {
    pub ip_forward: Result<u8, String>,
    /// With the bridge it concerns; `None` when pods sit on no bridge.
    pub bridge_netfilter: Option<(String, BridgeNetfilter)>,
    pub rp_filter: Vec<RpFilter>,
    pub unknown: Vec<(String, String)>,
    /// `None` when nf_conntrack is not loaded.
    pub conntrack: Result<Option<Conntrack>, String>,
    /// `net.ipv4.vs.conntrack` when IPVS holds virtual servers (kube-proxy's IPVS mode, told from
    /// `/proc/net/ip_vs`, which needs no capability); `None` otherwise.
    pub ipvs_conntrack: Option<Result<u8, String>>,
    pub iptables: iptables::Reading,
}

const SYS: &str = "/proc/sys/net";

fn read_u64(path: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.trim().parse().map_err(|e| format!("{path}: {e} ({:?})", text.trim()))
}

fn read_u8(path: &str) -> Result<u8, String> {
    read_u64(path).and_then(|v| u8::try_from(v).map_err(|e| format!("{path}: {e}")))
}

/// Reads everything of `spec` within `deadline` (the iptables tools and the route lookups).
pub async fn read(spec: &Spec, deadline: Duration) -> Readings {
    let bridge_netfilter = spec.bridge.as_ref().map(|b| (b.clone(), bridge_netfilter()));
    let (rp_filter, iptables) =
        tokio::join!(tokio::time::timeout(deadline, rp_filter(&spec.arrivals)), iptables::read(deadline));
    let rp_filter = rp_filter.unwrap_or_else(|_| {
        let why = format!("the route lookups took longer than {deadline:?}");
        spec.arrivals
            .iter()
            .map(|a| RpFilter { arrival: a.clone(), mode: None, answer: RpAnswer::NotChecked(why.clone()) })
            .collect()
    });
    Readings {
        ip_forward: read_u8(&format!("{SYS}/ipv4/ip_forward")),
        bridge_netfilter,
        rp_filter,
        unknown: spec.unknown.clone(),
        conntrack: conntrack(),
        ipvs_conntrack: ipvs_conntrack(),
        iptables,
    }
}

fn ipvs_conntrack() -> Option<Result<u8, String>> {
    match super::ipvs::read_proc() {
        Ok(Some(t)) if !t.services.is_empty() => Some(read_u8(&format!("{SYS}/ipv4/vs/conntrack"))),
        Ok(_) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

fn bridge_netfilter() -> BridgeNetfilter {
    let path = format!("{SYS}/bridge/bridge-nf-call-iptables");
    match std::fs::metadata(format!("{SYS}/bridge")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BridgeNetfilter::NotLoaded,
        _ => match read_u8(&path) {
            Ok(v) => BridgeNetfilter::CallIptables(v),
            Err(e) => BridgeNetfilter::Unreadable(e),
        },
    }
}

async fn rp_filter(arrivals: &[Arrival]) -> Vec<RpFilter> {
    let links = netlink::links().await.unwrap_or_default();
    let all = read_u8(&format!("{SYS}/ipv4/conf/all/rp_filter")).ok();
    let mut out = Vec::new();
    for arrival in arrivals {
        let dev = read_u8(&format!("{SYS}/ipv4/conf/{}/rp_filter", arrival.device)).ok();
        let mode = all.max(dev);
        let answer = match links.iter().find(|l| l.name == arrival.device) {
            None => RpAnswer::NotChecked(format!("no device {} in this namespace", arrival.device)),
            Some(link) => match link.addresses.first() {
                None => RpAnswer::NotChecked(format!("{} has no IPv4 address to receive on", arrival.device)),
                // The kernel's own check: an input route lookup for a packet to the device's
                // address, from the source, arriving on the device, runs fib_validate_source
                // (net/ipv4/route.c, ip_route_input_slow). Where the filter drops, it fails with
                // EXDEV up to 6.12 and EINVAL since the drop-reason rework (6.13,
                // inet_rtm_getroute maps any drop reason to -EINVAL); the route back tells the
                // filter apart from another martian.
                Some((local, _)) => {
                    let asked = netlink::route_get((*local).into(), Some((arrival.source.into(), link.index))).await;
                    match asked {
                        Ok(_) => RpAnswer::Accepted,
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EINVAL)) => {
                            let back = netlink::route_get(arrival.source.into(), None).await.ok();
                            let back_oif = back.and_then(|r| r.oif);
                            let back_via =
                                back_oif.and_then(|i| links.iter().find(|l| l.index == i)).map(|l| l.name.clone());
                            let reverse_path = match mode {
                                Some(1) => back_oif != Some(link.index),
                                Some(2) => back_oif.is_none(),
                                _ => false,
                            };
                            if reverse_path {
                                RpAnswer::Dropped { back_via }
                            } else {
                                RpAnswer::NotChecked(format!("the kernel refuses packets from this source: {e}"))
                            }
                        }
                        Err(e) => RpAnswer::NotChecked(format!("the kernel's route lookup failed: {e}")),
                    }
                }
            },
        };
        out.push(RpFilter { arrival: arrival.clone(), mode, answer });
    }
    out
}

/// The table's fill; `None` when nf_conntrack is not loaded (no table).
fn conntrack() -> Result<Option<Conntrack>, String> {
    let count_path = format!("{SYS}/netfilter/nf_conntrack_count");
    if !std::path::Path::new(&count_path).exists() {
        return Ok(None);
    }
    let mut ct = Conntrack {
        count: read_u64(&count_path)?,
        max: read_u64(&format!("{SYS}/netfilter/nf_conntrack_max"))?,
        ..Conntrack::default()
    };
    // Readable by everyone (net/netfilter/nf_conntrack_standalone.c); its columns differ
    // between kernels, so they are found by the header's names.
    if let Ok(stat) = std::fs::read_to_string("/proc/net/stat/nf_conntrack") {
        let sums = per_cpu_sums(&stat);
        ct.drop = sums.iter().find(|(n, _)| n == "drop").map_or(0, |s| s.1);
        ct.early_drop = sums.iter().find(|(n, _)| n == "early_drop").map_or(0, |s| s.1);
        ct.insert_failed = sums.iter().find(|(n, _)| n == "insert_failed").map_or(0, |s| s.1);
    }
    Ok(Some(ct))
}

/// Each column of `/proc/net/stat/nf_conntrack` summed over its per-CPU lines (hexadecimal).
pub fn per_cpu_sums(stat: &str) -> Vec<(String, u64)> {
    let mut lines = stat.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let mut sums: Vec<(String, u64)> = header.split_whitespace().map(|n| (n.to_string(), 0)).collect();
    for line in lines {
        for (i, value) in line.split_whitespace().enumerate() {
            if let (Some(sum), Ok(v)) = (sums.get_mut(i), u64::from_str_radix(value, 16)) {
                sum.1 = sum.1.saturating_add(v);
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_counters_are_summed_by_name() {
        // 6.18's columns, two CPUs (hexadecimal, as the kernel prints them).
        let stat = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000002a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000003 0000000a 00000001 00000000  00000000 00000000 00000000 00000000
0000002a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000010 00000000 00000000  00000000 00000000 00000000 00000000
";
        let sums = per_cpu_sums(stat);
        let get = |n: &str| sums.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!((get("insert_failed"), get("drop"), get("early_drop")), (4, 26, 1));
        assert!(per_cpu_sums("").is_empty());
    }
}
