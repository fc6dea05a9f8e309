//! The batch driver with a recording sink on the embedded bus: batches close by row count and
//! commit after finishing; a batch that replays an earlier file ends exactly where that file
//! ended, whatever the limits say; invalid records are dead-lettered and stay covered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_bus::memory::MemoryBus;
use sluice_bus::{Bus, OutRecord, Record, StartFrom, SubscribeOptions, TopicPartition, TopicSpec};
use sluice_runtime::batch::BatchDriver;
use sluice_runtime::health::Health;
use sluice_runtime::metrics::Metrics;
use sluice_runtime::retry::Backoff;
use sluice_runtime::stage::StageError;
use sluice_runtime::stage::{BatchLimits, BatchSink, BatchWriter, Emitter, Output};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorded {
    /// (first, last, rows) of each finished batch.
    files: Vec<(i64, i64, usize)>,
}

struct Sink {
    recorded: Arc<Mutex<Recorded>>,
    /// A file "written before a crash" for first offset 0 ends here.
    replay_end: Option<i64>,
}

struct Writer {
    recorded: Arc<Mutex<Recorded>>,
    first: i64,
    rows: usize,
    end_at: Option<i64>,
}

#[async_trait]
impl BatchSink for Sink {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_rows: 2,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(3600),
            max_buffered: usize::MAX,
        }
    }

    async fn open(
        &self,
        _tp: &TopicPartition,
        first: i64,
    ) -> Result<Box<dyn BatchWriter>, StageError> {
        Ok(Box::new(Writer {
            recorded: self.recorded.clone(),
            first,
            rows: 0,
            end_at: if first == 0 { self.replay_end } else { None },
        }))
    }
}

#[async_trait]
impl BatchWriter for Writer {
    fn end_at(&self) -> Option<i64> {
        self.end_at
    }

    async fn push(&mut self, record: &Record) -> Result<usize, StageError> {
        if record.value == b"bad" {
            return Err(StageError::invalid("bad", "a bad record"));
        }
        self.rows += 1;
        Ok(record.value.len())
    }

    async fn finish(self: Box<Self>, last: i64, out: &mut Emitter) -> Result<(), StageError> {
        self.recorded
            .lock()
            .unwrap()
            .files
            .push((self.first, last, self.rows));
        out.send(
            &Output::new("output", "out"),
            format!("{}-{last}", self.first).into_bytes(),
        )
        .await
    }

    async fn abort(self: Box<Self>) {}
}

async fn run(values: &[&str], replay_end: Option<i64>) -> (Vec<(i64, i64, usize)>, i64, usize) {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    bus.create_topics(&[
        TopicSpec::new("in", 1),
        TopicSpec::new("out", 1),
        TopicSpec::new("dlq", 1),
    ])
    .await
    .unwrap();
    let producer = bus.producer().unwrap();
    for v in values {
        producer
            .send(OutRecord::new("in", v.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    let driver = BatchDriver {
        stage: "batch".into(),
        sink: Arc::new(Sink {
            recorded: recorded.clone(),
            replay_end,
        }),
        bus: bus.clone(),
        subscribe: SubscribeOptions {
            group: "batch".into(),
            topics: vec!["in".into()],
            start_from: StartFrom::Earliest,
            buffer: 64,
        },
        producer: producer.clone(),
        dead_letter: "dlq".into(),
        backoff: Backoff {
            attempts: 2,
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        metrics: metrics.stage("batch"),
        health: Health::new(),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(driver.run());
    let tp = TopicPartition::new("in", 0);
    let mut committed = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        committed = bus
            .committed("batch", std::slice::from_ref(&tp))
            .await
            .unwrap()[0]
            .unwrap_or(0);
        if committed >= values.len() as i64 - (values.len() as i64 % 2) && committed > 0 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let dlq = bus
        .watermarks(&TopicPartition::new("dlq", 0))
        .await
        .unwrap()
        .1 as usize;
    let files = recorded.lock().unwrap().files.clone();
    (files, committed, dlq)
}

#[tokio::test]
async fn batches_close_by_rows_and_invalid_records_stay_covered() {
    let (files, committed, dlq) = run(&["a", "b", "bad", "c", "d"], None).await;
    // 0,1 → a file; then 2 (bad: dead-lettered, not a row), 3 and 4 → a file of 2 rows that
    // still covers offset 2.
    assert_eq!(files[0], (0, 1, 2));
    assert_eq!(files[1].0, 2);
    assert_eq!(dlq, 1);
    assert_eq!(
        committed, 5,
        "everything committed after shutdown closed the last batch"
    );
    let covered: i64 = files.iter().map(|(f, l, _)| l - f + 1).sum();
    assert_eq!(covered, 5, "files cover every offset once: {files:?}");
}

#[tokio::test]
async fn a_replayed_batch_ends_where_the_earlier_file_ended() {
    // An earlier run wrote [0..=3] and crashed before committing: with max_rows 2 the replay
    // would close at 1 — it must close at 3 instead, rewriting the same file.
    let (files, _, _) = run(&["a", "b", "c", "d", "e", "f"], Some(3)).await;
    assert_eq!(files[0], (0, 3, 4), "{files:?}");
    assert_eq!(files[1], (4, 5, 2));
}
