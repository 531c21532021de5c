//! Keeping the spare executors (`--spare`, issue 14): during its hours, a
//! label short of idle executors ready gets agents brought up, after every
//! queued item of the pass and before the warm pools are filled. Starts
//! first (a stopped agent of the label, the pool's members among them, is
//! up in tens of seconds; the pool then refills by a create), else creates
//! within what the on-demand cap leaves: never above it, never by making room.

use crate::model::{Instance, Label};
use crate::plan::snapshot::{age, observed, FAILED_START_SKIPPED};
use crate::plan::spare::{executors, overdue, queued, started_not_for_pool};
use crate::plan::warm::serving;
use crate::plan::Action;
use crate::warm::Spare;

use super::ScaleUp;

impl ScaleUp<'_> {
    pub(super) fn keep_spares(&mut self) {
        let cfg = self.cfg;
        for spare in &cfg.spare {
            self.keep(spare);
        }
    }

    fn keep(&mut self, spare: &Spare) {
        let label = &spare.label;
        if let Some(hours) = spare.hours.filter(|h| !h.contains(self.snap.now)) {
            self.plan.debug(None, format!("spare {}: outside its hours ({hours}); nothing is brought up", label.raw));
            return;
        }
        // An env that could not be observed is reported where it is observed.
        let Ok(instances) = observed(self.snap.envs, &label.env) else { return };
        let wanted = spare.executors;
        let ready = self.spare_ready(instances, label);
        let status = format!("spare {}: {ready} of {wanted} idle executors ready", label.raw);
        self.plan.debug(None, status.clone());
        for line in overdue(self.cfg, &self.snap, label, instances, |i| self.counts_for_spare(i)) {
            self.plan.debug(None, line);
        }
        if ready >= wanted {
            return;
        }
        let mut agents = (wanted - ready).div_ceil(label.pricing.executors());
        let refused = self.refused_starts(instances, label);
        let mut n = 0;
        while agents > 0 {
            let Some((inst, why)) = self.pick_stopped(instances, label, None, &refused) else { break };
            let id = inst.id.clone();
            let tag_warmed = inst.warm.is_some();
            self.claimed.insert(id.clone());
            n += 1;
            agents -= 1;
            self.plan.act(Action::Start {
                env: label.env.clone(),
                instance_id: id,
                label: label.raw.clone(),
                job_key: format!("spare-{}-{n}", label.raw),
                why: format!("spare: {ready} of {wanted} idle executors ready; {why}"),
                spare: true,
                tag_warmed,
            });
        }
        if agents == 0 {
            return;
        }
        if !matches!(self.cfg.amis.get(&label.env), Some(Some(_))) {
            self.plan.debug(None, format!("{status}; no AMI is configured for {}, so nothing is created", label.env));
            return;
        }
        let granted = self.take_on_demand_room(&label.env, instances, agents);
        if granted < agents {
            self.plan.debug(
                None,
                format!(
                    "{status}; the on-demand cap ({}) leaves room for {granted} more agent(s) of the {agents} wanted",
                    self.cfg.max_on_demand
                ),
            );
        }
        let keys = (n + 1..=n + granted).map(|n| format!("spare-{}-{n}", label.raw));
        self.create_unqueued(instances, label, keys, false);
    }

    /// The label's stopped agents whose start EC2 refused less than
    /// [`FAILED_START_SKIPPED`] ago: likely refused again (capacity in their
    /// AZ, a broken volume), so the spare brings up another agent instead.
    fn refused_starts<'i>(&mut self, instances: &'i [Instance], label: &Label) -> Vec<&'i str> {
        let mut refused = Vec::new();
        for inst in self.stopped_candidates(instances, label) {
            let Some(&at) = self.snap.failed_starts.get(&(label.env.clone(), inst.id.clone())) else { continue };
            let ago = age(self.snap.now, at);
            if ago < FAILED_START_SKIPPED {
                let line = format!("spare {}: {} failed to start {} s ago; skipped", label.raw, inst.id, ago.as_secs());
                self.plan.debug(None, line);
                refused.push(inst.id.as_str());
            }
        }
        refused
    }

    /// The label's idle executors ready or on their way, less its queued
    /// items: the snapshot's (without agents this pass claimed, and without
    /// pool agents on their way into the pool unless kept as the spare),
    /// and those of the agents this pass starts or creates for it.
    fn spare_ready(&self, instances: &[Instance], label: &Label) -> u32 {
        let per_agent = label.pricing.executors();
        let in_snapshot = executors(self.cfg, &self.snap, label, instances, |i| self.counts_for_spare(i));
        let this_pass: u32 = self
            .plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Start { instance_id, .. } => {
                    let serves = instances.iter().any(|i| i.id == *instance_id && self.serves(i, label));
                    if serves {
                        per_agent
                    } else {
                        0
                    }
                }
                Action::Create { label: l, warm: false, .. } if l.raw == label.raw => l.pricing.executors(),
                _ => 0,
            })
            .sum();
        in_snapshot.saturating_add(this_pass).saturating_sub(queued(&self.snap, label))
    }

    /// Not claimed by this pass's other actions, and no pool agent on its
    /// way into the pool: a pool agent serving builds, or started, counts.
    fn counts_for_spare(&self, i: &Instance) -> bool {
        !self.claimed.contains(&i.id)
            && (i.warm.is_none() || serving(&self.snap, i) || started_not_for_pool(self.cfg, &self.snap, i))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::InstanceState::*;
    use crate::model::{Instance, Node};
    use crate::plan::test_kit::*;
    use crate::plan::*;

    /// `--spare` labels: (label, executors, hours).
    fn spare(spares: &[LabelWord<'_>]) -> PlanConfig {
        with_pools(&[], spares)
    }

    fn acts(c: &PlanConfig, s: &Scene) -> Vec<String> {
        brief(&plan_pass(c, &s.view(), 42).actions)
    }

    fn debug(c: &PlanConfig, s: &Scene) -> Vec<String> {
        debug_notes(&plan_pass(c, &s.view(), 42).notes).into_iter().map(str::to_string).collect()
    }

    /// A dev agent whose node is online with `idle` of `num` executors free.
    fn up(id: &str, idle: u32, num: u32) -> (Instance, Node) {
        let n = id.trim_start_matches("i-");
        let node = Node {
            busy_executors: Some(num - idle),
            num_executors: Some(num),
            ..online(&format!("dev-10.0.0.{n}"), id, "dev", idle)
        };
        (agent(id, Running, "dev"), node)
    }

    #[test]
    fn a_label_short_of_spare_executors_gets_a_stopped_agent_started() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopped, "dev_shared")])]);
        let plan = plan_pass(&spare(&[("dev", 1, None)]), &s.view(), 1);
        assert_eq!(brief(&plan.actions), ["start i-1 dev spare"]);
        match &plan.actions[0] {
            Action::Start { job_key, why, spare: true, .. } => {
                assert_eq!(job_key, "spare-dev-1");
                assert_eq!(why, "spare: 0 of 1 idle executors ready; one of 1 stopped agents");
            }
            other => panic!("{other:?}"),
        }
        assert!(debug_notes(&plan.notes).contains(&"spare dev: 0 of 1 idle executors ready"), "{:?}", plan.notes);
        // Without --spare nothing happens on an empty queue.
        assert_eq!(acts(&cfg(), &s), Vec::<String>::new());
    }

    #[test]
    fn with_nothing_stopped_a_spare_is_created_within_the_cap() {
        let s = snap(vec![("dev", vec![agent("i-9", Stopped, "dev").ami("ami-old")])]);
        let plan = plan_pass(&spare(&[("dev", 1, None)]), &s.view(), 1);
        assert_eq!(brief(&plan.actions), ["create dev dev spare"]);
        match &plan.actions[0] {
            Action::Create { job_key, spare: true, warm: false, replaces: None, .. } => {
                assert_eq!(job_key, "spare-dev-1")
            }
            other => panic!("{other:?}"),
        }
        // Three wanted, cap 2, one agent already there (the old-AMI one):
        // one more fits.
        let plan = plan_pass(&spare(&[("dev", 3, None)]), &s.view(), 1);
        assert_eq!(brief(&plan.actions), ["create dev dev spare"]);
        // A shared agent brings five executors: one create for five.
        let s = snap(vec![("dev", vec![])]);
        assert_eq!(acts(&spare(&[("dev_shared", 5, None)]), &s), ["create dev dev_shared spare"]);
        assert_eq!(acts(&spare(&[("dev_shared", 6, None)]), &s), ["create dev dev_shared spare"; 2]);
    }

    #[test]
    fn at_the_cap_nothing_is_brought_up_and_the_debug_line_says_why() {
        // Cap 2: two busy agents, a stopped agent of another label that
        // make-room could take. Nothing is terminated for a spare.
        let (a, na) = up("i-1", 0, 1);
        let (b, nb) = up("i-2", 0, 1);
        let s = snap(vec![("dev", vec![a, b, agent("i-3", Stopped, "dev_c5.large")])]).nodes(vec![na, nb]);
        let c = spare(&[("dev", 1, None)]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
        assert!(
            debug(&c, &s).contains(
                &"spare dev: 0 of 1 idle executors ready; the on-demand cap (2) leaves room for 0 more agent(s) of the 1 wanted"
                    .to_string()
            ),
            "{:?}",
            debug(&c, &s)
        );
    }

    #[test]
    fn queued_items_are_served_before_the_spare() {
        // Cap 2: both items get their agent, the spare nothing.
        let s = snap(vec![("dev", vec![])]).queue(vec![item("a", "dev"), item("b", "dev_c5.large")]);
        assert_eq!(acts(&spare(&[("dev", 1, None)]), &s), ["create dev dev", "create dev dev_c5.large"]);
        // Cap 3: the item's agent is no spare (its item takes it); the spare
        // gets the room left.
        let mut c = spare(&[("dev", 1, None)]);
        c.max_on_demand = 3;
        let s = snap(vec![("dev", vec![])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&c, &s), ["create dev dev", "create dev dev spare"]);
        // The only stopped agent goes to the item; the spare is created.
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&c, &s), ["start i-1 dev", "create dev dev spare"]);
        // An online idle agent about to take a queued item is no spare.
        let (a, na) = up("i-1", 1, 1);
        let s =
            snap(vec![("dev", vec![a, agent("i-2", Stopped, "dev")])]).nodes(vec![na]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&c, &s), ["start i-2 dev spare"]);
    }

    #[test]
    fn an_agent_on_its_way_counts() {
        let c = spare(&[("dev", 1, None)]);
        let stopped = agent("i-5", Stopped, "dev");
        for on_its_way in [agent("i-1", Pending, "dev"), agent("i-1", Running, "dev").launched_ago(60)] {
            let s = snap(vec![("dev", vec![on_its_way.clone(), stopped.clone()])]);
            assert_eq!(acts(&c, &s), Vec::<String>::new(), "{on_its_way:?}");
            assert!(debug(&c, &s).contains(&"spare dev: 1 of 1 idle executors ready".to_string()));
        }
        // Launched moments ago and not yet listed: its start marker counts.
        let s = snap(vec![("dev", vec![stopped.clone()])]).start_marker("dev", "i-7", "dev", 5);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
    }

    #[test]
    fn an_agent_whose_node_registered_but_never_connected_is_on_its_way() {
        // Swarm adds the node before its agent connects: offline, not by us
        // (no terminate_me), nothing running. With a broken agent port every
        // agent stays so; another one would only stay so too.
        let c = spare(&[("dev", 1, None)]);
        let stopped = agent("i-5", Stopped, "dev");
        let (a, na) = up("i-1", 1, 1);
        let registered = Node { offline: true, ..na.clone() };
        let s = snap(vec![("dev", vec![a.clone().launched_ago(60), stopped.clone()])]).nodes(vec![registered.clone()]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
        assert!(debug(&c, &s).contains(&"spare dev: 1 of 1 idle executors ready".to_string()), "{:?}", debug(&c, &s));
        // Offline with a build on it (drained, or a build that landed before
        // it went offline): not on its way, the spare is brought up.
        let drained = Node { busy_executors: Some(1), idle_executors: Some(0), ..registered };
        let s = snap(vec![("dev", vec![a, stopped])]).nodes(vec![drained]);
        assert_eq!(acts(&c, &s), ["start i-5 dev spare"]);
    }

    #[test]
    fn an_agent_without_an_online_node_past_the_boot_grace_is_not_replaced_and_the_debug_line_says_so() {
        let c = spare(&[("dev", 1, None)]);
        let stopped = agent("i-5", Stopped, "dev");
        // No node at all after an hour: a zombie if --zombie_minutes is set.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(3600), stopped.clone()])]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
        assert!(
            debug(&c, &s).contains(
                &"spare dev: i-1 has had no online node for 60 min; not replaced — see --zombie_minutes".to_string()
            ),
            "{:?}",
            debug(&c, &s)
        );
        // Its node registered and never connected.
        let (a, na) = up("i-1", 1, 1);
        let s =
            snap(vec![("dev", vec![a.launched_ago(3600), stopped.clone()])]).nodes(vec![Node { offline: true, ..na }]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
        assert!(debug(&c, &s).contains(
            &"spare dev: i-1 has had no online node for 60 min (its node dev-10.0.0.1 is offline, not by us); not replaced"
                .to_string()
        ));
        // Within the boot grace nothing is said.
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(60), stopped])]);
        assert_eq!(debug(&c, &s), ["spare dev: 1 of 1 idle executors ready"]);
    }

    #[test]
    fn outside_its_hours_nothing_is_brought_up() {
        // now() is 22:13 UTC.
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]);
        let c = spare(&[("dev", 1, Some((7, 19)))]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
        assert_eq!(debug(&c, &s), ["spare dev: outside its hours (07-19 UTC); nothing is brought up"]);
        assert_eq!(acts(&spare(&[("dev", 1, Some((22, 6)))]), &s), ["start i-1 dev spare"]);
    }

    #[test]
    fn busy_executors_do_not_count() {
        let c = spare(&[("dev_shared", 2, None)]);
        let shared = |id: &str, busy: u32| {
            let node = Node {
                busy_executors: Some(busy),
                num_executors: Some(5),
                idle_executors: Some(5 - busy),
                ..online(&format!("dev_shared-{id}"), id, "dev_shared", 5 - busy)
            };
            (agent(id, Running, "dev_shared"), node)
        };
        let stopped = agent("i-9", Stopped, "dev_shared");
        let (a, na) = shared("i-1", 4);
        let s = snap(vec![("dev", vec![a.clone(), stopped.clone()])]).nodes(vec![na]);
        assert_eq!(acts(&c, &s), ["start i-9 dev_shared spare"]);
        assert!(debug(&c, &s).contains(&"spare dev_shared: 1 of 2 idle executors ready".to_string()));
        let (_, na) = shared("i-1", 3);
        let s = snap(vec![("dev", vec![a, stopped])]).nodes(vec![na]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
    }

    #[test]
    fn nodes_offline_by_us_or_terminate_me_do_not_count() {
        let c = spare(&[("dev", 1, None)]);
        let (a, na) = up("i-1", 1, 1);
        let stopped = agent("i-5", Stopped, "dev");
        // Online but terminate_me.
        let node = Node { terminate_me: true, ..na.clone() };
        let s = snap(vec![("dev", vec![a.clone(), stopped.clone()])]).nodes(vec![node]);
        assert_eq!(acts(&c, &s), ["start i-5 dev spare"]);
        // Offline by the idle policy: stopped this pass, and the spare starts another.
        let s = snap(vec![("dev", vec![a.clone(), stopped.clone()])]).nodes(vec![doomed("dev-10.0.0.1", "i-1", "dev")]);
        assert_eq!(acts(&c, &s), ["stop i-1", "start i-5 dev spare"]);
        // Online and idle: the spare is there.
        let s = snap(vec![("dev", vec![a, stopped])]).nodes(vec![na]);
        assert_eq!(acts(&c, &s), Vec::<String>::new());
    }

    #[test]
    fn a_spare_start_takes_a_pool_member_and_the_pool_refills_by_a_create() {
        let mut c = with_pools(&[("dev", 2, None)], &[("dev", 1, None)]);
        c.max_on_demand = 3;
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopped, "dev")])]);
        let got = acts(&c, &s);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("start i-") && got[0].ends_with(" dev spare"), "{got:?}");
        assert_eq!(got[1], "create dev dev warm");
        // On an empty env: the spare first, then the pool, within the cap.
        let c = with_pools(&[("dev", 1, None)], &[("dev", 1, None)]);
        assert_eq!(acts(&c, &snap(vec![("dev", vec![])])), ["create dev dev spare", "create dev dev warm"]);
        // Cap 1: the spare gets it, the pool waits.
        let mut c = c;
        c.max_on_demand = 1;
        assert_eq!(acts(&c, &snap(vec![("dev", vec![])])), ["create dev dev spare"]);
    }

    #[test]
    fn a_pool_agent_booting_into_the_pool_is_no_spare() {
        // It will be stopped once set up: the spare gets its own agent.
        let c = spare(&[("dev", 1, None)]);
        let filling = agent("i-1", Pending, "dev").with(|i| i.warm = Some("dev".into()));
        assert_eq!(acts(&c, &snap(vec![("dev", vec![filling])])), ["create dev dev spare"]);
    }

    #[test]
    fn a_pool_agent_started_without_its_warmed_tag_counts_for_the_spare_not_the_pool() {
        // Stopped before its `warmed` tag was set, then started by the spare:
        // its fresh start marker says it serves builds, whatever its tags.
        let mut c = with_pools(&[("dev", 1, None)], &[("dev", 1, None)]);
        c.max_on_demand = 3;
        let warm = |id: &str, state| agent(id, state, "dev").launched_ago(30).with(|i| i.warm = Some("dev".into()));
        let started = snap(vec![("dev", vec![warm("i-1", Running), agent("i-2", Stopped, "dev")])])
            .start_marker("dev", "i-1", "dev", 30);
        assert_eq!(acts(&c, &started), Vec::<String>::new(), "the spare waits for it, the pool keeps i-2");
        assert!(debug(&c, &started).contains(&"spare dev: 1 of 1 idle executors ready".to_string()));
        // A pool create's marker says the pool: booting into the pool.
        let created = started.clone().with(|s| s.markers.started[0].warm = Some("dev".into()));
        assert_eq!(acts(&c, &created), ["start i-2 dev spare"], "the pool keeps i-1");
        // The start of a pool agent never tagged `warmed` tags it.
        let s = snap(vec![("dev", vec![warm("i-1", Stopped)])]);
        for (c, item) in [(spare(&[("dev", 1, None)]), None), (cfg(), Some(item("job", "dev")))] {
            let s = s.clone().queue(item.into_iter().collect());
            match &plan_pass(&c, &s.view(), 1).actions[..] {
                [Action::Start { instance_id, tag_warmed: true, .. }] => assert_eq!(instance_id, "i-1"),
                other => panic!("{other:?}"),
            }
        }
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]);
        match &plan_pass(&spare(&[("dev", 1, None)]), &s.view(), 1).actions[..] {
            [Action::Start { tag_warmed: false, .. }] => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stopped_agent_whose_start_failed_lately_is_skipped_by_the_spare_for_five_minutes() {
        let c = spare(&[("dev", 1, None)]);
        let refused = |s: Scene, secs: u64| {
            s.with(|s| {
                s.failed_starts.insert(("dev".into(), "i-1".into()), s.now - Duration::from_secs(secs));
            })
        };
        let two = refused(snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-2", Stopped, "dev")])]), 60);
        for seed in 0..10 {
            assert_eq!(brief(&plan_pass(&c, &two.view(), seed).actions), ["start i-2 dev spare"], "seed {seed}");
        }
        assert!(debug(&c, &two).contains(&"spare dev: i-1 failed to start 60 s ago; skipped".to_string()));
        // No other stopped agent: a create within the cap.
        let one = refused(snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]), 60);
        assert_eq!(acts(&c, &one), ["create dev dev spare"]);
        let mut at_cap = c.clone();
        at_cap.max_on_demand = 1;
        assert_eq!(acts(&at_cap, &one), Vec::<String>::new(), "never above the cap");
        // Five minutes on it is picked again.
        let later = refused(snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]), 300);
        assert_eq!(acts(&c, &later), ["start i-1 dev spare"]);
        assert!(!debug(&c, &later).iter().any(|l| l.contains("failed to start")), "{:?}", debug(&c, &later));
        // A queued item's start still picks it.
        assert_eq!(acts(&cfg(), &one.queue(vec![item("job", "dev")])), ["start i-1 dev"]);
    }

    #[test]
    fn spare_creates_keep_their_tokens_across_a_retried_pass_and_change_with_the_fleet() {
        let mut c = spare(&[("dev", 2, None)]);
        c.max_on_demand = 5;
        let tokens = |s: &Scene| -> Vec<String> {
            plan_pass(&c, &s.view(), 1)
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Create { client_token, spare: true, .. } => Some(client_token.clone()),
                    _ => None,
                })
                .collect()
        };
        let empty = snap(vec![("dev", vec![])]);
        let first = tokens(&empty);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], first[1], "two agents, two tokens");
        assert_eq!(tokens(&empty.clone()), first, "a retried pass asks EC2 for the same agents");
        // An agent of the label came and went since: new tokens.
        let gone = snap(vec![("dev", vec![agent("i-1", Terminated, "dev")])]);
        let other = tokens(&gone);
        assert_eq!(other.len(), 2);
        assert!(other.iter().all(|t| !first.contains(t)), "{first:?} {other:?}");
    }
}
