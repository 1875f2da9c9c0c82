//! Certificates: the chain an endpoint presents (TCP connect, then a TLS handshake that records
//! the chain without judging it) and the certificates in PEM files. Judging them (expiry, name,
//! trust) is `correlation::cert`'s job, so every problem gets its own precise message.

use std::{
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use super::{Target, tcp};
use crate::{
    capture::Capture,
    error::{Error, Result},
};

/// What an endpoint presented.
#[derive(Debug)]
pub struct EndpointReport {
    pub tcp: tcp::Report,
    /// The name the chain is judged against (`--server-name`, else the host dialled).
    pub name: Name,
    /// `None` when TCP did not connect; otherwise the handshake's result.
    pub handshake: Option<Result<Vec<CertificateDer<'static>>, String>>,
    pub elapsed: Duration,
}

/// The identity a certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Dns(String),
    Ip(IpAddr),
}

impl Name {
    pub fn parse(s: &str) -> Self {
        s.parse::<IpAddr>().map_or_else(|_| Self::Dns(s.to_ascii_lowercase()), Self::Ip)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(d) => f.write_str(d),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connects (with the TCP probe's causes and evidence) and records the presented chain.
pub async fn fetch(
    target: &Target,
    server_name: Option<&str>,
    deadline: Duration,
    capture: Option<&Capture>,
) -> EndpointReport {
    let started = Instant::now();
    let name = Name::parse(server_name.unwrap_or(&target.host));
    let (tcp, stream) = tcp::connect(target, deadline, capture).await;
    let handshake = match stream {
        None => None,
        Some(stream) => {
            let remaining = deadline.saturating_sub(started.elapsed());
            Some(match tokio::time::timeout(remaining, handshake(stream, &name)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no TLS answer within {:.1} s", deadline.as_secs_f64())),
            })
        }
    };
    EndpointReport { tcp, name, handshake, elapsed: started.elapsed() }
}

async fn handshake(stream: tokio::net::TcpStream, name: &Name) -> Result<Vec<CertificateDer<'static>>, String> {
    let recorder = Arc::new(Recorder { provider: provider(), chain: Mutex::new(Vec::new()) });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let server_name = match name {
        Name::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Name::Dns(d) => ServerName::try_from(d.clone()).map_err(|e| format!("server name {d:?}: {e}"))?,
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = connector.connect(server_name, stream).await;
    let chain = std::mem::take(&mut *recorder.chain.lock().expect("chain"));
    match result {
        Ok(_tls) => Ok(chain),
        // The chain was seen even when the handshake failed after it (e.g. a client certificate
        // demanded): judge what was presented.
        Err(_) if !chain.is_empty() => Ok(chain),
        Err(e) => Err(e.to_string()),
    }
}

/// Accepts any chain and keeps it; the handshake's signatures are still verified, so the
/// recorded chain is the one the server holds the key of. netcheck never sends data over it.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.lock().expect("chain");
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Every certificate in a PEM file (bundles included), in file order.
pub fn load_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?;
    pem_certificates(&bytes).map_err(|why| Error::File { path: path.to_path_buf(), source: std::io::Error::other(why) })
}

/// Certificates of a PEM text; other PEM blocks (keys) are skipped.
pub fn pem_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| format!("not valid PEM: {e}"))?;
        if pem.label == "CERTIFICATE" {
            out.push(CertificateDer::from(pem.contents));
        }
    }
    if out.is_empty() {
        return Err("no CERTIFICATE block".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Name::parse("10.0.0.1"), Name::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(Name::parse("Node-1.Example"), Name::Dns("node-1.example".into()));
    }

    #[test]
    fn pem_bundles_and_bad_pem() {
        let key = rcgen::KeyPair::generate().unwrap();
        let a = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap().self_signed(&key).unwrap();
        let b = rcgen::CertificateParams::new(vec!["b".to_string()]).unwrap().self_signed(&key).unwrap();
        let bundle = format!("{}{}{}", a.pem(), key.serialize_pem(), b.pem());
        let certs = pem_certificates(bundle.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2, "keys are skipped");
        assert_eq!(certs[0].as_ref(), a.der().as_ref());
        assert!(pem_certificates(b"hello").unwrap_err().contains("no CERTIFICATE"));
        assert!(pem_certificates(key.serialize_pem().as_bytes()).is_err());
    }
}

/// Certificates named by a kubeconfig, each with the CA it must chain to.
#[derive(Debug)]
pub struct KubeconfigItem {
    /// e.g. `user kubernetes-admin client certificate`, `cluster kind CA`.
    pub label: String,
    pub certs: Result<Vec<CertificateDer<'static>>, String>,
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
    let cluster_ca = |name: &str| -> Option<Result<Vec<CertificateDer<'static>>, String>> {
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
fn material(data: Option<&str>, file: Option<&str>) -> Option<Result<Vec<CertificateDer<'static>>, String>> {
    use base64::Engine as _;
    if let Some(data) = data {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("inline data is not base64: {e}"));
        return Some(decoded.and_then(|pem| pem_certificates(&pem)));
    }
    let file = file?;
    Some(
        std::fs::read(file)
            .map_err(|e| format!("{file}: {e}"))
            .and_then(|pem| pem_certificates(&pem).map_err(|e| format!("{file}: {e}"))),
    )
}
