//! Act: carry out a plan through the thin AWS clients, one action at a time,
//! in the planner's order. A failed action is logged and counted; the rest
//! goes on, except what depended on it (a create whose make-room termination
//! failed, a termination whose volumes could not be set to go with it).

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::json;

use crate::aws::ec2::{self, LaunchSpec};
use crate::config::EnvConfig;
use crate::counter::Counter;
use crate::markers;
use crate::model::{Label, MASTER_TAG};
use crate::plan::Action;
use crate::record::ActionRecord;
use crate::stats::Stats;
use crate::world::World;

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
                time: SystemTime::now(),
                env: action.env().map(str::to_string),
                kind: action.kind(),
                text,
                outcome,
            });
        }
    }
    acted
}

enum Done {
    /// Done; the counter it moves, and the instance it made.
    Acted(Option<Counter>, Option<String>),
    Skipped(&'static str),
}

async fn run(world: &World, action: &Action, failed: &BTreeSet<String>) -> anyhow::Result<Done> {
    let dir = &world.workdir;
    let client = |env: &str| world.ec2.get(env).ok_or_else(|| anyhow::anyhow!("unknown env {env}"));
    match action {
        Action::Start { env, instance_id, label, job_key, .. } => {
            ec2::start(client(env)?, instance_id).await?;
            markers::write_start(dir, env, instance_id, label)?;
            markers::write_working(dir, job_key)?;
            Ok(Done::Acted(Some(Counter::InstancesStarted), None))
        }
        Action::Create { env, label, job_key, client_token, replaces, on_demand_fallback } => {
            if replaces.as_ref().is_some_and(|id| failed.contains(id)) {
                return Ok(Done::Skipped("the make-room termination failed, the cap would be exceeded"));
            }
            let env_config = world.config.fleet.envs.get(env).ok_or_else(|| anyhow::anyhow!("unknown env {env}"))?;
            let mut spec = launch_spec(world, env_config, label, client_token)?;
            let id = match ec2::run_instance(client(env)?, &spec).await {
                Err(e) if *on_demand_fallback && e.is_capacity_shortage() => {
                    tracing::warn!("{env}: no spot capacity for {} ({e}); launching on-demand", label.instance_type);
                    spec.spot_price = None;
                    spec.tags.retain(|(k, _)| k != "is_spot");
                    spec.tags.push(("is_spot".into(), "false".into()));
                    // A distinct token: the spot call's token is spent.
                    spec.client_token = format!("{}-od", spec.client_token);
                    ec2::run_instance(client(env)?, &spec).await?
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
            ec2::terminate(client(env)?, instance_id).await?;
            Ok(Done::Acted(Some(Counter::InstancesTerminated), None))
        }
        Action::Stop { env, instance_id, .. } => {
            ec2::stop(client(env)?, instance_id).await?;
            Ok(Done::Acted(Some(Counter::InstancesStopped), None))
        }
        Action::SetDeleteOnTermination { env, instance_id, devices } => {
            ec2::set_delete_on_termination(client(env)?, instance_id, devices).await?;
            Ok(Done::Acted(None, None))
        }
        Action::TagMaster { env, instance_id, master } => {
            ec2::tag(client(env)?, instance_id, MASTER_TAG, master).await?;
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
fn launch_spec(world: &World, env: &EnvConfig, label: &Label, client_token: &str) -> anyhow::Result<LaunchSpec> {
    let config = &world.config.fleet;
    let ami = env.ami.clone().ok_or_else(|| anyhow::anyhow!("no AMI for env {} in --ami_ids", env.name))?;
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
