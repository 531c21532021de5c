//! The pure planner: one pass's snapshot, the config and `now` in; a list of
//! actions, notes and counters out. No I/O, no clock reads; randomness only
//! from the seed, so every decision can be replayed in a test.
//!
//! - `config`: the planner's view of the configuration ([`PlanConfig`]);
//! - `snapshot`: what one pass observed ([`Snapshot`]);
//! - `action`: the decisions as data ([`Action`]), each one log line;
//! - [`calls`]: how an env's actions go out as EC2 calls (batched);
//! - `output`: what a plan hands back ([`Plan`], [`Inventory`], [`Note`]);
//! - `nodes`: tying Jenkins nodes to instances;
//! - `interruption`: EC2's spot interruption warnings, rebalance
//!   recommendations and state changes (issue 13);
//! - `scale_down`: nodes Jenkins wants gone (SPEC A5 step 3);
//! - `scale_up`: queue items that need an agent (SPEC A5 step 2, part B);
//! - `inventory`: the periodic sweep (SPEC A9);
//! - [`cost`]: instance-time per env, label and use (booting, busy, idle, stopped);
//! - [`security_group`]: the master's ingress rules (SPEC A7);
//! - `warm`: warm-pool agents stopped once set up (issue 14); their creates
//!   come last in `scale_up`;
//! - `spare`: the spare executors a label has ready (issue 14); agents are
//!   brought up for them in `scale_up`, after the queued items.

mod action;
pub mod calls;
mod config;
pub mod cost;
mod interruption;
mod inventory;
mod nodes;
mod output;
mod scale_down;
mod scale_up;
pub mod security_group;
mod snapshot;
mod spare;
#[cfg(test)]
pub(crate) mod test_kit;
mod warm;

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::model::{EnvObservation, JenkinsDump, Markers};

pub use action::{Action, TerminateReason};
pub use config::PlanConfig;
pub use interruption::{offline_at_once, spot_agents, SpotAgents};
pub use inventory::plan_inventory;
pub use output::{Inventory, Note, NoteLevel, Plan};
pub use snapshot::{Events, FailedStarts, OfflineEarly, Snapshot, FAILED_START_SKIPPED};

/// What a pass decides from what it observed.
#[derive(Debug, PartialEq)]
pub enum Decision<'a, D, M> {
    /// The dump and the markers were read: the plan, and the snapshot it was
    /// made from.
    Scale { snapshot: Snapshot<'a>, plan: Plan },
    /// The Jenkins dump failed: nothing is scaled this pass.
    NoDump(&'a D),
    /// The markers could not be read: nothing is scaled this pass, or an item
    /// already handled could get a second agent.
    NoMarkers(&'a M),
}

/// The one gate of a pass and of the dry run: a plan only when both the
/// dump and the markers were read. Envs may be partly observed: the plan
/// leaves an env it could not observe alone, not the whole pass.
pub fn decide<'a, D, M>(
    cfg: &PlanConfig,
    dump: &'a Result<JenkinsDump, D>,
    envs: &'a BTreeMap<String, EnvObservation>,
    markers: &'a Result<Markers, M>,
    events: Events<'a>,
    now: SystemTime,
    seed: u64,
) -> Decision<'a, D, M> {
    match (dump, markers) {
        (Err(e), _) => Decision::NoDump(e),
        (Ok(_), Err(e)) => Decision::NoMarkers(e),
        (Ok(dump), Ok(markers)) => {
            let snapshot = Snapshot {
                dump,
                envs,
                markers,
                events: events.received,
                offline_early: events.offline_early,
                failed_starts: events.failed_starts,
                now,
            };
            let plan = plan_pass(cfg, &snapshot, seed);
            Decision::Scale { snapshot, plan }
        }
    }
}

/// Plans one pass: EC2's events, warm-pool stops, scale down, then scale up
/// (queued items, then the spare executors, then the warm pools).
///
/// Events decide first: an agent EC2 takes is out of service before
/// anything counts on it. Scale-down decides before scale-up so scale-up
/// never starts or removes an instance that a scale-down action already
/// claimed (one action per instance). The pool's stops come before the
/// idle policy's: a pool agent's node it took offline is also
/// `terminate_me`, and its stop is the pool's.
pub fn plan_pass(cfg: &PlanConfig, snap: &Snapshot<'_>, seed: u64) -> Plan {
    let mut plan = Plan::default();
    let mut claimed = interruption::gone_by_events(snap, &mut plan);
    let taken = interruption::plan(cfg, snap, &mut claimed, &mut plan);
    interruption::hold_offline_early(snap, &mut claimed, &mut plan);
    warm::plan_stops(cfg, snap, &mut claimed, &mut plan);
    scale_down::plan(cfg, snap, &mut claimed, &mut plan);
    scale_down::plan_zombies(cfg, snap, &mut claimed, &mut plan);
    let mut rng = fastrand::Rng::with_seed(seed);
    scale_up::plan(cfg, snap, &mut claimed, &taken, &mut rng, &mut plan);
    plan
}

#[cfg(test)]
mod tests {
    use super::test_kit::*;
    use super::*;
    use crate::model::InstanceState::*;
    use std::collections::BTreeSet;

    #[test]
    fn plan_pass_is_reproducible_for_a_seed() {
        let s = snap(vec![("dev", (0..8).map(|n| agent(&format!("i-{n}"), Stopped, "dev")).collect())])
            .queue((0..4).map(|n| item(&format!("job-{n}"), "dev")).collect());
        assert_eq!(plan_pass(&cfg(), &s.view(), 7), plan_pass(&cfg(), &s.view(), 7));
        let picks: BTreeSet<Vec<String>> =
            (0..20).map(|seed| brief(&plan_pass(&cfg(), &s.view(), seed).actions)).collect();
        assert!(picks.len() > 1, "the seed should drive the random choice");
    }

    #[test]
    fn scale_down_claims_instances_before_scale_up() {
        // A stopped spot agent Jenkins wants gone is terminated, not started.
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_spot")])])
            .queue(vec![item("job", "dev_spot")])
            .nodes(vec![doomed("dev_spot-10.0.0.1", "i-1", "dev_spot")]);
        assert_eq!(brief(&plan_pass(&cfg(), &s.view(), 1).actions), ["terminate i-1 spot", "create dev dev_spot"]);
    }

    #[test]
    fn a_failed_dump_scales_nothing_whatever_the_markers() {
        let s = snap(vec![("dev", vec![])]);
        let dump: Result<JenkinsDump, String> = Err("no dump".into());
        let unreadable: Result<Markers, String> = Err("no markers".into());
        let readable: Result<Markers, String> = Ok(Markers::default());
        for markers in [&unreadable, &readable] {
            assert_eq!(
                decide(&cfg(), &dump, &s.envs, markers, s.events(), now(), 1),
                Decision::NoDump(&"no dump".to_string())
            );
        }
    }

    #[test]
    fn unreadable_markers_scale_nothing() {
        let s = snap(vec![("dev", vec![])]).queue(vec![item("job", "dev")]);
        let unreadable: Result<Markers, String> = Err("no markers".into());
        let dump: Result<JenkinsDump, String> = Ok(s.dump.clone());
        let d = decide(&cfg(), &dump, &s.envs, &unreadable, s.events(), now(), 1);
        assert_eq!(d, Decision::NoMarkers(&"no markers".to_string()));
    }

    #[test]
    fn a_read_dump_and_markers_give_the_plan_of_the_pass() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])])
            .queue(vec![item("job", "dev"), item("other", "dev")])
            .working("other", 10);
        let (dump, markers) = (Ok::<_, String>(s.dump.clone()), Ok::<_, String>(s.markers.clone()));
        match decide(&cfg(), &dump, &s.envs, &markers, s.events(), s.now, 5) {
            Decision::Scale { snapshot, plan } => {
                assert_eq!(snapshot, s.view());
                assert_eq!(plan, plan_pass(&cfg(), &s.view(), 5));
                assert_eq!(brief(&plan.actions), ["start i-1 dev"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
