use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration};

/// `crawl` settings in pipeline.yaml. Every field has a default that is safe on the real web.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The User-Agent header; name the crawler and a contact URL.
    pub user_agent: String,
    /// The product token matched against robots.txt groups (default: the user agent up to `/`).
    pub robots_agent: Option<String>,
    /// Time to set up a connection.
    pub connect_timeout: HumanDuration,
    /// Time for a whole response, body included.
    pub timeout: HumanDuration,
    /// Bodies are cut here (after content decoding, so a gzip bomb stops here too).
    pub max_body: ByteSize,
    /// Media types whose body is kept and parsed; others are recorded without a body.
    pub content_types: Vec<String>,
    /// Redirects followed per URL.
    pub max_redirects: u32,
    /// Attempts per URL for transient failures (timeouts, connection errors, 429, 5xx).
    pub fetch_attempts: u32,
    /// First backoff between attempts; doubles each time, with jitter.
    pub fetch_backoff: HumanDuration,
    /// A Retry-After longer than this is not waited for: the failure is recorded.
    pub max_retry_after: HumanDuration,
    /// Requests in flight per process, across all domains.
    pub fetch_concurrency: usize,
    /// Bytes of pages in memory at most: each request reserves four times its body's bytes
    /// as they arrive (the body and its decoded text) and encodes its record within that;
    /// requests wait for room, and a body without room in time is cut and flagged truncated.
    /// Half of it (at least one body of `max_body`) is for bodies over 64 KiB, the rest for
    /// smaller ones. At least four times `max_body` plus 288 KiB.
    pub max_fetch_memory: ByteSize,
    /// Page records produced but not yet acknowledged by the broker, in bytes; fetching
    /// waits when they reach this.
    pub max_pending: ByteSize,
    /// Requests in flight per registrable domain across all crawl replicas (etcd slots).
    pub per_domain_concurrency: u32,
    /// Minimum time between two requests to the same host.
    pub min_delay: HumanDuration,
    /// With a `deferred` topic: a URL whose host would make it wait longer than this is
    /// deferred there (and comes back when its turn is near) instead of waiting in the stage.
    pub max_domain_wait: HumanDuration,
    /// With a `deferred` topic: URLs of one domain waiting in this process at most; more are
    /// deferred.
    pub max_domain_backlog: usize,
    /// Longest Crawl-delay from robots.txt that is honoured (a larger one is capped here).
    pub max_crawl_delay: HumanDuration,
    /// How long a crashed replica's domain slots stay taken.
    pub slot_lease_ttl: HumanDuration,
    /// Check robots.txt (default true).
    pub robots: bool,
    /// How long a fetched robots.txt is trusted.
    pub robots_cache_ttl: HumanDuration,
    /// Refuse addresses in loopback, private, link-local, unspecified and similar ranges
    /// unless true (local test sites need it).
    pub allow_private_addresses: bool,
    /// Host → `address:port` overrides, like curl's `--resolve`.
    pub resolve: BTreeMap<String, String>,
    /// Links deeper than this are not followed (seeds are depth 0).
    pub max_depth: u32,
    /// Which discovered links are passed on.
    pub scope: Scope,
    /// Hosts allowed when `scope: hosts` (`example.org` also allows its subdomains).
    pub hosts: Vec<String>,
    /// Skip `rel=nofollow` links and pages with `<meta name=robots content=nofollow>`.
    pub respect_nofollow: bool,
    /// Links taken from one page at most (a hostile page may hold millions).
    pub max_links_per_page: usize,
    /// Pages fetched per registrable domain per recrawl interval, across replicas (counted in
    /// memcached); beyond it a URL's page record says `domain_budget_exhausted`. Bounds what a
    /// crawler trap or a URL explosion can cost. 0: no limit.
    pub max_pages_per_domain: u64,
    /// URLs passed on from sitemaps (robots.txt `Sitemap:` lines, sitemap indexes, and
    /// sitemaps submitted to url-in) per registrable domain per recrawl interval, across
    /// replicas. 0: sitemaps pass nothing on, and robots.txt sitemaps are not followed.
    pub max_sitemap_urls: u64,
    /// A sitemap is read up to this many bytes, downloaded and again decompressed (the
    /// protocol allows 50 MB; a larger file is read in part and its page record flagged
    /// truncated).
    pub max_sitemap_bytes: ByteSize,
    /// Links remembered per process so a link emitted within `recrawl_after` is not sent to
    /// url-in again (about 20 bytes each; 0 sends every link of every page).
    pub link_cache: usize,
    /// Prefix of the recrawl-clock keys in memcached. The clock belongs to the normalize-dedup
    /// stage feeding this crawl, which sets it; only a crawl fed from outside sets it here.
    pub key_prefix: Option<String>,
    /// How long the recrawl clock is kept; owned like `key_prefix`.
    pub recrawl_after: Option<HumanDuration>,
}

/// Which discovered links are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Links within the page's registrable domain.
    Domain,
    /// Links to the hosts listed in `hosts`.
    Hosts,
    /// Every http(s) link.
    Any,
}

fn secs(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            user_agent: concat!(
                "SluiceBot/",
                env!("CARGO_PKG_VERSION"),
                " (+https://github.com/sluice-crawler/sluice)"
            )
            .into(),
            robots_agent: None,
            connect_timeout: secs(10),
            timeout: secs(30),
            max_body: ByteSize(2 << 20),
            content_types: vec!["text/html".into(), "application/xhtml+xml".into()],
            max_redirects: 5,
            fetch_attempts: 3,
            fetch_backoff: secs(1),
            max_retry_after: secs(120),
            fetch_concurrency: 128,
            max_pending: ByteSize(2 << 20),
            max_fetch_memory: ByteSize(128 << 20),
            per_domain_concurrency: 2,
            min_delay: secs(1),
            max_domain_wait: secs(3),
            max_domain_backlog: 8,
            max_crawl_delay: secs(30),
            slot_lease_ttl: secs(10),
            robots: true,
            robots_cache_ttl: secs(3600),
            allow_private_addresses: false,
            resolve: BTreeMap::new(),
            max_depth: 5,
            scope: Scope::Domain,
            hosts: Vec::new(),
            respect_nofollow: true,
            max_links_per_page: 5000,
            max_pages_per_domain: 100_000,
            max_sitemap_urls: 50_000,
            max_sitemap_bytes: ByteSize(10 << 20),
            link_cache: 200_000,
            key_prefix: None,
            recrawl_after: None,
        }
    }
}

impl Settings {
    /// Checks what serde cannot: values that parse but make no sense.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let fail = |field, msg: &str| Err((field, msg.to_string()));
        if self.per_domain_concurrency == 0 {
            return fail(
                "per_domain_concurrency",
                "per_domain_concurrency must be at least 1",
            );
        }
        if self.fetch_concurrency == 0 {
            return fail("fetch_concurrency", "fetch_concurrency must be at least 1");
        }
        if self.max_domain_backlog == 0 {
            return fail(
                "max_domain_backlog",
                "max_domain_backlog must be at least 1",
            );
        }
        let needed = crate::memory::MemoryBudget::minimum(self.max_body.0 as usize) as u64;
        if self.max_fetch_memory.0 < needed {
            return Err((
                "max_fetch_memory",
                format!(
                    "max_fetch_memory must be at least {needed} bytes: room for one body of \
                     max_body ({} times it, plus {} KiB) and one small page",
                    crate::memory::BODY_FACTOR,
                    crate::memory::RECORD_ROOM >> 10
                ),
            ));
        }
        if self.fetch_attempts == 0 {
            return fail("fetch_attempts", "fetch_attempts must be at least 1");
        }
        if self.user_agent.trim().is_empty() {
            return fail("user_agent", "user_agent must not be empty");
        }
        if self.scope == Scope::Hosts && self.hosts.is_empty() {
            return fail("scope", "scope: hosts needs a `hosts` list");
        }
        if self.slot_lease_ttl.0 < Duration::from_secs(2) {
            return fail("slot_lease_ttl", "slot_lease_ttl must be at least 2s");
        }
        for (host, addr) in &self.resolve {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err((
                    "resolve",
                    format!(
                        "resolve: `{host}: {addr}` is not an address:port (e.g. 127.0.0.1:8080)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The robots.txt product token.
    pub fn robots_token(&self) -> String {
        self.robots_agent.clone().unwrap_or_else(|| {
            self.user_agent
                .split(['/', ' '])
                .next()
                .unwrap_or("SluiceBot")
                .to_string()
        })
    }
}

impl sluice_config::Validate for Settings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.check()
    }
}
