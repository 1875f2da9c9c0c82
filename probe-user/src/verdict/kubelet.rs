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

/// `self_signed_warns`: `node`'s view, where the kubelet's own self-signed serving certificate
/// (no IP SAN) is how a default kubeadm node looks: a warning, not a failure. `check kubelet`
/// asks whether a verifying client gets through, and fails it.
pub fn endpoint(
    report: EndpointReport,
    roots: Option<&[CertificateDer<'static>]>,
    warn_days: u32,
    capture_on: bool,
    self_signed_warns: bool,
) -> Check {
    let self_signed =
        roots.is_none() && report.handshake.as_ref().is_some_and(|h| h.as_ref().is_ok_and(|c| self_issued(c)));
    let mut check = endpoint_verdict(Probe::Kubelet, report, roots, warn_days, capture_on);
    // Without serverTLSBootstrap (kubeadm's default) the kubelet serves a certificate it made
    // for itself (client-go's cert.GenerateSelfSignedCertKey: `host@time`, signed by its own
    // `host-ca@time`, a DNS name but no IP). The API server does not verify kubelet
    // certificates unless given --kubelet-certificate-authority, so the node works; clients
    // that verify by IP do not (docs/field-cases.md case 2: metrics-server).
    if self_signed_warns && self_signed && check.cause == Some(Cause::CertNameMismatch) {
        check.detail = format!(
            "the kubelet's own self-signed serving certificate (serverTLSBootstrap off): the API server does not \
             verify it, clients that do fail by IP (metrics-server without --kubelet-insecure-tls): {}",
            check.detail
        );
        check.status = Status::Warn;
    }
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

/// The kubelet's own serving certificate, as it makes one without serverTLSBootstrap
/// (client-go's cert.GenerateSelfSignedCertKeyWithFixtures): a leaf named `HOST@UNIXTIME`, alone
/// and self-issued, or signed by the `HOST-ca@UNIXTIME` CA it carries after it. Another chain
/// that merely ends in its CA (k3s's serving-kubelet.crt, a bundle) is not this.
fn self_issued(chain: &[CertificateDer<'static>]) -> bool {
    let parsed: Vec<_> = chain.iter().filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok()).collect();
    let names: Vec<String> = parsed
        .iter()
        .map(|(_, c)| {
            c.subject().iter_common_name().next().and_then(|n| n.as_str().ok()).unwrap_or_default().to_string()
        })
        .collect();
    let stamped = |name: &str, suffix: &str| {
        name.rsplit_once('@').is_some_and(|(host, time)| {
            host.ends_with(suffix) && !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit())
        })
    };
    let self_signed = |i: usize| parsed[i].1.issuer().as_raw() == parsed[i].1.subject().as_raw();
    match names.as_slice() {
        [leaf] => stamped(leaf, "") && self_signed(0),
        [leaf, ca] => {
            stamped(leaf, "")
                && stamped(ca, "-ca")
                && self_signed(1)
                && parsed[0].1.issuer().as_raw() == parsed[1].1.subject().as_raw()
        }
        _ => false,
    }
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

/// The kubelet's configuration as `node` read it: each value with its source when read
/// (pass), the files the kubelet would choke on (fail), or nothing of a kubelet (skip).
pub fn configuration(setup: &crate::discovery::kubelet_config::KubeletSetup) -> Check {
    let target = match setup.pid {
        Some(pid) => format!("kubelet pid {pid}"),
        None => "kubelet configuration".to_string(),
    };
    let values = setup.describe().join("; ");
    let verdict = if !setup.problems.is_empty() {
        let mut detail = setup.problems.join("; ");
        if !values.is_empty() {
            detail = format!("{detail}; read: {values}");
        }
        Verdict::fail(Cause::KubeletMisconfigured, detail)
    } else if setup.is_empty() {
        let why = setup.notes.first().cloned().unwrap_or_else(|| "no kubelet process and no configuration".into());
        Verdict::skip(format!("not checked: {why}"))
    } else {
        Verdict::pass(values)
    };
    Check::file(Probe::KubeletConfig, target, verdict)
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
