//! `check service`'s NodePort rows: kube-proxy's rules for the port on this node, and the port
//! on each node probed. Under `externalTrafficPolicy: Local` a node without a ready endpoint
//! of its own drops the port for clients elsewhere by design: that is a named cause
//! (`no_local_endpoint`) on a passing row, not a failure.

use std::net::SocketAddr;

use crate::{
    discovery::{
        iptables::{Backend, ReadError},
        kube_proxy::Programmed,
    },
    probes::service::{
        Answer, Report, Rules,
        nodeport::{NodePortProbe, NodePorts},
    },
    verdict::{Cause, Check, Evidence, NO_DROP_SEEN, Probe, Status, Verdict, describe_drop, drops},
};

pub fn rows(r: &Report, capture_on: bool) -> Vec<Check> {
    let Some(np) = &r.node_ports else { return Vec::new() };
    let mut out = vec![rules_row(r, np)];
    match &np.nodes {
        Err(e) => out.push(Check::file(
            Probe::NodePort,
            format!("nodes {} {}", np.node_port, r.l4),
            Verdict::skip(format!("not probed: the API's nodes: {e}")),
        )),
        Ok(nodes) => out.extend(nodes.iter().map(|n| node_row(r, np, n, capture_on))),
    }
    if np.left_out > 0 {
        out.push(Check::file(
            Probe::NodePort,
            format!("other nodes {} {}", np.node_port, r.l4),
            Verdict::skip(format!("{} more nodes not probed (--nodeport-peers)", np.left_out)),
        ));
    }
    out
}

/// This node's name, when it is among the nodes listed.
fn own_node(np: &NodePorts) -> Option<&str> {
    np.nodes.as_ref().ok()?.iter().find(|n| n.own).map(|n| n.node.as_str())
}

/// The endpoints external traffic should reach on this node: every ready one, or under `Local`
/// this node's own (`None`: which node this is is not known).
fn expected(r: &Report, np: &NodePorts) -> Option<Vec<SocketAddr>> {
    let port = r.service.as_ref().ok()?;
    if !np.external_local {
        return Some(port.ready().map(|e| e.addr).collect());
    }
    let own = own_node(np)?;
    Some(port.ready().filter(|e| e.node.as_deref() == Some(own)).map(|e| e.addr).collect())
}

fn policy(np: &NodePorts) -> &'static str {
    if np.external_local { "externalTrafficPolicy Local" } else { "externalTrafficPolicy Cluster" }
}

fn rules_row(r: &Report, np: &NodePorts) -> Check {
    let target = format!("rules nodeport {} {}", np.node_port, r.l4);
    let want = expected(r, np);
    let any_ready = r.service.as_ref().is_ok_and(|p| p.ready().next().is_some());
    let mut lines = Vec::new();
    let mut failed = None;
    let mut by_design = false;
    for Rules { backend, programmed } in &r.node_port_rules {
        let tool = backend.tool();
        match programmed {
            Err(ReadError::NoCapability) => return super::rules_unread(target, "the NodePort is"),
            Err(e) => lines.push(format!("{tool}: not read ({e})")),
            Ok(Programmed::Endpoints { chains, endpoints, .. }) => {
                let shown: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                lines.push(if shown.is_empty() {
                    format!("{tool}: {} (external traffic not DNATed)", chains.join(" → "))
                } else {
                    format!("{tool}: {} → DNAT to {}", chains.join(" → "), shown.join(", "))
                });
                if let Some(want) = &want {
                    let (extra, missing) = super::differ(endpoints, want);
                    if !extra.is_empty() {
                        failed.get_or_insert(format!("{tool}: DNAT to {} ({})", extra.join(", "), policy(np)));
                    } else if !missing.is_empty() {
                        failed.get_or_insert(format!("{tool}: no rule for {} ({})", missing.join(", "), policy(np)));
                    }
                }
            }
            Ok(Programmed::Rejected { target: t, comment, .. }) => {
                let shown = comment.as_ref().map_or(String::new(), |c| format!(" ({c:?})"));
                lines.push(if *backend == Backend::NftablesMode {
                    format!("{tool}: {t}{shown}")
                } else {
                    format!("{tool}: filter KUBE-EXTERNAL-SERVICES -j {t}{shown}")
                });
                match &want {
                    Some(want) if !want.is_empty() => {
                        failed.get_or_insert(format!(
                            "{tool}: -j {t}{shown} although {} should get it ({})",
                            want.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                            policy(np)
                        ));
                    }
                    _ => by_design = np.external_local && any_ready,
                }
            }
            Ok(Programmed::Unreachable { why, .. }) => {
                failed.get_or_insert(format!("{tool}: {why}"));
            }
            Ok(Programmed::Missing) if matches!(backend, Backend::Ipvs { .. }) => {
                failed.get_or_insert(format!(
                    "{tool}: no virtual server on this node's addresses matches {} port {}",
                    r.l4, np.node_port
                ));
            }
            Ok(Programmed::Missing) if *backend == Backend::NftablesMode => {
                failed.get_or_insert(format!(
                    "{tool}: no element of map service-nodeports matches {} . {}",
                    r.l4, np.node_port
                ));
            }
            Ok(Programmed::Missing) => {
                failed.get_or_insert(format!("{tool}: no KUBE-NODEPORTS rule matches {} dport {}", r.l4, np.node_port));
            }
        }
    }
    let verdict = if r.node_port_rules.is_empty() {
        Verdict::skip(super::NO_RULES)
    } else if let Some(why) = failed {
        Verdict::fail(
            Cause::ServiceNotProgrammed,
            format!("kube-proxy has not programmed this NodePort as the API has it: {why} ({})", lines.join("; ")),
        )
    } else if by_design {
        let own = own_node(np).unwrap_or("this node");
        Verdict::new(
            Status::Pass,
            Some(Cause::NoLocalEndpoint),
            format!(
                "{}: {} and no ready endpoint on {own}, so kube-proxy drops the port for clients elsewhere, by design; \
                 this node's own connections still reach an endpoint",
                lines.join("; "),
                policy(np)
            ),
        )
    } else {
        Verdict::pass(lines.join("; "))
    };
    Check::file(Probe::Iptables, target, verdict)
}

fn node_row(r: &Report, np: &NodePorts, n: &NodePortProbe, capture_on: bool) -> Check {
    let target = match n.addr {
        Some(a) => format!("{} {a} {}", n.node, r.l4),
        None => format!("{} {}", n.node, r.l4),
    };
    let Some(a) = &n.attempt else {
        let why = n.unavailable.unwrap_or("not probed");
        return Check::file(Probe::NodePort, target, Verdict::skip(format!("not probed: node {why}")));
    };
    let evidence = Evidence::fold(a.events.clone());
    let whose = if n.own { "this node's NodePort" } else { "the NodePort" };
    let local = match n.local_ready {
        0 => format!("no ready endpoint on {}", n.node),
        1 => format!("1 ready endpoint on {}", n.node),
        k => format!("{k} ready endpoints on {}", n.node),
    };
    let verdict = if a.answer.ok() {
        let dnat = a.endpoint().map_or(String::new(), |ep| format!(", DNATed to {}", super::endpoint_name(r, ep)));
        Verdict::pass(format!("{whose} answered{dnat} ({}, {local})", policy(np)))
    } else if np.external_local && n.local_ready == 0 && !n.own {
        Verdict::new(
            Status::Pass,
            Some(Cause::NoLocalEndpoint),
            format!(
                "{}, as designed: {} and {local}, so kube-proxy on {} drops NodePort traffic from other hosts (\"has \
                 no local endpoints\"); clients must reach a node with an endpoint (a load balancer's health check on \
                 the healthCheckNodePort does that)",
                super::answer_text(&a.answer),
                policy(np),
                n.node
            ),
        )
    } else {
        let seen = drops(&evidence).next().map(describe_drop);
        let kernel = match (seen, capture_on) {
            (Some(d), _) => d,
            (None, true) => NO_DROP_SEEN.to_string(),
            (None, false) => "capture off: no kernel evidence".to_string(),
        };
        let why = if n.own {
            "kube-proxy routes a node's own connections to its NodePort to any endpoint, whatever the policy"
        } else if np.external_local {
            "the node has an endpoint of its own, so it should answer"
        } else {
            "any node forwards it to an endpoint"
        };
        let dnat = a.endpoint().map_or(String::new(), |ep| format!(" (DNATed to {})", super::endpoint_name(r, ep)));
        Verdict::fail(
            Cause::NodePortFailed,
            format!(
                "{whose} on {}: {}{dnat}: {kernel}; {why} ({}, {local})",
                n.node,
                super::answer_text(&a.answer),
                policy(np)
            ),
        )
    };
    let verdict = match (&a.answer, verdict.status) {
        (Answer::Refused, Status::Fail) => {
            Verdict { detail: format!("{}; refused: nothing DNATed it", verdict.detail), ..verdict }
        }
        _ => verdict,
    };
    Check::probed(Probe::NodePort, target, verdict, a.elapsed, evidence)
}
