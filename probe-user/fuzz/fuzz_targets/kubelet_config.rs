//! The kubelet's configuration file, as found under a node root (anything may be there):
//! parsing and the clusterDNS extraction must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::node_files::KubeletConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = KubeletConfig::parse(text) {
        let _ = config.dns_servers();
    }
});
