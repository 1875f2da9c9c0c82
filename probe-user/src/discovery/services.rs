//! A Service and its endpoints as the API has them: the Service's ports and cluster IP, and its
//! EndpointSlices' endpoints with their conditions (ready, serving, terminating) and nodes.
//! RBAC: `get`/`list` on `services` and `list` on `endpointslices.discovery.k8s.io`.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, Client, api::ListParams};

use super::{api::ApiError, conntrack::L4};

/// Which Service: by name, or by the cluster IP and port a client dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `NAMESPACE/NAME[:PORT]`, the port by name or number (none: the Service's only port).
    Named { namespace: String, name: String, port: Option<String> },
    /// `VIP:PORT`.
    Address(SocketAddr),
}

impl Wanted {
    /// `NAMESPACE/NAME[:PORT]` or `IP:PORT` (`[IPv6]:PORT`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self::Address(addr));
        }
        let Some((namespace, rest)) = s.split_once('/') else {
            return Err(format!("{s:?}: give NAMESPACE/NAME[:PORT] or VIP:PORT"));
        };
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) if !port.is_empty() => (name, Some(port.to_string())),
            Some(_) => return Err(format!("{s:?}: an empty port after ':'")),
            None => (rest, None),
        };
        // DNS-1123 labels (namespaces) and subdomains (Service names are labels too).
        let label = |v: &str| {
            !v.is_empty()
                && v.len() <= 63
                && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !v.starts_with('-')
                && !v.ends_with('-')
        };
        if !label(namespace) || !label(name) {
            return Err(format!("{s:?}: a namespace and a name are lower-case DNS labels"));
        }
        Ok(Self::Named { namespace: namespace.into(), name: name.into(), port })
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Named { namespace, name, port: Some(p) } => write!(f, "{namespace}/{name}:{p}"),
            Self::Named { namespace, name, port: None } => write!(f, "{namespace}/{name}"),
            Self::Address(a) => write!(f, "{a}"),
        }
    }
}

/// One Service port, as kube-proxy programs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServicePort {
    pub namespace: String,
    pub service: String,
    /// The port's name; kube-proxy's `ns/name:port` names it only when it has one.
    pub port_name: Option<String>,
    pub l4: L4,
    pub cluster_ip: Option<IpAddr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `Local`: only endpoints on the node answer external traffic (NodePort).
    pub external_local: bool,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// kube-proxy's service port name (pkg/proxy/types.go, `ServicePortName.String`).
    pub fn port_name_string(&self) -> String {
        match &self.port_name {
            Some(p) => format!("{}/{}:{p}", self.namespace, self.service),
            None => format!("{}/{}", self.namespace, self.service),
        }
    }

    /// `VIP:PORT`, when the Service has a cluster IP.
    pub fn vip(&self) -> Option<SocketAddr> {
        self.cluster_ip.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Endpoints kube-proxy sends new connections to: serving and not terminating (ready implies
    /// both; kube-proxy falls back to serving-terminating ones only when none is ready).
    pub fn ready(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.ready)
    }
}

/// One endpoint of one port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    /// `namespace/name` of the pod behind it (the slice's targetRef).
    pub pod: Option<String>,
}

/// The Service port `wanted` names, with its endpoints.
pub async fn find(client: Client, wanted: &Wanted, l4: Option<L4>) -> Result<ServicePort, FindError> {
    let (service, port) = match wanted {
        Wanted::Named { namespace, name, port } => {
            let api: Api<Service> = Api::namespaced(client.clone(), namespace);
            let svc = api
                .get_opt(name)
                .await
                .map_err(|e| FindError::Api(ApiError::List { what: format!("Service {namespace}/{name}"), source: e }))?
                .ok_or_else(|| FindError::NoService(wanted.to_string()))?;
            (svc, PortWanted::from(port.as_deref()))
        }
        Wanted::Address(addr) => {
            // A field selector on spec.clusterIP is not served by every API version: list and
            // match here.
            let api: Api<Service> = Api::all(client.clone());
            let all = api
                .list(&ListParams::default())
                .await
                .map_err(|e| FindError::Api(ApiError::List { what: "Services".into(), source: e }))?;
            let ip = addr.ip().to_string();
            let svc = all
                .items
                .into_iter()
                .find(|s| s.spec.as_ref().is_some_and(|sp| sp.cluster_ips.iter().flatten().any(|c| *c == ip)))
                .ok_or_else(|| FindError::NoService(wanted.to_string()))?;
            (svc, PortWanted::Number(addr.port()))
        }
    };
    let mut port = service_port(&service, &port, l4).map_err(FindError::NoPort)?;
    let api: Api<EndpointSlice> = Api::namespaced(client, &port.namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={}", port.service));
    let slices = api.list(&params).await.map_err(|e| {
        FindError::Api(ApiError::List {
            what: format!("EndpointSlices of {}/{}", port.namespace, port.service),
            source: e,
        })
    })?;
    port.endpoints = endpoints(&slices.items, port.port_name.as_deref(), port.l4);
    Ok(port)
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Api(ApiError),
    #[error("no Service {0} in the API")]
    NoService(String),
    #[error("{0}")]
    NoPort(String),
}

enum PortWanted {
    Any,
    Name(String),
    Number(u16),
}

impl From<Option<&str>> for PortWanted {
    fn from(p: Option<&str>) -> Self {
        match p {
            None => Self::Any,
            Some(p) => p.parse().map_or_else(|_| Self::Name(p.to_string()), Self::Number),
        }
    }
}

fn l4_of(protocol: Option<&str>) -> Option<L4> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(L4::Tcp),
        "UDP" => Some(L4::Udp),
        _ => None,
    }
}

/// The Service's port that `wanted` (and the protocol, when given) picks.
fn service_port(svc: &Service, wanted: &PortWanted, l4: Option<L4>) -> Result<ServicePort, String> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let service = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    let matching: Vec<_> = ports
        .iter()
        .filter(|p| l4_of(p.protocol.as_deref()).is_some_and(|p4| l4.is_none_or(|l| l == p4)))
        .filter(|p| match wanted {
            PortWanted::Any => true,
            PortWanted::Name(n) => p.name.as_deref() == Some(n.as_str()),
            PortWanted::Number(n) => i32::from(*n) == p.port,
        })
        .collect();
    let listed: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}{}",
                p.port,
                p.protocol.as_deref().unwrap_or("TCP"),
                p.name.as_ref().map_or(String::new(), |n| format!(" ({n})"))
            )
        })
        .collect();
    let port = match matching.as_slice() {
        [one] => *one,
        [] => return Err(format!("Service {namespace}/{service} has no such port (its ports: {})", listed.join(", "))),
        _ => {
            return Err(format!(
                "Service {namespace}/{service} has {} ports that match; name one (its ports: {})",
                matching.len(),
                listed.join(", ")
            ));
        }
    };
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| *ip != "None").and_then(|ip| ip.parse().ok());
    Ok(ServicePort {
        namespace,
        service,
        port_name: port.name.clone().filter(|n| !n.is_empty()),
        l4: l4_of(port.protocol.as_deref()).unwrap_or(L4::Tcp),
        cluster_ip,
        port: u16::try_from(port.port).unwrap_or(0),
        node_port: port.node_port.and_then(|p| u16::try_from(p).ok()),
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        endpoints: Vec::new(),
    })
}

/// The slices' endpoints for the port named `port_name` (a slice's port of that name and
/// protocol: EndpointSlice ports are matched by name, a Service's unnamed port by ""), once each.
pub fn endpoints(slices: &[EndpointSlice], port_name: Option<&str>, l4: L4) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name.unwrap_or("") && l4_of(p.protocol.as_deref()) == Some(l4)
        });
        let Some(number) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else { continue };
        for e in slice.endpoints.iter().flatten() {
            let c = e.conditions.as_ref();
            // Unknown readiness counts as ready (the API's documented meaning of a nil condition).
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let pod = e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).map(|r| {
                format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name.as_deref().unwrap_or_default())
            });
            for a in &e.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else { continue };
                let addr = SocketAddr::new(ip, number);
                if out.iter().any(|o| o.addr == addr) {
                    continue;
                }
                out.push(Endpoint { addr, ready, serving, terminating, node: e.node_name.clone(), pod: pod.clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_name_or_address() {
        assert_eq!(
            Wanted::parse("kube-system/kube-dns:dns-tcp").unwrap(),
            Wanted::Named { namespace: "kube-system".into(), name: "kube-dns".into(), port: Some("dns-tcp".into()) }
        );
        assert_eq!(
            Wanted::parse("default/web").unwrap(),
            Wanted::Named { namespace: "default".into(), name: "web".into(), port: None }
        );
        assert_eq!(Wanted::parse("10.96.0.10:53").unwrap(), Wanted::Address("10.96.0.10:53".parse().unwrap()));
        for bad in ["web", "Default/web", "default/web:", "default/-web", "10.96.0.10"] {
            assert!(Wanted::parse(bad).is_err(), "{bad}");
        }
    }

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "metrics", "port": 9153, "protocol": "TCP"}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn a_port_is_picked_by_name_number_and_protocol() {
        let svc = service();
        let p = service_port(&svc, &PortWanted::Number(53), Some(L4::Udp)).unwrap();
        assert_eq!(
            (p.port_name.as_deref(), p.l4, p.port_name_string().as_str()),
            (Some("dns"), L4::Udp, "kube-system/kube-dns:dns")
        );
        let p = service_port(&svc, &PortWanted::Name("dns-tcp".into()), None).unwrap();
        assert_eq!((p.l4, p.vip()), (L4::Tcp, Some("10.96.0.10:53".parse().unwrap())));
        let err = service_port(&svc, &PortWanted::Number(53), None).unwrap_err();
        assert!(err.contains("2 ports that match"), "{err}");
        let err = service_port(&svc, &PortWanted::Number(80), None).unwrap_err();
        assert!(err.ends_with("(its ports: 53/UDP (dns), 53/TCP (dns-tcp), 9153/TCP (metrics))"), "{err}");
    }

    #[test]
    fn endpoints_carry_their_conditions_port_and_pod() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-dns-x"},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.10"], "conditions": {"ready": true}, "nodeName": "n1",
                 "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": "coredns-a"}},
                {"addresses": ["10.244.2.10"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }))
        .unwrap();
        let eps = endpoints(std::slice::from_ref(&slice), Some("dns"), L4::Udp);
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].addr, "10.244.1.10:5353".parse().unwrap());
        assert_eq!((eps[0].node.as_deref(), eps[0].pod.as_deref()), (Some("n1"), Some("kube-system/coredns-a")));
        assert!(eps[0].ready && eps[0].serving && !eps[0].terminating);
        assert!(!eps[1].ready && eps[1].serving && eps[1].terminating);
        // The TCP port's number is the slice's, not the UDP one's.
        assert_eq!(endpoints(&[slice], Some("dns-tcp"), L4::Tcp)[0].addr.port(), 53);
    }
}
