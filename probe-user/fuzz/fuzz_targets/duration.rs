//! Durations as the command line and the agent's queries write them: parsing never panics, and
//! an accepted duration is within the bounds it promises.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use netcheck::time::{parse_duration, parse_interval};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(d) = parse_duration(&s) {
        assert!(d >= Duration::from_millis(1) && d < Duration::from_secs(86_400), "{s}: {d:?}");
    }
    if let Ok(d) = parse_interval(&s) {
        assert!(d >= Duration::from_secs(1), "{s}: {d:?}");
    }
});
