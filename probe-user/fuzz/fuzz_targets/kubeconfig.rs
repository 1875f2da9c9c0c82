//! Kubeconfigs: whatever kube's YAML model accepts, netcheck's extraction of CAs and client
//! certificates (base64, PEM, file references) must handle without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(config) = kube::config::Kubeconfig::from_yaml(s) {
        let kc = netcheck::discovery::kubeconfig::NodeKubeconfig { config, read: Vec::new(), unread: Vec::new() };
        let _ = netcheck::discovery::certs::items_of(&kc, None);
    }
});
