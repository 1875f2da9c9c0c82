//! A kubeconfig under a node root with its file references read and inlined: any kubeconfig
//! kube's model accepts, without panicking; every reference is asked for by a path in the
//! node's filesystem (absolute, or joined onto the kubeconfig's folder), never by one this
//! process would resolve against its working directory; a reference read becomes inline data,
//! one that could not be read is listed as unread.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::{kubeconfig::inline_references, node_root::RootError};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(config) = kube::config::Kubeconfig::from_yaml(s) else { return };
    let folder = Path::new("/etc/kubernetes");
    let asked = std::cell::RefCell::new(Vec::new());
    // Files whose name has an odd length "exist"; the rest do not.
    let kc = inline_references(config, folder, |p| {
        assert!(p.is_absolute(), "{}", p.display());
        asked.borrow_mut().push(p.to_path_buf());
        if p.as_os_str().len() % 2 == 1 {
            Ok(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".to_vec())
        } else {
            Err(RootError::Io { path: p.to_path_buf(), source: std::io::ErrorKind::NotFound.into() })
        }
    });
    assert_eq!(asked.borrow().len(), kc.read.len() + kc.unread.len());
    let _ = netcheck::discovery::certs::items_of(&kc, None);
});
