//! Servers the lab runs inside its namespaces: TCP listeners, the kubelets (HTTPS with the
//! lab CA), dnsmasq as CoreDNS and the upstream resolver; and a plain HTTP client for them.

use super::*;

impl Lab {
    /// A TCP listener (accepts and closes) inside `netns`. Returns its index for `stop_server`.
    /// A TCP listener inside `netns` that accepts and closes (enough for a connect probe).
    pub fn serve_tcp(&mut self, netns: &str, addr: SocketAddr) -> Result<()> {
        self.servers.push(serve(netns, addr, drop)?);
        Ok(())
    }

    /// An HTTPS "kubelet" on the node's 10250 with a serving certificate from the lab CA for
    /// the node's name and (when `ip_san`) its underlay IP.
    pub fn serve_kubelet(&mut self, node: u8, ip_san: bool) -> Result<()> {
        let n = self.node(node).clone();
        let name = n.name();
        let ips: Vec<IpAddr> = if ip_san { vec![n.underlay_ip.into()] } else { Vec::new() };
        let leaf = self.pki.serving(&name, &[&name], &ips)?;
        let config = pki::tls_config(&leaf)?;
        let addr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), KUBELET_PORT);
        self.servers.push(serve(&n.netns, addr, move |s| pki::serve_kubelet_connection(config.clone(), s))?);
        // healthzBindAddress: plain HTTP on the node's loopback.
        let healthz = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), KUBELET_HEALTHZ_PORT);
        self.servers.push(serve(&n.netns, healthz, pki::serve_healthz_connection)?);
        Ok(())
    }

    /// The listener in pod `b` on 8080, and the HTTPS kubelet (with IP SAN) on each node.
    pub fn start_servers(&mut self) -> Result<()> {
        let b = self.pod("b").clone();
        self.serve_tcp(&b.netns, SocketAddr::new(b.ip.into(), 8080))?;
        let nodes: Vec<u8> = self.nodes.iter().map(|n| n.index).collect();
        for index in nodes {
            self.serve_kubelet(index, true)?;
        }
        Ok(())
    }

    /// The cluster DNS as kubeadm sets it up, with dnsmasq standing in for CoreDNS:
    /// - a CoreDNS pod on each node (10.244.N.10), authoritative for cluster.local (unknown
    ///   names are NXDOMAIN) and forwarding everything else to the upstream, without a cache;
    /// - the upstream resolver on the underlay (192.168.50.53), knowing www.example.com;
    /// - the kube-dns Service (10.96.0.10, ports `dns` UDP 53 and `dns-tcp` TCP 53) in the API
    ///   stand-in, and the kube-proxy stand-in's rules for it on each node, DNATing to a
    ///   random endpoint as kube-proxy's iptables mode does.
    pub fn start_dns(&mut self) -> Result<Dns> {
        let up = format!("{}-up", self.prefix);
        add_netns(&up)?;
        ip(&self.switch, &format!("link add up0 type veth peer name eth0 netns {up}"))?;
        ip(&self.switch, "link set up0 master br0 up")?;
        ip(&up, "link set lo up")?;
        ip(&up, &format!("addr add {UPSTREAM_DNS_IP}/24 dev eth0"))?;
        ip(&up, "link set eth0 up")?;
        let (external, external_ip) = EXTERNAL_NAME;
        self.dnsmasq(
            "upstream",
            &up,
            UPSTREAM_DNS_IP,
            // Authoritative for every name: what it does not know is NXDOMAIN, as on the Internet.
            &["--local=/#/", &format!("--host-record={external},{external_ip}")],
        )?;
        let mut endpoints = Vec::new();
        let mut lab_endpoints = Vec::new();
        for node in [1u8, 2] {
            let pod = self.add_pod(node, &format!("dns{node}"), 10)?;
            let (cluster, cluster_ip) = CLUSTER_NAME;
            self.dnsmasq(
                &format!("coredns-{node}"),
                &pod.netns,
                pod.ip,
                &[
                    &format!("--local=/{CLUSTER_DOMAIN}/"),
                    &format!("--host-record={cluster},{cluster_ip}"),
                    &format!("--host-record=kube-dns.kube-system.svc.{CLUSTER_DOMAIN},{DNS_SERVICE_IP}"),
                    &format!("--server={UPSTREAM_DNS_IP}"),
                ],
            )?;
            endpoints.push(pod.ip);
            lab_endpoints.push(LabEndpoint { ip: pod.ip, node, pod: pod.name.clone(), ready: true });
        }
        for node in &self.nodes {
            let ns = &node.netns;
            // Nodes reach Service IPs through their default route (kube-proxy DNATs in OUTPUT,
            // then the packet is routed again); the lab has no default route, so the Service
            // CIDR gets one of its own.
            ip(ns, &format!("route add {SERVICE_CIDR} dev eth0"))?;
        }
        self.add_service(LabService {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            cluster_ip: DNS_SERVICE_IP,
            ports: vec![
                LabPort { name: "dns".into(), port: 53, udp: true, target_port: 53, node_port: None },
                LabPort { name: "dns-tcp".into(), port: 53, udp: false, target_port: 53, node_port: None },
            ],
            endpoints: lab_endpoints,
            external_local: false,
        });
        self.sync_kube_proxy()?;
        Ok(Dns { service: DNS_SERVICE_IP, endpoints, upstream: UPSTREAM_DNS_IP })
    }

    /// A pod's resolv.conf as the kubelet writes it (ClusterFirst, namespace default).
    pub fn pod_resolv_conf() -> String {
        format!(
            "nameserver {DNS_SERVICE_IP}\nsearch default.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
        )
    }

    /// Fault: the upstream resolver is down (its host answers with ICMP port unreachable).
    pub fn stop_upstream_dns(&mut self) {
        self.daemons.retain_mut(|(name, child)| {
            if name == "upstream" {
                let _ = child.kill();
                let _ = child.wait();
                false
            } else {
                true
            }
        });
    }

    /// dnsmasq on `addr`:53 inside `netns`: no config file, no hosts file, no cache, no
    /// resolv.conf; `extra` says what it knows and where it forwards.
    fn dnsmasq(&mut self, name: &str, netns: &str, addr: Ipv4Addr, extra: &[&str]) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--no-hosts", "--no-resolv", "--cache-size=0", "--pid-file=", "--user=root", "--group=root"])
            .args(["--bind-interfaces", &format!("--listen-address={addr}")])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().context("starting dnsmasq (is it installed? `cargo xtask setup` installs it)")?;
        // Ready when it answers on TCP 53 (it binds UDP and TCP together).
        let target = SocketAddr::new(addr.into(), 53);
        let ns = netns.to_string();
        let up = listening(&ns, target)?;
        if !up {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!("dnsmasq {name} did not start: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        self.daemons.push((name.to_string(), child));
        Ok(())
    }

    /// Stops every server listening on `port` (the "listener stopped" fault; the kubelet's
    /// healthz port goes with 10250, as when the kubelet stops).
    pub fn stop_servers_on(&mut self, port: u16) {
        let also = if port == KUBELET_PORT { KUBELET_HEALTHZ_PORT } else { port };
        self.servers.retain(|s| s.addr.port() != port && s.addr.port() != also);
    }
}

/// `GET path` over HTTP/1.1 from inside `netns` (bounded: 5 s to connect, read and write):
/// the status code and the body.
pub fn http_get(netns: &str, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_get_as(netns, addr, path, None)
}

/// [`http_get`] with `Authorization: Bearer TOKEN` when a token is given.
pub fn http_get_as(netns: &str, addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status code")?;
        let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
    })
}

/// The body of a chunked HTTP/1.1 response.
pub(crate) fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A listener inside `netns`; each accepted connection goes to `handle` on a thread of its own.
pub(crate) fn serve(
    netns: &str,
    addr: SocketAddr,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) -> Result<Server> {
    let handle = Arc::new(handle);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let path = Path::new(NETNS_DIR).join(netns);
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let bound = (|| -> Result<TcpListener> {
            let file = File::open(&path)?;
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    std::thread::spawn(move || handle(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().context("server thread")??;
    Ok(Server { addr, stop, thread: Some(thread) })
}

/// Whether something accepts TCP at `target` in `netns` within 5 s (a daemon just started).
pub fn listening(netns: &str, target: std::net::SocketAddr) -> Result<bool> {
    in_netns(netns, move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(false)
    })
}
