//! Waiting for a member to give partitions back.
//!
//! A revoked member answers through a oneshot whenever its stage has drained, which may be
//! long after the rebalance started, or never (a stuck stage), or just before it leaves the
//! group. The answer therefore sits where both the waiting task and the member's leaving can
//! take it, so that an ack answered right before a `close` still commits, and a stuck member
//! cannot hold the group past the rebalance timeout.
//!
//! The waiting takes a task, spawned on the tokio runtime of the call that caused the rebalance,
//! or, when a consumer is dropped outside any runtime, on the runtime of the group's latest
//! subscriber.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::group::Group;
use super::lock;
use crate::TopicPartition;

pub(super) type Offsets = Vec<(TopicPartition, i64)>;

/// The state of one revocation's answer.
pub(super) enum Answer {
    Waiting(oneshot::Receiver<Offsets>),
    Answered(Offsets),
    Settled,
}

impl Answer {
    /// The offsets answered, once; `None` if the ack was dropped, not answered yet, or taken.
    pub(super) fn take(&mut self) -> Option<Offsets> {
        match std::mem::replace(self, Answer::Settled) {
            Answer::Waiting(mut rx) => rx.try_recv().ok(),
            Answer::Answered(offsets) => Some(offsets),
            Answer::Settled => None,
        }
    }
}

/// A revocation the group is waiting on.
pub(super) struct Revocation {
    pub(super) member: u64,
    pub(super) partitions: Vec<TopicPartition>,
    pub(super) answer: Arc<Mutex<Answer>>,
    /// The task waiting for the answer; aborted when the member leaves first.
    pub(super) waiter: AbortHandle,
}

/// Waits for a revoked member's answer (or the rebalance timeout), then has the group complete
/// the revocation `rid`.
pub(super) async fn await_answer(group: Arc<Group>, rid: u64, answer: Arc<Mutex<Answer>>) {
    let answered = poll_fn(|cx| {
        let mut answer = lock(&answer);
        let Answer::Waiting(rx) = &mut *answer else {
            return Poll::Ready(());
        };
        match rx.poll_unpin(cx) {
            Poll::Ready(Ok(offsets)) => {
                *answer = Answer::Answered(offsets);
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) => {
                *answer = Answer::Settled;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    });
    let timed_out = tokio::time::timeout(group.rebalance_timeout(), answered)
        .await
        .is_err();
    group.finish_revocation(rid, timed_out);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::memory::testing::{
        assert_quiet, assigned, bus_with, fill, options, record, revoked, spec, tp,
    };
    use crate::memory::MemoryBus;
    use crate::Bus;

    #[tokio::test]
    async fn revocation_waits_for_the_ack() {
        let bus = bus_with("t", 2).await;
        fill(&bus, "t", 0, 3).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        // a has not even seen the revocation yet: b gets nothing, though t/0 has records.
        assert_quiet(&mut b, 200).await;
        let (partitions, ack) = revoked(&mut a).await;
        assert_eq!(partitions, vec![tp("t", 0)]);
        fill(&bus, "t", 0, 1).await;
        // Seen but not answered: still nothing for b, and nothing of t/0 for a.
        assert_quiet(&mut b, 200).await;
        assert_quiet(&mut a, 50).await;
        ack.done(vec![(tp("t", 0), 2)]);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        let r = record(&mut b).await;
        assert_eq!((r.partition, r.offset), (0, 2));
        assert_eq!(
            bus.committed("g", &[tp("t", 0)]).await.unwrap(),
            vec![Some(2)]
        );
    }

    #[tokio::test]
    async fn dropped_ack_commits_nothing() {
        let bus = bus_with("t", 2).await;
        fill(&bus, "t", 0, 5).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        a.commit(&[(tp("t", 0), 1)], true).await.unwrap();
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        drop(ack);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        assert_eq!(record(&mut b).await.offset, 1);
        assert_eq!(
            bus.committed("g", &[tp("t", 0)]).await.unwrap(),
            vec![Some(1)]
        );
    }

    #[tokio::test]
    async fn unanswered_revocation_times_out() {
        let bus = MemoryBus::with_rebalance_timeout(Duration::from_millis(300));
        bus.create_topics(&[spec("t", 2)]).await.unwrap();
        fill(&bus, "t", 0, 3).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        // a is stuck and never calls next: the group moves on after the timeout.
        assert_quiet(&mut b, 100).await;
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        assert_eq!(record(&mut b).await.offset, 0);
        // a's late answer, and its commits, no longer count.
        let (partitions, ack) = revoked(&mut a).await;
        assert_eq!(partitions, vec![tp("t", 0)]);
        ack.done(vec![(tp("t", 0), 3)]);
        a.commit(&[(tp("t", 0), 3)], true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(bus.committed("g", &[tp("t", 0)]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn ack_answered_right_before_close_still_commits() {
        let bus = bus_with("t", 2).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        // No await in between: the task waiting for the answer has not run yet.
        ack.done(vec![(tp("t", 0), 6)]);
        a.close().await.unwrap();
        assert_eq!(
            bus.committed("g", &[tp("t", 0)]).await.unwrap(),
            vec![Some(6)]
        );
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0), tp("t", 1)]);
    }
}
