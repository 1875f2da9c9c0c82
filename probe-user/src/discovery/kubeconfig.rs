//! Kubeconfigs as the node's own tools read them. A kubeconfig names files (client
//! certificate and key, token, CA): relative names against the kubeconfig's folder, as kubectl
//! does, and absolute names in the node's filesystem. kubeadm's kubelet.conf names
//! `/var/lib/kubelet/pki/kubelet-client-current.pem`, which under a `kubectl debug node` pod's
//! `/host` is a symlink to a dated file inside that node. Every reference is read here, inside
//! the root ([`super::node_root`]), and put into the kubeconfig as inline data, so nothing
//! later (kube's client, the certificate checks) opens a file by a name this process would
//! resolve in its own filesystem.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use kube::config::Kubeconfig;

use super::node_root::{NodeRoot, RootError};

/// Why a kubeconfig could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error(transparent)]
    File(#[from] RootError),
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
}

/// A kubeconfig with its file references read: each one that could be read is inline data
/// now; why the others were not is in `unread`.
#[derive(Debug, Clone)]
pub struct NodeKubeconfig {
    pub config: Kubeconfig,
    /// References (as written) read and inlined.
    pub read: Vec<String>,
    /// Reference as written in the kubeconfig → why it was not read.
    pub unread: Vec<(String, Arc<RootError>)>,
}

impl NodeKubeconfig {
    /// Whether the inline data of `reference` (as written) came from reading it.
    pub fn read_from(&self, reference: &str) -> bool {
        self.read.iter().any(|r| r == reference)
    }

    /// Why `reference` (as written) was not read, if it was not.
    pub fn unread(&self, reference: &str) -> Option<&Arc<RootError>> {
        self.unread.iter().find(|(r, _)| r == reference).map(|(_, e)| e)
    }
}

/// Reads the kubeconfig at `path` and every file it names. A kubeconfig under a mounted node
/// root (`root` other than `/`, `path` under it) is the node's: it and its references are
/// resolved inside that root. Any other (an operator's `--kubeconfig`) is read in this
/// process's filesystem, its references likewise.
pub fn read(path: &Path, root: &Path) -> Result<NodeKubeconfig, KubeconfigError> {
    let in_node = root != Path::new("/") && path.starts_with(root);
    let (fs, inside) = if in_node {
        let fs = NodeRoot::open(root)?;
        let inside = fs.inside(path);
        (fs, inside)
    } else {
        let absolute =
            std::path::absolute(path).map_err(|source| RootError::Io { path: path.to_path_buf(), source })?;
        (NodeRoot::open(Path::new("/"))?, absolute)
    };
    let text = fs.read_to_string(&inside)?;
    let config =
        Kubeconfig::from_yaml(&text).map_err(|source| KubeconfigError::Parse { path: path.to_path_buf(), source })?;
    let folder = inside.parent().unwrap_or(Path::new("/"));
    Ok(inline_references(config, folder, |p| fs.read(p)))
}

/// Where a reference written in a kubeconfig in `folder` points, as a path in the same
/// filesystem: absolute as written, relative ones joined onto the folder, then cleaned
/// lexically as client-go does (`filepath.Join`: `a/../b` is `b` whatever `a` links to; `..` never
/// above `/`). The result is resolved inside the root, its symlinks followed there.
pub fn reference_path(folder: &Path, reference: &str) -> PathBuf {
    let written = Path::new(reference);
    let joined = if written.has_root() { written.to_path_buf() } else { folder.join(written) };
    let mut clean = PathBuf::from("/");
    for c in joined.components() {
        match c {
            std::path::Component::Normal(name) => clean.push(name),
            std::path::Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    clean
}

/// Reads each reference with `read` (given [`reference_path`]) and puts its bytes inline:
/// `client-certificate` → `client-certificate-data` (base64, as the kubeconfig format has it),
/// `client-key` → `client-key-data`, `certificate-authority` → `certificate-authority-data`,
/// `tokenFile` → `token`. The reference stays as written (inline data comes first for kube's
/// client as for kubectl, so it is never opened again). Inline data already there wins, as in
/// kubectl, and the reference is then not read.
pub fn inline_references(
    mut config: Kubeconfig,
    folder: &Path,
    read: impl Fn(&Path) -> Result<Vec<u8>, RootError>,
) -> NodeKubeconfig {
    let (mut read_ok, mut unread) = (Vec::new(), Vec::new());
    let mut load = |reference: &Option<String>, has_data: bool| -> Option<Vec<u8>> {
        let written = reference.as_ref().filter(|r| !has_data && !r.is_empty())?;
        match read(&reference_path(folder, written)) {
            Ok(bytes) => {
                read_ok.push(written.clone());
                Some(bytes)
            }
            Err(e) => {
                unread.push((written.clone(), Arc::new(e)));
                None
            }
        }
    };
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    for named in &mut config.auth_infos {
        let Some(auth) = named.auth_info.as_mut() else { continue };
        if let Some(pem) = load(&auth.client_certificate, auth.client_certificate_data.is_some()) {
            auth.client_certificate_data = Some(b64(pem));
        }
        if let Some(pem) = load(&auth.client_key, auth.client_key_data.is_some()) {
            auth.client_key_data = Some(b64(pem).into());
        }
        if let Some(token) = load(&auth.token_file, auth.token.is_some()) {
            // The token file's trailing newline is not part of the token (client-go trims it).
            auth.token = Some(String::from_utf8_lossy(&token).trim().to_string().into());
        }
    }
    for named in &mut config.clusters {
        let Some(cluster) = named.cluster.as_mut() else { continue };
        if let Some(pem) = load(&cluster.certificate_authority, cluster.certificate_authority_data.is_some()) {
            cluster.certificate_authority_data = Some(b64(pem));
        }
    }
    NodeKubeconfig { config, read: read_ok, unread }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const KUBELET_CONF: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    \
        server: https://10.0.0.1:6443\n    certificate-authority: ../../../../pki/ca.crt\n\
        users:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    \
        client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n    tokenFile: token\n\
        - name: gone\n  user:\n    client-certificate: /var/lib/kubelet/pki/missing.pem\n\
        contexts:\n- name: default\n  context:\n    cluster: default\n    user: default-auth\ncurrent-context: default\n";

    #[test]
    fn references_are_read_inside_the_root_and_inlined() {
        let root = std::env::temp_dir().join(format!("netcheck-kubeconfig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["etc/kubernetes", "var/lib/kubelet/pki", "pki"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("etc/kubernetes/kubelet.conf"), KUBELET_CONF).unwrap();
        std::fs::write(root.join("etc/kubernetes/token"), "abc\n").unwrap();
        std::fs::write(root.join("pki/ca.crt"), "CA INSIDE").unwrap();
        std::fs::write(root.join("var/lib/kubelet/pki/kubelet-client-2026.pem"), "CLIENT INSIDE").unwrap();
        symlink(
            "/var/lib/kubelet/pki/kubelet-client-2026.pem",
            root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        let kc = read(&root.join("etc/kubernetes/kubelet.conf"), &root).unwrap();
        let decode = |s: &str| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap();
        let cluster = kc.config.clusters[0].cluster.as_ref().unwrap();
        // `../../../../pki` from /etc/kubernetes climbs past the root and stops at it.
        assert_eq!(decode(cluster.certificate_authority_data.as_deref().unwrap()), "CA INSIDE");
        assert!(kc.read_from("../../../../pki/ca.crt"));
        let user = kc.config.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(decode(user.client_certificate_data.as_deref().unwrap()), "CLIENT INSIDE");
        assert!(kc.read_from("/var/lib/kubelet/pki/kubelet-client-current.pem"));
        assert_eq!(secrecy::ExposeSecret::expose_secret(user.token.as_ref().unwrap()), "abc");
        let gone = kc.config.auth_infos[1].auth_info.as_ref().unwrap();
        assert_eq!(gone.client_certificate.as_deref(), Some("/var/lib/kubelet/pki/missing.pem"));
        let why = kc.unread("/var/lib/kubelet/pki/missing.pem").unwrap();
        assert!(why.is_not_found(), "{why}");
        assert_eq!(kc.unread.len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn references_are_joined_onto_the_folder() {
        assert_eq!(reference_path(Path::new("/etc/kubernetes"), "pki/ca.crt"), Path::new("/etc/kubernetes/pki/ca.crt"));
        assert_eq!(reference_path(Path::new("/etc/kubernetes"), "/x.pem"), Path::new("/x.pem"));
        assert_eq!(reference_path(Path::new("/etc"), "../../x"), Path::new("/x"), "never above /");
        assert_eq!(
            reference_path(Path::new("/etc/kubernetes"), "current/../ca.crt"),
            Path::new("/etc/kubernetes/ca.crt")
        );
    }
}
