//! The kubelet's configuration file, as found under a node root (anything may be there), and
//! its command line as /proc/PID/cmdline gives it (NUL-separated): parsing and the clusterDNS
//! extraction must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::kubelet_config::{KubeletConfig, parse_flags};

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let flags = parse_flags(&args);
    let _ = flags.set.dns_servers();
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = KubeletConfig::parse(text) {
        let _ = config.dns_servers();
    }
});
