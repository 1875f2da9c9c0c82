//! Certificate verdicts: expiry, validity start, name (including the "no IP SANs" case) and
//! trust, each judged on its own so one problem never hides another. Messages for names follow
//! Go's crypto/x509, which is what kubectl, kubelet and metrics-server print.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use super::{Cause, Check, Evidence, Probe, Status, Verdict, tcp_verdict};
use crate::{
    discovery::certs::KubeconfigItem,
    probes::cert::{EndpointReport, Name},
};

const DAY: i64 = 86_400;

/// What netcheck reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub subject: String,
    pub issuer: String,
    /// Hex, colon separated; with the issuer it names one certificate wherever it is found.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

pub fn facts(der: &CertificateDer<'_>) -> Result<Facts, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Facts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns,
        ips,
    })
}

/// `data.cert` of a certificate's check: which certificate it is (the same one may be found
/// as a file, in a kubeconfig and on an endpoint).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertData {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
}

impl CertData {
    pub fn of(der: &CertificateDer<'_>) -> Option<Self> {
        let f = facts(der).ok()?;
        Some(Self { subject: f.subject, issuer: f.issuer, serial: f.serial, not_after: stamp(f.not_after) })
    }
}

/// A file's check with the certificate it judged.
fn cert_check(target: String, chain: &[CertificateDer<'_>], policy: Policy<'_>) -> Check {
    Check {
        data: chain.first().and_then(CertData::of).map(super::Data::Cert),
        ..Check::file(Probe::Cert, target, judge(chain, policy))
    }
}

/// What to judge a chain against.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The identity dialled; `None` for files (no name to match).
    pub name: Option<&'a Name>,
    /// Trusted CAs (`--ca`, a kubeconfig's CA); `None`: trust is not judged.
    pub roots: Option<&'a [CertificateDer<'static>]>,
    /// Unix seconds.
    pub now: i64,
    pub warn_days: u32,
    /// Judge as a client certificate (clientAuth) rather than a server's (serverAuth).
    pub client: bool,
}

/// Status, cause (the most severe problem) and a detail naming every problem found.
pub fn judge(chain: &[CertificateDer<'_>], policy: Policy<'_>) -> Verdict {
    let Some(leaf) = chain.first() else {
        return Verdict::fail(Cause::TlsHandshake, "no certificate presented");
    };
    let f = match facts(leaf) {
        Ok(f) => f,
        Err(e) => return Verdict::fail(Cause::TlsHandshake, e),
    };
    let mut problems: Vec<(Cause, String)> = Vec::new();
    let now = policy.now;
    if now > f.not_after {
        problems.push((
            Cause::CertExpired,
            format!("expired {} ago (notAfter {})", days(now - f.not_after), stamp(f.not_after)),
        ));
    } else if now < f.not_before {
        problems.push((
            Cause::CertNotYetValid,
            format!("not valid before {} (in {})", stamp(f.not_before), days(f.not_before - now)),
        ));
    }
    if f.not_before > f.not_after {
        problems.push((
            Cause::CertExpired,
            format!("valid at no time: notBefore {} is after notAfter {}", stamp(f.not_before), stamp(f.not_after)),
        ));
    }
    // Trust is judged at a moment the certificate is valid, so that expiry is not also reported
    // as distrust; a certificate valid at no time is judged now (and fails on its dates too).
    let trust_at = if f.not_before <= f.not_after { now.clamp(f.not_before, f.not_after) } else { now };
    if let Some(roots) = policy.roots
        && let Err(e) = trusted(leaf, &chain[1..], roots, trust_at, policy.client)
    {
        problems.push((Cause::CertUntrusted, format!("not trusted by the given CA: {e} (issuer {})", f.issuer)));
    }
    if let Some(name) = policy.name
        && let Err(e) = name_matches(&f, name)
    {
        problems.push((Cause::CertNameMismatch, e));
    }
    let left = f.not_after - now;
    if (0..=i64::from(policy.warn_days) * DAY).contains(&left) {
        problems.push((
            Cause::CertExpiring,
            format!(
                "expires in {} (notAfter {}), within the {}-day warning",
                days(left),
                stamp(f.not_after),
                policy.warn_days
            ),
        ));
    }
    let subject = if f.subject.is_empty() { "certificate".to_string() } else { f.subject.clone() };
    match problems.first() {
        None => {
            let trust =
                if policy.roots.is_some() { "trusted by the given CA" } else { "trust not checked (no CA given)" };
            let name = policy.name.map(|n| format!(", valid for {n}")).unwrap_or_default();
            Verdict::pass(format!("{subject}: expires in {}{name}, {trust}", days(left)))
        }
        Some((cause, _)) => {
            let status = if *cause == Cause::CertExpiring { Status::Warn } else { Status::Fail };
            let all: Vec<&str> = problems.iter().map(|(_, d)| d.as_str()).collect();
            Verdict::new(status, Some(*cause), format!("{subject}: {}", all.join("; ")))
        }
    }
}

fn trusted(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'static>],
    at: i64,
    client: bool,
) -> Result<(), String> {
    let anchors: Vec<_> = roots.iter().filter_map(|r| webpki::anchor_from_trusted_cert(r).ok()).collect();
    if anchors.is_empty() {
        return Err("the CA file holds no usable certificate".to_string());
    }
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0)));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        time,
        if client { webpki::KeyUsage::client_auth() } else { webpki::KeyUsage::server_auth() },
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => "signed by an unknown authority".to_string(),
        // Same issuer name, other key: typically a CA re-created under the same name (kubeadm
        // calls every cluster CA "kubernetes").
        webpki::Error::InvalidSignatureForPublicKey => {
            "signed by a different CA with the same name (the signature does not verify)".to_string()
        }
        other => format!("{other:?}"),
    })
}

/// Go's crypto/x509 wording, so the message matches what clients print.
fn name_matches(f: &Facts, name: &Name) -> Result<(), String> {
    match name {
        Name::Ip(ip) => {
            if f.ips.contains(ip) {
                Ok(())
            } else if f.ips.is_empty() {
                Err(format!("x509: cannot validate certificate for {ip} because it doesn't contain any IP SANs"))
            } else {
                let list: Vec<String> = f.ips.iter().map(ToString::to_string).collect();
                Err(format!("x509: certificate is valid for {}, not {ip}", list.join(", ")))
            }
        }
        Name::Dns(host) => {
            if f.dns.iter().any(|pattern| dns_matches(pattern, host)) {
                Ok(())
            } else if f.dns.is_empty() {
                Err(format!("x509: certificate is not valid for any names, but wanted to match {host}"))
            } else {
                Err(format!("x509: certificate is valid for {}, not {host}", f.dns.join(", ")))
            }
        }
    }
}

/// RFC 6125: a wildcard stands for exactly one left-most label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host.split_once('.').is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

fn days(seconds: i64) -> String {
    let d = seconds / DAY;
    match d {
        0 => format!("{} hours", seconds / 3600),
        1 => "1 day".to_string(),
        _ => format!("{d} days"),
    }
}

fn stamp(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The verdict of `check cert HOST:PORT` (and of `check kubelet`, named by `probe`): TCP
/// problems keep the TCP probe's causes and evidence.
pub fn endpoint_verdict(
    probe: Probe,
    report: EndpointReport,
    roots: Option<&[CertificateDer<'static>]>,
    warn_days: u32,
    capture_on: bool,
) -> Check {
    let EndpointReport { tcp, name, handshake, elapsed } = report;
    let target = tcp.target.to_string();
    let Some(handshake) = handshake else {
        return Check { probe, ..tcp_verdict(&tcp, capture_on) };
    };
    let data = handshake.as_ref().ok().and_then(|chain| chain.first()).and_then(CertData::of).map(super::Data::Cert);
    let Verdict { status, cause, detail } = match handshake {
        Err(e) => Verdict::fail(Cause::TlsHandshake, format!("TLS handshake failed: {e}")),
        Ok(chain) => judge(&chain, Policy { name: Some(&name), roots, now: now(), warn_days, client: false }),
    };
    Check {
        probe,
        target,
        status,
        cause,
        detail,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        evidence: Evidence::fold(tcp.events),
        hops: Vec::new(),
        data,
        peer: None,
    }
}

/// `check cert FILE`: a check per certificate in the file (no name to match).
pub fn file_verdicts(
    path: &std::path::Path,
    certs: &[CertificateDer<'static>],
    roots: Option<&[CertificateDer<'static>]>,
    warn_days: u32,
) -> Vec<Check> {
    let now = now();
    let policy = Policy { name: None, roots, now, warn_days, client: false };
    certs
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let target =
                if certs.len() == 1 { path.display().to_string() } else { format!("{}#{}", path.display(), i + 1) };
            cert_check(target, std::slice::from_ref(cert), policy)
        })
        .collect()
}

/// `check cert KUBECONFIG`: a check per client certificate (its chain judged against the CA of
/// the cluster its context uses) and per cluster CA certificate.
pub fn kubeconfig_verdicts(path: &std::path::Path, items: Vec<KubeconfigItem>, warn_days: u32) -> Vec<Check> {
    let now = now();
    let mut checks = Vec::new();
    for item in items {
        let target = format!("{} ({})", path.display(), item.label);
        match &item.certs {
            Err(e) => {
                let verdict = Verdict::fail(Cause::CertUnreadable, e.to_string());
                checks.push(Check::file(Probe::Cert, target, verdict));
            }
            Ok(chain) if item.client => {
                let policy = Policy { name: None, roots: item.roots.as_deref(), now, warn_days, client: true };
                checks.push(cert_check(target, chain, policy));
            }
            // A CA bundle: every CA on its own.
            Ok(cas) => {
                let policy = Policy { name: None, roots: None, now, warn_days, client: false };
                for (i, ca) in cas.iter().enumerate() {
                    let t = if cas.len() == 1 { target.clone() } else { format!("{target}#{}", i + 1) };
                    checks.push(cert_check(t, std::slice::from_ref(ca), policy));
                }
            }
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

    use super::*;

    struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        fn new() -> Self {
            Self::named("kubernetes")
        }
        fn named(name: &str) -> Self {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            Self(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
        }
        fn der(&self) -> CertificateDer<'static> {
            self.0.der().clone()
        }
        /// A leaf valid from `from` to `to` (unix seconds).
        fn leaf(&self, dns: &[&str], ips: &[&str], from: i64, to: i64) -> CertificateDer<'static> {
            let mut p = CertificateParams::new(dns.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
            p.subject_alt_names.extend(ips.iter().map(|i| SanType::IpAddress(i.parse().unwrap())));
            p.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_delta(from);
            p.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_delta(to);
            p.signed_by(&KeyPair::generate().unwrap(), &self.0).unwrap().der().clone()
        }
    }

    fn time_delta(secs: i64) -> Duration {
        Duration::from_secs(u64::try_from(secs).unwrap())
    }

    const NOW: i64 = 1_800_000_000;

    fn judge_at(
        chain: &[CertificateDer<'_>],
        name: Option<&str>,
        roots: Option<&[CertificateDer<'static>]>,
    ) -> Verdict {
        let name = name.map(Name::parse);
        judge(chain, Policy { name: name.as_ref(), roots, now: NOW, warn_days: 30, client: false })
    }

    #[test]
    fn healthy_certificate_passes() {
        let ca = Ca::new();
        let leaf = ca.leaf(&["n1"], &["192.168.50.11"], NOW - DAY, NOW + 365 * DAY);
        let roots = [ca.der()];
        let Verdict { status: s, cause: c, detail: d } = judge_at(&[leaf], Some("192.168.50.11"), Some(&roots));
        assert_eq!((s, c), (Status::Pass, None), "{d}");
        assert!(d.contains("expires in 365 days") && d.contains("trusted by the given CA"), "{d}");
    }

    #[test]
    fn each_problem_has_its_code() {
        let ca = Ca::new();
        let roots = [ca.der()];
        let expired = ca.leaf(&["n1"], &[], NOW - 10 * DAY, NOW - 3 * DAY);
        let Verdict { status: s, cause: c, detail: d } = judge_at(&[expired], Some("n1"), Some(&roots));
        assert_eq!((s, c), (Status::Fail, Some(Cause::CertExpired)));
        assert!(d.contains("expired 3 days ago"), "{d}");
        assert!(!d.contains("not trusted"), "expiry must not look like distrust: {d}");

        let future = ca.leaf(&["n1"], &[], NOW + 2 * DAY, NOW + 10 * DAY);
        assert_eq!(judge_at(&[future], Some("n1"), Some(&roots)).cause, Some(Cause::CertNotYetValid));

        let expiring = ca.leaf(&["n1"], &[], NOW - DAY, NOW + 10 * DAY);
        let Verdict { status: s, cause: c, detail: d } = judge_at(&[expiring], Some("n1"), Some(&roots));
        assert_eq!((s, c), (Status::Warn, Some(Cause::CertExpiring)));
        assert!(d.contains("expires in 10 days") && d.contains("30-day warning"), "{d}");

        let foreign = Ca::named("other-ca").leaf(&["n1"], &[], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[foreign], Some("n1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertUntrusted));
        assert!(d.contains("signed by an unknown authority"), "{d}");

        // A re-created CA with the same name (kubeadm's "kubernetes").
        let recreated = Ca::new().leaf(&["n1"], &[], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[recreated], Some("n1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertUntrusted));
        assert!(d.contains("different CA with the same name"), "{d}");
    }

    /// notBefore after notAfter: one failed verdict naming the dates, whatever `now` is (it
    /// panicked in `i64::clamp`, and the check vanished from the output).
    #[test]
    fn a_certificate_valid_at_no_time_fails() {
        let ca = Ca::new();
        let roots = [ca.der()];
        for (from, to) in [(NOW + DAY, NOW - DAY), (NOW - DAY, NOW - 2 * DAY), (NOW + 2 * DAY, NOW + DAY)] {
            let inverted = ca.leaf(&["n1"], &[], from, to);
            let Verdict { status: s, cause: c, detail: d } = judge_at(&[inverted], Some("n1"), Some(&roots));
            assert_eq!(s, Status::Fail, "{d}");
            assert!(matches!(c, Some(Cause::CertExpired | Cause::CertNotYetValid)), "{c:?}: {d}");
            assert!(d.contains("valid at no time: notBefore"), "{d}");
        }
    }

    #[test]
    fn names_follow_go_wording() {
        let ca = Ca::new();
        let dns_only = ca.leaf(&["n1"], &[], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: c, detail: d } =
            judge_at(std::slice::from_ref(&dns_only), Some("192.168.50.11"), None);
        assert_eq!(c, Some(Cause::CertNameMismatch));
        assert!(
            d.contains("x509: cannot validate certificate for 192.168.50.11 because it doesn't contain any IP SANs"),
            "{d}"
        );
        assert!(d.contains("trust") || c.is_some());

        let other_ip = ca.leaf(&[], &["10.0.0.1"], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: _, detail: d } = judge_at(&[other_ip], Some("10.0.0.2"), None);
        assert!(d.contains("x509: certificate is valid for 10.0.0.1, not 10.0.0.2"), "{d}");

        let Verdict { status: _, cause: c, detail: d } = judge_at(&[dns_only], Some("n2"), None);
        assert_eq!(c, Some(Cause::CertNameMismatch));
        assert!(d.contains("x509: certificate is valid for n1, not n2"), "{d}");
    }

    #[test]
    fn several_problems_are_all_named_and_the_worst_is_the_cause() {
        let ca = Ca::new();
        let roots = [Ca::new().der()];
        let leaf = ca.leaf(&["n1"], &[], NOW - 10 * DAY, NOW - DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[leaf], Some("10.0.0.1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertExpired));
        assert!(d.contains("expired") && d.contains("not trusted") && d.contains("IP SANs"), "{d}");
    }

    #[test]
    fn wildcards_match_one_label() {
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(dns_matches("node-1", "node-1."));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let Verdict { status: s, cause: c, detail: d } = judge(
            &[CertificateDer::from(vec![1, 2, 3])],
            Policy { name: None, roots: None, now: NOW, warn_days: 30, client: false },
        );
        assert_eq!((s, c), (Status::Fail, Some(Cause::TlsHandshake)));
        assert!(d.contains("not an X.509 certificate"), "{d}");
    }
}
