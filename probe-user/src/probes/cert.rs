//! Certificates: the chain an endpoint presents (TCP connect, then a TLS handshake that records
//! the chain without judging it). Certificate files are read by `discovery::certs`; judging
//! either (expiry, name, trust) is `verdict::cert`'s job, so every problem gets its own
//! precise message.

use std::{
    net::IpAddr,
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
use crate::{capture::Capture, error::Result};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Name::parse("10.0.0.1"), Name::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(Name::parse("Node-1.Example"), Name::Dns("node-1.example".into()));
    }
}
