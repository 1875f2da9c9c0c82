//! resolv.conf as a pod may have it (anything a kubelet, a CNI or a person wrote): parsing and
//! the search-list expansion of a name must not panic, and expansions are always absolute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::probes::dns::ResolvConf;

fuzz_target!(|data: &[u8]| {
    // The first line is the name to expand, the rest the file.
    let (name, file) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let conf = ResolvConf::parse(file);
    if let Ok(name) = std::str::from_utf8(name) {
        if let Ok(expansions) = conf.expansions(name) {
            assert!(!expansions.is_empty());
            assert!(expansions.iter().all(hickory_proto::rr::Name::is_fqdn));
        }
    }
});
