//! What the planner hands back: actions in execution order, notes for the
//! log, and the counters of the pass.

use std::collections::{BTreeMap, BTreeSet};

use crate::counter::Counter;
use crate::model::Instance;

use super::{Action, TerminateReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteLevel {
    /// An operator must see it; the caller logs it once per job key.
    Info,
    /// Reasoning, shown with `--debug`.
    Debug,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub job_key: Option<String>,
    pub level: NoteLevel,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// In execution order: a delete-on-termination before its terminate, a
    /// make-room terminate before its create, an expired marker's removal
    /// before the start or create that writes it again.
    pub actions: Vec<Action>,
    pub notes: Vec<Note>,
    pub counts: BTreeMap<Counter, u64>,
    /// Counters for a lasting condition of one subject (a node whose instance
    /// is gone): the caller counts each (counter, subject) once per run, not
    /// every pass it is seen again.
    pub once: BTreeSet<(Counter, String)>,
    /// EC2 events this pass could not act on (their env was not observed):
    /// left on their queue for a later pass. Every other event is handled.
    pub kept_events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    pub actions: Vec<Action>,
    pub notes: Vec<Note>,
    pub counts: BTreeMap<Counter, u64>,
    /// Our active agents per label set joined by `_` (`<env>_None`: no readable tag).
    pub instance_count: BTreeMap<String, u64>,
}

impl Plan {
    /// The instances the plan terminates (their volumes already set to go).
    pub fn terminated(&self) -> BTreeSet<String> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Terminate { instance_id, .. } => Some(instance_id.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    pub(super) fn note(&mut self, level: NoteLevel, job_key: Option<&str>, text: impl Into<String>) {
        self.notes.push(Note { job_key: job_key.map(str::to_string), level, text: text.into() });
    }

    pub(super) fn info(&mut self, job_key: Option<&str>, text: impl Into<String>) {
        self.note(NoteLevel::Info, job_key, text);
    }

    pub(super) fn debug(&mut self, job_key: Option<&str>, text: impl Into<String>) {
        self.note(NoteLevel::Debug, job_key, text);
    }

    pub(super) fn count(&mut self, counter: Counter) {
        *self.counts.entry(counter).or_default() += 1;
    }

    pub(super) fn keep_event(&mut self, id: &str) {
        if !self.kept_events.iter().any(|e| e == id) {
            self.kept_events.push(id.to_string());
        }
    }

    pub(super) fn count_once(&mut self, counter: Counter, subject: impl Into<String>) {
        self.once.insert((counter, subject.into()));
    }
}

/// Terminates `inst`, its EBS volumes first set to go with it: an agent the
/// Python script created keeps its root volume otherwise, and every such
/// termination would leak a disk that bills on.
pub(super) fn terminate(plan: &mut Plan, env: &str, inst: &Instance, why: TerminateReason) {
    let devices = devices_lacking_delete_on_termination(inst);
    if !devices.is_empty() {
        plan.act(Action::SetDeleteOnTermination { env: env.to_string(), instance_id: inst.id.clone(), devices });
    }
    plan.act(Action::Terminate { env: env.to_string(), instance_id: inst.id.clone(), why });
}

/// Devices of `inst` whose EBS volume would outlive a termination.
pub(super) fn devices_lacking_delete_on_termination(inst: &Instance) -> Vec<String> {
    inst.volumes.iter().filter(|v| !v.delete_on_termination).map(|v| v.device.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceState::*;
    use crate::plan::test_kit::*;

    #[test]
    fn terminated_lists_exactly_the_instances_the_plan_terminates() {
        let mut plan = Plan::default();
        terminate(
            &mut plan,
            "dev",
            &agent("i-1", Stopped, "dev").volume("/dev/xvda", false),
            TerminateReason::NeverRegistered { minutes: 90 },
        );
        plan.act(Action::Stop {
            env: "dev".into(),
            instance_id: "i-2".into(),
            node: "dev-10.0.0.2".into(),
            warm: false,
            tag_warmed: false,
        });
        terminate(&mut plan, "prod", &agent("i-3", Stopped, "prod"), TerminateReason::Spot { node: "n".into() });
        assert_eq!(
            brief(&plan.actions),
            ["dot i-1 /dev/xvda", "terminate i-1 zombie", "stop i-2", "terminate i-3 spot"]
        );
        assert_eq!(plan.terminated(), BTreeSet::from(["i-1".to_string(), "i-3".to_string()]));
    }
}
