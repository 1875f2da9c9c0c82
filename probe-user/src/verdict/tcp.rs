//! TCP connect verdicts.

use std::{fmt::Write as _, io};

use super::{Cause, Check, Evidence, Probe, Status, Verdict, describe_drop, drops};
use crate::{
    capture::event::{Direction, EventKind},
    probes::tcp::{Outcome, Report},
};

pub fn tcp_verdict(report: &Report, capture_on: bool) -> Check {
    let evidence = Evidence::fold(report.events.clone());
    let secs = report.elapsed.as_secs_f64();
    let first_drop = drops(&evidence)
        .find(|e| e.event.reason.as_deref() == Some("NETFILTER_DROP"))
        .or_else(|| drops(&evidence).next());
    let icmp = evidence.iter().find(|e| e.event.kind == EventKind::Icmp);
    let rst_sent =
        evidence.iter().find(|e| e.event.kind == EventKind::Rst && e.event.direction == Some(Direction::Sent));
    // Kernels before 6.10 do not trace the RST answering a packet without a socket; the SYN's
    // drop shows where: NO_SOCKET (5.17+), or tcp_v4_rcv where no reason is recorded (its
    // other causes, checksum and header errors, get no RST, and this connect got one).
    let no_socket = drops(&evidence).find(|e| {
        e.event.reason.as_deref() == Some("NO_SOCKET")
            || (e.event.reason.is_none()
                && matches!(
                    e.event.location_function().and_then(|f| f.split('.').next()),
                    Some("tcp_v4_rcv" | "tcp_v6_rcv")
                ))
    });
    let unseen = if capture_on { super::NO_DROP_SEEN } else { "capture unavailable" };

    let verdict = match &report.outcome {
        Outcome::Connected => {
            let mut d = format!("connected in {:.0} ms", secs * 1000.0);
            if let Some(e) = first_drop {
                let _ = write!(d, " after a retransmission: {}", describe_drop(e));
                Verdict::new(Status::Warn, None, d)
            } else {
                Verdict::pass(d)
            }
        }
        Outcome::TimedOut => match first_drop {
            Some(e) if e.event.reason.as_deref() == Some("NETFILTER_DROP") => {
                Verdict::fail(Cause::NetfilterDrop, format!("no answer in {secs:.1} s: {}", describe_drop(e)))
            }
            Some(e) => Verdict::fail(Cause::Timeout, format!("no answer in {secs:.1} s: {}", describe_drop(e))),
            None => Verdict::fail(Cause::Timeout, format!("no answer in {secs:.1} s ({unseen})")),
        },
        Outcome::NoRoute(e) => {
            Verdict::fail(Cause::NoRoute, format!("no route to the target from this namespace ({e})"))
        }
        Outcome::Unresolved(e) => Verdict::fail(Cause::DnsError, format!("name did not resolve: {e}")),
        Outcome::Failed(e) => failed(e, first_drop, icmp, rst_sent.or(no_socket), report.icmp_unseen.as_deref()),
    };
    Check::probed(Probe::Tcp, report.target.to_string(), verdict, report.elapsed, evidence)
}

fn failed(
    e: &io::Error,
    first_drop: Option<&Evidence>,
    icmp: Option<&Evidence>,
    rst: Option<&Evidence>,
    icmp_unseen: Option<&str>,
) -> Verdict {
    let with_drop = |mut s: String| {
        if let Some(d) = first_drop {
            let _ = write!(s, "; the SYN was {}", describe_drop(d));
        }
        s
    };
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => {
            let d = match rst {
                Some(d) if d.event.kind == EventKind::Drop => format!(
                    "connection refused: nothing listens there (the SYN found no socket in netns {}: {})",
                    d.event.netns,
                    d.event.reason.clone().or_else(|| d.event.location.clone()).unwrap_or_default()
                ),
                Some(r) if r.event.reason.as_deref() == Some("NO_SOCKET") => {
                    format!("connection refused: nothing listens there (RST sent by netns {})", r.event.netns)
                }
                Some(r) => format!(
                    "connection refused: RST sent by netns {} ({})",
                    r.event.netns,
                    r.event.reason.as_deref().unwrap_or("?")
                ),
                None => "connection refused (RST)".to_string(),
            };
            Verdict::fail(Cause::Refused, d)
        }
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => {
            let d = match icmp {
                Some(i) => format!(
                    "{}: ICMP {} sent by netns {}{}",
                    errno_text(e),
                    i.event.reason.as_deref().unwrap_or("unreachable"),
                    i.event.netns,
                    if first_drop.is_some_and(|d| d.event.reason.as_deref() == Some("NETFILTER_DROP")) {
                        " (a netfilter REJECT rule)"
                    } else {
                        ""
                    }
                ),
                None => match icmp_unseen {
                    // The kernel cannot show its ICMP errors: say so rather than guess why none was seen.
                    Some(why) => format!("{}: ICMP errors are not captured on this kernel ({why})", errno_text(e)),
                    None => format!(
                        "{}: no ICMP seen on this machine (neighbour resolution failed, or the ICMP came from elsewhere)",
                        errno_text(e)
                    ),
                },
            };
            Verdict::fail(Cause::Unreachable, with_drop(d))
        }
        // connect() returns EPERM when a local netfilter OUTPUT rule drops the SYN.
        Some(libc::EPERM) => Verdict::fail(
            Cause::NetfilterDrop,
            with_drop("blocked by netfilter on this host (connect: operation not permitted)".to_string()),
        ),
        _ => Verdict::fail(Cause::ProbeError, with_drop(format!("connect failed: {e}"))),
    }
}

/// What a client such as curl or Go's net package prints for the connect error.
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EHOSTUNREACH) => "connect: no route to host".to_string(),
        Some(libc::ENETUNREACH) => "connect: network is unreachable".to_string(),
        _ => format!("connect: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{capture::event::KernelEvent, probes::Target, verdict::tests::ev};

    fn report(outcome: Outcome, events: Vec<KernelEvent>) -> Report {
        Report {
            target: Target::parse("10.244.2.2:8080").unwrap(),
            local: None,
            remote: None,
            outcome,
            elapsed: Duration::from_secs(2),
            events,
            icmp_unseen: None,
        }
    }

    #[test]
    fn timeout_with_a_netfilter_drop_is_netfilter_drop() {
        let drop = ev(EventKind::Drop, "NETFILTER_DROP", "n2");
        let c = tcp_verdict(&report(Outcome::TimedOut, vec![drop.clone(), drop]), true);
        assert_eq!((c.status, c.cause), (Status::Fail, Some(Cause::NetfilterDrop)));
        assert!(c.detail.contains("dropped by netfilter in netns n2 on eth0 (2 packets)"), "{}", c.detail);
        assert_eq!(c.evidence.len(), 1);
    }

    #[test]
    fn timeout_without_evidence_says_so() {
        let c = tcp_verdict(&report(Outcome::TimedOut, vec![]), true);
        assert_eq!(c.cause, Some(Cause::Timeout));
        assert!(c.detail.contains("no drop seen"), "{}", c.detail);
        let c = tcp_verdict(&report(Outcome::TimedOut, vec![]), false);
        assert!(c.detail.contains("capture unavailable"), "{}", c.detail);
    }

    #[test]
    fn refused_names_the_listener_side() {
        let rst = ev(EventKind::Rst, "NO_SOCKET", "n2");
        let c =
            tcp_verdict(&report(Outcome::Failed(io::Error::from_raw_os_error(libc::ECONNREFUSED)), vec![rst]), true);
        assert_eq!(c.cause, Some(Cause::Refused));
        assert!(c.detail.contains("nothing listens"), "{}", c.detail);
    }

    /// Before 6.10 no RST is traced for a SYN without a socket: the SYN's drop says it, by
    /// reason (5.17+) or by the function that dropped it (before 5.17).
    #[test]
    fn refused_without_a_traced_rst_names_the_syns_drop() {
        let refused = || Outcome::Failed(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let c = tcp_verdict(&report(refused(), vec![ev(EventKind::Drop, "NO_SOCKET", "n2")]), true);
        assert_eq!(c.cause, Some(Cause::Refused));
        assert_eq!(
            c.detail,
            "connection refused: nothing listens there (the SYN found no socket in netns n2: NO_SOCKET)"
        );
        let mut located = ev(EventKind::Drop, "x", "n2");
        located.reason = None;
        located.location = Some("tcp_v4_rcv+0x4d2".into());
        let c = tcp_verdict(&report(refused(), vec![located.clone()]), true);
        assert!(c.detail.ends_with("(the SYN found no socket in netns n2: tcp_v4_rcv+0x4d2)"), "{}", c.detail);
        // Dropped elsewhere without a reason: not taken for "no socket".
        located.location = Some("ip_rcv_core+0x10".into());
        let c = tcp_verdict(&report(refused(), vec![located]), true);
        assert_eq!(c.detail, "connection refused (RST)");
    }

    #[test]
    fn reject_is_unreachable_with_icmp_and_drop() {
        let icmp = ev(EventKind::Icmp, "host-prohibited", "n1");
        let drop = ev(EventKind::Drop, "NETFILTER_DROP", "n1");
        let err = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        let c = tcp_verdict(&report(Outcome::Failed(err), vec![drop, icmp]), true);
        assert_eq!(c.cause, Some(Cause::Unreachable));
        assert!(c.detail.contains("host-prohibited sent by netns n1 (a netfilter REJECT rule)"), "{}", c.detail);
    }

    /// Without the icmp_send tracepoint the REJECT's drop still names netfilter, and the missing
    /// ICMP is put down to the kernel, not guessed at.
    #[test]
    fn reject_on_a_kernel_without_icmp_send_says_why_no_icmp() {
        let mut r = report(
            Outcome::Failed(io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            vec![ev(EventKind::Drop, "NETFILTER_DROP", "n1")],
        );
        r.icmp_unseen = Some("kernel 5.10.0-46-amd64 has no tracepoint icmp_send".into());
        let c = tcp_verdict(&r, true);
        assert_eq!(c.cause, Some(Cause::Unreachable));
        assert_eq!(
            c.detail,
            "connect: no route to host: ICMP errors are not captured on this kernel (kernel 5.10.0-46-amd64 has no \
             tracepoint icmp_send); the SYN was dropped by netfilter in netns n1 on eth0"
        );
    }

    #[test]
    fn pass_has_no_cause() {
        let c = tcp_verdict(&report(Outcome::Connected, vec![]), true);
        assert_eq!((c.status, c.cause), (Status::Pass, None));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["cause"], serde_json::Value::Null);
        assert_eq!(json["status"], "pass");
        assert_eq!(json["probe"], "tcp");
        assert!(json["hops"].as_array().unwrap().is_empty());
    }
}
