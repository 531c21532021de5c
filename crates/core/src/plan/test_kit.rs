//! Small builders for the planner's tests: an agent, a node, a queue item, a
//! snapshot; and short renderings of a plan for compact assertions.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::counter::Counter;
use crate::label::InstanceTypes;
use crate::model::{
    EnvObservation, EventKind, Instance, InstanceEvent, InstanceState, InterruptedMarker, Interruption, JenkinsDump,
    Markers, Node, QueueItem, StartMarker, Volume, KEY_NAME,
};
use crate::plan::{
    Action, Events, FailedStarts, Note, NoteLevel, OfflineEarly, Plan, PlanConfig, Snapshot, TerminateReason,
};

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
        warm: vec![],
        spare: vec![],
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
        warm: None,
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

/// The idle policy's stop of `id` in `env`, whose node is `node`.
pub fn stop(env: &str, id: &str, node: &str) -> Action {
    Action::Stop { env: env.into(), instance_id: id.into(), node: node.into(), warm: false, tag_warmed: false }
}

/// The stop of a pool agent in `dev` that tags it `warmed`: the pool's own
/// set-up stop (`warm`), or any other stop of it.
pub fn warmed_stop(id: &str, node: &str, warm: bool) -> Action {
    Action::Stop { env: "dev".into(), instance_id: id.into(), node: node.into(), warm, tag_warmed: true }
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

/// What a snapshot borrows, owned: the planner sees it through `view()`.
#[derive(Debug, Clone)]
pub struct Scene {
    pub dump: JenkinsDump,
    pub envs: BTreeMap<String, EnvObservation>,
    pub markers: Markers,
    pub events: Vec<InstanceEvent>,
    pub offline_early: OfflineEarly,
    pub failed_starts: FailedStarts,
    pub now: SystemTime,
}

impl Scene {
    pub fn view(&self) -> Snapshot<'_> {
        Snapshot {
            dump: &self.dump,
            envs: &self.envs,
            markers: &self.markers,
            events: &self.events,
            offline_early: &self.offline_early,
            failed_starts: &self.failed_starts,
            now: self.now,
        }
    }

    pub fn events(&self) -> Events<'_> {
        Events { received: &self.events, offline_early: &self.offline_early, failed_starts: &self.failed_starts }
    }
}

/// A scene at `now()` of the given envs, empty queue, no markers.
pub fn snap(envs: Vec<(&str, Vec<Instance>)>) -> Scene {
    Scene {
        dump: JenkinsDump::default(),
        envs: envs.into_iter().map(|(env, list)| (env.to_string(), Ok(list))).collect(),
        markers: Markers::default(),
        events: Vec::new(),
        offline_early: OfflineEarly::default(),
        failed_starts: FailedStarts::default(),
        now: now(),
    }
}

pub trait SceneExt: Sized {
    fn with(self, f: impl FnOnce(&mut Scene)) -> Self;
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
    /// An EC2 event of this pass, sent a second ago.
    fn event(self, id: &str, env: &str, instance: &str, kind: EventKind) -> Self {
        self.event_at(id, env, instance, kind, 1)
    }
    fn event_at(self, id: &str, env: &str, instance: &str, kind: EventKind, secs_ago: u64) -> Self {
        self.with(|s| {
            s.events.push(InstanceEvent {
                id: id.into(),
                env: env.into(),
                instance_id: instance.into(),
                kind,
                time: Some(now() - Duration::from_secs(secs_ago)),
            })
        })
    }
    /// An `.interrupted` marker written a second ago.
    fn interrupted(self, env: &str, id: &str, kind: Interruption) -> Self {
        self.interrupted_ago(env, id, kind, 1)
    }
    fn interrupted_ago(self, env: &str, id: &str, kind: Interruption, age_secs: u64) -> Self {
        self.with(|s| {
            s.markers.interrupted.push(InterruptedMarker {
                file_name: format!("{env}__{id}.interrupted"),
                env: env.into(),
                instance_id: id.into(),
                kind,
                event: "e-0".into(),
                age: Duration::from_secs(age_secs),
            })
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
                warm: None,
            })
        })
    }
}

impl SceneExt for Scene {
    fn with(mut self, f: impl FnOnce(&mut Scene)) -> Self {
        f(&mut self);
        self
    }
}

/// One short line per action, for compact assertions.
pub fn brief(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Start { instance_id, label, spare: true, .. } => format!("start {instance_id} {label} spare"),
            Action::Start { instance_id, label, .. } => format!("start {instance_id} {label}"),
            Action::Create { env, label, warm: true, .. } => format!("create {env} {} warm", label.raw),
            Action::Create { env, label, spare: true, .. } => format!("create {env} {} spare", label.raw),
            Action::Create { env, label, replaces: None, .. } => format!("create {env} {}", label.raw),
            Action::Create { env, label, replaces: Some(id), .. } => {
                format!("create {env} {} replacing {id}", label.raw)
            }
            Action::Terminate { instance_id, why, .. } => {
                let why = match why {
                    TerminateReason::MakeRoom { .. } => "make-room",
                    TerminateReason::OverCap { .. } => "over-cap",
                    TerminateReason::Spot { .. } => "spot",
                    TerminateReason::SpotFallback { .. } => "spot-fallback",
                    TerminateReason::OldAmi { .. } => "old-ami",
                    TerminateReason::NeverRegistered { .. } => "zombie",
                    TerminateReason::Drained { .. } => "drained",
                };
                format!("terminate {instance_id} {why}")
            }
            Action::Stop { instance_id, warm: true, .. } => format!("stop {instance_id} warm"),
            Action::Stop { instance_id, .. } => format!("stop {instance_id}"),
            Action::SetDeleteOnTermination { instance_id, devices, .. } => {
                format!("dot {instance_id} {}", devices.join(","))
            }
            Action::TagMaster { instance_id, .. } => format!("tag {instance_id}"),
            Action::RemoveWorkingMarker { job_key, expired: true } => format!("rm-working {job_key} expired"),
            Action::RemoveWorkingMarker { job_key, expired: false } => format!("rm-working {job_key} gone"),
            Action::RemoveStartMarker { file_name } => format!("rm-start {file_name}"),
            Action::OfflineNode { node, .. } => format!("offline {node}"),
            Action::MarkInterrupted { instance_id, kind, .. } => format!("mark {instance_id} {}", kind.as_str()),
            Action::ForgetInterruption { file_name } => format!("rm-interrupted {file_name}"),
        })
        .collect()
}

pub fn info_notes(notes: &[Note]) -> Vec<&str> {
    notes.iter().filter(|n| n.level == NoteLevel::Info).map(|n| n.text.as_str()).collect()
}

pub fn debug_notes(notes: &[Note]) -> Vec<&str> {
    notes.iter().filter(|n| n.level == NoteLevel::Debug).map(|n| n.text.as_str()).collect()
}

/// A `--warm` or `--spare` word: label, N, hours.
pub type LabelWord<'a> = (&'a str, u32, Option<(u8, u8)>);

/// `cfg()` with `--warm` pools and `--spare` labels.
pub fn with_pools(warm: &[LabelWord<'_>], spare: &[LabelWord<'_>]) -> PlanConfig {
    use crate::warm::{Hours, Spare, WarmPool};
    let mut c = cfg();
    let known = c.known_envs();
    let label = |l: &str| crate::label::parse_label(l, &known).unwrap();
    let hours = |h: Option<(u8, u8)>| h.map(|(from, to)| Hours { from, to });
    c.warm = warm.iter().map(|&(l, size, h)| WarmPool { label: label(l), size, hours: hours(h) }).collect();
    c.spare = spare.iter().map(|&(l, executors, h)| Spare { label: label(l), executors, hours: hours(h) }).collect();
    c
}

/// The subjects of `counter` the caller is to count once per run.
pub fn once(plan: &Plan, counter: Counter) -> Vec<&str> {
    plan.once.iter().filter(|(c, _)| *c == counter).map(|(_, subject)| subject.as_str()).collect()
}

pub fn count(counts: &BTreeMap<Counter, u64>, counter: Counter) -> u64 {
    counts.get(&counter).copied().unwrap_or(0)
}
