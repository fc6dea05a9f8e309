//! Prometheus metrics: the telemetry contract every stage shares.
//!
//! Every stage reports the same families, labelled by `stage` (as Vector requires of its
//! components), so dashboards work for any pipeline: received, sent (per topic), failed
//! attempts, dead-lettered, processing latency, in-flight, consumer lag per partition, and a
//! free-form `sluice_stage_events_total{event}` for what a kind wants to count (duplicates...).

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~100 s: a normalize step is sub-millisecond, a crawl fetch can take a minute.
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

/// The process-wide registry and metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    received: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    latency: HistogramFamily,
    in_flight: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let received = Family::<Labels, Counter>::default();
        let sent = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        let dead_lettered = Family::<Labels, Counter>::default();
        let events = Family::<Labels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let in_flight = Family::<Labels, Gauge>::default();
        let lag = Family::<Labels, Gauge>::default();
        registry.register(
            "messages_received",
            "Records taken from the stage's input topic",
            received.clone(),
        );
        registry.register(
            "messages_sent",
            "Records produced and acknowledged, by topic",
            sent.clone(),
        );
        registry.register(
            "messages_failed",
            "Failed processing attempts, by error code",
            failed.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "Records sent to the dead-letter topic, by error code",
            dead_lettered.clone(),
        );
        registry.register(
            "stage_events",
            "Stage-specific events (duplicates, rejects, ...)",
            events.clone(),
        );
        registry.register(
            "processing_seconds",
            "Time from taking a record to acknowledging all its outputs",
            latency.clone(),
        );
        registry.register(
            "in_flight",
            "Records being processed now",
            in_flight.clone(),
        );
        registry.register(
            "consumer_lag",
            "High watermark minus committed offset, per input partition",
            lag.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            received,
            sent,
            failed,
            dead_lettered,
            events,
            latency,
            in_flight,
            lag,
        }
    }

    /// Handles bound to one stage.
    pub fn stage(&self, stage: &str) -> StageMetrics {
        // Per-record metrics are resolved once here: a family lookup hashes and allocates
        // its label set on every call.
        let labels = vec![("stage".to_string(), stage.to_string())];
        StageMetrics {
            received: self.received.get_or_create(&labels).clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            metrics: self.clone(),
            stage: stage.to_string(),
        }
    }

    /// Records `stage` has taken from its input so far (for summaries and benchmarks).
    pub fn received_total(&self, stage: &str) -> u64 {
        self.received
            .get_or_create(&vec![("stage".to_string(), stage.to_string())])
            .get()
    }

    /// Records `stage` is processing now.
    pub fn in_flight(&self, stage: &str) -> i64 {
        self.in_flight
            .get_or_create(&vec![("stage".to_string(), stage.to_string())])
            .get()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// A stage's metrics.
#[derive(Clone)]
pub struct StageMetrics {
    metrics: Metrics,
    stage: String,
    received: Counter,
    latency: Histogram,
    in_flight: Gauge,
}

impl StageMetrics {
    fn labels(&self, extra: &[(&str, &str)]) -> Labels {
        let mut l = vec![("stage".to_string(), self.stage.clone())];
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    }

    /// One input record taken.
    pub fn received(&self) {
        self.received.inc();
    }

    /// One record acknowledged on `topic`.
    pub fn sent(&self, topic: &str) {
        self.metrics
            .sent
            .get_or_create(&self.labels(&[("topic", topic)]))
            .inc();
    }

    /// One failed attempt.
    pub fn failed(&self, code: &str) {
        self.metrics
            .failed
            .get_or_create(&self.labels(&[("code", code)]))
            .inc();
    }

    /// One record dead-lettered.
    pub fn dead_lettered(&self, code: &str) {
        self.metrics
            .dead_lettered
            .get_or_create(&self.labels(&[("code", code)]))
            .inc();
    }

    /// A stage-specific event.
    pub fn event(&self, event: &str) {
        self.metrics
            .events
            .get_or_create(&self.labels(&[("event", event)]))
            .inc();
    }

    /// Count of a stage-specific event so far (for tests and summaries).
    pub fn event_count(&self, event: &str) -> u64 {
        self.metrics
            .events
            .get_or_create(&self.labels(&[("event", event)]))
            .get()
    }

    /// Processing time of one record.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Records in flight now.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// Lag of one input partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        let p = partition.to_string();
        self.metrics
            .lag
            .get_or_create(&self.labels(&[("topic", topic), ("partition", &p)]))
            .set(lag);
    }

    /// Forgets the lag of a partition no longer assigned here.
    pub fn clear_lag(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        self.metrics
            .lag
            .remove(&self.labels(&[("topic", topic), ("partition", &p)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_families() {
        let m = Metrics::new();
        let s = m.stage("normalize");
        s.received();
        s.received();
        s.sent("urls");
        s.dead_lettered("unparsable");
        s.event("duplicate");
        s.observe_latency(0.002);
        s.set_lag("url-in", 3, 42);
        let text = m.render();
        assert!(text.contains("sluice_messages_received_total{stage=\"normalize\"} 2"));
        assert!(text.contains("sluice_messages_sent_total{stage=\"normalize\",topic=\"urls\"} 1"));
        assert!(text.contains(
            "sluice_messages_dead_lettered_total{stage=\"normalize\",code=\"unparsable\"} 1"
        ));
        assert!(text.contains(
            "sluice_consumer_lag{stage=\"normalize\",topic=\"url-in\",partition=\"3\"} 42"
        ));
        assert!(text.contains("sluice_processing_seconds_count{stage=\"normalize\"} 1"));
        assert_eq!(s.event_count("duplicate"), 1);
    }
}
