//! Warm-pool agents (`--warm`, issue 14) stopped once set up: an agent
//! created for a pool is stopped as soon as its node is online and idle, not
//! after the idle timeout. It has then booted and set itself up, which is
//! what makes a later start fast. Its creates are in `scale_up::warm`.

use std::collections::BTreeSet;

use crate::model::InstanceState;

use super::nodes::node_of;
use super::scale_down::names;
use super::snapshot::observed;
use super::{Action, Plan, PlanConfig, Snapshot};

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
            let Some(node) = node_of(&snap.dump.nodes, inst).filter(|n| !n.offline && names(&n.name, inst)) else {
                continue;
            };
            // Busy, or an older dump script that does not say: the usual
            // idle policy decides.
            let busy = snap
                .dump
                .nodes
                .iter()
                .filter(|n| n.instance_id.as_deref() == Some(inst.id.as_str()) || names(&n.name, inst))
                .any(|n| n.busy_executors != Some(0));
            if busy {
                continue;
            }
            if inst.slave_labels.iter().flatten().any(|l| waiting.contains(l.as_str())) {
                plan.debug(None, format!("warm pool {pool}: {} is kept running, an item of its label waits", inst.id));
                continue;
            }
            claimed.insert(inst.id.clone());
            plan.act(Action::Stop {
                env: env.clone(),
                instance_id: inst.id.clone(),
                node: node.name.clone(),
                warm: true,
            });
        }
    }
}
