//! DNS verdicts: the pod's lookup (first check) and a check per rung of the ladder. The
//! lookup's verdict names the deepest rung that fails, which is where the fault is: a dead
//! upstream makes CoreDNS answer SERVFAIL, a dead CoreDNS replica makes the Service fail
//! for the share of flows kube-proxy sends to it.

use std::{fmt::Write as _, net::SocketAddr};

use serde::Serialize;

use super::{Cause, Check, Data, Evidence, Probe, Status, Verdict, describe_drop, drops, millis as ms};
use crate::{
    capture::event::{EventKind, KernelEvent},
    probes::dns::{Lookup, Outcome, QueryReport, Report, Role, Rung, Transport},
};

/// The DNS part of a check's JSON (`data.dns`).
#[derive(Debug, Clone, Serialize)]
pub struct DnsData {
    /// The name as given.
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    /// `lookup` (the resolver's walk over resolv.conf) or the rung: server, endpoint, upstream.
    pub role: &'static str,
    /// Every query made, in order.
    pub queries: Vec<QueryData>,
    /// The address of a rung behind the Service (a CoreDNS endpoint or an upstream): the node's
    /// problems group its symptoms under it. Not in the JSON (the target names it).
    #[serde(skip)]
    pub rung: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryData {
    pub name: String,
    pub server: SocketAddr,
    pub transport: Transport,
    /// answer, nodata, nxdomain, servfail, refused, rcode, truncated, timeout,
    /// port_unreachable, unreachable, no_route, blocked, error.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answer: Vec<String>,
    pub ms: u64,
}

fn query_data(q: &QueryReport) -> QueryData {
    QueryData {
        name: q.name.to_ascii(),
        server: q.server,
        transport: q.transport,
        result: q.outcome.code(),
        answer: match &q.outcome {
            Outcome::Answer(a) => a.clone(),
            _ => Vec::new(),
        },
        ms: ms(q.elapsed),
    }
}

/// The checks of one `check dns NAME`: the lookup first, then the rungs in ladder order.
pub fn verdicts(report: &Report, capture_on: bool) -> Vec<Check> {
    let qtype = report.spec.rtype.to_string();
    let data = |role: &'static str, rung: Option<SocketAddr>, queries: &[QueryReport]| {
        Some(Data::Dns(DnsData {
            name: report.spec.name.clone(),
            qtype: qtype.clone(),
            role,
            queries: queries.iter().map(query_data).collect(),
            rung,
        }))
    };
    let mut rung_checks: Vec<(Role, Check)> = report
        .rungs
        .iter()
        .map(|r| {
            let Verdict { status, cause, detail } = rung_verdict(r, capture_on);
            let check = Check {
                probe: Probe::Dns,
                target: format!("{} {}", r.role.as_str(), r.server),
                status,
                cause,
                detail,
                duration_ms: r.queries.iter().map(|q| ms(q.elapsed)).max().unwrap_or(0),
                evidence: Evidence::fold(r.queries.iter().flat_map(|q| q.events.clone()).collect()),
                hops: Vec::new(),
                data: data(r.role.as_str(), (r.role != Role::Server).then_some(r.server), &r.queries),
                peer: None,
            };
            (r.role, check)
        })
        .collect();
    // Where each server rung's unanswered queries were really sent (after the Service's DNAT).
    let sent_to: Vec<Vec<SocketAddr>> = report
        .rungs
        .iter()
        .map(|r| {
            r.queries
                .iter()
                .filter(|q| !answered(q))
                .filter_map(|q| q.local.and_then(|l| dnat_target(&q.events, l, q.server)))
                .collect()
        })
        .collect();
    endpoints_behind_servers(&mut rung_checks, &sent_to);

    let Verdict { mut status, mut cause, mut detail } = lookup_verdict(report, capture_on);
    // The deepest failing rung is where the fault is.
    if let Some((_, root)) = rung_checks.iter().rev().find(|(_, c)| c.status == Status::Fail) {
        let _ = write!(detail, "; failing rung: {}: {}", root.target, root.detail);
        if report.lookup.answer().is_some() {
            // Resolved this time; the failing rung makes some lookups fail (a Service with a
            // dead endpoint: intermittently).
            let partial = rung_checks.iter().any(|(r, c)| *r == Role::Server && c.cause == Some(Cause::Partial));
            status = Status::Warn;
            cause = if partial { Some(Cause::Partial) } else { cause.or(root.cause) };
        }
    }
    let lookup_check = Check {
        probe: Probe::Dns,
        target: report.spec.name.clone(),
        status,
        cause,
        detail,
        duration_ms: ms(report.lookup.elapsed),
        evidence: Evidence::fold(report.lookup.queries.iter().flat_map(|q| q.events.clone()).collect()),
        hops: Vec::new(),
        data: data("lookup", None, &report.lookup.queries),
        peer: None,
    };
    let mut checks: Vec<Check> = std::iter::once(lookup_check).chain(rung_checks.into_iter().map(|(_, c)| c)).collect();
    if let Some(why) = &report.discovery_failed {
        let (ns, name) = crate::discovery::api::DNS_SERVICE;
        let detail = format!("not discovered from the API: {why}; --endpoint asks CoreDNS pods directly");
        checks.push(Check::file(Probe::Dns, format!("endpoints of {ns}/{name}"), Verdict::skip(detail)));
    }
    checks
}

/// A Service whose endpoints partly fail is itself partial, even when the queries it got
/// happened to land only on the healthy ones, or only on the failing ones (kube-proxy picks an
/// endpoint per flow; the kernel shows where each unanswered query was sent).
fn endpoints_behind_servers(rungs: &mut [(Role, Check)], sent_to: &[Vec<SocketAddr>]) {
    let endpoints: Vec<&Check> = rungs.iter().filter(|(r, _)| *r == Role::Endpoint).map(|(_, c)| c).collect();
    let failing: Vec<String> = endpoints
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.target.trim_start_matches("endpoint ").to_string())
        .collect();
    let total = endpoints.len();
    if failing.is_empty() || failing.len() == total {
        return;
    }
    let note = format!(
        "CoreDNS endpoint{} {} behind it do{} not answer: about {} in {} lookups through it fail",
        if failing.len() == 1 { "" } else { "s" },
        failing.join(", "),
        if failing.len() == 1 { "es" } else { "" },
        failing.len(),
        total
    );
    for ((role, c), sent) in rungs.iter_mut().zip(sent_to) {
        if *role != Role::Server {
            continue;
        }
        let only_to_failing = !sent.is_empty() && sent.iter().all(|a| failing.contains(&a.to_string()));
        if matches!(c.status, Status::Pass | Status::Warn) {
            c.status = Status::Fail;
            c.cause = Some(Cause::Partial);
            c.detail = format!("{}, but {note}", c.detail);
        } else if c.cause == Some(Cause::Partial) {
            let _ = write!(c.detail, "; {note}");
        } else if only_to_failing {
            c.cause = Some(Cause::Partial);
            let _ = write!(c.detail, "; every unanswered query was sent to a failing endpoint; {note}");
        }
    }
}

/// A query that got an answer from the server (records, NODATA, NXDOMAIN, or a truncated UDP
/// answer): the server works.
fn answered(q: &QueryReport) -> bool {
    q.outcome.is_answer() || q.outcome == Outcome::Truncated
}

fn rung_verdict(r: &Rung, capture_on: bool) -> Verdict {
    if let Some(why) = &r.skipped {
        return Verdict::skip(why.clone());
    }
    let count = |t: Transport| {
        let of: Vec<&QueryReport> = r.queries.iter().filter(|q| q.transport == t).collect();
        (of.iter().filter(|q| answered(q)).count(), of.len())
    };
    let ((udp_ok, udp_n), (tcp_ok, tcp_n)) = (count(Transport::Udp), count(Transport::Tcp));
    let counts = format!("udp {udp_ok}/{udp_n}, tcp {tcp_ok}/{tcp_n}");
    let name = r.name.to_ascii();
    let ok: Vec<&QueryReport> = r.queries.iter().filter(|q| answered(q)).collect();
    let mut failed: Vec<&QueryReport> = r.queries.iter().filter(|q| !answered(q)).collect();
    // The most telling failure speaks for the rest: an explicit refusal or unreachable (ICMP
    // replies are rate-limited, so some of a burst of queries only time out), then kernel
    // evidence, then plain silence.
    failed.sort_by_key(|q| telling(q));
    let Some(first_failure) = failed.first() else {
        let fastest = ok.iter().map(|q| q.elapsed).min().unwrap_or_default();
        let answer = ok.first().map(|q| q.outcome.to_string()).unwrap_or_default();
        return Verdict::pass(format!("{name}: {answer} ({counts} answered, {} ms)", ms(fastest)));
    };
    let (cause, why) = failure(first_failure, capture_on);
    if ok.is_empty() {
        return Verdict::fail(cause, format!("{name}: {why} ({counts} answered)"));
    }
    if udp_ok == udp_n && tcp_ok == 0 {
        return Verdict::fail(cause, format!("UDP answers, TCP does not: {why} ({counts} answered)"));
    }
    if tcp_ok == tcp_n && udp_ok == 0 {
        return Verdict::fail(cause, format!("TCP answers, UDP does not: {why} ({counts} answered)"));
    }
    let detail = format!("{} of {} queries answered ({counts}); the others: {why}", ok.len(), r.queries.len());
    Verdict::fail(Cause::Partial, detail)
}

/// Lower is more telling (see `rung_verdict`).
fn telling(q: &QueryReport) -> u8 {
    match q.outcome {
        Outcome::PortRefused | Outcome::Unreachable(_) | Outcome::NoRoute(_) | Outcome::Blocked => 0,
        Outcome::ServFail | Outcome::Refused | Outcome::Rcode(_) => 1,
        Outcome::TimedOut if q.events.iter().any(|e| e.kind == EventKind::Drop) => 2,
        Outcome::TimedOut => 4,
        _ => 3,
    }
}

/// The cause of a query that got no usable answer, and a sentence naming what the kernel saw.
fn failure(q: &QueryReport, capture_on: bool) -> (Cause, String) {
    let evidence = Evidence::fold(q.events.clone());
    let drop = drops(&evidence)
        .find(|e| e.event.reason.as_deref() == Some("NETFILTER_DROP"))
        .or_else(|| drops(&evidence).next());
    let icmp = evidence.iter().find(|e| e.event.kind == EventKind::Icmp);
    let via = q.local.and_then(|l| dnat_target(&q.events, l, q.server));
    let via = via.map(|d| format!(" (sent on to {d})")).unwrap_or_default();
    let transport = q.transport.as_str();
    let unseen = if capture_on { super::NO_DROP_SEEN } else { "capture unavailable" };
    match &q.outcome {
        Outcome::TimedOut => match drop {
            Some(e) if e.event.reason.as_deref() == Some("NETFILTER_DROP") => (
                Cause::NetfilterDrop,
                format!("no answer over {transport} in {:.1} s{via}: {}", q.elapsed.as_secs_f64(), describe_drop(e)),
            ),
            Some(e) => (
                Cause::DnsTimeout,
                format!("no answer over {transport} in {:.1} s{via}: {}", q.elapsed.as_secs_f64(), describe_drop(e)),
            ),
            None => (
                Cause::DnsTimeout,
                format!("no answer over {transport} in {:.1} s{via} ({unseen})", q.elapsed.as_secs_f64()),
            ),
        },
        Outcome::PortRefused => {
            let from = icmp.map(|i| format!(", from netns {}", i.event.netns)).unwrap_or_default();
            let how = if q.transport == Transport::Udp { "ICMP port unreachable" } else { "RST" };
            (Cause::Refused, format!("nothing listens on port {} ({how}{from})", q.server.port()))
        }
        Outcome::Unreachable(e) => {
            let from = icmp
                .map(|i| format!(": ICMP {} from netns {}", i.event.reason.as_deref().unwrap_or("?"), i.event.netns))
                .unwrap_or_default();
            (Cause::Unreachable, format!("{e}{from}"))
        }
        Outcome::NoRoute(e) => (Cause::NoRoute, format!("no route to the server from this namespace ({e})")),
        Outcome::Blocked => (Cause::NetfilterDrop, "blocked by netfilter on this host (EPERM)".to_string()),
        Outcome::ServFail => (Cause::Servfail, "SERVFAIL: the server could not get an answer".to_string()),
        Outcome::Refused => (Cause::Refused, "REFUSED: the server will not answer this query".to_string()),
        other => (Cause::ProbeError, other.to_string()),
    }
}

/// Where a query to a Service IP was really sent: the destination the kernel saw on the
/// query's own packets (after DNAT), when it differs from the address dialled.
fn dnat_target(events: &[KernelEvent], local: SocketAddr, dialled: SocketAddr) -> Option<SocketAddr> {
    events.iter().flat_map(|e| [e.inner.as_ref(), e.flow.as_ref()]).flatten().find_map(|f| {
        let src = f.src;
        (src == local && f.dst != dialled).then_some(f.dst)
    })
}

fn lookup_verdict(report: &Report, capture_on: bool) -> Verdict {
    let conf = &report.spec.conf;
    let lookup = &report.lookup;
    let name = &report.spec.name;
    let server = conf.nameservers.first().map(|s| SocketAddr::new(*s, crate::probes::dns::PORT));
    let on = server.map(|s| format!(" on {s}")).unwrap_or_default();
    let asked = asked(lookup);
    if conf.nameservers.is_empty() {
        return Verdict::fail(Cause::ProbeError, "resolv.conf lists no nameserver");
    }
    if let Some(a) = lookup.answer() {
        let extra = lookup.queries.len() - 1;
        let mut d = format!(
            "{} {} {} from {} in {} ms",
            a.name.to_ascii(),
            report.spec.rtype,
            a.outcome,
            a.server,
            ms(a.elapsed)
        );
        if extra > 0 {
            let _ = write!(d, "; asked {asked}");
        }
        // Answered only after silence: a pod waits its resolver timeout for each such query.
        if let Some(silent) = lookup.queries.iter().find(|q| !answered(q) && !q.outcome.is_error_rcode()) {
            let (cause, why) = failure(silent, capture_on);
            let cause = if cause == Cause::NetfilterDrop { cause } else { Cause::DnsTimeout };
            let _ = write!(d, "; an earlier query got {why}");
            return Verdict::warn(cause, d);
        }
        return Verdict::pass(d);
    }
    let last = lookup.queries.last();
    let all_negative = !lookup.queries.is_empty()
        && lookup.queries.iter().all(|q| matches!(q.outcome, Outcome::NxDomain | Outcome::NoData));
    if all_negative {
        let nodata = lookup.queries.iter().any(|q| q.outcome == Outcome::NoData);
        let cause = if nodata { Cause::Nodata } else { Cause::Nxdomain };
        let what = if nodata { "no such host (the name exists without that record type)" } else { "no such host" };
        return Verdict::fail(cause, format!("lookup {name}{on}: {what}; asked {asked}"));
    }
    let Some(last) = last else {
        return Verdict::fail(Cause::DnsTimeout, format!("lookup {name}: no time left to ask"));
    };
    // The query that decided: the first non-negative outcome.
    let decisive =
        lookup.queries.iter().find(|q| !matches!(q.outcome, Outcome::NxDomain | Outcome::NoData)).unwrap_or(last);
    let (cause, why) = failure(decisive, capture_on);
    let cause = match (&decisive.outcome, cause) {
        (Outcome::TimedOut, Cause::NetfilterDrop) => Cause::NetfilterDrop,
        (Outcome::TimedOut, _) => Cause::DnsTimeout,
        (_, c) => c,
    };
    let mut d = format!("lookup {name}{on}: {why}");
    if decisive.outcome == Outcome::TimedOut {
        let _ = write!(
            d,
            " (a pod's resolver waits {} s x {} attempts per server before giving up)",
            conf.timeout.as_secs(),
            conf.attempts
        );
    }
    let _ = write!(d, "; asked {asked}");
    if lookup.out_of_time {
        d.push_str("; stopped at the deadline");
    }
    Verdict::fail(cause, d)
}

/// "a (NXDOMAIN), b (SERVFAIL)": each name asked, once, with what came back last.
fn asked(lookup: &Lookup) -> String {
    let mut seen: Vec<(String, String)> = Vec::new();
    for q in &lookup.queries {
        let n = q.name.to_ascii();
        let short = match &q.outcome {
            Outcome::Answer(_) => "answered".to_string(),
            Outcome::TimedOut => "no answer".to_string(),
            o => o.code().to_uppercase(),
        };
        if let Some(e) = seen.iter_mut().find(|(name, _)| *name == n) {
            e.1 = short;
        } else {
            seen.push((n, short));
        }
    }
    seen.iter().map(|(n, o)| format!("{n} ({o})")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;

    use std::time::Duration;

    use super::*;
    use crate::probes::dns::{ResolvConf, Spec};

    fn q(name: &str, server: &str, transport: Transport, outcome: Outcome) -> QueryReport {
        QueryReport {
            server: server.parse().unwrap(),
            name: Name::from_ascii(name).unwrap(),
            transport,
            local: Some("10.244.1.2:40000".parse().unwrap()),
            outcome,
            elapsed: Duration::from_millis(3),
            events: Vec::new(),
        }
    }

    fn report(lookup: Vec<QueryReport>, answered: Option<usize>, rungs: Vec<Rung>) -> Report {
        let conf = ResolvConf::parse(
            b"nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        );
        Report {
            spec: Spec::new("kubernetes.default", conf),
            expansions: vec![],
            lookup: Lookup { queries: lookup, answered, out_of_time: false, elapsed: Duration::from_millis(10) },
            rungs,
            elapsed: Duration::from_millis(10),
            discovery_failed: None,
        }
    }

    fn rung(role: Role, server: &str, outcomes: &[(Transport, Outcome)]) -> Rung {
        Rung {
            role,
            server: server.parse().unwrap(),
            name: Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap(),
            skipped: None,
            queries: outcomes
                .iter()
                .map(|(t, o)| q("kubernetes.default.svc.cluster.local.", server, *t, o.clone()))
                .collect(),
        }
    }

    const UDP: Transport = Transport::Udp;
    const TCP: Transport = Transport::Tcp;

    fn answer() -> Outcome {
        Outcome::Answer(vec!["10.96.0.1".into()])
    }

    #[test]
    fn nxdomain_lists_every_expansion() {
        let lookup = vec![
            q("x.default.default.svc.cluster.local.", "10.96.0.10:53", UDP, Outcome::NxDomain),
            q("x.default.svc.cluster.local.", "10.96.0.10:53", UDP, Outcome::NxDomain),
        ];
        let checks = verdicts(&report(lookup, None, vec![]), true);
        let c = &checks[0];
        assert_eq!((c.status, c.cause), (Status::Fail, Some(Cause::Nxdomain)));
        assert!(c.detail.starts_with("lookup kubernetes.default on 10.96.0.10:53: no such host"), "{}", c.detail);
        assert!(c.detail.contains("x.default.svc.cluster.local. (NXDOMAIN)"), "{}", c.detail);
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["data"]["dns"]["role"], "lookup");
        assert_eq!(json["data"]["dns"]["queries"][1]["result"], "nxdomain");
    }

    #[test]
    fn one_dead_endpoint_makes_the_service_partial_and_the_lookup_warn() {
        let lookup = vec![q("kubernetes.default.svc.cluster.local.", "10.96.0.10:53", UDP, answer())];
        let rungs = vec![
            rung(Role::Server, "10.96.0.10:53", &[(UDP, answer()), (UDP, answer()), (TCP, answer())]),
            rung(Role::Endpoint, "10.244.1.10:53", &[(UDP, answer()), (TCP, answer())]),
            rung(Role::Endpoint, "10.244.2.10:53", &[(UDP, Outcome::TimedOut), (TCP, Outcome::TimedOut)]),
        ];
        let checks = verdicts(&report(lookup, Some(0), rungs), true);
        assert_eq!((checks[0].status, checks[0].cause), (Status::Warn, Some(Cause::Partial)));
        assert_eq!((checks[1].status, checks[1].cause), (Status::Fail, Some(Cause::Partial)));
        assert!(checks[1].detail.contains("endpoint 10.244.2.10:53 behind it does not answer"), "{}", checks[1].detail);
        assert_eq!((checks[2].status, checks[3].status), (Status::Pass, Status::Fail));
        assert!(checks[0].detail.contains("failing rung: endpoint 10.244.2.10:53"), "{}", checks[0].detail);
    }

    #[test]
    fn a_service_whose_samples_all_hit_the_dead_endpoint_is_still_partial() {
        use crate::capture::event::{FlowView, Proto};
        let mut dropped = crate::verdict::tests::ev(EventKind::Drop, "NETFILTER_DROP", "n2");
        dropped.flow = Some(FlowView {
            proto: Proto::Udp,
            src: "10.244.1.2:40000".parse().unwrap(),
            dst: "10.244.2.10:53".parse().unwrap(),
        });
        let mut server = rung(Role::Server, "10.96.0.10:53", &[(UDP, Outcome::TimedOut), (UDP, Outcome::TimedOut)]);
        for q in &mut server.queries {
            q.events = vec![dropped.clone()];
        }
        let rungs = vec![
            server,
            rung(Role::Endpoint, "10.244.1.10:53", &[(UDP, answer())]),
            rung(Role::Endpoint, "10.244.2.10:53", &[(UDP, Outcome::TimedOut)]),
        ];
        let checks = verdicts(&report(vec![], None, rungs), true);
        assert_eq!(checks[1].cause, Some(Cause::Partial), "{}", checks[1].detail);
        assert!(checks[1].detail.contains("every unanswered query was sent to a failing endpoint"));
    }

    #[test]
    fn some_queries_unanswered_is_partial_and_tcp_only_failures_say_so() {
        let r = rung(Role::Server, "10.96.0.10:53", &[(UDP, answer()), (UDP, Outcome::TimedOut), (TCP, answer())]);
        let Verdict { status: s, cause: c, detail: d } = rung_verdict(&r, true);
        assert_eq!((s, c), (Status::Fail, Some(Cause::Partial)));
        assert!(d.starts_with("2 of 3 queries answered (udp 1/2, tcp 1/1)"), "{d}");
        let r = rung(Role::Endpoint, "10.244.1.10:53", &[(UDP, answer()), (TCP, Outcome::PortRefused)]);
        let Verdict { status: _, cause: c, detail: d } = rung_verdict(&r, true);
        assert_eq!(c, Some(Cause::Refused));
        assert!(d.starts_with("UDP answers, TCP does not: nothing listens on port 53 (RST"), "{d}");
    }

    #[test]
    fn servfail_names_the_dead_upstream() {
        let name = "www.example.com.";
        let lookup = vec![q(name, "10.96.0.10:53", UDP, Outcome::ServFail)];
        let mut up = rung(Role::Upstream, "192.168.50.53:53", &[(UDP, Outcome::PortRefused)]);
        up.name = Name::from_ascii(name).unwrap();
        let rungs = vec![rung(Role::Server, "10.96.0.10:53", &[(UDP, Outcome::ServFail)]), up];
        let checks = verdicts(&report(lookup, None, rungs), true);
        assert_eq!(checks[0].cause, Some(Cause::Servfail));
        assert!(
            checks[0].detail.contains("failing rung: upstream 192.168.50.53:53: www.example.com.: nothing listens"),
            "{}",
            checks[0].detail
        );
        assert_eq!(checks[2].cause, Some(Cause::Refused));
    }

    #[test]
    fn timeouts_with_a_netfilter_drop_name_it_and_the_dnat_target() {
        use crate::capture::event::{FlowView, Proto};
        let mut ev = crate::verdict::tests::ev(EventKind::Drop, "NETFILTER_DROP", "n2");
        ev.flow = Some(FlowView {
            proto: Proto::Udp,
            src: "10.244.1.2:40000".parse().unwrap(),
            dst: "10.244.2.10:53".parse().unwrap(),
        });
        let mut query = q("a.", "10.96.0.10:53", UDP, Outcome::TimedOut);
        query.events = vec![ev];
        let (cause, why) = failure(&query, true);
        assert_eq!(cause, Cause::NetfilterDrop);
        assert!(why.contains("(sent on to 10.244.2.10:53): dropped by netfilter in netns n2"), "{why}");
    }
}
