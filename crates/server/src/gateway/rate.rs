//! A token bucket for per-connection rate limits.

use std::time::Instant;

/// Allows `rate` events per second on average, with bursts up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0);
        b.last = start;
        let taken = (0..5).filter(|_| b.try_take_at(start)).count();
        assert_eq!(taken, 3, "burst");
        assert!(
            !b.try_take_at(start + Duration::from_millis(50)),
            "half a token"
        );
        assert!(
            b.try_take_at(start + Duration::from_millis(100)),
            "refilled"
        );
        assert!(b.try_take_at(start + Duration::from_secs(10)));
        let after_long_idle = (0..10)
            .filter(|_| b.try_take_at(start + Duration::from_secs(10)))
            .count();
        assert_eq!(after_long_idle, 2, "capped at burst");
    }
}
