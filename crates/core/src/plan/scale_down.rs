//! Scale down (SPEC A5 step 3 and part B): nodes the Groovy idle policy
//! marked `terminate_me` are stopped, or terminated when spot (or an
//! on-demand stand-in for a spot label) or on an old AMI — unless the
//! instance is not ours or a build is running on it.

use std::collections::BTreeSet;

use crate::label::parse_label;
use crate::model::{Instance, InstanceState, Node, Pricing};

use crate::counter::Counter;

use super::nodes::is_busy;
use super::output::terminate;
use super::snapshot::{age, observed};
use super::{Action, Plan, PlanConfig, Snapshot, TerminateReason};

pub(super) fn plan(cfg: &PlanConfig, snap: &Snapshot<'_>, claimed: &mut BTreeSet<String>, plan: &mut Plan) {
    let known_envs = cfg.known_envs();
    for node in snap.dump.nodes.iter().filter(|n| n.offline && n.has_label("swarm") && n.terminate_me) {
        retire(cfg, snap, &known_envs, node, claimed, plan);
    }
}

/// The env a node belongs to: its first label that is an env or names one.
fn node_env(node: &Node, known_envs: &BTreeSet<String>) -> Option<String> {
    node.labels.iter().find_map(|l| {
        if known_envs.contains(l) {
            Some(l.clone())
        } else {
            parse_label(l, known_envs).ok().map(|label| label.env)
        }
    })
}

/// `inst` was launched for a spot label (`ENV_spot[_TYPE]`).
fn serves_a_spot_label(inst: &Instance, known_envs: &BTreeSet<String>) -> bool {
    inst.slave_labels
        .iter()
        .flatten()
        .any(|l| parse_label(l, known_envs).is_ok_and(|label| label.pricing == Pricing::Spot))
}

fn retire(
    cfg: &PlanConfig,
    snap: &Snapshot<'_>,
    known_envs: &BTreeSet<String>,
    node: &Node,
    claimed: &mut BTreeSet<String>,
    plan: &mut Plan,
) {
    let name = &node.name;
    let Some(id) = node.instance_id.as_deref() else {
        plan.count_once(Counter::ErrorStoppingInstance, name.as_str());
        plan.info(None, format!("node {name}: no InstanceID= in its description; cannot stop it"));
        return;
    };
    let Some(env) = node_env(node, known_envs) else {
        plan.count_once(Counter::ErrorStoppingInstance, format!("{name} {id}"));
        plan.info(None, format!("node {name}: no label names a known env; cannot stop {id}"));
        return;
    };
    let instances = match observed(snap.envs, &env) {
        Ok(instances) => instances,
        Err(e) => {
            // Whoever observed the env reports the failure; this is routine.
            plan.debug(None, format!("node {name}: {e}; {id} is left alone this pass"));
            return;
        }
    };
    let Some(inst) = instances.iter().find(|i| i.id == id) else {
        // Typically terminated over an hour ago while Jenkins still lists
        // the node: a lasting condition, counted once, not every pass.
        plan.count_once(Counter::ErrorStoppingInstance, format!("{name} {id}"));
        plan.info(None, format!("node {name}: instance {id} is not in {env}"));
        return;
    };
    if matches!(inst.state, InstanceState::ShuttingDown | InstanceState::Terminated) {
        plan.debug(None, format!("node {name}: {id} is already {}", inst.state.as_str()));
        return;
    }
    if !cfg.is_ours(&env, inst) {
        plan.info(
            None,
            format!(
                "node {name}: {env} instance {id} is not an agent of this master (named {}, tagged for {}); it is never touched",
                cfg.slave_name,
                cfg.masters.get(&env).map_or("?", String::as_str)
            ),
        );
        return;
    }
    // We started it moments ago for a queued job: the node still carries the
    // offline mark from before it was stopped, until Swarm reconnects it.
    if let Some(m) =
        snap.markers.started.iter().find(|m| m.env == env && m.instance_id == id && m.age < cfg.working_ttl)
    {
        plan.debug(
            None,
            format!(
                "node {name}: {id} was started for {} {}s ago; waiting for its node to reconnect",
                m.labels.join(" "),
                m.age.as_secs()
            ),
        );
        return;
    }
    // The description is written by whoever registers the node: any build
    // can register a Swarm node that names another instance. The node's name
    // must name the instance too, as every agent's does (`ENV-<private ip>`).
    if !names(&node.name, inst) {
        plan.count_once(Counter::ErrorStoppingInstance, format!("{name} {id}"));
        plan.info(
            None,
            format!("node {name}: its description names {id}, its name does not; not trusted, {id} is left alone"),
        );
        return;
    }
    // Every node that maps to the instance, not only this one: a build on
    // any of them keeps it.
    let busy_elsewhere =
        snap.dump.nodes.iter().any(|n| is_busy(n) && (n.instance_id.as_deref() == Some(id) || names(&n.name, inst)));
    if is_busy(node) || busy_elsewhere {
        plan.info(None, format!("node {name}: a build is running on it; {id} is kept"));
        return;
    }
    if claimed.contains(id) {
        plan.debug(None, format!("node {name}: {id} already has an action this pass"));
        return;
    }

    let instance_id = id.to_string();
    if inst.spot {
        terminate(plan, &env, inst, TerminateReason::Spot { node: name.clone() });
    } else if serves_a_spot_label(inst, known_envs) {
        // On-demand (a --spot_fallback launch) yet for spot work: stopped, it
        // would be started again for spot items at the on-demand price and
        // hold on-demand cap room. It goes as its spot counterpart would.
        terminate(plan, &env, inst, TerminateReason::SpotFallback { node: name.clone() });
    } else if cfg.on_replaced_ami(&env, inst) {
        // Volumes must go with the instance, or every old agent leaks its disks.
        terminate(plan, &env, inst, TerminateReason::OldAmi { node: Some(name.clone()), ami: inst.image_id.clone() });
    } else {
        match inst.state {
            InstanceState::Running => plan.act(Action::Stop {
                env,
                instance_id,
                node: name.clone(),
                warm: false,
                // A pool agent that served builds: its stop ends its time
                // as a fresh pool agent too.
                tag_warmed: inst.warm.is_some(),
            }),
            InstanceState::Stopped | InstanceState::Stopping => {
                plan.count(Counter::InstanceStoppedState);
                return;
            }
            _ => {
                plan.debug(None, format!("node {name}: {id} is {}; nothing to do yet", inst.state.as_str()));
                return;
            }
        }
    }
    claimed.insert(id.to_string());
}

/// Orphans: running agents of ours that never became Jenkins nodes within
/// `zombie_after` of their launch (a broken boot script, a wrong master URL)
/// are terminated — they would bill forever otherwise. Skipped when the dump
/// lists no node at all: that looks like a restarting master, not orphans.
pub(super) fn plan_zombies(cfg: &PlanConfig, snap: &Snapshot<'_>, claimed: &mut BTreeSet<String>, plan: &mut Plan) {
    let Some(limit) = cfg.zombie_after else { return };
    let nodes = &snap.dump.nodes;
    if nodes.is_empty() {
        plan.debug(None, "no Jenkins node at all: not looking for orphaned agents this pass");
        return;
    }
    let ours: Vec<&Instance> = snap
        .envs
        .iter()
        .filter_map(|(env, o)| o.as_ref().ok().map(|list| (env, list)))
        .flat_map(|(env, list)| list.iter().filter(move |i| cfg.is_ours(env, i) && i.state.is_active()))
        .collect();
    // A build runs on a Swarm node we cannot tie to any agent of ours: it may
    // be on one of the candidates under a name we do not understand. A zombie
    // bills a little longer; a killed build is worse. (Static nodes, which
    // Swarm did not make, cannot be our agents and do not hold the hunt up.)
    if let Some(node) = nodes.iter().find(|n| is_busy(n) && may_be_ours(n) && !ours.iter().any(|i| mentions(n, i))) {
        plan.debug(
            None,
            format!(
                "node {} is busy and matches no agent of ours: not looking for orphaned agents this pass",
                node.name
            ),
        );
        return;
    }
    for (env, obs) in snap.envs {
        let Ok(instances) = obs else { continue };
        for inst in instances {
            if inst.state != InstanceState::Running || !cfg.is_ours(env, inst) || claimed.contains(&inst.id) {
                continue;
            }
            let Some(launched) = inst.launched else { continue };
            let running = age(snap.now, launched);
            if running < limit || nodes.iter().any(|n| mentions(n, inst)) {
                continue;
            }
            plan.count(Counter::ZombieInstance);
            terminate(plan, env, inst, TerminateReason::NeverRegistered { minutes: running.as_secs() / 60 });
            claimed.insert(inst.id.clone());
        }
    }
}

/// A node name names the instance: its private IP or its id as a whole
/// `-`-separated part (`dev-10.0.1.7`, Swarm's `dev-10.0.1.7-3f2a…`,
/// `dev_spot-i-0abc`), never as a prefix of a longer one (`10.0.1.70`).
pub(super) fn names(node_name: &str, inst: &Instance) -> bool {
    let whole_part = |needle: &str| {
        node_name.match_indices(needle).any(|(at, _)| {
            let end = at + needle.len();
            (at == 0 || node_name[..at].ends_with('-')) && (end == node_name.len() || node_name[end..].starts_with('-'))
        })
    };
    inst.private_ip.as_deref().is_some_and(whole_part) || whole_part(&inst.id)
}

/// The node names the instance in any way: its id or private IP anywhere in
/// the node's name or description (Swarm appends `-<suffix>` to names, and
/// operators rename nodes), as a whole token (`10.0.1.2` is not in
/// `10.0.1.23`). Looser than `node_of` on purpose: a false match only spares
/// an instance.
fn mentions(node: &Node, inst: &Instance) -> bool {
    let in_text = |text: &str, needle: &str| {
        let part_of_token = |c: char| c.is_ascii_alphanumeric() || c == '.';
        text.match_indices(needle).any(|(at, _)| {
            let end = at + needle.len();
            !text[..at].ends_with(part_of_token) && !text[end..].starts_with(part_of_token)
        })
    };
    let named = |needle: &str| in_text(&node.name, needle) || in_text(&node.description, needle);
    named(&inst.id) || inst.private_ip.as_deref().is_some_and(named)
}

/// A node that may be one of our agents: Swarm made it. A build on such a
/// node that matches no agent may be running on an orphan candidate.
fn may_be_ours(node: &Node) -> bool {
    node.has_label("swarm") || node.description.contains("Created by Swarm")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::super::test_kit::*;
    use super::super::*;
    use super::names;
    use crate::counter::Counter;
    use crate::model::InstanceState::*;
    use crate::model::{Instance, Node};

    fn down(s: &Scene) -> Plan {
        let mut plan = Plan::default();
        super::plan(&cfg(), &s.view(), &mut BTreeSet::new(), &mut plan);
        plan
    }

    fn acts(s: &Scene) -> Vec<String> {
        brief(&down(s).actions)
    }

    /// The subjects counted once as error_stopping_instance.
    fn errors_once(plan: &Plan) -> Vec<&str> {
        plan.once.iter().filter(|(k, _)| *k == Counter::ErrorStoppingInstance).map(|(_, s)| s.as_str()).collect()
    }

    fn one(inst: Instance, node: Node) -> Scene {
        snap(vec![("dev", vec![inst])]).nodes(vec![node])
    }

    #[test]
    fn idle_running_agent_is_stopped() {
        let plan = down(&one(agent("i-1", Running, "dev"), doomed("dev-10.0.0.1", "i-1", "dev")));
        assert_eq!(plan.actions, [stop("dev", "i-1", "dev-10.0.0.1")]);
        assert!(plan.counts.is_empty());
    }

    #[test]
    fn idle_spot_agent_is_terminated() {
        let plan = down(&one(agent("i-1", Running, "dev_spot"), doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")));
        assert_eq!(
            plan.actions,
            [Action::Terminate {
                env: "dev".into(),
                instance_id: "i-1".into(),
                why: TerminateReason::Spot { node: "dev_spot-10.0.0.1".into() },
            }]
        );
    }

    #[test]
    fn idle_on_demand_fallback_for_a_spot_label_is_terminated_not_stopped() {
        // Launched on-demand by --spot_fallback: stopped, it would be started
        // again for spot work at the on-demand price and hold cap room.
        let fallback = Instance { spot: false, ..agent("i-1", Running, "dev_spot").volume("/dev/xvda", false) };
        let plan = down(&one(fallback, doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")));
        assert_eq!(
            plan.actions,
            [
                Action::SetDeleteOnTermination {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    devices: vec!["/dev/xvda".into()],
                },
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::SpotFallback { node: "dev_spot-10.0.0.1".into() },
                },
            ]
        );
        // A plain on-demand agent is still stopped.
        assert_eq!(acts(&one(agent("i-2", Running, "dev"), doomed("dev-10.0.0.2", "i-2", "dev"))), ["stop i-2"]);
    }

    #[test]
    fn old_ami_agent_is_terminated_after_delete_on_termination() {
        let inst = agent("i-1", Running, "dev")
            .ami("ami-old")
            .volume("/dev/xvda", false)
            .volume("/dev/sdb", true)
            .volume("/dev/sdc", false);
        let plan = down(&one(inst, doomed("dev-10.0.0.1", "i-1", "dev")));
        assert_eq!(
            plan.actions,
            [
                Action::SetDeleteOnTermination {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    devices: vec!["/dev/xvda".into(), "/dev/sdc".into()],
                },
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::OldAmi { node: Some("dev-10.0.0.1".into()), ami: "ami-old".into() },
                },
            ]
        );
    }

    #[test]
    fn old_ami_agent_with_volumes_already_deleted_on_termination_is_just_terminated() {
        let inst = agent("i-1", Stopped, "dev").ami("ami-old").volume("/dev/xvda", true);
        assert_eq!(acts(&one(inst, doomed("dev-10.0.0.1", "i-1", "dev"))), ["terminate i-1 old-ami"]);
    }

    #[test]
    fn env_without_ami_never_counts_an_agent_as_old() {
        let s = snap(vec![("qa", vec![agent("i-1", Running, "qa").ami("ami-anything")])]).nodes(vec![doomed(
            "qa-10.0.0.1",
            "i-1",
            "qa",
        )]);
        assert_eq!(acts(&s), ["stop i-1"]);
    }

    #[test]
    fn busy_node_is_never_stopped() {
        let busy = Node { busy_executors: Some(1), ..doomed("dev-10.0.0.1", "i-1", "dev") };
        let plan = down(&one(agent("i-1", Running, "dev"), busy));
        assert_eq!(plan.actions, []);
        assert_eq!(info_notes(&plan.notes), ["node dev-10.0.0.1: a build is running on it; i-1 is kept"]);
    }

    #[test]
    fn busy_spot_or_old_ami_node_is_never_terminated() {
        for inst in [agent("i-1", Running, "dev_spot"), agent("i-1", Running, "dev").ami("ami-old")] {
            let busy = Node { busy_executors: Some(2), ..doomed("n-10.0.0.1", "i-1", "dev") };
            assert_eq!(acts(&one(inst, busy)), Vec::<String>::new());
        }
    }

    #[test]
    fn node_from_an_old_dump_without_busy_count_is_stopped() {
        let old_dump = Node { busy_executors: None, ..doomed("dev-10.0.0.1", "i-1", "dev") };
        assert_eq!(acts(&one(agent("i-1", Running, "dev"), old_dump)), ["stop i-1"]);
    }

    #[test]
    fn instance_without_our_name_tag_is_never_touched() {
        for name in [Some("prod-database"), None] {
            for inst in [
                agent("i-1", Running, "dev"),
                agent("i-1", Running, "dev_spot"),
                agent("i-1", Running, "dev").ami("ami-old"),
            ] {
                let plan = down(&one(inst.named(name), doomed("dev-10.0.0.1", "i-1", "dev")));
                assert_eq!(plan.actions, []);
                assert_eq!(
                    info_notes(&plan.notes),
                    ["node dev-10.0.0.1: dev instance i-1 is not an agent of this master (named jslave-in-house, tagged for https://jenkins.example.com/); it is never touched"]
                );
            }
        }
    }

    #[test]
    fn stopped_or_stopping_agent_counts_instance_stopped_state() {
        for state in [Stopped, Stopping] {
            let plan = down(&one(agent("i-1", state, "dev"), doomed("dev-10.0.0.1", "i-1", "dev")));
            assert_eq!(plan.actions, []);
            assert_eq!(count(&plan.counts, Counter::InstanceStoppedState), 1);
        }
    }

    #[test]
    fn pending_agent_is_left_alone() {
        let plan = down(&one(agent("i-1", Pending, "dev"), doomed("dev-10.0.0.1", "i-1", "dev")));
        assert_eq!(plan.actions, []);
        assert!(plan.counts.is_empty());
    }

    #[test]
    fn terminating_or_terminated_agent_is_left_alone() {
        for state in [ShuttingDown, Terminated] {
            let plan = down(&one(agent("i-1", state, "dev_spot"), doomed("dev-10.0.0.1", "i-1", "dev_spot")));
            assert_eq!(plan.actions, []);
            assert!(plan.counts.is_empty());
        }
    }

    #[test]
    fn node_without_instance_id_counts_an_error() {
        let node = Node { instance_id: None, ..doomed("dev-10.0.0.1", "i-1", "dev") };
        let plan = down(&one(agent("i-1", Running, "dev"), node));
        assert_eq!(plan.actions, []);
        assert_eq!(errors_once(&plan), ["dev-10.0.0.1"]);
        assert_eq!(info_notes(&plan.notes).len(), 1);
    }

    #[test]
    fn node_without_env_label_counts_an_error() {
        let node = Node { labels: vec!["swarm".into(), "linux".into()], ..doomed("x", "i-1", "dev") };
        let plan = down(&one(agent("i-1", Running, "dev"), node));
        assert_eq!(plan.actions, []);
        assert_eq!(errors_once(&plan), ["x i-1"]);
    }

    #[test]
    fn node_env_comes_from_its_first_env_label() {
        let node = Node {
            labels: vec!["swarm".into(), "linux".into(), "prod_spot_c5.large".into(), "dev".into()],
            ..doomed("x-10.0.0.1", "i-1", "dev")
        };
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")]), ("prod", vec![agent("i-1", Running, "prod")])])
            .nodes(vec![node]);
        let plan = down(&s);
        assert_eq!(plan.actions, [stop("prod", "i-1", "x-10.0.0.1")]);
    }

    #[test]
    fn a_node_whose_description_alone_names_an_instance_is_not_trusted() {
        // Any build can register a Swarm node describing another instance.
        let forged = doomed("dev-10.9.9.9", "i-1", "dev");
        let plan = down(&one(agent("i-1", Running, "dev"), forged));
        assert_eq!(plan.actions, []);
        assert_eq!(errors_once(&plan), ["dev-10.9.9.9 i-1"]);
        assert!(info_notes(&plan.notes)[0].contains("not trusted"), "{:?}", plan.notes);
    }

    #[test]
    fn a_build_on_any_node_of_the_instance_keeps_it() {
        // The doomed node is genuine, but another node of the same instance
        // (a second Swarm client, a renamed node) runs a build.
        let busy = Node { busy_executors: Some(1), instance_id: None, ..online("dev-10.0.0.1-5f3a", "-", "dev", 0) };
        let s = one(agent("i-1", Running, "dev"), doomed("dev-10.0.0.1", "i-1", "dev"))
            .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev"), busy]);
        let plan = down(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(info_notes(&plan.notes), ["node dev-10.0.0.1: a build is running on it; i-1 is kept"]);
    }

    #[test]
    fn a_node_name_names_an_ip_or_id_as_a_whole_part() {
        let inst = agent("i-5", Running, "dev");
        for yes in ["dev-10.0.0.5", "dev_spot-10.0.0.5", "dev-10.0.0.5-a1b2c3", "dev_spot-i-5", "i-5"] {
            assert!(names(yes, &inst), "{yes}");
        }
        for no in ["dev-10.0.0.55", "dev-110.0.0.5", "dev-i-55", "dev10.0.0.5", "x"] {
            assert!(!names(no, &inst), "{no}");
        }
    }

    #[test]
    fn instance_missing_from_its_env_counts_an_error() {
        let plan = down(&one(agent("i-2", Running, "dev"), doomed("dev-10.0.0.1", "i-1", "dev")));
        assert_eq!(plan.actions, []);
        // Counted once per run by the caller, not once per pass.
        assert!(plan.counts.is_empty());
        assert_eq!(errors_once(&plan), ["dev-10.0.0.1 i-1"]);
        assert_eq!(info_notes(&plan.notes), ["node dev-10.0.0.1: instance i-1 is not in dev"]);
    }

    #[test]
    fn failed_env_observation_is_left_alone() {
        let s = snap(vec![])
            .env_err("dev")
            .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev"), doomed("qa-10.0.0.2", "i-2", "qa")]);
        let plan = down(&s);
        assert_eq!(plan.actions, []);
        assert!(plan.counts.is_empty(), "not knowing is not an error: {:?}", plan.counts);
        assert_eq!(plan.notes.len(), 2);
        assert!(plan.notes.iter().all(|n| n.level == NoteLevel::Debug));
    }

    #[test]
    fn online_or_unmarked_or_non_swarm_nodes_are_left_alone() {
        let base = doomed("dev-10.0.0.1", "i-1", "dev");
        let nodes = vec![
            Node { offline: false, ..base.clone() },
            Node { terminate_me: false, ..base.clone() },
            Node { labels: vec!["dev".into()], ..base },
        ];
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")])]).nodes(nodes);
        let plan = down(&s);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn two_nodes_of_one_instance_give_one_action() {
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")])])
            .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev"), doomed("dev-i-1", "i-1", "dev")]);
        assert_eq!(acts(&s), ["stop i-1"]);
    }

    #[test]
    fn old_ami_agent_in_plan_pass_gets_one_terminate() {
        // The stopped old-AMI agent matches the queued label, but scale-down
        // owns it: no start, no make-room terminate of the same instance.
        let s =
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev").ami("ami-old"), agent("i-2", Running, "dev_shared")])])
                .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")])
                .queue(vec![item("job", "dev")]);
        assert_eq!(brief(&plan_pass(&cfg(), &s.view(), 3).actions), ["terminate i-1 old-ami"]);
    }

    fn zombies(c: &PlanConfig, s: &Scene) -> Plan {
        let mut plan = Plan::default();
        super::plan_zombies(c, &s.view(), &mut BTreeSet::new(), &mut plan);
        plan
    }

    #[test]
    fn running_agent_that_never_became_a_node_is_terminated() {
        let mut c = cfg();
        c.zombie_after = Some(Duration::from_secs(30 * 60));
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-old", Running, "dev").launched_ago(3600),
                agent("i-young", Running, "dev").launched_ago(600),
                agent("i-node", Running, "dev").launched_ago(3600),
                agent("i-stopped", Stopped, "dev").launched_ago(3600),
                agent("i-theirs", Running, "dev").launched_ago(3600).named(Some("other")),
            ],
        )])
        .nodes(vec![online("dev-10.0.0.9", "i-node", "dev", 1)]);
        let plan = zombies(&c, &s);
        assert_eq!(brief(&plan.actions), ["terminate i-old zombie"]);
        assert_eq!(count(&plan.counts, Counter::ZombieInstance), 1);
        assert_eq!(
            plan.actions[0].to_string(),
            "dev: terminate i-old (running 60 min without becoming a Jenkins node)"
        );
    }

    #[test]
    fn an_agent_named_anywhere_by_a_node_is_no_zombie() {
        let mut c = cfg();
        c.zombie_after = Some(Duration::from_secs(60));
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-swarm", Running, "dev").launched_ago(3600).ip("10.0.0.5"),
                agent("i-desc", Running, "dev").launched_ago(3600).ip("10.0.0.6"),
                agent("i-zombie", Running, "dev").launched_ago(3600).ip("10.0.0.7"),
            ],
        )])
        .nodes(vec![
            // Swarm's unique-id suffix after the IP.
            Node {
                instance_id: None,
                description: "Swarm agent".into(),
                ..online("dev-10.0.0.5-a1b2c3d4", "-", "dev", 1)
            },
            // Renamed by an operator; the description still names the id.
            Node { instance_id: None, description: "was i-desc".into(), ..online("builder-7", "-", "dev", 1) },
        ]);
        assert_eq!(brief(&zombies(&c, &s).actions), ["terminate i-zombie zombie"]);
        // A longer address is another machine: 10.0.0.7 is not in 10.0.0.70.
        let other = Node { instance_id: None, description: "x".into(), ..online("dev-10.0.0.70", "-", "dev", 1) };
        let s = s.nodes(vec![other]);
        assert_eq!(brief(&zombies(&c, &s).actions).len(), 3);
    }

    #[test]
    fn no_orphan_hunt_while_an_unmatched_node_is_busy() {
        let mut c = cfg();
        c.zombie_after = Some(Duration::from_secs(60));
        let busy = Node {
            instance_id: None,
            description: "Swarm agent, renamed".into(),
            busy_executors: Some(1),
            ..online("mystery", "-", "dev", 0)
        };
        let s = snap(vec![("dev", vec![agent("i-old", Running, "dev").launched_ago(3600).ip("10.0.0.7")])])
            .nodes(vec![busy.clone()]);
        assert!(zombies(&c, &s).actions.is_empty());
        // A busy static node (no swarm label, not made by Swarm) is no reason.
        let windows = Node { labels: vec!["windows".into()], description: "static box".into(), ..busy.clone() };
        let s2 = s.clone().nodes(vec![windows]);
        assert_eq!(brief(&zombies(&c, &s2).actions), ["terminate i-old zombie"]);
        // Once that build is over, the orphan goes.
        let idle = Node { busy_executors: Some(0), ..busy };
        let s = s.nodes(vec![idle]);
        assert_eq!(brief(&zombies(&c, &s).actions), ["terminate i-old zombie"]);
    }

    #[test]
    fn no_orphan_hunt_when_off_or_when_jenkins_lists_no_node() {
        let s = snap(vec![("dev", vec![agent("i-old", Running, "dev").launched_ago(3600)])]);
        let with_node = s.clone().nodes(vec![online("dev-10.0.0.9", "i-other", "dev", 1)]);
        assert!(zombies(&cfg(), &with_node).actions.is_empty(), "off by default");
        let mut c = cfg();
        c.zombie_after = Some(Duration::from_secs(60));
        assert!(zombies(&c, &s).actions.is_empty(), "an empty node list looks like a restarting master");
        assert_eq!(brief(&zombies(&c, &with_node).actions), ["terminate i-old zombie"]);
    }

    #[test]
    fn an_instance_just_started_for_a_job_is_not_stopped_by_its_stale_node() {
        // Stopped earlier by the idle policy, its node still offline and
        // marked; a queued job got it started again 20 s ago.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")])])
            .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")])
            .start_marker("dev", "i-1", "dev", 20);
        assert!(acts(&s).is_empty());
        // Once the marker is stale, the node's mark counts again.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")])])
            .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")])
            .start_marker("dev", "i-1", "dev", 400);
        assert_eq!(acts(&s), ["stop i-1"]);
    }

    #[test]
    fn a_start_marker_spares_the_node_until_its_ttl_and_not_at_it() {
        let at = |age| {
            snap(vec![("dev", vec![agent("i-1", Running, "dev")])])
                .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")])
                .start_marker("dev", "i-1", "dev", age)
        };
        assert!(acts(&at(299)).is_empty());
        assert_eq!(acts(&at(300)), ["stop i-1"]);
    }

    #[test]
    fn a_build_on_a_node_naming_the_instance_by_id_keeps_it_one_on_another_instance_does_not() {
        let s = |busy: Node| {
            snap(vec![("dev", vec![agent("i-1", Running, "dev"), agent("i-2", Running, "dev")])])
                .nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev"), busy])
        };
        // Renamed by an operator: only its description names i-1.
        let renamed = Node { busy_executors: Some(1), ..online("builder-7", "i-1", "dev", 0) };
        assert!(acts(&s(renamed)).is_empty());
        let elsewhere = Node { busy_executors: Some(1), ..online("dev-10.0.0.2", "i-2", "dev", 0) };
        assert_eq!(acts(&s(elsewhere)), ["stop i-1"]);
    }

    #[test]
    fn an_agent_is_a_zombie_from_exactly_zombie_after() {
        let mut c = cfg();
        c.zombie_after = Some(Duration::from_secs(600));
        let s = |secs| {
            snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(secs)])]).nodes(vec![online(
                "dev-10.0.0.9",
                "i-9",
                "dev",
                1,
            )])
        };
        assert!(zombies(&c, &s(599)).actions.is_empty());
        assert_eq!(brief(&zombies(&c, &s(600)).actions), ["terminate i-1 zombie"]);
    }

    #[test]
    fn a_busy_node_of_an_instance_not_ours_pauses_the_orphan_hunt() {
        // It matches no agent of ours: the build may be on an orphan candidate
        // under a name we do not understand.
        let mut c = cfg();
        c.zombie_after = Some(Duration::from_secs(60));
        let busy = Node { instance_id: None, busy_executors: Some(1), ..online("dev-10.0.0.8", "-", "dev", 0) };
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-7", Running, "dev").launched_ago(3600),
                agent("i-8", Running, "dev").launched_ago(3600).named(Some("other")),
            ],
        )])
        .nodes(vec![busy]);
        assert!(zombies(&c, &s).actions.is_empty());
    }
}
