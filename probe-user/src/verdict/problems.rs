//! The node's problems: what `netcheck node` found wrong, each once. Several checks often see
//! one fault: a blocked CoreDNS replica fails its endpoint rung and makes the Service rung and
//! the pod's lookup partial; one expiring certificate is found as a PEM file, in a kubeconfig
//! and on an endpoint. The checks stay as they are (each is true); the problems list folds
//! them onto the fault they share.

use std::net::SocketAddr;

use serde::Serialize;

use super::{Cause, Check, Data, Probe, Status};

/// One fault, with the checks that show it (indices into the report's `checks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub status: Status,
    pub cause: Option<Cause>,
    /// What is broken: "CoreDNS endpoint 10.244.2.10:53", "certificate CN=... (serial ...)".
    pub subject: String,
    pub detail: String,
    pub checks: Vec<usize>,
}

/// What a failing check is about, so checks about the same thing fold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// One certificate (issuer and serial), wherever it was found.
    Cert(String, String),
    /// A DNS rung behind the Service: a CoreDNS endpoint or an upstream, by address.
    DnsRung(String),
    Check(Probe, String),
}

/// The problems among `checks`, in the order their first check appears.
pub fn problems(checks: &[Check]) -> Vec<Problem> {
    let failing = |c: &Check| matches!(c.status, Status::Fail | Status::Warn);
    // The DNS rungs behind the Service that failed: other DNS checks that name one of their
    // addresses (a lookup or a Service query DNATed there) are its symptoms.
    let rungs: Vec<String> = checks.iter().filter(|c| failing(c)).filter_map(rung_of).collect();
    let mut out: Vec<(Key, Problem)> = Vec::new();
    for (i, c) in checks.iter().enumerate().filter(|(_, c)| failing(c)) {
        let key = key(c, &rungs);
        if let Some((_, p)) = out.iter_mut().find(|(k, _)| *k == key) {
            p.checks.push(i);
            p.status = p.status.max(c.status);
        } else {
            let subject = subject(c, &key);
            out.push((
                key,
                Problem { status: c.status, cause: c.cause, subject, detail: c.detail.clone(), checks: vec![i] },
            ));
        }
    }
    // A DNS problem is the rung's (its symptoms usually come first in check order): its verdict
    // is the cause, and it names what the rung is.
    for (key, p) in &mut out {
        if let Key::DnsRung(address) = key
            && let Some(root) = p.checks.iter().map(|&i| &checks[i]).find(|c| rung_of(c).as_ref() == Some(address))
        {
            (p.cause, p.detail, p.subject) = (root.cause, root.detail.clone(), subject(root, key));
        }
    }
    out.into_iter().map(|(_, p)| p).collect()
}

/// The address of a DNS rung behind the Service (an endpoint or upstream) the check probed.
fn rung_address(c: &Check) -> Option<SocketAddr> {
    match &c.data {
        Some(Data::Dns(d)) => d.rung,
        _ => None,
    }
}

/// The rung a DNS check probed, by address: an endpoint's or upstream's, or a server's (the
/// Service IP or whatever clusterDNS names; a server is the rung itself when nothing deeper
/// fails, e.g. a stale clusterDNS).
fn rung_of(c: &Check) -> Option<String> {
    if c.probe != Probe::Dns {
        return None;
    }
    rung_address(c).map(|a| a.to_string()).or_else(|| c.target.strip_prefix("server ").map(str::to_string))
}

/// Whether `detail` names `address` as a whole (`10.0.0.1:53` is not in `10.0.0.1:5353` nor in
/// `110.0.0.1:53`).
fn names(detail: &str, address: &str) -> bool {
    // Before it, a digit, letter or dot would make a longer address; after it, a digit or
    // letter a longer port (a `:` or `.` after it ends a phrase).
    let before = |c: char| c.is_ascii_alphanumeric() || c == '.';
    detail.match_indices(address).any(|(i, _)| {
        !detail[..i].chars().next_back().is_some_and(before)
            && !detail[i + address.len()..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

fn key(c: &Check, rungs: &[String]) -> Key {
    if let Some(Data::Cert(cert)) = &c.data
        && matches!(
            c.cause,
            Some(Cause::CertExpired | Cause::CertExpiring | Cause::CertNotYetValid | Cause::CertUntrusted)
        )
    {
        return Key::Cert(cert.issuer.clone(), cert.serial.clone());
    }
    if c.probe == Probe::Dns {
        // A check that names a failing rung deeper than its own is that rung's symptom (rungs
        // are in ladder order: servers, then endpoints and upstreams).
        let own = rung_of(c);
        if let Some(a) = rungs.iter().rev().find(|a| Some(*a) != own.as_ref() && names(&c.detail, a)) {
            return Key::DnsRung(a.clone());
        }
        if let Some(a) = own {
            return Key::DnsRung(a);
        }
    }
    Key::Check(c.probe, c.target.clone())
}

fn subject(c: &Check, key: &Key) -> String {
    match key {
        Key::Cert(_, serial) => {
            let name = match &c.data {
                Some(Data::Cert(d)) => d.subject.clone(),
                _ => String::new(),
            };
            format!("certificate {name} (serial {serial})")
        }
        Key::DnsRung(address) if c.target.starts_with("upstream ") => format!("upstream resolver {address}"),
        Key::DnsRung(address) if c.target.starts_with("server ") => format!("DNS server {address}"),
        Key::DnsRung(address) => format!("CoreDNS endpoint {address}"),
        Key::Check(probe, target) => format!("{probe} {target}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;
    use crate::verdict::cert::CertData;

    fn check(probe: Probe, target: &str, status: Status, cause: Option<Cause>, detail: &str) -> Check {
        Check::file(probe, target.into(), Verdict::new(status, cause, detail))
    }

    /// A CoreDNS endpoint's check, as `verdict::dns::verdicts` makes it.
    fn endpoint(addr: &str, status: Status, cause: Option<Cause>, detail: &str) -> Check {
        let data = crate::verdict::dns::DnsData {
            name: "kubernetes.default".into(),
            qtype: "A".into(),
            role: "endpoint",
            queries: Vec::new(),
            rung: Some(addr.parse().unwrap()),
        };
        Check { data: Some(Data::Dns(data)), ..check(Probe::Dns, &format!("endpoint {addr}"), status, cause, detail) }
    }

    fn cert(target: &str, serial: &str) -> Check {
        let data = CertData {
            subject: "CN=system:node:n1".into(),
            issuer: "CN=ca".into(),
            serial: serial.into(),
            not_after: "2026-12-03T00:00:00Z".into(),
        };
        Check {
            data: Some(Data::Cert(data)),
            ..check(Probe::Cert, target, Status::Warn, Some(Cause::CertExpiring), "expires in 9 days")
        }
    }

    #[test]
    fn one_blocked_coredns_replica_is_one_problem() {
        let checks = vec![
            check(
                Probe::Dns,
                "kubernetes.default",
                Status::Warn,
                Some(Cause::Partial),
                "answered after (sent on to 10.244.2.10:53)",
            ),
            check(
                Probe::Dns,
                "server 10.96.0.10:53",
                Status::Fail,
                Some(Cause::Partial),
                "4 of 6 (sent on to 10.244.2.10:53)",
            ),
            endpoint("10.244.1.10:53", Status::Pass, None, "ok"),
            endpoint("10.244.2.10:53", Status::Fail, Some(Cause::NetfilterDrop), "dropped by netfilter"),
            check(Probe::Kubelet, "192.168.50.11:10250", Status::Fail, Some(Cause::CertNameMismatch), "no IP SANs"),
        ];
        let p = problems(&checks);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].subject, "CoreDNS endpoint 10.244.2.10:53");
        assert_eq!(p[0].checks, [0, 1, 3]);
        assert_eq!(p[0].cause, Some(Cause::NetfilterDrop), "the rung's own verdict is the cause");
        assert_eq!(p[0].detail, "dropped by netfilter");
        assert_eq!(p[0].status, Status::Fail);
        assert_eq!(p[1].checks, [4]);
        assert_eq!(p[1].subject, "kubelet 192.168.50.11:10250");
    }

    #[test]
    fn a_dead_server_rung_and_the_lookup_naming_it_are_one_problem() {
        let checks = vec![
            check(
                Probe::Dns,
                "kubernetes.default",
                Status::Fail,
                Some(Cause::DnsTimeout),
                "no answer; failing rung: server 10.96.0.20:53: no answer",
            ),
            check(Probe::Dns, "server 10.96.0.20:53", Status::Fail, Some(Cause::DnsTimeout), "no answer"),
            check(Probe::Dns, "server 10.96.0.2:53", Status::Pass, None, "ok"),
        ];
        let p = problems(&checks);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].subject, "DNS server 10.96.0.20:53");
        assert_eq!(p[0].checks, [0, 1]);
        assert_eq!(p[0].detail, "no answer", "the rung's own verdict");
    }

    #[test]
    fn an_address_is_named_whole() {
        assert!(names("sent on to 10.0.0.1:53)", "10.0.0.1:53"));
        assert!(names("10.0.0.1:53", "10.0.0.1:53"));
        assert!(!names("sent on to 10.0.0.1:5353", "10.0.0.1:53"));
        assert!(!names("sent on to 110.0.0.1:53", "10.0.0.1:53"));
    }

    #[test]
    fn one_certificate_found_twice_is_one_problem() {
        let checks =
            vec![cert("/pki/client.pem", "01:02"), cert("kubelet.conf (user)", "01:02"), cert("other.pem", "03")];
        let p = problems(&checks);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].checks, [0, 1]);
        assert_eq!(p[0].subject, "certificate CN=system:node:n1 (serial 01:02)");
        assert_eq!(p[1].checks, [2]);
    }

    #[test]
    fn unrelated_dns_failures_stay_apart() {
        let checks = vec![
            check(Probe::Dns, "www.example.com", Status::Fail, Some(Cause::Nxdomain), "no such name"),
            check(Probe::Dns, "kubernetes.default", Status::Fail, Some(Cause::DnsTimeout), "no answer"),
        ];
        assert_eq!(problems(&checks).len(), 2);
    }
}
