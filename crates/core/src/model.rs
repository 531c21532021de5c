//! Domain types: what one pass observes, independent of the AWS SDK and of the
//! dump's wire format. The adapters (`observe`) build these; the planner reads
//! only these.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How an agent is bought, from the label (`ENV`, `ENV_shared`, `ENV_spot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pricing {
    OnDemand,
    Shared,
    Spot,
}

impl Pricing {
    /// Executors an agent of this kind registers with (SPEC A4).
    pub fn executors(self) -> u32 {
        match self {
            Pricing::Shared => 5,
            Pricing::OnDemand | Pricing::Spot => 1,
        }
    }

    pub fn is_spot(self) -> bool {
        self == Pricing::Spot
    }
}

/// A queue label the manager understands: it names exactly one known env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label exactly as Jenkins shows it; also the `slave_labels` tag value.
    pub raw: String,
    pub env: String,
    pub pricing: Pricing,
    /// EC2 instance type, `t2.small` unless the label names one.
    pub instance_type: String,
}

/// One buildable item on Jenkins' queue (blocked items are not reported).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueItem {
    /// Full job name; folders separated by `/`.
    pub job_name: String,
    /// The label expression the item waits for; empty when it has none.
    pub label: String,
    /// Name of the node the job last ran on, `None` for `UNKNOWN`.
    pub last_built_on: Option<String>,
    /// Parameters as the dump prints them, `None` for `NONE`.
    pub parameters: Option<String>,
    /// Jenkins' queue item id, when the dump script reports it.
    pub queue_id: Option<u64>,
}

/// One Jenkins node (agent) from the dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub name: String,
    pub labels: Vec<String>,
    pub offline: bool,
    pub description: String,
    /// Parsed from `InstanceID=` in the description.
    pub instance_id: Option<String>,
    pub ami_id: Option<String>,
    /// Idle executors (`ope_idle_count`).
    pub idle_executors: Option<u32>,
    /// Busy executors (`busy_executors`); `None` when an older dump script
    /// does not report it.
    pub busy_executors: Option<u32>,
    /// Executor total (`num_executors`).
    pub num_executors: Option<u32>,
    pub idle_seconds: Option<u64>,
    /// The Groovy idle policy (SPEC A6) wants this node's instance gone.
    pub terminate_me: bool,
}

impl Node {
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

/// The parsed Jenkins dump of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JenkinsDump {
    pub queue: Vec<QueueItem>,
    pub nodes: Vec<Node>,
    pub messages: Vec<String>,
    /// Labels of the controller itself (`built-in`, `master_node`, …): jobs
    /// tied to them run there and need no agent of ours.
    pub controller_labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }

    /// Pending, running, stopping or stopped: the instance exists and counts
    /// against the caps.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            InstanceState::Pending | InstanceState::Running | InstanceState::Stopping | InstanceState::Stopped
        )
    }
}

/// An EBS volume attached to an instance, from its block-device mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub device: String,
    pub volume_id: String,
    pub delete_on_termination: bool,
}

/// One EC2 instance of an env, as DescribeInstances showed it this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// The `Name` tag; ours when it equals `--slave_name`.
    pub name: Option<String>,
    /// `slave_labels` of the `slave_data` tag, split on spaces; `None` when
    /// the tag is missing or not JSON.
    pub slave_labels: Option<Vec<String>>,
    pub image_id: String,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub spot: bool,
    /// Last launch or start time.
    pub launched: Option<SystemTime>,
    pub volumes: Vec<Volume>,
    /// The `jenkins_master` tag: the master whose agent this is.
    pub master_tag: Option<String>,
    /// `jenkins_url` of the `slave_data` tag (the Python era's only mark).
    pub slave_data_master: Option<String>,
    /// The key pair it was launched with; unlike a tag, fixed at launch.
    pub key_name: Option<String>,
    /// The label of the warm pool it was created for (`WARM_TAG`), until
    /// its first stop (`WARMED_TAG`): an agent filling the pool, stopped as
    /// soon as its node is online and idle. Afterwards an agent like any.
    pub warm: Option<String>,
}

/// Key pair every agent is launched with (as the original).
pub const KEY_NAME: &str = "jenkins.cloud";

/// The ownership tag every agent is launched with: the URL of the master
/// (the env's `jenkins_url`) whose manager may act on it.
pub const MASTER_TAG: &str = "jenkins_master";

/// The tag a warm-pool launch carries: the pool's label (`--warm`).
pub const WARM_TAG: &str = "slave_manager:warm";

/// Set once a warm-pool agent has been stopped after setting itself up:
/// from then on its idle time is the usual policy's.
pub const WARMED_TAG: &str = "slave_manager:warmed";

/// Two Jenkins URLs name the same master (a trailing `/` aside).
pub fn same_master(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl Instance {
    pub fn has_label(&self, label: &str) -> bool {
        self.slave_labels.as_ref().is_some_and(|ls| ls.iter().any(|l| l == label))
    }
}

/// One env's instances this pass, or why they could not be read. An env
/// whose describe failed is left alone for the pass.
pub type EnvObservation = Result<Vec<Instance>, String>;

/// A `<ENV>__<instance-id>.start_instance` file: proof that we started or
/// created an instance for a label even before its tags are visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartMarker {
    pub file_name: String,
    pub env: String,
    pub instance_id: String,
    pub labels: Vec<String>,
    pub age: Duration,
    /// The warm pool a create was for (`warm=LABEL`): an agent booting into
    /// the pool, not one started or created to serve builds.
    pub warm: Option<String>,
}

/// The marker files found in the working directory at the start of a pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Markers {
    /// `working_on_<key>.working`: job key → age of the file.
    pub working: BTreeMap<String, Duration>,
    pub started: Vec<StartMarker>,
    /// `<ENV>__<instance-id>.interrupted`: agents taken out of service on an
    /// EC2 event, remembered until the instance is gone.
    pub interrupted: Vec<InterruptedMarker>,
}

/// What an EC2 event routed to the interruption queue says of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `EC2 Spot Instance Interruption Warning`: EC2 takes it in two minutes.
    Warning,
    /// `EC2 Instance Rebalance Recommendation`: at elevated risk of one.
    Rebalance,
    /// `EC2 Instance State-change Notification`.
    StateChange(InstanceState),
}

/// One EC2 event from an env's interruption queue, read this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEvent {
    /// The event's `id`: EventBridge may deliver one event twice.
    pub id: String,
    /// The env whose queue it came from.
    pub env: String,
    pub instance_id: String,
    pub kind: EventKind,
    /// The event's `time`; `None` when unreadable.
    pub time: Option<SystemTime>,
}

/// Why an agent was taken out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// A spot interruption warning: EC2 reclaims it; we never stop or
    /// terminate it ourselves.
    Warned,
    /// A rebalance recommendation: its running build finishes, then it goes.
    Draining,
}

impl Interruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Interruption::Warned => "warned",
            Interruption::Draining => "draining",
        }
    }

    pub fn parse(text: &str) -> Option<Interruption> {
        match text {
            "warned" => Some(Interruption::Warned),
            "draining" => Some(Interruption::Draining),
            _ => None,
        }
    }
}

/// A `<ENV>__<instance-id>.interrupted` file: an agent taken out of service
/// on an EC2 event. Passes and runs after read it: the agent is no capacity,
/// the event is not acted on twice, a drained agent goes once idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedMarker {
    pub file_name: String,
    pub env: String,
    pub instance_id: String,
    pub kind: Interruption,
    /// The event that took it out of service.
    pub event: String,
    /// Since the marker was last written (the event that set its kind).
    pub age: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_states_read_as_ec2_names_them() {
        use InstanceState::*;
        let names: Vec<&str> =
            [Pending, Running, Stopping, Stopped, ShuttingDown, Terminated].map(InstanceState::as_str).to_vec();
        assert_eq!(names, ["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]);
    }
}
