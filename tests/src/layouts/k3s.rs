//! k3s's node roots: a server and an agent.

use std::path::Path;

use anyhow::Result;
use rcgen::KeyPair;

use super::{
    Ca, DAY, Flavour, KubeletClient, Layout, NodeSpec, Usage,
    base::base_system,
    dates::days,
    kubeconfig::{Kubeconfig, Material},
    writer::Writer,
};
use crate::pki;

/// k3s's data folder name: the hash of its bundled data.
const K3S_DATA: &str = "3f1b0a7c9e2d4b6f8a0c1e3d5f7b9a1c3e5d7f9b1a3c5e7d9f1b3a5c7e9d1f3b";
pub(super) const K3S_DIR: &str = "/var/lib/rancher/k3s";

const K3S_FLANNEL_CONFLIST: &str = r#"{
  "name":"cbr0",
  "cniVersion":"1.0.0",
  "plugins":[
    {
      "type":"flannel",
      "delegate":{
        "hairpinMode":true,
        "forceAddress":true,
        "isDefaultGateway":true
      }
    },
    {
      "type":"portmap",
      "capabilities":{
        "portMappings":true
      }
    },
    {
      "type":"bandwidth",
      "capabilities":{
        "bandwidth":true
      }
    }
  ]
}
"#;

/// The cluster-wide PKI of a k3s cluster (`k3s server` on the first server).
pub struct K3sPki {
    pub client_ca: Ca,
    pub server_ca: Ca,
    pub request_header_ca: Ca,
    pub etcd_server_ca: Ca,
    pub etcd_peer_ca: Ca,
    /// When the CAs were made (their names carry it).
    pub created: u64,
}

impl K3sPki {
    pub fn new(age_days: i64) -> Result<Self> {
        let created = days(-age_days);
        let to = created + 3650 * DAY;
        let ca = |name: &str| Ca::new(&format!("{name}@{created}"), created, to);
        Ok(Self {
            client_ca: ca("k3s-client-ca")?,
            server_ca: ca("k3s-server-ca")?,
            request_header_ca: ca("k3s-request-header-ca")?,
            etcd_server_ca: ca("etcd-server-ca")?,
            etcd_peer_ca: ca("etcd-peer-ca")?,
            created,
        })
    }
}

/// k3s's bundled binaries: `data/<hash>/bin` (the CNI plugins are symlinks to the `cni`
/// multicall binary), the stable `data/cni` folder of absolute symlinks into it (first in the
/// PATH k3s gives containerd, so its CNI bin_dir), and `data/current` → `data/<hash>`.
fn k3s_data(w: &mut Writer) -> Result<()> {
    let data = format!("{K3S_DIR}/data/{K3S_DATA}");
    for bin in ["k3s", "cni", "containerd", "containerd-shim-runc-v2", "runc", "ip", "ipset", "socat"] {
        w.file(&format!("{data}/bin/{bin}"), "\x7fELF", 0o755)?;
    }
    for link in ["kubectl", "crictl", "ctr", "k3s-agent", "k3s-server", "k3s-etcd-snapshot"] {
        w.link(&format!("{data}/bin/{link}"), "k3s")?;
    }
    for plugin in ["bandwidth", "bridge", "firewall", "flannel", "host-local", "loopback", "portmap"] {
        w.link(&format!("{data}/bin/{plugin}"), "cni")?;
        w.link(&format!("{K3S_DIR}/data/cni/{plugin}"), &format!("{data}/bin/cni"))?;
    }
    w.link(&format!("{K3S_DIR}/data/cni/cni"), &format!("{data}/bin/cni"))?;
    w.link(&format!("{K3S_DIR}/data/current"), &data)?;
    w.file(&format!("{K3S_DIR}/data/.lock"), "", 0o644)?;
    Ok(())
}

/// The drop-in k3s writes on every start: its KubeletConfiguration defaults, marshalled by
/// sigs.k8s.io/yaml (keys sorted), 0600.
fn k3s_kubelet_defaults(node: &NodeSpec) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n\
         \x20   cacheTTL: 2m0s\n    enabled: true\n  x509:\n    clientCAFile: {K3S_DIR}/agent/client-ca.crt\nauthorization:\n\
         \x20 mode: Webhook\n  webhook:\n    cacheAuthorizedTTL: 5m0s\n    cacheUnauthorizedTTL: 30s\ncgroupDriver: systemd\n\
         clusterDNS:\n- {dns}\nclusterDomain: {domain}\ncontainerRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock\n\
         cpuManagerReconcilePeriod: 10s\ncrashLoopBackOff: {{}}\nevictionHard:\n  imagefs.available: 5%\n  nodefs.available: 5%\n\
         evictionMinimumReclaim:\n  imagefs.available: 10%\n  nodefs.available: 10%\nevictionPressureTransitionPeriod: 5m0s\n\
         failSwapOn: false\nfileCheckFrequency: 20s\nhealthzBindAddress: 127.0.0.1\nhttpCheckFrequency: 20s\n\
         imageMaximumGCAge: 0s\nimageMinimumGCAge: 2m0s\nkind: KubeletConfiguration\nlogging:\n  flushFrequency: 5s\n\
         \x20 format: text\n  options:\n    json:\n      infoBufferSize: \"0\"\n    text:\n      infoBufferSize: \"0\"\n\
         \x20 verbosity: 0\nmemorySwap: {{}}\nnodeStatusReportFrequency: 5m0s\nnodeStatusUpdateFrequency: 10s\n\
         resolvConf: /run/systemd/resolve/resolv.conf\nruntimeRequestTimeout: 2m0s\nserializeImagePulls: false\n\
         shutdownGracePeriod: 0s\nshutdownGracePeriodCriticalPods: 0s\nstaticPodPath: {K3S_DIR}/agent/pod-manifests\n\
         streamingConnectionIdleTimeout: 4h0m0s\nsyncFrequency: 1m0s\ntlsCertFile: {K3S_DIR}/agent/serving-kubelet.crt\n\
         tlsPrivateKeyFile: {K3S_DIR}/agent/serving-kubelet.key\nvolumeStatsAggPeriod: 1m0s\n",
        dns = node.cluster_dns,
        domain = node.cluster_domain,
    )
}

/// The agent side of a k3s node (servers run one too): `agent/` with the certificates the
/// server signed (leaf + CA bundles), the three kubeconfigs from k3s's template (file
/// references, cluster `local`, user `user`), the kubelet drop-in, flannel's CNI config.
fn k3s_agent_files(w: &mut Writer, pki: &K3sPki, node: &NodeSpec) -> Result<(KubeletClient, pki::Leaf)> {
    let agent = format!("{K3S_DIR}/agent");
    w.dir(K3S_DIR, 0o755)?;
    w.dir(&agent, 0o755)?;
    let (from, to) = (pki.created, pki.created + 365 * DAY);
    w.pem(&format!("{agent}/client-ca.crt"), &pki.client_ca.pem(), 1, 0o644)?;
    w.pem(&format!("{agent}/server-ca.crt"), &pki.server_ca.pem(), 1, 0o644)?;
    let serving_sans = [node.name.clone(), "localhost".into(), node.ip.to_string()];
    let serving = pki.server_ca.issue(&node.name, &[], &serving_sans, Usage::Server, from, to)?;
    w.pem(&format!("{agent}/serving-kubelet.crt"), &serving.bundle_pem(), 2, 0o644)?;
    w.key(&format!("{agent}/serving-kubelet.key"), &serving.key_pem)?;
    let mut kubelet = None;
    for (name, cn, orgs, kubeconfig) in [
        ("kubelet", format!("system:node:{}", node.name), vec!["system:nodes"], "kubelet.kubeconfig"),
        ("kube-proxy", "system:kube-proxy".to_string(), vec![], "kubeproxy.kubeconfig"),
        ("k3s-controller", "system:k3s-controller".to_string(), vec![], "k3scontroller.kubeconfig"),
    ] {
        let cert = pki.client_ca.issue(&cn, &orgs, &[], Usage::Client, from, to)?;
        let (cert_file, key_file) = (format!("{agent}/client-{name}.crt"), format!("{agent}/client-{name}.key"));
        w.pem(&cert_file, &cert.bundle_pem(), 2, 0o644)?;
        w.key(&key_file, &cert.key_pem)?;
        let ca = format!("{agent}/server-ca.crt");
        w.kubeconfig(
            &format!("{agent}/{kubeconfig}"),
            &Kubeconfig {
                cluster: "local",
                server: format!("https://{}", node.api),
                ca: Material::File(&ca, 1),
                user: "user",
                cert: Material::File(&cert_file, 2),
                key: Material::File(&key_file, 0),
                context: "Default",
                namespace: Some("default"),
            },
        )?;
        if name == "kubelet" {
            kubelet = Some(KubeletClient { link: cert_file.clone(), file: cert_file, cert });
        }
    }
    w.dir(&format!("{agent}/etc"), 0o755)?;
    w.dir(&format!("{agent}/etc/kubelet.conf.d"), 0o700)?;
    w.file(&format!("{agent}/etc/kubelet.conf.d/00-k3s-defaults.conf"), &k3s_kubelet_defaults(node), 0o600)?;
    w.file(&format!("{agent}/etc/cni/net.d/10-flannel.conflist"), K3S_FLANNEL_CONFLIST, 0o600)?;
    w.file(
        &format!("{agent}/etc/flannel/net-conf.json"),
        &format!("{{\n\t\"Network\": \"{}\",\n\t\"EnableIPv6\": false,\n\t\"EnableIPv4\": true,\n\t\"IPv6Network\": \"::/0\",\n\t\"Backend\": {{\n\t\"Type\": \"vxlan\"\n}}\n}}\n", node.pod_network),
        0o600,
    )?;
    w.file(
        &format!("{agent}/etc/containerd/config.toml"),
        &format!(
            "# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.\nversion = 3\n\
             root = \"{agent}/containerd\"\nstate = \"/run/k3s/containerd\"\n\n\
             [plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = [\"{K3S_DIR}/data/cni\"]\n\
             \x20 conf_dir = \"{agent}/etc/cni/net.d\"\n"
        ),
        0o600,
    )?;
    w.dir(&format!("{agent}/pod-manifests"), 0o750)?;
    w.dir(&format!("{agent}/containerd"), 0o700)?;
    w.dir(&format!("{agent}/images"), 0o755)?;
    w.file("/etc/rancher/node/password", "5b0e8f7a1c2d3e4f5a6b7c8d9e0f1a2b\n", 0o600)?;
    // The kubelet's own root folder (k3s passes no --root-dir unless rootless); no pki there.
    for d in ["pods", "plugins", "plugins_registry", "pod-resources"] {
        w.dir(&format!("/var/lib/kubelet/{d}"), 0o750)?;
    }
    k3s_data(w)?;
    Ok((kubelet.expect("the kubelet's client certificate"), serving.leaf(true)))
}

/// A k3s server's state besides its TLS material: the join token (and `node-token`, an
/// absolute symlink to it), the sqlite datastore, credentials and packaged manifests.
fn k3s_server_state(w: &mut Writer, server: &str) -> Result<()> {
    let token = format!("K10{}::server:6f1d2c3b4a5968778695a4b3c2d1e0f9", "9c0f3b2a".repeat(8));
    w.file(&format!("{server}/token"), &format!("{token}\n"), 0o600)?;
    w.link(&format!("{server}/node-token"), &format!("{server}/token"))?;
    w.file(&format!("{server}/agent-token"), &format!("{token}\n"), 0o600)?;
    w.dir(&format!("{server}/db"), 0o700)?;
    w.file(&format!("{server}/db/state.db"), "SQLite format 3\0", 0o600)?;
    w.dir(&format!("{server}/cred"), 0o700)?;
    w.file(&format!("{server}/cred/passwd"), "6f1d2c3b,node,node,system:node-proxier\n", 0o600)?;
    w.dir(&format!("{server}/manifests"), 0o700)?;
    for m in ["coredns.yaml", "local-storage.yaml", "rolebindings.yaml", "runtimes.yaml"] {
        w.file(&format!("{server}/manifests/{m}"), "apiVersion: v1\nkind: List\nitems: []\n", 0o600)?;
    }
    Ok(())
}

/// A k3s server (`curl -sfL https://get.k3s.io | sh -`): `server/` with its token, TLS
/// material and database, the admin kubeconfig /etc/rancher/k3s/k3s.yaml (0600, inline
/// data), and the agent every server runs, whose kubelet talks to the local supervisor on
/// `node.api` (https://127.0.0.1:6443).
pub fn k3s_server(dir: &Path, node: &NodeSpec) -> Result<Layout> {
    let pki = K3sPki::new(node.age_days)?;
    let mut w = Writer::new(dir)?;
    base_system(&mut w, node)?;
    let server = format!("{K3S_DIR}/server");
    let tls = format!("{server}/tls");
    w.dir(K3S_DIR, 0o755)?;
    w.dir(&server, 0o700)?;
    w.dir(&tls, 0o755)?;
    w.dir(&format!("{tls}/etcd"), 0o755)?;
    let (from, to) = (pki.created, pki.created + 365 * DAY);
    for (name, ca) in [
        ("client-ca", &pki.client_ca),
        ("server-ca", &pki.server_ca),
        ("request-header-ca", &pki.request_header_ca),
        ("etcd/server-ca", &pki.etcd_server_ca),
        ("etcd/peer-ca", &pki.etcd_peer_ca),
    ] {
        w.pem(&format!("{tls}/{name}.crt"), &ca.pem(), 1, 0o644)?;
        w.key(&format!("{tls}/{name}.key"), &ca.key_pem())?;
    }
    let mut admin = None;
    for (name, ca, cn, orgs) in [
        ("client-admin", &pki.client_ca, "system:admin", vec!["system:masters"]),
        ("client-supervisor", &pki.client_ca, "system:k3s-supervisor", vec!["system:masters"]),
        ("client-controller", &pki.client_ca, "system:kube-controller-manager", vec![]),
        ("client-scheduler", &pki.client_ca, "system:kube-scheduler", vec![]),
        ("client-k3s-cloud-controller", &pki.client_ca, "k3s-cloud-controller-manager", vec![]),
        ("client-kube-apiserver", &pki.client_ca, "system:apiserver", vec!["system:masters"]),
        ("client-kube-proxy", &pki.client_ca, "system:kube-proxy", vec![]),
        ("client-k3s-controller", &pki.client_ca, "system:k3s-controller", vec![]),
        ("client-auth-proxy", &pki.request_header_ca, "system:auth-proxy", vec![]),
        ("etcd/client", &pki.etcd_server_ca, "etcd-client", vec![]),
        ("etcd/server-client", &pki.etcd_server_ca, "etcd-server", vec![]),
        ("etcd/peer-server-client", &pki.etcd_peer_ca, "etcd-peer", vec![]),
    ] {
        let sans: Vec<String> = if name.starts_with("etcd/") {
            vec!["localhost".into(), "127.0.0.1".into(), node.ip.to_string(), node.name.clone()]
        } else {
            Vec::new()
        };
        let usage = if name.starts_with("etcd/") { Usage::ServerClient } else { Usage::Client };
        let cert = ca.issue(cn, &orgs, &sans, usage, from, to)?;
        w.pem(&format!("{tls}/{name}.crt"), &cert.bundle_pem(), 2, 0o644)?;
        w.key(&format!("{tls}/{name}.key"), &cert.key_pem)?;
        if name == "client-admin" {
            admin = Some(cert);
        }
    }
    let mut apiserver_sans: Vec<String> =
        ["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(String::from).into();
    apiserver_sans.push(format!("kubernetes.default.svc.{}", node.cluster_domain));
    apiserver_sans.extend(["localhost".to_string(), node.name.clone(), "127.0.0.1".into(), "::1".into()]);
    apiserver_sans.extend([node.ip.to_string(), node.kubernetes_service.to_string()]);
    let apiserver = pki.server_ca.issue("kube-apiserver", &[], &apiserver_sans, Usage::Server, from, to)?;
    w.pem(&format!("{tls}/serving-kube-apiserver.crt"), &apiserver.bundle_pem(), 2, 0o644)?;
    w.key(&format!("{tls}/serving-kube-apiserver.key"), &apiserver.key_pem)?;
    for key in ["serving-kubelet.key", "client-kubelet.key", "service.key", "service.current.key"] {
        w.key(&format!("{tls}/{key}"), &KeyPair::generate()?.serialize_pem())?;
    }
    // The supervisor's listener certificate (dynamiclistener: CN k3s, O k3s), what a client
    // of 6443 sees; kept in dynamic-cert.json and the k3s-serving secret.
    let supervisor = pki.server_ca.issue("k3s", &["k3s"], &apiserver_sans, Usage::Server, from, to)?;
    w.file(
        &format!("{tls}/dynamic-cert.json"),
        &serde_json::json!({"cert": supervisor.bundle_pem(), "key": supervisor.key_pem}).to_string(),
        0o600,
    )?;
    w.dir(&format!("{tls}/temporary-certs"), 0o700)?;
    k3s_server_state(&mut w, &server)?;
    let admin = admin.expect("client-admin");
    let (server_ca, admin_bundle) = (pki.server_ca.pem(), admin.bundle_pem());
    w.kubeconfig(
        "/etc/rancher/k3s/k3s.yaml",
        &Kubeconfig {
            cluster: "default",
            server: format!("https://127.0.0.1:{}", node.api.port()),
            ca: Material::Data(&server_ca, 1),
            user: "default",
            cert: Material::Data(&admin_bundle, 2),
            key: Material::Data(&admin.key_pem, 0),
            context: "default",
            namespace: None,
        },
    )?;
    let (kubelet_client, kubelet_serving) = k3s_agent_files(&mut w, &pki, node)?;
    Ok(Layout {
        flavour: Flavour::K3sServer,
        root: dir.to_path_buf(),
        node: node.clone(),
        kubelet_kubeconfig: format!("{K3S_DIR}/agent/kubelet.kubeconfig"),
        cni_config: format!("{K3S_DIR}/agent/etc/cni/net.d/10-flannel.conflist"),
        api_serving: supervisor.leaf(true),
        kubelet_serving,
        kubelet_client,
        files: w.files,
        aliases: w.aliases,
        superseded: Vec::new(),
        kubelet_dns: node.cluster_dns,
        kubeadm_ca: None,
    })
}

/// A k3s agent (`K3S_URL=https://192.168.60.20:6443 ... sh -`, joined to k3s-server-1): no
/// `server/`, no k3s.yaml; its kubelet talks to the agent's client load balancer on
/// `node.api` (https://127.0.0.1:6444), which passes through to a server's supervisor (whose
/// certificate it therefore presents).
pub fn k3s_agent(dir: &Path, node: &NodeSpec) -> Result<Layout> {
    let pki = K3sPki::new(node.age_days)?;
    let mut w = Writer::new(dir)?;
    base_system(&mut w, node)?;
    let (kubelet_client, kubelet_serving) = k3s_agent_files(&mut w, &pki, node)?;
    w.file(
        "/etc/systemd/system/k3s-agent.service.env",
        "K3S_TOKEN='K10aa::server:bb'\nK3S_URL='https://192.168.60.20:6443'\n",
        0o600,
    )?;
    let (from, to) = (pki.created, pki.created + 365 * DAY);
    let mut sans: Vec<String> = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(String::from).into();
    sans.push(format!("kubernetes.default.svc.{}", node.cluster_domain));
    sans.extend(["localhost".to_string(), "k3s-server-1".into(), "127.0.0.1".into(), "::1".into()]);
    sans.push(node.kubernetes_service.to_string());
    let supervisor = pki.server_ca.issue("k3s", &["k3s"], &sans, Usage::Server, from, to)?;
    Ok(Layout {
        flavour: Flavour::K3sAgent,
        root: dir.to_path_buf(),
        node: node.clone(),
        kubelet_kubeconfig: format!("{K3S_DIR}/agent/kubelet.kubeconfig"),
        cni_config: format!("{K3S_DIR}/agent/etc/cni/net.d/10-flannel.conflist"),
        api_serving: supervisor.leaf(true),
        kubelet_serving,
        kubelet_client,
        files: w.files,
        aliases: w.aliases,
        superseded: Vec::new(),
        kubelet_dns: node.cluster_dns,
        kubeadm_ca: None,
    })
}
