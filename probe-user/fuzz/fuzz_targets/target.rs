//! `HOST:PORT` as users type it: parse, and what parses must print back and parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcheck::probes::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(t) = Target::parse(s) {
        assert!(t.port != 0);
        let again = Target::parse(&t.to_string()).expect("a parsed target prints as a valid one");
        assert_eq!(again, t);
    }
});
