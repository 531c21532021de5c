//! Filling the warm pools (`--warm`, issue 14). A pool is the stopped,
//! current-AMI agents of its label in its env, plus the ones on their way
//! there: created for the pool and not yet stopped once (booting, coming
//! online, taken offline to be stopped, or being stopped this pass), or
//! stopped by this pass. The missing ones are created last in the pass,
//! after every queued item, with what the on-demand cap leaves: never above
//! it, and never by making room.

use crate::job_key::client_token;
use crate::model::{Instance, InstanceState, Label};
use crate::plan::snapshot::{observed, unix_secs};
use crate::plan::spare::started_not_for_pool;
use crate::plan::warm::{serving, WARM_REASON};
use crate::plan::Action;
use crate::warm::WarmPool;

use super::ScaleUp;

impl ScaleUp<'_> {
    pub(super) fn fill_warm_pools(&mut self) {
        let cfg = self.cfg;
        for pool in &cfg.warm {
            self.fill(pool);
        }
    }

    fn fill(&mut self, pool: &WarmPool) {
        let label = &pool.label;
        let env = &label.env;
        if let Some(hours) = pool.hours.filter(|h| !h.contains(self.snap.now)) {
            self.plan.debug(None, format!("warm pool {}: outside its hours ({hours}); nothing is created", label.raw));
            return;
        }
        // An env that could not be observed is reported where it is observed.
        let Ok(instances) = observed(self.snap.envs, env) else { return };
        if !matches!(self.cfg.amis.get(env), Some(Some(_))) {
            return;
        }
        let members = self.in_warm_pool(instances, pool);
        let have = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let missing = pool.size.saturating_sub(have);
        if missing == 0 {
            self.plan.debug(None, format!("warm pool {}: {have} of {}", label.raw, pool.size));
            return;
        }
        let granted = self.take_on_demand_room(env, instances, missing);
        if granted < missing {
            self.plan.debug(
                None,
                format!(
                    "warm pool {}: {have} of {}; the on-demand cap ({}) leaves room for {granted} more",
                    label.raw, pool.size, self.cfg.max_on_demand
                ),
            );
        }
        let keys = (0..granted).map(|n| format!("warm-pool-{}-{}", label.raw, have + n + 1));
        self.create_unqueued(instances, label, keys, true);
    }

    /// Creates for no queue item: a pool's places (`warm`) or a spare's
    /// agents, one per key. Every agent of the label EC2 lists, in any
    /// state, is part of each token: a pass retried on the same fleet asks
    /// EC2 for the same agents, not more, while any agent that came or went
    /// since — a member started for a job, the agent the last token
    /// launched — makes a new one. The pool's members alone would not do:
    /// once the pool is back to the set it had at a create, the repeated
    /// token would get EC2's old answer, an agent a job has since claimed.
    pub(super) fn create_unqueued(
        &mut self,
        instances: &[Instance],
        label: &Label,
        keys: impl IntoIterator<Item = String>,
        warm: bool,
    ) {
        let now = unix_secs(self.snap.now);
        let fleet = self.label_fleet(instances, label).join(",");
        for key in keys {
            let client_token = client_token(&label.env, &format!("{key}|{fleet}"), None, now);
            self.plan.act(Action::Create {
                env: label.env.clone(),
                label: label.clone(),
                job_key: key,
                client_token,
                replaces: None,
                on_demand_fallback: false,
                replacement_for: None,
                warm,
                spare: !warm,
            });
        }
    }

    /// Every listed agent of ours with the label, in any state, and the
    /// fresh start markers of the label EC2 does not list yet: their ids.
    pub(super) fn label_fleet(&self, instances: &[Instance], label: &Label) -> Vec<String> {
        let listed = instances
            .iter()
            .filter(|i| self.cfg.is_ours(&label.env, i) && i.has_label(&label.raw))
            .map(|i| i.id.clone());
        let mut ids: Vec<String> = listed.chain(self.unlisted(instances, label)).collect();
        ids.sort_unstable();
        ids
    }

    /// Launched moments ago and not yet listed by EC2 (its describe lags):
    /// its start marker says it exists.
    fn unlisted<'s>(&'s self, instances: &'s [Instance], label: &'s Label) -> impl Iterator<Item = String> + 's {
        self.snap
            .markers
            .started
            .iter()
            .filter(move |m| {
                m.env == label.env
                    && m.age < self.cfg.working_ttl
                    && m.labels.contains(&label.raw)
                    && !instances.iter().any(|i| i.id == m.instance_id)
            })
            .map(|m| m.instance_id.clone())
    }

    /// The pool's agents now, and those on their way into it: their ids.
    fn in_warm_pool(&self, instances: &[Instance], pool: &WarmPool) -> Vec<String> {
        let label = &pool.label;
        // Stopped by this pass, or taken offline to be stopped by the next.
        let stopped_now: Vec<&str> = self
            .plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { instance_id, .. } => Some(instance_id.as_str()),
                Action::OfflineNode { instance_id, reason, .. } if reason == WARM_REASON => Some(instance_id.as_str()),
                _ => None,
            })
            .collect();
        let in_pool = |i: &&Instance| {
            let stopping = stopped_now.contains(&i.id.as_str());
            self.cfg.is_ours(&label.env, i)
                && !i.spot
                && i.has_label(&label.raw)
                && !self.cfg.on_replaced_ami(&label.env, i)
                && (stopping || !self.claimed.contains(&i.id))
                && match i.state {
                    InstanceState::Stopped | InstanceState::Stopping => true,
                    // Serving builds (its node online), or started by us: not
                    // the pool's until the set-up stop takes its node offline.
                    InstanceState::Pending | InstanceState::Running => {
                        stopping
                            || (i.warm.as_deref() == Some(label.raw.as_str())
                                && !serving(&self.snap, i)
                                && !started_not_for_pool(self.cfg, &self.snap, i))
                    }
                    InstanceState::ShuttingDown | InstanceState::Terminated => false,
                }
        };
        let observed = instances.iter().filter(in_pool).map(|i| i.id.clone());
        let mut members: Vec<String> = observed.chain(self.unlisted(instances, label)).collect();
        members.sort_unstable();
        members
    }
}
