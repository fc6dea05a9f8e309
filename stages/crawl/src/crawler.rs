//! One URL in, one page record out (plus the links found on it, as a few `url-in` messages).
//! A message of several URLs of one domain (a page's new links from normalize-dedup, or a
//! deferred bundle back, `bundle.rs`) is crawled as far as the domain's turns allow now, the
//! rest deferred again as one record.
//!
//! A fetch attempt walks the redirect chain hop by hop; every hop is checked for scheme,
//! scope, blocked addresses and robots.txt, and waits for its domain's slot and its host's
//! turn. Transient failures (timeouts, connection errors, 429, 5xx, robots.txt unavailable)
//! are retried here with backoff, the domain slot released while waiting. When the attempts
//! run out the failure is recorded in the page record: every URL taken from the input ends
//! as a page record, and only undecodable input goes to the dead-letter topic.
//!
//! A URL flagged as a sitemap is fetched the same way, and the URLs it lists go on as
//! discovered links (`sitemap.rs`), at most `max_sitemap_urls` per domain per recrawl
//! interval; robots.txt's `Sitemap:` lines go on as sitemaps when the file is fetched.
//!
//! The page record goes to the runtime's emitter before the request permit is let go: the
//! `output` port's budget is `max_pending`, so a page waits there while too many bytes are
//! unacknowledged, and pages in memory take at most `max_fetch_memory` (`memory.rs`) plus
//! `max_pending`, whatever the broker's pace. Links are remembered (`seen.rs`) only once the
//! emitter says they are delivered.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use sluice_bus::{now_ms, Record};
use sluice_recrawl::Dedup;
use sluice_runtime::emit::Recall;
use sluice_runtime::metrics::StageMetrics;
use sluice_runtime::services::SlotError;
use sluice_runtime::stage::{Emitter, Output, Processor, StageError};
use sluice_topics::{Contract, CrawlUrl, FetchError, Page, Redirect, UrlIn, Validators};
use sluice_web::domain::registrable_domain_of;
use std::time::Instant as StdInstant;
use tokio::sync::OwnedSemaphorePermit;
use url::Url;

use crate::bundle::{self, Bundler};
use crate::charset;
use crate::client::AddressGuard;
use crate::fetch::{self, Ask, BodyPolicy, Failure, Response};
use crate::links;
use crate::memory::{MemoryBudget, Reservation, RECORD_ROOM};
use crate::politeness::{DomainPermit, Politeness};
use crate::robots::{Lookup, RobotsCache, RobotsFile, Verdict};
use crate::schedule::Schedule;
use crate::seen::SeenLinks;
use crate::settings::{Scope, Settings};
use crate::sitemap;

/// Largest robots.txt read (RFC 9309 asks for at least 500 KiB).
const ROBOTS_MAX_BYTES: u64 = 512 << 10;

/// Response headers copied into the page record.
const KEPT_HEADERS: [&str; 3] = ["etag", "last-modified", "content-language"];

/// Where a crawl's outputs go.
pub struct Outputs {
    /// Page records (its budget is `max_pending`).
    pub pages: Output,
    /// Discovered links (`url-in`), if wired.
    pub discovered: Option<Output>,
    /// URLs whose domain is busy for a while, with their due time, if wired (a `delay` stage
    /// passes them back to the input).
    pub deferred: Option<Output>,
}

/// The crawl stage's processor.
pub struct Crawler {
    settings: Settings,
    client: reqwest::Client,
    guard: AddressGuard,
    robots: RobotsCache,
    politeness: Arc<Politeness>,
    recrawl: Dedup,
    outputs: Outputs,
    metrics: StageMetrics,
    /// Links emitted recently, not sent again.
    seen: SeenLinks,
    /// Bytes of the pages in memory (`max_fetch_memory`).
    memory: MemoryBudget,
    /// When deferred URLs come back, per domain.
    schedule: Schedule,
    /// Deferred URLs being gathered into one record per domain.
    bundler: Bundler,
}

/// What the attempts at one URL learn besides its page.
#[derive(Default)]
struct Visit {
    /// The domain's page budget was charged (once per URL, when a request is about to go).
    charged: bool,
    /// `Sitemap:` lines of robots.txt files fetched on the way.
    robots_sitemaps: Vec<String>,
    /// A sitemap's body as sent (maybe gzip), kept apart from the page record.
    sitemap_body: Option<Vec<u8>>,
}

/// What a fetched page holds until its record is handed to the output: the request permit
/// (bounding requests in flight) and its share of the memory budget (bounding their bytes).
#[derive(Default)]
struct Held {
    request: Option<OwnedSemaphorePermit>,
    memory: Option<Reservation>,
}

/// How one attempt ended.
enum Attempt {
    /// Final: record it.
    Done(Page),
    /// Transient: try again after the given delay (or the backoff), or record this page.
    Retry(Page, Option<Duration>),
}

fn slot_error(e: SlotError) -> StageError {
    StageError::unavailable("etcd", anyhow::anyhow!(e))
}

/// A page record for `item` with nothing fetched yet.
fn blank(item: &CrawlUrl) -> Page {
    Page {
        url: item.url.clone(),
        final_url: item.url.clone(),
        redirects: Vec::new(),
        status: None,
        content_type: None,
        charset: None,
        fetched_at_ms: now_ms(),
        fetch_ms: 0,
        headers: BTreeMap::new(),
        body: None,
        body_bytes: 0,
        truncated: false,
        error: None,
        depth: item.depth,
        domain: item.domain.clone(),
        source: item.source.clone(),
        links_out: 0,
    }
}

fn error(page: &mut Page, code: &str, message: impl Into<String>) {
    page.error = Some(FetchError {
        code: code.to_string(),
        message: message.into(),
    });
}

impl Crawler {
    /// A crawler from its parts (built once per process).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        client: reqwest::Client,
        guard: AddressGuard,
        politeness: Arc<Politeness>,
        recrawl: Dedup,
        outputs: Outputs,
        metrics: StageMetrics,
    ) -> Self {
        let seen = SeenLinks::new(settings.link_cache, recrawl.recrawl_after());
        let robots = RobotsCache::new(
            &settings.robots_token(),
            settings.robots_cache_ttl.0,
            settings.fetch_backoff.0,
        );
        Self {
            schedule: Schedule::default(),
            bundler: Bundler::default(),
            memory: MemoryBudget::new(
                settings.max_fetch_memory.0 as usize,
                settings.max_body.0 as usize,
            ),
            settings,
            client,
            guard,
            robots,
            politeness,
            recrawl,
            outputs,
            metrics,
            seen,
        }
    }

    /// Whether a link (or a redirect hop) is inside the crawl's scope for a page of `domain`.
    fn in_scope(&self, url: &Url, domain: &str) -> bool {
        match self.settings.scope {
            Scope::Any => true,
            Scope::Domain => registrable_domain_of(url).as_deref() == Some(domain),
            Scope::Hosts => {
                let host = url.host_str().unwrap_or("").to_ascii_lowercase();
                self.settings.hosts.iter().any(|h| {
                    let h = h.to_ascii_lowercase();
                    host == h || host.ends_with(&format!(".{h}"))
                })
            }
        }
    }

    /// The validators to revalidate `item` with next time: those of this response when it
    /// answered the URL itself (no redirect) with 200 or 304, else none; a 304 without any
    /// keeps the ones it was asked with.
    fn validators_of(&self, item: &CrawlUrl, page: &Page) -> Option<Validators> {
        if !page.redirects.is_empty() || !matches!(page.status, Some(200 | 304)) {
            return None;
        }
        let header = |name: &str| page.headers.get(name).map(String::as_str);
        let fresh = Validators::from_headers(header("etag"), header("last-modified"));
        match page.status {
            Some(304) => fresh.or_else(|| item.validators.clone()),
            _ => fresh,
        }
    }

    /// How long to defer `item` rather than wait for its domain here: `None` to go ahead.
    /// A URL waits in the stage (holding a place of its window and its partition's commits)
    /// only if its host's turn is near and its domain's local backlog is short; otherwise it
    /// goes to the `deferred` topic and comes back when its turn should be near. So a few slow
    /// domains with many URLs can never fill the stage while other domains wait.
    fn defer_for(&self, item: &CrawlUrl) -> Option<Duration> {
        self.outputs.deferred.as_ref()?;
        let host = Url::parse(&item.url).ok()?.host_str()?.to_string();
        let outlook = self.politeness.outlook(&item.domain, &host);
        let max_wait = self.settings.max_domain_wait.0;
        if outlook.waiting < self.settings.max_domain_backlog && outlook.wait <= max_wait {
            return None;
        }
        // Back when its turn should be near, and no sooner than `max_domain_wait`; after the
        // domain's other deferred URLs, one turn apart (`schedule.rs`).
        let earliest = outlook.wait.saturating_sub(max_wait / 2).max(max_wait);
        Some(self.schedule.defer(&item.domain, earliest, outlook.pace))
    }

    /// Why `item` may not be fetched, if its domain has used up `max_pages_per_domain` in
    /// this recrawl interval (this page counted). Best effort: with the cache down the URL is
    /// fetched.
    async fn budget_exhausted(&self, item: &CrawlUrl) -> Option<String> {
        let max = self.settings.max_pages_per_domain;
        if max == 0 {
            return None;
        }
        match self.recrawl.count_page(&item.domain).await {
            Ok(n) if n > max => {
                self.metrics.event("over_domain_budget");
                Some(format!(
                    "{} had {max} pages fetched in this recrawl interval (max_pages_per_domain)",
                    item.domain
                ))
            }
            Ok(_) => None,
            Err(e) => {
                self.metrics.event("domain_budget_unknown");
                tracing::warn!(domain = %item.domain, error = %e, "could not count the domain's pages");
                None
            }
        }
    }

    /// Fetches `item`, retrying transient failures; returns the page and the request permit
    /// to hold until it is produced.
    async fn crawl(
        &self,
        item: &CrawlUrl,
        visit: &mut Visit,
        recall: &Recall,
    ) -> Result<(Page, Held), StageError> {
        let started = Instant::now();
        let url = match Url::parse(&item.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            Ok(u) => {
                let mut page = blank(item);
                error(&mut page, "unsupported_url", format!("cannot fetch `{u}`"));
                return Ok((page, Held::default()));
            }
            Err(e) => {
                let mut page = blank(item);
                error(&mut page, "unsupported_url", format!("`{}`: {e}", item.url));
                return Ok((page, Held::default()));
            }
        };
        let mut attempt = 1;
        loop {
            let (outcome, held) = self.attempt(item, &url, recall, visit).await?;
            let (mut page, wait) = match outcome {
                Attempt::Done(page) => (page, None),
                Attempt::Retry(page, after) if attempt < self.settings.fetch_attempts => {
                    let backoff = self.backoff(attempt);
                    let wait = after.map_or(backoff, |a| a.max(backoff));
                    if wait <= self.settings.max_retry_after.0 {
                        (page, Some(wait))
                    } else {
                        (page, None)
                    }
                }
                Attempt::Retry(page, _) => (page, None),
            };
            match wait {
                Some(wait) => {
                    drop(held);
                    self.metrics.event("retry");
                    tracing::debug!(url = %url, attempt, ?wait, "transient failure, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = recall.recalled() => return Err(StageError::Abandoned),
                    }
                    attempt += 1;
                }
                None => {
                    page.fetch_ms = started.elapsed().as_millis() as u64;
                    return Ok((page, held));
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.fetch_backoff.0 * 2u32.saturating_pow(attempt - 1);
        base.mul_f64(rand::rng().random_range(0.75..1.25))
    }

    /// One attempt: the redirect chain up to a final response or failure. Also returns the
    /// request permit of the last response, so the caller can hold it until the page is
    /// produced: that bounds the bodies in memory by `fetch_concurrency` even when the broker
    /// acknowledges slowly.
    async fn attempt(
        &self,
        item: &CrawlUrl,
        url: &Url,
        recall: &Recall,
        visit: &mut Visit,
    ) -> Result<(Attempt, Held), StageError> {
        let mut page = blank(item);
        let mut held = Held::default();
        let mut current = url.clone();
        let mut visited: HashSet<String> = HashSet::from([current.to_string()]);
        let mut permit: Option<DomainPermit> = None;
        let result = loop {
            if let Err(blocked) = self.guard.check_url(&current) {
                error(&mut page, "blocked_address", blocked.to_string());
                break Attempt::Done(page);
            }
            let Some(domain) = registrable_domain_of(&current) else {
                error(&mut page, "unsupported_url", format!("no host: {current}"));
                break Attempt::Done(page);
            };
            if permit.as_ref().map(|p| p.domain()) != Some(domain.as_str()) {
                if let Some(old) = permit.take() {
                    old.release().await;
                }
                // Waiting for the domain is only waiting: give the record back if recalled.
                permit = Some(tokio::select! {
                    entered = self.politeness.enter(&domain) => entered.map_err(slot_error)?,
                    _ = recall.recalled() => return Err(StageError::Abandoned),
                });
            }
            let permit_ref = permit.as_ref().expect("entered above");
            let host = current.host_str().unwrap_or("").to_string();
            let crawl_delay = if self.settings.robots {
                let lookup = self.robots_verdict(&current, permit_ref).await;
                visit.robots_sitemaps.extend(lookup.sitemaps);
                match lookup.verdict {
                    Verdict::Allowed { crawl_delay } => crawl_delay,
                    Verdict::Disallowed => {
                        error(
                            &mut page,
                            "robots_disallowed",
                            format!("robots.txt disallows {current}"),
                        );
                        break Attempt::Done(page);
                    }
                    Verdict::Unavailable(why) => {
                        error(&mut page, "robots_unavailable", why);
                        break Attempt::Retry(page, None);
                    }
                    Verdict::Blocked(why) => {
                        error(&mut page, "blocked_address", why);
                        break Attempt::Done(page);
                    }
                }
            } else {
                None
            };
            if !visit.charged {
                visit.charged = true;
                if let Some(why) = self.budget_exhausted(item).await {
                    error(&mut page, "domain_budget_exhausted", why);
                    break Attempt::Done(page);
                }
            }
            let delay = self.politeness.delay_for(crawl_delay);
            let request = tokio::select! {
                request = permit_ref.request(&host, delay) => request,
                _ = recall.recalled() => return Err(StageError::Abandoned),
            };
            page.fetched_at_ms = now_ms();
            let (max_body, policy) = if item.sitemap {
                (self.settings.max_sitemap_bytes.0, BodyPolicy::Any)
            } else {
                let types = &self.settings.content_types;
                (self.settings.max_body.0, BodyPolicy::Types(types))
            };
            // The last crawl's validators belong to the URL as asked, not to a redirect target.
            let conditional = if page.redirects.is_empty() {
                item.validators.as_ref()
            } else {
                None
            };
            // Waiting for memory must end well before the response's own timeout does.
            let memory_deadline = StdInstant::now() + self.settings.timeout.0 / 2;
            let ask = Ask {
                max_body,
                policy,
                validators: conditional,
                memory: Some((&self.memory, memory_deadline)),
            };
            let fetched = fetch::get(&self.client, &current, ask).await;
            held = Held {
                request: Some(request),
                memory: None,
            };
            let mut response = match fetched {
                Ok(r) => r,
                Err(failure) => {
                    let transient = failure.transient();
                    record_failure(&mut page, failure);
                    break if transient {
                        Attempt::Retry(page, None)
                    } else {
                        Attempt::Done(page)
                    };
                }
            };
            let status = response.status;
            if status.is_redirection() {
                if let Some(next) = response.location(&current) {
                    page.status = Some(status.as_u16());
                    let next = match next {
                        Ok(n) => n,
                        Err(why) => {
                            error(&mut page, "bad_redirect", why);
                            break Attempt::Done(page);
                        }
                    };
                    page.redirects.push(Redirect {
                        url: current.to_string(),
                        status: status.as_u16(),
                        location: next.to_string(),
                    });
                    if !matches!(next.scheme(), "http" | "https") {
                        error(&mut page, "bad_redirect", format!("redirect to `{next}`"));
                        break Attempt::Done(page);
                    }
                    if !visited.insert(next.to_string()) {
                        error(
                            &mut page,
                            "redirect_loop",
                            format!("{next} was already visited"),
                        );
                        break Attempt::Done(page);
                    }
                    if page.redirects.len() > self.settings.max_redirects as usize {
                        error(
                            &mut page,
                            "too_many_redirects",
                            format!("more than {} redirects", self.settings.max_redirects),
                        );
                        break Attempt::Done(page);
                    }
                    if !self.in_scope(&next, &item.domain) {
                        error(&mut page, "out_of_scope", format!("redirect to {next}"));
                        break Attempt::Done(page);
                    }
                    current = next;
                    page.final_url = current.to_string();
                    // A redirect has no body to keep: let the request permit go before
                    // waiting for the next hop's domain, robots.txt and turn, or enough
                    // redirects at once would hold every permit while waiting for one.
                    held = Held::default();
                    continue;
                }
            }
            let retry_after = response.retry_after();
            let transient = status.as_u16() == 429 || status.is_server_error();
            held.memory = response.reservation.take();
            if item.sitemap {
                // Read by `listed`, not stored: the page record says what was fetched.
                visit.sitemap_body = response.body.take();
                page.body_bytes = visit.sitemap_body.as_ref().map_or(0, |b| b.len() as u64);
            }
            self.fill(&mut page, &current, response);
            if transient {
                error(&mut page, "http_status", format!("HTTP {status}"));
                break Attempt::Retry(page, retry_after);
            }
            let not_modified = status == reqwest::StatusCode::NOT_MODIFIED && conditional.is_some();
            if !status.is_success() && !not_modified {
                error(&mut page, "http_status", format!("HTTP {status}"));
            }
            break Attempt::Done(page);
        };
        if let Some(p) = permit {
            p.release().await;
        }
        Ok((result, held))
    }

    /// The robots.txt verdict for `url`, fetching the file under the current permit.
    async fn robots_verdict(&self, url: &Url, permit: &DomainPermit) -> Lookup {
        if let Some(verdict) = self.robots.cached(url) {
            return Lookup {
                verdict,
                sitemaps: Vec::new(),
            };
        }
        let host = url.host_str().unwrap_or("").to_string();
        self.robots
            .verdict(url, |robots_url| async move {
                let _turn = permit.request(&host, self.politeness.delay_for(None)).await;
                self.fetch_robots(robots_url).await
            })
            .await
    }

    /// GETs a robots.txt, following up to five redirects (RFC 9309 §2.3.1.2).
    async fn fetch_robots(&self, mut url: Url) -> RobotsFile {
        for _ in 0..=5 {
            if let Err(b) = self.guard.check_url(&url) {
                return RobotsFile::Blocked(b.to_string());
            }
            let ask = Ask::new(ROBOTS_MAX_BYTES, BodyPolicy::Any);
            match fetch::get(&self.client, &url, ask).await {
                Err(f) if f.code == "blocked_address" => return RobotsFile::Blocked(f.message),
                Err(f) => return RobotsFile::Unavailable(format!("robots.txt: {}", f.message)),
                Ok(r) if r.status.is_redirection() => match r.location(&url) {
                    Some(Ok(next)) => url = next,
                    _ => return RobotsFile::Missing,
                },
                Ok(r) if r.status.is_success() => {
                    return RobotsFile::Body(r.body.unwrap_or_default())
                }
                Ok(r) if r.status.as_u16() == 429 || r.status.is_server_error() => {
                    return RobotsFile::Unavailable(format!("robots.txt: HTTP {}", r.status))
                }
                Ok(_) => return RobotsFile::Missing,
            }
        }
        // RFC 9309: more redirects than that may be treated as unavailable-with-no-rules.
        RobotsFile::Missing
    }

    /// Copies a final response into the page record.
    fn fill(&self, page: &mut Page, url: &Url, response: Response) {
        page.status = Some(response.status.as_u16());
        page.final_url = url.to_string();
        let content_type = response.content_type().map(str::to_string);
        page.content_type = content_type.as_deref().map(fetch::media_type);
        for name in KEPT_HEADERS {
            if let Some(v) = response.headers.get(name).and_then(|v| v.to_str().ok()) {
                page.headers.insert(name.to_string(), v.to_string());
            }
        }
        page.truncated = response.truncated;
        if let Some(body) = response.body {
            page.body_bytes = body.len() as u64;
            let tld = url
                .host_str()
                .and_then(|h| h.rsplit('.').next())
                .map(str::as_bytes);
            let decoded = charset::decode(&body, content_type.as_deref(), tld);
            if page.content_type.is_none() {
                page.content_type = Some("text/html".into());
            }
            page.charset = Some(decoded.charset.to_string());
            page.body = Some(decoded.text);
        }
    }

    /// Discovered links of a fetched page, as url-in messages, leaving out those this
    /// process emitted recently. Sets `links_out` to all followable links.
    fn discover(&self, item: &CrawlUrl, page: &mut Page) -> Vec<UrlIn> {
        if self.outputs.discovered.is_none() {
            return Vec::new();
        }
        let (Some(body), Some(status)) = (&page.body, page.status) else {
            return Vec::new();
        };
        if !(200..300).contains(&status) || item.depth >= self.settings.max_depth {
            return Vec::new();
        }
        let Ok(base) = Url::parse(&page.final_url) else {
            return Vec::new();
        };
        let found = links::extract(body, &base, self.settings.max_links_per_page);
        if found.meta_nofollow && self.settings.respect_nofollow {
            self.metrics.event("meta_nofollow");
            return Vec::new();
        }
        let followable: Vec<String> = found
            .links
            .into_iter()
            .filter(|l| !(l.nofollow && self.settings.respect_nofollow))
            .filter(|l| self.in_scope(&l.url, &item.domain))
            .map(|l| l.url.into())
            .collect();
        page.links_out = followable.len() as u32;
        let links = followable.into_iter().map(|url| (url, false));
        self.unseen(links, item.depth + 1, &page.final_url)
    }

    /// url-in messages for `urls` (each with whether it is a sitemap), at `depth`, found on
    /// `source`, leaving out those this process emitted recently.
    fn unseen(
        &self,
        urls: impl IntoIterator<Item = (String, bool)>,
        depth: u32,
        source: &str,
    ) -> Vec<UrlIn> {
        urls.into_iter()
            .filter(|(url, _)| !self.seen.contains(url))
            .map(|(url, sitemap)| UrlIn {
                url,
                depth,
                source: Some(source.to_string()),
                sitemap,
            })
            .collect()
    }

    /// The largest page record to encode: the topic's limit and, for a body in memory, what
    /// its reservation holds beside the decoded text (grown first if the budget has room).
    fn record_limit(&self, page: &Page, memory: Option<&mut Reservation>) -> usize {
        let topic = self.outputs.pages.record_limit();
        let (Some(r), Some(text)) = (memory, page.body.as_ref()) else {
            return topic;
        };
        let text = text.len();
        // The record is the text escaped, plus the fields around it.
        r.try_grow_to(text + text + text / 8 + RECORD_ROOM);
        topic.min(r.bytes().saturating_sub(text))
    }

    /// The URLs a fetched sitemap lists, as url-in messages at the sitemap's own depth (a
    /// sitemap is a list of the site's pages, not a page one link further): further sitemaps
    /// first, then pages, in scope, within what is left of the domain's `max_sitemap_urls`.
    /// An unreadable sitemap is recorded as the page's error.
    async fn listed(
        &self,
        item: &CrawlUrl,
        page: &mut Page,
        body: Option<Vec<u8>>,
        memory: Option<&mut Reservation>,
    ) -> Vec<UrlIn> {
        if self.outputs.discovered.is_none() || !matches!(page.status, Some(200..=299)) {
            return Vec::new();
        }
        let Some(body) = body else {
            return Vec::new();
        };
        let mut cap = self.settings.max_sitemap_bytes.0 as usize;
        if let Some(r) = memory {
            // The text (decompressed from a gzip file, up to the cap) and the URLs read from
            // it, beside the raw body.
            let text = if sitemap::is_gzip(&body) {
                cap
            } else {
                body.len()
            };
            if !r.try_grow_to(body.len() + 2 * text) {
                cap = r.bytes().saturating_sub(body.len()) / 2;
            }
        }
        let listing = match sitemap::read(&body, cap) {
            Ok(l) => l,
            Err(e) => {
                self.metrics.event("bad_sitemap");
                error(page, "bad_sitemap", e.to_string());
                return Vec::new();
            }
        };
        drop(body);
        page.truncated |= listing.truncated;
        let mut entries: Vec<(String, bool)> = listing
            .sitemaps
            .into_iter()
            .map(|u| (u, true))
            .chain(listing.pages.into_iter().map(|u| (u, false)))
            .filter(|(u, _)| Url::parse(u).is_ok_and(|u| self.in_scope(&u, &item.domain)))
            .collect();
        let allowed = self.sitemap_allowance(&item.domain, entries.len()).await;
        if allowed < entries.len() {
            self.metrics.event("over_sitemap_budget");
            page.truncated = true;
            entries.truncate(allowed);
        }
        self.metrics.event("sitemap_read");
        page.links_out = entries.len() as u32;
        self.unseen(entries, item.depth, &page.final_url)
    }

    /// How many of `wanted` sitemap entries `domain` may still pass on in this recrawl
    /// interval (`max_sitemap_urls`, counted across replicas). Best effort: with the cache
    /// down a sitemap passes on up to the limit by itself.
    async fn sitemap_allowance(&self, domain: &str, wanted: usize) -> usize {
        let max = self.settings.max_sitemap_urls;
        if wanted == 0 {
            return 0;
        }
        match self.recrawl.count_sitemap_urls(domain, wanted as u64).await {
            Ok(total) => {
                let before = total.saturating_sub(wanted as u64);
                max.saturating_sub(before).min(wanted as u64) as usize
            }
            Err(e) => {
                self.metrics.event("sitemap_budget_unknown");
                tracing::warn!(domain, error = %e, "could not count the domain's sitemap URLs");
                wanted.min(max as usize)
            }
        }
    }

    /// robots.txt `Sitemap:` lines found while fetching `item`, as sitemaps one level below
    /// it, in scope and within `max_depth`; none when `max_sitemap_urls` is 0.
    fn robots_sitemaps(&self, item: &CrawlUrl, lines: Vec<String>) -> Vec<UrlIn> {
        if self.outputs.discovered.is_none()
            || self.settings.max_sitemap_urls == 0
            || item.depth >= self.settings.max_depth
        {
            return Vec::new();
        }
        let sitemaps = lines
            .into_iter()
            .filter_map(|line| Url::parse(line.trim()).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .filter(|u| self.in_scope(u, &item.domain))
            .map(|u| (String::from(u), true));
        self.unseen(sitemaps, item.depth + 1, &item.url)
    }
}

/// Most links in one `url-in` message.
const LINKS_PER_MESSAGE: usize = 256;
/// About the most bytes of one `url-in` message of links.
const LINK_MESSAGE_BYTES: usize = 64 << 10;

/// The `url-in` messages for the links found on a page: arrays of up to [`LINKS_PER_MESSAGE`]
/// links and about [`LINK_MESSAGE_BYTES`] each, so that a page's links cost the broker, and
/// normalize-dedup, a few records rather than one each (a page of 3,000 links would otherwise
/// flood both for seconds while every other domain waits behind it).
fn link_messages(links: &[UrlIn]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, link) in links.iter().enumerate() {
        let size = link.url.len() + link.source.as_ref().map_or(0, String::len) + 48;
        if i > start && (i - start == LINKS_PER_MESSAGE || bytes + size > LINK_MESSAGE_BYTES) {
            messages.push(UrlIn::encode_all(&links[start..i]));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < links.len() {
        messages.push(UrlIn::encode_all(&links[start..]));
    }
    messages
}

/// Bytes a record needs beyond its key and value (Kafka's record and batch headers), kept free
/// under a topic's limit.
const RECORD_OVERHEAD: usize = 1024;

/// The encoded page record, its body cut (and `truncated` set) until it fits a topic that takes
/// records of `limit` bytes with a key of `key_len`: a page too large for its topic is stored
/// shortened and flagged rather than refused. A record still too large with no body left goes
/// as it is (and is refused, then dead-lettered with the broker's reason).
fn encode_within(page: &mut Page, key_len: usize, limit: usize) -> (Vec<u8>, bool) {
    let budget = limit.saturating_sub(key_len + RECORD_OVERHEAD);
    let mut encoded = page.encode();
    let mut cut = false;
    while encoded.len() > budget {
        let Some(body) = page.body.as_mut().filter(|b| !b.is_empty()) else {
            break;
        };
        // Escaped in JSON a body byte may take more than one: keep the share of the body
        // that fits if the escaping is even, a little less, and look again.
        let share = budget as f64 / encoded.len() as f64;
        let mut keep = ((body.len() as f64 * share * 0.98) as usize).min(body.len() - 1);
        while !body.is_char_boundary(keep) {
            keep -= 1;
        }
        body.truncate(keep);
        page.truncated = true;
        cut = true;
        encoded = page.encode();
    }
    (encoded, cut)
}

fn record_failure(page: &mut Page, failure: Failure) {
    error(page, failure.code, failure.message);
}

impl Crawler {
    /// Several URLs of one domain: the links of a page (from normalize-dedup) or a bundle of
    /// deferred URLs back (`bundle.rs`). The URLs whose turn is near are crawled now, at once,
    /// and the rest deferred as one record: new ones after the domain's other deferred URLs
    /// (`schedule.rs`), a bundle's rest when the taken ones are about done.
    async fn resume(&self, mut items: Vec<CrawlUrl>, out: &mut Emitter) -> Result<(), StageError> {
        let back = Instant::now();
        let share = match &self.outputs.deferred {
            Some(_) => self.share_of(&items),
            None => Share {
                take: items.len(),
                due_in: Duration::ZERO,
                pace: Duration::ZERO,
            },
        };
        let mut rest = items.split_off(share.take.min(items.len()));
        let due_in = match rest.first() {
            Some(first) if !first.deferred => {
                for _ in &rest {
                    self.metrics.event("deferred");
                }
                self.schedule
                    .defer_many(&first.domain, share.due_in, share.pace, rest.len())
            }
            _ => share.due_in,
        };
        // With a `deferred` topic the share is at most `max_domain_backlog`, all queued at
        // once for their turns. A message taken whole (no `deferred` topic) must not start a
        // task for each of its URLs: as many at once as the domain may have requests in
        // flight, since the others would only wait for its gate.
        let at_once = match &self.outputs.deferred {
            Some(_) => items.len().max(1),
            None => (self.settings.per_domain_concurrency as usize).max(1),
        };
        let mut forks: Vec<Emitter> = items.iter().map(|_| out.fork()).collect();
        let mut results = Vec::with_capacity(items.len());
        for (some, their_forks) in items.chunks(at_once).zip(forks.chunks_mut(at_once)) {
            let visits = some
                .iter()
                .zip(their_forks.iter_mut())
                .map(|(item, fork)| self.visit(item, fork));
            results.extend(futures::future::join_all(visits).await);
        }
        // Recalled while waiting for their turn (a rebalance, a shutdown): those go back to
        // the delay topic with the rest, due at once, rather than the whole record being
        // replayed and the pages already done fetched again.
        let mut recalled = Vec::new();
        for (item, result) in items.into_iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(StageError::Abandoned) => recalled.push(item),
                Err(e) => return Err(e),
            }
        }
        let due_in = if recalled.is_empty() {
            due_in.saturating_sub(back.elapsed())
        } else {
            Duration::ZERO
        };
        recalled.append(&mut rest);
        for item in &mut recalled {
            item.deferred = true;
        }
        match &self.outputs.deferred {
            _ if recalled.is_empty() => Ok(()),
            Some(deferred) => {
                let record = bundle::bundle_record(deferred, &recalled, due_in);
                out.send_record(deferred, record).await
            }
            // Nowhere to put them back: the whole record is replayed.
            None => Err(StageError::Abandoned),
        }
    }

    /// How many of several URLs of a domain to take now (those whose turn is within
    /// `max_domain_wait`, within the domain's backlog), when the rest should be back (half a
    /// `max_domain_wait` ahead of the turn after the taken ones), and the host's pace.
    fn share_of(&self, items: &[CrawlUrl]) -> Share {
        let Some(host) = items
            .first()
            .and_then(|i| Url::parse(&i.url).ok())
            .and_then(|u| u.host_str().map(str::to_string))
        else {
            return Share {
                take: items.len(),
                due_in: Duration::ZERO,
                pace: Duration::ZERO,
            };
        };
        let outlook = self.politeness.outlook(&items[0].domain, &host);
        let max_wait = self.settings.max_domain_wait.0;
        let room = self
            .settings
            .max_domain_backlog
            .saturating_sub(outlook.waiting);
        let mut take = 0;
        while take < items.len().min(room) && outlook.wait + outlook.pace * take as u32 <= max_wait
        {
            take += 1;
        }
        let next_turn = outlook.wait + outlook.pace * take as u32;
        Share {
            take,
            due_in: next_turn.saturating_sub(max_wait / 2).max(max_wait / 2),
            pace: outlook.pace,
        }
    }
}

/// What [`Crawler::share_of`] decides for several URLs of a domain.
struct Share {
    take: usize,
    due_in: Duration,
    pace: Duration,
}

#[async_trait]
impl Processor for Crawler {
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError> {
        let mut items = CrawlUrl::decode_all(&record.value).map_err(|e| {
            StageError::invalid(e.code(), format!("undecodable crawl-url message: {e}"))
        })?;
        if items.len() > 1 {
            return self.resume(items, out).await;
        }
        let Some(item) = items.pop() else {
            return Ok(());
        };
        if let Some(after) = self.defer_for(&item) {
            let deferred = self
                .outputs
                .deferred
                .as_ref()
                .expect("checked by defer_for");
            self.metrics.event("deferred");
            let item = CrawlUrl {
                deferred: true,
                ..item
            };
            return self.bundler.defer(item, after, deferred, out).await;
        }
        self.visit(&item, out).await
    }
}

impl Crawler {
    /// Crawls `item` and sends its page record and links.
    async fn visit(&self, item: &CrawlUrl, out: &mut Emitter) -> Result<(), StageError> {
        let mut visit = Visit::default();
        let (mut page, mut held) = self.crawl(item, &mut visit, &out.recall()).await?;
        if page.status.is_some() {
            let validators = self.validators_of(item, &page);
            // Best effort: normalize-dedup's claim already carries a time, so a lost mark only
            // moves this URL's recrawl earlier by the time it waited in the queue.
            if let Err(e) = self
                .recrawl
                .mark(&item.url, page.fetched_at_ms, validators.as_ref())
                .await
            {
                self.metrics.event("recrawl_mark_failed");
                tracing::warn!(url = %item.url, error = %e, "could not record the fetch time");
            }
        }
        let mut links = if item.sitemap {
            let body = visit.sitemap_body.take();
            self.listed(item, &mut page, body, held.memory.as_mut())
                .await
        } else {
            self.discover(item, &mut page)
        };
        links.extend(self.robots_sitemaps(item, visit.robots_sitemaps));
        self.metrics.event(match &page.error {
            None if page.status == Some(304) => "not_modified",
            None => "fetched",
            Some(e) => match e.code.as_str() {
                "robots_disallowed" => "robots_disallowed",
                "http_status" => "http_error",
                _ => "failed",
            },
        });
        tracing::debug!(url = %item.url, status = ?page.status, error = ?page.error.as_ref().map(|e| &e.code), links = page.links_out, "crawled");
        let limit = self.record_limit(&page, held.memory.as_mut());
        let (encoded, cut) = encode_within(&mut page, item.domain.len(), limit);
        if cut {
            self.metrics.event("cut_to_fit");
            tracing::info!(url = %item.url, limit, "page body cut to fit the topic's max_message_bytes or the memory budget");
        }
        drop(page);
        if let Some(memory) = &mut held.memory {
            // Only the record and the links are left of the page.
            let links_bytes: usize = links.iter().map(|l| l.url.len() + 64).sum();
            memory.shrink_to(encoded.len() + links_bytes);
        }
        // Waits for room in the `max_pending` budget while still holding the request permit
        // and the page's memory, so bodies in memory stay bounded when the broker is slow.
        out.send_keyed(&self.outputs.pages, item.domain.as_bytes(), encoded)
            .await?;
        drop(held.request.take());
        if let Some(discovered) = &self.outputs.discovered {
            for value in link_messages(&links) {
                out.send(discovered, value).await?;
            }
        }
        out.flush().await?;
        // Remembered only now that they are delivered: a retry must not skip any.
        self.seen.insert(links.iter().map(|l| l.url.as_str()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_with_body(body: String) -> Page {
        let mut page = blank(&CrawlUrl {
            url: "http://a.test/".into(),
            domain: "a.test".into(),
            depth: 0,
            source: None,
            queued_at_ms: 0,
            validators: None,
            sitemap: false,
            deferred: false,
        });
        page.body = Some(body);
        page
    }

    #[test]
    fn a_page_too_large_for_its_topic_is_cut_to_fit_and_flagged() {
        // Quotes, control characters and multi-byte text: JSON makes them longer.
        let original: String = "ab\"\u{1}é日本\\\n".repeat(20_000);
        let mut page = page_with_body(original.clone());
        let limit = 64 << 10;
        let (encoded, cut) = encode_within(&mut page, 6, limit);
        assert!(cut && page.truncated);
        assert!(
            encoded.len() + 6 + RECORD_OVERHEAD <= limit,
            "{}",
            encoded.len()
        );
        let body = page.body.as_deref().unwrap();
        assert!(
            original.starts_with(body) && body.len() > 4096,
            "{}",
            body.len()
        );
        assert_eq!(Page::decode(&encoded).unwrap().body.as_deref(), Some(body));
    }

    #[test]
    fn a_pages_links_go_as_a_few_messages() {
        let links: Vec<UrlIn> = (0..600)
            .map(|n| UrlIn {
                url: format!("http://a.test/{n}"),
                depth: 1,
                source: Some("http://a.test/".into()),
                sitemap: false,
            })
            .collect();
        let messages = link_messages(&links);
        assert_eq!(messages.len(), 3);
        let back: Vec<UrlIn> = messages
            .iter()
            .flat_map(|m| UrlIn::decode_all(m).unwrap())
            .collect();
        assert_eq!(back, links);
        // Long URLs: cut by bytes first.
        let long: Vec<UrlIn> = (0..40)
            .map(|n| UrlIn::seed(format!("http://a.test/{n}/{}", "x".repeat(4000))))
            .collect();
        let messages = link_messages(&long);
        assert!(messages.len() >= 3, "{}", messages.len());
        assert!(messages
            .iter()
            .all(|m| m.len() <= LINK_MESSAGE_BYTES + 4200));
        assert_eq!(link_messages(&long[..1]), vec![long[0].encode()]);
        assert!(link_messages(&[]).is_empty());
    }

    #[test]
    fn a_page_that_fits_is_left_alone() {
        let mut page = page_with_body("small".into());
        let (encoded, cut) = encode_within(&mut page, 6, 64 << 10);
        assert!(!cut && !page.truncated);
        assert_eq!(encoded, page.encode());
    }
}
