//! Which stopped agent to start for a queue item: the one its job last ran
//! on, else a random one of its label.

use crate::model::{Instance, InstanceState, Label};
use crate::plan::nodes::node_name_tail;

use super::ScaleUp;

impl ScaleUp<'_> {
    /// The stopped agents of the label that may be started.
    pub(super) fn stopped_candidates<'i>(&self, instances: &'i [Instance], label: &Label) -> Vec<&'i Instance> {
        instances
            .iter()
            .filter(|i| {
                i.state == InstanceState::Stopped
                    && self.serves(i, label)
                    && !self.claimed.contains(&i.id)
                    && !self.cfg.on_replaced_ami(&label.env, i)
            })
            .collect()
    }

    /// A stopped agent of the label to start, other than those in `skip`:
    /// the one the job last ran on, else a random one. Agents on a replaced
    /// AMI are left for the inventory.
    pub(super) fn pick_stopped<'i>(
        &mut self,
        instances: &'i [Instance],
        label: &Label,
        last_built_on: Option<&str>,
        skip: &[&str],
    ) -> Option<(&'i Instance, String)> {
        let mut candidates = self.stopped_candidates(instances, label);
        candidates.retain(|i| !skip.contains(&i.id.as_str()));
        if let Some(last) = last_built_on {
            let tail = node_name_tail(last);
            let last_used = candidates.iter().find(|i| {
                tail.is_some_and(|t| i.private_ip.as_deref() == Some(t)) || last.ends_with(&format!("-{}", i.id))
            });
            if let Some(inst) = last_used {
                return Some((inst, format!("last used {last}")));
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let inst = candidates[self.rng.usize(..candidates.len())];
        Some((inst, format!("one of {} stopped agents", candidates.len())))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::model::InstanceState::*;
    use crate::model::QueueItem;
    use crate::plan::scale_up::{acts, run};
    use crate::plan::test_kit::*;
    use crate::plan::*;

    #[test]
    fn starts_last_used_instance_before_creating() {
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Stopped, "dev").ip("10.0.1.5"),
                agent("i-2", Stopped, "dev").ip("10.0.1.7"),
                agent("i-3", Stopped, "dev").ip("10.0.1.9"),
            ],
        )])
        .queue(vec![QueueItem { last_built_on: Some("dev-10.0.1.7".into()), ..item("job-000", "dev") }]);
        for seed in 0..10 {
            let plan = plan_pass(&cfg(), &s.view(), seed);
            assert_eq!(
                plan.actions,
                [Action::Start {
                    env: "dev".into(),
                    instance_id: "i-2".into(),
                    label: "dev".into(),
                    job_key: key("job-000"),
                    why: "last used dev-10.0.1.7".into(),
                    spare: false,
                    tag_warmed: false,
                }]
            );
        }
    }

    #[test]
    fn last_used_agent_is_also_found_by_swarm_name_with_instance_id() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-0abc", Stopped, "dev")])])
            .queue(vec![QueueItem { last_built_on: Some("dev-i-0abc".into()), ..item("job", "dev") }]);
        for seed in 0..10 {
            assert_eq!(brief(&plan_pass(&cfg(), &s.view(), seed).actions), ["start i-0abc dev"]);
        }
    }

    #[test]
    fn starts_a_random_stopped_agent_when_the_last_one_is_gone() {
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Stopped, "dev").ip("10.0.1.5"), agent("i-2", Stopped, "dev").ip("10.0.1.6")],
        )])
        .queue(vec![QueueItem { last_built_on: Some("dev-10.0.1.99".into()), ..item("job", "dev") }]);
        let picked: BTreeSet<Vec<String>> =
            (0..30).map(|seed| brief(&plan_pass(&cfg(), &s.view(), seed).actions)).collect();
        let expected: BTreeSet<Vec<String>> =
            [vec!["start i-1 dev".to_string()], vec!["start i-2 dev".to_string()]].into_iter().collect();
        assert_eq!(picked, expected);
    }

    #[test]
    fn each_item_starts_its_own_stopped_agent() {
        let mut c = cfg();
        c.max_on_demand = 3;
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopped, "dev")])]).queue(vec![
            item("a", "dev"),
            item("b", "dev"),
            item("c", "dev"),
        ]);
        let got = brief(&plan_pass(&c, &s.view(), 42).actions);
        assert_eq!(got.len(), 3);
        let mut started: Vec<&str> = got[..2].iter().map(|a| a.as_str()).collect();
        started.sort();
        assert_eq!(started, ["start i-1 dev", "start i-2 dev"]);
        assert_eq!(got[2], "create dev dev");
    }

    #[test]
    fn started_agents_count_against_the_cap() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopped, "dev")])]).queue(vec![
            item("a", "dev"),
            item("b", "dev"),
            item("c", "dev"),
        ]);
        let plan = run(&s);
        assert_eq!(plan.actions.len(), 2);
        assert!(plan.actions.iter().all(|a| a.kind() == "start"));
        assert_eq!(
            info_notes(&plan.notes),
            ["c: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits"]
        );
    }

    #[test]
    fn started_shared_agent_serves_four_more_items() {
        let s = |n: usize| {
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev_shared")])])
                .queue((0..n).map(|n| item(&format!("job-{n}"), "dev_shared")).collect())
        };
        assert_eq!(acts(&s(5)), ["start i-1 dev_shared"]);
        assert_eq!(acts(&s(6)), ["start i-1 dev_shared", "create dev dev_shared"]);
    }

    #[test]
    fn fresh_start_marker_makes_an_untagged_instance_a_candidate() {
        let untagged = agent("i-1", Stopped, "dev").with(|i| i.slave_labels = None);
        let s = snap(vec![("dev", vec![untagged])]).queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
        let s = s.start_marker("dev", "i-1", "dev", 60);
        assert_eq!(acts(&s), ["start i-1 dev"]);
    }

    #[test]
    fn stale_start_marker_is_removed_and_no_longer_matches() {
        let untagged = agent("i-1", Stopped, "dev").with(|i| i.slave_labels = None);
        let s =
            snap(vec![("dev", vec![untagged])]).queue(vec![item("job", "dev")]).start_marker("dev", "i-1", "dev", 300);
        assert_eq!(acts(&s), ["create dev dev", "rm-start dev__i-1.start_instance"]);
    }

    #[test]
    fn start_marker_of_another_env_or_label_does_not_match() {
        let untagged = agent("i-1", Stopped, "dev").with(|i| i.slave_labels = None);
        let s = snap(vec![("dev", vec![untagged])])
            .queue(vec![item("job", "dev")])
            .start_marker("prod", "i-1", "dev", 10)
            .start_marker("dev", "i-1", "dev_spot", 10);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn stopped_agent_of_another_label_is_not_started() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_spot"), agent("i-2", Stopped, "dev_shared")])])
            .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn stopped_agent_on_a_replaced_ami_is_not_started() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev").ami("ami-old")])]).queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn stopping_agent_is_not_started() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopping, "dev")])]).queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn instance_without_our_name_tag_is_never_started() {
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Stopped, "dev").named(Some("someone-else")), agent("i-2", Pending, "dev").named(None)],
        )])
        .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }
}
