//! VXLAN verdicts: the local tables that must point at the peer, and whether the peer's VTEP
//! answered through the tunnel; when it did not, the kernel's drops say where the packets died.

use std::{fmt::Write as _, net::Ipv4Addr};

use serde::Serialize;

use super::{Cause, Check, Data, Evidence, Probe, Verdict, describe_drop, drops};
use crate::{
    discovery::netlink::format_mac,
    probes::vxlan::{Outcome, Report},
};

/// `data.vxlan` of the check's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct VxlanData {
    pub device: Option<String>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local_vtep: Option<Ipv4Addr>,
    pub peer_vtep: Option<Ipv4Addr>,
    pub peer_vtep_mac: Option<String>,
    /// What the local configuration lacks (empty when it is complete).
    pub problems: Vec<String>,
    pub probes: u8,
    pub rtt_ms: Option<f64>,
}

pub fn verdict(report: &Report, capture_on: bool) -> Check {
    let evidence = Evidence::fold(report.events.clone());
    let peer = report.spec.peer;
    let port = report.spec.port;
    let verdict = match &report.outcome {
        Outcome::Reply { rtt } => {
            let p = report.plan.as_ref().expect("a reply needs a plan");
            Verdict::pass(format!(
                "{}'s VTEP {} answered through the overlay ({} via {peer}:{}, VNI {}) in {:.1} ms",
                peer,
                p.peer_vtep,
                p.device,
                p.port,
                p.vni,
                rtt.as_secs_f64() * 1000.0
            ))
        }
        Outcome::NoReply => {
            let p = report.plan.as_ref().expect("a probe needs a plan");
            let mut d = format!(
                "no reply from {peer}'s VTEP {} to {} encapsulated echo{} (UDP {port}, VNI {})",
                p.peer_vtep,
                report.probes,
                if report.probes == 1 { "" } else { "es" },
                p.vni
            );
            let drop = drops(&evidence)
                .find(|e| e.event.reason.as_deref() == Some("NETFILTER_DROP"))
                .or_else(|| drops(&evidence).next());
            match drop {
                Some(e) => {
                    let _ = write!(d, ": {}", describe_drop(e));
                }
                None if capture_on => d.push_str(
                    ": no drop seen on this machine (the packets left; the underlay between the nodes or the peer \
                     dropped them, e.g. a firewall on UDP 8472)",
                ),
                None => d.push_str(" (capture unavailable: where the packets died is not shown)"),
            }
            Verdict::fail(Cause::VxlanNoReply, d)
        }
        Outcome::Misconfigured(problems) => Verdict::fail(Cause::VxlanMisconfigured, problems.join("; ")),
        Outcome::NoPrivilege(why) => Verdict::skip(format!("configuration complete, tunnel not probed: {why}")),
        Outcome::Failed(e) => Verdict::fail(Cause::ProbeError, e.clone()),
    };
    let plan = report.plan.as_ref();
    let data = VxlanData {
        device: plan.map(|p| p.device.clone()),
        vni: plan.map(|p| p.vni),
        port: plan.map(|p| p.port),
        local_vtep: plan.map(|p| p.local_vtep),
        peer_vtep: plan.map(|p| p.peer_vtep),
        peer_vtep_mac: plan.map(|p| format_mac(&p.peer_mac)),
        problems: match &report.outcome {
            Outcome::Misconfigured(p) => p.clone(),
            _ => Vec::new(),
        },
        probes: report.probes,
        rtt_ms: match report.outcome {
            Outcome::Reply { rtt } => Some(rtt.as_secs_f64() * 1000.0),
            _ => None,
        },
    };
    Check {
        data: Some(Data::Vxlan(data)),
        ..Check::probed(Probe::Vxlan, format!("{peer}:{port}"), verdict, report.elapsed, evidence)
    }
}
