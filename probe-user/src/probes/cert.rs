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
    CertificateError, DigitallySignedStruct, OtherError, PeerMisbehaved, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime},
};
use x509_parser::prelude::{FromDer as _, X509Certificate};

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
    let recorder =
        Arc::new(Recorder { provider: provider(), chain: Mutex::new(Vec::new()), bad_signature: Mutex::new(None) });
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
    let bad_signature = recorder.bad_signature.lock().expect("signature").take();
    match (result, bad_signature) {
        // The server did not prove it holds the key of the certificate it presented: that
        // certificate is not its own to judge.
        (_, Some(e)) if disproves_key(&e, chain.first()) => Err(signature_failure(&e)),
        (Ok(_tls), None) => Ok(chain),
        // The chain was seen even when the handshake failed after it (e.g. a client certificate
        // demanded), or a signature could not be checked at all (a key or certificate the
        // crypto library refuses: RSA under 2048 bits, an unknown critical extension: that
        // proves nothing either way): judge what was presented; the verdict says what it
        // cannot verify.
        (_, _) if !chain.is_empty() => Ok(chain),
        (_, Some(e)) => Err(signature_failure(&e)),
        (Err(e), None) => Err(e.to_string()),
    }
}

/// Whether a refused handshake signature shows the server lacks the certificate's key: a bad
/// signature under a key the library checks. ring refuses RSA keys under 2048 bits with the
/// same error as a bad signature, so those prove nothing.
fn disproves_key(e: &rustls::Error, leaf: Option<&CertificateDer<'static>>) -> bool {
    if !matches!(e, rustls::Error::InvalidCertificate(CertificateError::BadSignature)) {
        return false;
    }
    let small_rsa = leaf.and_then(|c| X509Certificate::from_der(c.as_ref()).ok()).is_some_and(|(_, c)| {
        matches!(c.public_key().parsed(), Ok(x509_parser::public_key::PublicKey::RSA(k)) if k.key_size() < 2048)
    });
    !small_rsa
}

/// What a refused handshake signature means, for the `tls_handshake` row.
fn signature_failure(e: &rustls::Error) -> String {
    if matches!(e, rustls::Error::InvalidCertificate(CertificateError::BadSignature)) {
        "the server's handshake signature does not verify with its certificate's key (the server does not hold \
         the key of the certificate it presents)"
            .to_string()
    } else {
        format!("the server's handshake signature could not be checked with its certificate's key: {e}")
    }
}

/// Accepts any chain and keeps it; the handshake's signatures are still verified (a failure
/// kept, and reported by [`handshake`] instead of the chain), so the recorded chain is the one
/// the server holds the key of. netcheck never sends data over it.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
    /// Why the server's handshake signature was refused.
    bad_signature: Mutex<Option<rustls::Error>>,
}

impl Recorder {
    fn signature(
        &self,
        tls13: bool,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let result = verify_signature(tls13, message, cert, dss, &self.provider.signature_verification_algorithms);
        if let Err(e) = &result {
            self.bad_signature.lock().expect("signature").get_or_insert_with(|| e.clone());
        }
        result
    }
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
        self.signature(false, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(true, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake signature (TLS 1.3's CertificateVerify, TLS 1.2's ServerKeyExchange) checked
/// with the key of the server's certificate, by rustls's helpers. They parse the certificate
/// with webpki, which takes only X.509 v3 (`UnsupportedCertVersion`); Go (the API server, the
/// kubelet, kubectl) serves and accepts v1 and v2 certificates too, and `verdict::cert` judges
/// those by Go's rules. For such a certificate the key is read with x509-parser and the
/// signature checked with it as a raw public key, by the same rules as rustls's helpers.
fn verify_signature(
    tls13: bool,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let by_certificate = if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    };
    let Err(e) = by_certificate else { return by_certificate };
    let Some(spki) = pre_v3_key(cert) else { return Err(e) };
    if tls13 {
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algs)
    } else {
        verify_tls12_signature_with_raw_key(message, &spki, dss.scheme, dss.signature(), algs)
    }
}

/// The SubjectPublicKeyInfo of an X.509 v1 or v2 certificate, the versions Go parses and
/// webpki refuses (`UnsupportedCertVersion`); `None` for anything else (v3 certificates keep
/// rustls's verdict, and what x509-parser cannot read whole is no certificate).
fn pre_v3_key<'a>(cert: &'a CertificateDer<'_>) -> Option<SubjectPublicKeyInfoDer<'a>> {
    if !matches!(webpki::EndEntityCert::try_from(cert), Err(webpki::Error::UnsupportedCertVersion)) {
        return None;
    }
    let (rest, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    // x509-parser counts from 0: 0 is v1, 1 is v2.
    let raw = parsed.tbs_certificate.subject_pki.raw;
    (rest.is_empty() && parsed.version().0 < 2).then(|| SubjectPublicKeyInfoDer::from(raw))
}

/// rustls's `verify_tls12_signature` with a raw public key in place of the certificate (rustls
/// has this only for TLS 1.3): every algorithm the scheme maps to is tried, those for another
/// kind of key skipped.
fn verify_tls12_signature_with_raw_key(
    message: &[u8],
    spki: &SubjectPublicKeyInfoDer<'_>,
    scheme: SignatureScheme,
    signature: &[u8],
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    // A scheme rustls does not know (its `algorithm()` is `None`, checked first there) is in no
    // mapping either.
    let unadvertised = || rustls::Error::from(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme);
    let (_, possible) = algs.mapping.iter().find(|(s, _)| *s == scheme).ok_or_else(unadvertised)?;
    let key = webpki::RawPublicKeyEntity::try_from(spki).map_err(pki_error)?;
    let mut error = None;
    for alg in *possible {
        match key.verify_signature(*alg, message, signature) {
            Err(e @ webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => error = Some(e),
            Err(e) => return Err(pki_error(e)),
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
        }
    }
    Err(error.map_or_else(unadvertised, pki_error))
}

/// A webpki error as rustls reports it (rustls's own mapping is private), for the errors a
/// signature check gives.
fn pki_error(e: webpki::Error) -> rustls::Error {
    match e {
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature.into(),
        webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
            CertificateError::BadEncoding.into()
        }
        other => CertificateError::Other(OtherError(Arc::new(other))).into(),
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

    mod signatures {
        use std::net::TcpListener;

        use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};
        use rustls::{
            ProtocolVersion, SupportedProtocolVersion,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
            server::{ClientHello, ResolvesServerCert},
            sign::CertifiedKey,
        };

        use super::*;

        /// A DER element.
        fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            match contents.len() {
                n @ 0..0x80 => out.push(u8::try_from(n).unwrap()),
                n @ 0x80..0x100 => out.extend([0x81, u8::try_from(n).unwrap()]),
                n => out.extend([0x82].into_iter().chain(u16::try_from(n).unwrap().to_be_bytes())),
            }
            out.extend_from_slice(contents);
            out
        }

        /// A self-signed X.509 v1 certificate (no version field, no extensions) for `key`.
        fn v1(key: &KeyPair) -> CertificateDer<'static> {
            let name = der(0x30, &der(0x31, &der(0x30, &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"api")].concat())));
            // ecdsa-with-SHA256
            let algorithm = der(0x30, &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
            let validity = der(0x30, &[der(0x18, b"20200101000000Z"), der(0x18, b"20990101000000Z")].concat());
            let tbs =
                [der(0x02, &[0x01]), algorithm.clone(), name.clone(), validity, name, key.subject_public_key_info()]
                    .concat();
            let tbs = der(0x30, &tbs);
            let signature = [&[0u8][..], &key.sign(&tbs).unwrap()].concat();
            CertificateDer::from(der(0x30, &[tbs, algorithm, der(0x03, &signature)].concat()))
        }

        /// A self-signed X.509 v3 certificate for `key`.
        fn v3(key: &KeyPair) -> CertificateDer<'static> {
            let params = rcgen::CertificateParams::new(vec!["api.example.test".to_string()]).unwrap();
            params.self_signed(key).unwrap().der().clone()
        }

        #[derive(Debug)]
        struct Fixed(Arc<CertifiedKey>);
        impl ResolvesServerCert for Fixed {
            fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
                Some(self.0.clone())
            }
        }

        /// [`handshake`] against a loopback server speaking only `version`, presenting `cert`
        /// and signing with `key`; with the version the server agreed when the client finished,
        /// or the server's error.
        fn against(
            version: &'static SupportedProtocolVersion,
            cert: &CertificateDer<'static>,
            key: &KeyPair,
        ) -> (Result<Vec<CertificateDer<'static>>, String>, Result<ProtocolVersion, String>) {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let key = provider().key_provider.load_private_key(key).unwrap();
            let certified = Arc::new(CertifiedKey::new(vec![cert.clone()], key));
            let config = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Fixed(certified)));
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::new(config)).unwrap(), stream);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
                }
                tls.conn.protocol_version().ok_or_else(|| "no version".to_string())
            });
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let client = runtime.block_on(async {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                handshake(stream, &Name::Dns("api.example.test".into())).await
            });
            (client, server.join().unwrap())
        }

        const VERSIONS: [(&SupportedProtocolVersion, ProtocolVersion); 2] =
            [(&rustls::version::TLS12, ProtocolVersion::TLSv1_2), (&rustls::version::TLS13, ProtocolVersion::TLSv1_3)];

        #[test]
        fn test_certificates_are_what_they_say() {
            let key = KeyPair::generate().unwrap();
            let (v1, v3) = (v1(&key), v3(&key));
            assert!(matches!(webpki::EndEntityCert::try_from(&v1), Err(webpki::Error::UnsupportedCertVersion)));
            assert!(webpki::EndEntityCert::try_from(&v3).is_ok());
            assert_eq!(pre_v3_key(&v1).unwrap().as_ref(), key.subject_public_key_info().as_slice());
            assert!(pre_v3_key(&v3).is_none());
            assert!(pre_v3_key(&CertificateDer::from(vec![0x30, 0x00])).is_none());
            // Trailing bytes: x509-parser reads a certificate, Go would not ("x509: trailing data").
            assert!(pre_v3_key(&CertificateDer::from([v1.as_ref(), &[0][..]].concat())).is_none());
        }

        /// A server holding the key of its v1 certificate completes the handshake on TLS 1.2 and
        /// 1.3 (rustls's helpers alone refuse the certificate, UnsupportedCertVersion), and its
        /// chain is recorded; one signing with another key fails it, on v1 and v3 alike (it
        /// used to be hidden behind the recorded chain).
        #[test]
        fn handshake_signatures_are_checked_with_the_certificates_key() {
            let (key, other) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
            for (version, agreed) in VERSIONS {
                for (what, cert) in [("v1", v1(&key)), ("v3", v3(&key))] {
                    let (client, server) = against(version, &cert, &key);
                    assert_eq!(server, Ok(agreed), "{what} {agreed:?}: {client:?}");
                    assert_eq!(client, Ok(vec![cert.clone()]), "{what} {agreed:?}");

                    let (client, server) = against(version, &cert, &other);
                    assert!(server.is_err(), "{what} {agreed:?}: {server:?}");
                    let e = client.expect_err(&format!("{what} {agreed:?}: a wrong key's signature accepted"));
                    assert!(
                        e.starts_with("the server's handshake signature does not verify"),
                        "{what} {agreed:?}: {e}"
                    );
                }
            }
        }

        /// TLS 1.2's raw-key check as rustls's: a scheme outside the mapping is unadvertised; one
        /// for another kind of key is refused as such, not as a bad signature.
        #[test]
        fn tls12_raw_key_check() {
            let algs = &provider().signature_verification_algorithms;
            let key = KeyPair::generate().unwrap();
            let spki = key.subject_public_key_info();
            let spki = SubjectPublicKeyInfoDer::from(spki.as_slice());
            let message = b"server key exchange";
            let signature = key.sign(message).unwrap();
            let check =
                |scheme, signature: &[u8]| verify_tls12_signature_with_raw_key(message, &spki, scheme, signature, algs);
            assert!(check(SignatureScheme::ECDSA_NISTP256_SHA256, &signature).is_ok());
            let forged = KeyPair::generate().unwrap().sign(message).unwrap();
            assert_eq!(
                check(SignatureScheme::ECDSA_NISTP256_SHA256, &forged).unwrap_err(),
                rustls::Error::InvalidCertificate(CertificateError::BadSignature)
            );
            assert_eq!(
                check(SignatureScheme::Unknown(0x1234), &signature).unwrap_err(),
                PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into()
            );
            let e = check(SignatureScheme::RSA_PKCS1_SHA256, &signature).unwrap_err();
            assert!(format!("{e:?}").contains("UnsupportedSignatureAlgorithmForPublicKeyContext"), "{e:?}");
        }
    }
}
