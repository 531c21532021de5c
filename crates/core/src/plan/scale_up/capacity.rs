//! The capacity model: which providers (instances of the snapshot, agents
//! this pass creates) serve a label, and how many free executors each still
//! has for the queue items of this pass.

use std::fmt;

use crate::model::{Instance, InstanceState, Label};
use crate::plan::nodes::node_of;
use crate::plan::snapshot::{age, observed};

use super::ScaleUp;

/// Something that will run builds of a label: an instance of the snapshot or
/// an agent this pass creates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Provider {
    Instance(String),
    /// The n-th create of this pass, made for the given job key.
    Created(usize, String),
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Instance(id) => f.write_str(id),
            Provider::Created(_, job_key) => write!(f, "the agent created for {job_key}"),
        }
    }
}

/// The providers of one (env, label), and how far `take_slot` has found them
/// all exhausted: a long queue at the cap must not rescan a large pool for
/// every item.
#[derive(Default)]
pub(super) struct Pool {
    providers: Vec<Provider>,
    /// Every provider before it has no free executor.
    cursor: usize,
}

impl ScaleUp<'_> {
    /// Ours, in an active state, and serving the label: by its tag, or by a
    /// fresh start marker (tags may lag behind a launch).
    pub(super) fn serves(&self, inst: &Instance, label: &Label) -> bool {
        crate::plan::spare::serves(self.cfg, &self.snap, inst, label)
    }

    /// The (env, label) pool, built from the snapshot on first use.
    pub(super) fn pool(&mut self, label: &Label) -> &mut Vec<Provider> {
        let pool_key = (label.env.clone(), label.raw.clone());
        if !self.pools.contains_key(&pool_key) {
            let instances = observed(self.snap.envs, &label.env).unwrap_or_default();
            let serving: Vec<&Instance> = instances.iter().filter(|i| self.serves(i, label)).collect();
            let mut pool = Vec::new();
            for inst in serving {
                let provider = Provider::Instance(inst.id.clone());
                if !self.free.contains_key(&provider) {
                    let slots = self.initial_slots(inst, label);
                    self.free.insert(provider.clone(), slots);
                }
                pool.push(provider);
            }
            self.pools.insert(pool_key.clone(), Pool { providers: pool, cursor: 0 });
        }
        &mut self.pools.get_mut(&pool_key).expect("pool was just built").providers
    }

    /// Gives `provider` free executors; pools scanned past it look again.
    pub(super) fn add_slots(&mut self, provider: Provider, slots: u32) {
        self.free.insert(provider, slots);
        if slots > 0 {
            for pool in self.pools.values_mut() {
                pool.cursor = 0;
            }
        }
    }

    /// Free executors an instance brings to the label's queue items (part B).
    fn initial_slots(&self, inst: &Instance, label: &Label) -> u32 {
        if self.claimed.contains(&inst.id) || self.cfg.on_replaced_ami(&label.env, inst) {
            return 0;
        }
        let executors = label.pricing.executors();
        match inst.state {
            InstanceState::Pending => executors,
            InstanceState::Running => match node_of(&self.snap.dump.nodes, inst) {
                Some(node) if !node.offline => node.idle_executors.unwrap_or(0),
                Some(_) => 0,
                None => {
                    let booting = inst.launched.is_none_or(|t| age(self.snap.now, t) < self.cfg.boot_grace);
                    if booting {
                        executors
                    } else {
                        0
                    }
                }
            },
            _ => 0,
        }
    }

    /// `provider` is a running instance whose node is online in Jenkins.
    pub(super) fn is_online_agent(&self, provider: &Provider, instances: &[Instance]) -> bool {
        let Provider::Instance(id) = provider else { return false };
        instances.iter().find(|i| &i.id == id).is_some_and(|inst| {
            inst.state == InstanceState::Running && node_of(&self.snap.dump.nodes, inst).is_some_and(|n| !n.offline)
        })
    }

    /// Takes one free executor of the label's pool, if any, of a provider
    /// not in `spared`.
    pub(super) fn take_slot(&mut self, label: &Label, spared: &[Provider]) -> Option<Provider> {
        self.pool(label);
        let pool = self.pools.get_mut(&(label.env.clone(), label.raw.clone())).expect("pool was just built");
        while pool.cursor < pool.providers.len() && self.free.get(&pool.providers[pool.cursor]).is_none_or(|n| *n == 0)
        {
            pool.cursor += 1;
        }
        let provider = pool.providers[pool.cursor..]
            .iter()
            .find(|p| !spared.contains(p) && self.free.get(*p).is_some_and(|n| *n > 0))?
            .clone();
        *self.free.get_mut(&provider).expect("provider has free slots") -= 1;
        Some(provider)
    }

    /// The warm-pool agents of the label still on their way to the pool
    /// (tagged, never stopped) and not yet online, when a stopped agent of
    /// the label can be started instead: a queued item waits for a start
    /// (tens of seconds), not for such an agent's whole boot and set-up.
    /// One already online takes the item at once and is not spared.
    pub(super) fn booting_pool_agents(&self, instances: &[Instance], label: &Label) -> Vec<Provider> {
        let booting: Vec<Provider> = instances
            .iter()
            .filter(|i| i.warm.is_some() && self.serves(i, label))
            .filter(|i| match i.state {
                InstanceState::Pending => true,
                InstanceState::Running => node_of(&self.snap.dump.nodes, i).is_none(),
                _ => false,
            })
            .map(|i| Provider::Instance(i.id.clone()))
            .collect();
        if booting.is_empty() || self.stopped_candidates(instances, label).is_empty() {
            return Vec::new();
        }
        booting
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::counter::Counter;
    use crate::model::InstanceState::*;
    use crate::model::Node;
    use crate::plan::scale_up::{acts, run};
    use crate::plan::test_kit::*;
    use crate::plan::*;

    #[test]
    fn shared_pending_instance_absorbs_five_items_then_creates() {
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev_shared")])])
            .queue((0..6).map(|n| item(&format!("job-{n}"), "dev_shared")).collect());
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev_shared"]);
        let absorbed = plan.notes.iter().filter(|n| n.text.ends_with("absorbed by i-1")).count();
        assert_eq!(absorbed, 5);
        match &plan.actions[0] {
            Action::Create { job_key, .. } => assert_eq!(*job_key, key("job-5")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pending_spot_instance_absorbs_only_one_item() {
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev_spot")])])
            .queue(vec![item("a", "dev_spot"), item("b", "dev_spot")]);
        assert_eq!(acts(&s), ["create dev dev_spot"]);
    }

    #[test]
    fn online_agent_absorbs_as_many_items_as_it_has_idle_executors() {
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev_shared")])])
            .nodes(vec![online("dev_shared-10.0.0.1", "i-1", "dev_shared", 2)])
            .queue((0..3).map(|n| item(&format!("job-{n}"), "dev_shared")).collect());
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev_shared"]);
        // Two items wait while an online agent has free executors for them:
        // the original's job_on_queue, counted once per item by the caller.
        let once: Vec<&str> =
            plan.once.iter().filter(|(k, _)| *k == Counter::JobOnQueue).map(|(_, s)| s.as_str()).collect();
        assert_eq!(once, [format!("{} -", key("job-0")), format!("{} -", key("job-1"))]);
    }

    #[test]
    fn items_absorbed_by_booting_agents_are_not_job_on_queue() {
        // Pending, or running but no node yet: nobody could run the items.
        for booting in [agent("i-1", Pending, "dev_shared"), agent("i-1", Running, "dev_shared").launched_ago(60)] {
            let s = snap(vec![("dev", vec![booting])])
                .queue((0..3).map(|n| item(&format!("job-{n}"), "dev_shared")).collect());
            let plan = run(&s);
            assert_eq!(plan.actions, []);
            assert_eq!(once(&plan, Counter::JobOnQueue), Vec::<&str>::new());
        }
    }

    #[test]
    fn online_agent_with_unknown_idle_count_absorbs_nothing() {
        let node = Node { idle_executors: None, ..online("dev-10.0.0.1", "i-1", "dev", 0) };
        let s =
            snap(vec![("dev", vec![agent("i-1", Running, "dev")])]).nodes(vec![node]).queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn online_agent_is_matched_by_ip_in_its_node_name() {
        let node = Node { instance_id: None, ..online("dev-10.0.0.1", "i-x", "dev", 1) };
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").ip("10.0.0.1")])])
            .nodes(vec![node])
            .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), Vec::<String>::new());
    }

    #[test]
    fn offline_agent_absorbs_nothing() {
        let node = Node { offline: true, ..online("dev-10.0.0.1", "i-1", "dev", 1) };
        let s =
            snap(vec![("dev", vec![agent("i-1", Running, "dev")])]).nodes(vec![node]).queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn booting_instance_without_node_absorbs_within_boot_grace() {
        let booting = agent("i-1", Running, "dev").launched_ago(120);
        let s = snap(vec![("dev", vec![booting])]).queue(vec![item("a", "dev"), item("b", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn instance_with_unknown_launch_time_counts_as_booting() {
        let booting = agent("i-1", Running, "dev").with(|i| i.launched = None);
        let s = snap(vec![("dev", vec![booting])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&s), Vec::<String>::new());
    }

    #[test]
    fn running_instance_without_node_after_boot_grace_absorbs_nothing() {
        let stuck = agent("i-1", Running, "dev").launched_ago(600);
        let s = snap(vec![("dev", vec![stuck])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn pending_instance_on_a_replaced_ami_absorbs_nothing() {
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev").ami("ami-old")])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn created_shared_agent_absorbs_four_more_items() {
        let s = snap(vec![("dev", vec![])]).queue((0..6).map(|n| item(&format!("job-{n}"), "dev_shared")).collect());
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev_shared", "create dev dev_shared"]);
        assert!(plan
            .notes
            .iter()
            .any(|n| n.text == "job-1: absorbed by the agent created for job-0___b50339a10e1de285ac99d4c3990b8693"));
    }

    #[test]
    fn handled_items_consume_slots_before_waiting_ones() {
        // i-1 was started for job-a last pass; job-b must not count on it.
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev")])])
            .queue(vec![item("job-b", "dev"), item("job-a", "dev")])
            .working("job-a", 30);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn agent_with_two_labels_is_not_counted_twice() {
        let both =
            agent("i-1", Pending, "dev").with(|i| i.slave_labels = Some(vec!["dev".into(), "dev_c5.large".into()]));
        let s = snap(vec![("dev", vec![both])]).queue(vec![item("a", "dev"), item("b", "dev_c5.large")]);
        assert_eq!(acts(&s), ["create dev dev_c5.large"]);
    }

    #[test]
    fn capacity_of_one_label_does_not_serve_another() {
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev_shared")])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn instance_claimed_by_scale_down_gives_no_capacity() {
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev_spot")])])
            .nodes(vec![doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")])
            .queue(vec![item("job", "dev_spot")]);
        assert_eq!(acts(&s), ["terminate i-1 spot", "create dev dev_spot"]);
    }

    #[test]
    fn boot_grace_boundary_is_exclusive() {
        let mut c = cfg();
        c.boot_grace = Duration::from_secs(100);
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(99)])]).queue(vec![item("a", "dev")]);
        assert_eq!(plan_pass(&c, &s.view(), 0).actions, []);
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(100)])]).queue(vec![item("a", "dev")]);
        assert_eq!(brief(&plan_pass(&c, &s.view(), 0).actions), ["create dev dev"]);
    }
}
