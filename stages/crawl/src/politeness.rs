//! Who may send a request, and when.
//!
//! A URL goes through three gates, in this order:
//! 1. the domain's local queue — at most `per_domain_concurrency` tasks of this process work on
//!    one registrable domain; the others wait here, costing a parked future and nothing else;
//! 2. a domain slot in etcd (or memory) — the same limit across every crawl replica, leased so
//!    a crashed replica's slots come back; only tasks past gate 1 poll for one. A slot given
//!    back is kept for [`SLOT_LINGER`] for the domain's next request in this process: a domain
//!    crawled at its pace then costs etcd two writes per visit, not two per page (measured on
//!    the broad benchmark, etcd took a core at 1,000 pages/s otherwise);
//! 3. the host's turn (`min_delay`, or a longer Crawl-delay) and then one of the process's
//!    `fetch_concurrency` request permits.
//!
//! The request permit comes last so that a domain waiting for its turn holds no permit: one
//! slow or rate-limited domain can never starve the others of fetch capacity.
//!
//! Before gate 1, [`Politeness::outlook`] tells the crawler how many tasks already wait for a
//! domain and how long a new one would wait: the frontier (`crawler.rs`) defers a URL whose
//! wait is too long instead of parking it, so that waiting URLs never fill the stage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sluice_runtime::services::{Slot, SlotError, Slots};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a slot given back stays with this process for the domain's next request. Other
/// replicas meanwhile see it taken, which only delays them: the domain's URLs are this
/// process's partition anyway.
pub const SLOT_LINGER: Duration = Duration::from_secs(2);

/// The politeness state of one process.
pub struct Politeness {
    slots: Slots,
    per_domain: u32,
    lease_ttl: Duration,
    min_delay: Duration,
    max_crawl_delay: Duration,
    requests: Arc<Semaphore>,
    queues: Mutex<HashMap<String, Queue>>,
    hosts: Mutex<HashMap<String, Turns>>,
    /// Slots given back lately, by domain, with when; swept after [`SLOT_LINGER`].
    idle: Mutex<HashMap<String, Vec<(Slot, Instant)>>>,
}

/// A host's schedule: its next free turn, the delay between turns last applied, and when a
/// request last went.
#[derive(Clone, Copy)]
struct Turns {
    next: Instant,
    delay: Duration,
    sent: Option<Instant>,
}

/// What a new task for a domain would meet: see [`Politeness::outlook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlook {
    /// Tasks of this process working on or waiting for the domain.
    pub waiting: usize,
    /// Roughly how long a new request to the host would wait for its turn.
    pub wait: Duration,
    /// The host's delay between turns (`min_delay` if it has had none yet).
    pub pace: Duration,
}

struct Queue {
    gate: Arc<Semaphore>,
    users: usize,
}

/// Settings of [`Politeness`].
pub struct Limits {
    /// Requests in flight per registrable domain, across replicas.
    pub per_domain: u32,
    /// Requests in flight per process.
    pub fetch_concurrency: usize,
    /// Lease TTL of domain slots.
    pub lease_ttl: Duration,
    /// Minimum time between requests to one host.
    pub min_delay: Duration,
    /// Cap on robots.txt Crawl-delay.
    pub max_crawl_delay: Duration,
}

/// Sweep host clocks when this many are kept.
const HOSTS_SWEEP_AT: usize = 10_000;

impl Politeness {
    /// Politeness over `slots`.
    pub fn new(slots: Slots, limits: Limits) -> Arc<Self> {
        let politeness = Arc::new(Self {
            slots,
            per_domain: limits.per_domain,
            lease_ttl: limits.lease_ttl,
            min_delay: limits.min_delay,
            max_crawl_delay: limits.max_crawl_delay,
            requests: Arc::new(Semaphore::new(limits.fetch_concurrency)),
            queues: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&politeness);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SLOT_LINGER / 4);
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { return };
                for slot in p.expired_slots() {
                    slot.release().await;
                }
            }
        });
        politeness
    }

    /// Keeps `slot` for `domain`'s next request in this process.
    fn park(&self, domain: &str, slot: Slot) {
        let mut idle = self.idle.lock().expect("idle lock");
        idle.entry(domain.to_string())
            .or_default()
            .push((slot, Instant::now()));
    }

    /// A slot of `domain` given back lately, if any.
    fn unpark(&self, domain: &str) -> Option<Slot> {
        let mut idle = self.idle.lock().expect("idle lock");
        let parked = idle.get_mut(domain)?;
        let slot = parked.pop().map(|(slot, _)| slot);
        if parked.is_empty() {
            idle.remove(domain);
        }
        slot
    }

    /// Takes out the slots parked longer than [`SLOT_LINGER`], to release.
    fn expired_slots(&self) -> Vec<Slot> {
        let cutoff = Instant::now() - SLOT_LINGER;
        let mut expired = Vec::new();
        let mut idle = self.idle.lock().expect("idle lock");
        idle.retain(|_, parked| {
            let (old, keep): (Vec<_>, Vec<_>) = parked.drain(..).partition(|(_, at)| *at <= cutoff);
            expired.extend(old.into_iter().map(|(slot, _)| slot));
            *parked = keep;
            !parked.is_empty()
        });
        expired
    }

    /// Waits through gates 1 and 2 for `domain`. Fails only when the slot store is down.
    pub async fn enter(self: &Arc<Self>, domain: &str) -> Result<DomainPermit, SlotError> {
        let gate = {
            let mut queues = self.queues.lock().expect("queues lock");
            let q = queues.entry(domain.to_string()).or_insert_with(|| Queue {
                gate: Arc::new(Semaphore::new(self.per_domain as usize)),
                users: 0,
            });
            q.users += 1;
            q.gate.clone()
        };
        let mut permit = DomainPermit {
            politeness: self.clone(),
            domain: domain.to_string(),
            local: None,
            slot: None,
        };
        permit.local = Some(gate.acquire_owned().await.expect("gates are never closed"));
        if let Some(slot) = self.unpark(domain) {
            permit.slot = Some(slot);
            return Ok(permit);
        }
        let mut backoff = Duration::from_millis(20);
        loop {
            if let Some(slot) = self
                .slots
                .try_acquire(domain, self.per_domain, self.lease_ttl)
                .await?
            {
                permit.slot = Some(slot);
                return Ok(permit);
            }
            // Held by other replicas: look again soon, but not in lockstep with them.
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// How many tasks wait for `domain` and roughly how long a new request to `host` would
    /// wait: its next turn, then one turn for each task ahead of it in this process.
    pub fn outlook(&self, domain: &str, host: &str) -> Outlook {
        let waiting = self
            .queues
            .lock()
            .expect("queues lock")
            .get(domain)
            .map_or(0, |q| q.users);
        let (wait, pace) = match self.hosts.lock().expect("hosts lock").get(host) {
            Some(t) => {
                let ahead = u32::try_from(waiting).unwrap_or(u32::MAX);
                let wait = t.next.saturating_duration_since(Instant::now()) + t.delay * ahead;
                (wait, t.delay)
            }
            None => (Duration::ZERO, self.min_delay),
        };
        Outlook {
            waiting,
            wait,
            pace,
        }
    }

    /// The delay between requests to a host whose robots.txt says `crawl_delay`.
    pub fn delay_for(&self, crawl_delay: Option<Duration>) -> Duration {
        crawl_delay
            .map(|d| d.min(self.max_crawl_delay))
            .unwrap_or_default()
            .max(self.min_delay)
    }

    /// Reserves the host's next turn and returns when it is due.
    async fn wait_turn(&self, host: &str, delay: Duration) {
        let start = {
            let mut hosts = self.hosts.lock().expect("hosts lock");
            let now = Instant::now();
            if hosts.len() >= HOSTS_SWEEP_AT {
                hosts.retain(|_, t| t.next > now);
            }
            let turns = hosts.entry(host.to_string()).or_insert(Turns {
                next: now,
                delay,
                sent: None,
            });
            let start = turns.next.max(now);
            turns.next = start + delay;
            turns.delay = delay;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// Marks a request to `host` as going now, first waiting until `delay` has passed since
    /// the previous one went. A turn is reserved before the request permit is taken, so a
    /// request that waited for a permit goes late, and the one after it would follow too
    /// closely; this holds the spacing between the requests themselves.
    async fn mark_sent(&self, host: &str, delay: Duration) {
        loop {
            let wait = {
                let mut hosts = self.hosts.lock().expect("hosts lock");
                let now = Instant::now();
                let turns = hosts.entry(host.to_string()).or_insert(Turns {
                    next: now,
                    delay,
                    sent: None,
                });
                match turns.sent.map(|at| at + delay) {
                    Some(free) if free > now => free - now,
                    _ => {
                        turns.sent = Some(now);
                        turns.next = turns.next.max(now + delay);
                        return;
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn leave(&self, domain: &str) {
        let mut queues = self.queues.lock().expect("queues lock");
        if let Some(q) = queues.get_mut(domain) {
            q.users -= 1;
            if q.users == 0 {
                queues.remove(domain);
            }
        }
    }
}

/// The right to work on one domain: a local queue place and a domain slot.
pub struct DomainPermit {
    politeness: Arc<Politeness>,
    domain: String,
    local: Option<OwnedSemaphorePermit>,
    slot: Option<Slot>,
}

impl DomainPermit {
    /// The registrable domain this permit is for.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Waits for `host`'s turn (`delay` after its previous request), then for a request
    /// permit. Hold the returned permit until the response is read.
    pub async fn request(&self, host: &str, delay: Duration) -> OwnedSemaphorePermit {
        self.politeness.wait_turn(host, delay).await;
        let permit = self
            .politeness
            .requests
            .clone()
            .acquire_owned()
            .await
            .expect("request semaphore is never closed");
        self.politeness.mark_sent(host, delay).await;
        permit
    }

    /// Gives the slot back: kept a moment for the domain's next request in this process,
    /// then released (dropping the permit releases it at once, in the background).
    pub async fn release(mut self) {
        if let Some(slot) = self.slot.take() {
            self.politeness.park(&self.domain, slot);
        }
    }
}

impl Drop for DomainPermit {
    fn drop(&mut self) {
        self.local.take();
        self.politeness.leave(&self.domain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn limits(per_domain: u32, fetch: usize, delay_ms: u64) -> Limits {
        Limits {
            per_domain,
            fetch_concurrency: fetch,
            lease_ttl: Duration::from_secs(5),
            min_delay: Duration::from_millis(delay_ms),
            max_crawl_delay: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn at_most_the_limit_per_domain_and_other_domains_are_not_held_up() {
        let p = Politeness::new(Slots::in_memory(), limits(2, 64, 0));
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (p, busy, peak) = (p.clone(), busy.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let permit = p.enter("slow.test").await.unwrap();
                let _r = permit.request("slow.test", Duration::ZERO).await;
                let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                busy.fetch_sub(1, Ordering::SeqCst);
                permit.release().await;
            }));
        }
        // While slow.test is saturated, another domain gets in at once.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = std::time::Instant::now();
        let other = p.enter("fast.test").await.unwrap();
        let _r = other.request("fast.test", Duration::ZERO).await;
        assert!(started.elapsed() < Duration::from_millis(25));
        drop(other);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert!(p.queues.lock().unwrap().is_empty(), "queues are cleaned up");
    }

    #[tokio::test]
    async fn a_slot_given_back_stays_for_the_domains_next_request_then_goes() {
        let slots = Slots::in_memory();
        let here = Politeness::new(slots.clone(), limits(1, 8, 0));
        let elsewhere = Politeness::new(slots.clone(), limits(1, 8, 0));
        here.enter("d.test").await.unwrap().release().await;
        // Still this process's: another replica finds the domain's one slot taken...
        let try_elsewhere = || slots.try_acquire("d.test", 1, Duration::from_secs(5));
        assert!(try_elsewhere().await.unwrap().is_none());
        // ...while this process gets it back at once, without asking the store.
        let again = tokio::time::timeout(Duration::from_millis(50), here.enter("d.test"))
            .await
            .expect("the parked slot is taken at once")
            .unwrap();
        again.release().await;
        // Once it has lingered, it is released for everyone.
        let started = std::time::Instant::now();
        let other = elsewhere.enter("d.test").await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= SLOT_LINGER - Duration::from_millis(100) && waited < SLOT_LINGER * 3,
            "{waited:?}"
        );
        drop(other);
    }

    #[tokio::test]
    async fn a_request_that_went_late_still_leaves_a_full_delay_before_the_next() {
        // One request permit: the first request holds it past its turn, as a busy process's
        // requests do; the second must still go a full delay after the first went.
        let p = Politeness::new(Slots::in_memory(), limits(2, 1, 100));
        let blocker = p.requests.clone().acquire_owned().await.unwrap();
        let permit = p.enter("d.test").await.unwrap();
        let first = {
            let permit = &permit;
            async move {
                let r = permit.request("h.d.test", Duration::from_millis(100)).await;
                (std::time::Instant::now(), r)
            }
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(80)).await;
            drop(blocker);
        };
        let ((went, r), ()) = tokio::join!(first, release);
        drop(r);
        let _second = permit.request("h.d.test", Duration::from_millis(100)).await;
        assert!(
            went.elapsed() >= Duration::from_millis(100),
            "{:?}",
            went.elapsed()
        );
    }

    #[tokio::test]
    async fn turns_are_spaced_by_the_delay() {
        let p = Politeness::new(Slots::in_memory(), limits(4, 64, 40));
        let permit = p.enter("d.test").await.unwrap();
        let started = std::time::Instant::now();
        for _ in 0..3 {
            drop(permit.request("h.d.test", p.delay_for(None)).await);
        }
        // Turns at 0, 40, 80 ms.
        assert!(started.elapsed() >= Duration::from_millis(80));
        assert_eq!(
            p.delay_for(Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
        assert_eq!(
            p.delay_for(Some(Duration::from_millis(1))),
            Duration::from_millis(40)
        );
    }
}
