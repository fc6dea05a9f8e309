//! The async memcached client against a real memcached (started by tests/run.sh).

use std::time::Duration;

use sluice_runtime::services::{Cache, MemcachedCache};

fn client() -> MemcachedCache {
    let addr = std::env::var("SLUICE_TEST_MEMCACHED")
        .expect("SLUICE_TEST_MEMCACHED is not set: run the suite with tests/run.sh");
    MemcachedCache::new(&[addr]).unwrap()
}

fn key(name: &str) -> String {
    format!(
        "sluice-test:{}:{name}:{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn add_gets_cas_set_delete_follow_memcached() {
    let c = client();
    c.ping().await.unwrap();
    let k = key("k");
    let ttl = Duration::from_secs(60);
    assert!(c.add(&k, b"1", ttl).await.unwrap());
    assert!(!c.add(&k, b"2", ttl).await.unwrap());
    let item = c.gets(&k).await.unwrap().unwrap();
    assert_eq!(item.value, b"1");
    assert!(c.cas(&k, b"3", ttl, item.cas).await.unwrap());
    assert!(
        !c.cas(&k, b"4", ttl, item.cas).await.unwrap(),
        "stale token must fail"
    );
    assert_eq!(c.gets(&k).await.unwrap().unwrap().value, b"3");
    // Binary values with CR LF inside survive.
    c.set(&k, b"a\r\nEND\r\nb", ttl).await.unwrap();
    assert_eq!(c.gets(&k).await.unwrap().unwrap().value, b"a\r\nEND\r\nb");
    assert!(c.delete(&k).await.unwrap());
    assert!(!c.delete(&k).await.unwrap());
    assert!(c.gets(&k).await.unwrap().is_none());
    assert!(!c.cas(&k, b"5", ttl, item.cas).await.unwrap());
    assert!(c.gets("bad key").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_get_their_own_answers() {
    let c = std::sync::Arc::new(client());
    let prefix = key("p");
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let (c, k) = (c.clone(), format!("{prefix}:{i}"));
        tasks.push(tokio::spawn(async move {
            assert!(c
                .add(&k, i.to_string().as_bytes(), Duration::from_secs(60))
                .await
                .unwrap());
            let v = c.gets(&k).await.unwrap().unwrap().value;
            assert_eq!(v, i.to_string().as_bytes(), "answer of another request");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = MemcachedCache::new(&[format!("127.0.0.1:{port}")]).unwrap();
    let started = std::time::Instant::now();
    let err = c.add("k", b"v", Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, sluice_runtime::services::CacheError::Unavailable(_)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_start_at_the_first_delta_and_count_every_increment_once() {
    let c = std::sync::Arc::new(client());
    let k = key("counter");
    let ttl = Duration::from_secs(60);
    // Many clients racing on a counter that does not exist yet: one creates it, the others
    // count on it, and no increment is lost.
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move { c.incr(&k, 1, ttl).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<u64>>(),
        "each count returned once"
    );
    assert_eq!(c.incr(&k, 5, ttl).await.unwrap(), 205);
    c.set(&k, b"not a number", ttl).await.unwrap();
    assert!(c.incr(&k, 1, ttl).await.is_err());
}
