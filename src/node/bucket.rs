//! The token bucket that paces one connection's publishes, and another its subscribes.

use std::time::Instant;

/// A token bucket; the rate and burst come from the live limits at each take, so a reload
/// applies at once.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn full(burst: f64) -> Bucket {
        Bucket { tokens: burst, last: Instant::now() }
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_until_refilled() {
        let mut b = Bucket::full(3.0);
        assert!((0..3).all(|_| b.take(0.0, 3.0)));
        assert!(!b.take(0.0, 3.0), "empty at rate 0");
        assert!(b.take(1e9, 3.0), "a huge rate refills at once");
    }
}
