//! Exponential backoff with jitter, for reconnects and retried sends.

use std::time::Duration;

use rand::Rng;

/// How long to wait between attempts: `initial`, doubling per failed
/// attempt up to `max`, each delay jittered down by up to half ("equal
/// jitter") so that many clients cut off together do not return together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl BackoffConfig {
    /// The un-jittered delay before retry number `attempt` (0-based):
    /// `initial * 2^attempt`, capped at `max`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt`, jittered: somewhere in
    /// `[base/2, base]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(attempt);
        let half = base / 2;
        let spread = u64::try_from((base - half).as_micros()).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            rng.gen_range(0..=spread)
        };
        half + Duration::from_micros(extra)
    }
}

/// A backoff in progress: counts failures since the last success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Backoff {
        Backoff { config, attempt: 0 }
    }

    /// The delay to wait now; the next one will be longer.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.config.delay(self.attempt, &mut rand::thread_rng());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Call after a success: the next delay starts from `initial` again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn base_delay_doubles_to_the_cap() {
        let c = BackoffConfig::default();
        let cases = [
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3200),
            (6, 5000),
            (40, 5000),
            (u32::MAX, 5000),
        ];
        for (attempt, want) in cases {
            assert_eq!(c.base_delay(attempt), ms(want), "attempt {attempt}");
        }
    }

    #[test]
    fn jittered_delay_stays_within_half_to_full() {
        let c = BackoffConfig::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..50 {
            let base = c.base_delay(attempt);
            for _ in 0..50 {
                let d = c.delay(attempt, &mut rng);
                assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
            }
        }
        let zero = BackoffConfig {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut b = Backoff::new(BackoffConfig::default());
        let first = b.next_delay();
        assert!(first <= ms(100));
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.next_delay() >= ms(2500));
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
