//! Scale up (SPEC A5 step 2 and part B): give each waiting queue item a free
//! executor — one already there or booting, else a started agent, else a
//! created one within the env's caps.
//!
//! - `markers`: which items a working marker covers; stale markers go;
//! - `capacity`: the free executors of each label's providers;
//! - `stopped`: which stopped agent to start;
//! - `caps`: creates within the caps, and make-room;
//! - `spare`: the spare executors' starts and creates, after every queue item;
//! - `warm`: the warm pools' creates, last.

mod capacity;
mod caps;
mod markers;
mod spare;
mod stopped;
mod warm;

use std::collections::{BTreeMap, BTreeSet};

use crate::counter::Counter;
use crate::job_key::job_key;
use crate::label::parse_label;
use crate::model::{Label, QueueItem};

use super::interruption::{Replacement, Taken};
use super::snapshot::observed;
use super::{Action, Plan, PlanConfig, Snapshot};
use capacity::{Pool, Provider};
use caps::Usage;
use markers::Sorted;

struct ScaleUp<'a> {
    cfg: &'a PlanConfig,
    snap: Snapshot<'a>,
    /// Instances some action of this pass already uses.
    claimed: &'a mut BTreeSet<String>,
    rng: &'a mut fastrand::Rng,
    plan: &'a mut Plan,
    known_envs: BTreeSet<String>,
    /// Free executors per provider; an instance with several labels has one
    /// entry shared by all its pools, so it is never counted twice.
    free: BTreeMap<Provider, u32>,
    /// Providers per (env, label), built on first use.
    pools: BTreeMap<(String, String), Pool>,
    usage: BTreeMap<String, Usage>,
    creates: usize,
}

pub(super) fn plan(
    cfg: &PlanConfig,
    snap: &Snapshot<'_>,
    claimed: &mut BTreeSet<String>,
    taken: &Taken,
    rng: &mut fastrand::Rng,
    plan: &mut Plan,
) {
    let mut up = ScaleUp {
        cfg,
        snap: *snap,
        claimed,
        rng,
        plan,
        known_envs: cfg.known_envs(),
        free: BTreeMap::new(),
        pools: BTreeMap::new(),
        usage: BTreeMap::new(),
        creates: 0,
    };
    up.run(&taken.replacements);
}

impl ScaleUp<'_> {
    fn run(&mut self, replacements: &[Replacement]) {
        let snap = self.snap;
        let items: Vec<(&QueueItem, String)> =
            snap.dump.queue.iter().map(|i| (i, job_key(&i.job_name, i.parameters.as_deref()))).collect();
        let Sorted { handled, unhandled } = self.sort_by_marker(&items);

        // Handled items come first: the agents made for them are in the pools.
        for (item, key) in handled {
            if let Some(label) = self.quiet_label(item) {
                if let Some(provider) = self.take_slot(&label, &[]) {
                    self.plan.debug(Some(key), format!("{}: waits for {provider}", item.job_name));
                }
            }
        }
        // The at-risk builds of warned agents before new items: theirs ran
        // already and will be retried.
        for replacement in replacements {
            self.replace(replacement);
        }
        for (item, key) in unhandled {
            self.provide(item, key);
        }
        // Then the spares, refilled from the pools; last, the pools get what
        // the queue and the spares left of the caps.
        self.keep_spares();
        self.fill_warm_pools();
        self.remove_stale_markers(&items);
    }

    /// The label of an already handled item, when it can hold a slot.
    fn quiet_label(&self, item: &QueueItem) -> Option<Label> {
        let label = parse_label(&item.label, &self.known_envs).ok()?;
        observed(self.snap.envs, &label.env).ok()?;
        Some(label)
    }

    fn provide(&mut self, item: &QueueItem, key: &str) {
        let job = &item.job_name;
        if item.label.trim().is_empty() {
            self.plan.debug(Some(key), format!("{job}: no label, not an agent of ours"));
            return;
        }
        let label = match parse_label(&item.label, &self.known_envs) {
            Ok(label) => label,
            Err(_) if self.served_by_jenkins_itself(&item.label) => {
                self.plan.debug(
                    Some(key),
                    format!("{job}: label {} is served by the controller or a node not ours", item.label),
                );
                return;
            }
            Err(e) => {
                self.plan.count(Counter::UnknownLabel);
                self.plan.info(Some(key), format!("{job}: {e}; no agent is made for it"));
                return;
            }
        };
        if !self.cfg.instance_types.allows(&label.instance_type) {
            self.plan.count_once(Counter::InstanceTypeRefused, item_subject(key, item));
            self.plan.info(
                Some(key),
                format!(
                    "{job}: label {} asks for {}, which --instance_types does not admit; no agent is made for it",
                    label.raw, label.instance_type
                ),
            );
            return;
        }
        let instances = match observed(self.snap.envs, &label.env) {
            Ok(instances) => instances,
            Err(e) => {
                self.plan.info(Some(key), format!("{job}: {e}; label {} is left for a later pass", label.raw));
                return;
            }
        };
        let spared = self.booting_pool_agents(instances, &label);
        if let Some(provider) = self.take_slot(&label, &spared) {
            if self.is_online_agent(&provider, instances) {
                // The original's job_on_queue: the item waits although an
                // online agent of its label has a free executor (Jenkins has
                // not assigned it yet, or throttling holds it back). Once per
                // item, as the original's marker made it.
                self.plan.count_once(Counter::JobOnQueue, item_subject(key, item));
            }
            self.plan.debug(Some(key), format!("{job}: absorbed by {provider}"));
            return;
        }
        // A start EC2 refused earlier is tried again for a queued item, as
        // before; whether it should skip too, as the spare does, is a
        // separate decision.
        if let Some((inst, why)) = self.pick_stopped(instances, &label, item.last_built_on.as_deref(), &[]) {
            let id = inst.id.clone();
            let tag_warmed = inst.warm.is_some();
            self.claimed.insert(id.clone());
            self.add_slots(Provider::Instance(id.clone()), label.pricing.executors() - 1);
            self.plan.act(Action::Start {
                env: label.env.clone(),
                instance_id: id,
                label: label.raw.clone(),
                job_key: key.to_string(),
                why,
                spare: false,
                tag_warmed,
            });
            return;
        }
        self.create(instances, label, item, key, None);
    }

    /// Launches an agent for the label of a warned agent whose build is at
    /// risk, within the caps.
    fn replace(&mut self, r: &Replacement) {
        let (Ok(label), Ok(instances)) = (parse_label(&r.label, &self.known_envs), observed(self.snap.envs, &r.env))
        else {
            return;
        };
        let item =
            QueueItem { job_name: format!("the build on {}", r.node), label: r.label.clone(), ..QueueItem::default() };
        let key = format!("replacement-of-{}", r.instance_id);
        self.create(instances, label, &item, &key, Some(r.instance_id.clone()));
    }

    /// The controller (the GC job runs on `master_node`) or a node that is
    /// not one of our agents carries the label: nobody waits for us.
    fn served_by_jenkins_itself(&self, label: &str) -> bool {
        let dump = self.snap.dump;
        let label = label.trim();
        dump.controller_labels.iter().any(|l| l == label)
            || dump.nodes.iter().any(|n| !n.description.contains("Created by Swarm") && n.has_label(label))
    }
}

/// One queue item, as the subject of a counter counted once per item.
fn item_subject(key: &str, item: &QueueItem) -> String {
    format!("{key} {}", item.queue_id.map_or_else(|| "-".to_string(), |id| id.to_string()))
}

#[cfg(test)]
fn run(s: &super::test_kit::Scene) -> Plan {
    super::plan_pass(&super::test_kit::cfg(), &s.view(), 42)
}

#[cfg(test)]
fn acts(s: &super::test_kit::Scene) -> Vec<String> {
    super::test_kit::brief(&run(s).actions)
}

#[cfg(test)]
mod tests {
    use super::run;
    use crate::counter::Counter;
    use crate::model::InstanceState::*;
    use crate::model::Node;
    use crate::plan::test_kit::*;
    use crate::plan::*;

    #[test]
    fn items_for_the_controller_or_a_static_node_are_not_unknown_labels() {
        let mut s = snap(vec![("dev", vec![])]).queue(vec![item("gc", "master_node"), item("win", "windows")]);
        s.dump.controller_labels = vec!["built-in".into(), "master_node".into()];
        let windows = Node {
            description: "static Windows box".into(),
            labels: vec!["windows".into()],
            ..online("win1", "i-9", "x", 1)
        };
        s.dump.nodes = vec![windows];
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(count(&plan.counts, Counter::UnknownLabel), 0);
        assert_eq!(info_notes(&plan.notes), Vec::<&str>::new());
        // A label carried only by one of our agents is no excuse.
        let s = snap(vec![("dev", vec![])])
            .queue(vec![item("x", "linux")])
            .nodes(vec![Node { labels: vec!["linux".into()], ..online("dev-1", "i-1", "dev", 1) }]);
        assert_eq!(count(&run(&s).counts, Counter::UnknownLabel), 1);
    }

    #[test]
    fn a_label_the_controller_does_not_carry_is_still_unknown() {
        let mut s = snap(vec![("dev", vec![])]).queue(vec![item("x", "linux")]);
        s.dump.controller_labels = vec!["built-in".into(), "master_node".into()];
        let plan = run(&s);
        assert_eq!(count(&plan.counts, Counter::UnknownLabel), 1);
        assert_eq!(info_notes(&plan.notes).len(), 1);
    }

    #[test]
    fn a_label_asking_for_an_unadmitted_type_gets_nothing_not_even_room() {
        // At the cap with a stopped agent make-room could take.
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Running, "dev_shared").launched_ago(7200), agent("i-2", Stopped, "dev_shared")],
        )])
        .queue(vec![item("big", "dev_x2iedn.32xlarge"), item("spot", "dev_spot_p4d.24xlarge")]);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(plan.once.iter().filter(|(k, _)| *k == Counter::InstanceTypeRefused).count(), 2, "once per item");
        assert!(info_notes(&plan.notes)[0].contains("x2iedn.32xlarge, which --instance_types does not admit"));
    }

    #[test]
    fn label_expression_is_skipped_with_note() {
        let s = snap(vec![("dev", vec![])]).queue(vec![item("job", "dev && linux")]);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(count(&plan.counts, Counter::UnknownLabel), 1);
        assert_eq!(
            plan.notes,
            [Note {
                job_key: Some(key("job")),
                level: NoteLevel::Info,
                text: "job: label `dev && linux` is a label expression; only plain ENV[_shared|_spot][_TYPE] labels get agents; no agent is made for it".into(),
            }]
        );
    }

    #[test]
    fn unknown_label_is_counted_and_noted_per_item() {
        let s =
            snap(vec![("dev", vec![])]).queue(vec![item("a", "linux"), item("b", "dev_linux"), item("c", "dev_prod")]);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(count(&plan.counts, Counter::UnknownLabel), 3);
        let keys: Vec<_> = plan.notes.iter().map(|n| n.job_key.clone().unwrap()).collect();
        assert_eq!(keys, [key("a"), key("b"), key("c")]);
    }

    #[test]
    fn item_without_label_is_not_ours() {
        let s = snap(vec![("dev", vec![])]).queue(vec![item("job", "")]);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert!(plan.counts.is_empty());
        assert_eq!(plan.notes.len(), 1);
        assert_eq!(plan.notes[0].level, NoteLevel::Debug);
    }

    #[test]
    fn failed_env_observation_is_left_alone() {
        let s = snap(vec![("dev", vec![])]).env_err("prod").queue(vec![
            item("a", "prod"),
            item("b", "qa"),
            item("c", "dev"),
        ]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev"]);
        assert_eq!(
            info_notes(&plan.notes),
            [
                "a: env prod could not be observed (AccessDenied); label prod is left for a later pass",
                "b: env qa was not observed; label qa is left for a later pass",
            ]
        );
        assert_eq!(plan.notes[0].job_key, Some(key("a")));
    }

    #[test]
    fn empty_queue_and_no_markers_plan_nothing() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Running, "dev")])]);
        assert_eq!(run(&s), Plan::default());
    }
}
