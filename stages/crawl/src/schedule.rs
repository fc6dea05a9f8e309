//! When a deferred URL should come back.
//!
//! The frontier defers URLs of a busy domain (`crawler.rs`). Deferred one by one with the
//! domain's current wait, a thousand URLs of a slow domain would all come back at about the
//! same time, find it as busy as before and go round again, every `max_domain_wait`: a
//! thousand records through the broker per round for nothing. So each domain has a horizon,
//! the due time given to its last deferred URL, and the next is due one turn (the host's
//! delay) after it: the URLs come back spread at the pace the domain can take them, each
//! about when its turn is near.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Domains kept before the horizons already past are swept.
const SWEEP_AT: usize = 100_000;

/// The horizon of each domain with URLs deferred by this process.
#[derive(Default)]
pub struct Schedule {
    horizons: Mutex<HashMap<String, Instant>>,
}

impl Schedule {
    /// How long from now a URL of `domain` is deferred: no sooner than `earliest`, and one
    /// `pace` after the domain's last deferred URL.
    pub fn defer(&self, domain: &str, earliest: Duration, pace: Duration) -> Duration {
        self.defer_many(domain, earliest, pace, 1)
    }

    /// How long from now `n` URLs of `domain` deferred together (one record) are deferred:
    /// the first as [`Schedule::defer`] says, and the domain's horizon moved past all `n`.
    pub fn defer_many(
        &self,
        domain: &str,
        earliest: Duration,
        pace: Duration,
        n: usize,
    ) -> Duration {
        let now = Instant::now();
        let mut horizons = self.horizons.lock().expect("schedule lock");
        if horizons.len() >= SWEEP_AT {
            horizons.retain(|_, h| *h > now);
        }
        let horizon = horizons.entry(domain.to_string()).or_insert(now);
        let due = (now + earliest).max(*horizon + pace);
        *horizon = due + pace * u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX);
        due - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domains_deferred_urls_come_back_one_turn_apart() {
        let s = Schedule::default();
        let pace = Duration::from_secs(10);
        let earliest = Duration::from_secs(5);
        let dues: Vec<Duration> = (0..4)
            .map(|_| s.defer("slow.test", earliest, pace))
            .collect();
        // The first after one turn (the horizon starts now), then one turn after another.
        for (i, due) in dues.iter().enumerate() {
            let want = pace * (i as u32 + 1);
            assert!(
                *due <= want && *due + Duration::from_millis(50) >= want,
                "{i}: {due:?}"
            );
        }
        // Another domain has its own horizon; a longer `earliest` wins over the horizon.
        let other = s.defer(
            "quick.test",
            Duration::from_secs(60),
            Duration::from_secs(1),
        );
        assert!(other >= Duration::from_secs(59), "{other:?}");
        // Five deferred together take five turns: the next one comes after them.
        let together = s.defer_many("batch.test", Duration::ZERO, pace, 5);
        let next = s.defer("batch.test", Duration::ZERO, pace);
        assert!(together <= pace && together + Duration::from_millis(50) >= pace);
        assert!(
            next + Duration::from_millis(50) >= pace * 6 && next <= pace * 6,
            "{next:?}"
        );
    }
}
