//! Problems planted in a layout, and what netcheck should report of each.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, bail};

use super::{Ca, DAY, Flavour, KubeletClient, Layout, Usage, dates::days, k3s::K3S_DIR, store_stamp, writer::Writer};

/// One thing broken the way it breaks on real nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// kubeadm: the kubelet's client certificate expired behind `kubelet-client-current.pem`
    /// (the node was down when it was due for rotation, and an expired certificate cannot
    /// rotate): the symlink points at the first certificate, expired, and no newer one exists.
    ExpiredKubeletClientCert,
    /// kubeadm: flannel's binary is not in /opt/cni/bin (its DaemonSet's install-cni-plugin
    /// init container has not run on the node): `failed to find plugin "flannel"`.
    MissingFlannelPlugin,
    /// k3s: /run/flannel/subnet.env is missing (k3s's embedded flannel has not started).
    NoSubnetEnv,
    /// k3s: the agent's kubelet client certificate was signed by a client CA the cluster no
    /// longer has (the server's datastore was reset and its CAs made anew; the agent kept
    /// its certificates): `x509: certificate signed by unknown authority`.
    ClientCertFromOldCa,
    /// The kubelet's clusterDNS names a Service IP nothing serves (the kube-dns Service was
    /// re-created with another IP; pods get a dead nameserver).
    StaleClusterDns,
    /// kubeadm: containerd's config.toml (version 2) names another plugin folder,
    /// [`GKE_BIN_DIR`], while the plugins stay in /opt/cni/bin, where containerd never looks:
    /// `failed to find plugin "flannel" in path [/home/kubernetes/bin]`.
    PluginsWhereContainerdDoesNotLook,
    /// kubeadm, containerd configured by imports (EKS's and Gardener's `config.d/*.toml`):
    /// an operator's drop-in adds a registry mirror under the CRI plugin's table, and
    /// containerd replaces a plugin's table whole, so the plugin folder the earlier drop-in set
    /// is gone and containerd looks in /opt/cni/bin again, where the plugins are not. Needs
    /// [`Layout::plugins_in_containerd_folder_by_import`] first.
    ImportReplacesTheCniTable,
}

/// The CNI plugin folder GKE's containerd is configured with.
pub const GKE_BIN_DIR: &str = "/home/kubernetes/bin";

/// The drop-in folder containerd's config.toml imports (EKS's nodeadm writes this import).
pub const CONTAINERD_DROP_INS: &str = "/etc/containerd/config.d";

/// containerd's config.toml (version 2, as GKE writes it) with its CNI plugin folder.
fn containerd_config(bin_dir: &str) -> String {
    format!(
        "version = 2\nroot = \"/var/lib/containerd\"\nstate = \"/run/containerd\"\n\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{bin_dir}\"\n  conf_dir = \"/etc/cni/net.d\"\n"
    )
}

impl Layout {
    /// kubeadm: the CNI plugins in `bin_dir` and containerd configured to take them from
    /// there (GKE's layout): a healthy node, whose plugins /opt/cni/bin does not have.
    pub fn plugins_in_containerd_folder(&mut self, bin_dir: &str) -> Result<()> {
        if !matches!(self.flavour, Flavour::KubeadmControlPlane | Flavour::KubeadmWorker) {
            bail!("containerd's own configuration is kubeadm's here");
        }
        let w = Writer { root: self.root.clone(), files: Vec::new(), aliases: Vec::new() };
        w.dir(bin_dir, 0o755)?;
        for plugin in std::fs::read_dir(self.path("/opt/cni/bin"))? {
            let plugin = plugin?;
            std::fs::rename(plugin.path(), self.path(bin_dir).join(plugin.file_name()))?;
        }
        w.file("/etc/containerd/config.toml", &containerd_config(bin_dir), 0o644)
    }

    /// As [`Self::plugins_in_containerd_folder`], the folder set by a drop-in config.toml
    /// imports: `config.d/10-cni.toml`, a relative glob's match, and the main file's own
    /// CNI table left at the defaults.
    pub fn plugins_in_containerd_folder_by_import(&mut self, bin_dir: &str) -> Result<()> {
        self.plugins_in_containerd_folder(bin_dir)?;
        let w = Writer { root: self.root.clone(), files: Vec::new(), aliases: Vec::new() };
        let main = "version = 2\nimports = [\"config.d/*.toml\"]\nroot = \"/var/lib/containerd\"\n\n\
                    [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\"\n";
        w.file("/etc/containerd/config.toml", main, 0o644)?;
        w.dir(CONTAINERD_DROP_INS, 0o755)?;
        let cni = format!("version = 2\n{}", containerd_config(bin_dir).split_once("\n\n").map_or("", |(_, t)| t));
        w.file(&format!("{CONTAINERD_DROP_INS}/10-cni.toml"), &cni, 0o644)
    }
}

impl Layout {
    /// Breaks the layout with `problem` and says what netcheck should report instead.
    pub fn plant(&mut self, problem: Problem) -> Result<()> {
        let mut w = Writer { root: self.root.clone(), files: Vec::new(), aliases: Vec::new() };
        match problem {
            Problem::ExpiredKubeletClientCert => {
                let Some(ca) = &self.kubeadm_ca else { bail!("{problem:?} is kubeadm's") };
                let from = days(-self.node.age_days);
                let cn = format!("system:node:{}", self.node.name);
                let cert = ca.issue(&cn, &["system:nodes"], &[], Usage::Client, from, from + 365 * DAY)?;
                // Only the first certificate: written when the node joined, never rotated.
                for old in self.superseded.iter().filter(|f| f.contains("kubelet-client-")) {
                    let _ = std::fs::remove_file(self.path(old));
                    self.files.retain(|r| &r.target != old);
                }
                self.superseded.retain(|f| !f.contains("kubelet-client-"));
                let _ = std::fs::remove_file(self.path(&self.kubelet_client.file));
                self.files.retain(|r| r.target != self.kubelet_client.file);
                let file = format!("/var/lib/kubelet/pki/kubelet-client-{}.pem", store_stamp(from));
                w.file(&file, &cert.pair_pem(), 0o600)?;
                w.link(&self.kubelet_client.link, &file)?;
                self.aliases.retain(|(l, _)| l != &self.kubelet_client.link);
                self.aliases.append(&mut w.aliases);
                self.kubelet_client =
                    KubeletClient { link: self.kubelet_client.link.clone(), file: file.clone(), cert };
                self.expect("cert", &file, "fail", Some("cert_expired"));
                let user = if self.flavour == Flavour::KubeadmControlPlane {
                    format!("system:node:{}", self.node.name)
                } else {
                    "default-auth".into()
                };
                let row = format!("{} (user {user} client certificate)", self.kubelet_kubeconfig);
                self.expect("cert", &row, "fail", Some("cert_expired"));
            }
            Problem::MissingFlannelPlugin => {
                std::fs::remove_file(self.path("/opt/cni/bin/flannel")).context("no flannel plugin to remove")?;
                let cni = self.cni_config.clone();
                self.expect("cni", &cni, "fail", Some("cni_misconfigured"));
            }
            Problem::NoSubnetEnv => {
                std::fs::remove_file(self.path("/run/flannel/subnet.env"))?;
                let cni = self.cni_config.clone();
                self.expect("cni", &cni, "fail", Some("cni_misconfigured"));
            }
            Problem::ClientCertFromOldCa => {
                if !matches!(self.flavour, Flavour::K3sServer | Flavour::K3sAgent) {
                    bail!("{problem:?} is k3s's");
                }
                let created = days(-self.node.age_days - 400);
                let old_ca = Ca::new(&format!("k3s-client-ca@{created}"), created, created + 3650 * DAY)?;
                let from = days(-self.node.age_days);
                let cn = format!("system:node:{}", self.node.name);
                let cert = old_ca.issue(&cn, &["system:nodes"], &[], Usage::Client, from, from + 365 * DAY)?;
                let agent = format!("{K3S_DIR}/agent");
                w.file(&format!("{agent}/client-kubelet.crt"), &cert.bundle_pem(), 0o644)?;
                w.file(&format!("{agent}/client-kubelet.key"), &cert.key_pem, 0o600)?;
                self.kubelet_client.cert = cert;
                let row = format!("{} (user user client certificate)", self.kubelet_kubeconfig);
                self.expect("cert", &row, "fail", Some("cert_untrusted"));
            }
            Problem::StaleClusterDns => {
                let octets = self.node.cluster_dns.octets();
                let stale = Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3] + 10);
                let file = match self.flavour {
                    Flavour::KubeadmControlPlane | Flavour::KubeadmWorker => "/var/lib/kubelet/config.yaml".to_string(),
                    Flavour::K3sServer | Flavour::K3sAgent => {
                        format!("{K3S_DIR}/agent/etc/kubelet.conf.d/00-k3s-defaults.conf")
                    }
                };
                let text = std::fs::read_to_string(self.path(&file))?;
                let text = text.replace(
                    &format!("clusterDNS:\n- {}\n", self.node.cluster_dns),
                    &format!("clusterDNS:\n- {stale}\n"),
                );
                std::fs::write(self.path(&file), text)?;
                self.kubelet_dns = stale;
            }
            Problem::PluginsWhereContainerdDoesNotLook => {
                if !matches!(self.flavour, Flavour::KubeadmControlPlane | Flavour::KubeadmWorker) {
                    bail!("{problem:?} is kubeadm's");
                }
                w.file("/etc/containerd/config.toml", &containerd_config(GKE_BIN_DIR), 0o644)?;
                let cni = self.cni_config.clone();
                self.expect("cni", &cni, "fail", Some("cni_misconfigured"));
            }
            Problem::ImportReplacesTheCniTable => {
                if !self.path(&format!("{CONTAINERD_DROP_INS}/10-cni.toml")).is_file() {
                    bail!("{problem:?} needs plugins_in_containerd_folder_by_import first");
                }
                let mirror = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  \
                              endpoint = [\"https://mirror.registry.example\"]\n";
                w.file(&format!("{CONTAINERD_DROP_INS}/50-mirror.toml"), mirror, 0o644)?;
                let cni = self.cni_config.clone();
                self.expect("cni", &cni, "fail", Some("cni_misconfigured"));
            }
        }
        Ok(())
    }
}
