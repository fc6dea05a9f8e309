//! Links this process emitted recently, so it does not send them again.
//!
//! Most links of a site are the same on every page (navigation, index, footer); emitting each
//! of them from every page multiplies the url-in traffic that normalize-dedup then throws
//! away. A link emitted within `ttl` (the recrawl interval: normalize would drop it as a
//! duplicate anyway) is skipped. Memory is bounded: two generations of 64-bit hashes, the
//! older dropped when the newer fills up or grows older than `ttl`.
//!
//! Links are remembered only after the broker acknowledged them, so a retried or replayed
//! page never skips a link that was not delivered.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

/// A bounded, approximate set of recently emitted links.
pub struct SeenLinks {
    inner: Mutex<Generations>,
    capacity: usize,
    ttl: Duration,
}

struct Generations {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    current_since: Instant,
    previous_since: Instant,
}

impl SeenLinks {
    /// Remembers up to about `capacity` links for up to `ttl`; 0 remembers nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                current_since: Instant::now(),
                previous_since: Instant::now(),
            }),
            capacity,
            ttl,
        }
    }

    /// Whether `url` was emitted recently.
    pub fn contains(&self, url: &str) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let h = xxh3_64(url.as_bytes());
        let mut g = self.inner.lock().expect("seen lock");
        self.rotate(&mut g);
        g.current.contains(&h) || g.previous.contains(&h)
    }

    /// Records that `urls` were delivered.
    pub fn insert<'a>(&self, urls: impl IntoIterator<Item = &'a str>) {
        if self.capacity == 0 {
            return;
        }
        let mut g = self.inner.lock().expect("seen lock");
        for u in urls {
            self.rotate(&mut g);
            g.current.insert(xxh3_64(u.as_bytes()));
        }
    }

    fn rotate(&self, g: &mut Generations) {
        // Each generation holds half the capacity and takes entries for half the TTL.
        // A generation's entries are no older than the generation: drop it at the TTL.
        if g.previous_since.elapsed() >= self.ttl {
            g.previous.clear();
        }
        if g.current_since.elapsed() >= self.ttl {
            g.current.clear();
            g.current_since = Instant::now();
        }
        if g.current_since.elapsed() >= self.ttl / 2 || g.current.len() >= self.capacity.div_ceil(2)
        {
            g.previous = std::mem::take(&mut g.current);
            g.previous_since = g.current_since;
            g.current_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_capacity_and_forgets_beyond() {
        let s = SeenLinks::new(4, Duration::from_secs(3600));
        assert!(!s.contains("http://a/1"));
        s.insert(["http://a/1", "http://a/2"]);
        assert!(s.contains("http://a/1") && s.contains("http://a/2"));
        s.insert([
            "http://a/3",
            "http://a/4",
            "http://a/5",
            "http://a/6",
            "http://a/7",
        ]);
        assert!(
            !s.contains("http://a/1"),
            "two generations later it is gone"
        );
        assert!(s.contains("http://a/7"));
    }

    #[test]
    fn forgets_after_the_ttl() {
        let s = SeenLinks::new(100, Duration::from_millis(40));
        s.insert(["http://a/1"]);
        assert!(s.contains("http://a/1"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!s.contains("http://a/1"));
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let s = SeenLinks::new(0, Duration::from_secs(60));
        s.insert(["http://a/1"]);
        assert!(!s.contains("http://a/1"));
    }
}
