//! `check service`'s rows: the Service in the API, kube-proxy, its rules for the port, the
//! Service IP (each probe with the endpoint conntrack says it was DNATed to), each endpoint
//! directly, and for UDP the stale conntrack entries. The Service IP's row separates the
//! causes an operator acts on differently: no endpoint, kube-proxy has not programmed the
//! Service, no route (never DNATed), one endpoint broken, every endpoint's path broken. A
//! NodePort's rows are [`nodeport`]'s.

mod nodeport;

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use super::{Cause, Check, Evidence, Probe, Verdict};
use crate::{
    discovery::{
        conntrack,
        iptables::{Backend, ReadError},
        kube_proxy::Programmed,
        services::Endpoint,
    },
    probes::service::{Answer, Attempt, Report, Rules},
};

/// `data.service` of the Service IP's check: each probe with the endpoint it was DNATed to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceData {
    pub probes: Vec<ServiceProbe>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceProbe {
    /// The probe's own source address and port (its conntrack original tuple's source).
    pub local: Option<SocketAddr>,
    /// Where conntrack says the DNAT sent it: none when it was not DNATed (or unknown, see `conntrack`).
    pub endpoint: Option<SocketAddr>,
    pub node: Option<String>,
    pub pod: Option<String>,
    pub answered: bool,
    /// "answered", "refused", "no answer", or the error.
    pub outcome: String,
    /// The conntrack entry: "dnat", "not_dnated", "none" (no entry), or why it was not read.
    pub conntrack: String,
}

fn probe_data(r: &Report) -> ServiceData {
    let known = |ep: SocketAddr| r.service.as_ref().ok().and_then(|p| p.endpoints.iter().find(|e| e.addr == ep));
    let probes = r
        .vip_probes
        .iter()
        .map(|a| {
            let endpoint = a.endpoint();
            let e = endpoint.and_then(known);
            ServiceProbe {
                local: a.local,
                endpoint,
                node: e.and_then(|e| e.node.clone()),
                pod: e.and_then(|e| e.pod.clone()),
                answered: a.answer.ok(),
                outcome: answer_text(&a.answer),
                conntrack: match (&a.conntrack, endpoint) {
                    (_, Some(_)) => "dnat".into(),
                    (Some(Ok(Some(_))), None) => "not_dnated".into(),
                    (Some(Ok(None)) | None, None) => "none".into(),
                    (Some(Err(e)), None) => e.clone(),
                },
            }
        })
        .collect();
    ServiceData { probes }
}

pub fn verdicts(r: &Report, capture_on: bool) -> Vec<Check> {
    let mut out = vec![service(r), kube_proxy(r)];
    if let Some(vip) = r.vip {
        out.push(rules(r, vip));
        out.push(vip_row(r, vip, capture_on));
    }
    for (addr, a) in &r.endpoint_probes {
        out.push(endpoint_row(r, *addr, a));
    }
    if let (Some(stale), Some(vip)) = (&r.stale, r.vip) {
        out.push(stale_row(vip, stale));
    }
    out.extend(nodeport::rows(r, capture_on));
    out
}

fn name(r: &Report) -> String {
    match &r.service {
        Ok(p) => format!("{} {}", p.port_name_string(), p.l4),
        Err(_) => r.wanted.to_string(),
    }
}

fn service(r: &Report) -> Check {
    let verdict = match &r.service {
        Err(e) if r.absent => Verdict::fail(
            Cause::ServiceNotFound,
            format!("{e}: clients resolving or dialling it get nothing (check the namespace, name and port)"),
        ),
        Err(e) => Verdict::skip(format!("not asked of the API: {e}")),
        Ok(p) => {
            let ready = p.ready().count();
            let list = endpoints_text(&p.endpoints);
            match (p.cluster_ip, ready) {
                (None, _) => {
                    Verdict::skip(format!("headless (clusterIP None): no Service IP, no kube-proxy rules; {list}"))
                }
                (Some(_), 0) => Verdict::fail(
                    Cause::ServiceNoEndpoints,
                    format!(
                        "no ready endpoint in its EndpointSlices ({list}): kube-proxy rejects the Service IP; check the \
                         selector matches running pods and their readiness probes"
                    ),
                ),
                (Some(ip), n) => Verdict::pass(format!("{ip}:{} {}: {n} ready ({list})", p.port, p.l4)),
            }
        }
    };
    Check::file(Probe::Service, name(r), verdict)
}

fn endpoints_text(eps: &[Endpoint]) -> String {
    if eps.is_empty() {
        return "no endpoints".into();
    }
    let shown: Vec<String> = eps
        .iter()
        .map(|e| {
            let state = match (e.ready, e.serving, e.terminating) {
                (true, _, _) => "ready",
                (false, true, true) => "terminating, serving",
                (false, _, true) => "terminating",
                (false, true, false) => "serving, not ready",
                (false, false, false) => "not ready",
            };
            let node = e.node.as_ref().map_or(String::new(), |n| format!(" on {n}"));
            format!("{}{node} {state}", e.addr)
        })
        .collect();
    shown.join(", ")
}

fn kube_proxy(r: &Report) -> Check {
    let kp = &r.kube_proxy;
    let mode = kp.mode.as_ref().map_or_else(|e| format!("mode unknown (/proxyMode: {e})"), |m| format!("mode {m}"));
    let verdict = match &kp.healthz {
        Ok((200, _)) => Verdict::pass(format!("healthz 200 on 127.0.0.1:10256, {mode}")),
        Ok((code, body)) => Verdict::fail(
            Cause::KubeProxyUnhealthy,
            format!(
                "healthz {code} on 127.0.0.1:10256 ({body}), {mode}: kube-proxy has not synced its rules within its \
                 healthz timeout, so changes to Services and endpoints are not in the node's rules"
            ),
        ),
        Err(e) => Verdict::skip(format!(
            "no answer on 127.0.0.1:10256 ({e}), {mode}: no kube-proxy in this network namespace, or a replacement \
             (Cilium, kube-router) that serves Services without it"
        )),
    };
    Check::file(Probe::KubeProxy, "127.0.0.1:10256".into(), verdict)
}

/// The rules row when no backend holds kube-proxy's rules.
const NO_RULES: &str = "no kube-proxy rules in either iptables backend, no nftables table ip kube-proxy and no \
                        IPVS virtual server (no kube-proxy, or one that has not synced)";

/// The addresses in `got` and not in `want`, and those in `want` and not in `got`.
fn differ(got: &[SocketAddr], want: &[SocketAddr]) -> (Vec<String>, Vec<String>) {
    let extra = got.iter().filter(|e| !want.contains(e)).map(ToString::to_string).collect();
    let missing = want.iter().filter(|e| !got.contains(e)).map(ToString::to_string).collect();
    (extra, missing)
}

/// A rules row without CAP_NET_ADMIN: a skip naming it, and what is probed anyway.
fn rules_unread(target: String, still_probed: &str) -> Check {
    Check::file(
        Probe::Iptables,
        target,
        Verdict::skip(format!(
            "not read: kube-proxy's rules need CAP_NET_ADMIN, which this process lacks ({still_probed} still probed)"
        )),
    )
}

fn ready_addrs(r: &Report) -> Option<Vec<SocketAddr>> {
    r.service.as_ref().ok().map(|p| p.ready().map(|e| e.addr).collect())
}

fn rules(r: &Report, vip: SocketAddr) -> Check {
    let target = format!("rules {vip} {}", r.l4);
    let ready = ready_addrs(r);
    let mut lines = Vec::new();
    let mut failed = None;
    for Rules { backend, programmed } in &r.rules {
        let tool = backend.tool();
        match programmed {
            Err(ReadError::NoCapability) => return rules_unread(target, "the Service IP and endpoints are"),
            Err(e) => lines.push(format!("{tool}: not read ({e})")),
            Ok(Programmed::Endpoints { chains, endpoints, .. }) => {
                let shown: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                lines.push(format!("{tool}: {} → DNAT to {}", chains.join(" → "), shown.join(", ")));
                if let Some(ready) = &ready {
                    let (extra, missing) = differ(endpoints, ready);
                    if !extra.is_empty() || !missing.is_empty() {
                        let mut why = String::new();
                        if !extra.is_empty() {
                            let _ = write!(why, "DNAT to {} which no EndpointSlice lists as ready", extra.join(", "));
                        }
                        if !missing.is_empty() {
                            if !why.is_empty() {
                                why.push_str("; ");
                            }
                            let _ = write!(why, "no rule for ready endpoint {}", missing.join(", "));
                        }
                        failed.get_or_insert(format!("{tool}: {why}"));
                    }
                }
            }
            Ok(Programmed::Rejected { target: t, comment, .. }) => {
                let comment = comment.as_ref().map_or(String::new(), |c| format!(" ({c:?})"));
                lines.push(if *backend == Backend::NftablesMode {
                    format!("{tool}: {t}{comment}")
                } else {
                    format!("{tool}: filter KUBE-SERVICES -j {t}{comment}")
                });
                if ready.as_ref().is_some_and(|r| !r.is_empty()) {
                    failed.get_or_insert(format!(
                        "{tool}: -j {t}{comment} although the EndpointSlices list ready endpoints"
                    ));
                }
            }
            Ok(Programmed::Unreachable { why, .. }) => {
                failed.get_or_insert(format!("{tool}: a virtual server for {vip} {}, but {why}", r.l4));
            }
            Ok(Programmed::Missing) => {
                let what = match backend {
                    Backend::NftablesMode => "no element of map service-ips",
                    Backend::Ipvs { .. } => "no virtual server",
                    Backend::Nft | Backend::Legacy => "no KUBE-SERVICES rule",
                };
                failed.get_or_insert(format!("{tool}: {what} matches {vip} {}", r.l4));
            }
        }
    }
    let verdict = if r.rules.is_empty() {
        Verdict::skip(NO_RULES)
    } else if let Some(why) = failed {
        Verdict::fail(
            Cause::ServiceNotProgrammed,
            if lines.is_empty() {
                format!("kube-proxy has not programmed this Service as the API has it: {why}")
            } else {
                format!("kube-proxy has not programmed this Service as the API has it: {why} ({})", lines.join("; "))
            },
        )
    } else {
        Verdict::pass(lines.join("; "))
    };
    Check::file(Probe::Iptables, target, verdict)
}

/// The endpoint a probe went to, as a person reads it: the address, and pod and node when known.
fn endpoint_name(r: &Report, addr: SocketAddr) -> String {
    let known = r.service.as_ref().ok().and_then(|p| p.endpoints.iter().find(|e| e.addr == addr));
    match known {
        Some(Endpoint { pod: Some(pod), node: Some(node), .. }) => format!("{addr} (pod {pod} on {node})"),
        Some(Endpoint { node: Some(node), .. }) => format!("{addr} (on {node})"),
        _ => addr.to_string(),
    }
}

fn answer_text(a: &Answer) -> String {
    match a {
        Answer::Answered => "answered".into(),
        Answer::Refused => "refused".into(),
        Answer::TimedOut => "no answer".into(),
        Answer::NoRoute(e) => format!("no route ({e})"),
        Answer::Failed(e) => e.clone(),
    }
}

/// Per endpoint conntrack named: (answered, failed); probes conntrack saw not DNATed; why
/// conntrack could not say.
struct Tally {
    by_endpoint: BTreeMap<SocketAddr, (usize, usize)>,
    not_dnated: usize,
    unknown: Option<String>,
}

fn tally(probes: &[Attempt]) -> Tally {
    let mut t = Tally { by_endpoint: BTreeMap::new(), not_dnated: 0, unknown: None };
    for a in probes {
        match (&a.conntrack, a.endpoint()) {
            (_, Some(ep)) => {
                let slot = t.by_endpoint.entry(ep).or_default();
                if a.answer.ok() { slot.0 += 1 } else { slot.1 += 1 }
            }
            (Some(Ok(Some(_))), None) => t.not_dnated += 1,
            (Some(Err(e)), None) => t.unknown = Some(e.clone()),
            _ => {}
        }
    }
    t
}

fn vip_detail(r: &Report, t: &Tally, ok: usize) -> String {
    let per_endpoint: Vec<String> = t
        .by_endpoint
        .iter()
        .map(|(ep, (good, bad))| {
            let name = endpoint_name(r, *ep);
            match (good, bad) {
                (g, 0) => format!("→ {name} answered ×{g}"),
                (0, b) => format!("→ {name} failed ×{b}"),
                (g, b) => format!("→ {name} answered ×{g}, failed ×{b}"),
            }
        })
        .collect();
    let mut detail = format!("{ok}/{} probes answered", r.vip_probes.len());
    if !per_endpoint.is_empty() {
        let _ = write!(detail, ": {}", per_endpoint.join("; "));
    }
    if let Some(e) = &t.unknown {
        let _ = write!(detail, "; the endpoint of each probe is not known: conntrack: {e}");
    }
    detail
}

fn vip_row(r: &Report, vip: SocketAddr, capture_on: bool) -> Check {
    let total = r.vip_probes.len();
    let ok = r.vip_probes.iter().filter(|a| a.answer.ok()).count();
    let evidence = Evidence::fold(r.vip_probes.iter().flat_map(|a| a.events.clone()).collect());
    let elapsed = r.vip_probes.iter().map(|a| a.elapsed).max().unwrap_or_default();
    let t = tally(&r.vip_probes);
    let Tally { by_endpoint, not_dnated, .. } = &t;
    let not_dnated = *not_dnated;
    let mut detail = vip_detail(r, &t, ok);
    let ready = ready_addrs(r);
    // A probe refused a route is never sent, so never DNATed: the node's own connections are
    // routed (ip_route_connect) before nat OUTPUT sees them.
    let no_route = r.vip_probes.iter().find_map(|a| match (&a.answer, a.endpoint()) {
        (Answer::NoRoute(e), None) => Some(e.clone()),
        _ => None,
    });
    // The kernel's word on the failed probes after their DNAT (their source is the probe's own).
    let drop = super::drops(&evidence).next().map_or(String::new(), |d| format!(", {}", super::describe_drop(d)));
    let verdict = if ok == total {
        Verdict::pass(detail)
    } else if ready.as_ref().is_some_and(Vec::is_empty) {
        Verdict::fail(Cause::ServiceNoEndpoints, format!("{detail}: the Service has no ready endpoint"))
    } else if not_dnated > 0 && by_endpoint.is_empty() {
        Verdict::fail(
            Cause::ServiceNotProgrammed,
            format!(
                "{detail}: conntrack shows {not_dnated} probes to {vip} not DNATed: no kube-proxy rule matched them \
                 on this node"
            ),
        )
    } else if let Some(e) = no_route {
        Verdict::fail(
            Cause::NoRoute,
            format!(
                "no route to {vip} ({e}): the node's own connections are routed before kube-proxy's DNAT (nat OUTPUT), \
                 so without a default route or one for the Service range they are never DNATed; pods' are (DNAT in \
                 PREROUTING comes first)"
            ),
        )
    } else {
        let failing: Vec<SocketAddr> = by_endpoint.iter().filter(|(_, (_, b))| *b > 0).map(|(e, _)| *e).collect();
        let healthy = by_endpoint.values().any(|(g, _)| *g > 0);
        let gone: Vec<String> = failing
            .iter()
            .filter(|e| ready.as_ref().is_some_and(|r| !r.contains(e)))
            .map(ToString::to_string)
            .collect();
        let failures = r.vip_probes.iter().filter(|a| !a.answer.ok()).map(|a| answer_text(&a.answer));
        let mut failures: Vec<String> = failures.collect();
        failures.dedup();
        let _ = write!(detail, " ({})", failures.join(", "));
        if !gone.is_empty() {
            Verdict::fail(
                Cause::ServiceNotProgrammed,
                format!(
                    "{detail}: DNATed to {}, which no EndpointSlice lists as ready: a stale kube-proxy rule",
                    gone.join(", ")
                ),
            )
        } else if healthy && !failing.is_empty() {
            let names: Vec<String> = failing.iter().map(|e| endpoint_name(r, *e)).collect();
            Verdict::fail(
                Cause::Partial,
                format!("{detail}: every failure was DNATed to {}{drop}: see its row", names.join(", ")),
            )
        } else if !failing.is_empty() {
            Verdict::fail(
                Cause::EndpointFailed,
                format!("{detail}: DNATed as the rules say, and failed at the endpoint{drop}: see the endpoints' rows"),
            )
        } else if ok > 0 {
            Verdict::fail(Cause::Partial, detail)
        } else {
            let cause =
                if r.vip_probes.iter().any(|a| a.answer == Answer::Refused) { Cause::Refused } else { Cause::Timeout };
            Verdict::fail(cause, detail)
        }
    };
    let detail_capture = if capture_on || verdict.status == super::Status::Pass {
        verdict
    } else {
        Verdict { detail: format!("{}; capture off: no kernel evidence", verdict.detail), ..verdict }
    };
    Check {
        data: Some(super::Data::Service(probe_data(r))),
        ..Check::probed(Probe::Service, format!("{vip} {}", r.l4), detail_capture, elapsed, evidence)
    }
}

fn endpoint_row(r: &Report, addr: SocketAddr, a: &Attempt) -> Check {
    let evidence = Evidence::fold(a.events.clone());
    let name = endpoint_name(r, addr);
    let drop = super::drops(&evidence).next().map(super::describe_drop);
    let verdict = match (&a.answer, drop) {
        (Answer::Answered, _) => Verdict::pass(format!("{name} answered directly")),
        (answer, Some(drop)) => Verdict::fail(Cause::NetfilterDrop, format!("{name}: {}: {drop}", answer_text(answer)))
            .with_cause_from(&evidence),
        (Answer::Refused, None) => {
            Verdict::fail(Cause::Refused, format!("{name}: refused: nothing listens on the port"))
        }
        (Answer::TimedOut, None) => Verdict::fail(Cause::Timeout, format!("{name}: no answer, no drop seen")),
        (Answer::NoRoute(e), None) => Verdict::fail(Cause::NoRoute, format!("{name}: no route ({e})")),
        (Answer::Failed(e), None) => Verdict::fail(Cause::ProbeError, format!("{name}: {e}")),
    };
    Check::probed(Probe::Endpoint, format!("{addr} {}", r.l4), verdict, a.elapsed, evidence)
}

fn stale_row(vip: SocketAddr, stale: &Result<Vec<conntrack::Entry>, String>) -> Check {
    let target = format!("conntrack {vip} udp");
    let verdict = match stale {
        Err(e) => Verdict::skip(format!("not read: {e}")),
        Ok(entries) if entries.is_empty() => Verdict::pass("no UDP entry to the Service IP points at a gone endpoint"),
        Ok(entries) => {
            let mut by_peer: BTreeMap<std::net::IpAddr, usize> = BTreeMap::new();
            for e in entries {
                *by_peer.entry(e.answered_by().ip()).or_default() += 1;
            }
            let shown: Vec<String> = by_peer
                .iter()
                .map(|(peer, n)| {
                    let what = if *peer == vip.ip() {
                        format!("{n} not DNATed (made before the Service's rules existed)")
                    } else {
                        format!("{n} DNATed to {peer}, not a serving endpoint")
                    };
                    format!("{what}: clear with `{}`", conntrack::delete_command(conntrack::L4::Udp, vip, *peer))
                })
                .collect();
            Verdict::fail(
                Cause::StaleConntrack,
                format!(
                    "{} UDP entries to {vip} point at no serving endpoint; a client reusing its source port keeps \
                     sending into them until they expire: {}",
                    entries.len(),
                    shown.join("; ")
                ),
            )
        }
    };
    Check::file(Probe::Conntrack, target, verdict)
}

trait FromEvidence {
    fn with_cause_from(self, evidence: &[Evidence]) -> Self;
}

impl FromEvidence for Verdict {
    /// A drop whose reason is not netfilter's is the kernel's.
    fn with_cause_from(mut self, evidence: &[Evidence]) -> Self {
        if super::drops(evidence).next().is_some_and(|e| e.event.reason.as_deref() != Some("NETFILTER_DROP")) {
            self.cause = Some(Cause::KernelDrop);
        }
        self
    }
}
