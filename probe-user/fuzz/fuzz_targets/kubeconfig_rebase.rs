//! A kubeconfig under a node root with its file references rebased onto that root: any
//! reference kube's model accepts, without panicking; every absolute reference ends up under
//! the root (lexically: `..` inside it is resolved by the reader, not here).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(mut config) = kube::config::Kubeconfig::from_yaml(s) else { return };
    let root = Path::new("/host");
    netcheck::discovery::rebase_references(&mut config, root);
    let references = config
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
        .flat_map(|a| [&a.client_certificate, &a.client_key, &a.token_file])
        .chain(config.clusters.iter().filter_map(|c| c.cluster.as_ref()).map(|c| &c.certificate_authority));
    for r in references.flatten() {
        if r.starts_with('/') {
            assert!(Path::new(r).starts_with(root), "{r}");
        }
    }
});
