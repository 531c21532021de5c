//! Scale up (SPEC A5 step 2 and part B): give each waiting queue item a free
//! executor — one already there or booting, else a started agent, else a
//! created one within the env's caps.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::job_key::{client_token, job_key};
use crate::label::parse_label;
use crate::model::{Instance, InstanceState, Label, QueueItem};

use crate::counter::Counter;

use super::{
    age, is_busy, node_name_tail, node_of, observed, terminate, unix_secs, Action, Plan, PlanConfig, Snapshot,
    TerminateReason,
};

/// Something that will run builds of a label: an instance of the snapshot or
/// an agent this pass creates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Provider {
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

/// Active agents of one env counted against the caps.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    non_spot: u32,
    spot: u32,
}

/// The providers of one (env, label), and how far `take_slot` has found them
/// all exhausted: a long queue at the cap must not rescan a large pool for
/// every item.
#[derive(Default)]
struct Pool {
    providers: Vec<Provider>,
    /// Every provider before it has no free executor.
    cursor: usize,
}

struct ScaleUp<'a> {
    cfg: &'a PlanConfig,
    snap: &'a Snapshot,
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
    snap: &Snapshot,
    claimed: &mut BTreeSet<String>,
    rng: &mut fastrand::Rng,
    plan: &mut Plan,
) {
    let mut up = ScaleUp {
        cfg,
        snap,
        claimed,
        rng,
        plan,
        known_envs: cfg.known_envs(),
        free: BTreeMap::new(),
        pools: BTreeMap::new(),
        usage: BTreeMap::new(),
        creates: 0,
    };
    up.run();
}

impl ScaleUp<'_> {
    fn run(&mut self) {
        let snap = self.snap;
        let items: Vec<(&QueueItem, String)> =
            snap.dump.queue.iter().map(|i| (i, job_key(&i.job_name, i.parameters.as_deref()))).collect();

        let mut handled = Vec::new();
        let mut unhandled = Vec::new();
        let mut expired = BTreeSet::new();
        // A marker covers one item: two Pipeline `node()` blocks of one run
        // share a key, and the second needs an agent of its own (the capacity
        // model sees the one already booting for it, if any).
        let mut covered = BTreeSet::new();
        for (item, key) in &items {
            match snap.markers.working.get(key) {
                Some(_) if covered.contains(key.as_str()) => {
                    self.plan
                        .debug(Some(key), format!("{}: another item of the same job and parameters", item.job_name));
                    unhandled.push((*item, key.as_str()));
                }
                Some(marker_age) if *marker_age < self.cfg.working_ttl => {
                    covered.insert(key.as_str());
                    let secs = marker_age.as_secs();
                    self.plan.debug(Some(key), format!("{}: already handled ({secs}s ago)", item.job_name));
                    handled.push((*item, key.as_str()));
                }
                Some(marker_age) => {
                    // Retry in this very pass rather than waiting for the next.
                    if expired.insert(key.as_str()) {
                        self.plan.count(Counter::JobsWaitedTooLong);
                        self.plan.act(Action::RemoveWorkingMarker { job_key: key.clone(), expired: true });
                    }
                    self.plan.debug(
                        Some(key),
                        format!(
                            "{}: waited {}s since it was handled; trying again",
                            item.job_name,
                            marker_age.as_secs()
                        ),
                    );
                    unhandled.push((*item, key.as_str()));
                }
                None => unhandled.push((*item, key.as_str())),
            }
        }

        // Handled items come first: the agents made for them are in the pools.
        for (item, key) in handled {
            if let Some(label) = self.quiet_label(item) {
                if let Some(provider) = self.take_slot(&label) {
                    self.plan.debug(Some(key), format!("{}: waits for {provider}", item.job_name));
                }
            }
        }
        for (item, key) in unhandled {
            self.provide(item, key);
        }

        let queued: BTreeSet<&str> = items.iter().map(|(_, key)| key.as_str()).collect();
        for key in snap.markers.working.keys() {
            if !queued.contains(key.as_str()) {
                self.plan.act(Action::RemoveWorkingMarker { job_key: key.clone(), expired: false });
            }
        }
        for marker in &snap.markers.started {
            if marker.age >= self.cfg.working_ttl {
                self.plan.act(Action::RemoveStartMarker { file_name: marker.file_name.clone() });
            }
        }
    }

    /// The label of an already handled item, when it can hold a slot.
    fn quiet_label(&self, item: &QueueItem) -> Option<Label> {
        let label = parse_label(&item.label, &self.known_envs).ok()?;
        observed(&self.snap.envs, &label.env).ok()?;
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
        let instances = match observed(&self.snap.envs, &label.env) {
            Ok(instances) => instances,
            Err(e) => {
                self.plan.info(Some(key), format!("{job}: {e}; label {} is left for a later pass", label.raw));
                return;
            }
        };
        if let Some(provider) = self.take_slot(&label) {
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
        if let Some((inst, why)) = self.pick_stopped(instances, &label, item.last_built_on.as_deref()) {
            let id = inst.id.clone();
            self.claimed.insert(id.clone());
            self.add_slots(Provider::Instance(id.clone()), label.pricing.executors() - 1);
            self.plan.act(Action::Start {
                env: label.env.clone(),
                instance_id: id,
                label: label.raw.clone(),
                job_key: key.to_string(),
                why,
            });
            return;
        }
        self.create(instances, label, item, key);
    }

    fn create(&mut self, instances: &[Instance], label: Label, item: &QueueItem, key: &str) {
        let job = &item.job_name;
        let env = label.env.clone();
        if !matches!(self.cfg.amis.get(&env), Some(Some(_))) {
            self.plan.info(
                Some(key),
                format!("{job}: no AMI is configured for {env}, so no agent can be created for label {}", label.raw),
            );
            return;
        }
        let usage = self.usage(&env, instances);
        let mut replaces = None;
        let mut on_demand_fallback = false;
        if label.pricing.is_spot() {
            if usage.spot >= self.cfg.max_spot {
                self.plan.info(
                    Some(key),
                    format!("{job}: {env} is at its spot cap ({}); label {} waits", self.cfg.max_spot, label.raw),
                );
                return;
            }
            let usage = self.usage.entry(env.clone()).or_default();
            usage.spot += 1;
            // Room for an on-demand fallback is reserved now, so a fallback
            // can never take the on-demand cap over.
            if self.cfg.spot_fallback && usage.non_spot < self.cfg.max_on_demand {
                usage.non_spot += 1;
                on_demand_fallback = true;
            }
        } else {
            if usage.non_spot >= self.cfg.max_on_demand {
                // At or over the cap: a stopped agent goes (one per item). A
                // create follows only if that brings the env under its cap;
                // above it, the item waits and usage comes down instead of
                // stopped agents being swapped for running, billing ones.
                let Some(victim) = self.pick_room(instances, &env) else {
                    self.plan.info(
                        Some(key),
                        format!(
                            "{job}: {env} is at its on-demand cap ({}) with no stopped agent to replace; label {} waits",
                            self.cfg.max_on_demand, label.raw
                        ),
                    );
                    return;
                };
                self.claimed.insert(victim.id.clone());
                let usage = self.usage.entry(env.clone()).or_default();
                let agents = usage.non_spot;
                usage.non_spot -= 1;
                if usage.non_spot >= self.cfg.max_on_demand {
                    let why =
                        TerminateReason::OverCap { job_key: key.to_string(), agents, cap: self.cfg.max_on_demand };
                    terminate(self.plan, &env, victim, why);
                    self.plan.info(
                        Some(key),
                        format!(
                            "{job}: {env} is over its on-demand cap ({agents} agents, cap {}); a stopped agent goes and label {} waits",
                            self.cfg.max_on_demand, label.raw
                        ),
                    );
                    return;
                }
                let why = TerminateReason::MakeRoom { job_key: key.to_string(), label: label.raw.clone() };
                terminate(self.plan, &env, victim, why);
                replaces = Some(victim.id.clone());
            }
            self.usage.entry(env.clone()).or_default().non_spot += 1;
        }

        self.creates += 1;
        let provider = Provider::Created(self.creates, key.to_string());
        self.add_slots(provider.clone(), label.pricing.executors() - 1);
        self.pool(&label).push(provider);
        let client_token = client_token(&env, key, item.queue_id, unix_secs(self.snap.now));
        self.plan.act(Action::Create {
            env,
            label,
            job_key: key.to_string(),
            client_token,
            replaces,
            on_demand_fallback,
        });
    }

    /// Our active instances of the env, spot and not.
    fn usage(&mut self, env: &str, instances: &[Instance]) -> Usage {
        let cfg = self.cfg;
        *self.usage.entry(env.to_string()).or_insert_with(|| {
            let mut usage = Usage::default();
            for inst in instances.iter().filter(|i| cfg.is_ours(env, i) && i.state.is_active()) {
                if inst.spot {
                    usage.spot += 1;
                } else {
                    usage.non_spot += 1;
                }
            }
            usage
        })
    }

    /// Ours, in an active state, and serving the label: by its tag, or by a
    /// fresh start marker (tags may lag behind a launch).
    fn serves(&self, inst: &Instance, label: &Label) -> bool {
        self.cfg.is_ours(&label.env, inst)
            && inst.state.is_active()
            && (inst.has_label(&label.raw)
                || self.snap.markers.started.iter().any(|m| {
                    m.env == label.env
                        && m.instance_id == inst.id
                        && m.age < self.cfg.working_ttl
                        && m.labels.contains(&label.raw)
                }))
    }

    /// The (env, label) pool, built from the snapshot on first use.
    fn pool(&mut self, label: &Label) -> &mut Vec<Provider> {
        let pool_key = (label.env.clone(), label.raw.clone());
        if !self.pools.contains_key(&pool_key) {
            let instances = observed(&self.snap.envs, &label.env).unwrap_or_default();
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
    fn add_slots(&mut self, provider: Provider, slots: u32) {
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

    /// The controller (the GC job runs on `master_node`) or a node that is
    /// not one of our agents carries the label: nobody waits for us.
    fn served_by_jenkins_itself(&self, label: &str) -> bool {
        let dump = &self.snap.dump;
        let label = label.trim();
        dump.controller_labels.iter().any(|l| l == label)
            || dump.nodes.iter().any(|n| !n.description.contains("Created by Swarm") && n.has_label(label))
    }

    /// `provider` is a running instance whose node is online in Jenkins.
    fn is_online_agent(&self, provider: &Provider, instances: &[Instance]) -> bool {
        let Provider::Instance(id) = provider else { return false };
        instances.iter().find(|i| &i.id == id).is_some_and(|inst| {
            inst.state == InstanceState::Running && node_of(&self.snap.dump.nodes, inst).is_some_and(|n| !n.offline)
        })
    }

    /// Takes one free executor of the label's pool, if any.
    fn take_slot(&mut self, label: &Label) -> Option<Provider> {
        self.pool(label);
        let pool = self.pools.get_mut(&(label.env.clone(), label.raw.clone())).expect("pool was just built");
        while pool.cursor < pool.providers.len() && self.free.get(&pool.providers[pool.cursor]).is_none_or(|n| *n == 0)
        {
            pool.cursor += 1;
        }
        let provider = pool.providers.get(pool.cursor)?.clone();
        *self.free.get_mut(&provider).expect("provider has free slots") -= 1;
        Some(provider)
    }

    /// A stopped agent of the label to start: the one the job last ran on,
    /// else a random one. Agents on a replaced AMI are left for the inventory.
    fn pick_stopped<'i>(
        &mut self,
        instances: &'i [Instance],
        label: &Label,
        last_built_on: Option<&str>,
    ) -> Option<(&'i Instance, String)> {
        let candidates: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                i.state == InstanceState::Stopped
                    && self.serves(i, label)
                    && !self.claimed.contains(&i.id)
                    && !self.cfg.on_replaced_ami(&label.env, i)
            })
            .collect();
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

    /// A stopped non-spot agent of the env to terminate at the on-demand cap:
    /// one on a replaced AMI if any (it would never be started), else a
    /// random one.
    fn pick_room<'i>(&mut self, instances: &'i [Instance], env: &str) -> Option<&'i Instance> {
        let nodes = &self.snap.dump.nodes;
        let candidates: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                self.cfg.is_ours(env, i)
                    && i.state == InstanceState::Stopped
                    && !i.spot
                    && !self.claimed.contains(&i.id)
                    && !node_of(nodes, i).is_some_and(is_busy)
            })
            .collect();
        let old: Vec<&Instance> = candidates.iter().copied().filter(|i| self.cfg.on_replaced_ami(env, i)).collect();
        let pick_from = if old.is_empty() { candidates } else { old };
        if pick_from.is_empty() {
            return None;
        }
        Some(pick_from[self.rng.usize(..pick_from.len())])
    }
}

/// One queue item, as the subject of a counter counted once per item.
fn item_subject(key: &str, item: &QueueItem) -> String {
    format!("{key} {}", item.queue_id.map_or_else(|| "-".to_string(), |id| id.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::*;
    use super::super::*;
    use crate::model::InstanceState::*;
    use crate::model::{Pricing, QueueItem};

    fn run(s: &Snapshot) -> Plan {
        plan_pass(&cfg(), s, 42)
    }

    fn acts(s: &Snapshot) -> Vec<String> {
        brief(&run(s).actions)
    }

    // --- start before create -------------------------------------------

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
            let plan = plan_pass(&cfg(), &s, seed);
            assert_eq!(
                plan.actions,
                [Action::Start {
                    env: "dev".into(),
                    instance_id: "i-2".into(),
                    label: "dev".into(),
                    job_key: key("job-000"),
                    why: "last used dev-10.0.1.7".into(),
                }]
            );
        }
    }

    #[test]
    fn last_used_agent_is_also_found_by_swarm_name_with_instance_id() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev"), agent("i-0abc", Stopped, "dev")])])
            .queue(vec![QueueItem { last_built_on: Some("dev-i-0abc".into()), ..item("job", "dev") }]);
        for seed in 0..10 {
            assert_eq!(brief(&plan_pass(&cfg(), &s, seed).actions), ["start i-0abc dev"]);
        }
    }

    #[test]
    fn starts_a_random_stopped_agent_when_the_last_one_is_gone() {
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Stopped, "dev").ip("10.0.1.5"), agent("i-2", Stopped, "dev").ip("10.0.1.6")],
        )])
        .queue(vec![QueueItem { last_built_on: Some("dev-10.0.1.99".into()), ..item("job", "dev") }]);
        let picked: BTreeSet<Vec<String>> = (0..30).map(|seed| brief(&plan_pass(&cfg(), &s, seed).actions)).collect();
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
        let got = brief(&plan_pass(&c, &s, 42).actions);
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

    // --- capacity ------------------------------------------------------

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
        let s = snap(vec![("dev", vec![agent("i-1", Pending, "dev_shared")])])
            .queue((0..3).map(|n| item(&format!("job-{n}"), "dev_shared")).collect());
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        assert_eq!(count(&plan.counts, Counter::JobOnQueue), 0);
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

    // --- create --------------------------------------------------------

    #[test]
    fn spot_fallback_reserves_on_demand_room_within_the_cap() {
        let mut c = cfg();
        c.spot_fallback = true;
        // On-demand cap 2, one on-demand agent running: room for one fallback.
        let s = snap(vec![("dev", vec![agent("i-1", crate::model::InstanceState::Running, "dev_c5.large")])])
            .queue(vec![item("a", "dev_spot"), item("b", "dev_spot"), item("c", "dev")]);
        let plan = plan_pass(&c, &s, 7);
        let fallbacks: Vec<bool> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { on_demand_fallback, .. } => Some(*on_demand_fallback),
                _ => None,
            })
            .collect();
        assert_eq!(fallbacks, [true, false], "one fallback reserved; the plain item then finds the cap full");
        assert!(info_notes(&plan.notes).iter().any(|n| n.contains("on-demand cap")), "{:?}", plan.notes);
        // Without the flag, no fallback and the plain item gets its agent.
        let plan = plan_pass(&cfg(), &s, 7);
        assert_eq!(brief(&plan.actions), ["create dev dev_spot", "create dev dev_spot", "create dev dev"]);
    }

    #[test]
    fn creates_with_label_type_pricing_and_client_token() {
        let s = snap(vec![("dev", vec![])]).queue(vec![QueueItem {
            queue_id: Some(17),
            parameters: Some("A=1".into()),
            ..item("folder/job", "dev_spot_c6i.2xlarge")
        }]);
        let plan = run(&s);
        let job_key = crate::job_key::job_key("folder/job", Some("A=1"));
        assert_eq!(
            plan.actions,
            [Action::Create {
                env: "dev".into(),
                label: Label {
                    raw: "dev_spot_c6i.2xlarge".into(),
                    env: "dev".into(),
                    pricing: Pricing::Spot,
                    instance_type: "c6i.2xlarge".into(),
                },
                client_token: crate::job_key::client_token("dev", &job_key, Some(17), 1_700_000_000),
                job_key,
                replaces: None,
                on_demand_fallback: false,
            }]
        );
    }

    #[test]
    fn on_demand_cap_is_counted_per_env_with_planned_creates() {
        let s = snap(vec![
            ("dev", vec![agent("i-1", Running, "dev_shared").launched_ago(7200)]),
            ("prod", vec![agent("i-2", Running, "prod")]),
        ])
        .queue(vec![item("a", "dev"), item("b", "dev"), item("c", "prod"), item("d", "prod")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev", "create prod prod"]);
        assert_eq!(
            info_notes(&plan.notes),
            [
                "b: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits",
                "d: prod is at its on-demand cap (2) with no stopped agent to replace; label prod waits",
            ]
        );
    }

    #[test]
    fn spot_cap_is_counted_per_env() {
        let spot = |id: &str| agent(id, Running, "dev_spot").launched_ago(7200);
        let s = snap(vec![("dev", vec![spot("i-1")]), ("prod", vec![])]).queue(vec![
            item("a", "dev_spot"),
            item("b", "dev_spot"),
            item("c", "prod_spot"),
            item("d", "prod_spot"),
            item("e", "prod_spot"),
        ]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev_spot", "create prod prod_spot", "create prod prod_spot"]);
        assert_eq!(
            info_notes(&plan.notes),
            [
                "b: dev is at its spot cap (2); label dev_spot waits",
                "e: prod is at its spot cap (2); label prod_spot waits"
            ]
        );
    }

    #[test]
    fn spot_and_on_demand_caps_are_separate() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopping, "dev"), agent("i-2", Pending, "dev_shared")])])
            .queue(vec![item("a", "dev_spot"), item("b", "dev_spot")]);
        assert_eq!(acts(&s), ["create dev dev_spot", "create dev dev_spot"]);
    }

    #[test]
    fn terminated_and_foreign_instances_do_not_count_against_the_cap() {
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Terminated, "dev"),
                agent("i-2", ShuttingDown, "dev"),
                agent("i-3", Running, "dev").named(Some("other")),
                agent("i-4", Running, "dev").launched_ago(7200),
            ],
        )])
        .queue(vec![item("a", "dev"), item("b", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn make_room_terminates_stopped_agent_in_items_own_env() {
        let s = snap(vec![
            ("dev", vec![agent("i-1", Running, "dev_shared").launched_ago(7200), agent("i-2", Stopped, "dev_shared")]),
            ("prod", vec![agent("i-9", Stopped, "prod")]),
        ])
        .queue(vec![item("job", "dev")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["terminate i-2 make-room", "create dev dev replacing i-2"]);
        assert_eq!(
            plan.actions[0],
            Action::Terminate {
                env: "dev".into(),
                instance_id: "i-2".into(),
                why: TerminateReason::MakeRoom { job_key: key("job"), label: "dev".into() },
            }
        );
    }

    #[test]
    fn make_room_keeps_the_cap_for_later_items() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_shared"), agent("i-2", Stopped, "dev_shared")])])
            .queue(vec![item("a", "dev"), item("b", "dev"), item("c", "dev")]);
        let plan = run(&s);
        let got = brief(&plan.actions);
        assert_eq!(got.len(), 4, "{got:?}");
        let victims: BTreeSet<&str> = [got[0].as_str(), got[2].as_str()].into_iter().collect();
        assert_eq!(victims, ["terminate i-1 make-room", "terminate i-2 make-room"].into_iter().collect());
        assert_eq!(got[1], format!("create dev dev replacing {}", &got[0][10..13]));
        assert_eq!(got[3], format!("create dev dev replacing {}", &got[2][10..13]));
        assert_eq!(
            info_notes(&plan.notes),
            ["c: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits"]
        );
    }

    #[test]
    fn over_the_cap_make_room_terminates_but_never_creates() {
        // The cap was lowered to 2 with six stopped agents left: each item
        // retires one stopped agent and waits; usage falls, nothing new bills.
        let stopped: Vec<Instance> = (1..=6).map(|n| agent(&format!("i-{n}"), Stopped, "dev_shared")).collect();
        let s = snap(vec![("dev", stopped)]).queue(vec![
            item("a", "dev"),
            item("b", "dev"),
            item("c", "dev"),
            item("d", "dev"),
        ]);
        let plan = run(&s);
        let got = brief(&plan.actions);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().all(|a| a.starts_with("terminate ") && a.ends_with(" over-cap")), "{got:?}");
        assert!(!got.iter().any(|a| a.starts_with("create")), "{got:?}");
        assert!(
            info_notes(&plan.notes).iter().any(|n| n.contains("over its on-demand cap (6 agents, cap 2)")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn cap_of_zero_never_creates() {
        let mut c = cfg();
        c.max_on_demand = 0;
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_shared")])])
            .queue(vec![item("a", "dev"), item("b", "dev")]);
        let got = brief(&plan_pass(&c, &s, 1).actions);
        assert_eq!(got, ["terminate i-1 over-cap"]);
    }

    #[test]
    fn make_room_sets_volumes_to_go_before_terminating() {
        // An agent the Python script made keeps its root volume on termination.
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Running, "dev_shared").launched_ago(7200),
                agent("i-2", Stopped, "dev_shared").volume("/dev/xvda", false),
            ],
        )])
        .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["dot i-2 /dev/xvda", "terminate i-2 make-room", "create dev dev replacing i-2"]);
    }

    #[test]
    fn another_masters_agents_are_neither_started_nor_counted_nor_retired() {
        let theirs = |id: &str, state| {
            agent(id, state, "dev").with(|i| i.master_tag = Some("https://other-jenkins.example.com/".into()))
        };
        // Three of theirs, stopped and running, with our Name and label.
        let s = snap(vec![("dev", vec![theirs("i-1", Stopped), theirs("i-2", Running), theirs("i-3", Stopped)])])
            .queue(vec![item("a", "dev"), item("b", "dev")]);
        // Nothing of theirs is started, made room with, or counted against our cap.
        assert_eq!(acts(&s), ["create dev dev", "create dev dev"]);
        // Tags are anybody's to set: our Name and master tags on an instance
        // launched with another key pair do not make it ours.
        let retagged = |id: &str| agent(id, Stopped, "dev").with(|i| i.key_name = Some("team-x".into()));
        let s = snap(vec![("dev", vec![retagged("i-1"), retagged("i-2")])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn make_room_prefers_a_stopped_agent_on_a_replaced_ami() {
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Stopped, "dev_shared"), agent("i-2", Stopped, "dev_shared").ami("ami-old")],
        )])
        .queue(vec![item("job", "dev")]);
        for seed in 0..10 {
            assert_eq!(
                brief(&plan_pass(&cfg(), &s, seed).actions),
                ["terminate i-2 make-room", "create dev dev replacing i-2"]
            );
        }
    }

    #[test]
    fn make_room_never_takes_spot_busy_foreign_or_running_agents() {
        let busy =
            Node { busy_executors: Some(1), offline: true, ..online("dev_shared-10.0.0.4", "i-4", "dev_shared", 0) };
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Running, "dev_shared").launched_ago(7200),
                agent("i-2", Stopped, "dev_shared").named(Some("other")),
                agent("i-3", Stopped, "dev_spot"),
                agent("i-4", Stopped, "dev_shared"),
                agent("i-5", Stopping, "dev_shared"),
            ],
        )])
        .nodes(vec![busy])
        .queue(vec![item("job", "dev")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), Vec::<String>::new());
        assert_eq!(
            info_notes(&plan.notes),
            ["job: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits"]
        );
    }

    #[test]
    fn spot_cap_never_makes_room() {
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Stopped, "dev_spot"),
                agent("i-2", Running, "dev_spot").launched_ago(7200),
                agent("i-3", Stopped, "dev"),
            ],
        )])
        .queue(vec![item("job", "dev_spot_c5.large")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), Vec::<String>::new());
        assert_eq!(info_notes(&plan.notes), ["job: dev is at its spot cap (2); label dev_spot_c5.large waits"]);
    }

    #[test]
    fn env_without_ami_gets_starts_but_no_creates() {
        let s = snap(vec![("qa", vec![agent("i-1", Stopped, "qa").ami("ami-whatever")])])
            .queue(vec![item("a", "qa"), item("b", "qa")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["start i-1 qa"]);
        assert_eq!(
            info_notes(&plan.notes),
            ["b: no AMI is configured for qa, so no agent can be created for label qa"]
        );
    }

    // --- items we leave alone -----------------------------------------

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

    // --- markers -------------------------------------------------------

    #[test]
    fn fresh_working_marker_skips_the_item() {
        let s =
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]).queue(vec![item("job", "dev")]).working("job", 299);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        // Waiting behind its own marker is not the original's job_on_queue.
        assert_eq!(count(&plan.counts, Counter::JobOnQueue), 0);
    }

    #[test]
    fn expired_marker_is_removed_and_item_retried_same_pass() {
        let s =
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]).queue(vec![item("job", "dev")]).working("job", 300);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), [format!("rm-working {} expired", key("job")), "start i-1 dev".into()]);
        assert_eq!(count(&plan.counts, Counter::JobsWaitedTooLong), 1);
        assert_eq!(count(&plan.counts, Counter::JobOnQueue), 0);
    }

    #[test]
    fn expired_marker_of_duplicate_items_is_removed_once() {
        let s = snap(vec![("dev", vec![])]).queue(vec![item("job", "dev"), item("job", "dev")]).working("job", 900);
        let plan = run(&s);
        assert_eq!(
            brief(&plan.actions),
            [format!("rm-working {} expired", key("job")), "create dev dev".into(), "create dev dev".into()]
        );
        assert_eq!(count(&plan.counts, Counter::JobsWaitedTooLong), 1);
    }

    #[test]
    fn marker_of_a_job_that_left_the_queue_is_removed() {
        let s = snap(vec![("dev", vec![])]).working("gone", 10).working("also-gone", 1000);
        let plan = run(&s);
        let mut got = brief(&plan.actions);
        got.sort();
        let mut want =
            vec![format!("rm-working {} gone", key("also-gone")), format!("rm-working {} gone", key("gone"))];
        want.sort();
        assert_eq!(got, want);
        assert!(plan.counts.is_empty());
    }

    #[test]
    fn fresh_start_marker_is_kept() {
        let s = snap(vec![("dev", vec![])]).start_marker("dev", "i-1", "dev", 299);
        assert_eq!(run(&s), Plan::default());
    }

    #[test]
    fn boot_grace_boundary_is_exclusive() {
        let mut c = cfg();
        c.boot_grace = Duration::from_secs(100);
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(99)])]).queue(vec![item("a", "dev")]);
        assert_eq!(plan_pass(&c, &s, 0).actions, []);
        let s = snap(vec![("dev", vec![agent("i-1", Running, "dev").launched_ago(100)])]).queue(vec![item("a", "dev")]);
        assert_eq!(brief(&plan_pass(&c, &s, 0).actions), ["create dev dev"]);
    }

    #[test]
    fn a_marker_covers_one_item_of_its_key() {
        // Two node() blocks of one Pipeline run: same job, same parameters.
        let items = vec![item("pipe", "dev_spot"), item("pipe", "dev_spot")];
        // The first was handled and its agent boots; the second needs its own.
        let one = snap(vec![("dev", vec![agent("i-1", crate::model::InstanceState::Pending, "dev_spot")])])
            .queue(items.clone())
            .working("pipe", 10);
        assert_eq!(brief(&run(&one).actions), ["create dev dev_spot"]);
        // Both agents boot: nothing more to do.
        let two = snap(vec![(
            "dev",
            vec![
                agent("i-1", crate::model::InstanceState::Pending, "dev_spot"),
                agent("i-2", crate::model::InstanceState::Pending, "dev_spot"),
            ],
        )])
        .queue(items)
        .working("pipe", 10);
        assert!(run(&two).actions.is_empty(), "{:?}", run(&two).actions);
    }
}
