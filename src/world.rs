//! The outside world a pass talks to: Jenkins through its CLI, and one EC2
//! client per env (each with its own assumed-role credentials).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::aws;
use crate::config::{Config, FleetConfig};
use crate::jenkins::JenkinsCli;

pub struct World {
    pub config: Config,
    /// Where markers, the CLI jar and the CSVs live (the job's workspace).
    pub workdir: PathBuf,
    pub jenkins: Arc<JenkinsCli>,
    pub ec2: BTreeMap<String, aws_sdk_ec2::Client>,
    /// EC2 in the master's own account and region (its security group).
    pub master_ec2: aws_sdk_ec2::Client,
    /// The build-request queue's region, when SQS is on.
    pub sqs: Option<aws_sdk_sqs::Client>,
    /// EC2 requests sent so far, across envs.
    pub ec2_calls: aws::CallCounter,
}

impl World {
    /// Builds the clients. Nothing is called yet: credentials are fetched on
    /// first use, so one env whose role cannot be assumed does not stop the
    /// others.
    pub async fn connect(config: Config, workdir: PathBuf) -> World {
        let base = aws::base_config(&config.aws.master_region, config.aws.timeout).await;
        let ec2_calls = aws::CallCounter::default();
        let mut ec2 = BTreeMap::new();
        for (name, env) in &config.fleet.envs {
            let env_conf = aws::env_config(&base, env, &config.aws.role_name).await;
            let ec2_conf = aws_sdk_ec2::config::Builder::from(&env_conf)
                .interceptor(ec2_calls.clone())
                .retry_classifier(aws::ec2::CapacityShortageIsFinal)
                .build();
            ec2.insert(name.clone(), aws_sdk_ec2::Client::from_conf(ec2_conf));
        }
        let master_conf = base.to_builder().region(aws_config::Region::new(config.aws.master_region.clone())).build();
        let master_ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&master_conf).interceptor(ec2_calls.clone()).build(),
        );
        let sqs = config.sqs.as_ref().map(|sqs| {
            aws_sdk_sqs::Client::new(&base.to_builder().region(aws_config::Region::new(sqs.region.clone())).build())
        });
        let j = &config.jenkins;
        let jenkins = JenkinsCli::new(j.cli, &j.url, &j.user, &j.id_rsa, &workdir, j.timeout)
            .certificate_check(j.certificate_check)
            .output_limit(j.output_limit)
            .known_hosts(j.known_hosts.clone())
            .cli_jar(j.cli_jar.clone());
        World { config, workdir, jenkins: Arc::new(jenkins), ec2, master_ec2, sqs, ec2_calls }
    }

    /// The dump script's arguments for this run (see [`dump_args`]).
    pub fn dump_args(&self) -> Vec<String> {
        dump_args(&self.config.fleet, self.config.dry_run)
    }
}

/// The arguments of the dump script: every env's current AMI as
/// `ami:ENV=ami-…`, or `ami:ENV=` for none (the script judges "old AMI" by
/// the node's env, as the planner does, so an env without an AMI never
/// drains its agents), the bare ids too (a `--groovy` script of the
/// original's shape reads those and ignores the rest), then the idle
/// policy's settings as `key=value`.
pub fn dump_args(fleet: &FleetConfig, dry_run: bool) -> Vec<String> {
    let mut args: Vec<String> = fleet.envs.values().filter_map(|e| e.ami.clone()).collect();
    args.sort();
    args.dedup();
    // Every env, `ami:ENV=` when it has no AMI: the script then resolves a
    // node's env among the same envs as the planner.
    for env in fleet.envs.values() {
        args.push(format!("ami:{}={}", env.name, env.ami.as_deref().unwrap_or("")));
    }
    args.push(format!("idle_minutes={}", fleet.idle_minutes));
    args.push(format!("hourly_billing={}", fleet.hourly_billing));
    if dry_run {
        // The script then reports its idle policy without applying it.
        args.push("dry_run=true".to_string());
    }
    args
}
