//! The bounded loop: observe → decide → act → record, `--loop_counter` times,
//! with the periodic jobs on their original schedule (passes count from 0, so
//! the first pass runs them all). An error never ends the loop; it is logged,
//! counted, and the next pass tries again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use crate::act::act;
use crate::config::Config;
use crate::counter::Counter;
use crate::metrics::{self, AgentStates};
use crate::model::{EnvObservation, InstanceState};
use crate::observe::{observe, Observation};
use crate::periodic;
use crate::plan::{decide, plan_inventory, Decision, Note, NoteLevel, PlanConfig};
use crate::record::{PassRecord, RunRecord};
use crate::stats::Stats;
use crate::world::World;

/// How long a `working_on_*.working` marker holds an item as handled.
pub const WORKING_TTL: Duration = Duration::from_secs(300);
/// How long a running instance with no node yet still counts as booting.
pub const BOOT_GRACE: Duration = Duration::from_secs(600);

/// Every how many passes the inventory runs (SPEC A5 step 4); the other
/// periodic jobs are in `periodic`.
pub const INVENTORY_EVERY: u32 = 15;

/// The planner's view of the configuration.
pub fn plan_config(c: &Config) -> PlanConfig {
    PlanConfig {
        slave_name: c.slave_name.clone(),
        max_on_demand: c.max_on_demand,
        max_spot: c.max_spot,
        amis: c.envs.iter().map(|(n, e)| (n.clone(), e.ami.clone())).collect(),
        working_ttl: WORKING_TTL,
        boot_grace: BOOT_GRACE,
        zombie_after: c.zombie_after,
        spot_fallback: c.spot_fallback,
        instance_types: c.instance_types.clone(),
        masters: c.envs.iter().map(|(n, e)| (n.clone(), e.jenkins_url.clone())).collect(),
    }
}

pub struct Reconciler<'w> {
    world: &'w World,
    plan_config: PlanConfig,
    pub stats: Stats,
    /// Info notes already logged, so an item stuck on the queue with a label
    /// we cannot serve is reported once, not every 5 seconds.
    told: BTreeSet<(Option<String>, String)>,
    /// Passes and actions, for the run report and the metrics.
    pub run: RunRecord,
    /// Our agents per env and state at the last observation (metrics).
    agent_states: AgentStates,
    /// Lasting conditions already counted this run (a node whose instance
    /// is gone counts `error_stopping_instance` once, not every pass).
    counted_once: BTreeSet<(Counter, String)>,
    /// When the run began (`--max_minutes` counts from here).
    began: Instant,
}

impl<'w> Reconciler<'w> {
    pub fn new(world: &'w World) -> Reconciler<'w> {
        Reconciler {
            world,
            plan_config: plan_config(&world.config),
            stats: Stats::default(),
            told: BTreeSet::new(),
            run: RunRecord::default(),
            agent_states: AgentStates::new(),
            counted_once: BTreeSet::new(),
            began: Instant::now(),
        }
    }

    /// Runs every pass, or until `shutdown` completes or `--max_minutes`
    /// has passed; then the CSVs are due.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let started = self.began;
        let config = &self.world.config;
        let (total, max_run) = (config.loop_counter, config.max_run);
        for pass in 0..total {
            if pass > 0 && started.elapsed() >= max_run {
                tracing::warn!(
                    "the run ended on its time bound (--max_minutes {}) after {pass} of {total} passes",
                    max_run.as_secs_f64() / 60.0
                );
                return;
            }
            tokio::select! {
                _ = self.pass(pass) => {}
                _ = &mut shutdown => { tracing::warn!("interrupted during pass {}", pass + 1); return; }
            }
            if pass + 1 < total {
                // Never sleep past the bound: the run ends on time.
                let nap = self.world.config.pass_interval.min(max_run.saturating_sub(started.elapsed()));
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = &mut shutdown => { tracing::warn!("interrupted after pass {}", pass + 1); return; }
                }
            }
        }
    }

    /// One pass: observe, decide, act, then the periodic jobs and the record.
    pub async fn pass(&mut self, pass: u32) {
        let started = Instant::now();
        let started_at = SystemTime::now();
        let before = self.stats.clone();
        let calls_before = self.world.ec2_calls.get();
        let obs = observe(self.world).await;
        // Instances this pass's plan terminates; the inventory leaves them be.
        let mut terminated = BTreeSet::new();

        for (env, result) in &obs.envs {
            if let Err(e) = result {
                tracing::error!("{env}: cannot describe instances: {e}");
                self.stats.add(Counter::DescribeFailed, 1);
            }
        }
        let mut queue_len = None;
        match decide(&self.plan_config, &obs.dump, &obs.envs, &obs.markers, obs.now, fastrand::u64(..)) {
            Decision::NoDump(e) => {
                tracing::error!("Jenkins dump failed, nothing scaled this pass: {e}");
                self.stats.add(Counter::JarFileError, 1);
            }
            Decision::NoMarkers(e) => {
                tracing::error!("{e}; nothing scaled this pass");
                self.stats.add(Counter::ActionFailed, 1);
            }
            Decision::Scale { snapshot, plan } => {
                queue_len = Some(snapshot.dump.queue.len());
                for m in &snapshot.dump.messages {
                    tracing::info!("jenkins: {m}");
                }
                self.tell(&plan.notes);
                for (&c, &n) in &plan.counts {
                    self.stats.add(c, n);
                }
                for once in &plan.once {
                    if self.counted_once.insert(once.clone()) {
                        self.stats.add(once.0, 1);
                    }
                }
                terminated = plan.terminated();
                let acted = act(self.world, &plan.actions, pass + 1).await;
                self.stats.merge(&acted.stats);
                self.run.actions.extend(acted.records);
            }
        }

        let config = &self.world.config;
        if pass.is_multiple_of(INVENTORY_EVERY) {
            self.inventory(&obs, pass, &terminated).await;
        }
        if pass.is_multiple_of(periodic::SECURITY_GROUP_EVERY) && config.manage_security_group {
            periodic::security_group(self.world, &self.plan_config, &obs.envs, &mut self.stats).await;
        }
        if pass.is_multiple_of(periodic::GC_EVERY) {
            if let Some(job) = &config.gc_job {
                periodic::garbage_collect(self.world, job, &mut self.stats).await;
            }
        }
        if pass.is_multiple_of(periodic::SQS_EVERY) {
            periodic::sqs_requests(self.world, &mut self.stats).await;
        }

        tracing::debug!(
            "pass {} cost {} EC2 requests ({} envs observed in {} ms)",
            pass + 1,
            self.world.ec2_calls.get() - calls_before,
            obs.envs.len(),
            obs.elapsed.as_millis()
        );
        let duration = started.elapsed();
        self.run.passes.push(PassRecord {
            number: pass + 1,
            started: started_at,
            duration,
            queue: queue_len,
            agents: agents_per_env(&obs.envs),
            ec2_requests: self.world.ec2_calls.get() - calls_before,
        });
        self.agent_states = agent_states(&obs.envs, &self.world.config.slave_name);
        let text = metrics::render(&self.stats, &self.run, &self.agent_states);
        if let Err(e) = metrics::write(&self.world.workdir, &text) {
            tracing::warn!("cannot write {}: {e}", metrics::FILE);
        }

        let delta = |c: Counter| self.stats.get(c) - before.get(c);
        tracing::info!(
            "pass {}/{}{}: queue {}, agents {}, started {}, created {}, stopped {}, terminated {}, errors {} ({} ms)",
            pass + 1,
            self.world.config.loop_counter,
            self.time_left(pass + 1),
            queue_len.map_or("?".to_string(), |n| n.to_string()),
            agents_line(&obs.envs),
            delta(Counter::InstancesStarted),
            delta(Counter::InstancesCreated),
            delta(Counter::InstancesStopped),
            delta(Counter::InstancesTerminated),
            self.stats.errors() - before.errors(),
            duration.as_millis(),
        );
    }

    /// `, 12m30s left`: the passes to go at the mean pass time so far.
    fn time_left(&self, done: u32) -> String {
        let remaining = self.world.config.loop_counter.saturating_sub(done);
        if remaining == 0 || self.run.passes.is_empty() {
            return String::new();
        }
        let mean: Duration =
            self.run.passes.iter().map(|p| p.duration).sum::<Duration>() / self.run.passes.len() as u32;
        let by_passes = (mean + self.world.config.pass_interval) * remaining;
        let by_time = self.world.config.max_run.saturating_sub(self.began.elapsed());
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
            self.stats.add(c, n);
        }
        if obs.envs.values().all(Result::is_ok) {
            self.stats.instance_count = inv.instance_count.clone();
        }
        let mut acted = act(self.world, &inv.actions, pass + 1).await;
        // Counted as inventory failures, not as failed scaling actions.
        let failures = acted.stats.take(Counter::ActionFailed);
        self.stats.merge(&acted.stats);
        self.run.actions.extend(acted.records);
        self.stats.add(Counter::InventoryFailed, failures);
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

/// Our pending and running agents per env; `None` where not observed.
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
