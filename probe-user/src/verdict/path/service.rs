//! The Service step of a path: kube-proxy's DNAT as a hop of its own, judged from the final
//! probe's conntrack entry (where the node sent it) against the Service's endpoints in the API.

use std::{fmt::Write as _, net::SocketAddr};

use super::hops::{Draft, Kind};
use crate::{
    discovery::kube_proxy::Programmed,
    probes::path::{Report, Source, service::ServiceStep},
    verdict::{Cause, Verdict},
};

/// The `dnat` hop: the chain it happens in is the node's nat PREROUTING for a pod's packets,
/// OUTPUT for the node's own.
pub(super) fn dnat_hop(report: &Report, step: &ServiceStep, node_ns: Option<&String>) -> Draft {
    let mut h = Draft::new(Kind::Dnat, node_ns.cloned(), None, false, String::new());
    h.chain = Some(if report.spec.from == Source::Host { "nat OUTPUT" } else { "nat PREROUTING" });
    let service = step.name().map_or_else(|| "the Service".to_string(), |n| format!("Service {n}"));
    let vip = step.vip;
    let found = step.found_by.join(" and ");
    if let Some(why) = &step.wrong_port {
        h.judge(Verdict::fail(
            Cause::ServiceNotFound,
            format!("{} is a Service IP ({found}), but {why}: nothing DNATs port {}", vip.ip(), vip.port()),
        ));
        return h;
    }
    let ready: Option<Vec<SocketAddr>> = step.port.as_ref().map(|p| p.ready().map(|e| e.addr).collect());
    match &step.conntrack {
        Some(Ok(Some(entry))) => {
            if let Some(ep) = entry.dnat_to() {
                h.hop.detail = format!(
                    "{vip} -> {} by kube-proxy's DNAT ({service}; the final probe's conntrack entry: {} -> {vip}, \
                     reply from {})",
                    endpoint(step, ep),
                    entry.orig.src,
                    entry.reply.src
                );
                if let Some(ready) = ready.filter(|r| !r.contains(&ep)) {
                    h.judge(Verdict::fail(
                        Cause::ServiceNotProgrammed,
                        format!(
                            "{vip} was DNATed to {ep}, which is not a ready endpoint of {service} ({}): kube-proxy's \
                             rules on this node are stale",
                            list(&ready)
                        ),
                    ));
                }
            } else {
                let (cause, why) = not_dnated(step, ready.as_deref());
                h.judge(Verdict::fail(
                    cause,
                    format!(
                        "{vip} was not DNATed on this node (its conntrack entry answers from {}): {why}",
                        entry.reply.src
                    ),
                ));
            }
        }
        Some(Ok(None)) => {
            let (cause, why) = not_dnated(step, ready.as_deref());
            h.judge(Verdict::fail(
                cause,
                format!(
                    "the node's conntrack table has no entry of the final probe to {vip}, so nothing NATed it: {why}"
                ),
            ));
        }
        Some(Err(e)) => {
            h.hop.inferred = true;
            h.judge(Verdict::skip(format!(
                "{vip} is DNATed to one of {service}'s endpoints{}; which one the node chose is in its conntrack \
                 table, not read: {e}",
                ready.as_deref().map(|r| format!(" ({})", list(r))).unwrap_or_default()
            )));
        }
        None => h.hop.detail = format!("{vip}: {service} ({found})"),
    }
    h
}

/// Why a Service IP was not DNATed: no endpoint, kube-proxy's REJECT for one without
/// endpoints, or no rule.
fn not_dnated(step: &ServiceStep, ready: Option<&[SocketAddr]>) -> (Cause, String) {
    let service = step.name().map_or_else(|| "the Service".to_string(), |n| format!("Service {n}"));
    if ready.is_some_and(<[SocketAddr]>::is_empty) {
        return (
            Cause::ServiceNoEndpoints,
            format!("{service} has no ready endpoint in its EndpointSlices (kube-proxy rejects its traffic)"),
        );
    }
    match &step.rules {
        Some(Programmed::Rejected { target, comment, .. }) => (
            Cause::ServiceNoEndpoints,
            format!(
                "kube-proxy's rules {target} it{}",
                comment.as_ref().map(|c| format!(" (\"{c}\")")).unwrap_or_default()
            ),
        ),
        _ => (
            Cause::ServiceNotProgrammed,
            format!(
                "kube-proxy has not programmed {service} on this node{}",
                ready.map(|r| format!(" though the API lists ready endpoints ({})", list(r))).unwrap_or_default()
            ),
        ),
    }
}

/// The endpoint with its pod and node, when the API names them.
fn endpoint(step: &ServiceStep, ep: SocketAddr) -> String {
    let known = step.port.as_ref().and_then(|p| p.endpoints.iter().find(|e| e.addr == ep));
    let mut s = ep.to_string();
    if let Some(e) = known {
        match (&e.pod, &e.node) {
            (Some(pod), Some(node)) => {
                let _ = write!(s, " (pod {pod} on {node})");
            }
            (Some(pod), None) => {
                let _ = write!(s, " (pod {pod})");
            }
            (None, Some(node)) => {
                let _ = write!(s, " (on {node})");
            }
            (None, None) => {}
        }
    }
    s
}

fn list(endpoints: &[SocketAddr]) -> String {
    if endpoints.is_empty() {
        return "none ready".into();
    }
    endpoints.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The destination when the endpoint is not known: one of the Service's.
pub(super) fn unknown_endpoint(step: &ServiceStep) -> Draft {
    let ready: Vec<SocketAddr> = step.port.as_ref().map(|p| p.ready().map(|e| e.addr).collect()).unwrap_or_default();
    let detail = if ready.is_empty() {
        "an endpoint of the Service (not known which)".to_string()
    } else {
        format!("one of the Service's ready endpoints: {}", list(&ready))
    };
    Draft::new(Kind::Destination, None, None, true, detail)
}
