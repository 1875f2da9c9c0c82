//! Where capture's start-up goes: each phase's wall time in the order they ran, logged at debug
//! level as it ends and reported in `capture.phases`, so a slow start on some kernel says which
//! step was slow.

use std::time::Instant;

/// One step of start-up and how long it took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Phase {
    pub phase: String,
    /// Milliseconds, to a tenth.
    pub ms: f64,
}

/// Laps of a stopwatch, one per phase.
pub(super) struct Timer {
    started: Instant,
    last: Instant,
    phases: Vec<Phase>,
}

impl Timer {
    pub fn start() -> Self {
        let now = Instant::now();
        Self { started: now, last: now, phases: Vec::new() }
    }

    /// Ends the phase running since the previous lap.
    pub fn lap(&mut self, phase: impl Into<String>) {
        let now = Instant::now();
        let phase = phase.into();
        let ms = tenths(now - self.last);
        tracing::debug!(phase = %phase, ms, "capture start-up");
        self.phases.push(Phase { phase, ms });
        self.last = now;
    }

    /// A part of the last phase that ran alongside others (its own time, not a lap).
    pub fn note(&mut self, phase: impl Into<String>, took: std::time::Duration) {
        let ms = tenths(took);
        let phase = phase.into();
        tracing::debug!(phase = %phase, ms, "capture start-up (in parallel)");
        self.phases.push(Phase { phase, ms });
    }

    /// Whole milliseconds from the start to the last lap.
    pub fn total_ms(&self) -> u64 {
        u64::try_from((self.last - self.started).as_millis()).unwrap_or(u64::MAX)
    }

    pub fn into_phases(self) -> Vec<Phase> {
        self.phases
    }
}

/// Milliseconds to a tenth.
fn tenths(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_follow_each_other() {
        let mut t = Timer::start();
        std::thread::sleep(std::time::Duration::from_millis(3));
        t.lap("first");
        t.lap("second");
        assert!(t.total_ms() >= 3);
        let p = t.into_phases();
        assert_eq!(p.iter().map(|p| p.phase.as_str()).collect::<Vec<_>>(), ["first", "second"]);
        assert!(p[0].ms >= 3.0 && p[1].ms < p[0].ms, "{p:?}");
    }
}
