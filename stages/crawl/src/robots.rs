//! robots.txt per RFC 9309, fetched once per origin and cached.
//!
//! - 2xx: the rules for our product token (texting_robots, a parser with the RFC's test
//!   suite), with Crawl-delay.
//! - 4xx: no rules, everything allowed (RFC 9309 §2.3.1.3).
//! - 429, 5xx, network errors: everything disallowed while it is retried (§2.3.1.4); the
//!   verdict is cached briefly so a burst of URLs does not hammer the host.
//!
//! Concurrent URLs of one origin wait for a single fetch instead of each fetching it. The
//! lookup that fetched the file also hands on its `Sitemap:` lines, once per fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use texting_robots::Robot;
use url::Url;

/// What robots.txt says about one URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Fetch it; honour this Crawl-delay (if the file sets one).
    Allowed { crawl_delay: Option<Duration> },
    /// The file disallows it.
    Disallowed,
    /// The file could not be fetched (5xx, 429, network error): do not fetch yet.
    Unavailable(String),
    /// The host's address is refused by the SSRF guard.
    Blocked(String),
}

/// A verdict, and the `Sitemap:` lines of the file if this lookup fetched it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// What the file says about the URL.
    pub verdict: Verdict,
    /// The file's `Sitemap:` URLs when this lookup fetched it (empty for a cached file).
    pub sitemaps: Vec<String>,
}

/// Sitemap lines taken from one robots.txt at most.
const MAX_SITEMAP_LINES: usize = 64;

/// The outcome of fetching one robots.txt.
pub enum RobotsFile {
    /// A 2xx body.
    Body(Vec<u8>),
    /// A 4xx status (or too many redirects): no restrictions.
    Missing,
    /// 429, 5xx or a network error.
    Unavailable(String),
    /// The host's address is refused by the SSRF guard.
    Blocked(String),
}

enum Rules {
    All,
    Parsed(Box<Robot>),
    Unavailable(String),
    Blocked(String),
}

struct Cached {
    rules: Arc<Rules>,
    expires: Instant,
}

/// Cache of parsed robots.txt files by origin.
pub struct RobotsCache {
    token: String,
    ttl: Duration,
    unavailable_ttl: Duration,
    /// One lock per origin so concurrent URLs share one fetch.
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

/// Origins cached before expired entries are swept.
const SWEEP_AT: usize = 50_000;

/// `scheme://host:port` of a URL: robots.txt applies per origin.
pub fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl RobotsCache {
    /// A cache matching groups for `token`, trusting files for `ttl` and failures for
    /// `unavailable_ttl`.
    pub fn new(token: &str, ttl: Duration, unavailable_ttl: Duration) -> Self {
        Self {
            token: token.to_string(),
            ttl,
            unavailable_ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached verdict for `url` without fetching; `None` when the file must be fetched.
    pub fn cached(&self, url: &Url) -> Option<Verdict> {
        let slot = self.entries.lock().ok()?.get(&origin(url))?.clone();
        let guard = slot.try_lock().ok()?;
        let cached = guard.as_ref()?;
        (cached.expires > Instant::now()).then(|| verdict(&cached.rules, url))
    }

    /// The verdict for `url`, calling `fetch` for the origin's robots.txt if it is not cached.
    pub async fn verdict<F, Fut>(&self, url: &Url, fetch: F) -> Lookup
    where
        F: FnOnce(Url) -> Fut,
        Fut: std::future::Future<Output = RobotsFile>,
    {
        let key = origin(url);
        let slot = {
            let mut entries = self.entries.lock().expect("robots lock");
            if entries.len() >= SWEEP_AT {
                let now = Instant::now();
                entries.retain(|_, e| {
                    e.try_lock()
                        .map(|c| c.as_ref().is_some_and(|c| c.expires > now))
                        .unwrap_or(true)
                });
            }
            entries.entry(key).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.expires > Instant::now() {
                return Lookup {
                    verdict: verdict(&c.rules, url),
                    sitemaps: Vec::new(),
                };
            }
        }
        let mut robots_url = url.clone();
        robots_url.set_path("/robots.txt");
        robots_url.set_query(None);
        robots_url.set_fragment(None);
        let mut sitemaps = Vec::new();
        let (rules, ttl) = match fetch(robots_url).await {
            RobotsFile::Body(body) => match Robot::new(&self.token, &body) {
                Ok(mut robot) => {
                    sitemaps = std::mem::take(&mut robot.sitemaps);
                    sitemaps.truncate(MAX_SITEMAP_LINES);
                    (Rules::Parsed(Box::new(robot)), self.ttl)
                }
                // An unparsable file is treated like a missing one, as browsers of robots do.
                Err(_) => (Rules::All, self.ttl),
            },
            RobotsFile::Missing => (Rules::All, self.ttl),
            RobotsFile::Unavailable(why) => (Rules::Unavailable(why), self.unavailable_ttl),
            RobotsFile::Blocked(why) => (Rules::Blocked(why), self.unavailable_ttl),
        };
        let rules = Arc::new(rules);
        let v = verdict(&rules, url);
        *guard = Some(Cached {
            rules,
            expires: Instant::now() + ttl,
        });
        Lookup {
            verdict: v,
            sitemaps,
        }
    }
}

fn verdict(rules: &Rules, url: &Url) -> Verdict {
    match rules {
        Rules::All => Verdict::Allowed { crawl_delay: None },
        Rules::Unavailable(why) => Verdict::Unavailable(why.clone()),
        Rules::Blocked(why) => Verdict::Blocked(why.clone()),
        Rules::Parsed(robot) => {
            // Match on the path and query only, as RFC 9309 specifies.
            let mut target = url.path().to_string();
            if let Some(q) = url.query() {
                target.push('?');
                target.push_str(q);
            }
            if robot.allowed(&target) {
                Verdict::Allowed {
                    crawl_delay: robot
                        .delay
                        .filter(|d| d.is_finite() && *d > 0.0)
                        .map(|d| Duration::from_secs_f32(d.min(86_400.0))),
                }
            } else {
                Verdict::Disallowed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    const FILE: &[u8] = b"Sitemap: http://s.test/sitemap.xml\nUser-agent: OtherBot\nDisallow: /\n\nUser-agent: *\nDisallow: /private/\nAllow: /private/open\nCrawl-delay: 2\n";

    #[tokio::test]
    async fn rules_and_crawl_delay_apply_and_the_file_is_fetched_once() {
        let cache = RobotsCache::new("SluiceBot", Duration::from_secs(60), Duration::from_secs(1));
        let fetches = AtomicUsize::new(0);
        let fetch = |u: Url| {
            assert_eq!(u.as_str(), "http://s.test/robots.txt");
            fetches.fetch_add(1, Ordering::SeqCst);
            async { RobotsFile::Body(FILE.to_vec()) }
        };
        assert_eq!(
            cache
                .verdict(&url("http://s.test/a?b=1"), fetch)
                .await
                .verdict,
            Verdict::Allowed {
                crawl_delay: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            cache
                .verdict(&url("http://s.test/private/x"), fetch)
                .await
                .verdict,
            Verdict::Disallowed
        );
        assert!(matches!(
            cache
                .verdict(&url("http://s.test/private/open"), fetch)
                .await
                .verdict,
            Verdict::Allowed { .. }
        ));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // The sitemap lines come with the lookup that fetched the file, and only with it.
        let first = RobotsCache::new("SluiceBot", Duration::from_secs(60), Duration::from_secs(1));
        let fetched = first.verdict(&url("http://s.test/"), fetch).await;
        assert_eq!(fetched.sitemaps, ["http://s.test/sitemap.xml"]);
        assert!(first
            .verdict(&url("http://s.test/b"), fetch)
            .await
            .sitemaps
            .is_empty());
        assert_eq!(
            cache.cached(&url("http://s.test/private/y")),
            Some(Verdict::Disallowed)
        );
        // Another port is another origin.
        assert_eq!(cache.cached(&url("http://s.test:8080/private/y")), None);
    }

    #[tokio::test]
    async fn missing_file_allows_and_server_errors_disallow() {
        let cache = RobotsCache::new(
            "SluiceBot",
            Duration::from_secs(60),
            Duration::from_millis(50),
        );
        let v = cache
            .verdict(&url("http://a.test/x"), |_| async { RobotsFile::Missing })
            .await
            .verdict;
        assert_eq!(v, Verdict::Allowed { crawl_delay: None });
        let v = cache
            .verdict(&url("http://b.test/x"), |_| async {
                RobotsFile::Unavailable("503".into())
            })
            .await
            .verdict;
        assert!(matches!(v, Verdict::Unavailable(_)));
        // The failure is cached briefly, then fetched again.
        tokio::time::sleep(Duration::from_millis(80)).await;
        let v = cache
            .verdict(&url("http://b.test/x"), |_| async { RobotsFile::Missing })
            .await
            .verdict;
        assert_eq!(v, Verdict::Allowed { crawl_delay: None });
    }
}
