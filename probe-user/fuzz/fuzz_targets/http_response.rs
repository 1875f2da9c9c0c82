//! The kubelet healthz answer parser (bytes from the network).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netcheck::probes::kubelet::parse_response(data);
});
