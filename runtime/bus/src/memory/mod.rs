//! The embedded in-memory bus (`broker: memory`): every stage of a pipeline in one process, on a
//! laptop or in tests.
//!
//! It keeps the Kafka semantics the stages rely on, so that a stage behaves the same on both
//! buses:
//!
//! - **Topics and logs.** A topic has a fixed number of partitions; each partition is an
//!   append-only log with offsets from 0. Nothing is ever deleted (the low watermark stays 0), so
//!   the process holds every record produced since it started. Topic names follow Kafka's rules,
//!   so that a pipeline that runs here does not fail on Kafka for a name alone.
//! - **Producing.** [`Producer::send`](crate::Producer::send) appends before it returns (the
//!   future is already resolved), so the order of `send` calls is the order in the log, and
//!   `flush` has nothing to wait for. An explicit partition wins, then
//!   [`partition_for_key`](crate::partition_for_key) for keyed records (the placement Kafka
//!   uses), then round-robin for unkeyed ones. The timestamp is the append time.
//! - **Groups.** Members of a group share the partitions of the topics they subscribe to. The
//!   group keeps, per partition, the committed next offset; a partition handed to a member is
//!   read from there, or per [`StartFrom`](crate::StartFrom) when nothing is committed (or the
//!   committed offset lies past the end of the log, like Kafka's out-of-range reset).
//! - **Reading.** A member reads straight from the logs at its own positions, one record per
//!   assigned partition in turn, so that a busy partition cannot starve the others. Nothing is
//!   prefetched, so [`SubscribeOptions::buffer`](crate::SubscribeOptions::buffer) has nothing to
//!   bound and is ignored. `next` is cancel-safe (nothing is consumed until it returns), so it
//!   can sit in a `select!`, and it never returns [`BusError::Closed`](crate::BusError::Closed):
//!   a member only stops by `close` or drop.
//! - **Rebalancing.** Cooperative and sticky, as the crate docs describe for every bus: only
//!   partitions that change owner are revoked, and the new owner gets them once the old one has
//!   answered (or the rebalance timeout, [`REBALANCE_TIMEOUT`] by default, has passed).
//!
//! The modules follow the parts of a broker, each with one job: `log` stores records,
//! `assignor` decides who should own what, `group` moves partitions towards that decision
//! without two members ever reading one partition at once, `revocation` waits for a member
//! to give a partition back, `consumer` reads for one member, and `bus` is the front door.

mod assignor;
mod bus;
mod consumer;
mod group;
mod log;
mod revocation;
#[cfg(test)]
mod testing;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

pub use bus::MemoryBus;

/// How long a rebalance waits for a member to answer [`ConsumerEvent::Revoked`] before it moves
/// the partitions on without that member's commits (Kafka's `rebalance.timeout.ms`).
///
/// [`ConsumerEvent::Revoked`]: crate::ConsumerEvent::Revoked
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Locks a mutex even if a panicking thread poisoned it: one failing task (a test assertion in a
/// consumer loop, say) must not take the whole bus down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
