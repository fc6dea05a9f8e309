//! Who should own which partition: Kafka's cooperative-sticky assignment, in the small.
//!
//! Sticky first, because every move costs: the old owner drains the work it has in flight
//! before it lets go, and the new owner replays whatever was not committed. So a partition stays
//! with its member as long as that member still reads the topic and the balance allows it.
//! Balanced second: partitions without a (valid) owner go to the least-loaded member, then single
//! partitions move from the most loaded member to the least loaded one while they differ by two
//! or more. Taking from the busiest first means that, among members reading the same topics, a
//! join moves only what the joiner needs and a leave moves only the leaver's partitions: no
//! member gives some away and takes others in the same rebalance. Nothing random and no clock:
//! the outcome follows from the history of joins and leaves alone, so tests can predict it.

use std::cmp::Reverse;
use std::collections::HashMap;

/// Recomputes the target owner of every partition, in place.
///
/// `subscribers` maps each topic to the members reading it, in join order (ties go to the
/// oldest member). `targets` lists every partition of those topics by topic name, with its
/// current target: kept while the member still reads the topic, unless balancing needs it.
pub(super) fn assign(
    subscribers: &HashMap<&str, Vec<u64>>,
    targets: &mut [(&str, &mut Option<u64>)],
) {
    let candidates = |topic: &str| -> &[u64] { subscribers.get(topic).map_or(&[], Vec::as_slice) };
    let mut load: HashMap<u64, usize> = subscribers.values().flatten().map(|id| (*id, 0)).collect();
    for (topic, target) in targets.iter_mut() {
        match **target {
            Some(t) if candidates(topic).contains(&t) => *load.entry(t).or_default() += 1,
            _ => **target = None,
        }
    }
    for (topic, target) in targets.iter_mut() {
        if target.is_none() {
            **target = least_loaded(candidates(topic), &load);
            if let Some(t) = **target {
                *load.entry(t).or_default() += 1;
            }
        }
    }
    // One partition at a time, from the most loaded member with one to spare: a member that
    // gave one away and took another would cost two drains and two replays for nothing. Each
    // move lowers the sum of squared loads, so this ends.
    loop {
        let next = targets
            .iter()
            .enumerate()
            .filter_map(|(index, (topic, target))| {
                let owner = (**target)?;
                let best = least_loaded(candidates(topic), &load)?;
                (load[&owner] > load[&best] + 1).then_some((load[&owner], Reverse(index), best))
            })
            .max();
        let Some((_, Reverse(index), best)) = next else {
            break;
        };
        let target = &mut targets[index].1;
        if let Some(owner) = **target {
            *load.entry(owner).or_default() -= 1;
        }
        *load.entry(best).or_default() += 1;
        **target = Some(best);
    }
}

fn least_loaded(candidates: &[u64], load: &HashMap<u64, usize>) -> Option<u64> {
    candidates
        .iter()
        .copied()
        .min_by_key(|id| (load.get(id).copied().unwrap_or(0), *id))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::assign;

    /// Runs the assignor over `owners` (one entry per partition: topic and current target) for
    /// members given as (id, topics read), in join order.
    fn run(members: &[(u64, &[&str])], owners: &mut [(&str, Option<u64>)]) {
        let mut subscribers: HashMap<&str, Vec<u64>> = HashMap::new();
        for (id, topics) in members {
            for topic in *topics {
                subscribers.entry(topic).or_default().push(*id);
            }
        }
        let mut targets: Vec<(&str, &mut Option<u64>)> =
            owners.iter_mut().map(|(t, o)| (*t, o)).collect();
        assign(&subscribers, &mut targets);
    }

    fn loads(owners: &[(&str, Option<u64>)], members: &[u64]) -> Vec<usize> {
        members
            .iter()
            .map(|m| owners.iter().filter(|(_, o)| *o == Some(*m)).count())
            .collect()
    }

    #[test]
    fn a_fresh_group_is_balanced_and_ties_go_to_the_oldest() {
        let mut owners = vec![("t", None); 8];
        run(&[(1, &["t"]), (2, &["t"]), (3, &["t"])], &mut owners);
        assert_eq!(loads(&owners, &[1, 2, 3]), vec![3, 3, 2]);
        // Assigned in partition order, each to the least-loaded member, oldest first.
        let order: Vec<u64> = owners.iter().map(|(_, o)| o.unwrap()).collect();
        assert_eq!(order, vec![1, 2, 3, 1, 2, 3, 1, 2]);
    }

    #[test]
    fn a_joiner_takes_only_what_balance_needs_from_the_others() {
        let members: Vec<(u64, &[&str])> = vec![(1, &["t"]), (2, &["t"]), (3, &["t"]), (4, &["t"])];
        let mut owners = vec![("t", None); 12];
        run(&members, &mut owners);
        let before = owners.clone();
        let mut joined = members.clone();
        joined.push((5, &["t"]));
        run(&joined, &mut owners);
        let moved: Vec<usize> = (0..12).filter(|&p| owners[p] != before[p]).collect();
        // 3/3/3/3 becomes 3/3/2/2/2: two partitions move, both to the new member.
        assert_eq!(moved.len(), 2, "{owners:?}");
        assert!(moved.iter().all(|&p| owners[p].1 == Some(5)));
        let mut l = loads(&owners, &[1, 2, 3, 4, 5]);
        l.sort_unstable();
        assert_eq!(l, vec![2, 2, 2, 3, 3]);
    }

    #[test]
    fn a_joiner_takes_from_the_busiest_and_nobody_gives_and_takes() {
        // Two members of 8 each; a third joins: 6/5/5 needs 5 moves, all to the joiner. Taking
        // from whoever is above the joiner would also move one between the first two.
        let mut owners = vec![("t", None); 16];
        run(&[(1, &["t"]), (2, &["t"])], &mut owners);
        for (p, owner) in owners.iter_mut().enumerate() {
            owner.1 = Some(if p < 8 { 2 } else { 1 });
        }
        let before = owners.clone();
        run(&[(1, &["t"]), (2, &["t"]), (3, &["t"])], &mut owners);
        let moved: Vec<usize> = (0..16).filter(|&p| owners[p] != before[p]).collect();
        assert_eq!(moved.len(), 5, "{owners:?}");
        assert!(moved.iter().all(|&p| owners[p].1 == Some(3)), "{owners:?}");
        let mut l = loads(&owners, &[1, 2, 3]);
        l.sort_unstable();
        assert_eq!(l, vec![5, 5, 6]);
    }

    #[test]
    fn a_leaver_s_partitions_spread_and_nobody_else_s_move() {
        let mut owners = vec![("t", None); 9];
        run(&[(1, &["t"]), (2, &["t"]), (3, &["t"])], &mut owners);
        let before = owners.clone();
        run(&[(1, &["t"]), (3, &["t"])], &mut owners);
        for (p, (was, now)) in before.iter().zip(&owners).enumerate() {
            if was.1 != Some(2) {
                assert_eq!(was, now, "partition {p} moved though its owner stayed");
            }
        }
        let mut l = loads(&owners, &[1, 3]);
        l.sort_unstable();
        assert_eq!(l, vec![4, 5]);
    }

    #[test]
    fn partitions_go_only_to_members_reading_their_topic() {
        let mut owners = vec![
            ("t", None),
            ("t", None),
            ("t", None),
            ("t", None),
            ("u", None),
            ("u", None),
        ];
        run(&[(1, &["t"]), (2, &["t", "u"])], &mut owners);
        assert!(owners.iter().all(|(t, o)| *t == "t" || *o == Some(2)));
        assert_eq!(loads(&owners, &[1, 2]), vec![3, 3]);
        // Nobody reads `u` any more: its partitions have no owner.
        run(&[(1, &["t"])], &mut owners);
        assert!(owners.iter().all(|(t, o)| (*t == "t") == (*o == Some(1))));
    }
}
