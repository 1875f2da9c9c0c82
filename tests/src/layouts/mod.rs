//! Node roots laid out the way kubeadm and k3s lay them out, for `netcheck node` to read: a
//! kubeadm control-plane node and worker, a k3s server and agent. Each is what the tool leaves
//! on a node that has run for a while: rotated kubelet certificates behind absolute
//! `*-current.pem` symlinks (the kubelet's certificate store never deletes the files it
//! rotated away from), keys and kubeconfigs 0600, systemd-resolved's `/etc/resolv.conf` stub
//! symlink, k3s's versioned data folder behind its absolute `data/current` symlink and its
//! stable `data/cni` folder of absolute symlinks, k3s's kubelet configuration as the drop-in
//! `agent/etc/kubelet.conf.d/00-k3s-defaults.conf`. Certificates are made when the test runs
//! (rcgen), dated relative to now, so a fixture never expires.
//!
//! A [`Layout`] also says what `netcheck node` should report on it ([`Layout::expected`]):
//! every certificate file and kubeconfig in the places `check cert --node-pki` documents, and
//! the network checks against the stand-ins of [`SoloNode`] (a network namespace of the node's
//! own, no lab) or of the lab ([`serve_on_lab`]). [`Layout::plant`] breaks one thing the way
//! it breaks on real nodes and updates what is expected.
//!
//! Sources: kubeadm's `app/phases/{certs,kubeconfig,kubelet}`, the kubelet's certificate store
//! (`k8s.io/client-go/util/certificate`, `kubelet-<client|server>-<2006-01-02-15-04-05>.pem`,
//! 0600, the `-current.pem` symlink to its absolute path), `InitializeTLS` (the self-signed
//! `kubelet.crt`: a `<host>-ca@<time>` CA and a `<host>@<time>` leaf for the hostname, one
//! year); k3s's `cmd/k3s/main.go` (`data/<hash>`, `data/cni`, `data/current`),
//! `pkg/agent/config` (agent files, `kubelet.conf.d`), `pkg/daemons/agent` (the drop-in),
//! `pkg/daemons/control/deps` (server/tls, the kubeconfig template), `pkg/server` (agent
//! certificates as leaf + CA bundles).

mod base;
mod ca;
mod dates;
mod debug_pod;
mod expected;
mod k3s;
mod kubeadm;
mod kubeconfig;
mod node;
mod problems;
mod stand_ins;
mod writer;

use std::{fmt::Write as _, net::Ipv4Addr, os::unix::fs::PermissionsExt as _, path::PathBuf};

pub use ca::{Ca, Issued, Usage};
pub use dates::{DAY, now, rfc3339, store_stamp};
pub use debug_pod::run_at_host;
pub use expected::{Row, rows};
pub use k3s::{K3sPki, k3s_agent, k3s_server};
pub use kubeadm::{KubeadmPki, kubeadm_control_plane, kubeadm_worker};
pub use node::{Flavour, KubeletServing, NodeSpec};
pub use problems::{CONTAINERD_DROP_INS, GKE_BIN_DIR, Problem};
pub use stand_ins::{SoloNode, serve_on_lab};

use crate::pki;

/// The current kubelet client certificate: the symlink the kubelet's kubeconfig names, the
/// dated file it points to, and the certificate there.
#[derive(Clone)]
pub struct KubeletClient {
    pub link: String,
    pub file: String,
    pub cert: Issued,
}

/// A node root written to disk.
pub struct Layout {
    pub flavour: Flavour,
    pub root: PathBuf,
    pub node: NodeSpec,
    /// The kubelet's kubeconfig, inside the root.
    pub kubelet_kubeconfig: String,
    /// The CNI configuration the runtime uses, inside the root.
    pub cni_config: String,
    /// What the API server presents on `node.api` (k3s: its supervisor's certificate).
    pub api_serving: pki::Leaf,
    /// What the kubelet presents on its port.
    pub kubelet_serving: pki::Leaf,
    /// The client certificate the kubelet talks to the API with.
    pub kubelet_client: KubeletClient,
    /// Certificate files and kubeconfigs netcheck should judge, and how.
    pub files: Vec<Row>,
    /// Rotated certificates the kubelet left behind and no longer uses (kubeadm): whatever
    /// netcheck says of them, it must not fail or warn.
    pub superseded: Vec<String>,
    /// The clusterDNS the kubelet's configuration names (`node.cluster_dns` unless planted).
    pub kubelet_dns: Ipv4Addr,
    /// Symlinks in the folders netcheck reads PEM files from, and the files they point to:
    /// one file, which netcheck may judge under either name.
    pub aliases: Vec<(String, String)>,
    /// kubeadm's cluster CA (to issue planted certificates).
    kubeadm_ca: Option<Box<Ca>>,
}

impl Layout {
    /// `inside` (a path as the node names it) on this machine.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Every file and folder of the root, with its mode and where its symlink points.
    pub fn tree(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.root.clone()];
        let mut all = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).expect("metadata");
                if meta.is_dir() {
                    stack.push(p.clone());
                }
                all.push((p, meta));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, meta) in all {
            let rel = p.strip_prefix(&self.root).expect("under the root").display();
            let mode = meta.permissions().mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                format!(" -> {}", std::fs::read_link(&p).expect("link").display())
            } else if meta.is_dir() {
                "/".into()
            } else if std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()) {
                " (FIFO)".into()
            } else {
                String::new()
            };
            let _ = writeln!(out, "{mode:04o} /{rel}{kind}");
        }
        out
    }
}
