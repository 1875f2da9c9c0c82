//! The certificates a node keeps in well-known places: kubeadm's PKI and kubeconfigs, the
//! kubelet's certificates, and k3s's (server and agent). `kubeadm certs check-expiration`
//! covers the first; netcheck covers all of them.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Folders of PEM files (`*.crt`, `*.pem`; keys are skipped when read).
const PEM_DIRS: &[&str] = &[
    "etc/kubernetes/pki",
    "etc/kubernetes/pki/etcd",
    "var/lib/kubelet/pki",
    "var/lib/rancher/k3s/server/tls",
    "var/lib/rancher/k3s/server/tls/etcd",
    "var/lib/rancher/k3s/agent",
];

/// Kubeconfigs: kubeadm's `*.conf`, k3s's agent `*.kubeconfig` and its admin file.
const KUBECONFIG_DIRS: &[(&str, &str)] = &[("etc/kubernetes", ".conf"), ("var/lib/rancher/k3s/agent", ".kubeconfig")];
const KUBECONFIG_FILES: &[&str] = &["etc/rancher/k3s/k3s.yaml"];

/// A file found under the host root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Pem(PathBuf),
    Kubeconfig(PathBuf),
}

/// Every certificate file and kubeconfig of the node under `root`, each once (symlinks such
/// as kubelet-client-current.pem are followed and counted once), in a stable order.
pub fn scan(root: &Path) -> Vec<Found> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    let mut add = |path: PathBuf, kubeconfig: bool| {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.insert(key) {
            found.push(if kubeconfig { Found::Kubeconfig(path) } else { Found::Pem(path) });
        }
    };
    for dir in PEM_DIRS {
        for path in files(&root.join(dir)) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if ext.eq_ignore_ascii_case("crt") || (ext.eq_ignore_ascii_case("pem") && !name.contains("key")) {
                add(path, false);
            }
        }
    }
    for (dir, suffix) in KUBECONFIG_DIRS {
        for path in files(&root.join(dir)) {
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)) {
                add(path, true);
            }
        }
    }
    for file in KUBECONFIG_FILES {
        let path = root.join(file);
        if path.is_file() {
            add(path, true);
        }
    }
    found
}

/// Regular files of a folder (following symlinks), sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kubeadm_kubelet_and_k3s_files_once() {
        let root = std::env::temp_dir().join(format!("netcheck-pki-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (file, text) in [
            ("etc/kubernetes/pki/ca.crt", "x"),
            ("etc/kubernetes/pki/ca.key", "x"),
            ("etc/kubernetes/pki/etcd/server.crt", "x"),
            ("etc/kubernetes/admin.conf", "x"),
            ("etc/kubernetes/manifests.yaml", "x"),
            ("var/lib/kubelet/pki/kubelet.crt", "x"),
            ("var/lib/kubelet/pki/kubelet-client-2026.pem", "x"),
            ("var/lib/rancher/k3s/agent/kubelet.kubeconfig", "x"),
            ("etc/rancher/k3s/k3s.yaml", "x"),
        ] {
            let p = root.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::os::unix::fs::symlink(
            root.join("var/lib/kubelet/pki/kubelet-client-2026.pem"),
            root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        let found = scan(&root);
        let rel: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::Pem(p) => format!("pem {}", p.strip_prefix(&root).unwrap().display()),
                Found::Kubeconfig(p) => format!("kubeconfig {}", p.strip_prefix(&root).unwrap().display()),
            })
            .collect();
        assert_eq!(
            rel,
            [
                "pem etc/kubernetes/pki/ca.crt",
                "pem etc/kubernetes/pki/etcd/server.crt",
                "pem var/lib/kubelet/pki/kubelet-client-2026.pem",
                "pem var/lib/kubelet/pki/kubelet.crt",
                "kubeconfig etc/kubernetes/admin.conf",
                "kubeconfig var/lib/rancher/k3s/agent/kubelet.kubeconfig",
                "kubeconfig etc/rancher/k3s/k3s.yaml",
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert!(scan(&root).is_empty(), "a missing root finds nothing, it does not fail");
    }
}
