//! How long to wait before reconnecting: exponential, capped, with full jitter so that a
//! thousand products do not reconnect to a restarted jfconnect in the same millisecond.

use std::time::Duration;

/// Reconnect delays: `initial`, doubling per failed attempt up to `max`, each drawn at random
/// from the upper half of that value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before attempt `failures + 1`, with `unit` in `[0, 1)` drawn at random.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(failures.min(30)))
            .min(self.max);
        let unit = unit.clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + unit / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_per_failure_until_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let top = |n| b.delay(n, 1.0);
        assert_eq!(top(0), Duration::from_millis(100));
        assert_eq!(top(1), Duration::from_millis(200));
        assert_eq!(top(3), Duration::from_millis(800));
        assert_eq!(top(4), Duration::from_secs(1));
        assert_eq!(top(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays_over_the_upper_half() {
        let b = Backoff::default();
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(400));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(600));
        assert!(b.delay(2, 0.999) < Duration::from_millis(800));
        assert_eq!(b.delay(2, f64::NAN.max(0.0)), Duration::from_millis(400));
    }
}
