//! A container runtime's configuration (any bytes), read as one file of containerd's
//! configuration and as CRI-O's crio.conf: parsing must not panic and gives the same answer
//! twice; every folder named is a non-empty string; a file merged over itself (an import of
//! itself) says what it says alone; import globs never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::runtime::{CniSettings, containerd, crio};

fn folders_named(s: &CniSettings) {
    assert!(s.conf_dir.as_deref().is_none_or(|d| !d.is_empty()));
    assert!(s.extra_bin_dir.as_deref().is_none_or(|d| !d.is_empty()));
    assert!(s.bin_dirs.iter().flatten().all(|d| !d.is_empty()));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match containerd::parse(&text) {
        Ok(file) => {
            let settings = file.settings();
            folders_named(&settings);
            assert_eq!(containerd::parse(&text).ok().as_ref(), Some(&file));
            assert_eq!(file.clone().merge(file.clone()).settings(), settings);
            for import in &file.imports {
                let _ = glob::Pattern::new(import);
            }
        }
        Err(_) => assert!(containerd::parse(&text).is_err()),
    }
    match crio::parse(&text) {
        Ok(settings) => {
            folders_named(&settings);
            assert_eq!(crio::parse(&text).ok().as_ref(), Some(&settings));
        }
        Err(_) => assert!(crio::parse(&text).is_err()),
    }
});
