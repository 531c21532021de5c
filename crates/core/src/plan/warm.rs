//! Warm-pool agents (`--warm`, issue 14) stopped once set up: an agent
//! created for a pool is stopped as soon as its node is online and idle, not
//! after the idle timeout. It has then booted and set itself up, which is
//! what makes a later start fast. Its creates are in `scale_up::warm`.
//!
//! Offline first, as the dump script's idle policy does: Jenkins assigns
//! builds between the dump and our stop (a newly queued item of the label, a
//! label expression, an unlabeled job on a NORMAL-mode node), and a stop
//! would kill such a build. One pass takes the node offline; a later pass
//! stops the agent only if the dump then shows the node offline by us
//! (`terminate_me`) with no busy executor. Swarm removes the node when the
//! agent disconnects, and our client runs with `-deleteExistingClients`
//! (`jenkins/agent/start_swarm.sh`): a later start registers a fresh node,
//! online, without this offline mark.
//!
//! A label short of spare executors (`--spare`) keeps such an agent online
//! as its spare instead. Membership is read from the snapshot each pass
//! ([`serving`]): a pool agent whose node is online serves builds and is no
//! pool member, so the pool refills by a create; it rejoins the pool when
//! the set-up stop takes its node offline.

use std::collections::BTreeSet;

use crate::model::{Instance, InstanceState, Node};

use super::nodes::node_of;
use super::scale_down::names;
use super::snapshot::observed;
use super::spare;
use super::{Action, Plan, PlanConfig, Snapshot};

/// The `offline-node -m` text of a set-up pool agent: the dump script's
/// `offlineByUs` knows it, so it reports the node `terminate_me` once idle.
pub(super) const WARM_REASON: &str = "warm pool: set up, to be stopped until a job of its label needs it";

/// A pool agent whose node is online serves builds — left online by the
/// set-up stop (as the spare, or for a waiting item), or taken by a build
/// before it: no pool member, and it counts for the spare like any agent.
/// It rejoins the pool once the set-up stop takes its node offline (offline
/// by us; offline not by us it is still on its way into the pool). Its node
/// is the one the set-up stop would act on; an older dump script that does
/// not report busy executors leaves the agent to the idle policy, never to
/// the set-up stop, so it stays a member as it always was (else every pool
/// agent would be refilled, up to the cap).
pub(super) fn serving(snap: &Snapshot<'_>, inst: &Instance) -> bool {
    node_of(&snap.dump.nodes, inst)
        .filter(|n| names(&n.name, inst))
        .is_some_and(|n| !n.offline && n.busy_executors.is_some())
}

/// Takes set-up pool agents offline and stops them, unless their label's
/// spare needs them online.
pub(super) fn plan_stops(cfg: &PlanConfig, snap: &Snapshot<'_>, claimed: &mut BTreeSet<String>, plan: &mut Plan) {
    // An item of its label may be about to run on it: Jenkins assigns
    // builds between our passes.
    let waiting: BTreeSet<&str> = snap.dump.queue.iter().map(|q| q.label.trim()).collect();
    for env in snap.envs.keys() {
        let Ok(instances) = observed(snap.envs, env) else { continue };
        for inst in instances {
            let Some(pool) = inst.warm.as_deref() else { continue };
            if inst.state != InstanceState::Running
                || inst.spot
                || !cfg.is_ours(env, inst)
                || claimed.contains(&inst.id)
                // The dump script drains it; the old-AMI rules retire it.
                || cfg.on_replaced_ami(env, inst)
            {
                continue;
            }
            // Not online yet, or a node whose name does not name the
            // instance (anybody's build can register one): not set up.
            let Some(node) = node_of(&snap.dump.nodes, inst).filter(|n| names(&n.name, inst)) else {
                continue;
            };
            // Busy, or an older dump script that does not say: the usual
            // idle policy decides.
            if !idle(&snap.dump.nodes, inst) {
                continue;
            }
            if node.offline {
                // Offline by us (ours, or the idle policy's) and idle: no
                // build can land on it any more. Offline for another reason
                // (a person, a lost connection): not ours to stop.
                if node.terminate_me {
                    claimed.insert(inst.id.clone());
                    plan.act(Action::Stop {
                        env: env.clone(),
                        instance_id: inst.id.clone(),
                        node: node.name.clone(),
                        warm: true,
                        tag_warmed: true,
                    });
                }
                continue;
            }
            if inst.slave_labels.iter().flatten().any(|l| waiting.contains(l.as_str())) {
                plan.debug(None, format!("warm pool {pool}: {} is kept running, an item of its label waits", inst.id));
                continue;
            }
            if let Some(short) = spare_short_without(cfg, snap, inst, instances, claimed) {
                plan.debug(None, format!("warm pool {pool}: {} is kept online as the spare ({short})", inst.id));
                continue;
            }
            // Claimed: it serves no queue item of this pass either.
            claimed.insert(inst.id.clone());
            plan.act(Action::OfflineNode {
                env: env.clone(),
                instance_id: inst.id.clone(),
                node: node.name.clone(),
                reason: WARM_REASON.to_string(),
            });
        }
    }
}

/// A spare of the agent's labels, in its hours, that is short of idle
/// executors without it: what it has. Pool agents on their way into the
/// pool do not count, those serving do (this pass takes offline those it
/// claimed).
fn spare_short_without(
    cfg: &PlanConfig,
    snap: &Snapshot<'_>,
    inst: &Instance,
    instances: &[Instance],
    claimed: &BTreeSet<String>,
) -> Option<String> {
    let others = |i: &Instance| {
        i.id != inst.id
            && !claimed.contains(&i.id)
            && (i.warm.is_none() || serving(snap, i) || spare::started_not_for_pool(cfg, snap, i))
    };
    cfg.spare
        .iter()
        .filter(|s| inst.has_label(&s.label.raw) && cfg.is_ours(&s.label.env, inst) && spare::in_hours(s, snap))
        .find_map(|s| {
            let ready =
                spare::executors(cfg, snap, &s.label, instances, others).saturating_sub(spare::queued(snap, &s.label));
            (ready < s.executors)
                .then(|| format!("spare {}: {ready} of {} idle executors ready without it", s.label.raw, s.executors))
        })
}

/// No node of the instance has a busy executor, and the dump says so.
fn idle(nodes: &[Node], inst: &Instance) -> bool {
    nodes
        .iter()
        .filter(|n| n.instance_id.as_deref() == Some(inst.id.as_str()) || names(&n.name, inst))
        .all(|n| n.busy_executors == Some(0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::label::parse_label;
    use crate::model::InstanceState::*;
    use crate::model::{Instance, Node, QueueItem};
    use crate::plan::test_kit::*;
    use crate::plan::*;
    use crate::warm::{Hours, WarmPool};

    /// A `--warm` pool: label, size, hours.
    type Pool<'a> = (&'a str, u32, Option<(u8, u8)>);

    /// `cfg()` with `--warm` pools.
    fn warm(pools: &[Pool<'_>]) -> PlanConfig {
        let mut c = cfg();
        c.warm = pools
            .iter()
            .map(|&(label, size, hours)| WarmPool {
                label: parse_label(label, &c.known_envs()).unwrap(),
                size,
                hours: hours.map(|(from, to)| Hours { from, to }),
            })
            .collect();
        c
    }

    fn acts(c: &PlanConfig, s: &Scene) -> Vec<String> {
        brief(&plan_pass(c, &s.view(), 42).actions)
    }

    /// An agent created for the `label` pool, not yet stopped once.
    fn filling(id: &str, state: crate::model::InstanceState, label: &str) -> Instance {
        agent(id, state, label).launched_ago(60).with(|i| i.warm = Some(label.into()))
    }

    #[test]
    fn a_short_pool_is_filled_by_creates_tagged_warm() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]);
        let mut c = warm(&[("dev", 3, None)]);
        c.max_on_demand = 5;
        let plan = plan_pass(&c, &s.view(), 1);
        assert_eq!(brief(&plan.actions), ["create dev dev warm", "create dev dev warm"]);
        let keys: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { job_key, warm: true, replaces: None, on_demand_fallback: false, .. } => {
                    Some(job_key.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(keys, ["warm-pool-dev-2", "warm-pool-dev-3"], "the pool's places being filled");
    }

    #[test]
    fn a_pool_place_is_asked_of_ec2_anew_once_its_member_left() {
        // The same pool in the same token window: the same token (a retry
        // gets the same agent). A member started for a job: another token.
        let token = |s: &Scene| match &plan_pass(&warm(&[("dev", 2, None)]), &s.view(), 1).actions[..] {
            [Action::Create { client_token, warm: true, .. }] => client_token.clone(),
            other => panic!("{other:?}"),
        };
        let one = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]);
        let other = snap(vec![("dev", vec![agent("i-2", Stopped, "dev")])]);
        assert_eq!(token(&one), token(&one.clone()));
        assert_ne!(token(&one), token(&other));
    }

    #[test]
    fn a_pool_back_to_its_earlier_members_asks_ec2_with_a_new_token() {
        // i-2 was launched for the place i-1's pool lacked, then started for
        // a job: the pool is {i-1} again in the same token window. The old
        // token would get EC2's old answer, i-2, and the place stays empty.
        let mut c = warm(&[("dev", 2, None)]);
        c.max_on_demand = 5;
        let token = |s: &Scene| match &plan_pass(&c, &s.view(), 1).actions[..] {
            [Action::Create { client_token, warm: true, .. }] => client_token.clone(),
            other => panic!("{other:?}"),
        };
        let before = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]);
        let claimed_by_a_job =
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Running, "dev").launched_ago(60)])]);
        assert_ne!(token(&before), token(&claimed_by_a_job));
        // Gone for good, it still changes the token while EC2 lists it.
        let terminated = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Terminated, "dev")])]);
        assert_ne!(token(&before), token(&terminated));
    }

    #[test]
    fn a_full_pool_creates_nothing() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopping, "dev")])]);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), Vec::<String>::new());
        assert_eq!(acts(&warm(&[("dev", 0, None)]), &snap(vec![("dev", vec![])])), Vec::<String>::new());
    }

    #[test]
    fn only_stopped_current_ami_agents_of_the_label_and_env_count() {
        let s = snap(vec![
            (
                "dev",
                vec![
                    agent("i-1", Stopped, "dev").ami("ami-old"),
                    agent("i-2", Stopped, "dev_shared"),
                    agent("i-3", Stopped, "dev").named(Some("someone-else")),
                    agent("i-4", Running, "dev"),
                    agent("i-5", Terminated, "dev"),
                ],
            ),
            ("prod", vec![agent("i-6", Stopped, "prod")]),
        ]);
        let mut c = warm(&[("dev", 1, None)]);
        c.max_on_demand = 5;
        assert_eq!(acts(&c, &s), ["create dev dev warm"]);
    }

    #[test]
    fn pool_creates_stay_under_the_cap_and_never_make_room() {
        // Cap 2: one running agent leaves room for one of the three.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev_shared").launched_ago(60)])]);
        let plan = plan_pass(&warm(&[("dev", 3, None)]), &s.view(), 1);
        assert_eq!(brief(&plan.actions), ["create dev dev warm"]);
        // At the cap with a stopped agent of another label make-room could
        // take: nothing is terminated for the pool.
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Running, "dev_shared").launched_ago(60), agent("i-2", Stopped, "dev_c5.large")],
        )]);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), Vec::<String>::new());
        let mut c = warm(&[("dev", 2, None)]);
        c.max_on_demand = 0;
        assert_eq!(acts(&c, &snap(vec![("dev", vec![])])), Vec::<String>::new());
    }

    #[test]
    fn queued_items_of_any_label_are_served_before_the_pool() {
        // Cap 2: both items get their agent, the pool nothing.
        let s = snap(vec![("dev", vec![])]).queue(vec![item("a", "dev_c5.large"), item("b", "dev_shared")]);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), ["create dev dev_c5.large", "create dev dev_shared"]);
        // Cap 3: the item first, the pool gets what is left.
        let mut c = warm(&[("dev", 2, None)]);
        c.max_on_demand = 3;
        let s = snap(vec![("dev", vec![]), ("prod", vec![])]).queue(vec![item("a", "dev_shared"), item("b", "prod")]);
        assert_eq!(
            acts(&c, &s),
            ["create dev dev_shared", "create prod prod", "create dev dev warm", "create dev dev warm"]
        );
        // An item waiting at the cap is not overtaken by the pool.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev_shared").launched_ago(7200)])])
            .queue(vec![item("a", "dev_c5.large"), item("b", "dev_c5.large")]);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), ["create dev dev_c5.large"]);
    }

    #[test]
    fn a_queued_item_of_the_label_is_served_by_starting_a_pool_agent_and_the_pool_refills() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopped, "dev")])])
            .queue(vec![QueueItem { last_built_on: Some("dev-10.0.0.2".into()), ..item("job", "dev") }]);
        let mut c = warm(&[("dev", 2, None)]);
        c.max_on_demand = 3;
        assert_eq!(acts(&c, &s), ["start i-2 dev", "create dev dev warm"]);
        // Without a pool the same item starts the same agent: the pool
        // agent is taken by the usual stopped-agent preference.
        assert_eq!(acts(&cfg(), &s), ["start i-2 dev"]);
    }

    #[test]
    fn a_queued_item_gets_a_stopped_pool_agent_started_not_a_booting_one() {
        // i-2 boots for the pool: the item would wait for its boot and
        // set-up, while starting i-1 takes tens of seconds.
        for booting in [filling("i-2", Pending, "dev"), filling("i-2", Running, "dev")] {
            let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), booting.clone()])])
                .queue(vec![item("job", "dev")]);
            assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), ["start i-1 dev"], "{booting:?}");
            // A second item: nothing stopped is left, the booting one serves it.
            let s = s.queue(vec![item("job", "dev"), item("other", "dev")]);
            assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), ["start i-1 dev"], "{booting:?}");
        }
        // Nothing stopped to start: the booting pool agent serves the item.
        let s = snap(vec![("dev", vec![filling("i-2", Pending, "dev")])]).queue(vec![item("job", "dev")]);
        assert_eq!(acts(&warm(&[("dev", 1, None)]), &s), Vec::<String>::new());
        // Online already: Jenkins gives it the item now; nothing is started.
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), filling("i-2", Running, "dev")])])
            .nodes(vec![online("dev-10.0.0.2", "i-2", "dev", 1)])
            .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), Vec::<String>::new());
    }

    #[test]
    fn pool_agents_booting_or_coming_online_are_counted_so_never_created_twice() {
        let s = snap(vec![("dev", vec![filling("i-1", Pending, "dev"), filling("i-2", Running, "dev")])]);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), Vec::<String>::new());
        // Launched moments ago and not yet listed by EC2: its start marker counts.
        let s = snap(vec![("dev", vec![filling("i-1", Pending, "dev")])]).start_marker("dev", "i-9", "dev", 5);
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), Vec::<String>::new());
        // A running agent that is not the pool's will not be stopped for it.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(60)])]);
        assert_eq!(acts(&warm(&[("dev", 1, None)]), &s), ["create dev dev warm"]);
    }

    #[test]
    fn a_set_up_idle_pool_agent_is_taken_offline_at_once_and_still_counts() {
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![online(
            "dev-10.0.0.1",
            "i-1",
            "dev",
            1,
        )]);
        let plan = plan_pass(&warm(&[("dev", 1, None)]), &s.view(), 1);
        assert_eq!(
            plan.actions,
            [Action::OfflineNode {
                env: "dev".into(),
                instance_id: "i-1".into(),
                node: "dev-10.0.0.1".into(),
                reason: super::WARM_REASON.into(),
            }],
            "not stopped: a build Jenkins assigned since the dump would die with it"
        );
        // Taken offline whatever the flag says now: the tag governs.
        assert_eq!(acts(&cfg(), &s), ["offline dev-10.0.0.1"]);
    }

    #[test]
    fn a_pool_agent_is_stopped_once_the_dump_shows_its_node_offline_by_us_and_idle() {
        // The pass after the offline-node: the dump script reports a node
        // offline by us with no build terminate_me.
        let s =
            snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")]);
        let plan = plan_pass(&warm(&[("dev", 1, None)]), &s.view(), 1);
        assert_eq!(
            plan.actions,
            [warmed_stop("i-1", "dev-10.0.0.1", true)],
            "the pool's stop, and it still counts: nothing created"
        );
        assert_eq!(plan.actions[0].to_string(), "dev: stop i-1 (warm pool: node dev-10.0.0.1 is set up and idle)");
    }

    #[test]
    fn a_build_that_landed_before_the_node_went_offline_keeps_the_pool_agent() {
        let landed = Node {
            busy_executors: Some(1),
            idle_executors: Some(0),
            terminate_me: false,
            ..doomed("dev-10.0.0.1", "i-1", "dev")
        };
        // Offline, but not by us (a person, a lost connection): not ours to stop.
        let by_someone = Node { terminate_me: false, ..doomed("dev-10.0.0.1", "i-1", "dev") };
        for node in [landed, by_someone] {
            let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![node.clone()]);
            assert_eq!(acts(&warm(&[("dev", 1, None)]), &s), Vec::<String>::new(), "{node:?}");
        }
    }

    #[test]
    fn the_dump_script_knows_the_warm_pool_offline_reason() {
        // Its offlineByUs reports the node terminate_me once idle: the
        // second half of the stop.
        let script = include_str!("../../../../jenkins/get_queue_jobs.groovy");
        assert!(script.contains(&format!("'{}'", super::WARM_REASON)));
    }

    #[test]
    fn a_pool_agent_is_not_stopped_while_busy_before_online_or_when_unsure() {
        let busy = Node { busy_executors: Some(1), idle_executors: Some(0), ..online("dev-10.0.0.1", "i-1", "dev", 0) };
        let offline = Node { offline: true, ..online("dev-10.0.0.1", "i-1", "dev", 1) };
        let unknown = Node { busy_executors: None, ..online("dev-10.0.0.1", "i-1", "dev", 1) };
        let misnamed = online("dev-10.0.0.7", "i-1", "dev", 1);
        // Neither taken offline nor stopped (a busy node serves builds, so
        // the pool refills beside it).
        let untouched = |nodes: Vec<Node>| {
            let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(nodes.clone());
            let got = acts(&warm(&[("dev", 1, None)]), &s);
            assert!(got.iter().all(|a| a.starts_with("create ")), "{nodes:?}: {got:?}");
            got
        };
        assert_eq!(untouched(vec![busy]), ["create dev dev warm"]);
        // Still the pool's: not online, or a node the set-up stop would not
        // act on (an older dump script, a name that does not name it).
        for nodes in [vec![offline], vec![unknown], vec![misnamed], vec![]] {
            assert_eq!(untouched(nodes), Vec::<String>::new());
        }
        // Another node of the instance has a build.
        untouched(vec![
            online("dev-10.0.0.1", "i-1", "dev", 1),
            Node { busy_executors: Some(1), ..online("dev-10.0.0.1-b", "i-1", "dev", 0) },
        ]);
    }

    #[test]
    fn a_set_up_pool_agent_is_kept_online_as_the_spare_when_its_label_is_short() {
        let c = with_pools(&[("dev", 1, None)], &[("dev", 1, None)]);
        let set_up = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![online(
            "dev-10.0.0.1",
            "i-1",
            "dev",
            1,
        )]);
        let plan = plan_pass(&c, &set_up.view(), 1);
        // Kept online, not the pool's any more: the pool refills by a create.
        assert_eq!(brief(&plan.actions), ["create dev dev warm"]);
        let notes = debug_notes(&plan.notes);
        assert!(
            notes.contains(
                &"warm pool dev: i-1 is kept online as the spare (spare dev: 0 of 1 idle executors ready without it)"
            ),
            "{notes:?}"
        );
        assert!(notes.contains(&"spare dev: 1 of 1 idle executors ready"), "{notes:?}");
        // The next pass, its replacement booting into the pool: still kept,
        // and the booting one is no spare of its own.
        let s = set_up
            .clone()
            .with(|s| s.envs.get_mut("dev").unwrap().as_mut().unwrap().push(filling("i-2", Pending, "dev")));
        assert_eq!(acts(&c, &s), Vec::<String>::new());
        // Another agent is the spare already: the pool agent goes offline
        // to be stopped, as without --spare.
        let s = set_up.clone().with(|s| {
            s.envs.get_mut("dev").unwrap().as_mut().unwrap().push(agent("i-3", Running, "dev"));
            s.dump.nodes.push(online("dev-10.0.0.3", "i-3", "dev", 1));
        });
        assert_eq!(acts(&c, &s), ["offline dev-10.0.0.1"]);
        // Outside the spare's hours (now() is 22:13 UTC): stopped as usual.
        let c = with_pools(&[("dev", 1, None)], &[("dev", 1, Some((7, 19)))]);
        assert_eq!(acts(&c, &set_up), ["offline dev-10.0.0.1"]);
    }

    #[test]
    fn a_pool_agent_kept_running_for_a_waiting_item_serves_it_and_the_pool_refills() {
        // Jenkins is about to give it the item: kept online, it serves
        // builds and is no pool member.
        let c = warm(&[("dev", 1, None)]);
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])])
            .nodes(vec![online("dev-10.0.0.1", "i-1", "dev", 1)])
            .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&c, &s), ["create dev dev warm"]);
        // The item took it: busy, still no member.
        let busy = Node { busy_executors: Some(1), idle_executors: Some(0), ..online("dev-10.0.0.1", "i-1", "dev", 0) };
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![busy]);
        assert_eq!(acts(&c, &s), ["create dev dev warm"]);
        // Idle again: the set-up stop takes its node offline, and in that
        // pass it is the pool's again.
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![online(
            "dev-10.0.0.1",
            "i-1",
            "dev",
            1,
        )]);
        assert_eq!(acts(&c, &s), ["offline dev-10.0.0.1"]);
    }

    #[test]
    fn a_pool_agent_kept_as_the_spare_and_taken_by_a_build_stays_the_spare_and_out_of_the_pool() {
        // Five executors, one busy: its four idle ones are the spare's, and
        // the pool, short of it, refills by a create.
        let c = with_pools(&[("dev_shared", 1, None)], &[("dev_shared", 1, None)]);
        let node = Node {
            busy_executors: Some(1),
            idle_executors: Some(4),
            num_executors: Some(5),
            ..online("dev_shared-10.0.0.1", "i-1", "dev_shared", 4)
        };
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev_shared")])]).nodes(vec![node]);
        let plan = plan_pass(&c, &s.view(), 1);
        assert_eq!(brief(&plan.actions), ["create dev dev_shared warm"]);
        assert!(
            debug_notes(&plan.notes).contains(&"spare dev_shared: 4 of 1 idle executors ready"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn an_agent_stopped_once_for_the_pool_follows_the_usual_policy() {
        // `warm` is cleared by the tag its first stop sets: idle now, kept.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev")])]).nodes(vec![online(
            "dev-10.0.0.1",
            "i-1",
            "dev",
            1,
        )]);
        assert_eq!(acts(&warm(&[("dev", 1, None)]), &s), ["create dev dev warm"]);
        // A pool agent on a replaced AMI is left to the old-AMI rules.
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev").ami("ami-old")])]).nodes(vec![online(
            "dev-10.0.0.1",
            "i-1",
            "dev",
            1,
        )]);
        assert_eq!(acts(&cfg(), &s), Vec::<String>::new());
    }

    #[test]
    fn any_stop_of_a_pool_agent_marks_it_stopped_once() {
        // The idle policy stops it (an older dump script says nothing of
        // busy executors, so the pool leaves it alone): the stop tags it too.
        let node = Node { busy_executors: None, ..doomed("dev-10.0.0.1", "i-1", "dev") };
        let s = snap(vec![("dev", vec![filling("i-1", Running, "dev")])]).nodes(vec![node]);
        assert_eq!(
            plan_pass(&warm(&[("dev", 1, None)]), &s.view(), 1).actions,
            [warmed_stop("i-1", "dev-10.0.0.1", false)]
        );
        // A plain agent's stop tags nothing.
        let s =
            snap(vec![("dev", vec![agent("i-1", Running, "dev")])]).nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")]);
        match &plan_pass(&cfg(), &s.view(), 1).actions[..] {
            [Action::Stop { tag_warmed, .. }] => assert!(!tag_warmed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_node_the_idle_policy_stops_counts_for_the_pool() {
        let s =
            snap(vec![("dev", vec![agent("i-1", Running, "dev")])]).nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")]);
        assert_eq!(acts(&warm(&[("dev", 1, None)]), &s), ["stop i-1"]);
    }

    #[test]
    fn the_pool_is_filled_only_inside_its_hours_which_may_wrap_midnight() {
        // now() is 22:13 UTC.
        assert_eq!(now(), std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let empty = snap(vec![("dev", vec![])]);
        for (hours, creates) in [((7, 23), 1), ((7, 19), 0), ((21, 6), 1), ((23, 6), 0), ((0, 24), 1), ((22, 23), 1)] {
            let plan = plan_pass(&warm(&[("dev", 1, Some(hours))]), &empty.view(), 1);
            assert_eq!(plan.actions.len(), creates, "{hours:?}");
        }
        // Outside them, surplus stopped agents are left alone.
        let s = snap(vec![("dev", (1..=4).map(|n| agent(&format!("i-{n}"), Stopped, "dev")).collect())]);
        assert_eq!(acts(&warm(&[("dev", 1, Some((7, 19)))]), &s), Vec::<String>::new());
    }

    #[test]
    fn an_env_that_could_not_be_observed_gets_no_pool_creates() {
        let s = snap(vec![]).env_err("dev");
        assert_eq!(acts(&warm(&[("dev", 2, None)]), &s), Vec::<String>::new());
    }
}
