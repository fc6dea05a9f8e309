//! Deferring a busy domain's URLs together.
//!
//! A URL the frontier defers (`crawler.rs`) costs two records through the broker on its own,
//! one to the delay topic and one back, and the links of a slow domain's page arrive in a
//! burst: on the broad benchmark ten slow domains' 30,000 links made 60,000 records while the
//! broker was what held every other domain back. So the URLs of one domain deferred within
//! [`GATHER`] of each other go as one record, a JSON array ([`CrawlUrl::decode_all`]) of at most
//! [`MAX_URLS`] URLs and about [`MAX_BYTES`], due when its first URL is. When it comes back the
//! crawler takes the URLs whose turn is near and defers the rest again as one record
//! ([`Crawler::resume`](crate::crawler)).
//!
//! The first URL of a bundle waits out [`GATHER`] (or until the bundle is full), sends the
//! bundle through its own emitter and tells the others whether it was delivered: every input
//! record is acknowledged only once its URL is on the delay topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_runtime::deferral;
use sluice_runtime::stage::{Emitter, Output, StageError};
use sluice_topics::{Contract, CrawlUrl};
use tokio::sync::{watch, Notify};

/// How long the first deferred URL of a domain waits for others to go with it.
pub const GATHER: Duration = Duration::from_millis(100);
/// URLs in one bundle at most.
pub const MAX_URLS: usize = 512;
/// About the most bytes of one bundle (far below any topic's `max_message_bytes`: a bundle
/// is written again each time part of it is taken).
pub const MAX_BYTES: usize = 128 << 10;

/// How a bundle's delivery ended, as its other URLs learn it.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered,
    Abandoned,
    Failed(String),
}

/// A bundle being gathered.
struct Gathering {
    items: Mutex<(Vec<CrawlUrl>, usize)>,
    /// Wakes the first URL when the bundle is full.
    full: Notify,
    sent: watch::Sender<Option<Outcome>>,
}

/// The bundles being gathered in this process, by domain.
#[derive(Default)]
pub struct Bundler {
    open: Mutex<HashMap<String, Arc<Gathering>>>,
}

/// Roughly the bytes `item` adds to a bundle.
fn size_of(item: &CrawlUrl) -> usize {
    item.url.len() + item.source.as_ref().map_or(0, String::len) + item.domain.len() + 96
}

/// A record of `items` (of one domain) for `to`, due `due_in` from now, keyed by the domain.
pub fn bundle_record(to: &Output, items: &[CrawlUrl], due_in: Duration) -> sluice_bus::OutRecord {
    let value = match items {
        [one] => one.encode(),
        _ => CrawlUrl::encode_all(items),
    };
    let domain = items.first().map_or("", |i| i.domain.as_str());
    deferral::framed(to.topic(), &value, due_in.as_millis() as i64).with_key(domain)
}

impl Bundler {
    /// Defers `item` to `to`, due `due_in` from now, with its domain's other URLs deferred
    /// meanwhile; returns once the bundle holding it is delivered.
    pub async fn defer(
        &self,
        item: CrawlUrl,
        due_in: Duration,
        to: &Output,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let domain = item.domain.clone();
        let (gathering, first) = {
            let mut open = self.open.lock().expect("bundler lock");
            match open.get(&domain).cloned() {
                Some(g) => {
                    let mut items = g.items.lock().expect("bundle lock");
                    items.1 += size_of(&item);
                    items.0.push(item);
                    if items.0.len() >= MAX_URLS || items.1 >= MAX_BYTES {
                        // Closed to newcomers; its first URL sends it now.
                        open.remove(&domain);
                        g.full.notify_one();
                    }
                    drop(items);
                    (g, false)
                }
                None => {
                    let size = size_of(&item);
                    let g = Arc::new(Gathering {
                        items: Mutex::new((vec![item], size)),
                        full: Notify::new(),
                        sent: watch::channel(None).0,
                    });
                    open.insert(domain.clone(), g.clone());
                    (g, true)
                }
            }
        };
        if !first {
            let mut sent = gathering.sent.subscribe();
            return match sent.wait_for(Option::is_some).await.as_deref() {
                Ok(Some(Outcome::Delivered)) => Ok(()),
                Ok(Some(Outcome::Failed(why))) => Err(StageError::Transient(anyhow::anyhow!(
                    "the deferred URLs of {domain} were not delivered: {why}"
                ))),
                // Abandoned, or the first URL's task is gone: replayed later.
                _ => Err(StageError::Abandoned),
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(GATHER) => {}
            _ = gathering.full.notified() => {}
        }
        {
            let mut open = self.open.lock().expect("bundler lock");
            if open
                .get(&domain)
                .is_some_and(|g| Arc::ptr_eq(g, &gathering))
            {
                open.remove(&domain);
            }
        }
        let items = std::mem::take(&mut gathering.items.lock().expect("bundle lock").0);
        let record = bundle_record(to, &items, due_in);
        let result = match out.send_record(to, record).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(()) => Outcome::Delivered,
            Err(StageError::Abandoned) => Outcome::Abandoned,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        gathering.sent.send_replace(Some(outcome));
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use futures::future::BoxFuture;
    use futures::FutureExt;
    use sluice_bus::{BusError, Delivered, OutRecord, Producer, Record};
    use sluice_runtime::emit::Delivery;
    use sluice_runtime::metrics::Metrics;
    use sluice_runtime::retry::Backoff;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A broker that acknowledges at once and keeps what it was sent.
    #[derive(Default)]
    struct Kept(StdMutex<Vec<OutRecord>>);

    impl Producer for Kept {
        fn send(&self, record: OutRecord) -> BoxFuture<'static, Result<Delivered, BusError>> {
            self.0.lock().unwrap().push(record);
            futures::future::ready(Ok(Delivered {
                partition: 0,
                offset: 0,
            }))
            .boxed()
        }

        fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), BusError>> {
            futures::future::ready(Ok(())).boxed()
        }
    }

    fn url(domain: &str, n: usize) -> CrawlUrl {
        CrawlUrl {
            url: format!("http://{domain}/{n}.html"),
            domain: domain.into(),
            depth: 1,
            source: Some(format!("http://{domain}/")),
            queued_at_ms: 1,
            validators: None,
            sitemap: false,
            deferred: false,
        }
    }

    #[tokio::test]
    async fn urls_of_a_domain_deferred_together_go_as_few_records() {
        let broker = Arc::new(Kept::default());
        let delivery = Delivery::new(
            broker.clone(),
            Metrics::new().stage("crawl"),
            Backoff {
                attempts: 3,
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            CancellationToken::new(),
        );
        let to = Output::new("deferred", "deferred");
        let bundler = Arc::new(Bundler::default());
        let before = sluice_bus::now_ms();
        let items = (0..600)
            .map(|n| url("a.test", n))
            .chain((0..3).map(|n| url("b.test", n)));
        let tasks: Vec<_> = items
            .map(|item| {
                let (bundler, to, delivery) = (bundler.clone(), to.clone(), delivery.clone());
                tokio::spawn(async move {
                    let mut out = delivery.emitter();
                    bundler
                        .defer(item, Duration::from_secs(5), &to, &mut out)
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let sent = std::mem::take(&mut *broker.0.lock().unwrap());
        let mut seen = HashMap::new();
        for r in &sent {
            let record = Record {
                topic: r.topic.clone(),
                partition: 0,
                offset: 0,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: vec![],
                timestamp_ms: None,
            };
            let due = deferral::not_before(&record).unwrap();
            assert!(due >= before + 5_000 && due <= sluice_bus::now_ms() + 5_000);
            let urls = CrawlUrl::decode_all(&deferral::passed_on(&record, "urls").value).unwrap();
            assert!(urls.len() <= MAX_URLS);
            for u in urls {
                assert_eq!(r.key.as_deref(), Some(u.domain.as_bytes()));
                *seen.entry(u.url).or_insert(0) += 1;
            }
        }
        // Every URL once, in three records: a.test's 600 in a full one and the rest, b.test's.
        assert_eq!(seen.len(), 603);
        assert!(seen.values().all(|n| *n == 1));
        assert_eq!(sent.len(), 3, "{} records", sent.len());
    }
}
