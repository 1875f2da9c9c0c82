//! The lab's PKI: a cluster CA and the serving certificates it signs (real certificates,
//! made with rcgen), and a small HTTPS server that answers like a kubelet.

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority for the lab (the role of a cluster's `ca.crt`).
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate with its key.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { ca })
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A serving certificate for these DNS names and IP addresses, signed by the CA.
    pub fn serving(&self, common_name: &str, dns: &[&str], ips: &[IpAddr]) -> Result<Leaf> {
        self.serving_valid(common_name, dns, ips, None)
    }

    /// As [`Pki::serving`], valid between two Unix times when given.
    pub fn serving_valid(
        &self,
        common_name: &str,
        dns: &[&str],
        ips: &[IpAddr],
        validity: Option<(u64, u64)>,
    ) -> Result<Leaf> {
        let mut params = CertificateParams::new(dns.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        if let Some((from, to)) = validity {
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            params.not_before = epoch + Duration::from_secs(from);
            params.not_after = epoch + Duration::from_secs(to);
        }
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.ca_der()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Pki {
    /// A client certificate (clientAuth), as kubeconfigs and kubelets hold, valid between two
    /// Unix times.
    pub fn client(&self, common_name: &str, validity: (u64, u64)) -> Result<Leaf> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + Duration::from_secs(validity.0);
        params.not_after = epoch + Duration::from_secs(validity.1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Leaf {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The server side of a kubelet's HTTPS port: `/healthz` answers `ok`, anything else `401`
/// as a kubelet does without credentials.
pub fn tls_config(leaf: &Leaf) -> Result<Arc<rustls::ServerConfig>> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .context("serving certificate")?;
    Ok(Arc::new(config))
}

/// The kubelet's answers: `/healthz` is `ok`, anything else needs credentials.
fn kubelet_response(request: &[u8]) -> &'static [u8] {
    if request.starts_with(b"GET /healthz ") {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    } else {
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\nUnauthorized"
    }
}

/// Reads an HTTP request head (at most 16 KiB); `None` when the peer went away first.
/// A request's head and its body (up to its Content-Length, at most 1 MiB).
pub(crate) fn read_request(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4096];
    let mut request = Vec::new();
    let head_end = loop {
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if request.len() > 16 << 10 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    while request.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    Some(request)
}

/// Serves one plain-HTTP connection (the kubelet's healthz port), bounded by a 2 s deadline.
pub fn serve_healthz_connection(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if let Some(request) = read_request(&mut stream) {
        let _ = stream.write_all(kubelet_response(&request));
    }
}

/// Serves one HTTPS kubelet connection (bounded by a 2 s read/write deadline).
pub fn serve_kubelet_connection(config: Arc<rustls::ServerConfig>, stream: TcpStream) {
    serve_https_connection(config, stream, |request| kubelet_response(request).to_vec());
}

/// The server side of a TLS connection on `stream`, each read and write bounded by 2 s.
pub(crate) fn accept_tls(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ServerConnection, TcpStream>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(rustls::StreamOwned::new(rustls::ServerConnection::new(config)?, stream))
}

/// Serves one HTTPS connection: reads a request head and writes what `respond` makes of it
/// (bounded by a 2 s read/write deadline).
pub fn serve_https_connection(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    respond: impl Fn(&[u8]) -> Vec<u8>,
) {
    let _ = (|| -> Result<()> {
        let mut tls = accept_tls(config, stream)?;
        let Some(request) = read_request(&mut tls) else { return Ok(()) };
        tls.write_all(&respond(&request))?;
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(())
    })();
}
