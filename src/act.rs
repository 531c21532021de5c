//! Act: carry out a plan through the world's EC2 clients. Envs act in
//! parallel, each on its own: one env's slow or failing calls never hold up
//! another's. Within an env the actions go out as EC2 calls grouped by the
//! planner's [`env_calls`]: the creates sharing a launch spec and subnet as
//! one RunInstances, the starts, stops and terminations as one call each
//! (one call per instance when EC2 refuses the list for one of them), the
//! dependent steps in order (volumes set to go → terminate → the create it
//! makes room for). At most `--max_parallel_calls` calls are in flight per
//! env. Marker upkeep (local files) runs first, in order, then every
//! `offline-node` at once (Jenkins calls, outside the EC2 bound). A failed
//! action is logged and counted; the rest goes on, except what depended on
//! it (a create whose make-room termination failed, a termination whose
//! volumes could not be set to go with it).

use std::collections::BTreeSet;
use std::task::Poll;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::aws::ec2::{Ec2Error, LaunchSpec};
use crate::config::EnvConfig;
use crate::counter::Counter;
use crate::markers;
use crate::model::{Label, MASTER_TAG, WARMED_TAG, WARM_TAG};
use crate::plan::calls::{env_calls, launch_token, subnet_index, subnet_token, Call, ListKind, Sequence};
use crate::plan::Action;
use crate::record::stats::Stats;
use crate::record::ActionRecord;
use crate::shortage::{Offering, Refusal};
use crate::world::{BoxFuture, Ec2, World};

pub use crate::model::KEY_NAME;
pub const ROOT_VOLUME_GB: i32 = 25;

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Acted {
    /// The counters the actions moved.
    pub stats: Stats,
    /// One record per action (marker upkeep excluded), for the report, in
    /// the planner's order.
    pub records: Vec<ActionRecord>,
    /// EC2 events whose `.interrupted` marker could not be written: their
    /// messages stay on the queue, so a later pass decides them again.
    pub unmarked_events: Vec<String>,
}

/// What one action came to, when it was done.
struct Outcome {
    text: String,
    /// The instance acted on; for a create, the one it made.
    instance_id: Option<String>,
    result: Result<(), String>,
    counter: Option<Counter>,
    failed: bool,
    time: SystemTime,
}

/// Runs `actions` of pass number `pass`.
pub async fn act(world: &World, actions: &[Action], pass: u32) -> Acted {
    let mut outcomes: Vec<Option<Outcome>> = actions.iter().map(|_| None).collect();
    // Markers first: a stale start marker removed after a start wrote the
    // same file would lose the new one.
    let mut no_instances = BTreeSet::new();
    for (at, action) in actions.iter().enumerate().filter(|(_, a)| a.env().is_none()) {
        let result = run(world, action, &no_instances).await;
        outcomes[at] = Some(logged(world, action, result, &mut no_instances));
    }
    // Then every offline-node at once, ahead of the EC2 calls and outside
    // their bound: a warned agent's node takes builds until Jenkins hears.
    let offline: Vec<usize> =
        actions.iter().enumerate().filter(|(_, a)| matches!(a, Action::OfflineNode { .. })).map(|(at, _)| at).collect();
    let calls = offline.iter().map(|&at| -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let result = run(world, &actions[at], &BTreeSet::new()).await;
            logged(world, &actions[at], result, &mut BTreeSet::new())
        })
    });
    for (at, outcome) in offline.iter().zip(join_all(calls.collect()).await) {
        outcomes[*at] = Some(outcome);
    }
    let bound = world.config.aws.max_parallel_calls.max(1);
    let subnets = |env: &str| world.config.fleet.envs.get(env).map_or(1, |e| e.subnets.len());
    let envs = env_calls(actions, subnets).into_values().map(|sequences| -> BoxFuture<'_, Vec<(usize, Outcome)>> {
        Box::pin(act_env(world, actions, sequences, bound))
    });
    for (at, outcome) in join_all(envs.collect()).await.into_iter().flatten() {
        outcomes[at] = Some(outcome);
    }
    let mut acted = Acted::default();
    for (action, outcome) in actions.iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        if let Some(counter) = outcome.counter {
            acted.stats.add(counter, 1);
            match action {
                Action::Create { replacement_for: Some(_), .. } => acted.stats.add(Counter::ReplacementsLaunched, 1),
                Action::Create { warm: true, .. } => acted.stats.add(Counter::WarmPoolCreated, 1),
                Action::Create { spare: true, .. } => acted.stats.add(Counter::SpareCreated, 1),
                Action::Start { spare: true, .. } => acted.stats.add(Counter::SpareStarted, 1),
                Action::Stop { warm: true, .. } => acted.stats.add(Counter::WarmPoolStopped, 1),
                _ => {}
            }
        }
        if outcome.failed {
            acted.stats.add(Counter::ActionFailed, 1);
            if let Action::MarkInterrupted { event, .. } = action {
                acted.unmarked_events.push(event.clone());
            }
        }
        if action.env().is_some() {
            let job_key = match action {
                Action::Start { job_key, .. } | Action::Create { job_key, .. } => Some(job_key.clone()),
                _ => None,
            };
            acted.records.push(ActionRecord {
                pass,
                time: outcome.time,
                env: action.env().map(str::to_string),
                kind: action.kind(),
                job_key,
                instance_id: outcome.instance_id,
                text: outcome.text,
                outcome: outcome.result,
            });
        }
    }
    acted
}

/// One env's call sequences, side by side, at most `bound` calls under way.
async fn act_env(world: &World, actions: &[Action], sequences: Vec<Sequence>, bound: usize) -> Vec<(usize, Outcome)> {
    let permits = Semaphore::new(bound);
    let permits = &permits;
    let sequences = sequences.into_iter().map(|stages| -> BoxFuture<'_, Vec<(usize, Outcome)>> {
        Box::pin(async move {
            // Instances whose preparatory action failed: their follow-up is skipped.
            let mut failed = BTreeSet::new();
            let mut done = Vec::new();
            for stage in stages {
                let before = &failed;
                let calls = stage.into_iter().map(|call| -> BoxFuture<'_, Vec<(usize, Outcome)>> {
                    Box::pin(async move {
                        // Never closed, so acquiring cannot fail.
                        let _permit = permits.acquire().await.ok();
                        run_call(world, actions, call, before).await
                    })
                });
                let outcomes: Vec<(usize, Outcome)> = join_all(calls.collect()).await.into_iter().flatten().collect();
                for (at, outcome) in &outcomes {
                    if let (true, Some(id)) = (outcome.failed, actions[*at].instance_id()) {
                        failed.insert(id.to_string());
                    }
                }
                done.extend(outcomes);
            }
            done
        })
    });
    join_all(sequences.collect()).await.into_iter().flatten().collect()
}

/// Carries out one call's actions; each one's outcome.
async fn run_call(world: &World, actions: &[Action], call: Call, failed: &BTreeSet<String>) -> Vec<(usize, Outcome)> {
    let mut scratch = BTreeSet::new();
    match call {
        Call::One(at) => {
            let result = run(world, &actions[at], failed).await;
            vec![(at, logged(world, &actions[at], result, &mut scratch))]
        }
        Call::List(kind, ats) => {
            let results = run_list(world, actions, kind, &ats, failed).await;
            ats.into_iter().zip(results).map(|(at, r)| (at, logged(world, &actions[at], r, &mut scratch))).collect()
        }
        Call::Launch { subnet, creates } => {
            let results = launch(world, actions, subnet, &creates).await;
            creates.into_iter().zip(results).map(|(at, r)| (at, logged(world, &actions[at], r, &mut scratch))).collect()
        }
    }
}

/// Logs what came of one action as soon as it is known.
fn logged(world: &World, action: &Action, result: Result<Done, ActError>, failed: &mut BTreeSet<String>) -> Outcome {
    let mut instance_id = action.instance_id().map(str::to_string);
    let (text, result, counter, is_failure) = match result {
        Ok(Done::Acted(counter, id)) => {
            let text = format!("{action}{}", id.as_ref().map(|id| format!(" → {id}")).unwrap_or_default());
            tracing::info!("{text}");
            instance_id = instance_id.or(id);
            (text, Ok(()), counter, false)
        }
        Ok(Done::Skipped(why)) => {
            tracing::warn!("skipped: {action}: {why}");
            (action.to_string(), Err(format!("skipped: {why}")), None, false)
        }
        Err(e) => {
            tracing::error!("failed: {action}: {e}");
            if let Some(id) = action.instance_id() {
                failed.insert(id.to_string());
            }
            (action.to_string(), Err(e.to_string()), None, true)
        }
    };
    Outcome { text, instance_id, result, counter, failed: is_failure, time: world.clock.now() }
}

/// Awaits every future, polling them together (they borrow the world, so
/// they cannot be spawned); their outputs in the order given.
pub(crate) async fn join_all<T>(futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut pending: Vec<Option<BoxFuture<'_, T>>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Why one action failed.
#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    /// A marker could not be written or removed.
    #[error(transparent)]
    Marker(#[from] std::io::Error),
    #[error("unknown env {0}")]
    UnknownEnv(String),
    #[error("no AMI for env {0} in --ami_ids")]
    NoAmi(String),
    /// Every subnet was short of the offering lately: no call was made.
    #[error("every subnet was short of it lately")]
    AllShort,
    /// The one call of several actions failed (the error is the first's).
    #[error("{0}")]
    Batch(String),
    #[error(transparent)]
    Jenkins(#[from] crate::jenkins::CliError),
}

enum Done {
    /// Done; the counter it moves, and the instance it made.
    Acted(Option<Counter>, Option<String>),
    Skipped(&'static str),
}

fn client<'w>(world: &'w World, env: &str) -> Result<&'w dyn Ec2, ActError> {
    world.ec2.get(env).map(|c| c.as_ref()).ok_or_else(|| ActError::UnknownEnv(env.to_string()))
}

async fn run(world: &World, action: &Action, failed: &BTreeSet<String>) -> Result<Done, ActError> {
    let dir = &world.workdir;
    match action {
        Action::Start { env, .. } | Action::Stop { env, .. } | Action::Terminate { env, .. } => {
            let kind = match action {
                Action::Start { .. } => ListKind::Start,
                Action::Stop { .. } => ListKind::Stop,
                _ => ListKind::Terminate,
            };
            let ids = match action.instance_id() {
                Some(id) if !(kind == ListKind::Terminate && failed.contains(id)) => vec![id.to_string()],
                _ => return Ok(Done::Skipped("its volumes could not be set to delete on termination")),
            };
            call_list(client(world, env)?, kind, &ids).await?;
            mark_warmed(world, action).await;
            finish_listed(world, action)
        }
        Action::Create { env, client_token, replaces, .. } => {
            if replaces.as_ref().is_some_and(|id| failed.contains(id)) {
                return Ok(Done::Skipped("the make-room termination failed, the cap would be exceeded"));
            }
            let subnets = world.config.fleet.envs.get(env).map_or(1, |e| e.subnets.len());
            let mut results = launch_creates(world, &[action], subnet_index(client_token, subnets)).await;
            results.pop().unwrap_or(Ok(Done::Skipped("nothing to launch")))
        }
        Action::SetDeleteOnTermination { env, instance_id, devices } => {
            client(world, env)?.set_delete_on_termination(instance_id, devices).await?;
            Ok(Done::Acted(None, None))
        }
        Action::TagMaster { env, instance_id, master } => {
            client(world, env)?.tag(instance_id, MASTER_TAG, master).await?;
            Ok(Done::Acted(None, None))
        }
        Action::RemoveWorkingMarker { job_key, .. } => {
            markers::remove(dir, &markers::working_file(job_key))?;
            Ok(Done::Acted(None, None))
        }
        Action::RemoveStartMarker { file_name } | Action::ForgetInterruption { file_name } => {
            markers::remove(dir, file_name)?;
            Ok(Done::Acted(None, None))
        }
        Action::OfflineNode { node, reason, .. } => {
            let words = ["offline-node", node, "-m", reason].map(str::to_string).to_vec();
            crate::world::run_cli(&world.jenkins, words, Vec::new()).await?;
            Ok(Done::Acted(None, None))
        }
        Action::MarkInterrupted { env, instance_id, kind, event } => {
            markers::write_interrupted(dir, env, instance_id, *kind, event)?;
            Ok(Done::Acted(None, None))
        }
    }
}

async fn call_list(client: &dyn Ec2, kind: ListKind, ids: &[String]) -> Result<(), Ec2Error> {
    match kind {
        ListKind::Start => client.start(ids).await,
        ListKind::Stop => client.stop(ids).await,
        ListKind::Terminate => client.terminate(ids).await,
    }
}

/// What follows a start, stop or termination EC2 accepted.
fn finish_listed(world: &World, action: &Action) -> Result<Done, ActError> {
    match action {
        Action::Start { env, instance_id, label, job_key, spare, .. } => {
            markers::write_start(&world.workdir, env, instance_id, label, None)?;
            // A spare waits for no queue item: no working marker.
            if !spare {
                markers::write_working(&world.workdir, job_key)?;
            }
            Ok(Done::Acted(Some(Counter::InstancesStarted), None))
        }
        Action::Stop { .. } => Ok(Done::Acted(Some(Counter::InstancesStopped), None)),
        _ => Ok(Done::Acted(Some(Counter::InstancesTerminated), None)),
    }
}

/// Starts, stops or terminates the instances of `ats` (one env) in one
/// call; if EC2 refuses the list because of one instance, one call each.
async fn run_list(
    world: &World,
    actions: &[Action],
    kind: ListKind,
    ats: &[usize],
    failed: &BTreeSet<String>,
) -> Vec<Result<Done, ActError>> {
    let mut results: Vec<Option<Result<Done, ActError>>> = ats.iter().map(|_| None).collect();
    let mut go = Vec::new();
    for (n, &at) in ats.iter().enumerate() {
        let id = actions[at].instance_id().unwrap_or_default();
        // The planner sets volumes to go first; a failure there would
        // leave the disks billing after the instance is gone.
        if kind == ListKind::Terminate && failed.contains(id) {
            results[n] = Some(Ok(Done::Skipped("its volumes could not be set to delete on termination")));
        } else {
            go.push((n, id.to_string()));
        }
    }
    let env = actions[ats[0]].env().unwrap_or_default();
    let ids: Vec<String> = go.iter().map(|(_, id)| id.clone()).collect();
    let answer = match client(world, env) {
        Ok(client) if !ids.is_empty() => Some((client, call_list(client, kind, &ids).await)),
        Ok(_) => None,
        Err(e) => {
            let message = e.to_string();
            for (n, _) in &go {
                results[*n] = Some(Err(ActError::Batch(message.clone())));
            }
            None
        }
    };
    match answer {
        Some((_, Ok(()))) => {
            for (n, _) in &go {
                results[*n] = Some(finish_listed(world, &actions[ats[*n]]));
            }
        }
        Some((client, Err(e))) if ids.len() > 1 && e.may_be_about_one_instance() => {
            tracing::warn!("{env}: {e}; one call per instance");
            for (n, id) in &go {
                let result = match call_list(client, kind, std::slice::from_ref(id)).await {
                    Ok(()) => finish_listed(world, &actions[ats[*n]]),
                    Err(e) => Err(e.into()),
                };
                results[*n] = Some(result);
            }
        }
        Some((_, Err(e))) => {
            for (n, _) in &go {
                results[*n] = Some(Err(e.clone().into()));
            }
        }
        None => {}
    }
    let results: Vec<Result<Done, ActError>> =
        results.into_iter().map(|r| r.unwrap_or(Ok(Done::Skipped("not called")))).collect();
    for (result, &at) in results.iter().zip(ats) {
        if matches!(result, Ok(Done::Acted(..))) {
            mark_warmed(world, &actions[at]).await;
        }
    }
    results
}

/// A warm-pool agent EC2 accepted to stop — stopped by the pool, or by the
/// idle policy after it ran builds — is an agent like any other from now
/// on: tagged so, its idle time is the usual policy's when a job starts it.
/// So is one EC2 accepted to start without that tag (its stop's tag failed,
/// or someone else stopped it): being stopped, it is set up.
/// A failed tag is only logged: the stop or start is done; the planner
/// tells a started agent by its start marker, and the worst that follows
/// is that it is stopped at once again after its next job.
async fn mark_warmed(world: &World, action: &Action) {
    let (Action::Stop { env, instance_id, tag_warmed: true, .. }
    | Action::Start { env, instance_id, tag_warmed: true, .. }) = action
    else {
        return;
    };
    let tagged = match client(world, env) {
        Ok(client) => client.tag(instance_id, WARMED_TAG, "true").await.map_err(ActError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = tagged {
        let done = if matches!(action, Action::Start { .. }) { "started" } else { "stopped" };
        tracing::warn!("{env}: {done} warm-pool agent {instance_id} could not be tagged {WARMED_TAG}: {e}");
    }
}

/// Launches the creates of `ats` (one launch spec) in one RunInstances.
async fn launch(world: &World, actions: &[Action], subnet: usize, ats: &[usize]) -> Vec<Result<Done, ActError>> {
    let creates: Vec<&Action> = ats.iter().map(|&at| &actions[at]).collect();
    launch_creates(world, &creates, subnet).await
}

/// One RunInstances for `creates` (same env and launch spec) in the env's
/// `subnet`: EC2 may launch fewer; the first creates in plan order get
/// the instances, the rest nothing (planned again next pass).
async fn launch_creates(world: &World, creates: &[&Action], subnet: usize) -> Vec<Result<Done, ActError>> {
    match launch_ids(world, creates, subnet).await {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            creates
                .iter()
                .map(|create| match (create, ids.next()) {
                    (Action::Create { env, label, job_key, replacement_for, warm, spare, .. }, Some(id)) => {
                        let pool = warm.then_some(label.raw.as_str());
                        markers::write_start(&world.workdir, env, &id, &label.raw, pool)?;
                        // A replacement, a warm-pool agent or a spare waits
                        // for no queue item: no working marker.
                        if replacement_for.is_none() && !warm && !spare {
                            markers::write_working(&world.workdir, job_key)?;
                        }
                        Ok(Done::Acted(Some(Counter::InstancesCreated), Some(id)))
                    }
                    _ => Ok(Done::Skipped("EC2 launched fewer instances than asked; planned again next pass")),
                })
                .collect()
        }
        // Nothing asked of EC2: the items wait for a subnet with room.
        Err(ActError::AllShort) => {
            creates.iter().map(|_| Ok(Done::Skipped("every subnet was short of it lately; it waits"))).collect()
        }
        Err(e) => {
            let message = e.to_string();
            let mut first = Some(e);
            // The error itself for the first, its text for the rest.
            creates
                .iter()
                .map(|_| match first.take() {
                    Some(e) => Err(e),
                    None => Err(ActError::Batch(message.clone())),
                })
                .collect()
        }
    }
}

async fn launch_ids(world: &World, creates: &[&Action], subnet: usize) -> Result<Vec<String>, ActError> {
    let Some(Action::Create { env, label, on_demand_fallback, warm, .. }) = creates.first() else {
        return Ok(Vec::new());
    };
    let tokens: Vec<&str> = creates
        .iter()
        .filter_map(|c| match c {
            Action::Create { client_token, .. } => Some(client_token.as_str()),
            _ => None,
        })
        .collect();
    let env_config = world.config.fleet.envs.get(env).ok_or_else(|| ActError::UnknownEnv(env.clone()))?;
    let mut spec = launch_spec(world, env_config, label, &launch_token(&tokens), subnet)?;
    if *warm {
        // Stopped once set up (plan::warm), and told apart in the console.
        spec.tags.push((WARM_TAG.to_string(), label.raw.clone()));
    }
    let count = i32::try_from(creates.len()).unwrap_or(i32::MAX);
    let client = client(world, env)?;
    match launch_in_subnets(world, client, env_config, &spec, subnet, count).await {
        // Every subnet is short of spot: only now does on-demand stand in.
        Err(Shortfall::Short(e)) if *on_demand_fallback => {
            let why = e.as_ref().map_or_else(|| "every subnet recently short".to_string(), ToString::to_string);
            tracing::warn!("{env}: no spot capacity for {} ({why}); launching on-demand", label.instance_type);
            spec.spot_price = None;
            spec.tags.retain(|(k, _)| k != "is_spot");
            spec.tags.push(("is_spot".into(), "false".into()));
            // A distinct token: the spot call's token is spent.
            spec.client_token = format!("{}-od", spec.client_token);
            Ok(launch_in_subnets(world, client, env_config, &spec, subnet, count).await?)
        }
        other => Ok(other?),
    }
}

/// Why a launch into an env's subnets launched nothing.
#[derive(Debug)]
enum Shortfall {
    /// EC2 has no room for it in any subnet (each refused it now, or lately
    /// and is skipped); EC2's last answer, if a call was made.
    Short(Option<Ec2Error>),
    /// As `Short`, but in some subnet the spot price is over the bid: the
    /// bid is a ceiling, so `--spot_fallback` does not pay around it.
    OverBid(Option<Ec2Error>),
    /// Any other failure: the other subnets are not tried.
    Failed(Ec2Error),
}

impl From<Shortfall> for ActError {
    fn from(shortfall: Shortfall) -> ActError {
        match shortfall {
            Shortfall::Short(Some(e)) | Shortfall::OverBid(Some(e)) | Shortfall::Failed(e) => ActError::Ec2(e),
            Shortfall::Short(None) | Shortfall::OverBid(None) => ActError::AllShort,
        }
    }
}

/// One RunInstances of `spec` in the env's subnet `first`; refused there
/// for want of capacity or over the spot bid, one in each other subnet in
/// turn (another AZ may have room, or a lower spot price), skipping the
/// offerings short lately. A shortage is remembered for the next passes.
async fn launch_in_subnets(
    world: &World,
    client: &dyn Ec2,
    env: &EnvConfig,
    spec: &LaunchSpec,
    first: usize,
    count: i32,
) -> Result<Vec<String>, Shortfall> {
    let spot = spec.spot_price.is_some();
    let account = Offering::account(&env.name, spot);
    if let Some(short) = world.shortages.short(&account) {
        tracing::debug!(
            "{}: launch skipped: {account} was refused, tried again in {} s",
            env.name,
            short.left.as_secs()
        );
        return Err(Shortfall::Short(None));
    }
    let subnets = env.subnets.len().max(1);
    let mut last = None;
    let mut over_bid = false;
    for n in 0..subnets {
        let at = (first + n) % subnets;
        let Some(subnet) = env.subnets.get(at) else { continue };
        let offering = Offering::in_subnet(&env.name, &spec.instance_type, &subnet.id, &subnet.az, spot);
        if let Some(short) = world.shortages.short(&offering) {
            over_bid |= short.why == Refusal::OverBid;
            let left = short.left.as_secs();
            tracing::debug!("{}: subnet skipped: {offering} was short, tried again in {left} s", env.name);
            continue;
        }
        let mut attempt = spec.clone();
        attempt.subnet = subnet.id.clone();
        if n > 0 {
            attempt.client_token = subnet_token(&spec.client_token, &subnet.id);
        }
        match client.run_instances(&attempt, count).await {
            Ok(ids) => return Ok(ids),
            Err(e) if e.is_short_in_subnet() || (offering.spot && e.is_over_bid()) => {
                // Remembered (and saved) before the next subnet is tried:
                // see `shortage` on why the token's retries must skip it.
                let why = if e.is_over_bid() { Refusal::OverBid } else { Refusal::NoRoom };
                over_bid |= why == Refusal::OverBid;
                let held = world.shortages.remember(offering.clone(), why, world.clock.now(), &world.workdir);
                tracing::warn!("{}: {offering} is short ({e}); skipped for the next {} s", env.name, held.as_secs());
                last = Some(e);
            }
            // Short everywhere at once: no other subnet or type helps.
            Err(e) if e.is_account_limit() => {
                let held =
                    world.shortages.remember(account.clone(), Refusal::NoRoom, world.clock.now(), &world.workdir);
                tracing::warn!("{}: {account} is refused ({e}); skipped for the next {} s", env.name, held.as_secs());
                return Err(if over_bid { Shortfall::OverBid(Some(e)) } else { Shortfall::Short(Some(e)) });
            }
            Err(e) => return Err(Shortfall::Failed(e)),
        }
    }
    Err(if over_bid { Shortfall::OverBid(last) } else { Shortfall::Short(last) })
}

/// The launch of agents for `label` (SPEC A5 step 2, tagged at launch) in
/// the env's subnet number `subnet` (see [`subnet_index`]).
fn launch_spec(
    world: &World,
    env: &EnvConfig,
    label: &Label,
    client_token: &str,
    subnet: usize,
) -> Result<LaunchSpec, ActError> {
    let config = &world.config.fleet;
    let ami = env.ami.clone().ok_or_else(|| ActError::NoAmi(env.name.clone()))?;
    let subnet = &env.subnets[subnet % env.subnets.len()];
    let slave_data = json!({
        "num_of_executors": label.pricing.executors(),
        "environment": "infra",
        "slave_labels": label.raw,
        "description": "Created by Swarm",
        "jenkins_url": env.jenkins_url,
    });
    let tags = [
        ("Name", config.slave_name.clone()),
        ("slave_data", slave_data.to_string()),
        ("owner", config.owner_email.clone()),
        ("environment", "infra".to_string()),
        ("role", config.slave_name.clone()),
        ("is_spot", label.pricing.is_spot().to_string()),
        ("is_asg", "false".to_string()),
        // Whose agent this is: the only instances this manager acts on.
        (MASTER_TAG, env.jenkins_url.clone()),
        // The original's value, which the accounts' JumpCloud agents read.
        ("jumpcloud_tags", "admin,superadmin".to_string()),
    ];
    Ok(LaunchSpec {
        ami,
        instance_type: label.instance_type.clone(),
        subnet: subnet.id.clone(),
        security_group: env.agent_sg.clone(),
        instance_profile_arn: env.instance_profile_arn(),
        key_name: KEY_NAME.to_string(),
        spot_price: label.pricing.is_spot().then(|| config.max_spot_price.clone()),
        tags: tags.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        client_token: client_token.to_string(),
        root_volume_gb: ROOT_VOLUME_GB,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::aws::ec2::Ec2ErrorKind;
    use crate::fake::{self, agent, Setup, Times};
    use crate::model::{Instance, InstanceState, Pricing};
    use crate::plan::TerminateReason;

    fn setup(instances: Vec<Instance>) -> Setup {
        let s = fake::setup(fake::config(&["dev"]));
        for i in instances {
            s.cloud.add("dev", i);
        }
        s
    }

    fn stopped(id: &str) -> Instance {
        agent("dev", id, InstanceState::Stopped, "dev", SystemTime::now())
    }

    fn set_volumes(id: &str) -> Action {
        Action::SetDeleteOnTermination { env: "dev".into(), instance_id: id.into(), devices: vec!["/dev/xvda".into()] }
    }

    fn terminate(id: &str) -> Action {
        Action::Terminate {
            env: "dev".into(),
            instance_id: id.into(),
            why: TerminateReason::OldAmi { node: None, ami: "ami-old".into() },
        }
    }

    fn create(label: &str, pricing: Pricing, replaces: Option<&str>, fallback: bool) -> Action {
        Action::Create {
            env: "dev".into(),
            label: Label { raw: label.into(), env: "dev".into(), pricing, instance_type: "t2.small".into() },
            job_key: format!("job-{label}___x"),
            client_token: format!("token-{label}"),
            replaces: replaces.map(str::to_string),
            on_demand_fallback: fallback,
            replacement_for: None,
            warm: false,
            spare: false,
        }
    }

    #[tokio::test]
    async fn a_warm_pool_launch_is_tagged_and_waits_for_no_queue_item() {
        let s = setup(vec![]);
        let mut warm = create("dev", Pricing::OnDemand, None, false);
        if let Action::Create { job_key, warm: w, .. } = &mut warm {
            *job_key = "warm-pool-dev-1".into();
            *w = true;
        }
        let plain = create("dev", Pricing::OnDemand, None, false);
        let acted = act(&s.world, &[warm, plain], 1).await;
        assert_eq!(s.cloud.count("RunInstances"), 2, "differently tagged: two launches");
        let launched = s.cloud.instances("dev");
        let tags: Vec<Option<&str>> = launched.iter().map(|i| i.warm.as_deref()).collect();
        assert_eq!(tags, [Some("dev"), None]);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 2);
        assert_eq!(acted.stats.get(Counter::WarmPoolCreated), 1);
        assert!(!s.world.workdir.join(markers::working_file("warm-pool-dev-1")).exists());
        assert!(s.world.workdir.join(markers::working_file("job-dev___x")).exists());
        assert!(s.world.workdir.join(format!("dev__{}.start_instance", launched[0].id)).exists());
    }

    #[tokio::test]
    async fn a_spare_start_or_create_waits_for_no_queue_item_and_is_counted() {
        let s = setup(vec![stopped("i-1")]);
        let start = Action::Start {
            env: "dev".into(),
            instance_id: "i-1".into(),
            label: "dev".into(),
            job_key: "spare-dev-1".into(),
            why: "spare: 0 of 2 idle executors ready; one of 1 stopped agents".into(),
            spare: true,
            tag_warmed: false,
        };
        let mut create = create("dev", Pricing::OnDemand, None, false);
        if let Action::Create { job_key, spare, .. } = &mut create {
            *job_key = "spare-dev-2".into();
            *spare = true;
        }
        let acted = act(&s.world, &[start, create], 1).await;
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().state, InstanceState::Running);
        assert_eq!((acted.stats.get(Counter::InstancesStarted), acted.stats.get(Counter::SpareStarted)), (1, 1));
        assert_eq!((acted.stats.get(Counter::InstancesCreated), acted.stats.get(Counter::SpareCreated)), (1, 1));
        let launched = s.cloud.instances("dev").into_iter().find(|i| i.id != "i-1").unwrap();
        assert_eq!(launched.warm, None, "a spare is no pool agent: never stopped once set up");
        for key in ["spare-dev-1", "spare-dev-2"] {
            assert!(!s.world.workdir.join(markers::working_file(key)).exists(), "{key}");
        }
        assert!(s.world.workdir.join(markers::start_file("dev", "i-1")).exists());
        assert!(s.world.workdir.join(markers::start_file("dev", &launched.id)).exists());
    }

    #[tokio::test]
    async fn a_stopped_warm_pool_agent_is_tagged_as_stopped_once_whoever_stops_it() {
        let pool_agent = |id: &str| {
            let mut i = agent("dev", id, InstanceState::Running, "dev", SystemTime::now());
            i.warm = Some("dev".into());
            i
        };
        let plain = agent("dev", "i-3", InstanceState::Running, "dev", SystemTime::now());
        let s = setup(vec![pool_agent("i-1"), pool_agent("i-2"), plain]);
        let stop = |id: &str, warm: bool, tag_warmed: bool| Action::Stop {
            env: "dev".into(),
            instance_id: id.into(),
            node: format!("dev-{id}"),
            warm,
            tag_warmed,
        };
        // The pool's stop; the idle policy's stop of a pool agent that ran
        // builds; a plain agent's stop.
        let stops = [stop("i-1", true, true), stop("i-2", false, true), stop("i-3", false, false)];
        let acted = act(&s.world, &stops, 1).await;
        assert_eq!(s.cloud.count("StopInstances"), 1);
        assert_eq!(s.cloud.count("CreateTags"), 2, "both pool agents, not the plain one");
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().warm, None);
        assert_eq!(s.cloud.instance("dev", "i-2").unwrap().warm, None, "no longer a fresh pool agent");
        assert_eq!(acted.stats.get(Counter::InstancesStopped), 3);
        assert_eq!(acted.stats.get(Counter::WarmPoolStopped), 1, "only the pool's own stop");
        // A failed tag fails nothing: the stop is done.
        let s = setup(vec![pool_agent("i-1")]);
        s.cloud.fail(None, "CreateTags", Times::Once, Ec2ErrorKind::Other);
        let acted = act(&s.world, &[stop("i-1", true, true)], 1).await;
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().state, InstanceState::Stopped);
        assert_eq!((acted.stats.get(Counter::WarmPoolStopped), acted.stats.get(Counter::ActionFailed)), (1, 0));
    }

    #[tokio::test]
    async fn a_started_pool_agent_never_tagged_warmed_is_tagged_so_beside_its_start() {
        let mut never_tagged = stopped("i-1");
        never_tagged.warm = Some("dev".into());
        let start = |id: &str, tag_warmed: bool| Action::Start {
            env: "dev".into(),
            instance_id: id.into(),
            label: "dev".into(),
            job_key: format!("spare-dev-{id}"),
            why: "spare".into(),
            spare: true,
            tag_warmed,
        };
        let s = setup(vec![never_tagged.clone(), stopped("i-2")]);
        act(&s.world, &[start("i-1", true), start("i-2", false)], 1).await;
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().state, InstanceState::Running);
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().warm, None, "tagged warmed: no pool agent booting");
        assert_eq!(s.cloud.count("CreateTags"), 1, "only the pool agent is tagged");
        // A failed tag fails nothing: the start is done.
        let s = setup(vec![never_tagged]);
        s.cloud.fail(None, "CreateTags", Times::Once, Ec2ErrorKind::Other);
        let acted = act(&s.world, &[start("i-1", true)], 1).await;
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().state, InstanceState::Running);
        assert_eq!((acted.stats.get(Counter::InstancesStarted), acted.stats.get(Counter::ActionFailed)), (1, 0));
    }

    #[tokio::test]
    async fn a_warm_pool_create_marks_its_start_marker_with_the_pool() {
        let s = setup(vec![]);
        let mut pool = create("dev", Pricing::OnDemand, None, false);
        if let Action::Create { warm, .. } = &mut pool {
            *warm = true;
        }
        act(&s.world, &[pool, create("dev", Pricing::OnDemand, None, false)], 1).await;
        let m = markers::read_markers(&s.world.workdir, SystemTime::now()).unwrap();
        let mut pools: Vec<Option<&str>> = m.started.iter().map(|m| m.warm.as_deref()).collect();
        pools.sort_unstable();
        assert_eq!(pools, [None, Some("dev")]);
    }

    #[tokio::test]
    async fn volumes_are_set_to_go_before_the_instance_is_terminated() {
        let mut old = stopped("i-1");
        old.volumes[0].delete_on_termination = false;
        let s = setup(vec![old]);
        let acted = act(&s.world, &[set_volumes("i-1"), terminate("i-1")], 1).await;
        assert_eq!(
            s.cloud.mutations(),
            [("ModifyInstanceAttribute", "i-1".to_string()), ("TerminateInstances", "i-1".to_string())]
        );
        let i = s.cloud.instance("dev", "i-1").unwrap();
        assert!(i.volumes[0].delete_on_termination);
        assert_eq!(i.state, InstanceState::Terminated);
        assert_eq!(acted.stats.get(Counter::InstancesTerminated), 1);
        assert_eq!(acted.records.len(), 2);
        assert!(acted.records.iter().all(|r| r.outcome.is_ok()));
    }

    #[tokio::test]
    async fn a_terminate_whose_volumes_could_not_be_set_is_skipped() {
        let s = setup(vec![stopped("i-1")]);
        s.cloud.fail(None, "ModifyInstanceAttribute", Times::Once, Ec2ErrorKind::Other);
        let acted = act(&s.world, &[set_volumes("i-1"), terminate("i-1")], 1).await;
        assert_eq!(s.cloud.count("TerminateInstances"), 0, "the disks would outlive the instance");
        assert_eq!(s.cloud.instance("dev", "i-1").unwrap().state, InstanceState::Stopped);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        assert_eq!(acted.stats.get(Counter::InstancesTerminated), 0);
        let outcome = acted.records[1].outcome.as_ref().unwrap_err();
        assert!(outcome.starts_with("skipped:"), "{outcome}");
    }

    #[tokio::test]
    async fn a_failing_action_is_counted_and_the_rest_still_run() {
        let running = agent("dev", "i-1", InstanceState::Running, "dev", SystemTime::now());
        let s = setup(vec![running, stopped("i-2")]);
        s.cloud.fail(None, "StopInstances", Times::Always, Ec2ErrorKind::Throttled);
        let actions = [
            Action::Stop {
                env: "dev".into(),
                instance_id: "i-1".into(),
                node: "dev-10.0.0.1".into(),
                warm: false,
                tag_warmed: false,
            },
            Action::Start {
                env: "dev".into(),
                instance_id: "i-2".into(),
                label: "dev".into(),
                job_key: "job-a___x".into(),
                why: "last used".into(),
                spare: false,
                tag_warmed: false,
            },
            create("dev", Pricing::OnDemand, None, false),
        ];
        let acted = act(&s.world, &actions, 1).await;
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        assert_eq!(acted.stats.get(Counter::InstancesStarted), 1);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);
        assert_eq!(s.cloud.active("dev"), 3);
        let failed = acted.records[0].outcome.as_ref().unwrap_err();
        assert!(failed.contains("RequestLimitExceeded"), "{failed}");
        // What the start and the create did is marked for the next pass.
        let dir = &s.world.workdir;
        assert!(dir.join(markers::working_file("job-a___x")).exists());
        assert!(dir.join(markers::working_file("job-dev___x")).exists());
        assert!(dir.join(markers::start_file("dev", "i-2")).exists());
    }

    #[tokio::test]
    async fn a_create_whose_make_room_termination_failed_is_skipped() {
        let s = setup(vec![stopped("i-1")]);
        s.cloud.fail(None, "TerminateInstances", Times::Once, Ec2ErrorKind::Other);
        let acted = act(&s.world, &[terminate("i-1"), create("dev", Pricing::OnDemand, Some("i-1"), false)], 1).await;
        assert_eq!(s.cloud.count("RunInstances"), 0, "the cap would be exceeded");
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        assert!(!s.world.workdir.join(markers::working_file("job-dev___x")).exists(), "the item is tried again");
    }

    #[tokio::test]
    async fn no_spot_capacity_falls_back_to_on_demand_when_asked() {
        let s = setup(vec![]);
        s.cloud.fail(None, "RunInstances", Times::Once, Ec2ErrorKind::CapacityShortage);
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        let launches: Vec<String> =
            s.cloud.calls().into_iter().filter(|c| c.op == "RunInstances").map(|c| c.target).collect();
        assert_eq!(launches, ["token-dev_spot", "token-dev_spot-od"], "a spent token is not reused");
        let agents = s.cloud.instances("dev");
        assert_eq!(agents.len(), 1);
        assert!(!agents[0].spot);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0);

        // Without the flag, or for another failure, no second launch.
        let s = setup(vec![]);
        s.cloud.fail(None, "RunInstances", Times::Once, Ec2ErrorKind::CapacityShortage);
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, false)], 1).await;
        assert_eq!((s.cloud.count("RunInstances"), acted.stats.get(Counter::ActionFailed)), (1, 1));
        let s = setup(vec![]);
        s.cloud.fail(None, "RunInstances", Times::Once, Ec2ErrorKind::Throttled);
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        assert_eq!((s.cloud.count("RunInstances"), acted.stats.get(Counter::ActionFailed)), (1, 1));
    }

    /// One env `dev` with the subnets `subnet-a`, `subnet-b`, `subnet-c`
    /// (AZs a, b, c).
    fn three_subnets() -> Setup {
        let mut config = fake::config(&["dev"]);
        let env = config.fleet.envs.get_mut("dev").unwrap();
        env.subnets = ["a", "b", "c"]
            .map(|az| crate::config::Subnet { id: format!("subnet-{az}"), az: format!("us-east-2{az}") })
            .to_vec();
        fake::setup(config)
    }

    /// The env's subnets in the order a launch with `token` tries them.
    fn subnets_from(token: &str) -> Vec<String> {
        let first = subnet_index(token, 3);
        (0..3).map(|n| format!("subnet-{}", ["a", "b", "c"][(first + n) % 3])).collect()
    }

    #[tokio::test]
    async fn a_launch_refused_for_capacity_lands_in_another_subnet_in_the_same_pass() {
        let s = three_subnets();
        let order = subnets_from("token-dev_spot");
        s.cloud.short_of_room(&order[0], false);
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        let moved = subnet_token("token-dev_spot", &order[1]);
        assert_eq!(
            s.cloud.launches(),
            [("token-dev_spot".to_string(), order[0].clone()), (moved, order[1].clone())],
            "one call in the next subnet, with a token of its own"
        );
        let agents = s.cloud.instances("dev");
        assert_eq!(agents.len(), 1);
        assert!(agents[0].spot, "room elsewhere: no on-demand fallback");
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0);
        assert!(s.world.workdir.join(markers::working_file("job-dev_spot___x")).exists());
    }

    #[tokio::test]
    async fn a_moved_launch_is_repeated_with_its_token_by_a_run_that_follows_a_kill() {
        // The launch moved to the second subnet; the run is killed before
        // its marker (or the answer was lost). The next run, within the
        // token's window, finds the first subnet with room again: it must
        // still repeat the moved token, which EC2 answers with the instance
        // it launched, never launch a second one with the first token.
        let mut s = three_subnets();
        let order = subnets_from("token-dev_spot");
        s.cloud.short_of_room(&order[0], false);
        act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        std::fs::remove_file(s.world.workdir.join(markers::working_file("job-dev_spot___x"))).unwrap();
        s.cloud.has_room(&order[0]);
        s.world.shortages = crate::shortage::Shortages::load(&s.world.workdir, s.world.clock.now());
        act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        let moved = subnet_token("token-dev_spot", &order[1]);
        let launches = s.cloud.launches();
        assert_eq!(launches.len(), 3, "{launches:?}");
        assert_eq!(launches[2], (moved, order[1].clone()));
    }

    #[tokio::test]
    async fn a_batch_refused_for_capacity_moves_on_whole_to_the_next_subnet() {
        let s = three_subnets();
        // Three items the planner's spread puts in one subnet: one call.
        let actions: Vec<Action> =
            (0..30).map(|n| create_in("dev", n)).filter(|c| subnet_index(&token_of(c), 3) == 0).take(3).collect();
        let order = subnets_from(&token_of(&actions[0]));
        s.cloud.short_of_room(&order[0], false);
        let acted = act(&s.world, &actions, 1).await;
        let subnets: Vec<String> = s.cloud.launches().into_iter().map(|(_, subnet)| subnet).collect();
        assert_eq!(subnets, order[..2]);
        assert_eq!(s.cloud.active("dev"), 3);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 3);
    }

    fn token_of(create: &Action) -> String {
        match create {
            Action::Create { client_token, .. } => client_token.clone(),
            _ => unreachable!("a create"),
        }
    }

    #[tokio::test]
    async fn spot_falls_back_to_on_demand_only_when_every_subnet_is_short() {
        let s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.short_of_room(subnet, true);
        }
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        let launches = s.cloud.launches();
        assert_eq!(launches.len(), 4, "each subnet once, then on-demand: {launches:?}");
        assert_eq!(launches[3], ("token-dev_spot-od".to_string(), subnets_from("token-dev_spot")[0].clone()));
        let agents = s.cloud.instances("dev");
        assert_eq!(agents.len(), 1);
        assert!(!agents[0].spot);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);

        // Without the flag the item waits: one failure, no agent.
        let s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.short_of_room(subnet, true);
        }
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, false)], 1).await;
        assert_eq!(s.cloud.launches().len(), 3);
        assert_eq!(s.cloud.active("dev"), 0);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        assert!(!s.world.workdir.join(markers::working_file("job-dev_spot___x")).exists(), "tried again later");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_offering_is_skipped_while_held_then_tried_again() {
        let s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.short_of_room(subnet, true);
        }
        let spot = create("dev_spot", Pricing::Spot, None, false);
        act(&s.world, std::slice::from_ref(&spot), 1).await;
        assert_eq!(s.cloud.launches().len(), 3);
        let short: Vec<String> = s
            .world
            .shortages
            .current(s.world.clock.now())
            .iter()
            .map(|(o, _)| o.place.as_ref().unwrap().subnet.clone())
            .collect();
        assert_eq!(short, ["subnet-a", "subnet-b", "subnet-c"]);

        // The next pass asks EC2 nothing; the item waits, no failure.
        let acted = act(&s.world, std::slice::from_ref(&spot), 2).await;
        assert_eq!(s.cloud.launches().len(), 3, "every offering skipped");
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0);
        assert!(acted.records[0].outcome.as_ref().unwrap_err().contains("short"));
        // On-demand is another offering: not skipped.
        act(&s.world, &[create("dev", Pricing::OnDemand, None, false)], 2).await;
        assert_eq!(s.cloud.launches().len(), 4);
        assert_eq!(s.cloud.active("dev"), 1);

        // Once the shortage expires (3 min, or the end of its token window
        // if later) the first subnet is asked again.
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.has_room(subnet);
        }
        tokio::time::advance(crate::shortage::SHORTAGE_HELD_MAX).await;
        let acted = act(&s.world, std::slice::from_ref(&spot), 3).await;
        assert_eq!(s.cloud.launches()[4], ("token-dev_spot".to_string(), subnets_from("token-dev_spot")[0].clone()));
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);
        assert!(s.world.shortages.current(s.world.clock.now()).is_empty());
    }

    #[tokio::test]
    async fn a_spot_price_over_the_bid_moves_to_the_next_subnet_at_the_same_bid_and_never_on_demand() {
        let s = three_subnets();
        let order = subnets_from("token-dev_spot");
        // Spot prices are per type and AZ: the first AZ is over the bid.
        s.cloud.refuse_launches(&order[0], true, "SpotMaxPriceTooLow");
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        let subnets: Vec<String> = s.cloud.launches().into_iter().map(|(_, subnet)| subnet).collect();
        assert_eq!(subnets, order[..2]);
        let agents = s.cloud.instances("dev");
        assert_eq!(agents.len(), 1);
        assert!(agents[0].spot, "the same bid in another AZ");
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0);
        let short: Vec<String> = s
            .world
            .shortages
            .current(s.world.clock.now())
            .iter()
            .map(|(o, _)| o.place.as_ref().unwrap().subnet.clone())
            .collect();
        assert_eq!(short, [order[0].clone()], "remembered like a shortage");

        // Over the bid in every AZ: no on-demand launch pays around it,
        // in this pass nor in the next, which asks EC2 nothing.
        let s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.refuse_launches(subnet, true, "SpotMaxPriceTooLow");
        }
        let spot = create("dev_spot", Pricing::Spot, None, true);
        let acted = act(&s.world, std::slice::from_ref(&spot), 1).await;
        assert_eq!(s.cloud.launches().len(), 3, "each subnet once, no fallback");
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        act(&s.world, std::slice::from_ref(&spot), 2).await;
        assert_eq!(s.cloud.launches().len(), 3, "skipped, and still no fallback");
        assert_eq!(s.cloud.active("dev"), 0);

        // One AZ over the bid, the others short of room: still no fallback.
        let s = three_subnets();
        s.cloud.refuse_launches(&order[0], true, "SpotMaxPriceTooLow");
        s.cloud.short_of_room(&order[1], true);
        s.cloud.short_of_room(&order[2], true);
        act(&s.world, std::slice::from_ref(&spot), 1).await;
        assert_eq!(s.cloud.launches().len(), 3);
        assert_eq!(s.cloud.active("dev"), 0);
    }

    /// `create` of `label` for an item of its own, as another instance type.
    fn create_typed(label: &str, pricing: Pricing, instance_type: &str) -> Action {
        let mut create = create(label, pricing, None, false);
        if let Action::Create { label, job_key, client_token, .. } = &mut create {
            label.instance_type = instance_type.into();
            job_key.push_str(instance_type);
            client_token.push_str(instance_type);
        }
        create
    }

    fn account_shortages(world: &World) -> Vec<(String, bool)> {
        let now = world.clock.now();
        world
            .shortages
            .current(now)
            .into_iter()
            .filter(|(o, _)| o.place.is_none())
            .map(|(o, _)| (o.env, o.spot))
            .collect()
    }

    #[tokio::test]
    async fn the_accounts_spot_limit_skips_every_spot_launch_of_the_env_and_on_demand_stands_in() {
        let s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.refuse_launches(subnet, true, "MaxSpotInstanceCountExceeded");
        }
        let acted = act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 1).await;
        let launches = s.cloud.launches();
        assert_eq!(launches.len(), 2, "no other subnet asked, then on-demand: {launches:?}");
        assert_eq!(launches[1].0, "token-dev_spot-od");
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);
        assert_eq!(account_shortages(&s.world), [("dev".to_string(), true)]);

        // Meanwhile no spot launch of any type in any subnet asks EC2.
        let acted = act(&s.world, &[create_typed("dev_spot", Pricing::Spot, "c5.large")], 2).await;
        assert_eq!(s.cloud.launches().len(), 2);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0, "a skip is no failure");
        let acted = act(&s.world, &[create_typed("dev_spot", Pricing::Spot, "c5.large")], 2).await;
        assert!(acted.records[0].outcome.as_ref().unwrap_err().contains("short"));
    }

    #[tokio::test]
    async fn the_accounts_on_demand_quota_skips_every_on_demand_launch_of_the_env_for_three_minutes() {
        let s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.refuse_launches(subnet, false, "VcpuLimitExceeded");
        }
        let acted = act(&s.world, &[create("dev", Pricing::OnDemand, None, false)], 1).await;
        assert_eq!(s.cloud.launches().len(), 1, "no other subnet helps");
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        assert_eq!(account_shortages(&s.world), [("dev".to_string(), false)]);
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.has_room(subnet);
        }
        // On-demand of another type waits, asking nothing; spot is another pool.
        let acted = act(&s.world, &[create_typed("dev", Pricing::OnDemand, "c5.large")], 2).await;
        assert_eq!(s.cloud.launches().len(), 1);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0);
        act(&s.world, &[create("dev_spot", Pricing::Spot, None, true)], 2).await;
        assert_eq!(s.cloud.launches().len(), 2);
        assert_eq!(s.cloud.active("dev"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_set_back_does_not_lengthen_a_shortage() {
        let mut s = three_subnets();
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.short_of_room(subnet, true);
        }
        let spot = create("dev_spot", Pricing::Spot, None, false);
        act(&s.world, std::slice::from_ref(&spot), 1).await;
        assert_eq!(s.cloud.launches().len(), 3);
        for subnet in ["subnet-a", "subnet-b", "subnet-c"] {
            s.cloud.has_room(subnet);
        }
        // The wall clock is set back an hour (NTP, an operator) mid-run.
        let crate::world::Clock::Tokio { wall, at } = s.world.clock else { unreachable!("the fake's clock") };
        s.world.clock = crate::world::Clock::Tokio { wall: wall - Duration::from_secs(3600), at };
        tokio::time::advance(crate::shortage::SHORTAGE_HELD_MAX).await;
        let acted = act(&s.world, std::slice::from_ref(&spot), 2).await;
        assert_eq!(s.cloud.launches().len(), 4, "the longest hold on the monotonic clock, not an hour more");
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 1);
    }

    /// The `n`th on-demand create of `env`, for its own item.
    fn create_in(env: &str, n: u32) -> Action {
        Action::Create {
            env: env.into(),
            label: Label {
                raw: env.into(),
                env: env.into(),
                pricing: Pricing::OnDemand,
                instance_type: "t2.small".into(),
            },
            job_key: format!("job-{env}-{n}___x"),
            client_token: format!("token-{env}-{n}"),
            replaces: None,
            on_demand_fallback: false,
            replacement_for: None,
            warm: false,
            spare: false,
        }
    }

    #[tokio::test]
    async fn creates_of_one_label_go_out_as_one_launch_and_each_gets_its_instance() {
        let s = setup(vec![]);
        let actions: Vec<Action> = (0..5).map(|n| create_in("dev", n)).collect();
        let acted = act(&s.world, &actions, 1).await;
        let launches: Vec<String> =
            s.cloud.calls().into_iter().filter(|c| c.op == "RunInstances").map(|c| c.target).collect();
        let tokens: Vec<String> = (0..5).map(|n| format!("token-dev-{n}")).collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        assert_eq!(launches, [launch_token(&tokens)], "one call, its token from the items");
        assert_eq!(s.cloud.active("dev"), 5);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 5);
        let dir = &s.world.workdir;
        for (n, record) in acted.records.iter().enumerate() {
            let id = record.text.rsplit(' ').next().unwrap();
            assert!(id.starts_with("i-"), "{record:?}");
            assert!(dir.join(markers::start_file("dev", id)).exists());
            assert!(dir.join(markers::working_file(&format!("job-dev-{n}___x"))).exists());
        }
    }

    #[tokio::test]
    async fn a_launch_ec2_fills_only_partly_marks_only_the_items_served() {
        let s = setup(vec![]);
        s.cloud.limit_launches(2);
        let actions: Vec<Action> = (0..5).map(|n| create_in("dev", n)).collect();
        let acted = act(&s.world, &actions, 1).await;
        assert_eq!(s.cloud.count("RunInstances"), 1);
        assert_eq!(s.cloud.active("dev"), 2);
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 2);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 0, "a short fill is no failure");
        let dir = &s.world.workdir;
        let marked: Vec<bool> =
            (0..5).map(|n| dir.join(markers::working_file(&format!("job-dev-{n}___x"))).exists()).collect();
        assert_eq!(marked, [true, true, false, false, false], "the first items in plan order are served");
        let starts = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".start_instance"));
        assert_eq!(starts.count(), 2);
        assert!(acted.records[2].outcome.as_ref().unwrap_err().starts_with("skipped:"));
    }

    #[tokio::test]
    async fn a_failed_launch_fails_every_item_of_it() {
        let s = setup(vec![]);
        s.cloud.fail(None, "RunInstances", Times::Once, Ec2ErrorKind::Other);
        let actions: Vec<Action> = (0..3).map(|n| create_in("dev", n)).collect();
        let acted = act(&s.world, &actions, 1).await;
        assert_eq!(acted.stats.get(Counter::ActionFailed), 3);
        assert!(acted.records.iter().all(|r| r.outcome.as_ref().unwrap_err().contains("InternalError")));
        assert_eq!(std::fs::read_dir(&s.world.workdir).unwrap().count(), 0, "no marker: all planned again");
    }

    #[tokio::test]
    async fn stops_of_an_env_go_out_as_one_call_and_one_bad_id_does_not_block_the_others() {
        let running = |id: &str| agent("dev", id, InstanceState::Running, "dev", SystemTime::now());
        let stop = |id: &str| Action::Stop {
            env: "dev".into(),
            instance_id: id.into(),
            node: format!("dev-{id}"),
            warm: false,
            tag_warmed: false,
        };
        let s = setup(vec![running("i-1"), running("i-2"), running("i-3")]);
        let acted = act(&s.world, &[stop("i-1"), stop("i-2")], 1).await;
        assert_eq!(s.cloud.mutations(), [("StopInstances", "i-1,i-2".to_string())]);
        assert_eq!(acted.stats.get(Counter::InstancesStopped), 2);

        // i-9 is unknown: EC2 refuses the whole list; one call each then.
        let acted = act(&s.world, &[stop("i-3"), stop("i-9"), stop("i-1")], 2).await;
        assert_eq!(
            s.cloud.mutations()[1..],
            [
                ("StopInstances", "i-3,i-9,i-1".to_string()),
                ("StopInstances", "i-3".to_string()),
                ("StopInstances", "i-9".to_string()),
                ("StopInstances", "i-1".to_string()),
            ]
        );
        assert_eq!(s.cloud.instance("dev", "i-3").unwrap().state, InstanceState::Stopped);
        assert_eq!(acted.stats.get(Counter::InstancesStopped), 2);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
        assert!(acted.records[1].outcome.as_ref().unwrap_err().contains("InvalidInstanceID"));

        // Any other refusal is the whole list's: no call per instance.
        s.cloud.fail(None, "TerminateInstances", Times::Once, Ec2ErrorKind::Throttled);
        let acted = act(&s.world, &[terminate("i-1"), terminate("i-2")], 3).await;
        assert_eq!(s.cloud.count("TerminateInstances"), 1);
        assert_eq!(acted.stats.get(Counter::ActionFailed), 2);
    }

    #[tokio::test]
    async fn starts_of_an_env_go_out_as_one_call_each_item_marked() {
        let s = setup(vec![stopped("i-1"), stopped("i-2")]);
        let start = |id: &str| Action::Start {
            env: "dev".into(),
            instance_id: id.into(),
            label: "dev".into(),
            job_key: format!("job-{id}___x"),
            why: "random".into(),
            spare: false,
            tag_warmed: false,
        };
        let acted = act(&s.world, &[start("i-1"), start("i-2")], 1).await;
        assert_eq!(s.cloud.mutations(), [("StartInstances", "i-1,i-2".to_string())]);
        assert_eq!(acted.stats.get(Counter::InstancesStarted), 2);
        for id in ["i-1", "i-2"] {
            assert!(s.world.workdir.join(markers::start_file("dev", id)).exists());
            assert!(s.world.workdir.join(markers::working_file(&format!("job-{id}___x"))).exists());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_env_does_not_hold_up_another() {
        let s = fake::setup(fake::config(&["dev", "prod"]));
        s.cloud.add("prod", agent("prod", "i-1", InstanceState::Running, "prod", SystemTime::now()));
        s.cloud.delay(Some("prod"), "StopInstances", Duration::from_secs(10));
        s.cloud.delay(Some("prod"), "RunInstances", Duration::from_secs(10));
        s.cloud.delay(Some("dev"), "RunInstances", Duration::from_secs(1));
        let start = s.world.clock.now();
        // Prod's actions come first in the plan; dev's do not wait for them.
        let actions = [
            Action::Stop {
                env: "prod".into(),
                instance_id: "i-1".into(),
                node: "prod-10.0.0.1".into(),
                warm: false,
                tag_warmed: false,
            },
            create_in("prod", 1),
            create_in("dev", 1),
            create_in("dev", 2),
        ];
        let acted = act(&s.world, &actions, 1).await;
        let took = |r: &ActionRecord| r.time.duration_since(start).unwrap();
        let (prod, dev): (Vec<_>, Vec<_>) = acted.records.iter().partition(|r| r.env.as_deref() == Some("prod"));
        assert!(dev.iter().all(|r| took(r) == Duration::from_secs(1)), "{dev:?}");
        assert!(prod.iter().all(|r| took(r) == Duration::from_secs(10)), "{prod:?}");
        assert_eq!(acted.stats.get(Counter::InstancesCreated), 3);
        assert_eq!(acted.stats.get(Counter::InstancesStopped), 1);
        let envs: Vec<_> = acted.records.iter().map(|r| r.env.clone().unwrap()).collect();
        assert_eq!(envs, ["prod", "prod", "dev", "dev"], "records keep the plan's order");
    }

    #[tokio::test(start_paused = true)]
    async fn an_env_never_has_more_calls_in_flight_than_the_bound() {
        for bound in [1, 3, 20] {
            let mut s = fake::setup(fake::config(&["dev", "prod"]));
            s.world.config.aws.max_parallel_calls = bound;
            s.cloud.delay(None, "ModifyInstanceAttribute", Duration::from_secs(1));
            // Setting volumes takes one call per instance.
            let mut actions = Vec::new();
            for n in 0..10 {
                for env in ["dev", "prod"] {
                    let id = format!("i-{n}");
                    s.cloud.add(env, agent(env, &id, InstanceState::Stopped, env, SystemTime::now()));
                    let devices = vec!["/dev/xvda".into()];
                    actions.push(Action::SetDeleteOnTermination { env: env.into(), instance_id: id, devices });
                }
            }
            let start = tokio::time::Instant::now();
            let acted = act(&s.world, &actions, 1).await;
            assert!(acted.records.iter().all(|r| r.outcome.is_ok()), "{:?}", acted.records);
            for env in ["dev", "prod"] {
                assert_eq!(s.cloud.max_in_flight(env), bound.min(10), "{env}, bound {bound}");
            }
            // Rounds of `bound` one-second calls; the two envs side by side.
            let rounds = 10u64.div_ceil(bound as u64);
            assert_eq!(start.elapsed(), Duration::from_secs(rounds), "bound {bound}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dependent_steps_keep_their_order_while_the_rest_runs_alongside() {
        let mut old = stopped("i-1");
        old.volumes[0].delete_on_termination = false;
        let s = setup(vec![old, stopped("i-2")]);
        for op in ["ModifyInstanceAttribute", "TerminateInstances", "RunInstances"] {
            s.cloud.delay(None, op, Duration::from_secs(1));
        }
        let actions = [
            set_volumes("i-1"),
            terminate("i-1"),
            terminate("i-2"),
            create("dev", Pricing::OnDemand, Some("i-2"), false),
            create_in("dev", 1),
        ];
        let acted = act(&s.world, &actions, 1).await;
        assert!(acted.records.iter().all(|r| r.outcome.is_ok()), "{:?}", acted.records);
        let done = s.cloud.mutations();
        let at = |op: &str, target: &str| done.iter().position(|(o, t)| *o == op && t == target).unwrap();
        // Both terminations in one call, after the volumes, before the
        // create that replaces one of them.
        assert!(at("ModifyInstanceAttribute", "i-1") < at("TerminateInstances", "i-1,i-2"), "{done:?}");
        assert!(at("TerminateInstances", "i-1,i-2") < at("RunInstances", "token-dev"), "{done:?}");
        assert_eq!(s.cloud.max_in_flight("dev"), 2, "the other create's launch runs alongside");
        assert!(s.cloud.instance("dev", "i-1").unwrap().volumes[0].delete_on_termination);
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_waits_for_its_make_room_termination_even_when_that_is_slow() {
        let s = setup(vec![stopped("i-1")]);
        s.cloud.delay(None, "TerminateInstances", Duration::from_secs(5));
        s.cloud.fail(None, "TerminateInstances", Times::Once, Ec2ErrorKind::Other);
        let acted = act(&s.world, &[terminate("i-1"), create("dev", Pricing::OnDemand, Some("i-1"), false)], 1).await;
        assert_eq!(s.cloud.count("RunInstances"), 0, "the cap would be exceeded");
        assert_eq!(acted.stats.get(Counter::ActionFailed), 1);
    }
}
