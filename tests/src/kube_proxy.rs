//! The lab's Services and a kube-proxy stand-in: Services and EndpointSlices the API stand-in
//! answers, and the iptables-mode rules kube-proxy writes for them, generated the way
//! kube-proxy generates them (k/k pkg/proxy/iptables/proxier.go, v1.28+ layout: chain names
//! hashed from the port name and protocol, a `KUBE-SEP-` chain per endpoint picked with
//! `-m statistic --mode random`, a filter-table REJECT for a port without endpoints; a NodePort
//! through `KUBE-NODEPORTS` and its `KUBE-EXT-` chain, `KUBE-SVL-` for `externalTrafficPolicy:
//! Local` and a filter-table DROP where the node has no local endpoint; `KUBE-POSTROUTING`
//! masquerading what `KUBE-MARK-MASQ` marked) and loaded with `iptables-restore --noflush` as
//! kube-proxy does. Its `/healthz` (10256) and `/proxyMode` (10249) answer on the node's loopback.

use sha2::Digest as _;

use super::*;

/// One Service of the lab.
#[derive(Debug, Clone)]
pub struct LabService {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<LabPort>,
    pub endpoints: Vec<LabEndpoint>,
    /// `externalTrafficPolicy: Local`: NodePort traffic from outside the node goes only to the
    /// node's own endpoints (a NodePort Service's default is `Cluster`).
    pub external_local: bool,
}

/// One port of a Service: name ("" when unnamed), the Service port, UDP or TCP, the pods' port,
/// and its NodePort (the Service is `type: NodePort` when a port has one).
#[derive(Debug, Clone)]
pub struct LabPort {
    pub name: String,
    pub port: u16,
    pub udp: bool,
    pub target_port: u16,
    pub node_port: Option<u16>,
}

/// One endpoint: a lab pod's IP, its node and name, its readiness.
#[derive(Debug, Clone)]
pub struct LabEndpoint {
    pub ip: Ipv4Addr,
    pub node: u8,
    pub pod: String,
    pub ready: bool,
}

impl LabPort {
    fn proto(&self) -> &'static str {
        if self.udp { "udp" } else { "tcp" }
    }
}

impl LabService {
    /// kube-proxy's name of one port (`ServicePortName.String()`).
    fn port_name(&self, p: &LabPort) -> String {
        if p.name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, p.name)
        }
    }

    /// The Service as `GET /api/v1/namespaces/NS/services/NAME` returns it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let ports: Vec<serde_json::Value> = self
            .ports
            .iter()
            .map(|p| {
                let mut v = serde_json::json!({
                    "port": p.port,
                    "protocol": p.proto().to_ascii_uppercase(),
                    "targetPort": p.target_port
                });
                if !p.name.is_empty() {
                    v["name"] = p.name.clone().into();
                }
                if let Some(np) = p.node_port {
                    v["nodePort"] = np.into();
                }
                v
            })
            .collect();
        let node_port = self.ports.iter().any(|p| p.node_port.is_some());
        let mut svc = serde_json::json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": format!("0b1c6a52-{:04x}-4d7e-9a40-5c1f2e3d4b6a", self.cluster_ip.octets()[3]),
                "resourceVersion": "1051"
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.cluster_ip.to_string(),
                "clusterIPs": [self.cluster_ip.to_string()],
                "ipFamilies": ["IPv4"],
                "ports": ports,
                "selector": {"app": self.name},
                "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster"
            },
            "status": {"loadBalancer": {}}
        });
        // The API defaults externalTrafficPolicy to Cluster for NodePort Services only.
        if node_port {
            svc["spec"]["type"] = "NodePort".into();
            svc["spec"]["externalTrafficPolicy"] = if self.external_local { "Local" } else { "Cluster" }.into();
        }
        svc
    }

    /// The Service's EndpointSlice list (one slice), as the EndpointSlice controller writes it.
    pub(crate) fn slices_json(&self) -> serde_json::Value {
        let endpoints: Vec<serde_json::Value> = self
            .endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "addresses": [e.ip.to_string()],
                    "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
                    "nodeName": format!("n{}", e.node),
                    "targetRef": {"kind": "Pod", "namespace": self.namespace, "name": e.pod}
                })
            })
            .collect();
        let ports: Vec<serde_json::Value> = self
            .ports
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "port": p.target_port, "protocol": p.proto().to_ascii_uppercase()}))
            .collect();
        serde_json::json!({
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": "1052"},
            "items": [{
                "metadata": {
                    "name": format!("{}-8k2xq", self.name),
                    "namespace": self.namespace,
                    "labels": {
                        "kubernetes.io/service-name": self.name,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
                    }
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports
            }]
        })
    }
}

/// 16 base32 characters of SHA-256 (kube-proxy's `portProtoHash`).
fn hash16(input: &str) -> String {
    data_encoding::BASE32.encode(&sha2::Sha256::digest(input.as_bytes()))[..16].to_string()
}

/// What the stand-in programs on one node: every Service as the API has it, except `without`
/// ("NS/NAME": the fault "rules missing for one Service") and `endpoints` ("NS/NAME" and the
/// addresses its rules DNAT to instead of its ready endpoints: the fault "a KUBE-SEP left for a
/// deleted endpoint", or an old sync's state).
#[derive(Debug, Clone, Default)]
pub struct Programming {
    pub without: Option<String>,
    pub endpoints: Option<(String, Vec<Ipv4Addr>)>,
}

impl Programming {
    /// The endpoints written for `svc` (`key` "NS/NAME") on node `node`: its ready ones (each
    /// with whether it is on this node), or those `endpoints` names instead.
    pub(crate) fn endpoints_of(&self, svc: &LabService, key: &str, node: u8) -> Vec<(Ipv4Addr, bool)> {
        match &self.endpoints {
            Some((s, ips)) if s == key => ips.iter().map(|ip| (*ip, false)).collect(),
            _ => svc.endpoints.iter().filter(|e| e.ready).map(|e| (e.ip, e.node == node)).collect(),
        }
    }
}

/// The iptables-restore input kube-proxy on node `node` would write for `services` (filter and
/// nat; only NodePorts differ between nodes, by which endpoints are local).
pub fn rules(services: &[LabService], how: &Programming, node: u8) -> String {
    let mut w = Writer::default();
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        if how.without.as_deref() == Some(key.as_str()) {
            continue;
        }
        for p in &svc.ports {
            let eps = how.endpoints_of(svc, &key, node);
            w.port(svc, p, &eps);
        }
    }
    w.finish()
}

/// Rules as kube-proxy's proxier accumulates them: filter, nat chain lines, nat rules.
#[derive(Default)]
struct Writer {
    filter: Vec<String>,
    nat_chains: Vec<String>,
    nat: Vec<String>,
}

impl Writer {
    /// One Service port whose ready endpoints are `eps` (address, on this node).
    fn port(&mut self, svc: &LabService, p: &LabPort, eps: &[(Ipv4Addr, bool)]) {
        let name = svc.port_name(p);
        let proto = p.proto();
        let vip = svc.cluster_ip;
        let dst = format!("-m {proto} -p {proto} -d {vip}/32 --dport {}", p.port);
        let local: Vec<Ipv4Addr> = eps.iter().filter(|e| e.1).map(|e| e.0).collect();
        // kube-proxy's hasExternalEndpoints: any endpoint under Cluster, a local one under Local.
        let external = if svc.external_local { !local.is_empty() } else { !eps.is_empty() };
        if let Some(np) = p.node_port {
            let np_match = format!("-m {proto} -p {proto} --dport {np}");
            if eps.is_empty() {
                self.filter.push(format!(
                    "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no endpoints\" -m addrtype \
                     --dst-type LOCAL {np_match} -j REJECT"
                ));
            } else if !external {
                self.filter.push(format!(
                    "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no local endpoints\" -m addrtype \
                     --dst-type LOCAL {np_match} -j DROP"
                ));
            }
        }
        if eps.is_empty() {
            self.filter
                .push(format!("-A KUBE-SERVICES -m comment --comment \"{name} has no endpoints\" {dst} -j REJECT"));
            return;
        }
        let svc_chain = format!("KUBE-SVC-{}", hash16(&format!("{name}{proto}")));
        self.nat_chains.push(format!(":{svc_chain} - [0:0]"));
        self.nat.push(format!("-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {dst} -j {svc_chain}"));
        if let Some(np) = p.node_port {
            let ext = format!("KUBE-EXT-{}", hash16(&format!("{name}{proto}")));
            self.nat_chains.push(format!(":{ext} - [0:0]"));
            self.nat.push(format!(
                "-A KUBE-NODEPORTS -m comment --comment {name} -m {proto} -p {proto} --dport {np} -j {ext}"
            ));
            if svc.external_local {
                // Pods and the node itself short-circuit to the cluster-wide chain; others get
                // only this node's endpoints, through KUBE-SVL- (when it has any).
                self.nat.push(format!(
                    "-A {ext} -m comment --comment \"pod traffic for {name} external destinations\" -s {POD_CIDR} -j \
                     {svc_chain}"
                ));
                self.nat.push(format!(
                    "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m \
                     addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
                ));
                self.nat.push(format!(
                    "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m \
                     addrtype --src-type LOCAL -j {svc_chain}"
                ));
                if external {
                    let svl = format!("KUBE-SVL-{}", hash16(&format!("{name}{proto}")));
                    self.nat_chains.push(format!(":{svl} - [0:0]"));
                    self.nat.push(format!("-A {ext} -j {svl}"));
                    self.endpoints(&svl, &name, p, &local);
                }
            } else {
                self.nat.push(format!(
                    "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j \
                     KUBE-MARK-MASQ"
                ));
                self.nat.push(format!("-A {ext} -j {svc_chain}"));
            }
        }
        self.nat.push(format!(
            "-A {svc_chain} -m comment --comment \"{name} cluster IP\" {dst} ! -s {POD_CIDR} -j KUBE-MARK-MASQ"
        ));
        let all: Vec<Ipv4Addr> = eps.iter().map(|e| e.0).collect();
        self.endpoints(&svc_chain, &name, p, &all);
    }

    /// `chain` picking one of `eps` at random, and each one's `KUBE-SEP-` chain (once).
    fn endpoints(&mut self, chain: &str, name: &str, p: &LabPort, eps: &[Ipv4Addr]) {
        let proto = p.proto();
        let n = eps.len();
        for (i, ip) in eps.iter().enumerate() {
            let ep = SocketAddr::new((*ip).into(), p.target_port);
            let sep = format!("KUBE-SEP-{}", hash16(&format!("{name}{proto}{ep}")));
            let left = n - i;
            let pick = if left > 1 {
                // kube-proxy's probability of picking this one of the `left` remaining.
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / f64::from(u32::try_from(left).unwrap_or(1))
                )
            } else {
                String::new()
            };
            self.nat.push(format!("-A {chain} -m comment --comment \"{name} -> {ep}\"{pick} -j {sep}"));
            let line = format!(":{sep} - [0:0]");
            if self.nat_chains.contains(&line) {
                continue;
            }
            self.nat_chains.push(line);
            self.nat.push(format!("-A {sep} -m comment --comment {name} -s {ip}/32 -j KUBE-MARK-MASQ"));
            self.nat.push(format!(
                "-A {sep} -m comment --comment {name} -m {proto} -p {proto} -j DNAT --to-destination {ep}"
            ));
        }
    }

    /// The restore input: the fixed chains, the Services' rules, the NodePort tail call and the
    /// masquerade of marked packets (k/k proxier.go `writeIptablesRules`, KUBE-POSTROUTING).
    fn finish(mut self) -> String {
        let mut filter = vec![":KUBE-SERVICES - [0:0]".to_string(), ":KUBE-EXTERNAL-SERVICES - [0:0]".to_string()];
        filter.append(&mut self.filter);
        let mut chains: Vec<String> = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"]
            .iter()
            .map(|c| format!(":{c} - [0:0]"))
            .collect();
        chains.append(&mut self.nat_chains);
        let mut nat = std::mem::take(&mut self.nat);
        nat.push(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in \
             this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
                .into(),
        );
        nat.push("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into());
        nat.push("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into());
        nat.push("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into());
        // kube-proxy adds --random-fully wherever iptables has it (every current one): the port
        // after the masquerade is not the client's.
        nat.push(
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE \
             --random-fully"
                .into(),
        );
        format!("*filter\n{}\nCOMMIT\n*nat\n{}\n{}\nCOMMIT\n", filter.join("\n"), chains.join("\n"), nat.join("\n"))
    }
}

impl Lab {
    /// Adds a Service for the API stand-in and kube-proxy (call [`Self::sync_kube_proxy`] to
    /// program it).
    pub fn add_service(&self, svc: LabService) {
        let mut all = self.services.lock().expect("services");
        all.retain(|s| !(s.namespace == svc.namespace && s.name == svc.name));
        all.push(svc);
    }

    /// Changes a Service the API serves (kube-proxy keeps its rules until the next sync).
    pub fn edit_service(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut LabService)) {
        let mut all = self.services.lock().expect("services");
        let svc = all.iter_mut().find(|s| s.namespace == namespace && s.name == name).expect("lab service");
        edit(svc);
    }

    /// Programs every node as kube-proxy would from the API's Services.
    pub fn sync_kube_proxy(&self) -> Result<()> {
        let nodes: Vec<u8> = self.nodes.iter().map(|n| n.index).collect();
        for n in nodes {
            self.program_kube_proxy(n, &Programming::default())?;
        }
        Ok(())
    }

    /// One node's kube-proxy sync: the KUBE-* chains rewritten in one `iptables-restore
    /// --noflush` (the chains it declares are flushed, others left alone, as kube-proxy's
    /// restore does), and the jumps from the built-in chains added once.
    pub fn program_kube_proxy(&self, node: u8, how: &Programming) -> Result<()> {
        let services = self.services.lock().expect("services").clone();
        // Back from nftables mode: its table goes (absent, this deletes nothing).
        let ns = self.node(node).netns.clone();
        let _ = Command::new("ip").args(["netns", "exec", &ns, "nft", "delete", "table", "ip", "kube-proxy"]).output();
        self.restore_kube_proxy(node, &rules(&services, how, node))
    }

    /// `iptables-restore --noflush` of kube-proxy's chains on `node`, and its jumps.
    pub(crate) fn restore_kube_proxy(&self, node: u8, text: &str) -> Result<()> {
        let ns = self.node(node).netns.clone();
        pipe_in(&ns, "iptables-restore", &["-w", "--noflush"], text)?;
        let portals = "-m comment --comment kubernetes-service-portals";
        let external = "-m comment --comment kubernetes-externally-visible-service-portals";
        let jumps = [
            ("nat", "PREROUTING", format!("{portals} -j KUBE-SERVICES")),
            ("nat", "OUTPUT", format!("{portals} -j KUBE-SERVICES")),
            ("filter", "OUTPUT", format!("-m conntrack --ctstate NEW {portals} -j KUBE-SERVICES")),
            ("filter", "FORWARD", format!("-m conntrack --ctstate NEW {portals} -j KUBE-SERVICES")),
            ("filter", "INPUT", format!("-m conntrack --ctstate NEW {external} -j KUBE-EXTERNAL-SERVICES")),
            ("filter", "FORWARD", format!("-m conntrack --ctstate NEW {external} -j KUBE-EXTERNAL-SERVICES")),
            ("nat", "POSTROUTING", "-m comment --comment kubernetes-postrouting-rules -j KUBE-POSTROUTING".into()),
        ];
        for (table, chain, rule) in jumps {
            if iptables(&ns, &format!("-t {table} -C {chain} {rule}")).is_err() {
                iptables(&ns, &format!("-t {table} -I {chain} {rule}"))?;
            }
        }
        Ok(())
    }

    /// kube-proxy's `/healthz` on the node's 127.0.0.1:10256 (200, or 503 when `healthy` is
    /// false, with kube-proxy's JSON body) and `/proxyMode` on 127.0.0.1:10249 ("iptables").
    pub fn serve_kube_proxy(&mut self, node: u8, healthy: bool) -> Result<()> {
        self.serve_kube_proxy_in_mode(node, healthy, "iptables")
    }

    /// [`Self::serve_kube_proxy`], `/proxyMode` answering `mode`.
    pub fn serve_kube_proxy_in_mode(&mut self, node: u8, healthy: bool, mode: &'static str) -> Result<()> {
        let ns = self.node(node).netns.clone();
        let healthz_addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 10256);
        self.servers.push(serve(&ns, healthz_addr, move |s| {
            let (code, text) = if healthy { (200, "OK") } else { (503, "Service Unavailable") };
            let body = format!(
                "{{\"lastUpdated\": \"2026-12-03 09:00:00 +0000 UTC\",\"currentTime\": \"2026-12-03 09:00:{} +0000 UTC\", \
                 \"nodeEligible\": true}}",
                if healthy { "05" } else { "59" }
            );
            http_answer(s, code, text, "application/json", &body);
        })?);
        let metrics = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 10249);
        self.servers.push(serve(&ns, metrics, move |s| http_answer(s, 200, "OK", "text/plain; charset=utf-8", mode))?);
        Ok(())
    }
}

fn http_answer(mut s: TcpStream, code: u16, text: &str, content_type: &str, body: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if pki::read_request(&mut s).is_some() {
        let _ = s.write_all(
            format!(
                "HTTP/1.1 {code} {text}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names kube-proxy's own tests expect (k/k pkg/proxy/iptables/proxier_test.go).
    #[test]
    fn chain_names_are_kube_proxys() {
        assert_eq!(hash16("ns1/svc1:p80tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(hash16("ns1/svc1:p80tcp10.180.0.1:80"), "SXIVWICOYRO3J4NJ");
    }
}
