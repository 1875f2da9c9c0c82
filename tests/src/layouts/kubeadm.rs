//! kubeadm's node roots: a control-plane node and a worker.

use std::path::Path;

use anyhow::Result;
use rcgen::KeyPair;

use super::{
    Ca, DAY, Flavour, Issued, KubeletClient, KubeletServing, Layout, NodeSpec, Usage,
    base::base_system,
    dates::days,
    kubeconfig::{Kubeconfig, Material},
    store_stamp,
    writer::Writer,
};
use crate::pki;

/// The cluster-wide PKI of a kubeadm cluster (`kubeadm init`): the CAs every node shares.
pub struct KubeadmPki {
    pub ca: Ca,
    pub etcd_ca: Ca,
    pub front_proxy_ca: Ca,
    pub sa_key: String,
}

impl KubeadmPki {
    /// CAs of ten years, made `age_days` ago.
    pub fn new(age_days: i64) -> Result<Self> {
        let (from, to) = (days(-age_days), days(-age_days + 3650));
        Ok(Self {
            ca: Ca::new("kubernetes", from, to)?,
            etcd_ca: Ca::new("etcd-ca", from, to)?,
            front_proxy_ca: Ca::new("front-proxy-ca", from, to)?,
            sa_key: KeyPair::generate()?.serialize_pem(),
        })
    }
}

const KUBEADM_FLANNEL_CONFLIST: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
"#;

/// The KubeletConfiguration `kubeadm init`/`join` writes to /var/lib/kubelet/config.yaml.
fn kubeadm_kubelet_config(node: &NodeSpec) -> String {
    let bootstrap = if node.serving == KubeletServing::Bootstrapped { "serverTLSBootstrap: true\n" } else { "" };
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n\
         \x20   cacheTTL: 0s\n    enabled: true\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\nauthorization:\n\
         \x20 mode: Webhook\n  webhook:\n    cacheAuthorizedTTL: 0s\n    cacheUnauthorizedTTL: 0s\ncgroupDriver: systemd\n\
         clusterDNS:\n- {dns}\nclusterDomain: {domain}\ncontainerRuntimeEndpoint: \"\"\ncpuManagerReconcilePeriod: 0s\n\
         crashLoopBackOff: {{}}\nevictionPressureTransitionPeriod: 0s\nfileCheckFrequency: 0s\nhealthzBindAddress: 127.0.0.1\n\
         healthzPort: {healthz}\nhttpCheckFrequency: 0s\nimageMaximumGCAge: 0s\nimageMinimumGCAge: 0s\nkind: KubeletConfiguration\n\
         logging:\n  flushFrequency: 0\n  options:\n    json:\n      infoBufferSize: \"0\"\n    text:\n      infoBufferSize: \"0\"\n\
         \x20 verbosity: 0\nmemorySwap: {{}}\nnodeStatusReportFrequency: 0s\nnodeStatusUpdateFrequency: 0s\n\
         resolvConf: /run/systemd/resolve/resolv.conf\nrotateCertificates: true\nruntimeRequestTimeout: 0s\n{bootstrap}\
         shutdownGracePeriod: 0s\nshutdownGracePeriodCriticalPods: 0s\nstaticPodPath: /etc/kubernetes/manifests\n\
         streamingConnectionIdleTimeout: 0s\nsyncFrequency: 0s\nvolumeStatsAggPeriod: 0s\n",
        dns = node.cluster_dns,
        domain = node.cluster_domain,
        healthz = node.healthz_port,
    )
}

/// A kubelet certificate store rotation history: the first certificate when the node joined,
/// rotated at 78% of each year-long lifetime, the last one current. Returns every file
/// (oldest first) with its certificate.
fn rotations(
    age_days: i64,
    mut issue: impl FnMut(u64, u64) -> Result<Issued>,
    kind: &str,
) -> Result<Vec<(String, Issued)>> {
    let mut out = Vec::new();
    let mut issued_at = -age_days;
    loop {
        let from = days(issued_at);
        let cert = issue(from, from + 365 * DAY)?;
        out.push((format!("/var/lib/kubelet/pki/kubelet-{kind}-{}.pem", store_stamp(from)), cert));
        let next = issued_at + 285;
        if next >= 0 {
            return Ok(out);
        }
        issued_at = next;
    }
}

/// The kubelet's certificates on a kubeadm node: the rotated client certificates (and serving
/// ones with `serverTLSBootstrap`, else the self-signed kubelet.crt), each store's
/// `-current.pem` an absolute symlink to its newest file. Returns the current client
/// certificate and the serving leaf.
fn kubeadm_kubelet_pki(
    w: &mut Writer,
    pki: &KubeadmPki,
    node: &NodeSpec,
    superseded: &mut Vec<String>,
) -> Result<(KubeletClient, pki::Leaf)> {
    w.dir("/var/lib/kubelet", 0o700)?;
    w.dir("/var/lib/kubelet/pki", 0o755)?;
    for d in ["pods", "plugins", "plugins_registry", "pod-resources", "checkpoints"] {
        w.dir(&format!("/var/lib/kubelet/{d}"), 0o750)?;
    }
    let node_cn = format!("system:node:{}", node.name);
    let clients = rotations(
        node.age_days,
        |from, to| pki.ca.issue(&node_cn, &["system:nodes"], &[], Usage::Client, from, to),
        "client",
    )?;
    for (file, cert) in &clients {
        w.pem(file, &cert.pair_pem(), 1, 0o600)?;
    }
    let (file, cert) = clients.last().expect("one certificate at least").clone();
    superseded.extend(clients[..clients.len() - 1].iter().map(|(f, _)| f.clone()));
    let link = "/var/lib/kubelet/pki/kubelet-client-current.pem".to_string();
    w.link(&link, &file)?;
    let serving = match node.serving {
        KubeletServing::Bootstrapped => {
            let sans = [node.name.clone(), node.ip.to_string()];
            let servings = rotations(
                node.age_days,
                |from, to| pki.ca.issue(&node_cn, &["system:nodes"], &sans, Usage::Server, from, to),
                "server",
            )?;
            for (file, cert) in &servings {
                w.pem(file, &cert.pair_pem(), 1, 0o600)?;
            }
            let (current, cert) = servings.last().expect("one certificate at least");
            superseded.extend(servings[..servings.len() - 1].iter().map(|(f, _)| f.clone()));
            w.link("/var/lib/kubelet/pki/kubelet-server-current.pem", current)?;
            cert.leaf(false)
        }
        KubeletServing::SelfSigned => {
            // Made once when the kubelet first started, for a year.
            let from = days(-node.age_days);
            let stamp = from;
            let own_ca = Ca::new(&format!("{}-ca@{stamp}", node.name), from - 3600, from + 365 * DAY)?;
            let cert = own_ca.issue(
                &format!("{}@{stamp}", node.name),
                &[],
                std::slice::from_ref(&node.name),
                Usage::Server,
                from - 3600,
                from + 365 * DAY,
            )?;
            w.pem("/var/lib/kubelet/pki/kubelet.crt", &cert.bundle_pem(), 2, 0o644)?;
            w.key("/var/lib/kubelet/pki/kubelet.key", &cert.key_pem)?;
            cert.leaf(true)
        }
    };
    Ok((KubeletClient { link, file, cert }, serving))
}

/// The kubelet's kubeconfig after TLS bootstrap: on a control-plane node kubeadm's
/// kubelet-finalize phase rewrites it to the rotating certificate; on a worker the kubelet
/// writes it itself (default-cluster, default-auth).
fn kubeadm_kubelet_conf(w: &mut Writer, pki: &KubeadmPki, node: &NodeSpec, control_plane: bool) -> Result<()> {
    let pem = "/var/lib/kubelet/pki/kubelet-client-current.pem";
    let user = format!("system:node:{}", node.name);
    let context = format!("{user}@kubernetes");
    let ca = pki.ca.pem();
    let kc = if control_plane {
        Kubeconfig {
            cluster: "kubernetes",
            server: format!("https://{}", node.api),
            ca: Material::Data(&ca, 1),
            user: &user,
            cert: Material::File(pem, 1),
            key: Material::File(pem, 0),
            context: &context,
            namespace: None,
        }
    } else {
        Kubeconfig {
            cluster: "default-cluster",
            server: format!("https://{}", node.api),
            ca: Material::Data(&ca, 1),
            user: "default-auth",
            cert: Material::File(pem, 1),
            key: Material::File(pem, 0),
            context: "default-context",
            namespace: Some("default"),
        }
    };
    w.kubeconfig("/etc/kubernetes/kubelet.conf", &kc)
}

/// What every kubeadm node has besides its PKI: the kubelet's configuration and flags, the
/// flannel CNI configuration and the plugins (flannel's own from its DaemonSet, the others from
/// the kubernetes-cni package).
fn kubeadm_node_common(w: &Writer, node: &NodeSpec) -> Result<()> {
    w.file("/var/lib/kubelet/config.yaml", &kubeadm_kubelet_config(node), 0o644)?;
    w.file(
        "/var/lib/kubelet/kubeadm-flags.env",
        &format!(
            "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock \
             --node-ip={} --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n",
            node.ip
        ),
        0o644,
    )?;
    w.dir("/etc/kubernetes/manifests", 0o755)?;
    w.file("/etc/cni/net.d/10-flannel.conflist", KUBEADM_FLANNEL_CONFLIST, 0o644)?;
    for plugin in
        ["bandwidth", "bridge", "dhcp", "firewall", "flannel", "host-device", "host-local", "loopback", "portmap"]
    {
        w.file(&format!("/opt/cni/bin/{plugin}"), "\x7fELF", 0o755)?;
    }
    Ok(())
}

/// What only a control-plane node has besides its PKI: kubeadm's own kubeconfigs (their
/// client certificates inline, valid `from`..`to`) and the static pod manifests.
fn kubeadm_control_plane_files(
    w: &mut Writer,
    pki: &KubeadmPki,
    node: &NodeSpec,
    (from, to): (u64, u64),
) -> Result<()> {
    // kubeadm's own kubeconfigs, with their client certificates inline.
    let ca = pki.ca.pem();
    for (file, cn, org) in [
        ("admin.conf", "kubernetes-admin", Some("kubeadm:cluster-admins")),
        ("super-admin.conf", "kubernetes-super-admin", Some("system:masters")),
        ("controller-manager.conf", "system:kube-controller-manager", None),
        ("scheduler.conf", "system:kube-scheduler", None),
    ] {
        let orgs: Vec<&str> = org.into_iter().collect();
        let cert = pki.ca.issue(cn, &orgs, &[], Usage::Client, from, to)?;
        let context = format!("{cn}@kubernetes");
        w.kubeconfig(
            &format!("/etc/kubernetes/{file}"),
            &Kubeconfig {
                cluster: "kubernetes",
                server: format!("https://{}", node.api),
                ca: Material::Data(&ca, 1),
                user: cn,
                cert: Material::Data(&cert.cert_pem, 1),
                key: Material::Data(&cert.key_pem, 0),
                context: &context,
                namespace: None,
            },
        )?;
    }
    for (pod, image) in [
        ("etcd", "registry.k8s.io/etcd:3.5.21-0"),
        ("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.33.4"),
        ("kube-controller-manager", "registry.k8s.io/kube-controller-manager:v1.33.4"),
        ("kube-scheduler", "registry.k8s.io/kube-scheduler:v1.33.4"),
    ] {
        w.file(
            &format!("/etc/kubernetes/manifests/{pod}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: {pod}\n    tier: control-plane\n  name: {pod}\n\
                 \x20 namespace: kube-system\nspec:\n  containers:\n  - image: {image}\n    name: {pod}\n  hostNetwork: true\n\
                 \x20 priorityClassName: system-node-critical\n"
            ),
            0o600,
        )?;
    }
    Ok(())
}

/// A kubeadm control-plane node (`kubeadm init`, later `kubeadm upgrade`s renewing its leaf
/// certificates): /etc/kubernetes/{admin,super-admin,controller-manager,scheduler,kubelet}.conf,
/// the full PKI with etcd's, the static pod manifests, and the kubelet's rotated certificates.
pub fn kubeadm_control_plane(dir: &Path, node: &NodeSpec) -> Result<Layout> {
    let pki = KubeadmPki::new(node.age_days)?;
    let mut w = Writer::new(dir)?;
    base_system(&mut w, node)?;
    w.dir("/etc/kubernetes/pki/etcd", 0o755)?;
    // Leaf certificates renewed by the last `kubeadm upgrade`, 150 days ago, for a year.
    let (from, to) = (days(-150), days(215));
    let api_ip = node.api.ip().to_string();
    let mut apiserver_sans: Vec<String> =
        ["kubernetes", "kubernetes.default", "kubernetes.default.svc"].iter().map(ToString::to_string).collect();
    apiserver_sans.push(format!("kubernetes.default.svc.{}", node.cluster_domain));
    apiserver_sans.push(node.name.clone());
    apiserver_sans.push(node.kubernetes_service.to_string());
    apiserver_sans.push(api_ip.clone());
    let apiserver = pki.ca.issue("kube-apiserver", &[], &apiserver_sans, Usage::Server, from, to)?;
    let etcd_sans = [node.name.clone(), "localhost".into(), node.ip.to_string(), "127.0.0.1".into(), "::1".into()];
    let leaves: Vec<(&str, Issued)> = vec![
        ("apiserver", apiserver.clone()),
        (
            "apiserver-kubelet-client",
            pki.ca.issue("kube-apiserver-kubelet-client", &["kubeadm:cluster-admins"], &[], Usage::Client, from, to)?,
        ),
        ("apiserver-etcd-client", pki.etcd_ca.issue("kube-apiserver-etcd-client", &[], &[], Usage::Client, from, to)?),
        ("front-proxy-client", pki.front_proxy_ca.issue("front-proxy-client", &[], &[], Usage::Client, from, to)?),
        ("etcd/server", pki.etcd_ca.issue(&node.name, &[], &etcd_sans, Usage::ServerClient, from, to)?),
        ("etcd/peer", pki.etcd_ca.issue(&node.name, &[], &etcd_sans, Usage::ServerClient, from, to)?),
        (
            "etcd/healthcheck-client",
            pki.etcd_ca.issue("kube-etcd-healthcheck-client", &[], &[], Usage::Client, from, to)?,
        ),
    ];
    for (name, ca) in [("ca", &pki.ca), ("front-proxy-ca", &pki.front_proxy_ca), ("etcd/ca", &pki.etcd_ca)] {
        w.pem(&format!("/etc/kubernetes/pki/{name}.crt"), &ca.pem(), 1, 0o644)?;
        w.key(&format!("/etc/kubernetes/pki/{name}.key"), &ca.key_pem())?;
    }
    for (name, leaf) in &leaves {
        w.pem(&format!("/etc/kubernetes/pki/{name}.crt"), &leaf.cert_pem, 1, 0o644)?;
        w.key(&format!("/etc/kubernetes/pki/{name}.key"), &leaf.key_pem)?;
    }
    w.key("/etc/kubernetes/pki/sa.key", &pki.sa_key)?;
    w.file(
        "/etc/kubernetes/pki/sa.pub",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
        0o644,
    )?;
    kubeadm_control_plane_files(&mut w, &pki, node, (from, to))?;
    let mut superseded = Vec::new();
    let (kubelet_client, kubelet_serving) = kubeadm_kubelet_pki(&mut w, &pki, node, &mut superseded)?;
    kubeadm_kubelet_conf(&mut w, &pki, node, true)?;
    kubeadm_node_common(&w, node)?;
    Ok(Layout {
        flavour: Flavour::KubeadmControlPlane,
        root: dir.to_path_buf(),
        node: node.clone(),
        kubelet_kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
        cni_config: "/etc/cni/net.d/10-flannel.conflist".into(),
        api_serving: apiserver.leaf(false),
        kubelet_serving,
        kubelet_client,
        files: w.files,
        aliases: w.aliases,
        superseded,
        kubelet_dns: node.cluster_dns,
        kubeadm_ca: Some(Box::new(pki.ca)),
    })
}

/// A kubeadm worker (`kubeadm join`): only the cluster CA in /etc/kubernetes/pki, the
/// kubelet's kubeconfig (bootstrap-kubelet.conf is deleted once TLS bootstrap succeeds), no
/// manifests; the API server is the control-plane endpoint `node.api`.
pub fn kubeadm_worker(dir: &Path, node: &NodeSpec) -> Result<Layout> {
    let pki = KubeadmPki::new(node.age_days)?;
    let mut w = Writer::new(dir)?;
    base_system(&mut w, node)?;
    w.dir("/etc/kubernetes/pki", 0o755)?;
    w.pem("/etc/kubernetes/pki/ca.crt", &pki.ca.pem(), 1, 0o644)?;
    let mut superseded = Vec::new();
    let (kubelet_client, kubelet_serving) = kubeadm_kubelet_pki(&mut w, &pki, node, &mut superseded)?;
    kubeadm_kubelet_conf(&mut w, &pki, node, false)?;
    kubeadm_node_common(&w, node)?;
    // The control plane's API server, elsewhere (the stand-in presents it).
    let (from, to) = (days(-150), days(215));
    let mut sans: Vec<String> = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(String::from).into();
    sans.push(format!("kubernetes.default.svc.{}", node.cluster_domain));
    sans.push(node.kubernetes_service.to_string());
    sans.push(node.api.ip().to_string());
    let apiserver = pki.ca.issue("kube-apiserver", &[], &sans, Usage::Server, from, to)?;
    Ok(Layout {
        flavour: Flavour::KubeadmWorker,
        root: dir.to_path_buf(),
        node: node.clone(),
        kubelet_kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
        cni_config: "/etc/cni/net.d/10-flannel.conflist".into(),
        api_serving: apiserver.leaf(false),
        kubelet_serving,
        kubelet_client,
        files: w.files,
        aliases: w.aliases,
        superseded,
        kubelet_dns: node.cluster_dns,
        kubeadm_ca: Some(Box::new(pki.ca)),
    })
}
