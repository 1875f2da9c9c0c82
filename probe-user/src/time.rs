//! Time as netcheck reads it: the kernel's monotonic clock (the clock of `bpf_ktime_get_ns`,
//! turned into wall-clock time for events) and durations as the command line and the agent's
//! HTTP queries write them.

use std::time::{Duration, SystemTime};

/// `3s`, `500ms`, `2m` (humantime) or bare seconds (`2`, `0.5`); more than 0, less than a day.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() && secs > 0.0 && secs < 86_400.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(DurationError::OutOfRange)
        };
    }
    let d = humantime::parse_duration(s).map_err(DurationError::Unreadable)?;
    if d.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(d)
}

/// Why a duration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("must be more than 0 and less than a day")]
    OutOfRange,
    #[error("{0} (examples: 3s, 500ms)")]
    Unreadable(#[source] humantime::DurationError),
    #[error("must be more than 0")]
    Zero,
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
    fn durations() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
