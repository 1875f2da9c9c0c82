//! PEM discovery and the certificate facts netcheck reads (files come from nodes and users).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::{discovery::certs::pem_certificates, verdict::cert};
use rustls::pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = pem_certificates(data) {
        for c in &certs {
            let _ = cert::facts(c);
        }
    }
    // The DER parser on raw bytes too, and a whole judgement.
    let raw = [CertificateDer::from(data.to_vec())];
    let policy = cert::Policy { name: None, roots: None, now: 1_800_000_000, warn_days: 30, client: false };
    let _ = cert::judge(&raw, policy);
});
