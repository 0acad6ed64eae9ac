//! Where the service reads the time.
//!
//! Every time the core stores, compares or shows (issue and expiry of
//! grants, usage windows, job and review times, the shown ends of jobs,
//! log retention) comes from the [`Clock`] its [`crate::Domain`] was opened
//! with: the system's by default, or one a test moves forward to see a
//! grant expire or a window close without waiting for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch.
    fn unix_secs(&self) -> u64 {
        u64::try_from(self.now_ms() / 1000).unwrap_or(0)
    }

    /// The time as RFC 3339 UTC, seconds precision.
    fn rfc3339(&self) -> String {
        crate::util::rfc3339(self.unix_secs())
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The system's clock moved forward by a shift that only grows: time
/// still passes (so a wait for a job's shown end still ends), and a test
/// jumps days ahead with [`ShiftedClock::advance`].
#[derive(Debug, Default)]
pub struct ShiftedClock {
    shift_ms: AtomicI64,
}

impl ShiftedClock {
    /// The system's time, not shifted yet.
    pub fn new() -> ShiftedClock {
        ShiftedClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.shift_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now_ms(&self) -> i64 {
        SystemClock
            .now_ms()
            .saturating_add(self.shift_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_moves_forward_by_what_it_was_advanced() {
        let clock = ShiftedClock::new();
        let before = clock.unix_secs();
        clock.advance(Duration::from_secs(3 * 86_400));
        let after = clock.unix_secs();
        assert!(
            (3 * 86_400..3 * 86_400 + 60).contains(&(after - before)),
            "{before} -> {after}"
        );
        assert!(clock.rfc3339() > SystemClock.rfc3339());
    }
}
