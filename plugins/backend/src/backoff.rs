//! Bounded exponential backoff for retry loops: the broker's accept loop, backend reconnects
//! and the load generator's connection retries all pause the same way.
//!
//! The delay starts at `min`, doubles after every failure up to `max`, and starts over after a
//! success ([`Backoff::reset`]). With jitter (the default) each delay is scaled by a random
//! factor in [0.5, 1.0] ("equal jitter"): many clients that failed at the same moment then do
//! not retry in lockstep, and none retries sooner than half the nominal delay.
//!
//! ```
//! use std::time::Duration;
//! use switchyard_backend::backoff::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_millis(5), Duration::from_secs(1)).without_jitter();
//! assert_eq!(b.next_delay(), Duration::from_millis(5));
//! assert_eq!(b.next_delay(), Duration::from_millis(10));
//! b.reset();
//! assert_eq!(b.next_delay(), Duration::from_millis(5));
//! ```

use std::time::Duration;

/// Doubling delays between `min` and `max`, with or without jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Failures since the last reset.
    attempt: u32,
    jitter: bool,
}

impl Backoff {
    /// Delays from `min` to `max` (a `max` below `min` is taken as `min`), with jitter.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), attempt: 0, jitter: true }
    }

    /// The same delays without jitter, for a loop that no other process retries in step with
    /// (and for tests that want exact values).
    pub fn without_jitter(mut self) -> Backoff {
        self.jitter = false;
        self
    }

    /// The delay before the next retry: `min * 2^failures`, capped at `max`, scaled into
    /// [0.5, 1.0] of that when jittered. Each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        // 2^16 times any sensible `min` is past any sensible `max`; the cap keeps the shift
        // from overflowing however long the failures go on.
        let factor = 1u32 << self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let nominal = self.min.saturating_mul(factor).min(self.max);
        if self.jitter {
            nominal.mul_f64(0.5 + fastrand::f64() * 0.5)
        } else {
            nominal
        }
    }

    /// A success: the next failure pauses `min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_maximum_and_resets_on_success() {
        let mut b = Backoff::new(ms(5), Duration::from_secs(1)).without_jitter();
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.failures(), 10);
        b.reset();
        assert_eq!((b.failures(), b.next_delay()), (0, ms(5)));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_nominal_delay() {
        let mut b = Backoff::new(ms(100), Duration::from_secs(2));
        for nominal in [100, 200, 400, 800, 1600, 2000, 2000] {
            let d = b.next_delay();
            assert!(d >= ms(nominal / 2) && d <= ms(nominal), "{d:?} for nominal {nominal} ms");
        }
    }

    #[test]
    fn endless_failures_neither_overflow_nor_pass_the_maximum() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).without_jitter();
        for _ in 0..100_000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        assert_eq!(b.next_delay(), Duration::from_secs(30));
    }

    #[test]
    fn a_maximum_below_the_minimum_is_the_minimum() {
        let mut b = Backoff::new(ms(50), ms(10)).without_jitter();
        assert_eq!((b.next_delay(), b.next_delay()), (ms(50), ms(50)));
    }
}
