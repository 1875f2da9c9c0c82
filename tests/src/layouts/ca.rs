//! Certificate authorities and the certificates they issue (rcgen), with unique serials.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    SerialNumber,
};
use rustls::pki_types::CertificateDer;

use crate::pki;

pub(super) static SERIALS: AtomicU64 = AtomicU64::new(1);

/// A serial number unique in this process (positive, nine bytes, as CAs pick them at random).
fn serial() -> Vec<u8> {
    let n = SERIALS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut bytes = vec![0x10 | u8::try_from(n % 7).unwrap_or(0)];
    bytes.extend_from_slice(&(u64::from(nanos) << 20 ^ n).to_be_bytes());
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn validity(params: &mut CertificateParams, from: u64, to: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(from);
    params.not_after = epoch + Duration::from_secs(to);
}

/// A certificate authority: kubeadm's `kubernetes`, `etcd-ca`, `front-proxy-ca`; k3s's
/// `k3s-server-ca@<time>` and the others; the kubelet's own `<host>-ca@<time>`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub name: String,
}

/// What a leaf is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ServerClient,
}

/// A certificate issued by a [`Ca`], with its key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
    /// As netcheck prints it (`data.cert.serial`).
    pub serial: String,
    /// Unix seconds.
    pub not_after: u64,
    /// The issuing CA's certificate.
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
}

impl Issued {
    /// Leaf then CA, as k3s writes its certificates and as a kubelet's self-signed one is.
    pub fn bundle_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.ca_pem)
    }

    /// Certificate then key in one file, as the kubelet's certificate store writes them.
    pub fn pair_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// What a server presenting this certificate (and its CA) needs.
    pub fn leaf(&self, with_ca: bool) -> pki::Leaf {
        let mut chain = vec![self.der.clone()];
        if with_ca {
            chain.push(self.ca_der.clone());
        }
        pki::Leaf {
            chain,
            key_der: self.key_der.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl Ca {
    pub fn new(name: &str, from: u64, to: u64) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from_slice(&serial()));
        validity(&mut params, from, to);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer, name: name.to_string() })
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A leaf for `cn` (and organisations), valid for these names between two Unix times.
    pub fn issue(&self, cn: &str, orgs: &[&str], sans: &[String], usage: Usage, from: u64, to: u64) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        for org in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        for san in sans {
            params.subject_alt_names.push(match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into()?),
            });
        }
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerClient => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let serial = serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        validity(&mut params, from, to);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            serial: hex(&serial),
            not_after: to,
            ca_pem: self.pem(),
            ca_der: self.der(),
        })
    }
}
