//! Per-partition tracking of which offsets are done, yielding the contiguous watermark.
//!
//! Records finish out of order (they are processed concurrently), but a Kafka commit says
//! "everything below N is done". Committing the highest finished offset would lose the slower
//! records before it on a crash (vector#24215); we commit only the contiguous prefix.

use std::collections::{BTreeSet, HashMap};

use sluice_bus::TopicPartition;

#[derive(Debug, Default)]
struct PartitionState {
    /// Next offset to commit: every offset below it is done.
    watermark: Option<i64>,
    /// Offsets handed out but not finished.
    in_flight: BTreeSet<i64>,
    /// Highest offset seen, to advance the watermark when nothing is in flight.
    max_seen: Option<i64>,
    /// Watermark last committed.
    committed: Option<i64>,
    /// Lowest offset given up on (shutdown): the watermark never passes it.
    stuck: Option<i64>,
}

impl PartitionState {
    fn advance(&mut self) {
        // The watermark is the lowest offset still in flight, or one past the highest seen.
        let mut next = match self.in_flight.first() {
            Some(&lowest) => lowest,
            None => match self.max_seen {
                Some(m) => m + 1,
                None => return,
            },
        };
        if let Some(stuck) = self.stuck {
            next = next.min(stuck);
        }
        self.watermark = Some(next);
    }
}

/// Offsets of all assigned partitions.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a partition (on assignment).
    pub fn assign(&mut self, tp: TopicPartition) {
        self.partitions.entry(tp).or_default();
    }

    /// Stops tracking a partition (after revocation), returning its final watermark.
    pub fn remove(&mut self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.remove(tp).and_then(|s| s.watermark)
    }

    /// Records that `offset` was handed to processing. False (and nothing recorded) when the
    /// partition is not assigned here: a stray record from a partition that moved must not
    /// be processed, and above all its offset must never be committed by this member.
    pub fn start(&mut self, tp: &TopicPartition, offset: i64) -> bool {
        let Some(s) = self.partitions.get_mut(tp) else {
            tracing::warn!(%tp, offset, "record of a partition not assigned here");
            return false;
        };
        s.in_flight.insert(offset);
        s.max_seen = Some(s.max_seen.map_or(offset, |m| m.max(offset)));
        true
    }

    /// Records that `offset` finished (its outputs are acknowledged).
    pub fn finish(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(s) = self.partitions.get_mut(tp) {
            if s.in_flight.remove(&offset) {
                s.advance();
            }
        }
    }

    /// Records that `offset` was given up on: it and everything after stays uncommitted, so
    /// it is replayed.
    pub fn abandon(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(s) = self.partitions.get_mut(tp) {
            if s.in_flight.remove(&offset) {
                s.stuck = Some(s.stuck.map_or(offset, |o| o.min(offset)));
                s.advance();
            }
        }
    }

    /// Forgets that these watermarks were committed (the commit failed), so the next
    /// [`OffsetTracker::take_commits`] returns them again.
    pub fn uncommit(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, _) in offsets {
            if let Some(s) = self.partitions.get_mut(tp) {
                s.committed = None;
            }
        }
    }

    /// Number of offsets in flight in this partition.
    pub fn in_flight(&self, tp: &TopicPartition) -> usize {
        self.partitions.get(tp).map_or(0, |s| s.in_flight.len())
    }

    /// Total offsets in flight.
    pub fn total_in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.in_flight.len()).sum()
    }

    /// Watermarks that moved since the last call, marked as committed.
    pub fn take_commits(&mut self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, s) in &mut self.partitions {
            if let Some(w) = s.watermark {
                if s.committed != Some(w) {
                    s.committed = Some(w);
                    out.push((tp.clone(), w));
                }
            }
        }
        out.sort();
        out
    }

    /// The last committed watermark of each partition (for lag metrics).
    pub fn committed(&self) -> Vec<(TopicPartition, Option<i64>)> {
        self.partitions
            .iter()
            .map(|(tp, s)| (tp.clone(), s.committed))
            .collect()
    }

    /// Assigned partitions.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    #[test]
    fn commits_only_the_contiguous_prefix() {
        let mut t = OffsetTracker::new();
        t.assign(tp());
        for o in 10..15 {
            t.start(&tp(), o);
        }
        t.finish(&tp(), 12);
        t.finish(&tp(), 13);
        // 10 and 11 still running: nothing may be committed past 10.
        assert_eq!(t.take_commits(), vec![(tp(), 10)]);
        t.finish(&tp(), 10);
        assert_eq!(t.take_commits(), vec![(tp(), 11)]);
        t.finish(&tp(), 11);
        assert_eq!(t.take_commits(), vec![(tp(), 14)]);
        t.finish(&tp(), 14);
        assert_eq!(t.take_commits(), vec![(tp(), 15)]);
        assert_eq!(t.take_commits(), vec![]);
        assert_eq!(t.total_in_flight(), 0);
    }

    #[test]
    fn unknown_or_repeated_finishes_are_ignored() {
        let mut t = OffsetTracker::new();
        t.assign(tp());
        t.start(&tp(), 0);
        t.finish(&tp(), 5);
        t.finish(&TopicPartition::new("other", 0), 0);
        assert_eq!(t.in_flight(&tp()), 1);
        t.finish(&tp(), 0);
        t.finish(&tp(), 0);
        assert_eq!(t.remove(&tp()), Some(1));
    }

    #[test]
    fn abandoned_offsets_are_never_committed_past() {
        let mut t = OffsetTracker::new();
        t.assign(tp());
        for o in 0..4 {
            t.start(&tp(), o);
        }
        t.finish(&tp(), 0);
        t.abandon(&tp(), 1);
        t.finish(&tp(), 2);
        t.finish(&tp(), 3);
        assert_eq!(t.total_in_flight(), 0);
        assert_eq!(t.take_commits(), vec![(tp(), 1)]);
        t.uncommit(&[(tp(), 1)]);
        assert_eq!(t.take_commits(), vec![(tp(), 1)]);
    }

    #[test]
    fn records_of_unassigned_partitions_are_refused() {
        let mut t = OffsetTracker::new();
        assert!(!t.start(&tp(), 7));
        assert!(t.take_commits().is_empty());
        t.assign(tp());
        assert!(t.start(&tp(), 7));
        t.finish(&tp(), 7);
        assert_eq!(t.remove(&tp()), Some(8));
        assert!(!t.start(&tp(), 8), "revoked: no longer ours");
    }

    #[test]
    fn nothing_to_commit_before_any_record() {
        let mut t = OffsetTracker::new();
        t.assign(tp());
        assert!(t.take_commits().is_empty());
        assert_eq!(t.remove(&tp()), None);
    }
}
