//! The pure planner: one pass's snapshot, the config and `now` in; a list of
//! actions, notes and counters out. No I/O, no clock reads; randomness only
//! from the seed, so every decision can be replayed in a test.
//!
//! - `config`: the planner's view of the configuration ([`PlanConfig`]);
//! - `snapshot`: what one pass observed ([`Snapshot`]);
//! - `action`: the decisions as data ([`Action`]), each one log line;
//! - `output`: what a plan hands back ([`Plan`], [`Inventory`], [`Note`]);
//! - `nodes`: tying Jenkins nodes to instances;
//! - `scale_down`: nodes Jenkins wants gone (SPEC A5 step 3);
//! - `scale_up`: queue items that need an agent (SPEC A5 step 2, part B);
//! - `inventory`: the periodic sweep (SPEC A9);
//! - [`security_group`]: the master's ingress rules (SPEC A7).

mod action;
mod config;
mod inventory;
mod nodes;
mod output;
mod scale_down;
mod scale_up;
pub mod security_group;
mod snapshot;
#[cfg(test)]
pub(crate) mod test_kit;

use std::collections::BTreeSet;

pub use action::{Action, TerminateReason};
pub use config::PlanConfig;
pub use inventory::plan_inventory;
pub use output::{Inventory, Note, NoteLevel, Plan};
pub use snapshot::Snapshot;

/// Plans one pass: scale down, then scale up.
///
/// Scale-down decides first so scale-up never starts or removes an instance
/// that a scale-down action already claimed (one action per instance).
pub fn plan_pass(cfg: &PlanConfig, snap: &Snapshot, seed: u64) -> Plan {
    let mut plan = Plan::default();
    let mut claimed = BTreeSet::new();
    scale_down::plan(cfg, snap, &mut claimed, &mut plan);
    scale_down::plan_zombies(cfg, snap, &mut claimed, &mut plan);
    let mut rng = fastrand::Rng::with_seed(seed);
    scale_up::plan(cfg, snap, &mut claimed, &mut rng, &mut plan);
    plan
}

#[cfg(test)]
mod tests {
    use super::test_kit::*;
    use super::*;
    use crate::model::InstanceState::*;

    #[test]
    fn plan_pass_is_reproducible_for_a_seed() {
        let s = snap(vec![("dev", (0..8).map(|n| agent(&format!("i-{n}"), Stopped, "dev")).collect())])
            .queue((0..4).map(|n| item(&format!("job-{n}"), "dev")).collect());
        assert_eq!(plan_pass(&cfg(), &s, 7), plan_pass(&cfg(), &s, 7));
        let picks: BTreeSet<Vec<String>> = (0..20).map(|seed| brief(&plan_pass(&cfg(), &s, seed).actions)).collect();
        assert!(picks.len() > 1, "the seed should drive the random choice");
    }

    #[test]
    fn scale_down_claims_instances_before_scale_up() {
        // A stopped spot agent Jenkins wants gone is terminated, not started.
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_spot")])])
            .queue(vec![item("job", "dev_spot")])
            .nodes(vec![doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")]);
        assert_eq!(brief(&plan_pass(&cfg(), &s, 1).actions), ["terminate i-1 spot", "create dev dev_spot"]);
    }
}
