//! A peer agent's `/events` reply, as whatever answers on the agent's port may write it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netcheck::discovery::peer_agent::parse_events(data);
});
