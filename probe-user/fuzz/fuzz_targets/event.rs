//! Ring-buffer records decoded into kernel events (names, flows, VXLAN inner flows).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::{
    capture::{FlowMatcher, btf::ReasonNames, event::KernelEvent},
    netns::NetnsNames,
};
use probe_common::Event;

fuzz_target!(|data: &[u8]| {
    if data.len() < std::mem::size_of::<Event>() {
        return;
    }
    // SAFETY: Event is plain old data; any bytes are a value of it.
    let raw: Event = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let matcher = FlowMatcher::tcp("10.244.1.2:40000".parse().unwrap());
    let _ = matcher.matches(&raw);
    if let Some(ev) = KernelEvent::decode(&raw, &ReasonNames::default(), &NetnsNames::default()) {
        let _ = ev.summary();
        let _ = serde_json::to_string(&ev);
    }
});
