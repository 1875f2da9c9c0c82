//! DNS answers off the wire (a UDP datagram or a TCP frame from any server): reading them
//! must not panic, and only an answer carrying the query's id is taken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::probes::dns::parse_response;

fuzz_target!(|data: &[u8]| {
    let Some((id, wire)) = data.split_first_chunk::<2>() else { return };
    let id = u16::from_be_bytes(*id);
    if parse_response(wire, id).is_some() {
        assert!(wire.len() >= 2 && u16::from_be_bytes([wire[0], wire[1]]) == id);
    }
});
