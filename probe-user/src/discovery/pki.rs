//! The certificates a node keeps in well-known places: kubeadm's PKI and kubeconfigs, the
//! kubelet's certificates, and k3s's (server and agent). `kubeadm certs check-expiration`
//! covers the first; netcheck covers all of them.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::node_root::NodeRoot;

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

/// A file found under the host root, by its path inside the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Pem(PathBuf),
    Kubeconfig(PathBuf),
}

impl Found {
    pub fn inside(&self) -> &Path {
        match self {
            Found::Pem(p) | Found::Kubeconfig(p) => p,
        }
    }
}

/// Every certificate file and kubeconfig of the node under `root`, each once (a file reached
/// by two names, such as kubelet-client-current.pem and its dated target, is listed by the
/// `-current` name), in a stable order. The kubelet's superseded rotations are left out: it
/// writes each new certificate to a dated file, points `kubelet-{client,server}-current.pem`
/// at it and never deletes the old ones (client-go's util/certificate/certificate_store.go),
/// so a year-old node keeps expired dated files that nothing uses.
pub fn scan(root: &NodeRoot) -> Vec<Found> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    let mut add = |path: PathBuf, kubeconfig: bool| {
        if root.identity(&path).is_none_or(|id| seen.insert(id)) {
            found.push(if kubeconfig { Found::Kubeconfig(path) } else { Found::Pem(path) });
        }
    };
    for dir in PEM_DIRS {
        let mut files = root.files(Path::new(dir));
        // `-current` names first, so they are the ones kept of two names for one file.
        files.sort_by_key(|p| !name_of(p).ends_with("-current.pem"));
        let current: Vec<String> =
            files.iter().filter_map(|p| name_of(p).strip_suffix("-current.pem")).map(str::to_string).collect();
        for path in files {
            let name = name_of(&path);
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
            let rotated = current.iter().any(|c| name.starts_with(&format!("{c}-")) && !name.ends_with("-current.pem"));
            if rotated {
                continue;
            }
            if ext.eq_ignore_ascii_case("crt") || (ext.eq_ignore_ascii_case("pem") && !name.contains("key")) {
                add(path, false);
            }
        }
    }
    for (dir, suffix) in KUBECONFIG_DIRS {
        for path in root.files(Path::new(dir)) {
            if name_of(&path).ends_with(suffix) {
                add(path, true);
            }
        }
    }
    for file in KUBECONFIG_FILES {
        if root.is_file(Path::new(file)) {
            add(PathBuf::from(file), true);
        }
    }
    found
}

fn name_of(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
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
            ("var/lib/kubelet/pki/kubelet-client-2025.pem", "expired, superseded"),
            ("var/lib/rancher/k3s/agent/kubelet.kubeconfig", "x"),
            ("etc/rancher/k3s/k3s.yaml", "x"),
        ] {
            let p = root.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        // As the kubelet makes it: absolute, naming the file as the node sees it.
        std::os::unix::fs::symlink(
            "/var/lib/kubelet/pki/kubelet-client-2026.pem",
            root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        let found = scan(&NodeRoot::open(&root).unwrap());
        let rel: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::Pem(p) => format!("pem {}", p.display()),
                Found::Kubeconfig(p) => format!("kubeconfig {}", p.display()),
            })
            .collect();
        assert_eq!(
            rel,
            [
                "pem etc/kubernetes/pki/ca.crt",
                "pem etc/kubernetes/pki/etcd/server.crt",
                "pem var/lib/kubelet/pki/kubelet-client-current.pem",
                "pem var/lib/kubelet/pki/kubelet.crt",
                "kubeconfig etc/kubernetes/admin.conf",
                "kubeconfig var/lib/rancher/k3s/agent/kubelet.kubeconfig",
                "kubeconfig etc/rancher/k3s/k3s.yaml",
            ]
        );
        std::fs::create_dir_all(root.join("empty")).unwrap();
        assert!(scan(&NodeRoot::open(&root.join("empty")).unwrap()).is_empty(), "an empty root finds nothing");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
