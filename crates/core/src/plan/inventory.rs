//! The inventory sweep (SPEC A9), at setup and every 15th pass: volumes of
//! our agents are made delete-on-termination, agents are counted per label
//! set, stopped agents on an old AMI go, and running instances that never
//! became nodes are reported.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::model::{EnvObservation, Instance, InstanceState, JenkinsDump};

use crate::counter::Counter;

use super::nodes::{is_busy, node_of};
use super::output::{devices_lacking_delete_on_termination, terminate};
use super::snapshot::age;
use super::{Action, Inventory, Plan, PlanConfig, TerminateReason};

/// A running agent that is still no node after this long never will be.
const NOT_A_SLAVE_AFTER: Duration = Duration::from_secs(3600);

/// `terminated`: instances the pass's own plan terminates. The sweep runs on
/// the snapshot taken before those actions, so it leaves them alone: an
/// agent make-room just terminated is not terminated (and counted) again.
pub fn plan_inventory(
    cfg: &PlanConfig,
    envs: &BTreeMap<String, EnvObservation>,
    dump: Option<&JenkinsDump>,
    now: SystemTime,
    terminated: &BTreeSet<String>,
) -> Inventory {
    let mut plan = Plan::default();
    let mut instance_count = BTreeMap::new();
    for (env, observation) in envs {
        let instances = match observation {
            Ok(instances) => instances,
            Err(e) => {
                // Whoever observed the env reports the failure.
                plan.debug(None, format!("inventory: env {env} could not be observed ({e}); skipped"));
                continue;
            }
        };
        for inst in instances.iter().filter(|i| cfg.is_ours(env, i) && i.state.is_active()) {
            if terminated.contains(&inst.id) {
                plan.debug(None, format!("inventory: {env}: {} is terminated this pass already", inst.id));
                continue;
            }
            *instance_count.entry(count_key(env, inst)).or_default() += 1;
            if inst.master_tag.is_none() {
                let master = cfg.masters.get(env).cloned().unwrap_or_default();
                plan.act(Action::TagMaster { env: env.clone(), instance_id: inst.id.clone(), master });
            }

            let node = dump.and_then(|d| node_of(&d.nodes, inst));
            if inst.state == InstanceState::Stopped && cfg.on_replaced_ami(env, inst) {
                if node.is_some_and(is_busy) {
                    plan.info(
                        None,
                        format!("{env}: {} is on old AMI {} but its node is busy; kept", inst.id, inst.image_id),
                    );
                    set_delete_on_termination(&mut plan, env, inst);
                } else {
                    terminate(&mut plan, env, inst, TerminateReason::OldAmi { node: None, ami: inst.image_id.clone() });
                }
            } else {
                set_delete_on_termination(&mut plan, env, inst);
            }

            let running_long =
                inst.state == InstanceState::Running && inst.launched.is_some_and(|t| age(now, t) > NOT_A_SLAVE_AFTER);
            if running_long && dump.is_some() && node.is_none() {
                plan.count(Counter::InstanceNotSlave);
                plan.info(None, format!("{env}: {} has been running for over an hour but is no Jenkins node", inst.id));
            }
        }
    }
    Inventory { actions: plan.actions, notes: plan.notes, counts: plan.counts, instance_count }
}

/// The original's `properties_instance_count.csv` column: the agent's labels
/// joined by `_` (`dev_spot`), `<env>_None` when its `slave_data` tag is
/// unreadable, so the Plot plugin's series keep their names at cut-over.
pub(super) fn count_key(env: &str, inst: &Instance) -> String {
    match &inst.slave_labels {
        Some(labels) if !labels.is_empty() => {
            let mut labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            labels.sort_unstable();
            labels.dedup();
            labels.join("_")
        }
        _ => format!("{env}_None"),
    }
}

fn set_delete_on_termination(plan: &mut Plan, env: &str, inst: &Instance) {
    let devices = devices_lacking_delete_on_termination(inst);
    if !devices.is_empty() {
        plan.act(Action::SetDeleteOnTermination { env: env.to_string(), instance_id: inst.id.clone(), devices });
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_kit::*;
    use super::*;
    use crate::model::InstanceState::*;
    use crate::model::Node;
    use crate::plan::NoteLevel;

    fn inventory(envs: Vec<(&str, Vec<Instance>)>, nodes: Option<Vec<Node>>) -> Inventory {
        let s = snap(envs);
        let dump = nodes.map(|nodes| JenkinsDump { nodes, ..JenkinsDump::default() });
        plan_inventory(&cfg(), &s.envs, dump.as_ref(), now(), &BTreeSet::new())
    }

    #[test]
    fn agents_of_this_master_from_before_the_tag_are_adopted_others_left_alone() {
        let python_era = agent("i-1", Stopped, "dev").with(|i| i.master_tag = None);
        let other_master = agent("i-2", Stopped, "dev").ami("ami-old").with(|i| {
            i.master_tag = None;
            i.slave_data_master = Some("https://other-jenkins.example.com/".into());
        });
        // The tag decides over slave_data: launched by the other master with
        // a copied slave_data.
        let tagged_other = agent("i-3", Stopped, "dev").ami("ami-old").with(|i| {
            i.master_tag = Some("https://other-jenkins.example.com".into());
        });
        let inv = inventory(vec![("dev", vec![python_era, other_master, tagged_other])], Some(vec![]));
        assert_eq!(brief(&inv.actions), ["tag i-1"]);
        assert_eq!(
            inv.actions[0].to_string(),
            "dev: tag i-1 jenkins_master=https://jenkins.example.com/ (an agent of this master from before the tag)"
        );
        assert_eq!(inv.instance_count.values().sum::<u64>(), 1, "only this master's agents are counted");
    }

    #[test]
    fn volumes_lacking_delete_on_termination_get_it() {
        let inv = inventory(
            vec![(
                "dev",
                vec![
                    agent("i-1", Running, "dev").volume("/dev/xvda", false).volume("/dev/sdb", true),
                    agent("i-2", Stopped, "dev").volume("/dev/xvda", true),
                    agent("i-3", Pending, "dev"),
                ],
            )],
            None,
        );
        assert_eq!(
            inv.actions,
            [Action::SetDeleteOnTermination {
                env: "dev".into(),
                instance_id: "i-1".into(),
                devices: vec!["/dev/xvda".into()]
            }]
        );
    }

    #[test]
    fn foreign_and_terminated_instances_are_not_touched_or_counted() {
        let inv = inventory(
            vec![(
                "dev",
                vec![
                    agent("i-1", Running, "dev").named(Some("database")).volume("/dev/xvda", false),
                    agent("i-2", Stopped, "dev").named(None).ami("ami-old"),
                    agent("i-3", Terminated, "dev").volume("/dev/xvda", false),
                    agent("i-4", ShuttingDown, "dev").ami("ami-old"),
                ],
            )],
            Some(vec![]),
        );
        assert_eq!(inv, Inventory::default());
    }

    #[test]
    fn agents_are_counted_per_env_and_label_set() {
        let inv = inventory(
            vec![
                (
                    "dev",
                    vec![
                        agent("i-1", Running, "dev"),
                        agent("i-2", Stopped, "dev"),
                        agent("i-3", Stopping, "dev_spot"),
                        agent("i-4", Pending, "dev")
                            .with(|i| i.slave_labels = Some(vec!["dev".into(), "dev_c5.large".into()])),
                        agent("i-5", Running, "dev").with(|i| i.slave_labels = None),
                        agent("i-6", Terminated, "dev"),
                    ],
                ),
                ("prod", vec![agent("i-7", Running, "prod_shared")]),
            ],
            None,
        );
        let expected: BTreeMap<String, u64> = [
            // The original's keys: the label set joined by `_`.
            ("dev", 2),
            ("dev_dev_c5.large", 1),
            ("dev_spot", 1),
            ("dev_None", 1),
            ("prod_shared", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(inv.instance_count, expected);
    }

    #[test]
    fn an_agent_with_an_empty_label_list_is_counted_as_env_none() {
        let empty = agent("i-1", Running, "dev").with(|i| i.slave_labels = Some(vec![]));
        let inv = inventory(vec![("dev", vec![empty])], None);
        assert_eq!(inv.instance_count, BTreeMap::from([("dev_None".to_string(), 1)]));
    }

    #[test]
    fn stopped_agent_on_old_ami_is_terminated_after_delete_on_termination() {
        let inv = inventory(
            vec![(
                "dev",
                vec![agent("i-1", Stopped, "dev").ami("ami-old").volume("/dev/xvda", false).volume("/dev/sdf", false)],
            )],
            Some(vec![]),
        );
        assert_eq!(
            inv.actions,
            [
                Action::SetDeleteOnTermination {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    devices: vec!["/dev/xvda".into(), "/dev/sdf".into()],
                },
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::OldAmi { node: None, ami: "ami-old".into() },
                },
            ]
        );
    }

    #[test]
    fn running_or_current_agents_are_not_terminated_for_their_ami() {
        let inv = inventory(
            vec![
                (
                    "dev",
                    vec![
                        agent("i-1", Running, "dev").ami("ami-old"),
                        agent("i-2", Stopped, "dev"),
                        agent("i-3", Stopping, "dev").ami("ami-old"),
                    ],
                ),
                ("qa", vec![agent("i-4", Stopped, "qa").ami("ami-anything")]),
            ],
            None,
        );
        assert_eq!(inv.actions, []);
    }

    #[test]
    fn busy_node_is_protected_in_inventory() {
        let busy = Node { busy_executors: Some(1), ..online("dev-10.0.0.1", "i-1", "dev", 0) };
        let inv = inventory(vec![("dev", vec![agent("i-1", Stopped, "dev").ami("ami-old")])], Some(vec![busy]));
        assert_eq!(inv.actions, []);
        assert_eq!(info_notes(&inv.notes), ["dev: i-1 is on old AMI ami-old but its node is busy; kept"]);
    }

    #[test]
    fn running_agent_that_never_became_a_node_is_counted() {
        let inv = inventory(
            vec![(
                "dev",
                vec![
                    agent("i-1", Running, "dev").launched_ago(3601),
                    agent("i-2", Running, "dev").launched_ago(3600),
                    agent("i-3", Running, "dev").launched_ago(7200).ip("10.0.0.3"),
                    agent("i-4", Running, "dev").with(|i| i.launched = None),
                    agent("i-5", Stopped, "dev").launched_ago(7200),
                ],
            )],
            Some(vec![Node { instance_id: None, ..online("dev-10.0.0.3", "x", "dev", 1) }]),
        );
        assert_eq!(count(&inv.counts, Counter::InstanceNotSlave), 1);
        assert_eq!(info_notes(&inv.notes), ["dev: i-1 has been running for over an hour but is no Jenkins node"]);
        assert_eq!(inv.actions, []);
    }

    #[test]
    fn without_a_dump_no_instance_is_called_not_a_slave() {
        let inv = inventory(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(7200)])], None);
        assert!(inv.counts.is_empty());
        assert!(inv.notes.is_empty());
    }

    #[test]
    fn failed_env_observation_is_left_alone() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev").ami("ami-old")])]).env_err("prod");
        let inv = plan_inventory(&cfg(), &s.envs, None, now(), &BTreeSet::new());
        assert_eq!(brief(&inv.actions), ["terminate i-1 old-ami"]);
        assert!(!inv.instance_count.keys().any(|k| k.starts_with("prod")));
        assert_eq!(inv.notes.len(), 1);
        assert_eq!(inv.notes[0].level, NoteLevel::Debug);
    }
}
