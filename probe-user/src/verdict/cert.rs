//! Certificate verdicts: expiry, validity start, name (including the "no IP SANs" case) and
//! trust, each judged on its own so one problem never hides another. Messages for names follow
//! Go's crypto/x509, which is what kubectl, kubelet and metrics-server print.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME,
    prelude::FromDer,
};

use super::{Cause, Check, Evidence, Probe, Status, Verdict, tcp_verdict};
use crate::{
    discovery::certs::KubeconfigItem,
    probes::cert::{EndpointReport, Name},
};

const DAY: i64 = 86_400;

/// What netcheck reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub subject: String,
    pub issuer: String,
    /// Hex, colon separated; with the issuer it names one certificate wherever it is found.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// The subject's Common Name (the last one, as Go's `pkix.Name` keeps); empty if none.
    pub common_name: String,
    /// Whether the certificate has a subjectAltName extension (a v1 certificate never has).
    pub san_extension: bool,
}

pub fn facts(der: &CertificateDer<'_>) -> Result<Facts, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Facts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns,
        ips,
        common_name: common_name(&cert).unwrap_or_default(),
        san_extension: cert.extensions().iter().any(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME),
    })
}

/// The subject's last Common Name, as Go's `pkix.Name.FillFromRDNSequence` keeps it.
fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject().iter_common_name().filter_map(|a| a.as_str().ok()).last().map(str::to_string)
}

/// `data.cert` of a certificate's check: which certificate it is (the same one may be found
/// as a file, in a kubeconfig and on an endpoint).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertData {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
}

impl CertData {
    pub fn of(der: &CertificateDer<'_>) -> Option<Self> {
        let f = facts(der).ok()?;
        Some(Self { subject: f.subject, issuer: f.issuer, serial: f.serial, not_after: stamp(f.not_after) })
    }
}

/// A file's check with the certificate it judged.
fn cert_check(target: String, chain: &[CertificateDer<'_>], policy: Policy<'_>) -> Check {
    Check {
        data: chain.first().and_then(CertData::of).map(super::Data::Cert),
        ..Check::file(Probe::Cert, target, judge(chain, policy))
    }
}

/// What to judge a chain against.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The identity dialled; `None` for files (no name to match).
    pub name: Option<&'a Name>,
    /// Trusted CAs (`--ca`, a kubeconfig's CA); `None`: trust is not judged.
    pub roots: Option<&'a [CertificateDer<'static>]>,
    /// Unix seconds.
    pub now: i64,
    pub warn_days: u32,
    /// Judge as a client certificate (clientAuth) rather than a server's (serverAuth).
    pub client: bool,
}

/// Status, cause (the most severe problem) and a detail naming every problem found.
pub fn judge(chain: &[CertificateDer<'_>], policy: Policy<'_>) -> Verdict {
    let Some(leaf) = chain.first() else {
        return Verdict::fail(Cause::TlsHandshake, "no certificate presented");
    };
    let f = match facts(leaf) {
        Ok(f) => f,
        Err(e) => return Verdict::fail(Cause::TlsHandshake, e),
    };
    let mut problems: Vec<(Cause, String)> = Vec::new();
    let now = policy.now;
    if now > f.not_after {
        problems.push((
            Cause::CertExpired,
            format!("expired {} ago (notAfter {})", days(now - f.not_after), stamp(f.not_after)),
        ));
    } else if now < f.not_before {
        problems.push((
            Cause::CertNotYetValid,
            format!("not valid before {} (in {})", stamp(f.not_before), days(f.not_before - now)),
        ));
    }
    if f.not_before > f.not_after {
        problems.push((
            Cause::CertExpired,
            format!("valid at no time: notBefore {} is after notAfter {}", stamp(f.not_before), stamp(f.not_after)),
        ));
    }
    // Trust is judged at a moment the certificate is valid, so that expiry is not also reported
    // as distrust; a certificate valid at no time is judged now (and fails on its dates too).
    let trust_at = if f.not_before <= f.not_after { now.clamp(f.not_before, f.not_after) } else { now };
    let mut trusted_by = TrustedBy::Webpki;
    if let Some(roots) = policy.roots {
        match trusted(leaf, &chain[1..], roots, trust_at, now, policy.client) {
            Ok(by) => trusted_by = by,
            Err(e) => {
                problems
                    .push((Cause::CertUntrusted, format!("not trusted by the given CA: {e} (issuer {})", f.issuer)));
            }
        }
    }
    if let Some(name) = policy.name
        && let Err(e) = name_matches(&f, name)
    {
        problems.push((Cause::CertNameMismatch, e));
    }
    let left = f.not_after - now;
    if (0..=i64::from(policy.warn_days) * DAY).contains(&left) {
        problems.push((
            Cause::CertExpiring,
            format!(
                "expires in {} (notAfter {}), within the {}-day warning",
                days(left),
                stamp(f.not_after),
                policy.warn_days
            ),
        ));
    }
    let subject = if f.subject.is_empty() { "certificate".to_string() } else { f.subject.clone() };
    match problems.first() {
        None => {
            let trust = match (policy.roots, trusted_by) {
                (None, _) => "trust not checked (no CA given)".to_string(),
                (Some(_), TrustedBy::Webpki) => "trusted by the given CA".to_string(),
                (Some(_), TrustedBy::GoRules { version }) => {
                    format!(
                        "trusted by the given CA (an X.509 v{version} certificate, judged as Go's crypto/x509 does)"
                    )
                }
            };
            let name = policy.name.map(|n| format!(", valid for {n}")).unwrap_or_default();
            Verdict::pass(format!("{subject}: expires in {}{name}, {trust}", days(left)))
        }
        Some((cause, _)) => {
            let status = if *cause == Cause::CertExpiring { Status::Warn } else { Status::Fail };
            let all: Vec<&str> = problems.iter().map(|(_, d)| d.as_str()).collect();
            Verdict::new(status, Some(*cause), format!("{subject}: {}", all.join("; ")))
        }
    }
}

/// How a trusted chain was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrustedBy {
    /// rustls-webpki (X.509 v3 leaves).
    Webpki,
    /// Go's crypto/x509 rules ([`go_rules`]): a v1 or v2 leaf, which webpki refuses.
    GoRules { version: u32 },
}

fn trusted(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'static>],
    at: i64,
    now: i64,
    client: bool,
) -> Result<TrustedBy, String> {
    let anchors: Vec<_> = roots.iter().filter_map(|r| webpki::anchor_from_trusted_cert(r).ok()).collect();
    if anchors.is_empty() {
        return Err("the CA file holds no usable certificate".to_string());
    }
    let ee = match webpki::EndEntityCert::try_from(leaf) {
        Ok(ee) => ee,
        // webpki takes only v3 certificates; the API server and kubelet (Go) take v1 and v2
        // ones too, so those are judged by Go's rules rather than called untrusted.
        Err(webpki::Error::UnsupportedCertVersion) => {
            return go_rules::verify(leaf, intermediates, roots, (at, now), client)
                .map(|version| TrustedBy::GoRules { version });
        }
        Err(e) => return Err(format!("{e:?}")),
    };
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0)));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        time,
        if client { webpki::KeyUsage::client_auth() } else { webpki::KeyUsage::server_auth() },
        None,
        None,
    )
    .map(|_| TrustedBy::Webpki)
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => "signed by an unknown authority".to_string(),
        // Same issuer name, other key: typically a CA re-created under the same name (kubeadm
        // calls every cluster CA "kubernetes").
        webpki::Error::InvalidSignatureForPublicKey => {
            "signed by a different CA with the same name (the signature does not verify)".to_string()
        }
        other => format!("{other:?}"),
    })
}

/// Trust as Go's crypto/x509 `Certificate.Verify` judges it, for leaves webpki refuses because
/// they are not X.509 v3 (`UnsupportedCertVersion`). Kubernetes' API server and kubelet are Go:
/// they verify serving certificates with `Verify` (crypto/tls, `KeyUsages` left empty: serverAuth)
/// and client certificates with `KeyUsages: clientAuth` (k8s.io/apiserver
/// pkg/authentication/request/x509 `DefaultVerifyOptions`). Read from golang/go src/crypto/x509:
/// - parser.go `parseCertificate`: versions 1 to 3 are accepted and extensions are read only in
///   v3, so a v1 certificate has no key usage, extended key usage, basic constraints or SAN.
/// - verify.go `Verify`: `isValid(leafCertificate)` (no unhandled critical extension, valid at
///   the time), `VerifyHostname` when a name is given (here [`name_matches`]), then a leaf that
///   is itself one of the roots is trusted, else `buildChains`; the chains are then filtered by
///   `checkChainForKeyUsage`.
/// - verify.go `buildChains`: candidate parents are the roots, then the intermediates, whose raw
///   subject is the child's raw issuer; a candidate must pass `CheckSignatureFrom` (x509.go: a v3
///   parent needs basicConstraints with cA, a parent with a key usage needs keyCertSign, so a v1
///   root may sign; SHA-1 and MD5 signatures are refused as insecure) and `isValid`: valid at
///   the time, no unhandled critical extension, an intermediate must have basicConstraints with
///   cA (`NotAuthorizedToSign`: a v1 intermediate never can), path length. Roots are anchors
///   and need no basicConstraints. At most 100 signature checks (`maxChainSignatureChecks`).
/// - verify.go `checkChainForKeyUsage`: a certificate without extended key usage allows every
///   usage (so does anyExtendedKeyUsage), else it must list the usage asked for. Key usage
///   bits are ignored (`isValid`: "KeyUsage status flags are ignored"), so a v1 leaf is good
///   for both serving and client authentication.
///
/// Not done: name constraints (Go checks CAs' constraints against the SANs below them; a v1
/// leaf has none) and certificate policies (`policiesValid`; only explicit-policy constraints
/// could refuse a chain). Signatures are verified with webpki's algorithms, the ones v3 chains
/// are judged with: a signature Go checks but webpki cannot (RSA under 2048 bits, P-521) is
/// reported as not verifiable, never as trusted.
mod go_rules {
    use rustls::pki_types::CertificateDer;
    use x509_parser::{
        certificate::X509Certificate, oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME, prelude::FromDer, x509::X509Version,
    };

    use super::stamp;

    /// verify.go `maxChainSignatureChecks`.
    const MAX_SIGNATURE_CHECKS: u32 = 100;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Root,
        Intermediate,
    }

    /// Why a candidate parent was refused.
    #[derive(Debug)]
    enum Refusal {
        /// Its key did not make the child's signature.
        BadSignature,
        /// Go's reason, in Go's words where Go has them.
        Other(String),
    }

    /// What the search met on its way, for the message when no chain is found.
    #[derive(Debug, Default)]
    struct Search {
        signature_checks: u32,
        limit_reached: bool,
        /// A chain reached a root but some certificate of it does not allow the usage.
        incompatible_usage: bool,
        /// The first refusal and the name of the candidate refused (Go's `hintErr`, `hintCert`).
        hint: Option<(Refusal, String)>,
    }

    struct Pools<'c, 'a> {
        roots: &'c [X509Certificate<'a>],
        intermediates: &'c [X509Certificate<'a>],
        at: i64,
        client: bool,
    }

    /// `Ok(version)` (1 or 2) when a chain to one of `roots` is found. The leaf is judged at
    /// `leaf_at` (a moment it is valid, when it has one: [`super::judge`] reports its dates on
    /// their own), the CAs at `now`, when Go would judge them.
    pub(super) fn verify(
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        roots: &[CertificateDer<'static>],
        (leaf_at, now): (i64, i64),
        client: bool,
    ) -> Result<u32, String> {
        // As a `CertPool`, certificates that do not parse are left out.
        fn parse<'a>(ders: &'a [CertificateDer<'_>]) -> Vec<X509Certificate<'a>> {
            ders.iter().filter_map(|d| X509Certificate::from_der(d.as_ref()).ok().map(|(_, c)| c)).collect()
        }
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        // parser.go refuses versions above 3 ("x509: invalid version").
        let version = cert.version().0.saturating_add(1);
        if version > 3 {
            return Err("x509: invalid version".to_string());
        }
        is_valid(&cert, leaf_at)?;
        // verify.go `Verify`: `opts.Roots.contains(c)`.
        if roots.iter().any(|r| r.as_ref() == leaf.as_ref()) {
            return Ok(version);
        }
        let (roots, intermediates) = (parse(roots), parse(intermediates));
        let pools = Pools { roots: &roots, intermediates: &intermediates, at: now, client };
        let mut search = Search::default();
        if build(&pools, &mut search, &mut vec![&cert]) {
            return Ok(version);
        }
        Err(search.failure(client))
    }

    /// verify.go `buildChains`, stopping at the first chain that also passes
    /// `checkChainForKeyUsage`.
    fn build<'c, 'a>(pools: &Pools<'c, 'a>, search: &mut Search, chain: &mut Vec<&'c X509Certificate<'a>>) -> bool {
        let Some(&child) = chain.last() else { return false };
        let candidates = pools.roots.iter().map(|c| (Kind::Root, c));
        for (kind, parent) in candidates.chain(pools.intermediates.iter().map(|c| (Kind::Intermediate, c))) {
            if parent.subject().as_raw() != child.issuer().as_raw() || already_in_chain(parent, chain) {
                continue;
            }
            search.signature_checks += 1;
            if search.signature_checks > MAX_SIGNATURE_CHECKS {
                search.limit_reached = true;
                return false;
            }
            let checked = check_signature_from(child, parent)
                .and_then(|()| is_valid_parent(parent, kind, chain.len(), pools.at).map_err(Refusal::Other));
            if let Err(why) = checked {
                if search.hint.is_none() {
                    search.hint = Some((why, display_name(parent)));
                }
                continue;
            }
            chain.push(parent);
            let found = match kind {
                Kind::Root => {
                    let allowed = usage_allowed(chain, pools.client);
                    search.incompatible_usage |= !allowed;
                    allowed
                }
                Kind::Intermediate => build(pools, search, chain),
            };
            chain.pop();
            if found || search.limit_reached {
                return found;
            }
        }
        false
    }

    impl Search {
        fn failure(self, client: bool) -> String {
            if self.limit_reached {
                return "x509: signature check attempts limit reached while verifying certificate chain".to_string();
            }
            if self.incompatible_usage {
                let usage = if client { "clientAuth" } else { "serverAuth" };
                return format!(
                    "x509: certificate specifies an incompatible key usage (a CA of the chain does not allow {usage})"
                );
            }
            match self.hint {
                None => "signed by an unknown authority".to_string(),
                Some((Refusal::BadSignature, _)) => {
                    "signed by a different CA with the same name (the signature does not verify)".to_string()
                }
                Some((Refusal::Other(why), name)) => format!(
                    "signed by an unknown authority (possibly because of \"{why}\" while trying to verify candidate \
                     authority certificate \"{name}\")"
                ),
            }
        }
    }

    /// verify.go `isValid`, the part for every certificate: no unhandled critical extension,
    /// valid at `at`.
    fn is_valid(cert: &X509Certificate<'_>, at: i64) -> Result<(), String> {
        if cert.extensions().iter().any(|e| e.critical && !go_handles(&e.oid.to_id_string())) {
            return Err("x509: unhandled critical extension".to_string());
        }
        let (from, to) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        let expired = "x509: certificate has expired or is not yet valid";
        if at < from {
            Err(format!("{expired}: current time {} is before {}", stamp(at), stamp(from)))
        } else if at > to {
            Err(format!("{expired}: current time {} is after {}", stamp(at), stamp(to)))
        } else {
            Ok(())
        }
    }

    /// verify.go `isValid` for a root or intermediate, with `below` certificates under it.
    fn is_valid_parent(cert: &X509Certificate<'_>, kind: Kind, below: usize, at: i64) -> Result<(), String> {
        is_valid(cert, at)?;
        let constraints = cert.basic_constraints().map_err(|e| format!("x509: {e}"))?.map(|b| b.value);
        if kind == Kind::Intermediate && !constraints.is_some_and(|b| b.ca) {
            return Err("x509: certificate is not authorized to sign other certificates".to_string());
        }
        // `numIntermediates := len(currentChain) - 1` against MaxPathLen.
        if let Some(max) = constraints.and_then(|b| b.path_len_constraint)
            && below.saturating_sub(1) > usize::try_from(max).unwrap_or(usize::MAX)
        {
            return Err("x509: too many intermediates for path length constraint".to_string());
        }
        Ok(())
    }

    /// The extensions parser.go `processExtensions` handles; any other one marked critical
    /// makes the certificate unusable.
    fn go_handles(oid: &str) -> bool {
        const ID_CE: [&str; 12] = ["14", "15", "17", "19", "30", "31", "32", "33", "35", "36", "37", "54"];
        oid.strip_prefix("2.5.29.").is_some_and(|n| ID_CE.contains(&n)) || oid == "1.3.6.1.5.5.7.1.1"
    }

    /// x509.go `CheckSignatureFrom`.
    fn check_signature_from(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> Result<(), Refusal> {
        let cannot_sign = || {
            Refusal::Other("x509: invalid signature: parent certificate cannot sign this kind of certificate".into())
        };
        let constraints = parent.basic_constraints().map_err(|e| Refusal::Other(format!("x509: {e}")))?;
        if (parent.version() == X509Version::V3 && constraints.is_none()) || constraints.is_some_and(|b| !b.value.ca) {
            return Err(cannot_sign());
        }
        if let Some(usage) = parent.key_usage().map_err(|e| Refusal::Other(format!("x509: {e}")))?
            && usage.value.flags != 0
            && !usage.value.key_cert_sign()
        {
            return Err(cannot_sign());
        }
        // x509.go `checkSignature` with allowSHA1 false.
        let insecure = match child.signature_algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.113549.1.1.4" => Some("MD5-RSA"),
            "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => Some("SHA1-RSA"),
            "1.2.840.10040.4.3" => Some("DSA-SHA1"),
            "1.2.840.10045.4.1" => Some("ECDSA-SHA1"),
            _ => None,
        };
        if let Some(name) = insecure {
            return Err(Refusal::Other(format!("x509: cannot verify signature: insecure algorithm {name}")));
        }
        verify_signature(child.as_raw(), parent.public_key().raw)
    }

    /// The child's signature, checked with the parent's key by the first of webpki's
    /// algorithms whose identifiers match (as webpki's `verify_signed_data` does).
    fn verify_signature(child: &[u8], spki: &[u8]) -> Result<(), Refusal> {
        let malformed = || Refusal::Other("x509: malformed certificate".to_string());
        let (tbs, algorithm, signature) = signed_parts(child).ok_or_else(malformed)?;
        let (key_algorithm, key) = spki_parts(spki).ok_or_else(malformed)?;
        let mut other_key = false;
        for alg in webpki::ALL_VERIFICATION_ALGS.iter().filter(|a| a.signature_alg_id().as_ref() == algorithm) {
            if alg.public_key_alg_id().as_ref() != key_algorithm {
                other_key = true;
                continue;
            }
            return alg.verify_signature(key, tbs, signature).map_err(|_| Refusal::BadSignature);
        }
        Err(Refusal::Other(if other_key {
            "x509: the signature algorithm does not fit the issuer's public key".to_string()
        } else {
            "cannot verify the signature: netcheck does not support its algorithm".to_string()
        }))
    }

    /// A certificate's TBS (with its header), signature algorithm (contents) and signature.
    fn signed_parts(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
        let (0x30, body, _) = tlv(der)? else { return None };
        let (0x30, _, after_tbs) = tlv(body)? else { return None };
        let tbs = &body[..body.len() - after_tbs.len()];
        let (0x30, algorithm, after_algorithm) = tlv(after_tbs)? else { return None };
        let (0x03, bits, _) = tlv(after_algorithm)? else { return None };
        let (&0, signature) = bits.split_first()? else { return None };
        Some((tbs, algorithm, signature))
    }

    /// A SubjectPublicKeyInfo's algorithm (contents) and key.
    fn spki_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
        let (0x30, body, _) = tlv(der)? else { return None };
        let (0x30, algorithm, rest) = tlv(body)? else { return None };
        let (0x03, bits, _) = tlv(rest)? else { return None };
        let (&0, key) = bits.split_first()? else { return None };
        Some((algorithm, key))
    }

    /// One DER element: its (one-byte) tag, its contents and what follows it.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, rest) = rest.split_at(n);
            (bytes.iter().fold(0usize, |len, b| len << 8 | usize::from(*b)), rest)
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// verify.go `alreadyInChain`: same subject, key and SAN extension.
    fn already_in_chain(candidate: &X509Certificate<'_>, chain: &[&X509Certificate<'_>]) -> bool {
        let san = |c: &X509Certificate<'_>| {
            c.extensions().iter().find(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME).map(|e| e.value.to_vec())
        };
        chain.iter().any(|c| {
            c.subject().as_raw() == candidate.subject().as_raw()
                && c.public_key().raw == candidate.public_key().raw
                && san(c) == san(candidate)
        })
    }

    /// verify.go `checkChainForKeyUsage` for one usage: serverAuth, or clientAuth.
    fn usage_allowed(chain: &[&X509Certificate<'_>], client: bool) -> bool {
        chain.iter().all(|c| match c.extended_key_usage() {
            Ok(None) => true,
            Ok(Some(eku)) => {
                let e = eku.value;
                let listed = e.any
                    || e.server_auth
                    || e.client_auth
                    || e.code_signing
                    || e.email_protection
                    || e.time_stamping
                    || e.ocsp_signing
                    || !e.other.is_empty();
                !listed || e.any || if client { e.client_auth } else { e.server_auth }
            }
            Err(_) => false,
        })
    }

    /// Go's `UnknownAuthorityError` names a candidate by Common Name, else Organization, else
    /// serial.
    fn display_name(cert: &X509Certificate<'_>) -> String {
        super::common_name(cert)
            .or_else(|| cert.subject().iter_organization().find_map(|a| a.as_str().ok()).map(str::to_string))
            .unwrap_or_else(|| format!("serial:{}", cert.serial))
    }
}

/// Go's crypto/x509 wording, so the message matches what clients print (verify.go
/// `VerifyHostname` and `HostnameError.Error`). Only SANs are matched: since Go 1.15 the
/// Common Name is not a host name, and a certificate without a SAN extension (every v1
/// certificate) whose Common Name would have matched gets Go's own message for that.
fn name_matches(f: &Facts, name: &Name) -> Result<(), String> {
    let (matched, host) = match name {
        Name::Ip(ip) => (f.ips.contains(ip), ip.to_string()),
        Name::Dns(host) => (f.dns.iter().any(|pattern| dns_matches(pattern, host)), host.clone()),
    };
    if matched {
        return Ok(());
    }
    if !f.san_extension && go_match_hostnames(&f.common_name, &host) {
        return Err("x509: certificate relies on legacy Common Name field, use SANs instead".to_string());
    }
    match name {
        Name::Ip(ip) if f.ips.is_empty() => {
            Err(format!("x509: cannot validate certificate for {ip} because it doesn't contain any IP SANs"))
        }
        Name::Ip(ip) => {
            let list: Vec<String> = f.ips.iter().map(ToString::to_string).collect();
            Err(format!("x509: certificate is valid for {}, not {ip}", list.join(", ")))
        }
        Name::Dns(host) if f.dns.is_empty() => {
            Err(format!("x509: certificate is not valid for any names, but wanted to match {host}"))
        }
        Name::Dns(host) => Err(format!("x509: certificate is valid for {}, not {host}", f.dns.join(", "))),
    }
}

/// Go's `matchHostnames` (verify.go): label by label, ASCII case-insensitive, a `*` left-most
/// label matching any one label, the host's trailing dot ignored.
fn go_match_hostnames(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if pattern.is_empty() || host.is_empty() || pattern.split('.').count() != host.split('.').count() {
        return false;
    }
    pattern.split('.').zip(host.split('.')).enumerate().all(|(i, (p, h))| (i == 0 && p == "*") || p == h)
}

/// RFC 6125: a wildcard stands for exactly one left-most label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host.split_once('.').is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

fn days(seconds: i64) -> String {
    let d = seconds / DAY;
    match d {
        0 => format!("{} hours", seconds / 3600),
        1 => "1 day".to_string(),
        _ => format!("{d} days"),
    }
}

fn stamp(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The verdict of `check cert HOST:PORT` (and of `check kubelet`, named by `probe`): TCP
/// problems keep the TCP probe's causes and evidence.
pub fn endpoint_verdict(
    probe: Probe,
    report: EndpointReport,
    roots: Option<&[CertificateDer<'static>]>,
    warn_days: u32,
    capture_on: bool,
) -> Check {
    let EndpointReport { tcp, name, handshake, elapsed } = report;
    let target = tcp.target.to_string();
    let Some(handshake) = handshake else {
        return Check { probe, ..tcp_verdict(&tcp, capture_on) };
    };
    let data = handshake.as_ref().ok().and_then(|chain| chain.first()).and_then(CertData::of).map(super::Data::Cert);
    let Verdict { status, cause, detail } = match handshake {
        Err(e) => Verdict::fail(Cause::TlsHandshake, format!("TLS handshake failed: {e}")),
        Ok(chain) => judge(&chain, Policy { name: Some(&name), roots, now: now(), warn_days, client: false }),
    };
    Check {
        probe,
        target,
        status,
        cause,
        detail,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        evidence: Evidence::fold(tcp.events),
        hops: Vec::new(),
        data,
        peer: None,
    }
}

/// `check cert FILE`: a check per certificate in the file (no name to match).
pub fn file_verdicts(
    path: &std::path::Path,
    certs: &[CertificateDer<'static>],
    roots: Option<&[CertificateDer<'static>]>,
    warn_days: u32,
) -> Vec<Check> {
    let now = now();
    let policy = Policy { name: None, roots, now, warn_days, client: false };
    certs
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let target =
                if certs.len() == 1 { path.display().to_string() } else { format!("{}#{}", path.display(), i + 1) };
            cert_check(target, std::slice::from_ref(cert), policy)
        })
        .collect()
}

/// `check cert KUBECONFIG`: a check per client certificate (its chain judged against the CA of
/// the cluster its context uses) and per cluster CA certificate.
pub fn kubeconfig_verdicts(path: &std::path::Path, items: Vec<KubeconfigItem>, warn_days: u32) -> Vec<Check> {
    let now = now();
    let mut checks = Vec::new();
    for item in items {
        let target = format!("{} ({})", path.display(), item.label);
        match &item.certs {
            Err(e) => {
                let verdict = Verdict::fail(Cause::CertUnreadable, e.to_string());
                checks.push(Check::file(Probe::Cert, target, verdict));
            }
            Ok(chain) if item.client => {
                let policy = Policy { name: None, roots: item.roots.as_deref(), now, warn_days, client: true };
                checks.push(cert_check(target, chain, policy));
            }
            // A CA bundle: every CA on its own.
            Ok(cas) => {
                let policy = Policy { name: None, roots: None, now, warn_days, client: false };
                for (i, ca) in cas.iter().enumerate() {
                    let t = if cas.len() == 1 { target.clone() } else { format!("{target}#{}", i + 1) };
                    checks.push(cert_check(t, std::slice::from_ref(ca), policy));
                }
            }
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

    use super::*;

    struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        fn new() -> Self {
            Self::named("kubernetes")
        }
        fn named(name: &str) -> Self {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            Self(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
        }
        /// A CA named "kubernetes" with `edit` applied to its parameters.
        fn with(edit: impl FnOnce(&mut CertificateParams)) -> Self {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, "kubernetes");
            edit(&mut p);
            Self(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
        }
        /// An intermediate CA named `name`, signed by this one.
        fn intermediate(&self, name: &str) -> Self {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            Self(CertifiedIssuer::signed_by(p, KeyPair::generate().unwrap(), &self.0).unwrap())
        }
        fn der(&self) -> CertificateDer<'static> {
            self.0.der().clone()
        }
        /// The CA's subject (DER), the issuer of what it signs.
        fn subject(&self) -> Vec<u8> {
            X509Certificate::from_der(self.0.der()).unwrap().1.subject().as_raw().to_vec()
        }
        /// An X.509 v1 leaf (no extensions) with Common Name `cn`, signed by this CA.
        fn v1_leaf(&self, cn: &str, from: i64, to: i64) -> CertificateDer<'static> {
            v1(cn, &self.subject(), self.0.key(), &KeyPair::generate().unwrap(), (from, to), ECDSA_SHA256)
        }
        /// A leaf valid from `from` to `to` (unix seconds).
        fn leaf(&self, dns: &[&str], ips: &[&str], from: i64, to: i64) -> CertificateDer<'static> {
            let mut p = CertificateParams::new(dns.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
            p.subject_alt_names.extend(ips.iter().map(|i| SanType::IpAddress(i.parse().unwrap())));
            p.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_delta(from);
            p.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_delta(to);
            p.signed_by(&KeyPair::generate().unwrap(), &self.0).unwrap().der().clone()
        }
    }

    fn time_delta(secs: i64) -> Duration {
        Duration::from_secs(u64::try_from(secs).unwrap())
    }

    /// ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the OID's DER contents.
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    /// ecdsa-with-SHA1 (1.2.840.10045.4.1).
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];

    /// A DER element.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let len = contents.len().to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(len[7]);
        } else {
            out.push(0x80 | u8::try_from(len.len() - skip).unwrap());
            out.extend_from_slice(&len[skip..]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A Name with one Common Name.
    fn name(cn: &str) -> Vec<u8> {
        let attribute = [der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, cn.as_bytes())].concat();
        der(0x30, &der(0x31, &der(0x30, &attribute)))
    }

    /// GeneralizedTime of a Unix time.
    fn time(unix: i64) -> Vec<u8> {
        let digits: String = stamp(unix).chars().filter(char::is_ascii_digit).collect();
        der(0x18, format!("{digits}Z").as_bytes())
    }

    /// An X.509 v1 certificate as `openssl x509 -req` makes one without `-extfile`: no version
    /// field, no extensions; signed with `issuer_key` under the name `issuer` (DER), its
    /// signature algorithm named by `algorithm` (an OID's contents; the signature is always
    /// ECDSA P-256 with SHA-256).
    fn v1(
        cn: &str,
        issuer: &[u8],
        issuer_key: &KeyPair,
        key: &KeyPair,
        (from, to): (i64, i64),
        algorithm: &[u8],
    ) -> CertificateDer<'static> {
        use rcgen::{PublicKeyData as _, SigningKey as _};
        let algorithm = der(0x30, &der(0x06, algorithm));
        let tbs = [
            der(0x02, &[0x01, 0x02, 0x03]),
            algorithm.clone(),
            issuer.to_vec(),
            der(0x30, &[time(from), time(to)].concat()),
            name(cn),
            key.subject_public_key_info(),
        ]
        .concat();
        let tbs = der(0x30, &tbs);
        let signature = [&[0u8][..], &issuer_key.sign(&tbs).unwrap()].concat();
        CertificateDer::from(der(0x30, &[tbs, algorithm, der(0x03, &signature)].concat()))
    }

    /// A self-signed X.509 v1 CA named `cn` and its key.
    fn v1_root(cn: &str) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        (v1(cn, &name(cn), &key, &key, (NOW - 365 * DAY, NOW + 365 * DAY), ECDSA_SHA256), key)
    }

    fn judge_v1(
        chain: &[CertificateDer<'_>],
        name: Option<&str>,
        roots: &[CertificateDer<'static>],
        client: bool,
    ) -> Verdict {
        let name = name.map(Name::parse);
        judge(chain, Policy { name: name.as_ref(), roots: Some(roots), now: NOW, warn_days: 30, client })
    }

    const NOW: i64 = 1_800_000_000;

    fn judge_at(
        chain: &[CertificateDer<'_>],
        name: Option<&str>,
        roots: Option<&[CertificateDer<'static>]>,
    ) -> Verdict {
        let name = name.map(Name::parse);
        judge(chain, Policy { name: name.as_ref(), roots, now: NOW, warn_days: 30, client: false })
    }

    #[test]
    fn healthy_certificate_passes() {
        let ca = Ca::new();
        let leaf = ca.leaf(&["n1"], &["192.168.50.11"], NOW - DAY, NOW + 365 * DAY);
        let roots = [ca.der()];
        let Verdict { status: s, cause: c, detail: d } = judge_at(&[leaf], Some("192.168.50.11"), Some(&roots));
        assert_eq!((s, c), (Status::Pass, None), "{d}");
        assert!(d.contains("expires in 365 days") && d.contains("trusted by the given CA"), "{d}");
    }

    #[test]
    fn each_problem_has_its_code() {
        let ca = Ca::new();
        let roots = [ca.der()];
        let expired = ca.leaf(&["n1"], &[], NOW - 10 * DAY, NOW - 3 * DAY);
        let Verdict { status: s, cause: c, detail: d } = judge_at(&[expired], Some("n1"), Some(&roots));
        assert_eq!((s, c), (Status::Fail, Some(Cause::CertExpired)));
        assert!(d.contains("expired 3 days ago"), "{d}");
        assert!(!d.contains("not trusted"), "expiry must not look like distrust: {d}");

        let future = ca.leaf(&["n1"], &[], NOW + 2 * DAY, NOW + 10 * DAY);
        assert_eq!(judge_at(&[future], Some("n1"), Some(&roots)).cause, Some(Cause::CertNotYetValid));

        let expiring = ca.leaf(&["n1"], &[], NOW - DAY, NOW + 10 * DAY);
        let Verdict { status: s, cause: c, detail: d } = judge_at(&[expiring], Some("n1"), Some(&roots));
        assert_eq!((s, c), (Status::Warn, Some(Cause::CertExpiring)));
        assert!(d.contains("expires in 10 days") && d.contains("30-day warning"), "{d}");

        let foreign = Ca::named("other-ca").leaf(&["n1"], &[], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[foreign], Some("n1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertUntrusted));
        assert!(d.contains("signed by an unknown authority"), "{d}");

        // A re-created CA with the same name (kubeadm's "kubernetes").
        let recreated = Ca::new().leaf(&["n1"], &[], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[recreated], Some("n1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertUntrusted));
        assert!(d.contains("different CA with the same name"), "{d}");
    }

    /// notBefore after notAfter: one failed verdict naming the dates, whatever `now` is (it
    /// panicked in `i64::clamp`, and the check vanished from the output).
    #[test]
    fn a_certificate_valid_at_no_time_fails() {
        let ca = Ca::new();
        let roots = [ca.der()];
        for (from, to) in [(NOW + DAY, NOW - DAY), (NOW - DAY, NOW - 2 * DAY), (NOW + 2 * DAY, NOW + DAY)] {
            let inverted = ca.leaf(&["n1"], &[], from, to);
            let Verdict { status: s, cause: c, detail: d } = judge_at(&[inverted], Some("n1"), Some(&roots));
            assert_eq!(s, Status::Fail, "{d}");
            assert!(matches!(c, Some(Cause::CertExpired | Cause::CertNotYetValid)), "{c:?}: {d}");
            assert!(d.contains("valid at no time: notBefore"), "{d}");
        }
    }

    #[test]
    fn names_follow_go_wording() {
        let ca = Ca::new();
        let dns_only = ca.leaf(&["n1"], &[], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: s, cause: c, detail: d } =
            judge_at(std::slice::from_ref(&dns_only), Some("192.168.50.11"), None);
        assert_eq!(c, Some(Cause::CertNameMismatch));
        assert!(
            d.contains("x509: cannot validate certificate for 192.168.50.11 because it doesn't contain any IP SANs"),
            "{d}"
        );
        assert_eq!(s, Status::Fail, "{d}");
        assert!(!d.contains("not trusted"), "no CA given, so trust is not judged: {d}");

        let other_ip = ca.leaf(&[], &["10.0.0.1"], NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: _, detail: d } = judge_at(&[other_ip], Some("10.0.0.2"), None);
        assert!(d.contains("x509: certificate is valid for 10.0.0.1, not 10.0.0.2"), "{d}");

        let Verdict { status: _, cause: c, detail: d } = judge_at(&[dns_only], Some("n2"), None);
        assert_eq!(c, Some(Cause::CertNameMismatch));
        assert!(d.contains("x509: certificate is valid for n1, not n2"), "{d}");
    }

    /// The test certificates are what they claim: v1, refused by webpki.
    #[test]
    fn v1_test_certificates_are_v1() {
        let leaf = Ca::new().v1_leaf("n1", NOW - DAY, NOW + 365 * DAY);
        let (_, parsed) = X509Certificate::from_der(&leaf).unwrap();
        assert_eq!(parsed.version(), x509_parser::x509::X509Version::V1);
        assert!(parsed.extensions().is_empty());
        assert!(matches!(webpki::EndEntityCert::try_from(&leaf), Err(webpki::Error::UnsupportedCertVersion)));
    }

    /// Go accepts a v1 leaf signed by the CA, for serving and for client authentication (no
    /// extended key usage: any usage).
    #[test]
    fn v1_leaf_signed_by_the_ca_is_trusted_as_go_does() {
        let ca = Ca::new();
        let roots = [ca.der()];
        let leaf = ca.v1_leaf("system:node:n1", NOW - DAY, NOW + 365 * DAY);
        for client in [false, true] {
            let Verdict { status: s, cause: c, detail: d } =
                judge_v1(std::slice::from_ref(&leaf), None, &roots, client);
            assert_eq!((s, c), (Status::Pass, None), "client {client}: {d}");
            assert!(
                d.contains("trusted by the given CA (an X.509 v1 certificate, judged as Go's crypto/x509 does)"),
                "{d}"
            );
        }
        // The CA's certificate sent along (as servers do) changes nothing.
        let Verdict { status: s, detail: d, .. } = judge_v1(&[leaf, ca.der()], None, &roots, false);
        assert_eq!(s, Status::Pass, "{d}");
    }

    #[test]
    fn v1_leaf_from_another_ca_is_untrusted() {
        let roots = [Ca::new().der()];
        // A re-created CA with the same name: the signature does not verify.
        let recreated = Ca::new().v1_leaf("n1", NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: s, cause: c, detail: d } = judge_v1(&[recreated], None, &roots, true);
        assert_eq!((s, c), (Status::Fail, Some(Cause::CertUntrusted)), "{d}");
        assert!(d.contains("signed by a different CA with the same name (the signature does not verify)"), "{d}");

        let foreign = Ca::named("other-ca").v1_leaf("n1", NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[foreign], None, &roots, true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("not trusted by the given CA: signed by an unknown authority (issuer CN=other-ca)"), "{d}");
    }

    #[test]
    fn v1_leaf_dates_have_their_codes() {
        let ca = Ca::new();
        let roots = [ca.der()];
        let expired = ca.v1_leaf("n1", NOW - 10 * DAY, NOW - 3 * DAY);
        let Verdict { status: s, cause: c, detail: d } = judge_v1(&[expired], None, &roots, true);
        assert_eq!((s, c), (Status::Fail, Some(Cause::CertExpired)), "{d}");
        assert!(d.contains("expired 3 days ago"), "{d}");
        assert!(!d.contains("not trusted"), "expiry must not look like distrust: {d}");

        let future = ca.v1_leaf("n1", NOW + 2 * DAY, NOW + 10 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[future], None, &roots, true);
        assert_eq!(c, Some(Cause::CertNotYetValid), "{d}");
        assert!(!d.contains("not trusted"), "{d}");

        // Expired before its CA was made (a CA re-issued under the same key): expired, and
        // the CA is judged now, when it is valid.
        let young_ca = Ca::with(|p| p.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_delta(NOW - DAY));
        let old_leaf = young_ca.v1_leaf("n1", NOW - 30 * DAY, NOW - 2 * DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[old_leaf], None, &[young_ca.der()], true);
        assert_eq!(c, Some(Cause::CertExpired), "{d}");
        assert!(!d.contains("not trusted"), "{d}");

        let inverted = ca.v1_leaf("n1", NOW + DAY, NOW - DAY);
        let Verdict { status: s, detail: d, .. } = judge_v1(&[inverted], None, &roots, true);
        assert_eq!(s, Status::Fail, "{d}");
        assert!(
            d.contains("valid at no time") && d.contains("x509: certificate has expired or is not yet valid"),
            "{d}"
        );
    }

    /// verify.go `HostnameError.Error`: no SAN extension and a Common Name that would have
    /// matched is Go's "legacy Common Name" failure; otherwise no name matches at all.
    #[test]
    fn v1_leaf_names_fail_as_go_does() {
        let ca = Ca::new();
        let roots = [ca.der()];
        let legacy = "x509: certificate relies on legacy Common Name field, use SANs instead";
        let api = ca.v1_leaf("api.example.com", NOW - DAY, NOW + 365 * DAY);
        for host in ["api.example.com", "API.example.com."] {
            let Verdict { status: s, cause: c, detail: d } =
                judge_v1(std::slice::from_ref(&api), Some(host), &roots, false);
            assert_eq!((s, c), (Status::Fail, Some(Cause::CertNameMismatch)), "{host}: {d}");
            assert!(d.contains(legacy), "{host}: {d}");
            assert!(!d.contains("not trusted"), "the name is the only problem: {d}");
        }
        let Verdict { status: _, cause: c, detail: d } =
            judge_v1(std::slice::from_ref(&api), Some("other.example.com"), &roots, false);
        assert_eq!(c, Some(Cause::CertNameMismatch), "{d}");
        assert!(
            d.contains("x509: certificate is not valid for any names, but wanted to match other.example.com"),
            "{d}"
        );

        let by_ip = ca.v1_leaf("10.0.0.1", NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: _, cause: _, detail: d } =
            judge_v1(std::slice::from_ref(&by_ip), Some("10.0.0.1"), &roots, false);
        assert!(d.contains(legacy), "{d}");
        let Verdict { status: _, cause: _, detail: d } = judge_v1(&[by_ip], Some("10.0.0.2"), &roots, false);
        assert!(
            d.contains("x509: cannot validate certificate for 10.0.0.2 because it doesn't contain any IP SANs"),
            "{d}"
        );

        // A v3 certificate without a SAN extension fails the same way in Go.
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "n1");
        let no_san = p.signed_by(&KeyPair::generate().unwrap(), &ca.0).unwrap().der().clone();
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[no_san], Some("n1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertNameMismatch), "{d}");
        assert!(d.contains(legacy), "{d}");
    }

    /// Go: an intermediate must be a CA (basicConstraints cA), so a v1 one cannot sign; a v1
    /// root can (roots are anchors).
    #[test]
    fn v1_chains_through_intermediates_and_v1_roots() {
        let root = Ca::new();
        let roots = [root.der()];
        let intermediate = root.intermediate("kubernetes-intermediate");
        let leaf = intermediate.v1_leaf("n1", NOW - DAY, NOW + 365 * DAY);
        let Verdict { status: s, detail: d, .. } = judge_v1(&[leaf.clone(), intermediate.der()], None, &roots, true);
        assert_eq!(s, Status::Pass, "{d}");
        // Without the intermediate there is no path.
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[leaf], None, &roots, true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("signed by an unknown authority"), "{d}");

        let v1_intermediate_key = KeyPair::generate().unwrap();
        let v1_intermediate = v1(
            "v1-intermediate",
            &root.subject(),
            root.0.key(),
            &v1_intermediate_key,
            (NOW - DAY, NOW + 365 * DAY),
            ECDSA_SHA256,
        );
        let below = v1(
            "n1",
            &name("v1-intermediate"),
            &v1_intermediate_key,
            &KeyPair::generate().unwrap(),
            (NOW - DAY, NOW + DAY * 365),
            ECDSA_SHA256,
        );
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[below, v1_intermediate], None, &roots, true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(
            d.contains(
                "possibly because of \"x509: certificate is not authorized to sign other certificates\" while trying \
                 to verify candidate authority certificate \"v1-intermediate\""
            ),
            "{d}"
        );

        let (v1_ca, v1_ca_key) = v1_root("v1-root");
        let leaf = v1(
            "n1",
            &name("v1-root"),
            &v1_ca_key,
            &KeyPair::generate().unwrap(),
            (NOW - DAY, NOW + 365 * DAY),
            ECDSA_SHA256,
        );
        let Verdict { status: s, detail: d, .. } = judge_v1(&[leaf], None, std::slice::from_ref(&v1_ca), false);
        assert_eq!(s, Status::Pass, "{d}");

        // A self-signed v1 certificate given as its own CA: Go's `Roots.contains(leaf)`.
        let Verdict { status: s, detail: d, .. } =
            judge_v1(std::slice::from_ref(&v1_ca), None, std::slice::from_ref(&v1_ca), false);
        assert_eq!(s, Status::Pass, "{d}");
    }

    /// What Go asks of the CA: extended key usage allowing the usage, keyCertSign if it has a
    /// key usage, validity at the time; SHA-1 signatures are refused.
    #[test]
    fn v1_leaf_under_a_ca_that_may_not_sign_it() {
        let leaf_of = |ca: &Ca| ca.v1_leaf("n1", NOW - DAY, NOW + 365 * DAY);

        let serving_only = Ca::with(|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
        let roots = [serving_only.der()];
        let leaf = leaf_of(&serving_only);
        let Verdict { status: s, detail: d, .. } = judge_v1(std::slice::from_ref(&leaf), None, &roots, false);
        assert_eq!(s, Status::Pass, "{d}");
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[leaf], None, &roots, true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("x509: certificate specifies an incompatible key usage"), "{d}");

        let no_cert_sign = Ca::with(|p| p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature]);
        let Verdict { status: _, cause: c, detail: d } =
            judge_v1(&[leaf_of(&no_cert_sign)], None, &[no_cert_sign.der()], true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("x509: invalid signature: parent certificate cannot sign this kind of certificate"), "{d}");

        let expired_ca = Ca::with(|p| {
            p.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_delta(NOW - 100 * DAY);
            p.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_delta(NOW - 10 * DAY);
        });
        let Verdict { status: _, cause: c, detail: d } =
            judge_v1(&[leaf_of(&expired_ca)], None, &[expired_ca.der()], true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("x509: certificate has expired or is not yet valid: current time"), "{d}");

        let ca = Ca::new();
        let sha1 = v1(
            "n1",
            &ca.subject(),
            ca.0.key(),
            &KeyPair::generate().unwrap(),
            (NOW - DAY, NOW + 365 * DAY),
            ECDSA_SHA1,
        );
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&[sha1], None, &[ca.der()], true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("x509: cannot verify signature: insecure algorithm ECDSA-SHA1"), "{d}");
    }

    /// Many intermediates of one name: Go's budget of signature checks bounds the search.
    #[test]
    fn v1_chain_search_is_bounded() {
        let root = Ca::new();
        let same_name: Vec<_> = (0..120).map(|_| root.intermediate("loop").der()).collect();
        let loop_ca = root.intermediate("loop");
        let mut chain = vec![loop_ca.v1_leaf("n1", NOW - DAY, NOW + 365 * DAY)];
        chain.extend(same_name);
        let Verdict { status: _, cause: c, detail: d } = judge_v1(&chain, None, &[root.der()], true);
        assert_eq!(c, Some(Cause::CertUntrusted), "{d}");
        assert!(d.contains("signature check attempts limit reached"), "{d}");
    }

    #[test]
    fn several_problems_are_all_named_and_the_worst_is_the_cause() {
        let ca = Ca::new();
        let roots = [Ca::new().der()];
        let leaf = ca.leaf(&["n1"], &[], NOW - 10 * DAY, NOW - DAY);
        let Verdict { status: _, cause: c, detail: d } = judge_at(&[leaf], Some("10.0.0.1"), Some(&roots));
        assert_eq!(c, Some(Cause::CertExpired));
        assert!(d.contains("expired") && d.contains("not trusted") && d.contains("IP SANs"), "{d}");
    }

    #[test]
    fn wildcards_match_one_label() {
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(dns_matches("node-1", "node-1."));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let Verdict { status: s, cause: c, detail: d } = judge(
            &[CertificateDer::from(vec![1, 2, 3])],
            Policy { name: None, roots: None, now: NOW, warn_days: 30, client: false },
        );
        assert_eq!((s, c), (Status::Fail, Some(Cause::TlsHandshake)));
        assert!(d.contains("not an X.509 certificate"), "{d}");
    }
}
