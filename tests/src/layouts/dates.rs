//! Dates: now, days from now, and the two ways the fixtures print a Unix time.

use std::time::{SystemTime, UNIX_EPOCH};

pub const DAY: u64 = 86_400;

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// `days` days from now (negative: ago), in Unix seconds.
pub(super) fn days(days: i64) -> u64 {
    now().checked_add_signed(days * 86_400).expect("a date after 1970")
}

/// Year, month, day, hour, minute, second of a Unix time (proleptic Gregorian, UTC).
fn civil(unix: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (day, secs) = (unix / DAY, unix % DAY);
    // Howard Hinnant's days_from_civil, inverted.
    let z = day + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The kubelet certificate store's file stamp: Go's `2006-01-02-15-04-05`.
pub fn store_stamp(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}-{hh:02}-{mm:02}-{ss:02}")
}

/// RFC 3339 to the second, as netcheck's `data.cert.not_after`.
pub fn rfc3339(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}
