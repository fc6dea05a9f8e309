//! The byte budget of the pages a crawl process holds (`max_fetch_memory`).
//!
//! A request's real footprint is its raw body, the body decoded to UTF-8 (up to three times
//! the raw bytes for a single-byte charset whose letters take three in UTF-8, such as Thai)
//! and the JSON page record (the text again, escaped). A request holds [`BODY_FACTOR`] times
//! its raw bytes plus [`RECORD_ROOM`], which covers the raw body and its decoded text; the
//! record is then encoded within what the reservation holds once the raw body is gone, and
//! the reservation is kept until the record is handed to the output (whose own budget,
//! `max_pending`, counts it from there).
//!
//! Reservations come in two sizes from two pools, so that no request ever waits for memory
//! while holding memory another waiter needs:
//! - every request first takes a *small* reservation ([`SMALL`]: a body up to 64 KiB), from
//!   the small pool;
//! - a body that outgrows it takes a *large* one, the request's whole maximum at once, from
//!   the large pool. Holders of a large reservation never wait for more, so they finish and
//!   give it back, and the requests waiting on the large pool (holding small ones) go on.
//!
//! A wait for a large reservation ends at a deadline: a body still without room then stops
//! there, flagged truncated. The pages in memory never exceed the budget.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes reserved per raw body byte: the body itself and up to three bytes of decoded text.
pub const BODY_FACTOR: usize = 4;

/// Bytes reserved per page besides its body: the page record's other fields.
pub const RECORD_ROOM: usize = 16 << 10;

/// A small reservation: a body of up to 64 KiB (most pages of the web).
pub const SMALL: usize = BODY_FACTOR * (64 << 10) + RECORD_ROOM;

/// The pools are kept in units of this many bytes.
const UNIT: usize = 1024;

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

/// The budget of one crawl process.
#[derive(Clone)]
pub struct MemoryBudget {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    /// Units of the large pool.
    large_units: usize,
}

/// Bytes of the budget one request holds; given back when dropped.
pub struct Reservation {
    budget: MemoryBudget,
    /// The request's largest reservation (what one body may need at most).
    max: usize,
    small: Option<OwnedSemaphorePermit>,
    large: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// The smallest budget for bodies of `max_body` bytes: one large reservation and one
    /// small one.
    pub fn minimum(max_body: usize) -> usize {
        BODY_FACTOR * max_body + RECORD_ROOM + SMALL
    }

    /// A budget of `bytes` for bodies of `max_body` bytes at most: half of it (and at least
    /// one body of `max_body`) for large reservations, the rest for small ones.
    pub fn new(bytes: usize, max_body: usize) -> Self {
        let full = units(BODY_FACTOR * max_body + RECORD_ROOM);
        let total = units(bytes).min(Semaphore::MAX_PERMITS);
        let large_units = (total / 2).max(full).min(total);
        let small_units = (total - large_units).max(units(SMALL));
        Self {
            small: Arc::new(Semaphore::new(small_units)),
            large: Arc::new(Semaphore::new(large_units)),
            large_units,
        }
    }

    /// An empty reservation for a request whose body takes at most `max` bytes of memory.
    pub fn reserve(&self, max: usize) -> Reservation {
        Reservation {
            budget: self.clone(),
            max: max.min(self.large_units * UNIT),
            small: None,
            large: None,
        }
    }

    /// Bytes not reserved now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        (self.small.available_permits() + self.large.available_permits()) * UNIT
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        [&self.small, &self.large]
            .into_iter()
            .flatten()
            .map(|p| p.num_permits() * UNIT)
            .sum()
    }

    /// Holds at least `bytes`, waiting for the budget until `deadline`; false if the budget
    /// had no room by then, or `bytes` is beyond the request's maximum.
    pub async fn grow_to(&mut self, bytes: usize, deadline: Instant) -> bool {
        if bytes <= self.bytes() {
            return true;
        }
        if bytes > self.max.max(SMALL) {
            return false;
        }
        // A large reservation is the whole maximum at once: its holder never waits again.
        let large = bytes > SMALL;
        let (pool, want) = if large {
            (&self.budget.large, self.max)
        } else {
            (&self.budget.small, SMALL)
        };
        let acquire = pool.clone().acquire_many_owned(units(want) as u32);
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(permit)) if large => {
                // It covers everything: the small one goes back.
                self.small = None;
                self.large = Some(permit);
                true
            }
            Ok(Ok(permit)) => {
                self.small = Some(permit);
                true
            }
            _ => false,
        }
    }

    /// Holds at least `bytes` if the large pool has room now; false otherwise.
    pub fn try_grow_to(&mut self, bytes: usize) -> bool {
        let Some(want) = bytes.checked_sub(self.bytes()).filter(|w| *w > 0) else {
            return true;
        };
        match self
            .budget
            .large
            .clone()
            .try_acquire_many_owned(units(want) as u32)
        {
            Ok(permit) => {
                merge(&mut self.large, permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back all but `bytes` (rounded up to the pools' unit).
    pub fn shrink_to(&mut self, bytes: usize) {
        let mut keep = units(bytes);
        for held in [&mut self.large, &mut self.small] {
            if let Some(permit) = held {
                let n = permit.num_permits();
                if n > keep {
                    drop(permit.split(n - keep));
                }
                keep = keep.saturating_sub(n.min(keep));
                if permit.num_permits() == 0 {
                    *held = None;
                }
            }
        }
    }
}

fn merge(slot: &mut Option<OwnedSemaphorePermit>, permit: OwnedSemaphorePermit) {
    match slot {
        Some(held) => held.merge(permit),
        None => *slot = Some(permit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MAX_BODY: usize = 256 << 10;

    fn full() -> usize {
        BODY_FACTOR * MAX_BODY + RECORD_ROOM
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn a_small_body_takes_a_small_reservation_and_a_big_one_the_whole_maximum() {
        let budget = MemoryBudget::new(MemoryBudget::minimum(MAX_BODY), MAX_BODY);
        let total = budget.available();
        let mut r = budget.reserve(full());
        assert!(r.grow_to(10 << 10, soon()).await);
        assert_eq!(r.bytes(), SMALL);
        assert!(r.grow_to(SMALL + 1, soon()).await);
        assert_eq!(r.bytes(), full(), "the small reservation is given back");
        assert!(!r.grow_to(full() + 1, soon()).await, "beyond the maximum");
        r.shrink_to(100 << 10);
        assert_eq!(r.bytes(), 100 << 10);
        drop(r);
        assert_eq!(budget.available(), total);
    }

    #[tokio::test]
    async fn requests_holding_small_reservations_take_turns_for_the_large_one() {
        // Room for one large and one small reservation: two bodies that both outgrow their
        // small one must not wait for each other forever.
        let budget = MemoryBudget::new(MemoryBudget::minimum(MAX_BODY), MAX_BODY);
        let mut a = budget.reserve(full());
        assert!(a.grow_to(SMALL, soon()).await);
        assert!(a.grow_to(SMALL * 2, soon()).await, "a takes the large pool");
        let mut b = budget.reserve(full());
        assert!(
            b.grow_to(SMALL, soon()).await,
            "the small pool is free again"
        );
        let waiting = tokio::spawn(async move {
            let ok = b
                .grow_to(SMALL * 2, Instant::now() + Duration::from_secs(5))
                .await;
            (ok, b)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        let (ok, b) = waiting.await.unwrap();
        assert!(ok && b.bytes() == full());
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_and_try_grow_never_waits() {
        let budget = MemoryBudget::new(MemoryBudget::minimum(MAX_BODY), MAX_BODY);
        let mut a = budget.reserve(full());
        assert!(a.grow_to(full(), soon()).await);
        let mut b = budget.reserve(full());
        let started = Instant::now();
        assert!(!b.grow_to(full(), started + Duration::from_millis(30)).await);
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(!b.try_grow_to(SMALL * 2));
        drop(a);
        assert!(b.try_grow_to(SMALL * 2));
    }
}
