//! Act: carry out a plan through the world's EC2 clients, one action at a time,
//! in the planner's order. A failed action is logged and counted; the rest
//! goes on, except what depended on it (a create whose make-room termination
//! failed, a termination whose volumes could not be set to go with it).

use std::collections::BTreeSet;

use serde_json::json;

use crate::aws::ec2::{Ec2Error, LaunchSpec};
use crate::config::EnvConfig;
use crate::counter::Counter;
use crate::markers;
use crate::model::{Label, MASTER_TAG};
use crate::plan::Action;
use crate::record::stats::Stats;
use crate::record::ActionRecord;
use crate::world::{Ec2, World};

pub use crate::model::KEY_NAME;
pub const ROOT_VOLUME_GB: i32 = 25;

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Acted {
    /// The counters the actions moved.
    pub stats: Stats,
    /// One record per action (marker upkeep excluded), for the report.
    pub records: Vec<ActionRecord>,
}

/// Runs `actions` of pass number `pass`.
pub async fn act(world: &World, actions: &[Action], pass: u32) -> Acted {
    let mut acted = Acted::default();
    // Instances whose preparatory action failed: their follow-up is skipped.
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for action in actions {
        let (text, outcome) = match run(world, action, &failed).await {
            Ok(Done::Acted(counter, id)) => {
                let text = format!("{action}{}", id.map(|id| format!(" → {id}")).unwrap_or_default());
                tracing::info!("{text}");
                if let Some(counter) = counter {
                    acted.stats.add(counter, 1);
                }
                (text, Ok(()))
            }
            Ok(Done::Skipped(why)) => {
                tracing::warn!("skipped: {action}: {why}");
                (action.to_string(), Err(format!("skipped: {why}")))
            }
            Err(e) => {
                tracing::error!("failed: {action}: {e}");
                acted.stats.add(Counter::ActionFailed, 1);
                if let Some(id) = action.instance_id() {
                    failed.insert(id.to_string());
                }
                (action.to_string(), Err(e.to_string()))
            }
        };
        if action.env().is_some() {
            acted.records.push(ActionRecord {
                pass,
                time: world.clock.now(),
                env: action.env().map(str::to_string),
                kind: action.kind(),
                text,
                outcome,
            });
        }
    }
    acted
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
        Action::Create { env, label, job_key, client_token, replaces, on_demand_fallback } => {
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
            markers::write_working(dir, job_key)?;
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
        Action::RemoveStartMarker { file_name } => {
            markers::remove(dir, file_name)?;
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
    use std::time::SystemTime;

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
}
