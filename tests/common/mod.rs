//! Shared helpers of the integration tests: the real servers started by `tests/run.sh`,
//! unique names so tests can share them, pipeline files, stage processes, topic readers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod crawl;
pub mod dataset;
pub mod pipeline;
pub mod web;
pub mod yaml;

use sluice_bus::{Bus, ConsumerEvent, Record, StartFrom, SubscribeOptions, TopicPartition};
use sluice_config::Pipeline;
use sluice_runtime::registry::Registry;
use sluice_runtime::runner::{start_on, RunOptions, Running};
use sluice_runtime::services::Services;
use tokio_util::sync::CancellationToken;

/// Addresses of the servers `tests/run.sh` started.
pub struct Servers {
    pub broker: String,
    pub memcached: String,
    pub etcd: String,
}

/// The test servers. Integration tests need them: run the suite with `tests/run.sh`.
pub fn servers() -> Servers {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run the suite with tests/run.sh, which starts tansu, memcached and etcd")
        })
    };
    Servers {
        broker: get("SLUICE_TEST_BROKER"),
        memcached: get("SLUICE_TEST_MEMCACHED"),
        etcd: get("SLUICE_TEST_ETCD"),
    }
}

/// The test broker, as a Kafka bus.
pub fn kafka_bus() -> Arc<dyn Bus> {
    Arc::new(sluice_bus::kafka::KafkaBus::new(
        &servers().broker,
        Default::default(),
    ))
}

/// Creates `names` on `bus`, each with `partitions` partitions and the broker's default
/// replication.
pub async fn create_topics_on(bus: &Arc<dyn Bus>, names: &[&str], partitions: i32) {
    let specs: Vec<sluice_bus::TopicSpec> = names
        .iter()
        .map(|name| sluice_bus::TopicSpec::new(*name, partitions))
        .collect();
    bus.create_topics(&specs).await.expect("create topics");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs `cmd`, which must succeed (else the test fails with its stderr); its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// A name no other test (or earlier run against the same servers) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The package's directory: as cargo gives it to the running test, else as it was when this
/// was built. A test binary reused from a shared target directory may have been built in
/// another clone, which may be gone.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Writes a pipeline file into `dir`.
pub fn write_pipeline(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The `sluice` binary under test.
pub fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env("SLUICE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn,sluice_runtime=info,sluice_bus=info");
    c
}

/// `sluice run -f FILE --stage STAGE --metrics-addr 127.0.0.1:0`, stdout discarded; an empty
/// stage name runs every stage of the file in one process.
pub fn run_stage(file: &Path, stage: &str) -> Command {
    let mut cmd = sluice();
    cmd.args(["run", "-f"])
        .arg(file)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::null());
    if !stage.is_empty() {
        cmd.args(["--stage", stage]);
    }
    cmd
}

/// Runs `sluice ARGS` and parses its stdout as JSON lines (panics, with stderr, on failure).
pub fn sluice_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = sluice().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `sluice query` over the storage of the pipeline in `file`, as JSON rows.
pub fn query(file: &Path, sql: &str) -> Vec<serde_json::Value> {
    sluice_json(&[
        "query",
        "-f",
        file.to_str().unwrap(),
        "--format",
        "json",
        sql,
    ])
}

/// A fetched page record of `a.test` (status 200), for writing pages files directly.
pub fn page(url: &str, content_type: &str, body: &str) -> sluice_topics::Page {
    sluice_topics::Page {
        url: url.into(),
        final_url: url.into(),
        redirects: vec![],
        status: Some(200),
        content_type: Some(content_type.into()),
        charset: Some("UTF-8".into()),
        fetched_at_ms: 1_700_000_000_000,
        fetch_ms: 1,
        headers: Default::default(),
        body: Some(body.into()),
        body_bytes: body.len() as u64,
        truncated: false,
        error: None,
        depth: 0,
        domain: "a.test".into(),
        source: None,
        links_out: 0,
    }
}

/// A stage process, killed (SIGKILL) when dropped.
pub struct StageProcess {
    pub child: Child,
    pub name: String,
}

impl StageProcess {
    /// `sluice run -f FILE --stage STAGE --metrics-addr 127.0.0.1:0`, logging to `log`.
    pub fn spawn(file: &Path, stage: &str, log: &Path) -> Self {
        Self::spawn_as(file, stage, log, "")
    }

    /// Like [`StageProcess::spawn`], with SLUICE_TEST_INSTANCE set to `instance` (for
    /// pipelines that take a consumer `group.instance.id` from it).
    pub fn spawn_as(file: &Path, stage: &str, log: &Path, instance: &str) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = run_stage(file, stage)
            .env("SLUICE_TEST_INSTANCE", instance)
            .stderr(out)
            .spawn()
            .expect("start sluice");
        Self {
            child,
            name: stage.into(),
        }
    }

    /// SIGKILL: no draining, no commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_term(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "stage {} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn unsafe_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Reads every record of `topic` from the beginning until `want(records)` says done or
/// `timeout` passes without new records. Uses a throw-away group and never commits.
pub async fn read_topic(
    bus: &Arc<dyn Bus>,
    topic: &str,
    idle_timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let mut c = bus
        .subscribe(SubscribeOptions {
            group: unique("reader"),
            topics: vec![topic.into()],
            start_from: StartFrom::Earliest,
            buffer: 4096,
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        if done(&out) {
            break;
        }
        match tokio::time::timeout(idle_timeout, c.next()).await {
            Ok(Ok(ConsumerEvent::Record(r))) => out.push(r),
            Ok(Ok(ConsumerEvent::Revoked { ack, .. })) => ack.done(Vec::new()),
            Ok(Ok(ConsumerEvent::Assigned(_))) => {}
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    c.close().await.ok();
    out
}

/// Every record of `topic` up to its current end: reads until each partition's high
/// watermark is reached (not until a quiet spell, which a slow broker can fake).
pub async fn read_all(bus: &Arc<dyn Bus>, topic: &str, timeout: Duration) -> Vec<Record> {
    let n = bus.partitions(topic).await.unwrap();
    let mut end = HashMap::new();
    for p in 0..n {
        let (_, high) = bus
            .watermarks(&TopicPartition::new(topic, p))
            .await
            .unwrap();
        end.insert(p, high);
    }
    let total: i64 = end.values().sum();
    let records = read_topic(bus, topic, timeout, |r| r.len() as i64 >= total).await;
    assert_eq!(
        records.len() as i64,
        total,
        "could not read all of {topic} within {timeout:?}"
    );
    records
}

/// Waits until `group` has committed everything in `topic` (or panics after `timeout`).
pub async fn wait_caught_up(bus: &Arc<dyn Bus>, group: &str, topic: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        // A loaded broker times out now and then: retry until the deadline.
        match behind(bus, group, topic).await {
            Ok(0) => return,
            Ok(n) => last = format!("{n} behind"),
            Err(e) => last = format!("broker error: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "group {group} on {topic}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn behind(bus: &Arc<dyn Bus>, group: &str, topic: &str) -> Result<i64, sluice_bus::BusError> {
    let n = bus.partitions(topic).await?;
    let tps: Vec<TopicPartition> = (0..n).map(|p| TopicPartition::new(topic, p)).collect();
    let committed = bus.committed(group, &tps).await?;
    let mut behind = 0;
    for (tp, c) in tps.iter().zip(committed) {
        let (_, high) = bus.watermarks(tp).await?;
        behind += high - c.unwrap_or(0);
    }
    Ok(behind)
}

/// Waits until every `(group, topic)` has nothing left to consume for 3 s in a row.
pub async fn wait_idle(bus: &Arc<dyn Bus>, groups: &[(&str, &str)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let mut idle = true;
        for (g, t) in groups {
            if !matches!(behind(bus, g, t).await, Ok(0)) {
                idle = false;
            }
        }
        if idle {
            if quiet_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(3) {
                return;
            }
        } else {
            quiet_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline not idle after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every `.html` file under `root`, sorted.
pub fn html_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "html") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Counts values.
pub fn histogram<'a>(values: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in values {
        *m.entry(v.to_string()).or_default() += 1;
    }
    m
}

/// Every HTML file below `root` with the URL it has when `root` is served at `base`.
pub fn site_pages(root: &Path, base: &url::Url) -> Vec<(PathBuf, url::Url)> {
    html_files(root)
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let url = base.join(&rel).unwrap();
            (f, url)
        })
        .collect()
}

/// Peak resident memory of process `pid` (VmHWM), in KiB; 0 if unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Every stage of `p` in this process on a fresh embedded bus (`running.bus`), metrics on an
/// ephemeral port; `services` default to in-memory cache and slots.
pub async fn start_embedded(
    p: Pipeline,
    registry: &Registry,
    services: Option<Services>,
) -> Running {
    let p = Arc::new(p);
    let bus: Arc<dyn Bus> = Arc::new(sluice_bus::memory::MemoryBus::new());
    let services = services.unwrap_or_else(|| Services::in_memory(&p));
    let options = RunOptions {
        stages: vec![],
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
    };
    start_on(
        bus,
        services,
        p,
        registry,
        options,
        CancellationToken::new(),
    )
    .await
    .expect("stages start")
}

/// `broker_options` entries (YAML lines under that key) from SLUICE_BENCH_BROKER_OPTIONS,
/// `key=value` pairs separated by commas: the benchmarks' knob for trying librdkafka settings,
/// e.g. `fetch.wait.max.ms=10,linger.ms=20`.
pub fn bench_broker_options() -> String {
    std::env::var("SLUICE_BENCH_BROKER_OPTIONS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("  {}: \"{}\"\n", k.trim(), v.trim()))
        .collect()
}
