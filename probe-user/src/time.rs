//! Time as netcheck reads it: the kernel's monotonic clock (the clock of `bpf_ktime_get_ns`,
//! turned into wall-clock time for events) and durations as the command line and the agent's
//! HTTP queries write them.

use std::time::{Duration, SystemTime};

/// `3s`, `500ms`, `2m` (humantime) or bare seconds (`2`, `0.5`); from 1 ms to a day, whichever
/// way it is written (a deadline or window beyond a day is a typo, and adding one to an
/// `Instant` may overflow).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(DurationError::OutOfRange);
        }
        Duration::try_from_secs_f64(secs).map_err(|_| DurationError::OutOfRange)?
    } else {
        humantime::parse_duration(s).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => DurationError::OutOfRange,
            other => DurationError::Unreadable(other),
        })?
    };
    if d.is_zero() {
        return Err(DurationError::Zero);
    }
    if d < MIN || d >= MAX {
        return Err(DurationError::OutOfRange);
    }
    Ok(d)
}

/// The agent's cycle: as [`parse_duration`], and at least a second (every cycle probes its peers
/// and reads the API server; faster is a load, not a measurement).
pub fn parse_interval(s: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(DurationError::BelowInterval);
    }
    Ok(d)
}

const MIN: Duration = Duration::from_millis(1);
const MAX: Duration = Duration::from_hours(24);

/// Why a duration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("must be from 1ms to less than a day")]
    OutOfRange,
    #[error("{0} (examples: 3s, 500ms)")]
    Unreadable(#[source] humantime::DurationError),
    #[error("must be more than 0")]
    Zero,
    #[error("must be at least 1s (each cycle probes the peers and reads the API server)")]
    BelowInterval,
}

/// A doubling backoff (from `min` to at most `max`), each wait with up to half of it again as
/// jitter, from the clock's nanoseconds: agents that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The wait before the next try; the one after is twice as long (at most `max`).
    pub fn wait(&mut self) -> Duration {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let wait = self.next + self.next.mul_f64(f64::from(nanos % 1000) / 2000.0);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Converts the kernel's monotonic timestamps to wall-clock time.
pub struct Clock {
    wall: SystemTime,
    mono_ns: u64,
}

impl Clock {
    pub fn now() -> Self {
        Self { wall: SystemTime::now(), mono_ns: monotonic_ns() }
    }

    pub fn wall(&self, ts_ns: u64) -> SystemTime {
        if ts_ns >= self.mono_ns {
            self.wall + Duration::from_nanos(ts_ns - self.mono_ns)
        } else {
            self.wall - Duration::from_nanos(self.mono_ns - ts_ns)
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<Duration> = (0..5).map(|_| b.wait()).collect();
        for (w, base) in waits.iter().zip([1, 2, 4, 5, 5]) {
            let base = Duration::from_secs(base);
            assert!(*w >= base && *w < base * 3 / 2, "{waits:?}");
        }
        b.reset();
        assert!(b.wait() < Duration::from_millis(1500));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        // Bounded however it is written.
        for bad in ["500000000000y", "1e300", "86400", "2d", "1ns", "0.0000001", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration("23h").unwrap(), Duration::from_hours(23));
        assert!(matches!(parse_duration("0s"), Err(DurationError::Zero)));
        assert!(matches!(parse_interval("500ms"), Err(DurationError::BelowInterval)));
        assert_eq!(parse_interval("30s").unwrap(), Duration::from_secs(30));
    }
}
