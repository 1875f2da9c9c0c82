//! Certificate files: PEM bundles and the certificates a kubeconfig carries (inline or by
//! file), read as they are found on a node. Nothing here judges them.

use std::path::Path;

use rustls::pki_types::CertificateDer;

use crate::error::{Error, Result};

/// Why a PEM text or a kubeconfig's certificate gave no certificates.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("not valid PEM: {0}")]
    NotPem(#[source] x509_parser::error::PEMError),
    #[error("no CERTIFICATE block")]
    NoCertificate,
    #[error("inline data is not base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    /// A certificate file a kubeconfig names (as written there), and why it was not read
    /// (which names the file as resolved).
    #[error("{file} → {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::sync::Arc<super::node_root::RootError>,
    },
    #[error("{file}: {source}")]
    InFile {
        file: String,
        #[source]
        source: Box<PemError>,
    },
}

/// Every certificate in a PEM file (bundles included), in file order.
pub fn load_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    pem_file(path, &super::node_root::read_file(path)?)
}

/// Every certificate in a PEM file's bytes; `shown` names the file in the error.
pub fn pem_file(shown: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    pem_certificates(bytes).map_err(|why| Error::File { path: shown.to_path_buf(), source: std::io::Error::other(why) })
}

/// Certificates of a PEM text; other PEM blocks (keys) are skipped.
pub fn pem_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(PemError::NotPem)?;
        if pem.label == "CERTIFICATE" {
            out.push(CertificateDer::from(pem.contents));
        }
    }
    if out.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(out)
}

/// Certificates named by a kubeconfig, each with the CA it must chain to.
#[derive(Debug)]
pub struct KubeconfigItem {
    /// e.g. `user kubernetes-admin client certificate`, `cluster kind CA`.
    pub label: String,
    pub certs: Result<Vec<CertificateDer<'static>>, PemError>,
    /// The cluster CA a client certificate must be signed by.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    pub client: bool,
}

/// Reads a kubeconfig: every cluster's CA and every user's client certificate, inline
/// (`*-data`, base64 PEM) or by file (relative paths are resolved against the kubeconfig's
/// folder, as kubectl does). A kubeconfig under a mounted node root has its references read
/// inside that root (see [`super::kubeconfig::read`]).
/// `client_ca`: the CA the cluster judges client certificates by, when known (the kubelet's
/// clientCAFile); else a client certificate is judged by its cluster's CA, which kubeadm uses
/// for both but k3s does not (its clients are signed by a separate client CA).
pub fn kubeconfig_items(
    path: &Path,
    root: &Path,
    client_ca: Option<&[CertificateDer<'static>]>,
) -> Result<Vec<KubeconfigItem>> {
    // Its error names the file already.
    let kc = super::kubeconfig::read(path, root).map_err(|e| Error::Unread(Box::new(e)))?;
    let config = &kc.config;
    if config.clusters.is_empty() && config.auth_infos.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            source: std::io::Error::other("neither PEM certificates nor a kubeconfig with clusters or users"),
        });
    }
    Ok(items_of(&kc, client_ca))
}

/// The certificates of a kubeconfig whose references were read ([`super::kubeconfig`]).
pub fn items_of(
    kc: &super::kubeconfig::NodeKubeconfig,
    client_ca: Option<&[CertificateDer<'static>]>,
) -> Vec<KubeconfigItem> {
    let config = &kc.config;
    let cluster_ca = |name: &str| -> Option<Result<Vec<CertificateDer<'static>>, PemError>> {
        let c = config.clusters.iter().find(|c| c.name == name)?.cluster.as_ref()?;
        material(kc, c.certificate_authority_data.as_deref(), c.certificate_authority.as_deref())
    };
    let mut items = Vec::new();
    for named in &config.clusters {
        if let Some(certs) = cluster_ca(&named.name) {
            items.push(KubeconfigItem {
                label: format!("cluster {} CA", named.name),
                certs,
                roots: None,
                client: false,
            });
        }
    }
    for named in &config.auth_infos {
        let Some(auth) = &named.auth_info else { continue };
        let Some(certs) = material(kc, auth.client_certificate_data.as_deref(), auth.client_certificate.as_deref())
        else {
            continue;
        };
        // The cluster this user is used with: the current context's first, then any context's.
        let contexts = config.contexts.iter().filter_map(|c| c.context.as_ref().map(|ctx| (&c.name, ctx)));
        let mut with_user: Vec<_> =
            contexts.filter(|(_, ctx)| ctx.user.as_deref() == Some(named.name.as_str())).collect();
        with_user.sort_by_key(|(n, _)| config.current_context.as_deref() != Some(n.as_str()));
        let roots = match client_ca {
            Some(ca) => Some(ca.to_vec()),
            None => with_user.first().and_then(|(_, ctx)| cluster_ca(&ctx.cluster)).and_then(Result::ok),
        };
        items.push(KubeconfigItem {
            label: format!("user {} client certificate", named.name),
            certs,
            roots,
            client: true,
        });
    }
    items
}

/// Inline base64 PEM (a file reference read is inline by now; inline data wins over a
/// reference, as in kubectl); a reference still there is one that could not be read.
fn material(
    kc: &super::kubeconfig::NodeKubeconfig,
    data: Option<&str>,
    file: Option<&str>,
) -> Option<Result<Vec<CertificateDer<'static>>, PemError>> {
    use base64::Engine as _;
    if let Some(data) = data {
        let decoded = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(PemError::NotBase64);
        let certs = decoded.and_then(|pem| pem_certificates(&pem));
        return Some(match file {
            // Read from this file: its name says where a bad PEM came from.
            Some(f) if kc.read_from(f) => {
                certs.map_err(|source| PemError::InFile { file: f.to_string(), source: Box::new(source) })
            }
            _ => certs,
        });
    }
    let file = file?;
    let why = kc.unread(file).cloned().unwrap_or_else(|| {
        let source = std::io::Error::other("not read");
        std::sync::Arc::new(super::node_root::RootError::Io { path: file.into(), source })
    });
    Some(Err(PemError::Unreadable { file: file.to_string(), source: why }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bundles_and_bad_pem() {
        let key = rcgen::KeyPair::generate().unwrap();
        let a = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap().self_signed(&key).unwrap();
        let b = rcgen::CertificateParams::new(vec!["b".to_string()]).unwrap().self_signed(&key).unwrap();
        let bundle = format!("{}{}{}", a.pem(), key.serialize_pem(), b.pem());
        let certs = pem_certificates(bundle.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2, "keys are skipped");
        assert_eq!(certs[0].as_ref(), a.der().as_ref());
        assert!(matches!(pem_certificates(b"hello"), Err(PemError::NoCertificate)));
        assert!(pem_certificates(key.serialize_pem().as_bytes()).is_err());
    }
}
