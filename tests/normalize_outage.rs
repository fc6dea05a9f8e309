//! memcached down: the normalize stage reports not-ready on /readyz, dead-letters nothing and
//! passes nothing; once memcached comes up every URL goes through.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read_topic, servers, unique, write_pipeline, StageProcess};
use sluice_bus::kafka::KafkaBus;
use sluice_bus::{Bus, OutRecord};

async fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn wait_status(url: &str, want: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((s, body)) = http_get(url).await {
            if s == want {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_outage_makes_the_stage_not_ready_and_loses_nothing() {
    let s = servers();
    let id = unique("o");
    let (stage, input, output, dlq) = (
        format!("normalize-{id}"),
        format!("in-{id}"),
        format!("out-{id}"),
        format!("dlq-{id}"),
    );
    let mc_port = common::free_port();
    let metrics_port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        &format!(
            "name: outage\nbroker: {}\nservices:\n  memcached: 127.0.0.1:{mc_port}\ndead_letter: {dlq}\ntopics:\n  {input}: {{ partitions: 2 }}\n  {output}: {{ partitions: 2 }}\n  {dlq}: {{ partitions: 1 }}\nstages:\n  {stage}:\n    kind: normalize-dedup\n    input: {input}\n    output: {output}\n    retry: {{ attempts: 2, backoff: 50ms, max_backoff: 500ms }}\n",
            s.broker
        ),
    );
    let log = std::fs::File::create(dir.path().join("stage.log")).unwrap();
    let child = common::sluice()
        .args(["run", "-f"])
        .arg(&file)
        .args([
            "--stage",
            &stage,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .stderr(log)
        .spawn()
        .unwrap();
    let mut proc = StageProcess {
        child,
        name: stage.clone(),
    };
    let base = format!("http://127.0.0.1:{metrics_port}");
    wait_status(&format!("{base}/healthz"), 200, Duration::from_secs(30)).await;
    let body = wait_status(&format!("{base}/readyz"), 503, Duration::from_secs(30)).await;
    assert!(body.contains("memcached"), "{body}");

    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&s.broker, Default::default()));
    let p = bus.producer().unwrap();
    let urls: Vec<String> = (0..50)
        .map(|i| format!("https://site{i}.example.net/page"))
        .collect();
    for u in &urls {
        p.send(OutRecord::new(&input, u.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    // Well past the retry budget (2 attempts): an outage must not dead-letter anything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let none = read_topic(&bus, &output, Duration::from_secs(2), |_| false).await;
    assert!(none.is_empty(), "passed URLs without dedup: {}", none.len());
    let dead = read_topic(&bus, &dlq, Duration::from_secs(2), |_| false).await;
    assert!(
        dead.is_empty(),
        "dead-lettered during an outage: {}",
        dead.len()
    );
    let (status, _) = http_get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(status, 503);

    let mut mc = Command::new("memcached");
    if unsafe_is_root() {
        mc.args(["-u", "memcache"]);
    }
    let mut memcached = mc
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &mc_port.to_string(),
            "-U",
            "0",
            "-m",
            "16",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached");
    let got = read_topic(&bus, &output, Duration::from_secs(30), |r| {
        r.len() >= urls.len()
    })
    .await;
    assert_eq!(
        got.len(),
        urls.len(),
        "every URL passes once memcached is back"
    );
    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(20)).await;
    let metrics = wait_status(&format!("{base}/metrics"), 200, Duration::from_secs(5)).await;
    assert!(
        metrics.contains(&format!(
            "sluice_messages_sent_total{{stage=\"{stage}\",topic=\"{output}\"}} 50"
        )),
        "{metrics}"
    );
    assert!(proc.terminate().success());
    let _ = memcached.kill();
    let _ = memcached.wait();
}

/// memcached refuses to run as root without `-u`.
fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}
