//! PodDisruptionBudgets: a drain of several nodes at once (an upgrade) may take a stage's
//! replicas down together, and its partitions would then stall until they come back.

use yaml_rust2::Yaml;

use super::tree::{int, map, v};
use super::Stage;

/// One replica of the stage may be evicted at a time; `None` below two replicas, where a
/// budget would block every drain of the node that runs it.
pub(super) fn pod_disruption_budget(s: &Stage) -> Option<Yaml> {
    if s.spec.replicas < 2 {
        return None;
    }
    Some(map([
        ("apiVersion", v("policy/v1")),
        ("kind", v("PodDisruptionBudget")),
        ("metadata", s.metadata()),
        (
            "spec",
            map([
                ("maxUnavailable", int(1)),
                ("selector", map([("matchLabels", s.selector())])),
            ]),
        ),
    ]))
}
