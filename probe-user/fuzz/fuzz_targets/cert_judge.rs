//! Certificate judging with a CA and a server name, on certificates as a file or a peer may
//! present them: the first byte splits the input into a CA and a leaf (DER), the second picks
//! client or server judging. Every verdict names a status; nothing panics (dates in any order,
//! names of any shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::{
    probes::cert::Name,
    verdict::cert::{Policy, judge, now},
};
use rustls::pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let [split, flags, rest @ ..] = data else { return };
    let at = usize::from(*split).min(rest.len()) * rest.len() / 256;
    let (ca, leaf) = rest.split_at(at);
    let roots = [CertificateDer::from(ca.to_vec())];
    let name = Name::parse("n1.cluster.local");
    let policy = Policy { name: Some(&name), roots: Some(&roots), now: now(), warn_days: 30, client: flags & 1 == 1 };
    let _ = judge(&[CertificateDer::from(leaf.to_vec())], policy);
});
