//! Domain slots on a real etcd (started by tests/run.sh): the limit holds across independent
//! clients under contention, a crashed holder's slots come back after the lease TTL, and an
//! unreachable etcd is an error, never a granted slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_runtime::services::{EtcdSlots, Slots};

fn etcd() -> Vec<String> {
    vec![std::env::var("SLUICE_TEST_ETCD")
        .expect("SLUICE_TEST_ETCD is not set: run the suite with tests/run.sh")]
}

fn prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("/sluice-test/{name}-{}-{nanos}", std::process::id())
}

async fn slots(prefix: &str) -> Slots {
    Slots::new(Arc::new(EtcdSlots::connect(&etcd(), prefix).await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_clients_under_contention() {
    let prefix = prefix("contention");
    // Two clients with their own connections and leases, as two replicas would have.
    let clients = [slots(&prefix).await, slots(&prefix).await];
    let holding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = clients[i % 2].clone();
        let (holding, peak, done) = (holding.clone(), peak.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let slot = loop {
                    match s
                        .try_acquire("example.org", 3, Duration::from_secs(5))
                        .await
                        .unwrap()
                    {
                        Some(slot) => break slot,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                };
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                slot.release().await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 72);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "never more than the limit, and the limit is used"
    );
}

#[test]
fn a_crashed_holders_slots_come_back_after_the_lease_ttl() {
    let prefix = prefix("crash");
    let ttl = Duration::from_secs(3);
    // The "crashed replica": its runtime (and with it the keepalive task) dies while it holds
    // both slots, without releasing them.
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = slots(&prefix).await;
            let a = s.try_acquire("d.test", 2, ttl).await.unwrap().unwrap();
            let b = s.try_acquire("d.test", 2, ttl).await.unwrap().unwrap();
            std::mem::forget((a, b));
        });
        rt.shutdown_background();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = slots(&prefix).await;
        assert!(s.try_acquire("d.test", 2, ttl).await.unwrap().is_none());
        let started = Instant::now();
        let slot = loop {
            if let Some(slot) = s.try_acquire("d.test", 2, ttl).await.unwrap() {
                break slot;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "slots never came back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "came back too early"
        );
        slot.release().await;
    });
}

#[tokio::test]
async fn a_live_holder_keeps_its_slot_beyond_the_ttl() {
    let prefix = prefix("keepalive");
    let ttl = Duration::from_secs(2);
    let holder = slots(&prefix).await;
    let other = slots(&prefix).await;
    let slot = holder.try_acquire("k.test", 1, ttl).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        other.try_acquire("k.test", 1, ttl).await.unwrap().is_none(),
        "keepalive lost the slot"
    );
    slot.release().await;
    assert!(other.try_acquire("k.test", 1, ttl).await.unwrap().is_some());
}

#[tokio::test]
async fn unreachable_etcd_is_an_error() {
    let s = Slots::new(Arc::new(
        EtcdSlots::connect(&["http://127.0.0.1:9".to_string()], "/x")
            .await
            .unwrap(),
    ));
    let started = Instant::now();
    assert!(s.try_acquire("d", 1, Duration::from_secs(5)).await.is_err());
    assert!(s.ping().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(15));
}
