//! The API server stand-in: it answers the lab's nodes, pods and kube-dns EndpointSlices as the
//! Kubernetes API documents them, records the writes it receives, and the node root files
//! (kubelet config, kubeconfig, flannel, CNI) a kubeadm node would have.

use super::*;

impl Lab {
    /// `count` more nodes for the API stand-in to list (call before [`Self::serve_api`]), named
    /// `peer-NNNNN`, their InternalIPs on loopback (127.1.0.0/16), where each lab node's kubelet
    /// stand-in (bound to every address) answers them.
    pub fn add_synthetic_nodes(&mut self, count: usize) {
        for i in 0..count {
            let ip =
                Ipv4Addr::new(127, 1, u8::try_from(i / 250).unwrap_or(u8::MAX), u8::try_from(i % 250 + 1).unwrap_or(1));
            self.synthetic_nodes.push((format!("peer-{i:05}"), ip));
        }
    }

    /// A stand-in for the Kubernetes API on node `node`'s 6443 (HTTPS, serving certificate from
    /// the lab CA with the node's IP): it answers the requests netcheck makes, the kube-dns
    /// Service's EndpointSlices (a list of `endpoints`), the nodes (the lab's, with their
    /// InternalIPs) and the pod behind an IP (the lab's pods so far, namespace `default`), in the
    /// API's JSON shape, and 404 (a Status) to anything else. Returns a kubeconfig for it (token user).
    pub fn serve_api(&mut self, node: u8, endpoints: &[Ipv4Addr]) -> Result<String> {
        let n = self.node(node).clone();
        let leaf = self.pki.serving("kube-apiserver", &["kubernetes"], &[n.underlay_ip.into()])?;
        let config = pki::tls_config(&leaf)?;
        let body = endpoint_slice_list(endpoints);
        let nodes = node_list(&self.nodes, &self.synthetic_nodes);
        let pods = self.pods.clone();
        let addr = SocketAddr::new(n.underlay_ip.into(), API_PORT);
        let writes = self.api_writes.clone();
        let store = Arc::new(api_nodes::NodeStore::new(&nodes, self.api_nodes.clone()));
        let log = self.api_requests.clone();
        let services = self.services.clone();
        self.servers.push(serve(&n.netns, addr, move |s| {
            let (body, nodes, pods, writes) = (body.clone(), nodes.clone(), pods.clone(), writes.clone());
            let services = services.clone();
            api_nodes::serve_api_connection(config.clone(), s, &store, &log, move |request| {
                if let Some(answer) = review(request) {
                    return answer;
                }
                if let Some(written) = api_write(request, &nodes) {
                    writes.lock().expect("api writes").push(written.0);
                    return written.1;
                }
                if let Some(answer) = service_response(request, &services.lock().expect("services")) {
                    return answer;
                }
                api_response(request, &body, &nodes, &pods)
            });
        })?);
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.pki.ca_pem());
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{addr}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: netcheck\n  user:\n    token: lab-token\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: netcheck\ncurrent-context: lab\n"
        ))
    }

    /// A node root for node `node` in `dir`, as kubeadm and flannel leave it: the kubelet's
    /// config.yaml (clusterDNS, clusterDomain, healthz), its kubeconfig naming the API server
    /// on n1 with the lab CA, flannel's subnet.env, the node's resolv.conf (the upstream) and
    /// the kubelet's serving certificate under var/lib/kubelet/pki.
    pub fn write_host_root(&self, node: u8, dir: &TempDir, kubeconfig: &str) -> Result<()> {
        let n = self.node(node);
        for folder in ["var/lib/kubelet/pki", "etc/kubernetes", "run/flannel", "etc"] {
            std::fs::create_dir_all(dir.path.join(folder))?;
        }
        dir.write(
            "var/lib/kubelet/config.yaml",
            &format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS:\n- {DNS_SERVICE_IP}\n\
                 clusterDomain: {CLUSTER_DOMAIN}\nhealthzBindAddress: 127.0.0.1\nhealthzPort: {KUBELET_HEALTHZ_PORT}\n"
            ),
        );
        dir.write("etc/kubernetes/kubelet.conf", kubeconfig);
        dir.write(
            "run/flannel/subnet.env",
            &format!(
                "FLANNEL_NETWORK={POD_CIDR}\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU={OVERLAY_MTU}\nFLANNEL_IPMASQ=true\n",
                n.gateway()
            ),
        );
        dir.write("etc/resolv.conf", &format!("nameserver {UPSTREAM_DNS_IP}\n"));
        // flannel's CNI configuration (as its DaemonSet installs it) and the plugin binaries
        // it names (empty files: only their presence is checked).
        std::fs::create_dir_all(dir.path.join("etc/cni/net.d"))?;
        std::fs::create_dir_all(dir.path.join("opt/cni/bin"))?;
        dir.write(
            "etc/cni/net.d/10-flannel.conflist",
            "{\n  \"name\": \"cbr0\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    { \"type\": \"flannel\", \
             \"delegate\": { \"hairpinMode\": true, \"isDefaultGateway\": true } },\n    { \"type\": \"portmap\", \
             \"capabilities\": { \"portMappings\": true } }\n  ]\n}\n",
        );
        for plugin in ["flannel", "portmap", "bridge", "loopback"] {
            dir.write(&format!("opt/cni/bin/{plugin}"), "");
        }
        let name = n.name();
        let serving = self.pki.serving(&name, &[&name], &[n.underlay_ip.into()])?;
        dir.write("var/lib/kubelet/pki/kubelet.crt", &serving.cert_pem);
        Ok(())
    }
}

/// The kube-dns Service's EndpointSlices as `GET .../endpointslices?labelSelector=...` returns
/// them (discovery.k8s.io/v1).
pub(crate) fn endpoint_slice_list(endpoints: &[Ipv4Addr]) -> String {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    serde_json::json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": "1042"},
        "items": [{
            "metadata": {
                "name": "kube-dns-7x2kq",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"}
            },
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
            ]
        }]
    })
    .to_string()
}

/// The lab's nodes as the API lists them (name, InternalIP, podCIDR, Ready).
pub(crate) fn node_list(nodes: &[Node], synthetic: &[(String, Ipv4Addr)]) -> String {
    let lab = nodes.iter().map(|n| (n.name(), n.underlay_ip, n.pod_subnet()));
    let more = synthetic
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| (name.clone(), *ip, format!("10.{}.{}.0/24", 100 + i / 256, i % 256)));
    let items: Vec<serde_json::Value> = lab
        .chain(more)
        .map(|(name, ip, cidr)| {
            serde_json::json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": ip.to_string()},
                        {"type": "Hostname", "address": name}
                    ],
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            })
        })
        .collect();
    serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1043"}, "items": items})
        .to_string()
}

/// The lab's pods whose IP a `status.podIP=` field selector in the request names, as a PodList
/// (namespace `default`, on their node).
pub(crate) fn pod_list(request: &str, pods: &[Pod]) -> String {
    let wanted = request.split_once("status.podIP%3D").and_then(|(_, rest)| {
        let ip: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        ip.parse::<Ipv4Addr>().ok()
    });
    let items: Vec<serde_json::Value> = pods
        .iter()
        .filter(|p| Some(p.ip) == wanted)
        .map(|p| {
            serde_json::json!({
                "metadata": {"name": p.name, "namespace": "default"},
                "spec": {"nodeName": format!("n{}", p.node), "containers": [{"name": "c"}]},
                "status": {"podIP": p.ip.to_string()}
            })
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1044"}, "items": items})
        .to_string()
}

/// A write the agent makes (its node condition, an Event): recorded, and answered the way the
/// API server answers (the patched Node; the created Event with its server-set metadata).
pub(crate) fn api_write(request: &[u8], nodes: &str) -> Option<((String, serde_json::Value), Vec<u8>)> {
    let text = String::from_utf8_lossy(request);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?);
    let path = path.split('?').next()?.to_string();
    if method != "PATCH" && method != "POST" {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let (status, answer) = if let Some(name) =
        path.strip_prefix("/api/v1/nodes/").and_then(|p| p.strip_suffix("/status"))
    {
        let list: serde_json::Value = serde_json::from_str(nodes).ok()?;
        let mut node = list["items"].as_array()?.iter().find(|n| n["metadata"]["name"] == name)?.clone();
        node["apiVersion"] = "v1".into();
        node["kind"] = "Node".into();
        node["metadata"]["resourceVersion"] = "1044".into();
        if let Some(conditions) = body["status"]["conditions"].as_array() {
            let mut all = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
            all.extend(conditions.iter().cloned());
            node["status"]["conditions"] = all.into();
        }
        ("200 OK", node)
    } else if let Some(name) = path.strip_prefix("/api/v1/namespaces/default/events/").filter(|_| method == "PATCH") {
        // A merge patch of an Event's count and lastTimestamp: the patched Event back.
        let mut event = serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "1046"},
            "involvedObject": {"kind": "Node", "apiVersion": "v1"},
        });
        if let (Some(e), Some(patch)) = (event.as_object_mut(), body.as_object()) {
            e.extend(patch.clone());
        }
        ("200 OK", event)
    } else if path == "/api/v1/namespaces/default/events" {
        let mut event = body.clone();
        let prefix = event["metadata"]["generateName"].as_str().unwrap_or("event.").to_string();
        event["metadata"]["name"] = format!("{prefix}17a2b3c4d5e6f708").into();
        event["metadata"]["uid"] = "6f1c2d3e-0000-4000-8000-000000000001".into();
        event["metadata"]["resourceVersion"] = "1045".into();
        event["metadata"]["creationTimestamp"] = "2026-11-23T00:00:00Z".into();
        ("201 Created", event)
    } else {
        return None;
    };
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    Some(((format!("{method} {path}"), body), response.into_bytes()))
}

/// The stand-in's bearer tokens: the kubeconfig's, whose user may read the agent's
/// `/events` and `/report`, and one whose user may not.
pub const ADMIN_TOKEN: &str = "lab-token";
pub const NO_RIGHTS_TOKEN: &str = "no-rights-token";

/// A TokenReview or SubjectAccessReview, answered as the API server answers them
/// (authentication.k8s.io/v1, authorization.k8s.io/v1): [`ADMIN_TOKEN`] is `lab-admin`
/// (system:masters, allowed everything), [`NO_RIGHTS_TOKEN`] is `nobody` (allowed nothing),
/// any other token is not authenticated.
pub(crate) fn review(request: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(request);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let line = head.lines().next()?;
    let mut review: serde_json::Value = serde_json::from_str(body).ok()?;
    if line.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews") {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        review["status"] = match token {
            ADMIN_TOKEN => serde_json::json!({"authenticated": true, "user": {"username": "lab-admin", "uid": "1",
                "groups": ["system:masters", "system:authenticated"]}}),
            NO_RIGHTS_TOKEN => serde_json::json!({"authenticated": true, "user": {"username": "nobody", "uid": "2",
                "groups": ["system:authenticated"]}}),
            _ => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
        };
    } else if line.starts_with("POST /apis/authorization.k8s.io/v1/subjectaccessreviews") {
        let admin = review["spec"]["groups"].as_array().is_some_and(|g| g.iter().any(|g| g == "system:masters"));
        review["status"] = if admin {
            serde_json::json!({"allowed": true, "reason": "system:masters"})
        } else {
            serde_json::json!({"allowed": false, "reason": "no RBAC policy matched"})
        };
    } else {
        return None;
    }
    let answer = review.to_string();
    Some(
        format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .into_bytes(),
    )
}

/// The lab's Services: `GET /api/v1/namespaces/NS/services/NAME`, `GET /api/v1/services` (the
/// list) and a Service's EndpointSlices by the `kubernetes.io/service-name` label (kube-dns's
/// are answered by [`api_response`], from the endpoints `serve_api` was given). None: not a
/// request about a lab Service.
pub(crate) fn service_response(request: &[u8], services: &[LabService]) -> Option<Vec<u8>> {
    let line = String::from_utf8_lossy(request).lines().next().unwrap_or_default().to_string();
    let path = line.strip_prefix("GET ")?.split(' ').next()?.to_string();
    let (path_only, query) = path.split_once('?').unwrap_or((&path, ""));
    let ok = |body: serde_json::Value| Some(http_json("200 OK", &body.to_string()));
    if path_only == "/api/v1/services" {
        let items: Vec<serde_json::Value> = services.iter().map(LabService::to_json).collect();
        return ok(
            serde_json::json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1053"}, "items": items}),
        );
    }
    let parts: Vec<&str> = path_only.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "services", name] => {
            let found = services.iter().find(|s| s.namespace == *ns && s.name == *name);
            Some(found.map_or_else(not_found, |s| http_json("200 OK", &s.to_json().to_string())))
        }
        ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"] => {
            let wanted = query.split_once("kubernetes.io%2Fservice-name%3D")?.1.split('&').next()?.to_string();
            if wanted == "kube-dns" {
                return None;
            }
            let found = services.iter().find(|s| s.namespace == *ns && s.name == wanted);
            found.map_or_else(
                || ok(serde_json::json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": "1052"}, "items": []})),
                |s| ok(s.slices_json()),
            )
        }
        _ => None,
    }
}

fn http_json(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn not_found() -> Vec<u8> {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
    http_json("404 Not Found", &status.to_string())
}

pub(crate) fn api_response(request: &[u8], endpoint_slices: &str, nodes: &str, pods: &[Pod]) -> Vec<u8> {
    let wanted = b"GET /apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices?";
    if request.starts_with(wanted)
        && String::from_utf8_lossy(request).contains("kubernetes.io%2Fservice-name%3Dkube-dns")
    {
        http_json("200 OK", endpoint_slices)
    } else if request.starts_with(b"GET /api/v1/nodes?") || request.starts_with(b"GET /api/v1/nodes ") {
        http_json("200 OK", nodes)
    } else if request.starts_with(b"GET /api/v1/pods?") {
        http_json("200 OK", &pod_list(&String::from_utf8_lossy(request), pods))
    } else {
        not_found()
    }
}
