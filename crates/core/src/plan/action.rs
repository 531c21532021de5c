//! What the planner decides, as data: each action renders itself as one log
//! line (the dry run's table and the act step's log show the same words).

use std::fmt;

use crate::model::{Interruption, Label, Pricing, MASTER_TAG};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminateReason {
    /// At the on-demand cap: a stopped agent goes so the item's agent fits.
    MakeRoom { job_key: String, label: String },
    /// Over the on-demand cap (it was lowered, or agents were added by hand):
    /// a stopped agent goes so usage comes down; the item waits.
    OverCap { job_key: String, agents: u32, cap: u32 },
    /// A spot agent Jenkins wants gone (spot agents are never stopped).
    Spot { node: String },
    /// An on-demand agent `--spot_fallback` launched for a spot label, which
    /// Jenkins wants gone: it goes as its spot counterpart would, never
    /// stopped to be started again for spot work at the on-demand price.
    SpotFallback { node: String },
    /// An agent on a replaced AMI; `node` is `None` from the inventory sweep.
    OldAmi { node: Option<String>, ami: String },
    /// Drained on a rebalance recommendation, and now idle.
    Drained { node: Option<String> },
    /// Running this long without ever becoming a Jenkins node.
    NeverRegistered { minutes: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start {
        env: String,
        instance_id: String,
        label: String,
        job_key: String,
        why: String,
        /// For the label's spare executors (`--spare`): no queue item, so
        /// no working marker.
        spare: bool,
        /// A warm-pool agent never tagged `WARMED_TAG` (its stop's tag
        /// failed, or someone else stopped it): being stopped, it is set up;
        /// the start tags it, so it is an agent like any other, not one
        /// booting into the pool.
        tag_warmed: bool,
    },
    /// `replaces`: the make-room termination this create depends on.
    Create {
        env: String,
        label: Label,
        job_key: String,
        client_token: String,
        replaces: Option<String>,
        /// A spot launch that may fall back to on-demand (room is reserved).
        on_demand_fallback: bool,
        /// The warned agent whose at-risk build this agent is for: no queue
        /// item, so no working marker.
        replacement_for: Option<String>,
        /// For a warm pool (`--warm`): no queue item, so no working marker;
        /// tagged so it is stopped once set up, and told apart.
        warm: bool,
        /// For the label's spare executors (`--spare`): no queue item, so
        /// no working marker.
        spare: bool,
    },
    /// `offline-node`: Jenkins gives the node no new build.
    OfflineNode {
        env: String,
        instance_id: String,
        node: String,
        reason: String,
    },
    /// Writes the `.interrupted` marker of an agent taken out of service.
    MarkInterrupted {
        env: String,
        instance_id: String,
        kind: Interruption,
        event: String,
    },
    /// The interrupted agent is gone: its marker goes.
    ForgetInterruption {
        file_name: String,
    },
    Terminate {
        env: String,
        instance_id: String,
        why: TerminateReason,
    },
    Stop {
        env: String,
        instance_id: String,
        node: String,
        /// A warm-pool agent stopped once set up, not on the idle policy.
        warm: bool,
        /// A warm-pool agent never stopped before, whoever stops it: the
        /// stop tags it `WARMED_TAG`, and it is an agent like any other
        /// from then on.
        tag_warmed: bool,
    },
    SetDeleteOnTermination {
        env: String,
        instance_id: String,
        devices: Vec<String>,
    },
    /// Adopts an agent of this master from before the ownership tag (the
    /// Python era's: its `slave_data` names this master).
    TagMaster {
        env: String,
        instance_id: String,
        master: String,
    },
    RemoveWorkingMarker {
        job_key: String,
        expired: bool,
    },
    RemoveStartMarker {
        file_name: String,
    },
}

impl Action {
    /// The env the action touches; markers belong to none.
    pub fn env(&self) -> Option<&str> {
        match self {
            Action::Start { env, .. }
            | Action::Create { env, .. }
            | Action::Terminate { env, .. }
            | Action::Stop { env, .. }
            | Action::SetDeleteOnTermination { env, .. }
            | Action::TagMaster { env, .. }
            | Action::OfflineNode { env, .. } => Some(env),
            Action::RemoveWorkingMarker { .. }
            | Action::RemoveStartMarker { .. }
            | Action::MarkInterrupted { .. }
            | Action::ForgetInterruption { .. } => None,
        }
    }

    /// The instance the action touches; creates and markers name none.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Action::Start { instance_id, .. }
            | Action::Terminate { instance_id, .. }
            | Action::Stop { instance_id, .. }
            | Action::SetDeleteOnTermination { instance_id, .. }
            | Action::TagMaster { instance_id, .. }
            | Action::OfflineNode { instance_id, .. } => Some(instance_id),
            Action::Create { .. }
            | Action::RemoveWorkingMarker { .. }
            | Action::RemoveStartMarker { .. }
            | Action::MarkInterrupted { .. }
            | Action::ForgetInterruption { .. } => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Start { .. } => "start",
            Action::Create { .. } => "create",
            Action::Terminate { .. } => "terminate",
            Action::Stop { .. } => "stop",
            Action::SetDeleteOnTermination { .. } => "set-delete-on-termination",
            Action::TagMaster { .. } => "tag",
            Action::OfflineNode { .. } => "offline-node",
            Action::MarkInterrupted { .. } => "mark",
            Action::RemoveWorkingMarker { .. }
            | Action::RemoveStartMarker { .. }
            | Action::ForgetInterruption { .. } => "remove-marker",
        }
    }
}

fn pricing_name(pricing: Pricing) -> &'static str {
    match pricing {
        Pricing::OnDemand => "on-demand",
        Pricing::Shared => "shared",
        Pricing::Spot => "spot",
    }
}

impl fmt::Display for TerminateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TerminateReason::MakeRoom { job_key, label } => {
                write!(f, "stopped agent makes room for label {label}, {job_key}")
            }
            TerminateReason::OverCap { job_key, agents, cap } => {
                write!(f, "stopped agent goes: {agents} agents over the on-demand cap of {cap}, {job_key} waits")
            }
            TerminateReason::Spot { node } => write!(f, "spot agent, node {node} is to go"),
            TerminateReason::SpotFallback { node } => {
                write!(f, "on-demand stand-in for a spot label (--spot_fallback), node {node} is to go")
            }
            TerminateReason::OldAmi { node: Some(node), ami } => write!(f, "old AMI {ami}, node {node} is to go"),
            TerminateReason::OldAmi { node: None, ami } => write!(f, "stopped on old AMI {ami}"),
            TerminateReason::Drained { node: Some(node) } => {
                write!(f, "drained on a rebalance recommendation, node {node} is idle")
            }
            TerminateReason::Drained { node: None } => write!(f, "drained on a rebalance recommendation, no node"),
            TerminateReason::NeverRegistered { minutes } => {
                write!(f, "running {minutes} min without becoming a Jenkins node")
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start { env, instance_id, label, job_key, why, .. } => {
                write!(f, "{env}: start {instance_id} for label {label} ({job_key}, {why})")
            }
            Action::Create { env, label, job_key, replaces, replacement_for, warm, spare, .. } => {
                write!(
                    f,
                    "{env}: create {} {} agent for label {} ({job_key}",
                    pricing_name(label.pricing),
                    label.instance_type,
                    label.raw
                )?;
                if *warm {
                    write!(f, ", warm pool")?;
                }
                if *spare {
                    write!(f, ", spare")?;
                }
                if let Some(id) = replacement_for {
                    write!(f, ", replacement for reclaimed {id}")?;
                }
                match replaces {
                    Some(id) => write!(f, ", replacing {id})"),
                    None => write!(f, ")"),
                }
            }
            Action::Terminate { env, instance_id, why } => write!(f, "{env}: terminate {instance_id} ({why})"),
            Action::Stop { env, instance_id, node, warm: false, .. } => {
                write!(f, "{env}: stop {instance_id} (node {node} is idle)")
            }
            Action::Stop { env, instance_id, node, warm: true, .. } => {
                write!(f, "{env}: stop {instance_id} (warm pool: node {node} is set up and idle)")
            }
            Action::SetDeleteOnTermination { env, instance_id, devices } => {
                write!(f, "{env}: set delete-on-termination on {instance_id} {}", devices.join(", "))
            }
            Action::TagMaster { env, instance_id, master } => {
                write!(
                    f,
                    "{env}: tag {instance_id} {MASTER_TAG}={master} (an agent of this master from before the tag)"
                )
            }
            Action::RemoveWorkingMarker { job_key, expired: true } => {
                write!(f, "remove working marker of {job_key} (expired, job still queued: retrying)")
            }
            Action::RemoveWorkingMarker { job_key, expired: false } => {
                write!(f, "remove working marker of {job_key} (job left the queue)")
            }
            Action::RemoveStartMarker { file_name } => {
                write!(f, "remove start marker {file_name} (expired)")
            }
            Action::OfflineNode { env, instance_id, node, reason } => {
                write!(f, "{env}: offline-node {node} of {instance_id} ({reason})")
            }
            Action::MarkInterrupted { env, instance_id, kind, event } => {
                write!(f, "{env}: mark {instance_id} {} (event {event})", kind.as_str())
            }
            Action::ForgetInterruption { file_name } => {
                write!(f, "remove interruption marker {file_name} (the instance is gone)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_kit::*;

    #[test]
    fn every_action_names_the_env_and_the_instance_it_touches() {
        let label = crate::label::parse_label("dev", &cfg().known_envs()).unwrap();
        let cases = [
            (
                Action::Start {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    label: "dev".into(),
                    job_key: "k".into(),
                    why: "w".into(),
                    spare: false,
                    tag_warmed: false,
                },
                true,
            ),
            (
                Action::Create {
                    env: "dev".into(),
                    label,
                    job_key: "k".into(),
                    client_token: "t".into(),
                    replaces: Some("i-9".into()),
                    on_demand_fallback: false,
                    replacement_for: None,
                    warm: false,
                    spare: false,
                },
                false,
            ),
            (
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::NeverRegistered { minutes: 1 },
                },
                true,
            ),
            (
                Action::Stop {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    node: "n".into(),
                    warm: false,
                    tag_warmed: false,
                },
                true,
            ),
            (Action::SetDeleteOnTermination { env: "dev".into(), instance_id: "i-1".into(), devices: vec![] }, true),
            (Action::TagMaster { env: "dev".into(), instance_id: "i-1".into(), master: "m".into() }, true),
        ];
        for (action, names_instance) in cases {
            assert_eq!(action.env(), Some("dev"), "{action}");
            assert_eq!(action.instance_id(), names_instance.then_some("i-1"), "{action}");
        }
        // Markers belong to no env and no instance.
        for marker in [
            Action::RemoveWorkingMarker { job_key: "k".into(), expired: false },
            Action::RemoveStartMarker { file_name: "dev__i-1.start_instance".into() },
        ] {
            assert_eq!((marker.env(), marker.instance_id()), (None, None), "{marker}");
        }
    }

    #[test]
    fn action_lines_name_env_instance_and_reason() {
        let start = Action::Start {
            env: "dev".into(),
            instance_id: "i-0abc".into(),
            label: "dev".into(),
            job_key: "job-000".into(),
            why: "last used dev-10.0.1.7".into(),
            spare: false,
            tag_warmed: false,
        };
        assert_eq!(start.to_string(), "dev: start i-0abc for label dev (job-000, last used dev-10.0.1.7)");
        assert_eq!(start.kind(), "start");

        let label = crate::label::parse_label("dev_spot_c5.large", &cfg().known_envs()).unwrap();
        let create = Action::Create {
            env: "dev".into(),
            label,
            job_key: "k".into(),
            client_token: "t".into(),
            replaces: Some("i-9".into()),
            on_demand_fallback: false,
            replacement_for: None,
            warm: false,
            spare: false,
        };
        assert_eq!(
            create.to_string(),
            "dev: create spot c5.large agent for label dev_spot_c5.large (k, replacing i-9)"
        );
        assert_eq!(create.kind(), "create");

        let cases = [
            (
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::MakeRoom { job_key: "k".into(), label: "dev".into() },
                },
                "dev: terminate i-1 (stopped agent makes room for label dev, k)",
                "terminate",
            ),
            (
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::Spot { node: "dev_spot-10.0.0.1".into() },
                },
                "dev: terminate i-1 (spot agent, node dev_spot-10.0.0.1 is to go)",
                "terminate",
            ),
            (
                Action::Terminate {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    why: TerminateReason::OldAmi { node: None, ami: "ami-old".into() },
                },
                "dev: terminate i-1 (stopped on old AMI ami-old)",
                "terminate",
            ),
            (stop("dev", "i-1", "dev-10.0.0.1"), "dev: stop i-1 (node dev-10.0.0.1 is idle)", "stop"),
            (
                Action::SetDeleteOnTermination {
                    env: "dev".into(),
                    instance_id: "i-1".into(),
                    devices: vec!["/dev/xvda".into(), "/dev/sdb".into()],
                },
                "dev: set delete-on-termination on i-1 /dev/xvda, /dev/sdb",
                "set-delete-on-termination",
            ),
            (
                Action::RemoveWorkingMarker { job_key: "k".into(), expired: true },
                "remove working marker of k (expired, job still queued: retrying)",
                "remove-marker",
            ),
            (
                Action::RemoveStartMarker { file_name: "dev__i-1.start_instance".into() },
                "remove start marker dev__i-1.start_instance (expired)",
                "remove-marker",
            ),
        ];
        for (action, line, kind) in cases {
            assert_eq!(action.to_string(), line);
            assert_eq!(action.kind(), kind);
        }
    }
}
