//! What a raw ICMP socket receives (any IPv4 packet from the network): the MTU probe's reading
//! of echo replies and quoted errors must not panic; a reply is only taken from the host
//! probed, and an error names the packet's real sender.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use netcheck::probes::icmp::{Answer, classify};

fuzz_target!(|data: &[u8]| {
    let Some((id, packet)) = data.split_first_chunk::<2>() else { return };
    let id = u16::from_be_bytes(*id);
    let dst = Ipv4Addr::new(10, 244, 2, 2);
    let Some((_, answer)) = classify(packet, dst, id) else { return };
    let sender = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    match answer {
        Answer::Reply => assert_eq!(sender, dst),
        Answer::FragNeeded { from, .. } | Answer::Unreachable { from, .. } => assert_eq!(from, sender),
        other => panic!("classify returned {other:?}"),
    }
});
