//! A container runtime's configuration (any bytes), read as containerd's config.toml and as
//! CRI-O's crio.conf: parsing must not panic, and every folder it names is a non-empty string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::runtime;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for settings in [runtime::parse_containerd(&text), runtime::parse_crio(&text)].into_iter().flatten() {
        assert!(settings.conf_dir.as_deref().is_none_or(|d| !d.is_empty()));
        assert!(settings.bin_dirs.iter().flatten().all(|d| !d.is_empty()));
    }
});
