//! Test pipeline files on the shared servers: the part every test writes the same way (name,
//! broker, services, topics, dead letters) built here, so a test spells out only its stages.

use std::fmt::Write as _;
use std::path::Path;

use super::servers;

/// Broker options for tests that kill and restart stage processes: a dead member's partitions
/// move after 10 s instead of librdkafka's 45 s, and a restarted process takes its old place at
/// once (static membership, from `SLUICE_TEST_INSTANCE`).
pub const RESTARTABLE: &str = "  session.timeout.ms: 10000
  max.poll.interval.ms: 20000
  group.instance.id: ${SLUICE_TEST_INSTANCE:-none}
  heartbeat.interval.ms: 1000
";

/// The top of a pipeline.yaml, down to `stages:`. Topic names are given without the pipeline's
/// id and written as `NAME-ID`; dead letters go to `dlq-ID`, which is always declared.
pub struct Head {
    id: String,
    broker_options: String,
    services: String,
    topics: String,
}

impl Head {
    /// A pipeline named `id` on the test broker.
    pub fn new(id: &str) -> Self {
        Head {
            id: id.to_string(),
            broker_options: String::new(),
            services: String::new(),
            topics: String::new(),
        }
    }

    /// Adds `broker_options` lines (each indented by two spaces), e.g. [`RESTARTABLE`].
    pub fn broker_options(mut self, lines: &str) -> Self {
        self.broker_options.push_str(lines);
        self
    }

    /// Uses the shared memcached.
    pub fn memcached(self) -> Self {
        let at = servers().memcached;
        self.service("memcached", &at)
    }

    /// Uses the shared etcd.
    pub fn etcd(self) -> Self {
        let at = servers().etcd;
        self.service("etcd", &at)
    }

    /// Uses the Chroma at `url`.
    pub fn chroma(self, url: &str) -> Self {
        self.service("chroma", url)
    }

    /// Keeps the dataset in `dir`.
    pub fn storage(self, dir: &Path) -> Self {
        self.service("storage", &dir.display().to_string())
    }

    fn service(mut self, name: &str, at: &str) -> Self {
        let _ = writeln!(self.services, "  {name}: {at}");
        self
    }

    /// Declares `NAME-ID` with the given settings, e.g. `partitions: 2, type: page`.
    pub fn topic(mut self, name: &str, settings: &str) -> Self {
        let _ = writeln!(self.topics, "  {name}-{}: {{ {settings} }}", self.id);
        self
    }

    /// The whole file: this head, then `stages` (already indented by two spaces).
    pub fn stages(self, stages: &str) -> String {
        let Head {
            id,
            broker_options,
            services,
            topics,
        } = self;
        let mut yaml = format!("name: {id}\nbroker: {}\n", servers().broker);
        if !broker_options.is_empty() {
            yaml.push_str("broker_options:\n");
            yaml.push_str(&broker_options);
        }
        if !services.is_empty() {
            yaml.push_str("services:\n");
            yaml.push_str(&services);
        }
        let _ = write!(
            yaml,
            "dead_letter: dlq-{id}\ntopics:\n{topics}  dlq-{id}: {{ partitions: 1 }}\nstages:\n{stages}"
        );
        yaml
    }
}

/// Normalize-dedup and crawl over a local site, as the pipeline tests run them: crawl follows
/// every link back through normalize (`url-in-ID` → `urls-ID` → `pages-ID`). Stage names are
/// `normalize{suffix}` and `crawl{suffix}`.
pub fn crawl_stages(id: &str, suffix: &str) -> String {
    format!(
        r#"  normalize{suffix}:
    kind: normalize-dedup
    input: url-in-{id}
    output: urls-{id}
    key_prefix: "{id}:"
    concurrency: 256
  crawl{suffix}:
    kind: crawl
    input: urls-{id}
    output: pages-{id}
    discovered: url-in-{id}
    feedback: [url-in-{id}]
    allow_private_addresses: true
    per_domain_concurrency: 8
    min_delay: 0s
    max_depth: 100
    timeout: 20s
    max_body: 4MiB
"#
    )
}

/// `sluice topics create -f FILE`, which must succeed.
pub fn create_topics(file: &Path) {
    let status = super::sluice()
        .args(["topics", "create", "-f"])
        .arg(file)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "sluice topics create failed on:\n{}",
        std::fs::read_to_string(file).unwrap_or_default()
    );
}
