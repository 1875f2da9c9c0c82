//! A container runtime's configuration (any bytes), read as containerd's config.toml and as
//! CRI-O's crio.conf: parsing must not panic, gives the same answer twice, and every folder it
//! names is a non-empty string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::runtime;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for parse in [runtime::parse_containerd, runtime::parse_crio] {
        let first = parse(&text);
        if let Ok(settings) = &first {
            assert!(settings.conf_dir.as_deref().is_none_or(|d| !d.is_empty()));
            assert!(settings.extra_bin_dir.as_deref().is_none_or(|d| !d.is_empty()));
            assert!(settings.bin_dirs.iter().flatten().all(|d| !d.is_empty()));
            assert_eq!(parse(&text).ok().as_ref(), Some(settings));
        } else {
            assert!(parse(&text).is_err());
        }
    }
});
