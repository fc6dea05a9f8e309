//! A rebalance under load on the embedded bus: three record drivers in one group, one joining
//! and one leaving while records keep coming (the scenario and its checks: `rebalance/mod.rs`).

mod rebalance;

use std::sync::Arc;
use std::time::Duration;

use rebalance::{Names, Protocol, Scenario};
use sluice_bus::memory::MemoryBus;
use sluice_bus::Bus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_rebalances_cooperatively_under_load_without_losing_records() {
    const PARTITIONS: i32 = 16;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let names = Names {
        input: "in".into(),
        output: "out".into(),
        dead_letter: "dlq".into(),
        group: "stage".into(),
    };
    rebalance::run(
        bus,
        names,
        Scenario {
            partitions: PARTITIONS,
            records: 8_000,
            burst: 20,
            tick: Duration::from_millis(5),
            join_after: 1_500,
            leave_after: 4_000,
            concurrency: 16,
            max_work: Duration::from_millis(4),
            patience: Duration::from_secs(30),
            protocol: Protocol::Cooperative,
            exclusive_handover: true,
            sticky: true,
        },
    )
    .await;
}
