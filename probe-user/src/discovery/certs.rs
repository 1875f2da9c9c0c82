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
    /// A certificate file a kubeconfig names (as written there).
    #[error("{file}: {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::io::Error,
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
    let bytes = std::fs::read(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?;
    pem_certificates(&bytes).map_err(|why| Error::File { path: path.to_path_buf(), source: std::io::Error::other(why) })
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
/// folder, as kubectl does).
/// Absolute references of a kubeconfig under a mounted node root are read from that root
/// (see [`crate::discovery::read_kubeconfig`]).
pub fn kubeconfig_items(path: &Path, root: &Path) -> Result<Vec<KubeconfigItem>> {
    let config = crate::discovery::read_kubeconfig(path, root)
        .map_err(|e| Error::File { path: path.to_path_buf(), source: std::io::Error::other(e) })?;
    if config.clusters.is_empty() && config.auth_infos.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            source: std::io::Error::other("neither PEM certificates nor a kubeconfig with clusters or users"),
        });
    }
    Ok(items_of(&config))
}

/// The certificates of a parsed kubeconfig (file references already made absolute).
pub fn items_of(config: &kube::config::Kubeconfig) -> Vec<KubeconfigItem> {
    let cluster_ca = |name: &str| -> Option<Result<Vec<CertificateDer<'static>>, PemError>> {
        let c = config.clusters.iter().find(|c| c.name == name)?.cluster.as_ref()?;
        material(c.certificate_authority_data.as_deref(), c.certificate_authority.as_deref())
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
        let Some(certs) = material(auth.client_certificate_data.as_deref(), auth.client_certificate.as_deref()) else {
            continue;
        };
        // The cluster this user is used with: the current context's first, then any context's.
        let contexts = config.contexts.iter().filter_map(|c| c.context.as_ref().map(|ctx| (&c.name, ctx)));
        let mut with_user: Vec<_> =
            contexts.filter(|(_, ctx)| ctx.user.as_deref() == Some(named.name.as_str())).collect();
        with_user.sort_by_key(|(n, _)| config.current_context.as_deref() != Some(n.as_str()));
        let roots = with_user.first().and_then(|(_, ctx)| cluster_ca(&ctx.cluster)).and_then(Result::ok);
        items.push(KubeconfigItem {
            label: format!("user {} client certificate", named.name),
            certs,
            roots,
            client: true,
        });
    }
    items
}

/// Inline base64 PEM wins over a file reference, as in kubectl.
fn material(data: Option<&str>, file: Option<&str>) -> Option<Result<Vec<CertificateDer<'static>>, PemError>> {
    use base64::Engine as _;
    if let Some(data) = data {
        let decoded = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(PemError::NotBase64);
        return Some(decoded.and_then(|pem| pem_certificates(&pem)));
    }
    let file = file?;
    Some(match std::fs::read(file) {
        Ok(pem) => pem_certificates(&pem)
            .map_err(|source| PemError::InFile { file: file.to_string(), source: Box::new(source) }),
        Err(source) => Err(PemError::Unreadable { file: file.to_string(), source }),
    })
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
