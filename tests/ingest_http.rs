//! The `ingest` stage end to end: the real `sluice` binary serving `POST /v1/urls` on the real
//! broker (tansu). API keys (Bearer and X-API-Key, wrong or missing → 401), the answer's
//! accepted/rejected/errors counts, the URLs on the output topic (bare seeds and JSON with
//! depth; written before the answer, nothing extra), body and URL-count limits (413),
//! malformed bodies (400), and the startup error when `auth` is on but no key is configured.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read_topic, servers, unique, write_pipeline, StageProcess};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use sluice_bus::kafka::KafkaBus;
use sluice_bus::{Bus, Record, TopicPartition};
use sluice_topics::{Contract, UrlIn};

/// The keys the stage process gets through `SLUICE_API_KEYS`.
const KEYS: &str = "k1,k2";
const MAX_BODY_BYTES: usize = 1024;
const MAX_URLS: usize = 5;

fn pipeline_yaml(broker: &str, stage: &str, topic: &str, port: u16) -> String {
    format!(
        r#"name: ingest-http-test
broker: {broker}
topics:
  {topic}: {{ partitions: 1 }}
stages:
  {stage}:
    kind: ingest
    output: {topic}
    listen: 127.0.0.1:{port}
    max_body_bytes: {MAX_BODY_BYTES}
    max_urls: {MAX_URLS}
"#
    )
}

/// `sluice run -f FILE --stage STAGE` with the given API-key environment, stderr to `log`.
fn run_command(file: &Path, stage: &str, log: &Path, keys: Option<&str>) -> Command {
    let mut c = common::sluice();
    c.args(["run", "-f"])
        .arg(file)
        .args(["--stage", stage, "--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    match keys {
        Some(k) => c.env("SLUICE_API_KEYS", k),
        None => c.env_remove("SLUICE_API_KEYS"),
    };
    c
}

/// Waits until `addr` accepts connections; panics (with the log) if the process exits or
/// 20 s pass first.
fn wait_listening(p: &mut StageProcess, addr: SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "sluice exited ({status}) before listening on {addr}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "ingest not listening on {addr} after 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The records in the (single-partition) topic, from the broker's high watermark.
async fn topic_len(bus: &Arc<dyn Bus>, topic: &str) -> i64 {
    let (low, high) = bus
        .watermarks(&TopicPartition::new(topic, 0))
        .await
        .unwrap();
    high - low
}

struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    body: Value,
    text: String,
}

async fn send(req: RequestBuilder) -> Answer {
    let r = req.send().await.expect("HTTP request");
    let status = r.status();
    let www_authenticate = r
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        www_authenticate,
        body,
        text,
    }
}

/// Checks a 200 answer's counts and returns its `errors` list.
fn expect_ok(a: &Answer, accepted: u64, rejected: u64) -> Vec<Value> {
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["accepted"], accepted, "{}", a.text);
    assert_eq!(a.body["rejected"], rejected, "{}", a.text);
    let errors = a.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {}", a.text))
        .clone();
    assert_eq!(errors.len() as u64, rejected, "{}", a.text);
    errors
}

fn expect_error(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "{}", a.text);
}

/// Reads the topic from the beginning until it holds `n` records (30 s at most between two).
async fn read_n(bus: &Arc<dyn Bus>, topic: &str, n: usize) -> Vec<Record> {
    let got = read_topic(bus, topic, Duration::from_secs(30), |r| r.len() >= n).await;
    assert!(
        got.len() >= n,
        "only {} of {n} records arrived on {topic}",
        got.len()
    );
    got
}

/// `(url, depth)` → count of the decoded records.
fn decoded(records: &[Record]) -> HashMap<(String, u32), usize> {
    let mut m = HashMap::new();
    for r in records {
        let u = UrlIn::decode(&r.value).unwrap_or_else(|e| {
            panic!(
                "not a UrlIn value: {e}: {:?}",
                String::from_utf8_lossy(&r.value)
            )
        });
        *m.entry((u.url, u.depth)).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_http_keys_answers_limits_and_output_topic() {
    let s = servers();
    let id = unique("ih");
    let stage = format!("ingest-{id}");
    let topic = format!("url-in-{id}");
    let port = common::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), &pipeline_yaml(&s.broker, &stage, &topic, port));
    common::pipeline::create_topics(&file);
    let log = dir.path().join("ingest.log");
    let mut p = StageProcess {
        child: run_command(&file, &stage, &log, Some(KEYS))
            .spawn()
            .expect("start sluice"),
        name: stage.clone(),
    };
    wait_listening(&mut p, addr, &log);

    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&s.broker, Default::default()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("http://{addr}/v1/urls");
    let post = || http.post(&url);
    // Every (url, depth) the topic must hold at the end.
    let mut expected: HashMap<(String, u32), usize> = HashMap::new();
    let mut expect = |u: &str, depth: u32| {
        *expected.entry((u.to_string(), depth)).or_default() += 1;
    };

    // --- 401: no key, wrong keys; nothing is written even though the URLs are valid.
    let valid = "https://unauthorized.example/a\n";
    let a = send(post().body(valid)).await;
    expect_error(&a, StatusCode::UNAUTHORIZED);
    let challenge = a
        .www_authenticate
        .as_deref()
        .expect("401 without WWW-Authenticate");
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge}"
    );
    assert!(a.body["error"].is_string(), "401 body: {}", a.text);
    for (header, value) in [
        (AUTHORIZATION.as_str(), "Bearer k3"),
        (AUTHORIZATION.as_str(), "Bearer k"),
        (AUTHORIZATION.as_str(), "Bearer k1,k2"),
        (AUTHORIZATION.as_str(), "Basic k1"),
        (AUTHORIZATION.as_str(), "k1"),
        ("x-api-key", "k3"),
        ("x-api-key", ""),
    ] {
        let a = send(post().header(header, value).body(valid)).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{header}: {value} must be refused: {}",
            a.text
        );
        assert!(
            a.www_authenticate.is_some(),
            "401 for {header}: {value} without WWW-Authenticate"
        );
    }
    assert_eq!(
        topic_len(&bus, &topic).await,
        0,
        "unauthorized requests wrote to the topic"
    );

    // --- 200 with `Authorization: Bearer k2`: a text body with 3 valid URLs, one ftp:// URL
    // and one that is no URL at all. Positions are line numbers from 1.
    let good = [
        "https://one.example/a",
        "http://two.example/b?q=1",
        "https://three.example/",
    ];
    let body = format!(
        "{}\nftp://files.example/x\n{}\nnot a url\n{}\n",
        good[0], good[1], good[2]
    );
    let a = send(post().header(AUTHORIZATION, "Bearer k2").body(body)).await;
    let errors = expect_ok(&a, 3, 2);
    let codes: Vec<(u64, &str, &str)> = errors
        .iter()
        .map(|e| {
            assert!(
                e["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "error without reason: {e}"
            );
            (
                e["position"].as_u64().unwrap(),
                e["url"].as_str().unwrap(),
                e["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (2, "ftp://files.example/x", "unsupported_scheme"),
            (4, "not a url", "unparsable"),
        ]
    );
    // "accepted" means acknowledged by the broker: the records are there when the answer is.
    assert_eq!(
        topic_len(&bus, &topic).await,
        3,
        "the 200 answer came before the broker held the accepted URLs"
    );
    let records = read_n(&bus, &topic, 3).await;
    let mut values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    values.sort();
    let mut want: Vec<String> = good.iter().map(|u| u.to_string()).collect();
    want.sort();
    assert_eq!(values, want, "seeds are written as bare URL strings");
    for u in good {
        expect(u, 0);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        topic_len(&bus, &topic).await,
        3,
        "records beyond the accepted URLs arrived"
    );

    // --- 200 with `X-API-Key: k1`: a JSON body of objects with depth and a plain string.
    let body = serde_json::json!([
        {"url": "https://deep.example/two", "depth": 2},
        "https://deep.example/plain",
        {"url": "https://deep.example/seven", "depth": 7},
        {"url": "javascript:alert(1)", "depth": 1},
    ]);
    let a = send(
        post()
            .header("X-API-Key", "k1")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    )
    .await;
    let errors = expect_ok(&a, 3, 1);
    assert_eq!(errors[0]["position"], 3, "{}", a.text);
    assert_eq!(errors[0]["code"], "unsupported_scheme", "{}", a.text);
    assert_eq!(topic_len(&bus, &topic).await, 6);
    let records = read_n(&bus, &topic, 6).await;
    let mut with_depth = HashMap::new();
    for r in &records[3..] {
        if r.value.first() == Some(&b'{') {
            let v: Value = serde_json::from_slice(&r.value).expect("JSON value");
            with_depth.insert(
                v["url"].as_str().unwrap().to_string(),
                v["depth"].as_u64().unwrap(),
            );
        } else {
            assert_eq!(
                String::from_utf8_lossy(&r.value),
                "https://deep.example/plain",
                "bare seed"
            );
        }
    }
    assert_eq!(
        with_depth,
        HashMap::from([
            ("https://deep.example/two".to_string(), 2),
            ("https://deep.example/seven".to_string(), 7),
        ]),
        "URLs with depth are JSON carrying it"
    );
    expect("https://deep.example/two", 2);
    expect("https://deep.example/plain", 0);
    expect("https://deep.example/seven", 7);
    // Without a JSON content type a body starting with `[` is JSON too.
    let a = send(
        post()
            .header("X-API-Key", "k1")
            .body(r#"  [{"url": "https://deep.example/three", "depth": 3}]"#),
    )
    .await;
    expect_ok(&a, 1, 0);
    expect("https://deep.example/three", 3);

    // --- 413: a body over max_body_bytes (4 KiB; one valid URL, the rest a comment line, so
    // only the byte limit can refuse it).
    let big = format!(
        "https://big.example/\n# {}\n",
        "x".repeat(4096 - "https://big.example/\n# \n".len())
    );
    assert_eq!(big.len(), 4096);
    let a = send(post().header("X-API-Key", "k1").body(big)).await;
    expect_error(&a, StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit passes.
    let small = format!(
        "https://small.example/\n# {}\n",
        "x".repeat(MAX_BODY_BYTES - 100)
    );
    assert!(small.len() < MAX_BODY_BYTES);
    let a = send(post().header("X-API-Key", "k1").body(small)).await;
    expect_ok(&a, 1, 0);
    expect("https://small.example/", 0);

    // --- 413: more than max_urls URLs (invalid ones count too); exactly max_urls passes.
    let six: Vec<String> = (0..=MAX_URLS)
        .map(|i| format!("https://many.example/{i}"))
        .collect();
    let a = send(post().header("X-API-Key", "k1").body(six.join("\n"))).await;
    expect_error(&a, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.body["error"].is_string(), "{}", a.text);
    let mixed = format!("{}\nnot a url", six[..MAX_URLS].join("\n"));
    let a = send(post().header("X-API-Key", "k1").body(mixed)).await;
    expect_error(&a, StatusCode::PAYLOAD_TOO_LARGE);
    let five = serde_json::to_string(&six[..MAX_URLS]).unwrap();
    let a = send(
        post()
            .header(AUTHORIZATION, "Bearer k1")
            .header(CONTENT_TYPE, "application/json")
            .body(five),
    )
    .await;
    expect_ok(&a, MAX_URLS as u64, 0);
    for u in &six[..MAX_URLS] {
        expect(u, 0);
    }

    // --- 400: malformed JSON, JSON that is not an array of URLs, invalid UTF-8.
    for (json_type, body) in [
        (false, br#"["https://bad.example/a", "#.to_vec()),
        (
            true,
            br#"["https://bad.example/b" "https://bad.example/c"]"#.to_vec(),
        ),
        (true, b"https://bad.example/d".to_vec()),
        (true, br#"{"url": "https://bad.example/e"}"#.to_vec()),
        (false, b"https://bad.example/f\n\xff\xfe\n".to_vec()),
    ] {
        let mut req = post().header("X-API-Key", "k2").body(body.clone());
        if json_type {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let a = send(req).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{:?}: {}",
            String::from_utf8_lossy(&body),
            a.text
        );
        assert!(a.body["error"].is_string(), "400 body: {}", a.text);
    }

    // --- The topic holds exactly what was accepted, each once; nothing else arrives.
    let total: usize = expected.values().sum();
    let records = read_n(&bus, &topic, total).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        topic_len(&bus, &topic).await,
        total as i64,
        "the topic holds records that were not accepted"
    );
    assert_eq!(records.len(), total);
    assert_eq!(decoded(&records), expected);

    let status = p.terminate();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit on SIGTERM: {status}\n{log_text}");
    assert!(!log_text.contains("panicked"), "{log_text}");
}

#[test]
fn ingest_with_auth_but_no_api_keys_fails_to_start() {
    let s = servers();
    let id = unique("ih-nokeys");
    let stage = format!("ingest-{id}");
    let topic = format!("url-in-{id}");
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), &pipeline_yaml(&s.broker, &stage, &topic, port));
    common::pipeline::create_topics(&file);
    let log = dir.path().join("ingest.log");
    let mut p = StageProcess {
        child: run_command(&file, &stage, &log, None)
            .spawn()
            .expect("start sluice"),
        name: stage.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            p.kill9();
            panic!(
                "sluice kept running without API keys:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    assert!(
        stderr.contains("SLUICE_API_KEYS"),
        "stderr does not name SLUICE_API_KEYS:\n{stderr}"
    );
}
