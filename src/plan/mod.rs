//! The pure planner: one pass's snapshot, the config and `now` in; a list of
//! actions, notes and counters out. No I/O, no clock reads; randomness only
//! from the seed, so every decision can be replayed in a test.
//!
//! - `scale_down`: nodes Jenkins wants gone (SPEC A5 step 3).
//! - `scale_up`: queue items that need an agent (SPEC A5 step 2, part B).
//! - `inventory`: the periodic sweep (SPEC A9).

mod inventory;
mod scale_down;
mod scale_up;
pub mod security_group;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::counter::Counter;
use crate::label::InstanceTypes;
use crate::model::{
    same_master, EnvObservation, Instance, JenkinsDump, Label, Markers, Node, Pricing, KEY_NAME, MASTER_TAG,
};

pub use inventory::plan_inventory;

#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// EC2 `Name` tag marking our agents; nothing else is ever touched.
    pub slave_name: String,
    /// Per-env cap on non-spot agents in active states.
    pub max_on_demand: u32,
    /// Every env → the URL of its master (`jenkins_url` of environment.json):
    /// what an agent's ownership tag must name.
    pub masters: BTreeMap<String, String>,
    /// Instance types a label may ask for; others get no agent.
    pub instance_types: InstanceTypes,
    /// Per-env cap on spot agents in active states.
    pub max_spot: u32,
    /// Every known env → its current AMI (`None`: cannot create there).
    pub amis: BTreeMap<String, Option<String>>,
    /// How long a working marker (and a start marker) stays fresh.
    pub working_ttl: Duration,
    /// A running instance with no node yet counts as booting capacity this long.
    pub boot_grace: Duration,
    /// A running agent that has not become a node this long after its launch
    /// is terminated (`--zombie_minutes`); `None`: never.
    pub zombie_after: Option<Duration>,
    /// A spot launch EC2 has no capacity for may fall back to on-demand; the
    /// planner reserves that on-demand room so the cap still holds.
    pub spot_fallback: bool,
}

impl PlanConfig {
    pub fn known_envs(&self) -> BTreeSet<String> {
        self.amis.keys().cloned().collect()
    }

    /// An agent of this manager in `env`: our `Name` tag, and this master
    /// named by its `jenkins_master` tag, or — for an agent from before the
    /// tag — by its `slave_data` (the inventory then adds the tag). A `Name`
    /// tag alone is anybody's to set: a second master using the same
    /// `--slave_name`, a "launch more like this", a stray `CreateTags`.
    pub fn is_ours(&self, env: &str, inst: &Instance) -> bool {
        let Some(master) = self.masters.get(env) else { return false };
        inst.name.as_deref() == Some(self.slave_name.as_str())
            // Fixed at launch, unlike tags: a stray CreateTags of our Name
            // and master tags on somebody's instance does not make it ours.
            && inst.key_name.as_deref() == Some(KEY_NAME)
            && match &inst.master_tag {
                Some(tag) => same_master(tag, master),
                None => inst.slave_data_master.as_deref().is_some_and(|url| same_master(url, master)),
            }
    }

    /// `inst` runs another AMI than its env's current one. The Groovy script
    /// drains such agents, so they serve nothing and are not started again.
    fn on_replaced_ami(&self, env: &str, inst: &Instance) -> bool {
        matches!(self.amis.get(env), Some(Some(ami)) if *ami != inst.image_id)
    }
}

/// Everything one pass observed; the planner decides from this alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub dump: JenkinsDump,
    pub envs: BTreeMap<String, EnvObservation>,
    pub markers: Markers,
    pub now: SystemTime,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminateReason {
    /// At the on-demand cap: a stopped agent goes so the item's agent fits.
    MakeRoom { job_key: String, label: String },
    /// Over the on-demand cap (it was lowered, or agents were added by hand):
    /// a stopped agent goes so usage comes down; the item waits.
    OverCap { job_key: String, agents: u32, cap: u32 },
    /// A spot agent Jenkins wants gone (spot agents are never stopped).
    Spot { node: String },
    /// An agent on a replaced AMI; `node` is `None` from the inventory sweep.
    OldAmi { node: Option<String>, ami: String },
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
            | Action::TagMaster { env, .. } => Some(env),
            Action::RemoveWorkingMarker { .. } | Action::RemoveStartMarker { .. } => None,
        }
    }

    /// The instance the action touches; creates and markers name none.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Action::Start { instance_id, .. }
            | Action::Terminate { instance_id, .. }
            | Action::Stop { instance_id, .. }
            | Action::SetDeleteOnTermination { instance_id, .. }
            | Action::TagMaster { instance_id, .. } => Some(instance_id),
            Action::Create { .. } | Action::RemoveWorkingMarker { .. } | Action::RemoveStartMarker { .. } => None,
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
            Action::RemoveWorkingMarker { .. } | Action::RemoveStartMarker { .. } => "remove-marker",
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
            TerminateReason::OldAmi { node: Some(node), ami } => write!(f, "old AMI {ami}, node {node} is to go"),
            TerminateReason::OldAmi { node: None, ami } => write!(f, "stopped on old AMI {ami}"),
            TerminateReason::NeverRegistered { minutes } => {
                write!(f, "running {minutes} min without becoming a Jenkins node")
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start { env, instance_id, label, job_key, why } => {
                write!(f, "{env}: start {instance_id} for label {label} ({job_key}, {why})")
            }
            Action::Create { env, label, job_key, replaces, .. } => {
                write!(
                    f,
                    "{env}: create {} {} agent for label {} ({job_key}",
                    pricing_name(label.pricing),
                    label.instance_type,
                    label.raw
                )?;
                match replaces {
                    Some(id) => write!(f, ", replacing {id})"),
                    None => write!(f, ")"),
                }
            }
            Action::Terminate { env, instance_id, why } => write!(f, "{env}: terminate {instance_id} ({why})"),
            Action::Stop { env, instance_id, node } => write!(f, "{env}: stop {instance_id} (node {node} is idle)"),
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
        }
    }
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

    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn note(&mut self, level: NoteLevel, job_key: Option<&str>, text: impl Into<String>) {
        self.notes.push(Note { job_key: job_key.map(str::to_string), level, text: text.into() });
    }

    fn info(&mut self, job_key: Option<&str>, text: impl Into<String>) {
        self.note(NoteLevel::Info, job_key, text);
    }

    fn debug(&mut self, job_key: Option<&str>, text: impl Into<String>) {
        self.note(NoteLevel::Debug, job_key, text);
    }

    fn count(&mut self, counter: Counter) {
        *self.counts.entry(counter).or_default() += 1;
    }

    fn count_once(&mut self, counter: Counter, subject: impl Into<String>) {
        self.once.insert((counter, subject.into()));
    }
}

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

/// The env's instances, or a reason it must be left alone this pass.
fn observed<'a>(envs: &'a BTreeMap<String, EnvObservation>, env: &str) -> Result<&'a [Instance], String> {
    match envs.get(env) {
        Some(Ok(instances)) => Ok(instances),
        Some(Err(e)) => Err(format!("env {env} could not be observed ({e})")),
        None => Err(format!("env {env} was not observed")),
    }
}

/// The Jenkins node of an instance: by the `InstanceID=` of its description,
/// else by its name ending in `-<private ip>` (the original's `ENV-10.0.1.7`)
/// or `-<instance id>` (swarm's `LABELS-i-0abc`).
fn node_of<'a>(nodes: &'a [Node], inst: &Instance) -> Option<&'a Node> {
    // No allocation here: this runs for every instance against every node.
    let ends_with_dash = |name: &str, tail: &str| name.strip_suffix(tail).is_some_and(|head| head.ends_with('-'));
    nodes.iter().find(|n| n.instance_id.as_deref() == Some(inst.id.as_str())).or_else(|| {
        nodes.iter().find(|n| {
            ends_with_dash(&n.name, &inst.id)
                || inst.private_ip.as_deref().is_some_and(|ip| ends_with_dash(&n.name, ip))
        })
    })
}

/// What follows the last `-` of a node name (the IP in `ENV-10.0.1.7`).
fn node_name_tail(name: &str) -> Option<&str> {
    name.rsplit_once('-').map(|(_, tail)| tail)
}

/// A build is running on it: never stop or terminate it. `None` (an older
/// dump script) keeps the original behaviour.
fn is_busy(node: &Node) -> bool {
    node.busy_executors.is_some_and(|n| n > 0)
}

/// Time since `then`; an instant in the future (clock skew) counts as now.
fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Terminates `inst`, its EBS volumes first set to go with it: an agent the
/// Python script created keeps its root volume otherwise, and every such
/// termination would leak a disk that bills on.
fn terminate(plan: &mut Plan, env: &str, inst: &Instance, why: TerminateReason) {
    let devices = devices_lacking_delete_on_termination(inst);
    if !devices.is_empty() {
        plan.act(Action::SetDeleteOnTermination { env: env.to_string(), instance_id: inst.id.clone(), devices });
    }
    plan.act(Action::Terminate { env: env.to_string(), instance_id: inst.id.clone(), why });
}

/// Devices of `inst` whose EBS volume would outlive a termination.
fn devices_lacking_delete_on_termination(inst: &Instance) -> Vec<String> {
    inst.volumes.iter().filter(|v| !v.delete_on_termination).map(|v| v.device.clone()).collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Small builders: an agent, a node, a queue item, a snapshot.

    use super::*;
    use crate::model::{InstanceState, QueueItem, StartMarker, Volume};

    pub const NAME: &str = "jslave-in-house";
    pub const MASTER: &str = "https://jenkins.example.com/";

    pub fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// Envs `dev` and `prod` with AMIs `ami-dev`/`ami-prod`; `qa` has none.
    /// Caps: 2 on-demand, 2 spot.
    pub fn cfg() -> PlanConfig {
        PlanConfig {
            slave_name: NAME.into(),
            max_on_demand: 2,
            max_spot: 2,
            amis: [("dev", Some("ami-dev")), ("prod", Some("ami-prod")), ("qa", None)]
                .into_iter()
                .map(|(env, ami)| (env.to_string(), ami.map(str::to_string)))
                .collect(),
            working_ttl: Duration::from_secs(300),
            boot_grace: Duration::from_secs(600),
            zombie_after: None,
            spot_fallback: false,
            instance_types: InstanceTypes::default(),
            masters: ["dev", "prod", "qa"].iter().map(|e| (e.to_string(), MASTER.to_string())).collect(),
        }
    }

    /// One of our agents tagged with `label`, on its env's current AMI (the
    /// env is the label up to the first `_`), launched 2 h ago; `i-<n>` has
    /// the private IP `10.0.0.<n>`, the one its node's name carries.
    pub fn agent(id: &str, state: InstanceState, label: &str) -> Instance {
        let env = label.split('_').next().unwrap_or_default();
        let n = id.trim_start_matches("i-");
        Instance {
            id: id.into(),
            state,
            name: Some(NAME.into()),
            slave_labels: Some(vec![label.into()]),
            image_id: format!("ami-{env}"),
            instance_type: "t2.small".into(),
            private_ip: n.parse::<u8>().ok().map(|n| format!("10.0.0.{n}")),
            public_ip: None,
            spot: label.contains("_spot"),
            launched: Some(now() - Duration::from_secs(7200)),
            volumes: vec![],
            master_tag: Some(MASTER.into()),
            slave_data_master: Some(MASTER.into()),
            key_name: Some(KEY_NAME.into()),
        }
    }

    pub trait InstanceExt: Sized {
        fn with(self, f: impl FnOnce(&mut Instance)) -> Self;
        fn ip(self, ip: &str) -> Self {
            self.with(|i| i.private_ip = Some(ip.into()))
        }
        fn ami(self, ami: &str) -> Self {
            self.with(|i| i.image_id = ami.into())
        }
        fn named(self, name: Option<&str>) -> Self {
            self.with(|i| i.name = name.map(str::to_string))
        }
        fn launched_ago(self, secs: u64) -> Self {
            self.with(|i| i.launched = Some(now() - Duration::from_secs(secs)))
        }
        fn volume(self, device: &str, delete_on_termination: bool) -> Self {
            self.with(|i| {
                i.volumes.push(Volume {
                    device: device.into(),
                    volume_id: format!("vol-{}", i.volumes.len()),
                    delete_on_termination,
                })
            })
        }
    }

    impl InstanceExt for Instance {
        fn with(mut self, f: impl FnOnce(&mut Instance)) -> Self {
            f(&mut self);
            self
        }
    }

    /// An online node of instance `id` with `idle` free executors.
    pub fn online(name: &str, id: &str, label: &str, idle: u32) -> Node {
        Node {
            name: name.into(),
            labels: vec![label.into(), "swarm".into()],
            offline: false,
            description: format!("Created by Swarm InstanceID={id}"),
            instance_id: Some(id.into()),
            ami_id: None,
            idle_executors: Some(idle),
            busy_executors: Some(0),
            num_executors: Some(idle),
            idle_seconds: Some(0),
            terminate_me: false,
        }
    }

    /// An offline swarm node the idle policy wants gone.
    pub fn doomed(name: &str, id: &str, label: &str) -> Node {
        Node { offline: true, terminate_me: true, idle_executors: Some(1), ..online(name, id, label, 1) }
    }

    pub fn item(job: &str, label: &str) -> QueueItem {
        QueueItem { job_name: job.into(), label: label.into(), ..QueueItem::default() }
    }

    pub fn key(job: &str) -> String {
        crate::job_key::job_key(job, None)
    }

    /// A snapshot at `now()` of the given envs, empty queue, no markers.
    pub fn snap(envs: Vec<(&str, Vec<Instance>)>) -> Snapshot {
        Snapshot {
            dump: JenkinsDump::default(),
            envs: envs.into_iter().map(|(env, list)| (env.to_string(), Ok(list))).collect(),
            markers: Markers::default(),
            now: now(),
        }
    }

    pub trait SnapshotExt: Sized {
        fn with(self, f: impl FnOnce(&mut Snapshot)) -> Self;
        fn queue(self, items: Vec<QueueItem>) -> Self {
            self.with(|s| s.dump.queue = items)
        }
        fn nodes(self, nodes: Vec<Node>) -> Self {
            self.with(|s| s.dump.nodes = nodes)
        }
        fn env_err(self, env: &str) -> Self {
            self.with(|s| {
                s.envs.insert(env.into(), Err("AccessDenied".into()));
            })
        }
        fn working(self, job: &str, age_secs: u64) -> Self {
            self.with(|s| {
                s.markers.working.insert(key(job), Duration::from_secs(age_secs));
            })
        }
        fn start_marker(self, env: &str, id: &str, label: &str, age_secs: u64) -> Self {
            self.with(|s| {
                s.markers.started.push(StartMarker {
                    file_name: format!("{env}__{id}.start_instance"),
                    env: env.into(),
                    instance_id: id.into(),
                    labels: vec![label.into()],
                    age: Duration::from_secs(age_secs),
                })
            })
        }
    }

    impl SnapshotExt for Snapshot {
        fn with(mut self, f: impl FnOnce(&mut Snapshot)) -> Self {
            f(&mut self);
            self
        }
    }

    /// One short line per action, for compact assertions.
    pub fn brief(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Start { instance_id, label, .. } => format!("start {instance_id} {label}"),
                Action::Create { env, label, replaces: None, .. } => format!("create {env} {}", label.raw),
                Action::Create { env, label, replaces: Some(id), .. } => {
                    format!("create {env} {} replacing {id}", label.raw)
                }
                Action::Terminate { instance_id, why, .. } => {
                    let why = match why {
                        TerminateReason::MakeRoom { .. } => "make-room",
                        TerminateReason::OverCap { .. } => "over-cap",
                        TerminateReason::Spot { .. } => "spot",
                        TerminateReason::OldAmi { .. } => "old-ami",
                        TerminateReason::NeverRegistered { .. } => "zombie",
                    };
                    format!("terminate {instance_id} {why}")
                }
                Action::Stop { instance_id, .. } => format!("stop {instance_id}"),
                Action::SetDeleteOnTermination { instance_id, devices, .. } => {
                    format!("dot {instance_id} {}", devices.join(","))
                }
                Action::TagMaster { instance_id, .. } => format!("tag {instance_id}"),
                Action::RemoveWorkingMarker { job_key, expired: true } => format!("rm-working {job_key} expired"),
                Action::RemoveWorkingMarker { job_key, expired: false } => format!("rm-working {job_key} gone"),
                Action::RemoveStartMarker { file_name } => format!("rm-start {file_name}"),
            })
            .collect()
    }

    pub fn info_notes(notes: &[Note]) -> Vec<&str> {
        notes.iter().filter(|n| n.level == NoteLevel::Info).map(|n| n.text.as_str()).collect()
    }

    pub fn count(counts: &BTreeMap<Counter, u64>, counter: Counter) -> u64 {
        counts.get(&counter).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::model::InstanceState::*;

    #[test]
    fn action_lines_name_env_instance_and_reason() {
        let start = Action::Start {
            env: "dev".into(),
            instance_id: "i-0abc".into(),
            label: "dev".into(),
            job_key: "job-000".into(),
            why: "last used dev-10.0.1.7".into(),
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
            (
                Action::Stop { env: "dev".into(), instance_id: "i-1".into(), node: "dev-10.0.0.1".into() },
                "dev: stop i-1 (node dev-10.0.0.1 is idle)",
                "stop",
            ),
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

    #[test]
    fn node_is_found_by_instance_id_then_by_ip_or_id_suffix() {
        let inst = agent("i-1", Running, "dev").ip("10.0.1.7");
        let by_id = Node { instance_id: Some("i-1".into()), name: "whatever".into(), ..Node::default() };
        let by_ip = Node { name: "dev-10.0.1.7".into(), ..Node::default() };
        let by_suffix = Node { name: "dev-i-1".into(), ..Node::default() };
        let other_ip = Node { name: "dev-10.0.1.77".into(), ..Node::default() };
        assert_eq!(node_of(&[by_ip.clone(), by_id.clone()], &inst), Some(&by_id));
        assert_eq!(node_of(&[other_ip.clone(), by_ip.clone()], &inst), Some(&by_ip));
        assert_eq!(node_of(std::slice::from_ref(&by_suffix), &inst), Some(&by_suffix));
        assert_eq!(node_of(&[other_ip], &inst), None);
    }

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
