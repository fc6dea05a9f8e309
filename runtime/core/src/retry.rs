//! Exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

/// Retry policy of a stage (`retry:` in pipeline.yaml).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Attempts before a transient failure is dead-lettered (the first try counts).
    pub attempts: u32,
    /// Delay scale of the first retry.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based): random in [d/2, d] with
    /// d = min(max, base·2^(attempt-1)), so retries of many records spread out instead of
    /// hammering a recovering dependency in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let d = exp.min(self.max);
        let half = d / 2;
        half + d.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let b = Backoff {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(b.delay(40) <= Duration::from_secs(1));
            assert!(b.delay(40) >= Duration::from_millis(500));
        }
    }
}
