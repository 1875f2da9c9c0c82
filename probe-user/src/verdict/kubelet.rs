//! Kubelet verdicts: the serving endpoint (TCP, TLS, certificate) and, on the node itself, the
//! kubelet's own health check.

use rustls::pki_types::CertificateDer;

use super::{Cause, Check, Probe, Status, Verdict, cert::endpoint_verdict};
use crate::{
    capture::event::EventKind,
    probes::{cert::EndpointReport, kubelet::Healthz},
};

/// ICMP destination-unreachable codes a firewall's REJECT sends: net/host prohibited (9, 10)
/// and communication administratively prohibited (13).
const PROHIBITED: [u8; 3] = [9, 10, 13];

pub fn endpoint(
    report: EndpointReport,
    roots: Option<&[CertificateDer<'static>]>,
    warn_days: u32,
    capture_on: bool,
) -> Check {
    let mut check = endpoint_verdict(Probe::Kubelet, report, roots, warn_days, capture_on);
    let rejected = check.cause == Some(Cause::Unreachable)
        && check.evidence.iter().any(|e| {
            e.event.kind == EventKind::Icmp
                && e.event.icmp_type == Some(3)
                && e.event.icmp_code.is_some_and(|c| PROHIBITED.contains(&c))
        });
    if rejected {
        check.detail.push_str(
            "; the node's firewall rejects this source: typically an INPUT rule that admits node IPs but not pod IPs, \
             so pods on that node cannot reach its kubelet while other nodes can",
        );
    }
    check
}

/// The node's name did not resolve the way a pod resolves it (docs/field-cases.md case 3): what Go
/// clients print, and the usual way out.
pub fn unresolved(target: &crate::probes::Target, lookup: &Check) -> Check {
    let detail = format!(
        "dial tcp: {}; node names are usually not in cluster DNS: dial the node's InternalIP instead \
         (e.g. metrics-server --kubelet-preferred-address-types=InternalIP)",
        lookup.detail
    );
    let cause = lookup.cause.or(Some(Cause::DnsError));
    Check {
        duration_ms: lookup.duration_ms,
        ..Check::file(Probe::Kubelet, target.to_string(), Verdict::new(Status::Fail, cause, detail))
    }
}

pub fn healthz(port: u16, h: &Healthz) -> Check {
    let target = format!("127.0.0.1:{port}/healthz");
    let Verdict { status, cause, detail } = match &h.result {
        Ok((200, body)) if body == "ok" => Verdict::pass("ok"),
        Ok((code, body)) => Verdict::fail(Cause::KubeletUnhealthy, format!("HTTP {code}: {}", first_line(body))),
        Err(e) if e.contains("refused") => {
            Verdict::fail(Cause::Refused, format!("nothing listens on the kubelet's healthz port ({e})"))
        }
        Err(e) if e.contains("no answer") => Verdict::fail(Cause::Timeout, e.clone()),
        Err(e) => Verdict::fail(Cause::KubeletUnhealthy, e.clone()),
    };
    Check {
        duration_ms: u64::try_from(h.elapsed.as_millis()).unwrap_or(u64::MAX),
        ..Check::file(Probe::KubeletHealthz, target, Verdict { status, cause, detail })
    }
}

fn first_line(body: &str) -> &str {
    body.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn h(result: Result<(u16, String), String>) -> Healthz {
        Healthz { result, elapsed: Duration::from_millis(3) }
    }

    #[test]
    fn healthz_verdicts() {
        assert_eq!(healthz(10248, &h(Ok((200, "ok".into())))).status, Status::Pass);
        let c = healthz(10248, &h(Ok((500, "[-]syncloop failed\nmore".into()))));
        assert_eq!(c.cause, Some(Cause::KubeletUnhealthy));
        assert_eq!(c.detail, "HTTP 500: [-]syncloop failed");
        assert_eq!(
            healthz(10248, &h(Err("connect: Connection refused (os error 111)".into()))).cause,
            Some(Cause::Refused)
        );
        assert_eq!(healthz(10248, &h(Err("no answer within 3.0 s".into()))).cause, Some(Cause::Timeout));
        assert_eq!(c.probe, Probe::KubeletHealthz);
    }
}
