//! Time, injected.
//!
//! Schedules, retry backoff and expiry all ask a [`Clock`] for "now" instead of the system, so a
//! test can run a week of schedule in milliseconds with a [`ManualClock`].

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A source of the current wall-clock time and of a monotonic reading.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// A monotonic reading: never goes back, unmoved by wall-clock jumps. Only the difference
    /// of two readings means anything (for "has 5 s passed", not for dates).
    fn monotonic(&self) -> Duration;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn monotonic(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<ManualState>>);

#[derive(Debug)]
struct ManualState {
    wall: DateTime<Utc>,
    monotonic: Duration,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(ManualState {
            wall: start,
            monotonic: Duration::ZERO,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the clock (wall and monotonic) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state();
        s.wall += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        s.monotonic = s.monotonic.saturating_add(by);
    }

    /// Sets the wall clock to `to` (a jump; the monotonic reading does not move).
    pub fn set(&self, to: DateTime<Utc>) {
        self.state().wall = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.state().wall
    }

    fn monotonic(&self) -> Duration {
        self.state().monotonic
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_jump_does_not_move_its_monotonic_reading() {
        let c = ManualClock::new(DateTime::<Utc>::UNIX_EPOCH);
        c.advance(Duration::from_secs(5));
        c.set(DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(c.monotonic(), Duration::from_secs(5));
        assert_eq!(c.now(), DateTime::<Utc>::UNIX_EPOCH);
        let s = SystemClock;
        let a = s.monotonic();
        assert!(s.monotonic() >= a);
    }
}
