//! flannel's subnet.env as found on a node (any bytes a host root may hold): parsing must not
//! panic and an MTU it returns is always one IPv4 allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::discovery::flannel::SubnetEnv;

fuzz_target!(|data: &[u8]| {
    let env = SubnetEnv::parse(&String::from_utf8_lossy(data));
    if let Some(mtu) = env.mtu {
        assert!((68..=65_535).contains(&mtu));
    }
});
