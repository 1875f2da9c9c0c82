//! Path MTU verdicts: the measured value against what the sender assumes (the interface MTU)
//! and what the CNI configured, and whether a smaller path says so (ICMP) or swallows packets.

use std::{fmt::Write as _, net::Ipv4Addr};

use serde::Serialize;

use super::{Cause, Check, Data, Evidence, Probe, Verdict, describe_drop, drops};
use crate::probes::mtu::{Answer, Outcome, Report};

/// `data.mtu` of the check's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct MtuData {
    /// Largest IP packet (bytes, header included) that got its echo back.
    pub path_mtu: Option<u16>,
    /// False when the deadline cut the search short: the path MTU is then at most `upper`.
    pub exact: bool,
    pub upper: Option<u16>,
    pub interface: Option<String>,
    pub interface_mtu: Option<u16>,
    /// The CNI's configured MTU (flannel FLANNEL_MTU) and its file.
    pub cni_mtu: Option<u32>,
    pub cni_source: Option<String>,
    /// The first ICMP fragmentation-needed the path sent.
    pub signalled: Option<Signalled>,
    pub steps: Vec<StepData>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Signalled {
    pub mtu: u16,
    pub from: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepData {
    pub size: u16,
    /// reply, silent, frag_needed, unreachable, local_limit.
    pub result: &'static str,
    pub probes: u8,
}

pub fn verdict(report: &Report, capture_on: bool) -> Check {
    let evidence = Evidence::fold(report.events.clone());
    let verdict = judge(report, &evidence, capture_on);
    let (path_mtu, exact, upper) = match report.outcome {
        Outcome::Measured { path_mtu, exact, upper } => (Some(path_mtu), exact, Some(upper)),
        _ => (None, false, None),
    };
    let data = MtuData {
        path_mtu,
        exact,
        upper,
        interface: report.interface.as_ref().map(|(n, _)| n.clone()),
        interface_mtu: report.interface.as_ref().map(|(_, m)| *m),
        cni_mtu: report.spec.cni_mtu.as_ref().map(|(m, _)| *m),
        cni_source: report.spec.cni_mtu.as_ref().map(|(_, p)| p.display().to_string()),
        signalled: report.signalled().map(|(mtu, from)| Signalled { mtu, from }),
        steps: report
            .steps
            .iter()
            .map(|s| StepData { size: s.size, result: s.answer.code(), probes: s.probes })
            .collect(),
    };
    Check {
        data: Some(Data::Mtu(data)),
        ..Check::probed(Probe::Mtu, report.spec.host.to_string(), verdict, report.elapsed, evidence)
    }
}

fn judge(report: &Report, evidence: &[Evidence], capture_on: bool) -> Verdict {
    let host = report.spec.host;
    let (path_mtu, exact, upper) = match &report.outcome {
        Outcome::Measured { path_mtu, exact, upper } => (*path_mtu, *exact, *upper),
        Outcome::NoPrivilege(why) => return Verdict::skip(format!("not measured: {why}")),
        Outcome::NoRoute(e) => return Verdict::fail(Cause::NoRoute, format!("no route to {host} ({e})")),
        Outcome::Failed(e) => return Verdict::fail(Cause::ProbeError, e.clone()),
        Outcome::NoEcho(answer) => return no_echo(host, *answer, evidence, capture_on),
    };
    let (iface, iface_mtu) = report.interface.clone().unwrap_or_else(|| ("?".into(), upper));
    let cni = report.spec.cni_mtu.as_ref().map(|(m, p)| (*m, p.display().to_string()));
    let tested_top = report.steps.iter().skip(1).map(|s| s.size).next().unwrap_or(path_mtu);
    let range = if exact {
        format!("{path_mtu} bytes")
    } else {
        format!("{path_mtu} to {upper} bytes (stopped at the deadline)")
    };
    let cni_note = |d: &mut String| {
        if let Some((m, path)) = &cni {
            let _ = write!(d, "; the CNI's MTU is {m} ({path})");
        }
    };
    if path_mtu >= tested_top {
        let mut d = format!("path MTU {range}: packets up to {iface}'s MTU ({iface_mtu}) get through");
        if let Some((m, path)) = &cni
            && *m > u32::from(path_mtu)
        {
            let _ = write!(d, "; but the CNI's MTU {m} ({path}) is larger than that");
            return Verdict::warn(Cause::MtuMismatch, d);
        }
        return Verdict::pass(d);
    }
    let lost = format!("{}..{}", path_mtu + 1, tested_top);
    if let Some((mtu, from)) = report.signalled() {
        let mut d = format!(
            "path MTU {range}, below {iface}'s MTU {iface_mtu}; the path says so (ICMP fragmentation needed, \
             mtu {mtu}, from {from}), so PMTUD works, but the interface MTU should be at most {path_mtu}"
        );
        cni_note(&mut d);
        return Verdict::warn(Cause::MtuMismatch, d);
    }
    let mut d = format!(
        "path MTU {range}, but {iface} has MTU {iface_mtu} and no ICMP fragmentation-needed came back: packets of \
         {lost} bytes vanish (a black hole: small requests work, larger transfers stall); the MTU must be at most {path_mtu}"
    );
    cni_note(&mut d);
    if let Some(drop) = drops(evidence).next() {
        let _ = write!(d, "; the oversized packets were {}", describe_drop(drop));
    } else if !capture_on {
        d.push_str(" (capture unavailable: where they vanish is not shown)");
    }
    Verdict::fail(Cause::MtuBlackhole, d)
}

fn no_echo(host: Ipv4Addr, answer: Answer, evidence: &[Evidence], capture_on: bool) -> Verdict {
    let unseen = if capture_on { super::NO_DROP_SEEN } else { "capture unavailable" };
    if let Answer::Unreachable { code, from } = answer {
        return Verdict::fail(
            Cause::Unreachable,
            format!("not measured: ICMP destination unreachable (code {code}) from {from} for a small ping"),
        );
    }
    match drops(evidence).find(|e| e.event.reason.as_deref() == Some("NETFILTER_DROP")) {
        Some(e) => Verdict::fail(
            Cause::NetfilterDrop,
            format!("not measured: {host} does not answer a small ping: {}", describe_drop(e)),
        ),
        None => Verdict::fail(
            Cause::Timeout,
            format!("not measured: {host} does not answer a small ping (ICMP echo; {unseen})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::probes::mtu::{Spec, Step};
    use crate::verdict::Status;

    fn report(steps: &[(u16, Answer)], path_mtu: u16) -> Report {
        Report {
            spec: Spec { host: "10.244.2.2".parse().unwrap(), max: None, cni_mtu: Some((1450, "subnet.env".into())) },
            interface: Some(("eth0".into(), 1450)),
            steps: steps.iter().map(|(size, answer)| Step { size: *size, answer: *answer, probes: 1 }).collect(),
            outcome: Outcome::Measured { path_mtu, exact: true, upper: path_mtu },
            elapsed: Duration::from_millis(300),
            events: Vec::new(),
        }
    }

    #[test]
    fn full_interface_mtu_passes() {
        let c = verdict(&report(&[(84, Answer::Reply), (1450, Answer::Reply)], 1450), true);
        assert_eq!((c.status, c.cause), (Status::Pass, None));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["data"]["mtu"]["path_mtu"], 1450);
        assert_eq!(json["data"]["mtu"]["cni_mtu"], 1450);
    }

    #[test]
    fn silence_above_the_path_mtu_is_a_black_hole() {
        let c = verdict(&report(&[(84, Answer::Reply), (1450, Answer::Silent), (1350, Answer::Reply)], 1350), true);
        assert_eq!((c.status, c.cause), (Status::Fail, Some(Cause::MtuBlackhole)));
        assert!(c.detail.starts_with("path MTU 1350 bytes, but eth0 has MTU 1450"), "{}", c.detail);
        assert!(c.detail.contains("1351..1450 bytes vanish"), "{}", c.detail);
    }

    #[test]
    fn a_signalled_smaller_mtu_is_a_mismatch_not_a_black_hole() {
        let from: Ipv4Addr = "10.244.1.1".parse().unwrap();
        let steps = [(84, Answer::Reply), (1450, Answer::FragNeeded { mtu: 1350, from }), (1350, Answer::Reply)];
        let c = verdict(&report(&steps, 1350), true);
        assert_eq!((c.status, c.cause), (Status::Warn, Some(Cause::MtuMismatch)));
        assert!(c.detail.contains("mtu 1350, from 10.244.1.1"), "{}", c.detail);
        assert_eq!(serde_json::to_value(&c).unwrap()["data"]["mtu"]["signalled"]["mtu"], 1350);
    }

    #[test]
    fn without_raw_sockets_it_is_skipped_with_the_capability_named() {
        let mut r = report(&[], 0);
        r.outcome = Outcome::NoPrivilege("a raw ICMP socket needs CAP_NET_RAW".into());
        let c = verdict(&r, false);
        assert_eq!(c.status, Status::Skip);
        assert!(c.detail.contains("CAP_NET_RAW"));
    }
}
