//! The query string of the agent's `/events` endpoint, as any client on the network may send
//! it: parsing must not panic, an accepted window never exceeds the agent's, and a page is never
//! empty or larger than what the agent keeps.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use netcheck::agent::http::events_query;

fuzz_target!(|data: &[u8]| {
    let window = Duration::from_secs(600);
    if let Ok(q) = events_query(&String::from_utf8_lossy(data), window) {
        assert!(q.since <= window);
        assert!((1..=netcheck::agent::events::MAX_EVENTS).contains(&q.limit));
    }
});
