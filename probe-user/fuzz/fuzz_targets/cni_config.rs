//! A CNI network configuration as found under /etc/cni/net.d (any bytes): parsing must not
//! panic, and every plugin it accepts has a type that names a binary in the plugin folder
//! (never a path that leaves it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::cni;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = cni::parse(std::path::Path::new("10-fuzz.conflist"), &String::from_utf8_lossy(data)) {
        assert!(!config.plugins.is_empty());
        for p in &config.plugins {
            assert!(!p.kind.is_empty() && !p.kind.contains('/') && !p.kind.contains(".."));
        }
    }
});
