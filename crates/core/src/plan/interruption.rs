//! EC2 events from the envs' interruption queues (`--interruption_queue`):
//! a spot interruption warning takes the agent out of service at once (and
//! launches a replacement when a build is at risk), a rebalance
//! recommendation drains it, a state change takes it out of service without
//! waiting for the next describe. What was decided lives on in
//! `.interrupted` markers: the agent stays out of service, the same event
//! never acts twice, a drained agent goes once idle, and the marker goes
//! with the instance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::counter::Counter;
use crate::label::parse_label;
use crate::model::{
    EnvObservation, EventKind, Instance, InstanceEvent, InstanceState, InterruptedMarker, Interruption, JenkinsDump,
};

use super::nodes::{is_busy, node_of};
use super::output::terminate;
use super::snapshot::observed;
use super::{Action, Plan, PlanConfig, Snapshot, TerminateReason};

/// What scale-up must know of the agents taken out of service.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// Agents to launch now for the labels of warned agents whose builds
    /// are at risk (the build's retry finds one booting).
    pub replacements: Vec<Replacement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replacement {
    pub env: String,
    pub instance_id: String,
    pub node: String,
    pub label: String,
}

const WARNING_REASON: &str = "EC2 reclaims this spot instance in two minutes (spot interruption warning)";
/// A warned agent still running this long after its warning drains.
const UNRECLAIMED_AFTER: Duration = Duration::from_secs(10 * 60);
const REBALANCE_REASON: &str = "draining: EC2 recommends rebalancing this spot instance";

/// Our spot agents in each env as one pass saw them, by instance id, each
/// with the name of its node when the dump showed it online; `None` for an
/// env whose describe failed (any warning there may be ours).
pub type SpotAgents = BTreeMap<String, Option<BTreeMap<String, Option<String>>>>;

/// The spot agents whose warnings and rebalance recommendations, arriving
/// between passes, end the nap; see [`SpotAgents`]. With no dump, no node.
pub fn spot_agents(
    cfg: &PlanConfig,
    dump: Option<&JenkinsDump>,
    envs: &BTreeMap<String, EnvObservation>,
) -> SpotAgents {
    let online = |inst: &Instance| {
        let node = dump.filter(|_| inst.state.is_active()).and_then(|d| node_of(&d.nodes, inst))?;
        (!node.offline).then(|| node.name.clone())
    };
    let ours = |env: &str, instances: &[Instance]| {
        instances.iter().filter(|i| i.spot && cfg.is_ours(env, i)).map(|i| (i.id.clone(), online(i))).collect()
    };
    envs.iter().map(|(env, seen)| (env.clone(), seen.as_ref().ok().map(|i| ours(env, i)))).collect()
}

/// The `offline-node` that a warning or rebalance for one of `agents`,
/// arriving between passes, sends at once: until Jenkins hears, it can give
/// the node a build, and the next pass must observe before its plan acts.
/// The planner's own action and reason, so the dump script finds the node
/// offline by us and the next pass's plan sends it no second one (a failed
/// one, the node still online, it sends again). None for a state change, an
/// instance not among `agents`, or a node the pass did not see online.
pub fn offline_at_once(agents: &SpotAgents, event: &InstanceEvent) -> Option<Action> {
    let reason = match event.kind {
        EventKind::Warning => WARNING_REASON,
        EventKind::Rebalance => REBALANCE_REASON,
        EventKind::StateChange(_) => return None,
    };
    let node = agents.get(&event.env)?.as_ref()?.get(&event.instance_id)?.as_ref()?;
    Some(Action::OfflineNode {
        env: event.env.clone(),
        instance_id: event.instance_id.clone(),
        node: node.clone(),
        reason: reason.to_string(),
    })
}

/// The agents this pass's state-change events report stopping or gone:
/// out of service now, not at the next describe. An event only removes
/// capacity: the agent serves no queue item and no other action touches it,
/// but it still counts against the caps and is no start or make-room
/// candidate — its sender is not checked, only a describe says it is gone.
pub(super) fn gone_by_events(snap: &Snapshot<'_>, plan: &mut Plan) -> BTreeSet<String> {
    let mut gone = BTreeSet::new();
    for event in snap.events {
        let EventKind::StateChange(state) = event.kind else { continue };
        if matches!(state, InstanceState::Pending | InstanceState::Running) {
            continue;
        }
        let Some(Ok(instances)) = snap.envs.get(&event.env) else { continue };
        let Some(inst) = instances.iter().find(|i| i.id == event.instance_id) else { continue };
        // An event from before the instance's last start tells nothing new.
        if matches!((event.time, inst.launched), (Some(t), Some(launched)) if t < launched)
            || inst.state == state
            || !inst.state.is_active()
        {
            continue;
        }
        plan.debug(
            None,
            format!("{}: {} is {} (EC2 event {}); out of service now", event.env, inst.id, state.as_str(), event.id),
        );
        gone.insert(inst.id.clone());
    }
    gone
}

/// Acts on the warnings and rebalance recommendations of this pass and on
/// the markers of earlier ones. Every agent out of service is claimed: no
/// other action touches it and it serves no queue item.
pub(super) fn plan(cfg: &PlanConfig, snap: &Snapshot<'_>, claimed: &mut BTreeSet<String>, plan: &mut Plan) -> Taken {
    let mut taken = Taken::default();
    let mut marked: BTreeMap<(&str, &str), Interruption> = BTreeMap::new();
    for marker in &snap.markers.interrupted {
        marked.insert((&marker.env, &marker.instance_id), marker.kind);
    }
    for event in snap.events {
        let kind = match event.kind {
            EventKind::Warning => Interruption::Warned,
            EventKind::Rebalance => Interruption::Draining,
            EventKind::StateChange(_) => continue,
        };
        let instances = match observed(snap.envs, &event.env) {
            Ok(instances) => instances,
            Err(e) => {
                plan.info(None, format!("EC2 event {}: {e}; kept for a later pass", event.id));
                plan.keep_event(&event.id);
                continue;
            }
        };
        let Some(inst) = instances.iter().find(|i| i.id == event.instance_id && cfg.is_ours(&event.env, i)) else {
            plan.debug(None, format!("EC2 event {}: {} is no agent of ours; ignored", event.id, event.instance_id));
            continue;
        };
        if !inst.spot {
            // EC2 sends these for spot instances only: someone else sent it.
            plan.info(None, format!("EC2 event {}: {} is no spot instance; ignored", event.id, inst.id));
            continue;
        }
        let key = (event.env.as_str(), inst.id.as_str());
        match marked.get(&key) {
            // Already out of service for this reason, or for a stronger one:
            // a duplicate, or a rebalance after the warning.
            Some(Interruption::Warned) => continue,
            Some(Interruption::Draining) if kind == Interruption::Draining => continue,
            _ => {}
        }
        if !inst.state.is_active() {
            plan.debug(None, format!("EC2 event {}: {} is already {}", event.id, inst.id, inst.state.as_str()));
            continue;
        }
        marked.insert(key, kind);
        let node = node_of(&snap.dump.nodes, inst);
        let (counter, reason) = match kind {
            Interruption::Warned => (Counter::SpotInterruptions, WARNING_REASON),
            Interruption::Draining => (Counter::RebalanceRecommendations, REBALANCE_REASON),
        };
        plan.count(counter);
        plan.act(Action::MarkInterrupted {
            env: event.env.clone(),
            instance_id: inst.id.clone(),
            kind,
            event: event.id.clone(),
        });
        if let Some(node) = node.filter(|n| !n.offline) {
            plan.act(Action::OfflineNode {
                env: event.env.clone(),
                instance_id: inst.id.clone(),
                node: node.name.clone(),
                reason: reason.to_string(),
            });
        }
        claimed.insert(inst.id.clone());
        if kind == Interruption::Warned {
            match node.filter(|n| is_busy(n)) {
                Some(node) => match agent_label(cfg, &event.env, inst) {
                    Some(label) => {
                        plan.info(
                            None,
                            format!(
                                "node {}: its build is at risk, EC2 reclaims {} in two minutes; a replacement for label {label} is planned, within the caps",
                                node.name, inst.id
                            ),
                        );
                        taken.replacements.push(Replacement {
                            env: event.env.clone(),
                            instance_id: inst.id.clone(),
                            node: node.name.clone(),
                            label,
                        });
                    }
                    None => plan.info(
                        None,
                        format!(
                            "node {}: its build is at risk, and {} has no label to replace it by",
                            node.name, inst.id
                        ),
                    ),
                },
                None => plan.info(None, format!("{}: EC2 reclaims {} in two minutes; it was idle", event.env, inst.id)),
            }
        } else {
            plan.info(None, format!("{}: {} drains on a rebalance recommendation", event.env, inst.id));
        }
    }
    for marker in &snap.markers.interrupted {
        follow_up(cfg, snap, marker, claimed, plan);
    }
    taken
}

/// The agents whose nodes went offline early, between passes, on an event
/// no pass has handled yet (see [`OfflineEarly`](super::OfflineEarly)): the
/// dump script finds them offline by us and, once idle, `terminate_me`, but
/// they are no idle agents to retire. Claimed, as a marker's are, until the
/// event comes back; the reconciler forgets them once a pass has handled
/// it, the instance is gone, or a bound has passed.
pub(super) fn hold_offline_early(snap: &Snapshot<'_>, claimed: &mut BTreeSet<String>, plan: &mut Plan) {
    for (env, id) in snap.offline_early {
        if claimed.insert(id.clone()) {
            plan.debug(None, format!("{env}: {id} went offline on an EC2 event not handled yet; left alone"));
        }
    }
}

/// An agent taken out of service in an earlier pass: forgotten once gone,
/// kept offline, and — drained, or warned but never reclaimed — terminated
/// once idle.
fn follow_up(
    cfg: &PlanConfig,
    snap: &Snapshot<'_>,
    marker: &InterruptedMarker,
    claimed: &mut BTreeSet<String>,
    plan: &mut Plan,
) {
    let Ok(instances) = observed(snap.envs, &marker.env) else { return };
    let id = &marker.instance_id;
    let Some(inst) = instances.iter().find(|i| &i.id == id && i.state.is_active()) else {
        plan.act(Action::ForgetInterruption { file_name: marker.file_name.clone() });
        return;
    };
    if !claimed.insert(id.clone()) {
        // A warning or state change of this pass decided already.
        return;
    }
    let node = node_of(&snap.dump.nodes, inst);
    if let Some(node) = node.filter(|n| !n.offline) {
        // Back online (the CLI call failed, or someone put it back): no
        // build may land there.
        let reason = match marker.kind {
            Interruption::Warned => WARNING_REASON,
            Interruption::Draining => REBALANCE_REASON,
        };
        plan.act(Action::OfflineNode {
            env: marker.env.clone(),
            instance_id: id.clone(),
            node: node.name.clone(),
            reason: reason.to_string(),
        });
        return;
    }
    // EC2 reclaims within two minutes of its warning: still running long
    // after, it never will, and it must not sit out of service (billing)
    // for good on a warning nobody can check — it drains instead.
    let unreclaimed = inst.state == InstanceState::Running && marker.age >= UNRECLAIMED_AFTER;
    let drains = match marker.kind {
        Interruption::Draining => true,
        Interruption::Warned => unreclaimed,
    };
    if !drains || !cfg.is_ours(&marker.env, inst) {
        return;
    }
    let busy = snap.dump.nodes.iter().any(|n| is_busy(n) && node_of(std::slice::from_ref(n), inst).is_some());
    if busy {
        plan.debug(None, format!("{}: {id} drains; a build is still running on it", marker.env));
        return;
    }
    terminate(plan, &marker.env, inst, TerminateReason::Drained { node: node.map(|n| n.name.clone()) });
}

/// The label the agent was launched for: the first of its tag's labels
/// that names its env.
fn agent_label(cfg: &PlanConfig, env: &str, inst: &Instance) -> Option<String> {
    let known = cfg.known_envs();
    inst.slave_labels.as_ref()?.iter().find(|l| parse_label(l, &known).is_ok_and(|label| label.env == env)).cloned()
}

#[cfg(test)]
mod tests {
    use crate::counter::Counter;
    use crate::model::InstanceState::*;
    use crate::model::{EventKind, Interruption, Node};
    use crate::plan::test_kit::*;
    use crate::plan::*;

    fn run(s: &Scene) -> Plan {
        plan_pass(&cfg(), &s.view(), 3)
    }

    fn busy(node: Node) -> Node {
        Node { busy_executors: Some(1), idle_executors: Some(0), ..node }
    }

    fn spot(id: &str) -> crate::model::Instance {
        agent(id, Running, "dev_spot")
    }

    #[test]
    fn the_offline_sent_at_once_between_passes_is_the_planners_own_action() {
        // The pass before saw the node online; the event came in its nap.
        for kind in [EventKind::Warning, EventKind::Rebalance] {
            let seen = snap(vec![("dev", vec![spot("i-1")])]).nodes(vec![busy(online(
                "dev_spot-10.0.0.1",
                "i-1",
                "dev_spot",
                0,
            ))]);
            let agents = spot_agents(&cfg(), Some(&seen.dump), &seen.envs);
            let next = seen.event("e-1", "dev", "i-1", kind);
            let early = offline_at_once(&agents, &next.events[0]);
            let planned = run(&next).actions.into_iter().find(|a| matches!(a, Action::OfflineNode { .. }));
            assert!(early.is_some());
            assert_eq!(early, planned, "{kind:?}");
        }
    }

    #[test]
    fn nothing_is_sent_at_once_for_what_the_pass_did_not_see_as_our_spot_agent_online() {
        let foreign = crate::model::Instance { name: Some("somebody-else".into()), ..spot("i-2") };
        let seen = snap(vec![("dev", vec![spot("i-1"), foreign, agent("i-3", Running, "dev"), spot("i-4")])])
            .env_err("prod")
            .nodes(vec![
                online("dev_spot-10.0.0.2", "i-2", "dev_spot", 1),
                online("dev-10.0.0.3", "i-3", "dev", 1),
                Node { offline: true, ..online("dev_spot-10.0.0.4", "i-4", "dev_spot", 1) },
            ]);
        let agents = spot_agents(&cfg(), Some(&seen.dump), &seen.envs);
        assert_eq!(agents["prod"], None, "not described: any warning may be ours");
        let dev = agents["dev"].as_ref().unwrap();
        assert_eq!(dev.keys().collect::<Vec<_>>(), ["i-1", "i-4"], "our spot agents only");
        assert!(dev.values().all(Option::is_none), "i-1 has no node, i-4's is offline already");
        let with_node = spot_agents(&cfg(), None, &snap(vec![("dev", vec![spot("i-1")])]).envs);
        assert_eq!(with_node["dev"].as_ref().unwrap()["i-1"], None, "no dump, no node");
        let events = snap(vec![])
            .event("e-1", "dev", "i-1", EventKind::Warning)
            .event("e-2", "dev", "i-2", EventKind::Warning)
            .event("e-3", "dev", "i-3", EventKind::Warning)
            .event("e-4", "dev", "i-4", EventKind::Rebalance)
            .event("e-5", "prod", "i-5", EventKind::Warning)
            .events;
        assert!(events.iter().all(|e| offline_at_once(&agents, e).is_none()), "{agents:?}");
        let online_one = snap(vec![("dev", vec![spot("i-1")])]).nodes(vec![online("n", "i-1", "dev_spot", 1)]);
        let agents = spot_agents(&cfg(), Some(&online_one.dump), &online_one.envs);
        let stopping = online_one.event("e-6", "dev", "i-1", EventKind::StateChange(Stopping)).events;
        assert_eq!(offline_at_once(&agents, &stopping[0]), None, "a state change waits for the pass");
    }

    #[test]
    fn a_warning_on_an_idle_agent_takes_it_offline_and_its_queued_item_gets_another() {
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![online("dev_spot-10.0.0.1", "i-1", "dev_spot", 1)])
            .queue(vec![item("job", "dev_spot")])
            .event("e-1", "dev", "i-1", EventKind::Warning);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["mark i-1 warned", "offline dev_spot-10.0.0.1", "create dev dev_spot"]);
        assert_eq!(count(&plan.counts, Counter::SpotInterruptions), 1);
        assert!(plan.terminated().is_empty(), "EC2 takes it, not us");
    }

    #[test]
    fn a_warning_for_an_agent_without_a_node_never_takes_another_envs_node_of_the_same_ip_offline() {
        // dev's agent is still booting; prod (another account, the same
        // CIDR) has an agent at the same address whose node names it.
        let booting = spot("i-1").ip("10.0.1.7");
        let prods = online("prod_spot-10.0.1.7", "i-9", "prod_spot", 1);
        let s = snap(vec![("dev", vec![booting]), ("prod", vec![agent("i-9", Running, "prod_spot").ip("10.0.1.7")])])
            .nodes(vec![prods])
            .event("e-1", "dev", "i-1", EventKind::Warning);
        let agents = spot_agents(&cfg(), Some(&s.dump), &s.envs);
        assert_eq!(agents["dev"].as_ref().unwrap()["i-1"], None, "{agents:?}");
        assert_eq!(offline_at_once(&agents, &s.events[0]), None);
        let plan = run(&s);
        assert!(!plan.actions.iter().any(|a| matches!(a, Action::OfflineNode { .. })), "{:?}", brief(&plan.actions));
        assert_eq!(count(&plan.counts, Counter::SpotInterruptions), 1);
    }

    #[test]
    fn an_agent_taken_offline_early_whose_event_is_not_handled_yet_is_not_retired_when_idle() {
        // The nap took its node offline; the event has not come back yet, and
        // the dump script reports the idle node offline by us.
        let doomed_spot =
            snap(vec![("dev", vec![spot("i-1")])]).nodes(vec![doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")]);
        assert_eq!(brief(&run(&doomed_spot).actions), ["terminate i-1 spot"], "an ordinary idle agent is retired");
        let early = doomed_spot.with(|s| {
            s.offline_early.insert(("dev".into(), "i-1".into()));
        });
        let plan = run(&early);
        assert!(plan.actions.is_empty(), "{:?}", brief(&plan.actions));
        // The event back: handled as a warning, counted once, EC2 takes it.
        let back = early.event("e-1", "dev", "i-1", EventKind::Warning);
        let plan = run(&back);
        assert_eq!(brief(&plan.actions), ["mark i-1 warned"]);
        assert_eq!(count(&plan.counts, Counter::SpotInterruptions), 1);
    }

    #[test]
    fn a_warning_on_a_busy_agent_launches_one_replacement() {
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![busy(online("dev_spot-10.0.0.1", "i-1", "dev_spot", 0))])
            .event("e-1", "dev", "i-1", EventKind::Warning);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["mark i-1 warned", "offline dev_spot-10.0.0.1", "create dev dev_spot"]);
        match &plan.actions[2] {
            Action::Create { replacement_for, .. } => assert_eq!(replacement_for.as_deref(), Some("i-1")),
            other => panic!("{other:?}"),
        }
        assert!(info_notes(&plan.notes).iter().any(|n| n.contains("node dev_spot-10.0.0.1: its build is at risk")));
    }

    #[test]
    fn a_replacement_stays_within_the_caps() {
        // Spot cap 2: the warned agent bills until EC2 takes it, and counts.
        let s = snap(vec![("dev", vec![spot("i-1"), spot("i-2")])])
            .nodes(vec![busy(online("dev_spot-10.0.0.1", "i-1", "dev_spot", 0))])
            .event("e-1", "dev", "i-1", EventKind::Warning);
        assert_eq!(brief(&run(&s).actions), ["mark i-1 warned", "offline dev_spot-10.0.0.1"]);
    }

    #[test]
    fn a_warned_agent_stays_out_of_service_and_is_never_stopped_or_terminated_by_us() {
        // The idle policy wants it gone; EC2 will take it anyway.
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")])
            .queue(vec![item("job", "dev_spot")])
            .interrupted("dev", "i-1", Interruption::Warned);
        assert_eq!(brief(&run(&s).actions), ["create dev dev_spot"]);
    }

    #[test]
    fn the_same_warning_twice_acts_once() {
        let nodes = vec![busy(online("dev_spot-10.0.0.1", "i-1", "dev_spot", 0))];
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(nodes.clone())
            .event("e-1", "dev", "i-1", EventKind::Warning)
            .event("e-1", "dev", "i-1", EventKind::Warning);
        assert_eq!(count(&run(&s).counts, Counter::SpotInterruptions), 1);
        assert_eq!(brief(&run(&s).actions).len(), 3);
        // And in a later pass, with the marker written.
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![Node { offline: true, ..nodes[0].clone() }])
            .interrupted("dev", "i-1", Interruption::Warned)
            .event("e-1", "dev", "i-1", EventKind::Warning);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert!(plan.counts.is_empty());
    }

    #[test]
    fn an_event_for_an_instance_not_ours_is_ignored() {
        let stranger = spot("i-1").named(Some("somebody-else"));
        let s = snap(vec![("dev", vec![stranger])]).event("e-1", "dev", "i-1", EventKind::Warning).event(
            "e-2",
            "dev",
            "i-9",
            EventKind::Rebalance,
        );
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert!(plan.counts.is_empty());
        assert!(plan.kept_events.is_empty(), "ignored events are handled");
    }

    #[test]
    fn an_event_of_an_env_not_observed_is_kept_for_a_later_pass() {
        let s = snap(vec![]).env_err("dev").event("e-1", "dev", "i-1", EventKind::Warning);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(plan.kept_events, ["e-1"]);
    }

    #[test]
    fn a_rebalance_drains_the_agent_and_terminates_it_once_idle() {
        let node = busy(online("dev_spot-10.0.0.1", "i-1", "dev_spot", 0));
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![node.clone()])
            .queue(vec![item("job", "dev_spot")])
            .event("e-1", "dev", "i-1", EventKind::Rebalance);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["mark i-1 draining", "offline dev_spot-10.0.0.1", "create dev dev_spot"]);
        assert_eq!(count(&plan.counts, Counter::RebalanceRecommendations), 1);

        // Next pass: offline, the build still runs: kept.
        let offline_busy = Node { offline: true, ..node.clone() };
        let later = snap(vec![("dev", vec![spot("i-1")])]).nodes(vec![offline_busy.clone()]).interrupted(
            "dev",
            "i-1",
            Interruption::Draining,
        );
        assert_eq!(run(&later).actions, []);

        // The build finished: terminated.
        let idle = Node { busy_executors: Some(0), idle_executors: Some(1), ..offline_busy };
        let done = later.nodes(vec![idle]);
        assert_eq!(brief(&run(&done).actions), ["terminate i-1 drained"]);
    }

    #[test]
    fn a_drained_node_back_online_is_taken_offline_again_not_terminated() {
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![online("dev_spot-10.0.0.1", "i-1", "dev_spot", 1)])
            .interrupted("dev", "i-1", Interruption::Draining);
        assert_eq!(brief(&run(&s).actions), ["offline dev_spot-10.0.0.1"]);
    }

    #[test]
    fn a_warning_after_a_rebalance_upgrades_the_drain() {
        let s = snap(vec![("dev", vec![spot("i-1")])])
            .nodes(vec![busy(Node { offline: true, ..online("dev_spot-10.0.0.1", "i-1", "dev_spot", 0) })])
            .interrupted("dev", "i-1", Interruption::Draining)
            .event("e-2", "dev", "i-1", EventKind::Warning);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["mark i-1 warned", "create dev dev_spot"]);
        assert_eq!(count(&plan.counts, Counter::SpotInterruptions), 1);
    }

    #[test]
    fn a_warning_or_rebalance_for_an_on_demand_agent_is_ignored() {
        // EC2 sends both only for spot instances: this one is forged.
        for kind in [EventKind::Warning, EventKind::Rebalance] {
            let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")])])
                .nodes(vec![busy(online("dev-10.0.0.1", "i-1", "dev", 0))])
                .event("e-1", "dev", "i-1", kind);
            let plan = run(&s);
            assert_eq!(plan.actions, [], "{kind:?}");
            assert!(plan.counts.is_empty());
            assert!(plan.kept_events.is_empty(), "deleted, not kept");
        }
    }

    #[test]
    fn an_agent_still_running_long_after_its_warning_drains() {
        // EC2 reclaims within two minutes: a warned agent still running ten
        // minutes on was never reclaimed, and must not bill out of service.
        let node = Node { offline: true, ..online("dev_spot-10.0.0.1", "i-1", "dev_spot", 1) };
        let fresh = snap(vec![("dev", vec![spot("i-1")])]).nodes(vec![node.clone()]).interrupted_ago(
            "dev",
            "i-1",
            Interruption::Warned,
            9 * 60,
        );
        assert_eq!(run(&fresh).actions, [], "EC2 may still take it");
        let stale = snap(vec![("dev", vec![spot("i-1")])]).nodes(vec![busy(node.clone())]).interrupted_ago(
            "dev",
            "i-1",
            Interruption::Warned,
            10 * 60,
        );
        assert_eq!(run(&stale).actions, [], "its build finishes first");
        let idle = stale.nodes(vec![node]);
        assert_eq!(brief(&run(&idle).actions), ["terminate i-1 drained"]);
    }

    #[test]
    fn the_dump_script_knows_the_offline_reasons() {
        // Its offlineByUs lets a drained node whose marker was lost go once
        // idle; it matches these texts.
        let script = include_str!("../../../../jenkins/get_queue_jobs.groovy");
        for reason in [super::WARNING_REASON, super::REBALANCE_REASON] {
            assert!(script.contains(&format!("'{reason}'")), "{reason}");
        }
    }

    #[test]
    fn the_marker_of_a_gone_instance_is_removed() {
        let gone = snap(vec![("dev", vec![spot("i-1").with(|i| i.state = Terminated)])])
            .interrupted("dev", "i-1", Interruption::Warned)
            .interrupted("dev", "i-2", Interruption::Draining);
        assert_eq!(
            brief(&run(&gone).actions),
            ["rm-interrupted dev__i-1.interrupted", "rm-interrupted dev__i-2.interrupted"]
        );
        // Not when its env could not be observed.
        let unseen = snap(vec![]).env_err("dev").interrupted("dev", "i-1", Interruption::Warned);
        assert_eq!(run(&unseen).actions, []);
    }

    #[test]
    fn a_state_change_forgets_the_agent_at_once() {
        for state in [ShuttingDown, Terminated, Stopping] {
            let s = snap(vec![("dev", vec![spot("i-1").with(|i| i.state = Pending)])])
                .queue(vec![item("job", "dev_spot")])
                .event("e-1", "dev", "i-1", EventKind::StateChange(state));
            assert_eq!(brief(&run(&s).actions), ["create dev dev_spot"], "{state:?}");
        }
        // Running says nothing new; the pending agent serves the item.
        let s = snap(vec![("dev", vec![spot("i-1").with(|i| i.state = Pending)])])
            .queue(vec![item("job", "dev_spot")])
            .event("e-1", "dev", "i-1", EventKind::StateChange(Running));
        assert_eq!(run(&s).actions, []);
    }

    #[test]
    fn a_state_change_event_never_frees_cap_room() {
        // The event's sender is not EC2's describe: agents it calls gone
        // still bill and count until a describe says so.
        for state in [ShuttingDown, Terminated, Stopping, Stopped] {
            let s = snap(vec![("dev", vec![spot("i-1"), spot("i-2")])])
                .nodes(vec![
                    busy(online("dev_spot-10.0.0.1", "i-1", "dev_spot", 0)),
                    busy(online("dev_spot-10.0.0.2", "i-2", "dev_spot", 0)),
                ])
                .queue(vec![item("job", "dev_spot")])
                .event("e-1", "dev", "i-1", EventKind::StateChange(state))
                .event("e-2", "dev", "i-2", EventKind::StateChange(state));
            assert_eq!(run(&s).actions, [], "{state:?}");
        }
    }

    #[test]
    fn a_stopped_event_for_a_running_agent_makes_it_no_start_or_make_room_candidate() {
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev"), agent("i-2", Running, "dev")])])
            .nodes(vec![busy(online("dev-10.0.0.1", "i-1", "dev", 0)), busy(online("dev-10.0.0.2", "i-2", "dev", 0))])
            .queue(vec![item("job", "dev")])
            .event("e-1", "dev", "i-1", EventKind::StateChange(Stopped));
        let plan = run(&s);
        assert_eq!(plan.actions, [], "at the cap with nothing stopped, the item waits");
        assert!(plan.terminated().is_empty());
    }

    #[test]
    fn a_state_change_older_than_the_last_start_is_ignored() {
        let s = snap(vec![("dev", vec![spot("i-1").with(|i| i.state = Pending).launched_ago(10)])])
            .queue(vec![item("job", "dev_spot")])
            .event_at("e-1", "dev", "i-1", EventKind::StateChange(Stopped), 60);
        assert_eq!(run(&s).actions, []);
    }
}
