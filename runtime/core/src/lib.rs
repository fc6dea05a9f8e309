//! The Sluice runtime: runs pipeline.yaml stages on a bus with at-least-once delivery.
//!
//! - [`stage`]: every contract between a stage and the runtime: [`stage::StageKind`] with its
//!   typed settings, [`stage::Processor`], [`stage::BatchSink`], [`stage::Source`].
//! - [`emit`]: outputs owned by the runtime (ports, budgets, acknowledgements).
//! - [`registry`]: the kinds a binary knows.
//! - [`runner`]: starts stages, the metrics server and readiness checks.
//! - [`driver`]: consume → process → produce → commit, retries and dead letters.
//! - [`deferral`]: the due-time header a stage defers records with, for a `delay` stage.
//! - [`batch`]: consume → batch → write a file → publish → commit, for sinks.
//! - [`connect`]: the bus pipeline.yaml names. The buses themselves live in `sluice-bus`: the
//!   embedded one always, the Kafka one with this crate's `kafka` feature (which the `sluice`
//!   binary turns on; stage crates leave it off and do not link rdkafka).
//! - [`services`]: shared-state services, opened once per process: memcached, etcd slots,
//!   the dataset's storage, Chroma.
//! - [`metrics`], [`health`] (readiness, and the one service-ping loop), [`logging`]: telemetry.
//!
//! The runtime knows nothing of URLs or crawling.

pub mod batch;
pub mod connect;
pub mod dead_letter;
pub mod deferral;
pub mod driver;
pub mod emit;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod registry;
pub mod retry;
pub mod runner;
pub mod services;
pub mod stage;

pub use sluice_bus as bus;
pub use sluice_config as config;
