//! Act: carry out a plan through the world's EC2 clients. Envs act in
//! parallel, each on its own: one env's slow or failing calls never hold up
//! another's. Within an env the actions form chains — the actions on one
//! instance, in the planner's order, and a create after the make-room
//! termination it depends on — and the chains run concurrently, at most
//! `--max_parallel_calls` calls in flight per env. Marker upkeep (local
//! files) runs first, in order, then every `offline-node` at once (Jenkins
//! calls, outside the EC2 bound). A failed action is logged and counted; the
//! rest goes on, except what depended on it (a create whose make-room
//! termination failed, a termination whose volumes could not be set to go
//! with it).

use std::collections::{BTreeMap, BTreeSet};
use std::task::Poll;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::aws::ec2::{Ec2Error, LaunchSpec};
use crate::config::EnvConfig;
use crate::counter::Counter;
use crate::markers;
use crate::model::{Label, MASTER_TAG};
use crate::plan::Action;
use crate::record::stats::Stats;
use crate::record::ActionRecord;
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
}

/// What one action came to, when it was done.
struct Outcome {
    text: String,
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
        outcomes[at] = Some(run_logged(world, action, &mut no_instances).await);
    }
    // Then every offline-node at once, ahead of the EC2 calls and outside
    // their bound: a warned agent's node takes builds until Jenkins hears.
    let offline: Vec<usize> =
        actions.iter().enumerate().filter(|(_, a)| matches!(a, Action::OfflineNode { .. })).map(|(at, _)| at).collect();
    let calls = offline.iter().map(|&at| -> BoxFuture<'_, Outcome> {
        Box::pin(async move { run_logged(world, &actions[at], &mut BTreeSet::new()).await })
    });
    for (at, outcome) in offline.iter().zip(join_all(calls.collect()).await) {
        outcomes[*at] = Some(outcome);
    }
    let bound = world.config.aws.max_parallel_calls.max(1);
    let envs = chains_per_env(actions)
        .into_values()
        .map(|chains| -> BoxFuture<'_, Vec<(usize, Outcome)>> { Box::pin(act_env(world, actions, chains, bound)) });
    for (at, outcome) in join_all(envs.collect()).await.into_iter().flatten() {
        outcomes[at] = Some(outcome);
    }
    let mut acted = Acted::default();
    for (action, outcome) in actions.iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        if let Some(counter) = outcome.counter {
            acted.stats.add(counter, 1);
            if matches!(action, Action::Create { replacement_for: Some(_), .. }) {
                acted.stats.add(Counter::ReplacementsLaunched, 1);
            }
        }
        if outcome.failed {
            acted.stats.add(Counter::ActionFailed, 1);
        }
        if action.env().is_some() {
            acted.records.push(ActionRecord {
                pass,
                time: outcome.time,
                env: action.env().map(str::to_string),
                kind: action.kind(),
                text: outcome.text,
                outcome: outcome.result,
            });
        }
    }
    acted
}

/// The env actions' positions in `actions`, per env, as chains that must
/// run in order: the actions on one instance (volumes set → terminate), and
/// a create after the make-room termination it `replaces`. Any other create
/// is a chain of its own.
pub(crate) fn chains_per_env(actions: &[Action]) -> BTreeMap<&str, Vec<Vec<usize>>> {
    let mut per_env: BTreeMap<&str, Vec<Vec<usize>>> = BTreeMap::new();
    let mut chain_of: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (at, action) in actions.iter().enumerate() {
        // Jenkins calls, made before every chain (see `act`).
        if matches!(action, Action::OfflineNode { .. }) {
            continue;
        }
        let Some(env) = action.env() else { continue };
        let chains = per_env.entry(env).or_default();
        let key = match action {
            Action::Create { replaces, .. } => replaces.as_deref(),
            other => other.instance_id(),
        };
        match key.and_then(|id| chain_of.get(&(env, id))) {
            Some(&chain) => chains[chain].push(at),
            None => {
                if let Some(id) = key {
                    chain_of.insert((env, id), chains.len());
                }
                chains.push(vec![at]);
            }
        }
    }
    per_env
}

/// One env's chains, concurrently, at most `bound` actions under way.
async fn act_env(world: &World, actions: &[Action], chains: Vec<Vec<usize>>, bound: usize) -> Vec<(usize, Outcome)> {
    let permits = Semaphore::new(bound);
    let permits = &permits;
    let chains = chains.into_iter().map(|chain| -> BoxFuture<'_, Vec<(usize, Outcome)>> {
        Box::pin(async move {
            // Instances whose preparatory action failed: their follow-up is skipped.
            let mut failed = BTreeSet::new();
            let mut done = Vec::with_capacity(chain.len());
            for at in chain {
                // Never closed, so acquiring cannot fail.
                let _permit = permits.acquire().await.ok();
                done.push((at, run_logged(world, &actions[at], &mut failed).await));
            }
            done
        })
    });
    join_all(chains.collect()).await.into_iter().flatten().collect()
}

/// Runs one action and logs what came of it as soon as it is known.
async fn run_logged(world: &World, action: &Action, failed: &mut BTreeSet<String>) -> Outcome {
    let (text, result, counter, is_failure) = match run(world, action, failed).await {
        Ok(Done::Acted(counter, id)) => {
            let text = format!("{action}{}", id.map(|id| format!(" → {id}")).unwrap_or_default());
            tracing::info!("{text}");
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
    Outcome { text, result, counter, failed: is_failure, time: world.clock.now() }
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
    #[error(transparent)]
    Jenkins(#[from] crate::jenkins::CliError),
}

enum Done {
    /// Done; the counter it moves, and the instance it made.
    Acted(Option<Counter>, Option<String>),
    Skipped(&'static str),
}

async fn run(world: &World, action: &Action, failed: &BTreeSet<String>) -> Result<Done, ActError> {
    let dir = &world.workdir;
    let client = |env: &str| -> Result<&dyn Ec2, ActError> {
        world.ec2.get(env).map(|c| c.as_ref()).ok_or_else(|| ActError::UnknownEnv(env.to_string()))
    };
    match action {
        Action::Start { env, instance_id, label, job_key, .. } => {
            client(env)?.start(instance_id).await?;
            markers::write_start(dir, env, instance_id, label)?;
            markers::write_working(dir, job_key)?;
            Ok(Done::Acted(Some(Counter::InstancesStarted), None))
        }
        Action::Create { env, label, job_key, client_token, replaces, on_demand_fallback, replacement_for } => {
            if replaces.as_ref().is_some_and(|id| failed.contains(id)) {
                return Ok(Done::Skipped("the make-room termination failed, the cap would be exceeded"));
            }
            let env_config = world.config.fleet.envs.get(env).ok_or_else(|| ActError::UnknownEnv(env.clone()))?;
            let mut spec = launch_spec(world, env_config, label, client_token)?;
            let id = match client(env)?.run_instance(&spec).await {
                Err(e) if *on_demand_fallback && e.is_capacity_shortage() => {
                    tracing::warn!("{env}: no spot capacity for {} ({e}); launching on-demand", label.instance_type);
                    spec.spot_price = None;
                    spec.tags.retain(|(k, _)| k != "is_spot");
                    spec.tags.push(("is_spot".into(), "false".into()));
                    // A distinct token: the spot call's token is spent.
                    spec.client_token = format!("{}-od", spec.client_token);
                    client(env)?.run_instance(&spec).await?
                }
                other => other?,
            };
            markers::write_start(dir, env, &id, &label.raw)?;
            // A replacement waits for no queue item: no working marker.
            if replacement_for.is_none() {
                markers::write_working(dir, job_key)?;
            }
            Ok(Done::Acted(Some(Counter::InstancesCreated), Some(id)))
        }
        Action::Terminate { env, instance_id, .. } => {
            // The planner sets volumes to go first; a failure there would
            // leave the disks billing after the instance is gone.
            if failed.contains(instance_id) {
                return Ok(Done::Skipped("its volumes could not be set to delete on termination"));
            }
            client(env)?.terminate(instance_id).await?;
            Ok(Done::Acted(Some(Counter::InstancesTerminated), None))
        }
        Action::Stop { env, instance_id, .. } => {
            client(env)?.stop(instance_id).await?;
            Ok(Done::Acted(Some(Counter::InstancesStopped), None))
        }
        Action::SetDeleteOnTermination { env, instance_id, devices } => {
            client(env)?.set_delete_on_termination(instance_id, devices).await?;
            Ok(Done::Acted(None, None))
        }
        Action::TagMaster { env, instance_id, master } => {
            client(env)?.tag(instance_id, MASTER_TAG, master).await?;
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

/// The launch of one agent for `label` (SPEC A5 step 2, tagged at launch).
fn launch_spec(world: &World, env: &EnvConfig, label: &Label, client_token: &str) -> Result<LaunchSpec, ActError> {
    let config = &world.config.fleet;
    let ami = env.ami.clone().ok_or_else(|| ActError::NoAmi(env.name.clone()))?;
    // Spread over the subnets, but the same for the same token: EC2 answers
    // a repeated token with other parameters by IdempotentParameterMismatch.
    let spread = client_token.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    let subnet = &env.subnets[spread % env.subnets.len()];
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
        }
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
            Action::Stop { env: "dev".into(), instance_id: "i-1".into(), node: "dev-10.0.0.1".into() },
            Action::Start {
                env: "dev".into(),
                instance_id: "i-2".into(),
                label: "dev".into(),
                job_key: "job-a___x".into(),
                why: "last used".into(),
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
        }
    }

    #[test]
    fn an_instance_s_actions_and_a_create_after_its_make_room_termination_form_one_chain() {
        let mut prod = create_in("prod", 1);
        if let Action::Create { replaces, .. } = &mut prod {
            // Another env's instance of the same id is another instance.
            *replaces = Some("i-1".into());
        }
        let actions = [
            Action::RemoveStartMarker { file_name: "x.start_instance".into() },
            set_volumes("i-1"),
            terminate("i-2"),
            create_in("dev", 1),
            terminate("i-1"),
            create_in("dev", 2),
            create("dev", Pricing::OnDemand, Some("i-2"), false),
            prod,
        ];
        let chains = chains_per_env(&actions);
        assert_eq!(chains["dev"], [vec![1, 4], vec![2, 6], vec![3], vec![5]]);
        assert_eq!(chains["prod"], [vec![7]]);
        assert_eq!(chains.len(), 2, "marker upkeep belongs to no env");
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
            Action::Stop { env: "prod".into(), instance_id: "i-1".into(), node: "prod-10.0.0.1".into() },
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
            s.cloud.delay(None, "RunInstances", Duration::from_secs(1));
            let start = tokio::time::Instant::now();
            let actions: Vec<Action> = (0..10).flat_map(|n| [create_in("dev", n), create_in("prod", n)]).collect();
            let acted = act(&s.world, &actions, 1).await;
            assert_eq!(acted.stats.get(Counter::InstancesCreated), 20);
            for env in ["dev", "prod"] {
                assert_eq!(s.cloud.max_in_flight(env), bound.min(10), "{env}, bound {bound}");
                assert_eq!(s.cloud.active(env), 10);
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
        assert!(at("ModifyInstanceAttribute", "i-1") < at("TerminateInstances", "i-1"), "{done:?}");
        assert!(at("TerminateInstances", "i-2") < at("RunInstances", "token-dev"), "{done:?}");
        assert_eq!(s.cloud.max_in_flight("dev"), 3, "three chains side by side");
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
