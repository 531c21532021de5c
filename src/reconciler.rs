//! The bounded loop: observe → decide → act → record, `--loop_counter` times,
//! with the periodic jobs on their [`schedule`] (passes count from 0, so the
//! first pass runs them all). An error never ends the loop; it is logged,
//! counted, and the next pass tries again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::act::act;
use crate::config::{Config, FleetConfig};
use crate::counter::Counter;
use crate::interruption;
use crate::model::{EnvObservation, EventKind, InstanceState};
use crate::observe::{observe, Observation};
use crate::periodic::schedule::{self, Job};
use crate::periodic::{gc, security_group, sqs_requests};
use crate::plan::{
    cost, decide, plan_inventory, spot_agents, Action, Decision, Events, FailedStarts, Note, NoteLevel, OfflineEarly,
    PlanConfig, FAILED_START_SKIPPED,
};
use crate::record::in_flight;
use crate::record::metrics::AgentStates;
use crate::record::{PassRecord, Recorder};
use crate::time_to_agent::{Kind, Tracker};
use crate::world::World;

/// How long a `working_on_*.working` marker holds an item as handled.
pub const WORKING_TTL: Duration = Duration::from_secs(300);
/// How long a running instance with no node yet still counts as booting.
pub const BOOT_GRACE: Duration = Duration::from_secs(600);

/// The planner's view of the configuration.
pub fn plan_config(c: &FleetConfig) -> PlanConfig {
    PlanConfig {
        slave_name: c.slave_name.clone(),
        max_on_demand: c.max_on_demand,
        max_spot: c.max_spot,
        amis: c.envs.iter().map(|(n, e)| (n.clone(), e.ami.clone())).collect(),
        working_ttl: WORKING_TTL,
        boot_grace: BOOT_GRACE,
        zombie_after: c.zombie_after,
        spot_fallback: c.spot_fallback,
        warm: c.warm.clone(),
        spare: c.spare.clone(),
        instance_types: c.instance_types.clone(),
        masters: c.envs.iter().map(|(n, e)| (n.clone(), e.jenkins_url.clone())).collect(),
    }
}

pub struct Reconciler<'w> {
    world: &'w World,
    plan_config: PlanConfig,
    /// What the run did: counters, passes, actions; the metrics, the report
    /// and the CSVs.
    pub record: Recorder,
    /// Info notes already logged, so an item stuck on the queue with a label
    /// we cannot serve is reported once, not every 5 seconds.
    told: BTreeSet<(Option<String>, String)>,
    /// Lasting conditions already counted this run (a node whose instance
    /// is gone counts `error_stopping_instance` once, not every pass).
    counted_once: BTreeSet<(Counter, String)>,
    /// When the run began (`--max_minutes` counts from here). Tokio's
    /// clock, which is the system's outside tests.
    began: Instant,
    /// The queue items in flight, with their phases so far; kept in
    /// `time_to_agent.json` between passes and runs.
    pub in_flight: Tracker,
    /// Polls the interruption queues between passes.
    listener: interruption::Listener,
    /// Our spot agents (env, instance id) whose nodes a nap took offline,
    /// and when, until a pass has handled their event (see
    /// [`OfflineEarly`]), the instance is gone, or [`OFFLINE_EARLY_HELD`].
    offline_early: BTreeMap<(String, String), Instant>,
    /// Stopped agents whose start EC2 refused, and when (the pass's clock),
    /// until one starts, it leaves the stopped state, or
    /// [`FAILED_START_SKIPPED`] has passed: see [`FailedStarts`].
    failed_starts: FailedStarts,
}

/// How long an agent the nap took offline is held from scale-down while its
/// event does not come back to a pass that handles it: the message is
/// visible again after [`interruption::visibility_timeout`] (at most a
/// couple of pass intervals), so this is only a bound on the memory.
const OFFLINE_EARLY_HELD: Duration = Duration::from_secs(10 * 60);

impl<'w> Reconciler<'w> {
    pub fn new(world: &'w World) -> Reconciler<'w> {
        Reconciler {
            world,
            plan_config: plan_config(&world.config.fleet),
            record: Recorder::new(world.workdir.clone()),
            told: BTreeSet::new(),
            counted_once: BTreeSet::new(),
            began: Instant::now(),
            in_flight: in_flight::load(&world.workdir),
            listener: interruption::Listener::default(),
            offline_early: BTreeMap::new(),
            failed_starts: FailedStarts::new(),
        }
    }

    /// Runs every pass, or until `shutdown` completes or `--max_minutes`
    /// has passed; then the CSVs are due.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let started = self.began;
        let config = &self.world.config;
        let (total, max_run) = (config.run.loop_counter, config.run.max_run);
        for pass in 0..total {
            if pass > 0 && started.elapsed() >= max_run {
                tracing::warn!(
                    "the run ended on its time bound (--max_minutes {}) after {pass} of {total} passes",
                    max_run.as_secs_f64() / 60.0
                );
                break;
            }
            tokio::select! {
                _ = self.pass(pass) => {}
                _ = &mut shutdown => { tracing::warn!("interrupted during pass {}", pass + 1); return; }
            }
            if pass + 1 < total {
                // Never sleep past the bound: the run ends on time.
                let nap = self.world.config.run.pass_interval.min(max_run.saturating_sub(started.elapsed()));
                let queues = &self.world.interruptions;
                let until = Instant::now() + nap;
                // The nap's offline-node rounds: one CLI call's time past
                // the nap, never past the run's bound.
                let deadline = (until + self.world.config.jenkins.timeout).min(started + max_run);
                tokio::select! {
                    _ = async {
                        self.listener.nap(queues, until).await;
                        self.offline_warned(pass, deadline).await;
                    } => {}
                    _ = &mut shutdown => { tracing::warn!("interrupted after pass {}", pass + 1); return; }
                }
            }
        }
        tokio::select! {
            _ = self.settle() => {}
            _ = &mut shutdown => tracing::warn!("interrupted while the interruption polls ended"),
        }
    }

    /// Takes offline the nodes of our spot agents warned (or told to
    /// rebalance) while the loop napped, before the next pass observes:
    /// until Jenkins hears, it can give them a build. Through the act step,
    /// so a failure is logged and counted like the plan's; the next pass's
    /// dump then shows the node online and its plan sends it again. The
    /// next pass does the rest (counters, replacement, markers, deletion).
    /// All rounds end by `deadline`: a round cut short leaves the rest to
    /// the next pass, which sends again what its dump shows online.
    async fn offline_warned(&mut self, pass: u32, deadline: Instant) {
        // Again while polls bring more (each round a node at least once
        // more): warnings sent together reach the envs' polls a moment apart.
        loop {
            if Instant::now() >= deadline {
                return;
            }
            let actions = self.listener.offline_now();
            if actions.is_empty() {
                return;
            }
            let Ok(acted) = tokio::time::timeout_at(deadline, act(self.world, &actions, pass + 1)).await else {
                tracing::warn!("the offline-node of {} warned agent(s) ran out of the nap's time", actions.len());
                // Any of them may have gone offline: held from scale-down
                // as if it had, until its event is handled.
                for action in &actions {
                    if let Action::OfflineNode { env, instance_id, .. } = action {
                        self.offline_early.insert((env.clone(), instance_id.clone()), Instant::now());
                    }
                }
                return;
            };
            for (env, id) in offlined(&acted) {
                self.offline_early.insert((env, id), Instant::now());
            }
            self.record.acted(acted);
        }
    }

    /// The agents taken offline early that the next pass still holds back
    /// from scale-down: those not yet gone nor held past the bound.
    fn still_offline_early(&mut self, envs: &BTreeMap<String, EnvObservation>) -> OfflineEarly {
        self.offline_early.retain(|(env, id), since| {
            let gone = envs
                .get(env)
                .and_then(|seen| seen.as_ref().ok())
                .is_some_and(|instances| !instances.iter().any(|i| &i.id == id && i.state.is_active()));
            !gone && since.elapsed() < OFFLINE_EARLY_HELD
        });
        self.offline_early.keys().cloned().collect()
    }

    /// The refused starts the next pass still remembers: of agents not seen
    /// out of the stopped state, refused less than [`FAILED_START_SKIPPED`]
    /// ago.
    fn still_failed_starts(&mut self, envs: &BTreeMap<String, EnvObservation>, now: SystemTime) -> FailedStarts {
        self.failed_starts.retain(|(env, id), at| {
            let left = envs
                .get(env)
                .and_then(|seen| seen.as_ref().ok())
                .is_some_and(|instances| !instances.iter().any(|i| &i.id == id && i.state == InstanceState::Stopped));
            !left && now.duration_since(*at).unwrap_or_default() < FAILED_START_SKIPPED
        });
        self.failed_starts.clone()
    }

    /// Waits for the interruption polls still out as the run ends, and
    /// hands back to their queues the events no pass took.
    async fn settle(&mut self) {
        let (left, failures) = self.listener.settle(&self.world.interruptions).await;
        for failure in &failures {
            tracing::error!("{failure}");
            self.record.stats.add(Counter::InterruptionFailed, 1);
        }
        if left > 0 {
            tracing::info!("{left} interruption event(s) received as the run ended are back on their queues");
        }
    }

    /// One pass: observe, decide, act, then the periodic jobs and the record.
    pub async fn pass(&mut self, pass: u32) {
        let started = Instant::now();
        let started_at = self.world.clock.now();
        let before = self.record.stats.clone();
        let calls_before = self.world.ec2_calls.get();
        let throttled_before = self.world.ec2_calls.throttled();
        let obs = observe(self.world, self.listener.take(&self.world.interruptions)).await;
        self.listener.watch(spot_agents(&self.plan_config, obs.dump.as_ref().ok(), &obs.envs));
        let usage = cost::observe_usage(&self.plan_config, obs.dump.as_ref().ok(), &obs.envs);
        self.record.run.cost.observe(obs.now, usage);
        // Agents before the queue: an item whose node came online in the
        // pass it leaves the queue is seen with that phase.
        self.in_flight.agents(obs.now, &obs.envs, obs.dump.as_ref().ok());
        if let Ok(dump) = &obs.dump {
            let envs = self.plan_config.amis.keys().cloned().collect();
            let served = self.in_flight.queue(obs.now, &dump.queue, &envs);
            self.record.run.served.extend(served);
        }
        // Instances this pass's plan terminates; the inventory leaves them be.
        let mut terminated = BTreeSet::new();

        for (env, result) in &obs.envs {
            if let Err(e) = result {
                tracing::error!("{env}: cannot describe instances: {e}");
                self.record.stats.add(Counter::DescribeFailed, 1);
            }
        }
        let mut queue_len = None;
        let stats = &mut self.record.stats;
        stats.add(Counter::InterruptionDropped, obs.events.dropped);
        for failure in &obs.events.failures {
            tracing::error!("{failure}");
            stats.add(Counter::InterruptionFailed, 1);
        }
        let offline_early = self.still_offline_early(&obs.envs);
        let failed_starts = self.still_failed_starts(&obs.envs, obs.now);
        let events =
            Events { received: &obs.events.events, offline_early: &offline_early, failed_starts: &failed_starts };
        // Events stay on their queues unless a plan handled them.
        let mut kept: Option<Vec<String>> = None;
        match decide(&self.plan_config, &obs.dump, &obs.envs, &obs.markers, events, obs.now, fastrand::u64(..)) {
            Decision::NoDump(e) => {
                tracing::error!("Jenkins dump failed, nothing scaled this pass: {e}");
                self.record.stats.add(Counter::JarFileError, 1);
            }
            Decision::NoMarkers(e) => {
                tracing::error!("{e}; nothing scaled this pass");
                self.record.stats.add(Counter::ActionFailed, 1);
            }
            Decision::Scale { snapshot, plan } => {
                queue_len = Some(snapshot.dump.queue.len());
                for m in &snapshot.dump.messages {
                    tracing::info!("jenkins: {m}");
                }
                self.tell(&plan.notes);
                for (&c, &n) in &plan.counts {
                    self.record.stats.add(c, n);
                }
                for once in &plan.once {
                    if self.counted_once.insert(once.clone()) {
                        self.record.stats.add(once.0, 1);
                    }
                }
                terminated = plan.terminated();
                let acted = act(self.world, &plan.actions, pass + 1).await;
                for r in acted.records.iter().filter(|r| r.outcome.is_ok()) {
                    let kind = match r.kind {
                        "start" => Kind::Start,
                        "create" => Kind::Create,
                        _ => continue,
                    };
                    if let Some(key) = &r.job_key {
                        self.in_flight.acted(key, kind, r.time, r.instance_id.clone());
                    }
                }
                let mut keep = plan.kept_events.clone();
                keep.extend(acted.unmarked_events.iter().cloned());
                // Handled now: the marker holds the agent from here on.
                let handled = |env: &str, id: &str| {
                    snapshot.markers.interrupted.iter().any(|m| m.env == env && m.instance_id == id)
                        || snapshot.events.iter().any(|e| {
                            e.env == env
                                && e.instance_id == id
                                && matches!(e.kind, EventKind::Warning | EventKind::Rebalance)
                                && !keep.contains(&e.id)
                        })
                };
                self.offline_early.retain(|(env, id), _| !handled(env, id));
                for (env, id) in offlined(&acted) {
                    self.listener.offlined(&env, &id);
                }
                for r in acted.records.iter().filter(|r| r.kind == "start") {
                    let (Some(env), Some(id)) = (&r.env, &r.instance_id) else { continue };
                    let key = (env.clone(), id.clone());
                    match r.outcome {
                        Ok(()) => self.failed_starts.remove(&key),
                        Err(_) => self.failed_starts.insert(key, r.time),
                    };
                }
                self.record.acted(acted);
                kept = Some(keep);
            }
        }
        if let Some(kept) = kept {
            for failure in interruption::delete_handled(&self.world.interruptions, &obs.events, &kept).await {
                tracing::error!("{failure}");
                self.record.stats.add(Counter::InterruptionFailed, 1);
            }
        }

        let world = self.world;
        for job in schedule::due(pass) {
            let stats = &mut self.record.stats;
            match (job, &world.config) {
                (Job::Inventory, _) => self.inventory(&obs, pass, &terminated).await,
                (Job::SecurityGroup, Config { security_group: Some(sg), .. }) => {
                    security_group::run(world, sg, &self.plan_config, &obs.envs, stats).await
                }
                (Job::GarbageCollect, Config { gc_job: Some(job), .. }) => gc::run(world, job, stats).await,
                (Job::SqsRequests, Config { sqs: Some(sqs), .. }) => sqs_requests::run(world, sqs, stats).await,
                // Turned off by its flag.
                _ => {}
            }
        }

        in_flight::save(&self.world.workdir, &self.in_flight);
        self.world.shortages.save_if_changed(&self.world.workdir, self.world.clock.now());
        if let Some((item, waited)) = self.in_flight.slowest_waiting(self.world.clock.now()) {
            let phase = match item.phases() {
                [_, _, Some(_)] => "its agent online".to_string(),
                [_, Some(_), None] => "its instance running, the agent not yet online".to_string(),
                [Some(_), None, None] => format!("{} done, the instance not yet running", item.kind().as_str()),
                [None, ..] => "no agent action yet".to_string(),
            };
            tracing::debug!("slowest waiting item: {} ({}) for {} s, {phase}", item.job, item.label, waited.as_secs());
        }
        tracing::debug!(
            "pass {} cost {} EC2 requests ({} envs observed in {} ms)",
            pass + 1,
            self.world.ec2_calls.get() - calls_before,
            obs.envs.len(),
            obs.elapsed.as_millis()
        );
        self.record.stats.add(Counter::Ec2Throttled, self.world.ec2_calls.throttled() - throttled_before);
        let duration = started.elapsed();
        let record = PassRecord {
            number: pass + 1,
            started: started_at,
            duration,
            queue: queue_len,
            agents: agents_per_env(&obs.envs),
            ec2_requests: self.world.ec2_calls.get() - calls_before,
        };
        self.record.after_pass(record, agent_states(&obs.envs, &self.world.config.fleet.slave_name));

        let stats = &self.record.stats;
        let delta = |c: Counter| stats.get(c) - before.get(c);
        tracing::info!(
            "pass {}/{}{}: queue {}, agents {}, started {}, created {}, stopped {}, terminated {}, errors {} ({} ms)",
            pass + 1,
            self.world.config.run.loop_counter,
            self.time_left(pass + 1),
            queue_len.map_or("?".to_string(), |n| n.to_string()),
            agents_line(&obs.envs),
            delta(Counter::InstancesStarted),
            delta(Counter::InstancesCreated),
            delta(Counter::InstancesStopped),
            delta(Counter::InstancesTerminated),
            stats.errors() - before.errors(),
            duration.as_millis(),
        );
    }

    /// `, 12m30s left`: the passes to go at the mean pass time so far.
    fn time_left(&self, done: u32) -> String {
        let remaining = self.world.config.run.loop_counter.saturating_sub(done);
        let passes = &self.record.run.passes;
        if remaining == 0 || passes.is_empty() {
            return String::new();
        }
        let mean: Duration = passes.iter().map(|p| p.duration).sum::<Duration>() / passes.len() as u32;
        let by_passes = (mean + self.world.config.run.pass_interval) * remaining;
        let by_time = self.world.config.run.max_run.saturating_sub(self.began.elapsed());
        let secs = by_passes.min(by_time).as_secs();
        if secs >= 3600 {
            format!(", {}h{:02}m left", secs / 3600, secs / 60 % 60)
        } else {
            format!(", {}m{:02}s left", secs / 60, secs % 60)
        }
    }

    /// SPEC A9: delete-on-termination everywhere, agents per label set, old
    /// stopped agents retired. A failure here is counted, never fatal.
    async fn inventory(&mut self, obs: &Observation, pass: u32, terminated: &BTreeSet<String>) {
        let inv = plan_inventory(&self.plan_config, &obs.envs, obs.dump.as_ref().ok(), obs.now, terminated);
        self.tell(&inv.notes);
        for (&c, &n) in &inv.counts {
            self.record.stats.add(c, n);
        }
        if obs.envs.values().all(Result::is_ok) {
            self.record.stats.instance_count = inv.instance_count.clone();
        }
        let acted = act(self.world, &inv.actions, pass + 1).await;
        self.record.inventory_acted(acted);
        if let Ok(dump) = &obs.dump {
            let offline = dump.nodes.iter().filter(|n| n.offline).count();
            let busy: u32 = dump.nodes.iter().filter_map(|n| n.busy_executors).sum();
            tracing::info!(
                "nodes: {} ({} online, {offline} offline), {busy} busy executors",
                dump.nodes.len(),
                dump.nodes.len() - offline
            );
        }
        let counts: Vec<String> = inv.instance_count.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::info!("inventory: {}", if counts.is_empty() { "no agents".to_string() } else { counts.join(", ") });
    }

    fn tell(&mut self, notes: &[Note]) {
        for note in notes {
            match note.level {
                NoteLevel::Debug => tracing::debug!("{}", note.text),
                NoteLevel::Info => {
                    if self.told.insert((note.job_key.clone(), note.text.clone())) {
                        tracing::info!("{}", note.text);
                    }
                }
            }
        }
    }
}

/// The agents (env, instance id) whose nodes the acted `offline-node`s took
/// offline.
fn offlined(acted: &crate::act::Acted) -> Vec<(String, String)> {
    let done = acted.records.iter().filter(|r| r.kind == "offline-node" && r.outcome.is_ok());
    done.filter_map(|r| Some((r.env.clone()?, r.instance_id.clone()?))).collect()
}

fn agents_per_env(envs: &BTreeMap<String, EnvObservation>) -> BTreeMap<String, Option<usize>> {
    envs.iter()
        .map(|(env, obs)| {
            let n = obs.as_ref().ok().map(|instances| {
                instances.iter().filter(|i| matches!(i.state, InstanceState::Pending | InstanceState::Running)).count()
            });
            (env.clone(), n)
        })
        .collect()
}

/// Our agents per env and EC2 state (terminated ones left out).
fn agent_states(envs: &BTreeMap<String, EnvObservation>, slave_name: &str) -> AgentStates {
    let mut out = AgentStates::new();
    for (env, instances) in envs.iter().filter_map(|(e, o)| o.as_ref().ok().map(|i| (e, i))) {
        let states = out.entry(env.clone()).or_default();
        for i in instances.iter().filter(|i| i.name.as_deref() == Some(slave_name)) {
            if i.state != InstanceState::Terminated {
                *states.entry(i.state.as_str()).or_default() += 1;
            }
        }
    }
    out
}

/// `5 (dev 3, prod 2)`: our pending and running agents, per env.
fn agents_line(envs: &BTreeMap<String, EnvObservation>) -> String {
    let per_env: Vec<(String, Option<usize>)> = agents_per_env(envs).into_iter().collect();
    let total: usize = per_env.iter().filter_map(|(_, n)| *n).sum();
    let parts: Vec<String> =
        per_env.iter().map(|(env, n)| format!("{env} {}", n.map_or("?".to_string(), |n| n.to_string()))).collect();
    format!("{total} ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    //! The loop in-process on the fake world and Tokio's paused clock: many
    //! passes, minutes of run time, in milliseconds.

    use super::*;
    use crate::aws::ec2::Ec2ErrorKind;
    use crate::config::Config;
    use crate::fake::{self, agent, setup, Times};
    use crate::jenkins::cli::CliErrorKind;

    fn passes(n: u32) -> Config {
        let mut config = fake::config(&["dev", "prod"]);
        config.run.loop_counter = n;
        config
    }

    async fn run(world: &World) -> Reconciler<'_> {
        let mut reconciler = Reconciler::new(world);
        reconciler.run(std::future::pending()).await;
        reconciler
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_item_gets_one_agent_however_many_passes_see_it() {
        let s = setup(passes(4));
        s.jenkins.enqueue("app", "dev");
        let r = run(&s.world).await;
        assert_eq!(r.record.run.passes.len(), 4);
        assert_eq!(s.cloud.count("DescribeInstances"), 8, "one describe per env and pass");
        assert_eq!(s.cloud.count("RunInstances"), 1);
        assert_eq!(r.record.stats.get(Counter::InstancesCreated), 1);
        assert_eq!(s.cloud.active("dev"), 1);
        assert_eq!(s.cloud.active("prod"), 0);
        assert_eq!(r.record.stats.errors(), 0);
        // The record and the metrics saw every pass.
        assert_eq!(r.record.run.passes.last().map(|p| p.number), Some(4));
        assert_eq!(r.record.run.passes[0].ec2_requests, 3, "two describes and the launch");
        assert!(s.world.workdir.join(crate::record::metrics::FILE).exists());
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_without_a_node_is_charged_as_booting_between_passes() {
        // Passes at 0, 5, 10, 15 s: created in the first, seen running
        // without a node by the next three, charged for the two intervals.
        let s = setup(passes(4));
        s.jenkins.enqueue("app", "dev");
        let r = run(&s.world).await;
        let by_label = r.record.run.cost.by_label();
        let dev = &by_label[&("dev", "dev")];
        assert_eq!(dev.get(&cost::Usage::Booting), Some(&Duration::from_secs(10)));
        assert_eq!(dev.len(), 1, "nothing busy, idle or stopped");
        assert_eq!(r.record.run.cost.busy_share(None), Some(0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_is_timed_phase_by_phase_across_two_runs() {
        let s = setup(passes(100));
        s.jenkins.enqueue("app", "dev");
        let mut first = Reconciler::new(&s.world);
        first.pass(0).await; // seen, and an agent created for it
        tokio::time::advance(Duration::from_secs(5)).await;
        first.pass(1).await; // its instance running
        assert!(first.record.run.served.is_empty());
        drop(first);

        // The next run finds the item in flight in the state file.
        let inst = s.cloud.instances("dev")[0].clone();
        s.jenkins.add_node(fake::node(&inst, "dev", false, false));
        let mut second = Reconciler::new(&s.world);
        assert_eq!(second.in_flight.items().count(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        second.pass(0).await; // its node online
        s.jenkins.dequeue("app");
        tokio::time::advance(Duration::from_secs(5)).await;
        second.pass(1).await; // its build started
        let served = &second.record.run.served;
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].item.kind(), Kind::Create);
        assert_eq!(served[0].item.action.as_ref().and_then(|a| a.instance_id.as_deref()), Some(inst.id.as_str()));
        assert_eq!(served[0].time_to_agent(), Duration::from_secs(15), "from the first run's first sight");
        let first_seen = served[0].item.first_seen;
        let phases = served[0].item.phases().map(|t| t.map(|t| t.duration_since(first_seen).unwrap().as_secs()));
        assert_eq!(phases, [Some(0), Some(5), Some(10)], "acted, running, online");
        assert_eq!(in_flight::load(&s.world.workdir).items().count(), 0, "nothing left in flight");
    }

    #[tokio::test(start_paused = true)]
    async fn a_marker_expires_after_its_ttl_while_the_job_is_still_queued() {
        // Passes 5 s apart; the marker written in the first pass holds the
        // item for 300 s. No node ever comes for the agent.
        let s = setup(passes(60));
        s.jenkins.enqueue("app", "dev");
        let marker = s.world.workdir.join(crate::markers::working_file(&crate::job_key::job_key("app", None)));
        let r = run(&s.world).await;
        assert_eq!(tokio::time::Instant::now() - r.began, Duration::from_secs(295));
        assert!(marker.exists());
        assert_eq!(r.record.stats.get(Counter::JobsWaitedTooLong), 0);
        assert_eq!(s.cloud.count("RunInstances"), 1);

        // The same workspace, three passes more (300, 305, 310 s): the
        // marker expires.
        let mut r = Reconciler::new(&s.world);
        r.run(tokio::time::sleep(Duration::from_secs(13))).await;
        assert_eq!(r.record.run.passes.len(), 3);
        assert_eq!(r.record.stats.get(Counter::JobsWaitedTooLong), 1);
        assert!(!marker.exists(), "the expired marker is removed");
        assert_eq!(s.cloud.count("RunInstances"), 1, "the booting agent still serves the item");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_launch_is_counted_and_the_next_pass_tries_again() {
        let s = setup(passes(3));
        s.jenkins.enqueue("app", "dev");
        s.cloud.fail(None, "RunInstances", Times::Once, Ec2ErrorKind::Other);
        let r = run(&s.world).await;
        assert_eq!(r.record.run.passes.len(), 3);
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 1);
        assert_eq!(s.cloud.count("RunInstances"), 2);
        assert_eq!(r.record.stats.get(Counter::InstancesCreated), 1);
        let outcomes: Vec<bool> = r.record.run.actions.iter().map(|a| a.outcome.is_ok()).collect();
        assert_eq!(outcomes, [false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_dump_or_describe_skips_only_what_it_must() {
        let s = setup(passes(2));
        s.jenkins.enqueue("app", "dev");
        s.jenkins.enqueue("release", "prod");
        s.jenkins.fail("groovy", Times::Once, CliErrorKind::Unreachable);
        s.cloud.fail(Some("dev"), "DescribeInstances", Times::Once, Ec2ErrorKind::Throttled);
        let r = run(&s.world).await;
        assert_eq!(r.record.stats.get(Counter::JarFileError), 1);
        assert_eq!(r.record.stats.get(Counter::DescribeFailed), 1);
        assert_eq!(r.record.run.passes[0].queue, None, "nothing scaled without a dump");
        assert_eq!(r.record.run.passes[1].queue, Some(2));
        assert_eq!((s.cloud.active("dev"), s.cloud.active("prod")), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_describe_leaves_its_env_alone_and_the_others_go_on() {
        let s = setup(passes(1));
        s.jenkins.enqueue("app", "dev");
        s.jenkins.enqueue("release", "prod");
        s.cloud.fail(Some("dev"), "DescribeInstances", Times::Once, Ec2ErrorKind::Throttled);
        let r = run(&s.world).await;
        assert_eq!(r.record.stats.get(Counter::DescribeFailed), 1);
        assert_eq!((s.cloud.active("dev"), s.cloud.active("prod")), (0, 1));
        assert_eq!(r.record.run.passes[0].agents.get("dev"), Some(&None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_caps_hold_over_many_passes() {
        let s = setup(passes(10));
        for job in ["a", "b", "c", "d", "e"] {
            s.jenkins.enqueue(job, "dev");
            s.jenkins.enqueue(job, "dev_spot");
        }
        let r = run(&s.world).await;
        let dev = s.cloud.instances("dev");
        assert_eq!(dev.iter().filter(|i| !i.spot).count(), 2, "--max_num_of_slaves_in_env");
        assert_eq!(dev.iter().filter(|i| i.spot).count(), 2, "--max_num_of_spot_slaves_in_env");
        assert_eq!(r.record.stats.get(Counter::InstancesCreated), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_periodic_jobs_run_on_the_original_schedule() {
        // 16 passes (0..=15): security group every 3rd (0, 3, 6, 9, 12, 15),
        // GC every 6th (0, 6, 12), inventory and SQS every 15th (0, 15).
        let mut config = passes(16);
        config.security_group = Some(fake::security_group(&[(22, "1.2.3.4/32")]));
        config.sqs = Some(fake::sqs());
        let s = setup(config);
        // Running two hours and no node: the inventory counts it each time.
        s.cloud.add("dev", agent("dev", "i-1", crate::model::InstanceState::Running, "dev", s.world.clock.now()));
        let r = run(&s.world).await;
        assert_eq!(s.cloud.count("DescribeSecurityGroups"), 6);
        assert_eq!(s.jenkins.count("build"), 3);
        assert_eq!(s.cloud.count("ReceiveMessage"), 2);
        assert_eq!(r.record.stats.get(Counter::InstanceNotSlave), 2);
        assert_eq!(s.jenkins.count("groovy"), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn the_run_ends_on_its_time_bound() {
        let mut config = passes(300);
        config.run.max_run = Duration::from_secs(60);
        let s = setup(config);
        let started = tokio::time::Instant::now();
        let r = run(&s.world).await;
        // Passes start at 0, 5, …, 55 s; at 60 s the bound has passed.
        assert_eq!(r.record.run.passes.len(), 12);
        assert_eq!(started.elapsed(), Duration::from_secs(60), "never sleeps past the bound");
    }

    /// `n` passes reading the interruption queue `ec2-events`.
    fn with_queue(n: u32) -> Config {
        let mut config = passes(n);
        config.interruption_queue = Some("ec2-events".into());
        config
    }

    /// An idle running spot agent of `env` with its online node.
    fn idle_spot_agent(s: &fake::Setup, env: &str, id: &str) {
        let warned = agent(env, id, InstanceState::Running, &format!("{env}_spot"), s.world.clock.now());
        s.jenkins.add_node(fake::node(&warned, env, false, false));
        s.cloud.add(env, warned);
    }

    /// A state change of `instance` to `stopping`.
    fn state_change(id: &str, instance: &str) -> String {
        warning(id, instance)
            .replace("EC2 Spot Instance Interruption Warning", "EC2 Instance State-change Notification")
            .replace(r#""instance-action":"terminate""#, r#""state":"stopping""#)
    }

    /// Sends each `(after, env, event)` `after` seconds after the one before.
    fn send_later(s: &fake::Setup, events: Vec<(u64, &'static str, String)>) -> tokio::task::JoinHandle<()> {
        let cloud = s.cloud.clone();
        tokio::spawn(async move {
            for (after, env, event) in events {
                tokio::time::sleep(Duration::from_secs(after)).await;
                cloud.send_event(env, &event);
            }
        })
    }

    fn warning(id: &str, instance: &str) -> String {
        serde_json::json!({
            "version": "0", "id": id, "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
            "account": "111111111111", "time": "2026-11-29T21:00:00Z", "region": "us-east-2",
            "resources": [format!("arn:aws:ec2:us-east-2a:instance/{instance}")],
            "detail": {"instance-id": instance, "instance-action": "terminate"},
        })
        .to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_warned_busy_agent_goes_offline_and_gets_one_replacement_however_often_warned() {
        let s = setup(with_queue(3));
        let warned = agent("dev", "i-1", InstanceState::Running, "dev_spot", s.world.clock.now());
        let mut node = fake::node(&warned, "dev", false, false);
        node["busy_executors"] = "1".into();
        node["ope_idle_count"] = "0".into();
        s.jenkins.add_node(node);
        s.cloud.add("dev", warned);
        s.cloud.send_event("dev", &warning("e-1", "i-1"));
        s.cloud.send_event("dev", &warning("e-1", "i-1"));
        s.cloud.send_event("dev", "garbage");
        let r = run(&s.world).await;
        let offline: Vec<Vec<String>> = s.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect();
        assert_eq!(offline.len(), 1, "{offline:?}");
        assert_eq!(offline[0][1..3], ["dev-10.0.0.1".to_string(), "-m".to_string()]);
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
        assert_eq!(r.record.stats.get(Counter::ReplacementsLaunched), 1);
        assert_eq!(r.record.stats.get(Counter::InterruptionDropped), 1);
        assert_eq!(s.cloud.count("RunInstances"), 1);
        assert_eq!(s.cloud.count("TerminateInstances") + s.cloud.count("StopInstances"), 0, "EC2 takes it");
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "every message deleted");
        assert_eq!(s.cloud.count("GetQueueUrl"), 2, "looked up once per env and run");
        assert!(s.world.workdir.join("dev__i-1.interrupted").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_whose_marker_cannot_be_written_stays_on_the_queue() {
        let s = setup(with_queue(1));
        idle_spot_agent(&s, "dev", "i-1");
        s.cloud.send_event("dev", &warning("e-1", "i-1"));
        // A directory where the marker goes: the write fails.
        std::fs::create_dir(s.world.workdir.join("dev__i-1.interrupted")).unwrap();
        let r = run(&s.world).await;
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 1);
        assert_eq!(s.cloud.events_left("dev"), (0, 1), "kept for a later pass, which writes the marker");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_receive_is_counted_and_the_run_goes_on() {
        let s = setup(with_queue(2));
        s.cloud.fail(Some("dev"), "ReceiveMessage", Times::Once, Ec2ErrorKind::Other);
        s.cloud.send_event("dev", &warning("e-1", "i-9"));
        let r = run(&s.world).await;
        assert_eq!(r.record.run.passes.len(), 2);
        assert_eq!(r.record.stats.get(Counter::InterruptionFailed), 1);
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "read and handled (not ours) the next pass");
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_arriving_mid_nap_takes_the_node_offline_before_the_nap_would_end() {
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        let cloud = s.cloud.clone();
        // 2 s into the 5 s nap after the first pass.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            cloud.send_event("dev", &warning("e-1", "i-1"));
        });
        let r = run(&s.world).await;
        sender.await.unwrap();
        let offline: Vec<Vec<String>> = s.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect();
        assert_eq!(offline.len(), 1, "{offline:?}");
        let passes = &r.record.run.passes;
        let second = passes[1].started.duration_since(passes[0].started).unwrap();
        assert_eq!(second, Duration::from_secs(2), "the second pass ran as the warning came");
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "handled and deleted");
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
    }

    /// The first words of the commands Jenkins got between the first pass's
    /// dump and the second's, but the first pass's GC build: what went out
    /// while the loop napped.
    fn between_the_first_two_dumps(s: &fake::Setup) -> Vec<String> {
        let words: Vec<String> = s.jenkins.commands().into_iter().map(|c| c[0].clone()).collect();
        let dumps: Vec<usize> = words.iter().enumerate().filter(|(_, w)| *w == "groovy").map(|(at, _)| at).collect();
        words[dumps[0] + 1..dumps[1]].iter().filter(|w| *w != "build").cloned().collect()
    }

    /// A busy running spot agent of `env` with its online node.
    fn busy_spot_agent(s: &fake::Setup, env: &str, id: &str) {
        let warned = agent(env, id, InstanceState::Running, &format!("{env}_spot"), s.world.clock.now());
        let mut node = fake::node(&warned, env, false, false);
        node["busy_executors"] = "1".into();
        node["ope_idle_count"] = "0".into();
        s.jenkins.add_node(node);
        s.cloud.add(env, warned);
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_mid_nap_takes_its_node_offline_before_the_next_pass_dumps() {
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        // The same event twice, as EventBridge may deliver it.
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1")), (0, "dev", warning("e-1", "i-1"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), ["offline-node"]);
        let offline: Vec<Vec<String>> = s.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect();
        assert_eq!(offline.len(), 1, "the next pass sees it offline and sends none: {offline:?}");
        assert_eq!(offline[0][1..3], ["dev-10.0.0.1".to_string(), "-m".to_string()]);
        assert!(offline[0][3].contains("spot interruption warning"), "{offline:?}");
        let passes = &r.record.run.passes;
        assert_eq!(passes[1].started.duration_since(passes[0].started).unwrap(), Duration::from_secs(2));
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 0);
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "the next pass deleted the messages");
        assert!(s.world.workdir.join("dev__i-1.interrupted").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_agent_warned_mid_nap_goes_offline_at_once_and_still_gets_its_replacement() {
        let s = setup(with_queue(2));
        busy_spot_agent(&s, "dev", "i-1");
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), ["offline-node"]);
        assert_eq!(s.jenkins.count("offline-node"), 1);
        // The next pass's dump shows the node offline and still busy.
        assert_eq!(r.record.stats.get(Counter::ReplacementsLaunched), 1);
        assert_eq!(s.cloud.count("RunInstances"), 1);
        assert_eq!(s.cloud.count("TerminateInstances") + s.cloud.count("StopInstances"), 0, "EC2 takes it");
        assert_eq!(s.cloud.events_left("dev"), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebalance_mid_nap_takes_its_node_offline_with_the_drain_reason() {
        let s = setup(with_queue(2));
        busy_spot_agent(&s, "dev", "i-1");
        let rebalance = warning("e-1", "i-1")
            .replace("EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation");
        let sender = send_later(&s, vec![(2, "dev", rebalance)]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), ["offline-node"]);
        let offline: Vec<Vec<String>> = s.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect();
        assert_eq!(offline.len(), 1, "{offline:?}");
        assert!(offline[0][3].starts_with("draining"), "{offline:?}");
        assert_eq!(r.record.stats.get(Counter::RebalanceRecommendations), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_offline_node_that_fails_mid_nap_is_counted_and_sent_again_by_the_next_pass() {
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        s.jenkins.fail("offline-node", Times::Once, CliErrorKind::Failed);
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), ["offline-node"]);
        assert_eq!(s.jenkins.count("offline-node"), 2, "the next pass's dump shows the node online");
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 1);
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
        assert_eq!(s.cloud.events_left("dev"), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn events_mid_nap_for_anything_but_our_spot_agents_send_nothing_early() {
        // Somebody else's spot instance and our on-demand agent, both with
        // online nodes, warned; a state change of our spot agent.
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        let now = s.world.clock.now();
        let foreign = crate::model::Instance {
            name: Some("somebody-else".into()),
            ..agent("dev", "i-2", InstanceState::Running, "dev_spot", now)
        };
        let on_demand = agent("dev", "i-3", InstanceState::Running, "dev", now);
        for inst in [foreign, on_demand] {
            s.jenkins.add_node(fake::node(&inst, "dev", false, false));
            s.cloud.add("dev", inst);
        }
        let events = vec![(2, "dev", warning("e-2", "i-2")), (0, "dev", warning("e-3", "i-3"))];
        let sender = send_later(&s, [events, vec![(0, "dev", state_change("e-1", "i-1"))]].concat());
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), Vec::<String>::new());
        assert_eq!(s.jenkins.count("offline-node"), 0);
        let passes = &r.record.run.passes;
        assert_eq!(passes[1].started.duration_since(passes[0].started).unwrap(), Duration::from_secs(5));
        assert_eq!(s.cloud.events_left("dev"), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_mid_nap_in_an_env_not_described_ends_the_nap_and_the_pass_takes_the_node_offline() {
        // The first pass could not describe dev: which instance the warning
        // names, and its node, are unknown until the next pass.
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        s.cloud.fail(Some("dev"), "DescribeInstances", Times::Once, Ec2ErrorKind::Throttled);
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), Vec::<String>::new());
        assert_eq!(s.jenkins.count("offline-node"), 1, "sent by the next pass's plan");
        let passes = &r.record.run.passes;
        assert_eq!(passes[1].started.duration_since(passes[0].started).unwrap(), Duration::from_secs(2));
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn warnings_sent_together_to_two_envs_take_both_nodes_offline_before_the_next_dump() {
        let s = setup(with_queue(2));
        for (env, id) in [("dev", "i-1"), ("prod", "i-2")] {
            idle_spot_agent(&s, env, id);
        }
        let cloud = s.cloud.clone();
        // Both at once, as a wave: the first poll back ends the nap.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            cloud.send_event("dev", &warning("e-1", "i-1"));
            cloud.send_event("prod", &warning("e-2", "i-2"));
        });
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(between_the_first_two_dumps(&s), ["offline-node", "offline-node"]);
        assert_eq!(s.jenkins.count("offline-node"), 2);
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 2);
        assert_eq!((s.cloud.events_left("dev"), s.cloud.events_left("prod")), ((0, 0), (0, 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_taken_offline_mid_nap_whose_event_the_next_pass_cannot_handle_is_not_retired_once_idle() {
        // The next pass has no dump, or cannot describe dev: the event stays
        // on its queue and comes back after its visibility timeout (30 s).
        for describe_fails in [false, true] {
            let s = setup(with_queue(10));
            idle_spot_agent(&s, "dev", "i-1");
            let (cloud, jenkins) = (s.cloud.clone(), std::sync::Arc::clone(&s.jenkins));
            let sender = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match describe_fails {
                    true => cloud.fail(Some("dev"), "DescribeInstances", Times::Once, Ec2ErrorKind::Throttled),
                    false => jenkins.fail("groovy", Times::Once, CliErrorKind::Failed),
                }
                cloud.send_event("dev", &warning("e-1", "i-1"));
                // The dump script finds the idle node offline by us.
                tokio::time::sleep(Duration::from_secs(1)).await;
                jenkins.set_node_field("dev-10.0.0.1", "terminate_me", "true");
            });
            let r = run(&s.world).await;
            sender.await.unwrap();
            assert_eq!(between_the_first_two_dumps(&s), ["offline-node"], "describe fails: {describe_fails}");
            assert_eq!(s.jenkins.count("offline-node"), 1);
            let retired = s.cloud.count("TerminateInstances") + s.cloud.count("StopInstances");
            assert_eq!(retired, 0, "not retired as an idle agent; EC2 takes it (describe fails: {describe_fails})");
            assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1, "counted once, when it came back");
            assert!(s.world.workdir.join("dev__i-1.interrupted").exists());
            assert_eq!(s.cloud.events_left("dev"), (0, 0));
            assert!(r.offline_early.is_empty(), "forgotten once a pass handled its event");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_taken_offline_early_is_forgotten_once_gone_or_after_the_bound() {
        let s = setup(with_queue(1));
        let mut r = Reconciler::new(&s.world);
        let now = s.world.clock.now();
        let running = agent("dev", "i-1", InstanceState::Running, "dev_spot", now);
        let terminated = agent("dev", "i-1", InstanceState::Terminated, "dev_spot", now);
        let envs = |dev: Vec<crate::model::Instance>| BTreeMap::from([("dev".to_string(), Ok(dev))]);
        let key = ("dev".to_string(), "i-1".to_string());
        r.offline_early.insert(key.clone(), Instant::now());
        let not_described = BTreeMap::from([("dev".to_string(), Err("throttled".to_string()))]);
        assert_eq!(r.still_offline_early(&not_described), OfflineEarly::from([key.clone()]));
        assert_eq!(r.still_offline_early(&envs(vec![running.clone()])), OfflineEarly::from([key.clone()]));
        assert!(r.still_offline_early(&envs(vec![terminated])).is_empty(), "gone");
        r.offline_early.insert(key.clone(), Instant::now());
        tokio::time::advance(OFFLINE_EARLY_HELD - Duration::from_secs(1)).await;
        assert_eq!(r.still_offline_early(&envs(vec![running.clone()])).len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(r.still_offline_early(&envs(vec![running])).is_empty(), "held no longer than the bound");
    }

    /// `passes(n)` with `--spare dev=1` and `--max_num_of_slaves_in_env cap`.
    fn with_spare(n: u32, cap: u32) -> Config {
        let mut config = passes(n);
        let known = config.fleet.envs.keys().cloned().collect();
        let label = crate::label::parse_label("dev", &known).unwrap();
        config.fleet.spare = vec![crate::warm::Spare { label, executors: 1, hours: None }];
        config.fleet.max_on_demand = cap;
        config
    }

    /// A stopped dev agent EC2 refuses to start.
    fn unstartable(s: &fake::Setup, id: &str) {
        s.cloud.add("dev", agent("dev", id, InstanceState::Stopped, "dev", s.world.clock.now()));
        s.cloud.refuse_start(id, "InsufficientInstanceCapacity");
    }

    /// Passes `from..to`, 5 s apart.
    async fn passes_from(r: &mut Reconciler<'_>, from: u32, to: u32) {
        for pass in from..to {
            tokio::time::advance(Duration::from_secs(5)).await;
            r.pass(pass).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_agent_ec2_refuses_to_start_is_not_asked_again_by_the_spare_within_five_minutes() {
        // Room under the cap: the next pass creates the spare.
        let s = setup(with_spare(100, 2));
        unstartable(&s, "i-1");
        let mut r = Reconciler::new(&s.world);
        r.pass(0).await;
        assert_eq!(s.cloud.starts_of("i-1"), 1);
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 1);
        passes_from(&mut r, 1, 2).await;
        assert_eq!(s.cloud.count("RunInstances"), 1, "the spare is created");
        passes_from(&mut r, 2, 50).await;
        assert_eq!(s.cloud.starts_of("i-1"), 1, "not asked again within 5 min");
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 1);

        // Another stopped agent by the next pass: it is started instead.
        let s = setup(with_spare(100, 2));
        unstartable(&s, "i-1");
        let mut r = Reconciler::new(&s.world);
        r.pass(0).await;
        s.cloud.add("dev", agent("dev", "i-2", InstanceState::Stopped, "dev", s.world.clock.now()));
        passes_from(&mut r, 1, 50).await;
        assert_eq!((s.cloud.starts_of("i-1"), s.cloud.starts_of("i-2")), (1, 1));
        assert_eq!(s.cloud.count("RunInstances"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_start_is_tried_again_by_the_spare_after_five_minutes_and_forgotten_once_it_starts() {
        // At the cap (the stopped agent counts): nothing else can be brought up.
        let s = setup(with_spare(100, 1));
        unstartable(&s, "i-1");
        let mut r = Reconciler::new(&s.world);
        r.pass(0).await;
        s.cloud.allow_start("i-1");
        passes_from(&mut r, 1, 60).await; // up to 295 s
        assert_eq!(s.cloud.starts_of("i-1"), 1);
        assert_eq!(r.failed_starts.len(), 1);
        passes_from(&mut r, 60, 61).await; // 300 s
        assert_eq!(s.cloud.starts_of("i-1"), 2);
        assert_eq!(s.cloud.instance("dev", "i-1").map(|i| i.state), Some(InstanceState::Running));
        assert!(r.failed_starts.is_empty(), "forgotten once started");
        assert_eq!(r.record.stats.get(Counter::ActionFailed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_start_is_forgotten_once_its_agent_leaves_the_stopped_state_or_after_five_minutes() {
        let s = setup(passes(1));
        let mut r = Reconciler::new(&s.world);
        let now = s.world.clock.now();
        let stopped = agent("dev", "i-1", InstanceState::Stopped, "dev", now);
        let running = agent("dev", "i-1", InstanceState::Running, "dev", now);
        let envs = |dev: Vec<crate::model::Instance>| BTreeMap::from([("dev".to_string(), Ok(dev))]);
        let key = ("dev".to_string(), "i-1".to_string());
        r.failed_starts.insert(key.clone(), now);
        let not_described = BTreeMap::from([("dev".to_string(), Err("throttled".to_string()))]);
        assert_eq!(r.still_failed_starts(&not_described, now).len(), 1);
        assert_eq!(r.still_failed_starts(&envs(vec![stopped.clone()]), now).len(), 1);
        assert!(r.still_failed_starts(&envs(vec![running]), now).is_empty(), "started outside the manager");
        r.failed_starts.insert(key.clone(), now);
        assert!(r.still_failed_starts(&envs(vec![]), now).is_empty(), "gone");
        r.failed_starts.insert(key, now);
        let later = now + FAILED_START_SKIPPED;
        assert_eq!(r.still_failed_starts(&envs(vec![stopped.clone()]), later - Duration::from_secs(1)).len(), 1);
        assert!(r.still_failed_starts(&envs(vec![stopped]), later).is_empty(), "remembered no longer than the bound");
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_warning_mid_nap_for_a_node_the_pass_took_offline_sends_no_second_offline_node() {
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        s.cloud.send_event("dev", &warning("e-1", "i-1"));
        // EventBridge delivers the same event again, in the nap.
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(s.jenkins.count("offline-node"), 1, "sent by the first pass only");
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
        assert_eq!(s.cloud.events_left("dev"), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_the_nap_brought_sends_no_offline_node_once_the_naps_deadline_has_passed() {
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        let mut r = Reconciler::new(&s.world);
        r.pass(0).await;
        s.cloud.send_event("dev", &warning("e-1", "i-1"));
        r.listener.nap(&s.world.interruptions, Instant::now() + Duration::from_secs(5)).await;
        let deadline = Instant::now() + Duration::from_secs(1);
        tokio::time::advance(Duration::from_secs(1)).await;
        r.offline_warned(0, deadline).await;
        assert_eq!(s.jenkins.count("offline-node"), 0, "past the deadline");
        r.offline_warned(0, Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(s.jenkins.count("offline-node"), 1, "within it");
    }

    /// Jenkins whose `offline-node` takes `delay` of the wall clock.
    struct SlowOffline(std::sync::Arc<fake::FakeJenkins>, Duration);

    impl crate::world::Jenkins for SlowOffline {
        fn run(
            &self,
            words: &[String],
            stdin: &[u8],
        ) -> Result<crate::jenkins::cli::CliOutput, crate::jenkins::cli::CliError> {
            if words.first().is_some_and(|w| w == "offline-node") {
                std::thread::sleep(self.1);
            }
            self.0.run(words, stdin)
        }
    }

    // The wall clock: a CLI call on the blocking pool holds a paused clock.
    #[tokio::test]
    async fn an_offline_node_round_cut_at_the_naps_deadline_holds_its_agent_from_scale_down() {
        let mut s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        s.world.jenkins = std::sync::Arc::new(SlowOffline(std::sync::Arc::clone(&s.jenkins), Duration::from_secs(1)));
        let mut r = Reconciler::new(&s.world);
        r.pass(0).await;
        s.cloud.send_event("dev", &warning("e-1", "i-1"));
        r.listener.nap(&s.world.interruptions, Instant::now() + Duration::from_secs(5)).await;
        let began = Instant::now();
        r.offline_warned(0, began + Duration::from_millis(100)).await;
        assert!(began.elapsed() < Duration::from_millis(900), "{:?}", began.elapsed());
        assert!(r.offline_early.contains_key(&("dev".to_string(), "i-1".to_string())));
    }

    #[tokio::test]
    async fn the_naps_offline_node_round_ends_with_the_runs_time_bound() {
        // A 1 s nap in a run bounded at 1.5 s; a warning at 0.5 s whose
        // offline-node hangs 2 s: the run ends on its bound all the same.
        let mut config = with_queue(2);
        (config.run.pass_interval, config.run.max_run) = (Duration::from_secs(1), Duration::from_millis(1500));
        let mut s = setup(config);
        idle_spot_agent(&s, "dev", "i-1");
        s.world.jenkins = std::sync::Arc::new(SlowOffline(std::sync::Arc::clone(&s.jenkins), Duration::from_secs(2)));
        let cloud = s.cloud.clone();
        let warned = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cloud.send_event("dev", &warning("e-1", "i-1"));
        });
        let began = Instant::now();
        let r = run(&s.world).await;
        let took = began.elapsed();
        warned.await.unwrap();
        assert!(took < Duration::from_millis(2200), "{took:?}");
        assert_eq!(r.record.run.passes.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nap_that_begins_a_moment_after_its_end_was_set_still_polls_to_its_end() {
        // The loop sets the nap's end, then naps: a moment later, so fewer
        // whole seconds are left for SQS to wait than the interval has. A
        // 1 s nap must poll all the same, and a 5 s one to its end.
        for (nap, warned) in [(999, 500), (4_999, 4_500)] {
            let s = setup(with_queue(1));
            let mut listener = interruption::Listener::default();
            listener.watch(BTreeMap::from([("dev".to_string(), None), ("prod".to_string(), None)]));
            let cloud = s.cloud.clone();
            let sender = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(warned)).await;
                cloud.send_event("dev", &warning("e-1", "i-1"));
            });
            let began = Instant::now();
            listener.nap(&s.world.interruptions, began + Duration::from_millis(nap)).await;
            sender.await.unwrap();
            assert_eq!(began.elapsed(), Duration::from_millis(warned), "the warning ended the {nap} ms nap");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_for_an_instance_not_ours_waits_for_the_scheduled_pass() {
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-9"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        let passes = &r.record.run.passes;
        assert_eq!(passes[1].started.duration_since(passes[0].started).unwrap(), Duration::from_secs(5));
        assert_eq!(s.jenkins.count("offline-node"), 0);
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "deleted by the scheduled pass");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_aws_timeout_still_lets_the_nap_poll_and_a_warning_end_it() {
        // --aws_timeout 3: an SDK attempt of 1 s, shorter than any poll; the
        // receive's own timeouts cover the poll's wait.
        let mut config = with_queue(2);
        config.aws.timeout = Duration::from_secs(3);
        let s = setup(config);
        idle_spot_agent(&s, "dev", "i-1");
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        let passes = &r.record.run.passes;
        assert_eq!(passes[1].started.duration_since(passes[0].started).unwrap(), Duration::from_secs(2));
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_still_out_when_a_warning_ends_the_nap_is_collected_later() {
        // dev's warning at 2 s ends the nap; prod's poll is still out then
        // and brings prod's warning at 3 s, which ends the next nap.
        let s = setup(with_queue(3));
        for (env, id) in [("dev", "i-1"), ("prod", "i-2")] {
            idle_spot_agent(&s, env, id);
        }
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1")), (1, "prod", warning("e-2", "i-2"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        let passes = &r.record.run.passes;
        let at: Vec<u64> =
            passes.iter().map(|p| p.started.duration_since(passes[0].started).unwrap().as_secs()).collect();
        assert_eq!(at, [0, 2, 3]);
        let offline: Vec<String> =
            s.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").map(|c| c[1].clone()).collect();
        assert_eq!(offline, ["dev-10.0.0.1", "prod-10.0.0.2"]);
        assert_eq!((s.cloud.events_left("dev"), s.cloud.events_left("prod")), ((0, 0), (0, 0)));
        assert_eq!(r.record.stats.get(Counter::SpotInterruptions), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_a_poll_brings_after_the_last_pass_is_handed_back_to_its_queue() {
        // dev's warning at 2 s ends the nap, and the last pass runs; prod's
        // poll, still out, brings an event at 3 s that no pass will take.
        let s = setup(with_queue(2));
        idle_spot_agent(&s, "dev", "i-1");
        let sender = send_later(&s, vec![(2, "dev", warning("e-1", "i-1")), (1, "prod", warning("e-2", "i-2"))]);
        let started = tokio::time::Instant::now();
        let r = run(&s.world).await;
        sender.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3), "the run waited for prod's poll");
        assert_eq!(s.cloud.events_left("prod"), (1, 0), "visible again for the next run");
        assert_eq!(s.cloud.events_left("dev"), (0, 0));
        assert_eq!(r.record.stats.get(Counter::InterruptionFailed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crowded_queue_is_read_on_while_batches_come_back_full_within_a_bound() {
        let s = setup(with_queue(1));
        let change = |n: usize| state_change(&format!("e-{n}"), &format!("i-{n}"));
        for n in 0..25 {
            s.cloud.send_event("dev", &change(n));
        }
        for n in 0..60 {
            s.cloud.send_event("prod", &change(n));
        }
        run(&s.world).await;
        let receives = |env: &str| s.cloud.calls().iter().filter(|c| c.env == env && c.op == "ReceiveMessage").count();
        assert_eq!((receives("dev"), s.cloud.events_left("dev")), (3, (0, 0)), "10 + 10 + 5, all handled");
        assert_eq!((receives("prod"), s.cloud.events_left("prod")), (5, (10, 0)), "5 batches, the rest next pass");
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_change_mid_nap_waits_for_the_next_pass_and_is_handled_there() {
        let s = setup(with_queue(2));
        let sender = send_later(&s, vec![(2, "dev", state_change("e-1", "i-9"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        let passes = &r.record.run.passes;
        assert_eq!(passes[1].started.duration_since(passes[0].started).unwrap(), Duration::from_secs(5));
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "received in the nap, deleted by the pass");
        assert_eq!(r.record.stats.get(Counter::InterruptionDropped), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_hands_a_message_back_at_once_is_not_read_again_and_again_in_a_nap() {
        // The queue's own visibility timeout is 0: a message a poll took
        // would be back for the next poll at once, unless the receive hides
        // it itself until the pass has handled it.
        let s = setup(with_queue(2));
        s.cloud.set_event_visibility("dev", Duration::ZERO);
        let sender = send_later(&s, vec![(2, "dev", state_change("e-1", "i-9"))]);
        let r = run(&s.world).await;
        sender.await.unwrap();
        let dev_receives = s.cloud.calls().iter().filter(|c| c.env == "dev" && c.op == "ReceiveMessage").count();
        // Each pass's read, the poll that brought the message, one more poll.
        assert!(dev_receives <= 4, "{dev_receives} receives");
        assert_eq!(s.cloud.events_left("dev"), (0, 0), "handled once and deleted");
        assert_eq!(r.record.stats.get(Counter::InterruptionFailed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_queue_is_read_once_a_pass_and_the_naps_keep_their_length() {
        let s = setup(with_queue(3));
        s.cloud.fail(Some("dev"), "ReceiveMessage", Times::Always, Ec2ErrorKind::Other);
        let started = tokio::time::Instant::now();
        let r = run(&s.world).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let dev_receives = s.cloud.calls().iter().filter(|c| c.env == "dev" && c.op == "ReceiveMessage").count();
        assert_eq!(dev_receives, 3, "no poll between passes after a failed read");
        assert_eq!(r.record.stats.get(Counter::InterruptionFailed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_nap_that_polls_the_queues() {
        let s = setup(with_queue(300));
        let mut r = Reconciler::new(&s.world);
        let started = tokio::time::Instant::now();
        r.run(tokio::time::sleep(Duration::from_secs(12))).await;
        assert_eq!(started.elapsed(), Duration::from_secs(12));
        assert_eq!(r.record.run.passes.len(), 3, "passes at 0, 5 and 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_nap_that_polls_the_queues_never_runs_past_the_time_bound() {
        let mut config = with_queue(300);
        config.run.max_run = Duration::from_secs(12);
        let s = setup(config);
        let started = tokio::time::Instant::now();
        let r = run(&s.world).await;
        assert_eq!(r.record.run.passes.len(), 3, "passes at 0, 5 and 10 s");
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_run_between_passes() {
        let s = setup(passes(300));
        let mut r = Reconciler::new(&s.world);
        r.run(tokio::time::sleep(Duration::from_secs(12))).await;
        assert_eq!(r.record.run.passes.len(), 3, "passes at 0, 5 and 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_pool_is_filled_once_taken_offline_then_stopped_when_set_up_and_serves_a_job_by_a_start() {
        let mut config = passes(100);
        let known = config.fleet.envs.keys().cloned().collect();
        let label = crate::label::parse_label("dev", &known).unwrap();
        config.fleet.warm = vec![crate::warm::WarmPool { label, size: 2, hours: None }];
        // Stopped agents count against the cap: room for the refill.
        config.fleet.max_on_demand = 3;
        let s = setup(config);
        let mut r = Reconciler::new(&s.world);
        r.pass(0).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        r.pass(1).await; // booting: counted, not created again
        assert_eq!(s.cloud.count("RunInstances"), 1, "the pool's two agents in one launch, once");
        let pool = s.cloud.instances("dev");
        assert_eq!(pool.len(), 2);
        assert!(pool.iter().all(|i| i.warm.as_deref() == Some("dev")), "{pool:?}");
        assert_eq!(r.record.stats.get(Counter::WarmPoolCreated), 2);
        assert_eq!(s.cloud.instances("prod").len(), 0);

        // Their nodes come online and idle: both taken offline at once, not
        // stopped from the dump that saw them online.
        for inst in &pool {
            s.jenkins.add_node(fake::node(inst, "dev", false, false));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        r.pass(2).await;
        assert_eq!(s.jenkins.count("offline-node"), 2);
        assert_eq!(s.cloud.count("StopInstances"), 0);
        assert_eq!(s.cloud.count("RunInstances"), 1, "both still count");

        // The next dump reports them offline by us with no build: both
        // stopped, tagged as pool agents stopped once.
        for inst in &pool {
            let name = fake::node(inst, "dev", true, true)["slaveName"].as_str().unwrap().to_string();
            s.jenkins.set_node_field(&name, "terminate_me", "true");
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        r.pass(3).await;
        let stopped = s.cloud.instances("dev");
        assert!(stopped.iter().all(|i| i.state == InstanceState::Stopped && i.warm.is_none()), "{stopped:?}");
        assert_eq!(s.cloud.count("StopInstances"), 1, "one call for both");
        assert_eq!(r.record.stats.get(Counter::WarmPoolStopped), 2);
        assert_eq!(r.record.stats.get(Counter::InstancesStopped), 2);

        // A dev job: one of them is started; its place in the pool refilled.
        s.jenkins.enqueue("app", "dev");
        tokio::time::advance(Duration::from_secs(5)).await;
        r.pass(4).await;
        assert_eq!(s.cloud.count("StartInstances"), 1);
        assert_eq!(r.record.stats.get(Counter::InstancesStarted), 1);
        assert_eq!(s.cloud.count("RunInstances"), 2, "the refill only");
        assert_eq!(r.record.stats.get(Counter::WarmPoolCreated), 3);
        let started = s.cloud.instances("dev").into_iter().filter(|i| pool.iter().any(|p| p.id == i.id));
        assert_eq!(started.filter(|i| i.state == InstanceState::Running).count(), 1);
        assert_eq!(r.record.stats.errors(), 0);
    }
}
