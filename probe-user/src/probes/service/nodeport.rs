//! A Service's NodePort, probed from this node on its own address and on other nodes'
//! InternalIPs, as an operator does when "the NodePort only works on the node with the pod".
//! Under `externalTrafficPolicy: Local` a node without a ready endpoint of its own drops the
//! port for clients elsewhere by design (kube-proxy's "has no local endpoints" DROP); from the
//! node itself kube-proxy routes it to any endpoint (its "route LOCAL traffic" rule), so this
//! node's own NodePort answers either way.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use kube::Client;

use super::{Attempt, attempt};
use crate::{
    capture::Capture,
    discovery::{
        nodes::{self, NodeInfo},
        services::ServicePort,
    },
};

/// One node's NodePort.
#[derive(Debug)]
pub struct NodePortProbe {
    pub node: String,
    /// Its InternalIP and the NodePort.
    pub addr: Option<SocketAddr>,
    /// This node (its InternalIP is one of this network namespace's addresses).
    pub own: bool,
    /// Ready endpoints the EndpointSlices place on it.
    pub local_ready: usize,
    /// Why it was not probed (not ready, unreachable, deleting; no InternalIP).
    pub unavailable: Option<&'static str>,
    pub attempt: Option<Attempt>,
}

/// The NodePort's probes, or why there are none.
#[derive(Debug)]
pub struct NodePorts {
    pub node_port: u16,
    pub external_local: bool,
    pub nodes: Result<Vec<NodePortProbe>, String>,
    /// Other nodes left out by the limit.
    pub left_out: usize,
}

/// Probes `port`'s NodePort on this node and on up to `peers` other nodes: those with ready
/// endpoints first (where a `Local` policy answers), then the rest by name.
pub async fn run(
    port: &ServicePort,
    node_port: u16,
    client: Client,
    peers: usize,
    deadline: Duration,
    capture: Option<Arc<Capture>>,
) -> NodePorts {
    let mut out = NodePorts { node_port, external_local: port.external_local, nodes: Ok(Vec::new()), left_out: 0 };
    let listed = match tokio::time::timeout(deadline / 3, nodes::list(client)).await {
        Ok(Ok((nodes, _))) => nodes,
        Ok(Err(e)) => {
            out.nodes = Err(crate::error::chain(&e));
            return out;
        }
        Err(_) => {
            out.nodes = Err("the API did not list nodes in time".into());
            return out;
        }
    };
    let (chosen, left_out) = choose(listed, port, peers);
    out.left_out = left_out;
    let probes = chosen.into_iter().map(|(n, own)| {
        let capture = capture.clone();
        let local_ready = port.ready().filter(|e| e.node.as_deref() == Some(n.name.as_str())).count();
        async move {
            let addr = n.internal_ip.map(|ip| SocketAddr::new(ip, node_port));
            let unavailable = if addr.is_none() { Some("no_internal_ip") } else { n.unavailable() };
            let attempt = match (addr, unavailable) {
                // Only this node's conntrack holds the DNAT of a probe to its own address.
                (Some(a), None) => Some(attempt(a, port.l4, deadline * 2 / 3, capture, own).await),
                _ => None,
            };
            NodePortProbe { node: n.name, addr, own, local_ready, unavailable, attempt }
        }
    });
    out.nodes = Ok(futures_util::future::join_all(probes).await);
    out
}

/// This node first, then up to `peers` others (endpoint nodes first); how many were left out.
fn choose(mut nodes: Vec<NodeInfo>, port: &ServicePort, peers: usize) -> (Vec<(NodeInfo, bool)>, usize) {
    let hosts_endpoint = |n: &NodeInfo| port.ready().any(|e| e.node.as_deref() == Some(n.name.as_str()));
    nodes.sort_by(|a, b| hosts_endpoint(b).cmp(&hosts_endpoint(a)).then_with(|| a.name.cmp(&b.name)));
    let local = crate::probes::nat::local_addresses();
    let mut chosen = Vec::new();
    let mut others = 0;
    let mut left_out = 0;
    for n in nodes {
        let own = n.internal_ip.is_some_and(|ip| local.contains(&ip));
        if own {
            chosen.insert(0, (n, true));
        } else if others < peers {
            others += 1;
            chosen.push((n, false));
        } else {
            left_out += 1;
        }
    }
    (chosen, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{conntrack::L4, services::Endpoint};

    fn node(name: &str, ip: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            internal_ip: Some(ip.parse().unwrap()),
            pod_cidr: None,
            ready: Some(true),
            flannel_public_ip: None,
            deleting: false,
            leaving: None,
        }
    }

    #[test]
    fn this_node_first_then_endpoint_nodes_then_by_name_up_to_the_limit() {
        let endpoint = |node: &str| Endpoint {
            addr: "10.244.9.9:80".parse().unwrap(),
            ready: true,
            serving: true,
            terminating: false,
            node: Some(node.into()),
            pod: None,
        };
        let port = ServicePort {
            namespace: "default".into(),
            service: "web".into(),
            port_name: None,
            l4: L4::Tcp,
            cluster_ip: None,
            port: 80,
            node_port: Some(30080),
            external_local: true,
            endpoints: vec![endpoint("n9")],
        };
        // 127.0.0.1 is this namespace's own; the others (TEST-NET-3) are nobody's.
        let nodes = vec![
            node("n3", "203.0.113.3"),
            node("n9", "203.0.113.9"),
            node("n1", "127.0.0.1"),
            node("n2", "203.0.113.2"),
        ];
        let (chosen, left_out) = choose(nodes, &port, 2);
        let names: Vec<(&str, bool)> = chosen.iter().map(|(n, own)| (n.name.as_str(), *own)).collect();
        assert_eq!(names, [("n1", true), ("n9", false), ("n2", false)]);
        assert_eq!(left_out, 1);
    }
}
