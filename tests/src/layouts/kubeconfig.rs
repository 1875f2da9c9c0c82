//! Kubeconfigs as kubeadm, the kubelet and k3s write them.

use base64::Engine as _;

/// A kubeconfig's cluster CA or client certificate: inline, or a file it names.
pub(super) enum Material<'a> {
    Data(&'a str, usize),
    File(&'a str, usize),
}

impl Material<'_> {
    pub(super) fn count(&self) -> usize {
        match self {
            Self::Data(_, n) | Self::File(_, n) => *n,
        }
    }
}

/// A kubeconfig as kubeadm, the kubelet or k3s write them (one cluster, one user, one context).
pub(super) struct Kubeconfig<'a> {
    pub(super) cluster: &'a str,
    pub(super) server: String,
    pub(super) ca: Material<'a>,
    pub(super) user: &'a str,
    pub(super) cert: Material<'a>,
    pub(super) key: Material<'a>,
    pub(super) context: &'a str,
    pub(super) namespace: Option<&'a str>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Kubeconfig<'_> {
    pub(super) fn yaml(&self) -> String {
        let ca = match &self.ca {
            Material::Data(pem, _) => format!("certificate-authority-data: {}", b64(pem)),
            Material::File(f, _) => format!("certificate-authority: {f}"),
        };
        let cert = match &self.cert {
            Material::Data(pem, _) => format!("client-certificate-data: {}", b64(pem)),
            Material::File(f, _) => format!("client-certificate: {f}"),
        };
        let key = match &self.key {
            Material::Data(pem, _) => format!("client-key-data: {}", b64(pem)),
            Material::File(f, _) => format!("client-key: {f}"),
        };
        let ns = self.namespace.map(|n| format!("    namespace: {n}\n")).unwrap_or_default();
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    {ca}\n    server: {server}\n  name: {cluster}\ncontexts:\n\
             - context:\n    cluster: {cluster}\n{ns}    user: {user}\n  name: {context}\ncurrent-context: {context}\n\
             kind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    {cert}\n    {key}\n",
            server = self.server,
            cluster = self.cluster,
            user = self.user,
            context = self.context,
        )
    }
}
